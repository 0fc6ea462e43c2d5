from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"
SCHEMA_NAME = "meta_schema_20240725.json"
SCHEMA_URL = f"https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/{SCHEMA_NAME}"
SCHEMA_ENV = "S4MI_META_SCHEMA"
DEFAULT_SCHEMA = REPO.parent / "shared" / "monai" / SCHEMA_NAME  # where CI keeps it, beside the checkout
NO_SCHEMA = "no MONAI bundle metadata schema"  # skip reasons start with this; the run's summary counts them
_schema_skips: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--meta-schema",
        default=None,
        metavar="PATH",
        help=f"MONAI bundle metadata schema ({SCHEMA_NAME}) for the verify_metadata tests; default: ${SCHEMA_ENV}, "
        f"else {DEFAULT_SCHEMA}",
    )


def meta_schema(config: pytest.Config) -> Path:
    """The metadata schema the tests use: ``--meta-schema``, else ``$S4MI_META_SCHEMA``, else ../shared/monai."""
    given = config.getoption("--meta-schema") or os.environ.get(SCHEMA_ENV)
    return Path(given).expanduser() if given else DEFAULT_SCHEMA


@pytest.fixture(scope="session")
def meta_schema_file(request: pytest.FixtureRequest) -> Path:
    """The schema file, or a skip that the end of the run reports (see ``pytest_terminal_summary``)."""
    path = meta_schema(request.config)
    if not path.is_file():
        pytest.skip(f"{NO_SCHEMA} at {path}")
    return path


def pytest_sessionstart(session: pytest.Session) -> None:
    _schema_skips.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple) and NO_SCHEMA in str(report.longrepr[2]):
        _schema_skips.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say plainly, last, when the bundle metadata was not checked: a quiet skip reads like a pass."""
    if not _schema_skips:
        return
    tr = terminalreporter
    tr.section("s4mi: bundle metadata NOT verified", sep="!", yellow=True, bold=True)
    tr.write_line(
        f"{len(_schema_skips)} bundle metadata check(s) (monai.bundle.verify_metadata) were SKIPPED: "
        f"{NO_SCHEMA} at {meta_schema(config)}."
    )
    tr.write_line(f"Download {SCHEMA_URL}")
    tr.write_line(
        f"and point the tests at it: {SCHEMA_ENV}=/path/to/{SCHEMA_NAME} or --meta-schema PATH (README, Tests)."
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Files whose module-scoped fixture takes one parameter per bundle (a bundle trained once per parameter): under
# pytest-xdist their tests are scheduled by that parameter, so the bundles train on every worker, each once.
SCOPED_BY_PARAMETER = ("tests/bundles/test_bundles.py",)


def xdist_scope(nodeid: str) -> str:
    """The unit of work a pytest-xdist worker takes under ``--dist loadscope`` (README's test command): a test file,
    so that a module-scoped fixture (a trained bundle, a phantom) is made on one worker only, or, in the files of
    ``SCOPED_BY_PARAMETER``, a file and the test's parameter.

    pytest-xdist's own scopes are the module (or class); its ``loadgroup`` marks do not take with pytest 9, whose
    node ids no longer follow the ``_nodeid`` that pytest-xdist 3.8 appends the group to."""
    path, _, rest = nodeid.partition("::")
    if path in SCOPED_BY_PARAMETER and rest.endswith("]") and "[" in rest:
        return f"{path}::{rest[rest.index('[') + 1 : -1]}"
    return path


if importlib.util.find_spec("xdist") is not None:  # a hook pytest only accepts when pytest-xdist is installed

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "loadscope":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class FileOrParameterScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return xdist_scope(nodeid)

        return FileOrParameterScheduling(config, log)


def subprocess_threads() -> str:
    """``OMP_NUM_THREADS`` for the bundle runs and servers a test starts: 2 (the machine's cores), or under
    pytest-xdist (README's ``-n 2``) this worker's share of the cores, so two workers do not oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    return str(max(1, (os.cpu_count() or 1) // workers)) if workers > 1 else "2"


if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) > 1:  # each worker computes on its share of the cores
    torch.set_num_threads(int(subprocess_threads()))
    os.environ["OMP_NUM_THREADS"] = subprocess_threads()


@pytest.fixture(scope="session", autouse=True)
def s4mi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom data made by tests goes to a per-session folder, never the user's cache."""
    path = tmp_path_factory.mktemp("s4mi_cache")
    os.environ["S4MI_CACHE"] = str(path)
    return path


def run_two_ranks(script: Path, out: Path, timeout: int = 300) -> None:
    """Run ``script out`` under torchrun with 2 processes on this machine (gloo), one thread each; fail with its
    output when it fails. The script writes its per-rank results under ``out``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(out)]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for gloo rendezvous and test servers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
