from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s4mi.bundle import as_bool, default_device, locate_bundle_root


def test_as_bool_reads_command_line_flags() -> None:
    assert as_bool("false") is False and as_bool("False") is False and as_bool("0") is False
    assert as_bool("true") is True and as_bool(True) is True and as_bool(1) is True
    with pytest.raises(ValueError, match="boolean"):
        as_bool("maybe")


def test_locate_bundle_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = Path(locate_bundle_root("supervised_cxr_classification"))
    assert (root / "configs" / "train.json").is_file()
    monkeypatch.chdir(root)
    assert Path(locate_bundle_root("supervised_cxr_classification")) == root
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_bundle"):
        locate_bundle_root("no_such_bundle")


def test_default_device() -> None:
    assert default_device("cpu") == torch.device("cpu")
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
