"""Engine overhead: one Mean Teacher step through s4mi vs a plain PyTorch loop doing the same maths.

Both sides use the same student, teacher, optimizer, and the same pre-made batches (in memory, so data loading is
not measured). The plain loop (``speed.PlainMeanTeacher``, shared with ``benchmarks/speed.py``) does: joint student
forward, teacher forward under no_grad, BCE/CE + softmax-MSE, backward, optimizer step, EMA update with
torch._foreach ops. The s4mi side runs MeanTeacherTrainer (Ignite engine, MONAI events, label guard, EMATeacher
handler, sigmoid ramp scheduler). Each round times ``--steps`` whole steps of each side, back to back (everything
the engine does between steps is inside the timed span), after one untimed warm-up round; the table gives medians
over rounds and the median of the per-round ratios. ``benchmarks/speed.py`` times every engine the same way on the
bundles' networks.

    .venv/bin/python benchmarks/engine_overhead.py --model unet --steps 20 --rounds 7
    python benchmarks/engine_overhead.py --model densenet --device cuda --amp   # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse

import torch
from _timing import table_row
from monai.losses import DiceCELoss
from monai.networks.nets import DenseNet121, UNet
from speed import Setup, measure, teacher_student_case

from s4mi.handlers.ramps import SigmoidRamp


def _to(batches: list[dict], device: str) -> list[dict]:
    return [{s: {k: v.to(device) for k, v in part.items()} for s, part in b.items()} for b in batches]


def make(model: str) -> tuple[torch.nn.Module, list[dict], torch.nn.Module]:
    g = torch.Generator().manual_seed(0)
    if model == "unet":
        net: torch.nn.Module = UNet(2, 3, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
        shape, bs = (3, 96, 96), 8
        label = lambda: torch.randint(0, 2, (bs, 1, 96, 96), generator=g).float()  # noqa: E731
        loss: torch.nn.Module = DiceCELoss(to_onehot_y=True, softmax=True)
    else:
        net = DenseNet121(2, 1, 6)
        shape, bs = (1, 64, 64), 16
        label = lambda: torch.randint(0, 2, (bs, 6), generator=g).float()  # noqa: E731
        loss = torch.nn.BCEWithLogitsLoss()
    batches = []
    for _ in range(4):
        x = torch.rand(bs, *shape, generator=g)
        batches.append(
            {
                "labeled": {"image": torch.rand(bs, *shape, generator=g), "label": label()},
                "unlabeled": {"image": x, "image_s": x + 0.05 * torch.randn(x.shape, generator=g)},
            }
        )
    return net, batches, loss


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["unet", "densenet"], default="unet")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on both sides")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    activation = "softmax" if a.model == "unet" else "sigmoid"
    net, batches, loss_fn = make(a.model)
    setup = Setup(device=a.device, amp=a.amp)
    net, batches = net.to(a.device), _to(batches, a.device)
    case = teacher_student_case(
        setup,
        "mean_teacher",
        net,
        batches,
        loss_fn,
        a.model,
        activation=activation,
        warmup=False,
        unsup=SigmoidRamp(1.0, a.steps),
        unsup_every="iteration",
        lr=1e-4,
        weight_decay=0.0,
    )
    r = measure(case, a.steps, a.rounds, a.device)
    print()
    print(
        f"| model | threads | plain PyTorch (ms/step) | s4mi MeanTeacherTrainer (ms/step) | ratio, median of {a.rounds} rounds |"
    )
    print("|---|---|---|---|---|")
    label = a.model + ("" if a.device == "cpu" else f" ({a.device}{', bf16' if a.amp else ''})")
    print(table_row(label, a.threads, r.plain_s, r.s4mi_s, r.ratios))


if __name__ == "__main__":
    main()
