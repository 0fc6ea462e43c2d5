from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def s4mi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom data made by tests goes to a per-session folder, never the user's cache."""
    path = tmp_path_factory.mktemp("s4mi_cache")
    os.environ["S4MI_CACHE"] = str(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for gloo rendezvous and test servers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
