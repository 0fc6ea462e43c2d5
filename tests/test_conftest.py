"""The end of a test run says plainly when the bundle metadata checks were skipped for want of the schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA_ENV = "S4MI_META_SCHEMA"
DEFAULT_SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"

ONE = "tests/bundles/test_bundles.py::test_verify_metadata[supervised_skin_classification]"


def _pytest(*args: str, schema_env: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != SCHEMA_ENV}
    if schema_env is not None:
        env[SCHEMA_ENV] = schema_env
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_missing_schema_is_reported_at_the_end_of_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "meta_schema_20240725.json"
    proc = _pytest(schema_env=str(missing))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "1 skipped" in out
    summary = out[out.index("s4mi: bundle metadata NOT verified") :]
    assert (
        f"1 bundle metadata check(s) (monai.bundle.verify_metadata) were SKIPPED: no MONAI bundle metadata schema at {missing}"
        in summary
    )
    assert f"{SCHEMA_ENV}=/path/to/meta_schema_20240725.json or --meta-schema PATH" in summary


def test_meta_schema_option_wins_over_the_environment(tmp_path: Path) -> None:
    proc = _pytest("--meta-schema", str(tmp_path / "given.json"), schema_env=str(tmp_path / "env.json"))
    assert f"schema at {tmp_path / 'given.json'}" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(not DEFAULT_SCHEMA.is_file(), reason=f"needs a schema file at {DEFAULT_SCHEMA}")
def test_schema_from_the_environment_runs_the_check(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere.json"
    copy.write_bytes(DEFAULT_SCHEMA.read_bytes())
    proc = _pytest(schema_env=str(copy))
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "s4mi: bundle metadata NOT verified" not in proc.stdout


def test_xdist_scope_keeps_a_file_together_and_splits_test_bundles_by_bundle() -> None:
    from tests.conftest import xdist_scope

    assert xdist_scope("tests/data/test_phantoms.py::test_skin[3]") == "tests/data/test_phantoms.py"
    assert xdist_scope("tests/engines/test_dino.py::TestX::test_y") == "tests/engines/test_dino.py"
    bundles = "tests/bundles/test_bundles.py"
    trained = {
        xdist_scope(f"{bundles}::{t}[mean_teacher_skin_classification]") for t in ("test_inference", "test_ckpt_export")
    }
    assert trained == {f"{bundles}::mean_teacher_skin_classification"}
    assert xdist_scope(f"{bundles}::test_inference[supervised_skin_classification]") != trained.pop()
    assert xdist_scope(f"{bundles}::test_bundles_found") == bundles
