"""DINO under DDP with two gloo processes launched by torchrun: one centre and one teacher on every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.conftest import run_two_ranks

SCRIPT = Path(__file__).with_name("_dino_ddp_script.py")


def _replay_centre(means: list[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """``c <- m c + (1 - m) mean`` from a zero centre over the given per-step batch means (``S K`` each)."""
    centre = torch.zeros(1, means[0].shape[1])
    for step in range(means[0].shape[0]):
        batch_mean = torch.stack([m[step] for m in means]).mean(0, keepdim=True)
        centre = momentum * centre + (1 - momentum) * batch_mean
    return centre


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_rank_dino_shares_centre_and_teacher(tmp_path: Path) -> None:
    run_two_ranks(SCRIPT, tmp_path, timeout=120)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["iterations"] == r1["iterations"] == 3
    # each rank saw its own data, so the teacher outputs' means differ between ranks
    assert not torch.allclose(r0["local_means"], r1["local_means"], atol=1e-4)
    # one centre everywhere: the EMA of the mean over both ranks' global crops, not of rank 0's alone
    assert torch.allclose(r0["center"], r1["center"], atol=1e-6)
    assert torch.allclose(r0["center"], _replay_centre([r0["local_means"], r1["local_means"]]), atol=1e-6)
    alone = _replay_centre([r0["local_means"]])
    assert not torch.allclose(r0["center"], alone, atol=1e-4)
    # one teacher (and student) everywhere, and the teacher moved away from its start
    for part in ("teacher", "student"):
        assert r0[part].keys() == r1[part].keys()
        for k in r0[part]:
            assert torch.allclose(r0[part][k], r1[part][k], atol=1e-6), f"{part} {k} differs across ranks"
    assert any(not torch.equal(r0["student"][k], r0["teacher"][k]) for k in r0["student"])
