"""Engine overhead: one Mean Teacher step through s4mi vs a plain PyTorch loop doing the same maths.

Both sides use the same student, teacher, optimizer, and the same pre-made batches (in memory, so data loading is
not measured). The plain loop does: joint student forward, teacher forward under no_grad, BCE/CE + softmax-MSE,
backward, optimizer step, EMA update with torch._foreach ops. The s4mi side runs MeanTeacherTrainer (Ignite engine,
MONAI events, label guard, EMATeacher handler, sigmoid ramp scheduler). Each round times ``--steps`` whole steps of
each side, back to back (everything the engine does between steps is inside the timed span), after one untimed
warm-up round; the table gives medians over rounds and the median of the per-round ratios.

    .venv/bin/python benchmarks/engine_overhead.py --model unet --steps 20 --rounds 7
    python benchmarks/engine_overhead.py --model densenet --device cuda --amp   # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import Cycle, side_by_side, table_row
from monai.losses import DiceCELoss
from monai.networks.nets import DenseNet121, UNet

from s4mi.engines import MeanTeacherTrainer
from s4mi.handlers import EMATeacher
from s4mi.handlers.ramps import SigmoidRamp
from s4mi.losses import softmax_mse_loss


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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


def plain_steps(
    net: torch.nn.Module,
    teacher: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    batches: list[dict],
    n: int,
    activation: str,
    m: float = 0.99,
    device: str = "cpu",
    amp: bool = False,
) -> float:
    """Seconds per step of the plain loop (whole span of ``n`` steps); with ``amp`` the forwards and losses under
    autocast on the device (bfloat16), as the s4mi side runs them."""
    from contextlib import nullcontext

    tp = [p for p in teacher.parameters()]
    sp = [p for p in net.parameters()]
    dev_type = torch.device(device).type
    _sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        b = batches[i % len(batches)]
        x_lb, y_lb = b["labeled"]["image"], b["labeled"]["label"]
        x_w, x_s = b["unlabeled"]["image"], b["unlabeled"]["image_s"]
        net.train()
        opt.zero_grad(set_to_none=False)
        with torch.autocast(dev_type, dtype=torch.bfloat16) if amp else nullcontext():
            logits = net(torch.cat([x_lb, x_s]))
            logits_lb, logits_s = logits[: len(x_lb)], logits[len(x_lb) :]
            with torch.no_grad():
                logits_t = teacher(x_w)
            loss = loss_fn(logits_lb, y_lb).mean() + 1.0 * softmax_mse_loss(logits_s, logits_t, activation)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(tp, m)
            torch._foreach_add_(tp, [p.detach() for p in sp], alpha=1 - m)
            for tb, sb in zip(teacher.buffers(), net.buffers()):
                tb.copy_(sb)
    _sync(device)
    return (time.perf_counter() - t0) / n


def s4mi_steps(
    net: torch.nn.Module,
    loss_fn: torch.nn.Module,
    batches: list[dict],
    n: int,
    activation: str,
    device: str = "cpu",
    amp: bool = False,
) -> float:
    """Seconds per step of ``MeanTeacherTrainer.run`` over ``n`` steps (engine set-up excluded)."""
    teacher = EMATeacher(net, momentum=0.99)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    trainer = MeanTeacherTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=Cycle(batches, n),
        network=net,
        optimizer=opt,
        loss_function=loss_fn,
        teachers=[teacher],
        activation=activation,
        unsup_weight=SigmoidRamp(1.0, n),
        amp=amp,
        amp_kwargs={"dtype": torch.bfloat16},
    )
    _sync(device)
    t0 = time.perf_counter()
    trainer.run()
    _sync(device)
    return (time.perf_counter() - t0) / n


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
    net, batches = net.to(a.device), _to(batches, a.device)
    import copy

    def plain() -> float:
        teacher = copy.deepcopy(net).requires_grad_(False).eval()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        return plain_steps(net, teacher, opt, loss_fn, batches, a.steps, activation, device=a.device, amp=a.amp)

    plain_s, s4mi_s, ratios = side_by_side(
        plain, lambda: s4mi_steps(net, loss_fn, batches, a.steps, activation, a.device, a.amp), a.rounds
    )
    print()
    print(
        f"| model | threads | plain PyTorch (ms/step) | s4mi MeanTeacherTrainer (ms/step) | ratio, median of {a.rounds} rounds |"
    )
    print("|---|---|---|---|---|")
    label = a.model + ("" if a.device == "cpu" else f" ({a.device}{', bf16' if a.amp else ''})")
    print(table_row(label, a.threads, plain_s, s4mi_s, ratios))


if __name__ == "__main__":
    main()
