"""Pretraining overhead: one MoCo v2 + JCL step through s4mi vs a plain PyTorch loop doing the same maths.

Both sides use the same query encoder (DenseNet121 with LeakyReLU 0.1 + the 1024-1024-128 projection head, as in
S2MTS2), key encoder, queue, optimizer and pre-made batches (in memory: data loading is not measured). The plain loop
does what MoCo's reference code does per step: query forward; for each of the M key views a shuffled, chunked
(shuffle-BN) key forward under no_grad and unshuffle; the JCL loss (the same ``s4mi.losses.jcl_loss`` on both sides:
the engine is what is measured, not the loss); enqueue the key mean; backward; SGD step; EMA of the key encoder with
torch._foreach ops. The s4mi side runs ``MoCoTrainer`` (Ignite engine, MONAI events, label guard, EMATeacher handler,
lambda ramp scheduler, KeyQueue). Each round times ``--steps`` whole steps of each side, back to back, alternating
which goes first, after one untimed warm-up round; the table gives medians over rounds and the median of the
per-round ratios.

    .venv/bin/python benchmarks/pretrain_overhead.py --steps 6 --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _timing import Cycle, side_by_side, table_row
from monai.networks.nets import DenseNet121

from s4mi.engines import MoCoTrainer
from s4mi.handlers import EMATeacher
from s4mi.handlers.ramps import LinearRamp
from s4mi.losses import JCLLoss, jcl_loss
from s4mi.networks import EncoderWithHead, KeyQueue, ProjectionHead

M_VIEWS, QUEUE, TAU, MOMENTUM, SPLITS = 2, 4096, 0.07, 0.99, 2


def make(batch: int, size: int) -> tuple[torch.nn.Module, list[dict]]:
    torch.manual_seed(0)
    act = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
    net = EncoderWithHead(DenseNet121(2, 1, 1, act=act), ProjectionHead(1024, 1024, 128))
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.rand(batch, 1, size, size, generator=g)
        views = {f"image_k{m}": x + 0.05 * torch.randn(x.shape, generator=g) for m in range(M_VIEWS)}
        batches.append({"image_q": x, **views})
    return net, batches


def plain_steps(net: torch.nn.Module, batches: list[dict], n: int) -> float:
    """Seconds per step of the plain MoCo + JCL loop (whole span of ``n`` steps)."""
    key = copy.deepcopy(net).requires_grad_(False).train()
    queue = torch.nn.functional.normalize(torch.randn(QUEUE, 128), dim=1)
    ptr = 0
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    kp, qp = list(key.parameters()), list(net.parameters())
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for i in range(n):
        b = batches[i % len(batches)]
        net.train()
        opt.zero_grad(set_to_none=False)
        q = net(b["image_q"])
        with torch.no_grad():
            keys = []
            for m in range(M_VIEWS):
                x = b[f"image_k{m}"]
                perm = torch.randperm(x.shape[0], generator=g)
                out = torch.cat([key(c) for c in torch.tensor_split(x[perm], SPLITS)])
                keys.append(out[torch.argsort(perm)])
            k = torch.stack(keys, dim=1)
        loss = jcl_loss(q, k, queue.clone(), 1.0, TAU)
        mu = k.mean(dim=1)
        idx = (ptr + torch.arange(mu.shape[0])) % QUEUE
        queue.index_copy_(0, idx, mu)
        ptr = (ptr + mu.shape[0]) % QUEUE
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(kp, MOMENTUM)
            torch._foreach_add_(kp, [p.detach() for p in qp], alpha=1 - MOMENTUM)
    return (time.perf_counter() - t0) / n


def s4mi_steps(net: torch.nn.Module, batches: list[dict], n: int) -> float:
    """Seconds per step of ``MoCoTrainer.run`` over ``n`` steps (engine set-up excluded)."""
    key = EMATeacher(net, momentum=MOMENTUM, buffers="ema_train", name="key_encoder")
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    trainer = MoCoTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=Cycle(batches, n),
        network=net,
        optimizer=opt,
        loss_function=JCLLoss(TAU),
        teachers=[key],
        queue=KeyQueue(128, QUEUE),
        jcl_lambda=LinearRamp(2.0, 1, start=-1),
        key_keys=[f"image_k{m}" for m in range(M_VIEWS)],
        shuffle_splits=SPLITS,
    )
    t0 = time.perf_counter()
    trainer.run()
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    net, batches = make(a.batch, a.size)

    plain_s, s4mi_s, ratios = side_by_side(
        lambda: plain_steps(net, batches, a.steps), lambda: s4mi_steps(net, batches, a.steps), a.rounds
    )
    print()
    print(
        f"| step | threads | plain PyTorch (ms/step) | s4mi MoCoTrainer (ms/step) | ratio, median of {a.rounds} rounds |"
    )
    print("|---|---|---|---|---|")
    label = f"MoCo v2 + JCL, DenseNet121 {a.size} px, batch {a.batch}, M = {M_VIEWS}"
    print(table_row(label, a.threads, plain_s, s4mi_s, ratios))


if __name__ == "__main__":
    main()
