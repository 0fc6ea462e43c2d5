"""Two gloo ranks each on half of every batch end with the weights of one process on the whole batch (1e-5): Mean
Teacher (student and EMA teacher) and MoCo/JCL (query and key encoders, and the key queue every rank reads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.conftest import run_two_ranks
from tests.engines import _equivalence_script as script

SCRIPT = Path(script.__file__)


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_ranks_equal_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    run_two_ranks(SCRIPT, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = script.run_all(world=1, rank=0)
    start = script._net().state_dict()
    for method, parts in single.items():
        for part, state in parts.items():
            for key, want in state.items():
                for r, got in enumerate(ranks):
                    torch.testing.assert_close(
                        got[method][part][key], want, rtol=0, atol=1e-5, msg=f"{method} {part} {key}: rank {r}"
                    )
    # the runs did train: the student moved, the teacher lags it, the queue was written
    mt = single["mean_teacher"]
    assert not all(torch.equal(mt["student"][k], start[k]) for k in start)
    assert not all(torch.equal(mt["student"][k], mt["teacher"][k]) for k in start)
    assert int(single["moco"]["queue"]["ptr"]) == script.STEPS * script.WORLD * script.LOCAL % (
        4 * script.WORLD * script.LOCAL
    )


def test_halves_of_the_batch_are_not_the_whole_batch() -> None:
    """The check above can fail: one rank alone (half of each batch, no gradient average) ends elsewhere."""
    half = _single_rank_half()
    whole = script.mean_teacher(world=1, rank=0)
    assert any((half["student"][k] - whole["student"][k]).abs().max() > 1e-3 for k in whole["student"])


def _single_rank_half() -> dict:
    """Mean Teacher on rank 0's halves only, in one process (no DDP): what a rank would reach without the all-reduce."""
    original = script._wrap
    try:
        script._wrap = lambda net, world: net  # type: ignore[assignment]
        return script.mean_teacher(world=2, rank=0)
    finally:
        script._wrap = original  # type: ignore[assignment]
