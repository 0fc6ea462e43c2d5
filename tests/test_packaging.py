"""Package metadata: the licence declared as a PEP 639 SPDX expression, so a build says nothing about it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_metadata_has_a_license_expression_and_the_build_no_licence_warning(tmp_path: Path) -> None:
    setuptools = pytest.importorskip("setuptools")
    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip(f"setuptools {setuptools.__version__} predates PEP 639 (77)")
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "always",
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "icense" not in proc.stderr, f"the build warns about the licence:\n{proc.stderr}"
    pkg_info = (tmp_path / "s4mi.egg-info" / "PKG-INFO").read_text()
    assert "License-Expression: Apache-2.0" in pkg_info.splitlines()
    assert "License-File: LICENSE" in pkg_info.splitlines()
    assert not [line for line in pkg_info.splitlines() if line.startswith("Classifier: License ::")]
