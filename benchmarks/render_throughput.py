"""Pseudo-label rendering throughput: PseudoLabelRenderer.render() vs a plain no-grad inference loop.

Both sides run the same teacher (a 2D MONAI UNet, or FlexibleUNet with ``--net flexunet``) in eval mode over the
same DataLoader of in-memory random images (batches ``{"image", "ulb_index"}`` as the bundles make them). The plain
side is ``with torch.no_grad(): for b in loader: model(b["image"].to(dev))``; the renderer also applies the sigmoid
and writes every batch into its cache. Each round times one full pass of each, in alternating order, after one
untimed warm-up pass of each (CUDA is synchronised before reading the clock); the table gives the medians and the
throughput ratio plain seconds / renderer seconds (1.0: no overhead; target >= 0.95).

    .venv/bin/python benchmarks/render_throughput.py --n 128 --rounds 3 --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.networks.nets import FlexibleUNet, UNet

import s4mi.networks  # noqa: F401  (registers the DenseNet backbones of FlexibleUNet)
from s4mi.handlers import PseudoLabelRenderer


def build(net: str, backbone: str) -> torch.nn.Module:
    if net == "flexunet":
        # the polyp bundle's network (decoder channels of configs/train.json)
        return FlexibleUNet(
            in_channels=3,
            out_channels=1,
            backbone=backbone,
            pretrained=False,
            spatial_dims=2,
            decoder_channels=(128, 64, 32, 16, 8),
        )
    return UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
    )


def loader(n: int, size: int, batch: int, meta: bool) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        image = torch.rand(3, size, size, generator=g)
        items.append({"image": MetaTensor(image) if meta else image, "ulb_index": i})
    return DataLoader(Dataset(items), batch_size=batch, shuffle=False, num_workers=0)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--net", choices=["unet", "flexunet"], default="unet")
    parser.add_argument("--backbone", default="densenet-tiny", help="FlexibleUNet backbone")
    parser.add_argument("--meta", action="store_true", help="images as MetaTensors, as LoadImaged gives them")
    parser.add_argument("--amp", action="store_true", help="autocast on CUDA (both sides)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args.net, args.backbone).to(device).eval()
    data = loader(args.n, args.size, args.batch, args.meta)
    renderer = PseudoLabelRenderer(model, data, device=device, amp=args.amp)
    autocast = torch.autocast("cuda", enabled=args.amp and device.type == "cuda")

    def plain() -> None:
        with torch.no_grad(), autocast:
            for b in data:
                model(b["image"].to(device))

    sides = {"plain": lambda: timed(plain, device), "renderer": lambda: timed(renderer.render, device)}
    for side in sides.values():
        side()  # warm-up: allocator, thread pools, the renderer's cache
    seconds: dict[str, list[float]] = {"plain": [], "renderer": []}
    for r in range(args.rounds):
        order = ["plain", "renderer"] if r % 2 == 0 else ["renderer", "plain"]
        for name in order:
            seconds[name].append(sides[name]())
        p, o = seconds["plain"][-1], seconds["renderer"][-1]
        print(f"round {r}: plain {p:.3f} s, renderer {o:.3f} s, ratio plain/renderer {p / o:.3f}")

    ratios = [p / o for p, o in zip(seconds["plain"], seconds["renderer"], strict=True)]
    net = args.net if args.net == "unet" else f"flexunet ({args.backbone})"
    print(
        f"\n{net}, {args.n} images {args.size}x{args.size}, batch {args.batch}, {args.device}, {args.threads} threads, "
        f"{args.rounds} rounds{', MetaTensor images' if args.meta else ''}{', amp' if args.amp else ''}\n"
    )
    print("| side | median s / pass | images/s |")
    print("|---|---|---|")
    for name, s in seconds.items():
        median = statistics.median(s)
        print(f"| {name} | {median:.3f} | {args.n / median:.1f} |")
    print(
        f"\nthroughput ratio plain/renderer: median {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.95)"
    )


if __name__ == "__main__":
    main()
