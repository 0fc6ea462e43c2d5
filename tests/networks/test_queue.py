from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s4mi.networks import KeyQueue, batch_shuffle, batch_unshuffle, concat_all_gather, shuffled_key_forward
from tests.conftest import free_port

WORLD, ROWS, DIM, SIZE = 2, 3, 3, 10
SHUFFLE_ROWS = 4


def naive_ring(queue: torch.Tensor, ptr: int, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    queue = queue.clone()
    for key in keys:
        queue[ptr] = key
        ptr = (ptr + 1) % queue.shape[0]
    return queue, ptr


def rows(n: int, offset: float) -> torch.Tensor:
    return (offset + torch.arange(n, dtype=torch.float32)).unsqueeze(1).expand(n, DIM).clone()


def naive_batchnorm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=0, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def test_init_rows_are_unit_vectors_and_buffers() -> None:
    kq = KeyQueue(DIM, SIZE)
    assert kq.queue.shape == (SIZE, DIM) and kq.ptr.dtype == torch.long and kq.ptr.ndim == 0
    assert torch.allclose(kq.queue.norm(dim=1), torch.ones(SIZE))
    assert {name for name, _ in kq.named_buffers()} == {"queue", "ptr"}
    assert not torch.allclose(KeyQueue(DIM, SIZE, normalize_init=False).queue.norm(dim=1), torch.ones(SIZE))
    assert "dim=3, size=10" in repr(kq)


def test_enqueue_ring_arithmetic() -> None:
    kq = KeyQueue(DIM, 5)
    expected, ptr = kq.queue.clone(), 0
    # 3 keys, then 4 (wraps at the end), then 7 (more than the ring holds: only the last 5 survive), then 5
    for step, n in enumerate((3, 4, 7, 5)):
        keys = rows(n, 10.0 * step)
        kq.enqueue(keys)
        expected, ptr = naive_ring(expected, ptr, keys)
        assert torch.equal(kq.queue, expected), step
        assert int(kq.ptr) == ptr, step
    assert int(kq.ptr) == (3 + 4 + 7 + 5) % 5


def test_enqueue_errors_on_wrong_key_dim() -> None:
    kq = KeyQueue(DIM, SIZE)
    with pytest.raises(ValueError, match=r"B x 3.*\(2, 4\)"):
        kq.enqueue(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        kq.enqueue(torch.zeros(3))
    with pytest.raises(ValueError, match="size"):
        KeyQueue(DIM, 0)


def test_negatives_are_a_copy_so_enqueue_before_backward_works() -> None:
    kq = KeyQueue(DIM, SIZE)
    q = torch.randn(2, DIM, requires_grad=True)
    negatives = kq()
    assert torch.equal(negatives, kq.queue) and negatives.data_ptr() != kq.queue.data_ptr()
    loss = torch.logsumexp(q @ negatives.T, dim=1).mean()
    kq.enqueue(torch.ones(2, DIM))
    loss.backward()
    assert q.grad is not None
    # the reason for the copy: the buffer itself is saved for backward and the enqueue writes into it
    loss = torch.logsumexp(q @ kq.queue.T, dim=1).mean()
    kq.enqueue(torch.ones(2, DIM))
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_state_dict_round_trip_with_weights_only(tmp_path: Path) -> None:
    kq = KeyQueue(DIM, SIZE)
    kq.enqueue(rows(7, 1.0))
    torch.save(kq.state_dict(), tmp_path / "queue.pt")
    restored = KeyQueue(DIM, SIZE)
    restored.load_state_dict(torch.load(tmp_path / "queue.pt", weights_only=True))
    assert torch.equal(restored.queue, kq.queue) and int(restored.ptr) == 7
    assert restored.ptr.dtype == torch.long


def test_single_process_gather_and_shuffle() -> None:
    x = torch.randn(6, 2, requires_grad=True)
    gathered = concat_all_gather(x)
    assert torch.equal(gathered, x) and not gathered.requires_grad
    x_s, idx = batch_shuffle(x, torch.Generator().manual_seed(0))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_s, x[perm])
    assert torch.equal(batch_unshuffle(x_s, idx), x)


def test_shuffled_forward_without_batchnorm_is_a_plain_forward() -> None:
    x = torch.randn(7, 4)
    for splits in (1, 2, 3, 7):
        out = shuffled_key_forward(lambda t: t * 1.0, x, splits, torch.Generator().manual_seed(splits))
        assert torch.equal(out, x)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    out = shuffled_key_forward(net, x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, net(x), atol=1e-6) and not out.requires_grad


def test_shuffled_forward_normalises_each_chunk_over_itself() -> None:
    x = torch.randn(8, 3) * torch.tensor([1.0, 2.0, 3.0]) + 1.0
    bn = torch.nn.BatchNorm1d(3, affine=False).train()
    for splits in (2, 3):
        out = shuffled_key_forward(bn, x, splits, torch.Generator().manual_seed(42))
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(42))
        chunks = [naive_batchnorm(c) for c in torch.tensor_split(x[perm], splits)]
        expected = torch.cat(chunks)[torch.argsort(perm)]
        assert torch.allclose(out, expected, atol=1e-5)
        assert not torch.allclose(out, naive_batchnorm(x), atol=1e-3)
    again = shuffled_key_forward(bn, x, 3, torch.Generator().manual_seed(42))
    assert torch.equal(again, out)
    # the default in one process is two chunks
    default = shuffled_key_forward(bn, x, generator=torch.Generator().manual_seed(42))
    assert torch.equal(default, shuffled_key_forward(bn, x, 2, torch.Generator().manual_seed(42)))


def test_shuffled_forward_rejects_bad_splits() -> None:
    with pytest.raises(ValueError, match="num_splits"):
        shuffled_key_forward(torch.nn.Identity(), torch.zeros(4, 2), 5)
    with pytest.raises(ValueError, match="num_splits"):
        shuffled_key_forward(torch.nn.Identity(), torch.zeros(4, 2), 0)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different initial queues: enqueued rows must overwrite them on every rank
        kq = KeyQueue(DIM, SIZE)
        kq.enqueue(rows(ROWS, 10.0 * rank))  # rank r's rows: 10 r, 10 r + 1, ...
        after_first = kq.queue.clone()
        kq.enqueue(rows(ROWS, 100.0 + 10.0 * rank))
        x = torch.arange(SHUFFLE_ROWS * 2, dtype=torch.float32).view(SHUFFLE_ROWS, 2) + 100.0 * rank
        # each rank seeds differently: only rank 0's permutation may be used
        x_s, idx = batch_shuffle(x, torch.Generator().manual_seed(rank + 1))
        bn = torch.nn.BatchNorm1d(2, affine=False).train()
        keys = shuffled_key_forward(bn, x, generator=torch.Generator().manual_seed(rank + 1))
        result = {
            "after_first": after_first,
            "queue": kq.queue.clone(),
            "ptr": kq.ptr.clone(),
            "x": x,
            "x_s": x_s,
            "idx": idx,
            "back": batch_unshuffle(x_s, idx),
            "keys": keys,
        }
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("queue_ddp")
    mp.spawn(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_process_enqueue_gathers_in_rank_order(two_ranks: list[dict[str, torch.Tensor]]) -> None:
    r0, r1 = two_ranks
    first = torch.cat([rows(ROWS, 0.0), rows(ROWS, 10.0)])  # rank 0's keys, then rank 1's
    for r in two_ranks:
        assert torch.equal(r["after_first"][: 2 * ROWS], first)
    second = torch.cat([rows(ROWS, 100.0), rows(ROWS, 110.0)])
    expected, ptr = naive_ring(r0["after_first"], 2 * ROWS, second)  # 6 keys from slot 6 of 10: wraps to 0, 1
    assert torch.equal(r0["queue"], expected) and torch.equal(r1["queue"], expected)
    assert int(r0["ptr"]) == int(r1["ptr"]) == ptr == 2
    assert torch.equal(expected[:2], second[4:]) and torch.equal(expected[6:], second[:4])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_process_batch_shuffle_round_trip(two_ranks: list[dict[str, torch.Tensor]]) -> None:
    x_all = torch.cat([r["x"] for r in two_ranks])
    perm = torch.randperm(WORLD * SHUFFLE_ROWS, generator=torch.Generator().manual_seed(1))  # rank 0's draw
    for rank, r in enumerate(two_ranks):
        assert torch.equal(r["back"], r["x"])
        assert torch.equal(r["idx"], torch.argsort(perm))
        assert torch.equal(r["x_s"], x_all[perm.view(WORLD, -1)[rank]])
    # shuffle-BN: each rank's BatchNorm normalised its slice of the global permutation, and keys came back home
    normalised = torch.cat([naive_batchnorm(x_all[p]) for p in perm.view(WORLD, -1)])[torch.argsort(perm)]
    for rank, r in enumerate(two_ranks):
        assert torch.allclose(r["keys"], normalised.view(WORLD, SHUFFLE_ROWS, 2)[rank], atol=1e-5)
    assert not torch.allclose(two_ranks[0]["keys"], naive_batchnorm(two_ranks[0]["x"]), atol=1e-3)
