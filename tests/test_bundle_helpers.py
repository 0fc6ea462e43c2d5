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


def test_distributed_helpers_outside_and_inside_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from s4mi.bundle import ddp_device_ids, destroy_distributed, distributed_device, init_distributed, is_main_process

    assert is_main_process()  # no process group: the one process is the main one
    assert ddp_device_ids("cpu") is None
    assert ddp_device_ids("cuda:1") == [torch.device("cuda:1")]
    if not torch.cuda.is_available():
        assert distributed_device() == torch.device("cpu")
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    try:
        assert init_distributed("cpu") and dist.is_initialized() and dist.get_backend() == "gloo"
        assert init_distributed("cpu")  # idempotent
        assert is_main_process()
        monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 1)
        assert not is_main_process()
    finally:
        monkeypatch.undo()
        destroy_distributed()
    assert not dist.is_initialized() and destroy_distributed()
