"""Pretraining overhead: one MoCo v2 + JCL step through s4mi vs a plain PyTorch loop doing the same maths.

Both sides use the same query encoder (DenseNet121 with LeakyReLU 0.1 + the 1024-1024-128 projection head, as in
S2MTS2), key encoder, queue, optimizer and pre-made batches (in memory: data loading is not measured). The plain loop
(``speed.PlainMoCo``, shared with ``benchmarks/speed.py``) does what MoCo's reference code does per step: query
forward; for each of the M key views a shuffled, chunked (shuffle-BN) key forward under no_grad and unshuffle; the
JCL loss (the same ``s4mi.losses.JCLLoss`` on both sides: the engine is what is measured, not the loss); enqueue the
key mean; backward; SGD step; EMA of the key encoder with torch._foreach ops. The s4mi side runs ``MoCoTrainer`` (Ignite engine, MONAI events, label guard, EMATeacher handler,
lambda ramp scheduler, KeyQueue). Each round times ``--steps`` whole steps of each side, back to back, alternating
which goes first, after one untimed warm-up round; the table gives medians over rounds and the median of the
per-round ratios.

    .venv/bin/python benchmarks/pretrain_overhead.py --steps 6 --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from _timing import table_row
from monai.networks.nets import DenseNet121
from speed import Setup, measure, moco_case

from s4mi.handlers.ramps import LinearRamp
from s4mi.networks import EncoderWithHead, ProjectionHead

M_VIEWS, QUEUE = 2, 4096


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
    case = moco_case(Setup(), net, batches, M_VIEWS, QUEUE, 128, "DenseNet121", lam=LinearRamp(2.0, 1, start=-1))
    r = measure(case, a.steps, a.rounds, "cpu")
    print()
    print(
        f"| step | threads | plain PyTorch (ms/step) | s4mi MoCoTrainer (ms/step) | ratio, median of {a.rounds} rounds |"
    )
    print("|---|---|---|---|---|")
    label = f"MoCo v2 + JCL, DenseNet121 {a.size} px, batch {a.batch}, M = {M_VIEWS}"
    print(table_row(label, a.threads, r.plain_s, r.s4mi_s, r.ratios))


if __name__ == "__main__":
    main()
