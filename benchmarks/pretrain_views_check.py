"""Can MoCo tell the images apart under a bundle's view augmentation? A fast check before a long pretraining run.

Runs a minimal hand-written MoCo v2 loop (query encoder, EMA key encoder with shuffle-BN in two chunks, a queue,
InfoNCE) for a few dozen steps on the first images of a datalist, with the view augmentation of an s4mi
pretraining bundle (``train#load_transforms`` and ``train#view_augmentation`` of ``configs/pretrain.json``, after
any ``--set key=json`` overrides). Every 5 steps it prints the loss, the mean cosine between a query and its key
(``pos``), between queries of different images (``neg``) and between queries and the queue (``q.queue``). A
healthy run has ``pos`` rising while ``neg`` and ``q.queue`` stay near 0. In a collapsed run ``neg`` goes to 1. If
``pos`` stays low, the views of one image are too unlike each other for the encoder to match.

This is how the S2MTS2 chest-phantom settings were found (benchmarks/README.md, "S2MTS2"): the intensity jitter
alone kept ``pos`` under 0.3, with crops alone it reached 0.74 in 35 steps. The loop is hand-written, not the
bundle's ``MoCoTrainer``, so that it isolates the augmentation and the head from the engine; the engine's own step
is compared with a plain loop in ``pretrain_overhead.py`` and tested in ``tests/engines/test_moco.py``.

Example::

    .venv/bin/python benchmarks/pretrain_views_check.py --steps 40 \
        --set '{"train#view_augmentation#transforms#3#prob": 0.8}'
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.transforms import Compose

from s4mi.networks import shuffled_key_forward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("bundles/s2mts2_cxr_classification"))
    p.add_argument("--datalist", type=Path, default=Path("benchmarks/data/cxr-n2000/datalist.json"))
    p.add_argument("--images", type=int, default=256, help="first N training images")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--set", default="{}", help="JSON object of config overrides (id -> value)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)

    parser = ConfigParser()
    parser.read_config(str(args.bundle / "configs" / "pretrain.json"))
    parser["bundle_root"] = str(args.bundle)
    parser["device"] = "cpu"
    for key, value in json.loads(args.set).items():
        parser[key] = value
    load = Compose(parser.get_parsed_content("train#load_transforms"))
    augment = parser.get_parsed_content("train#view_augmentation")
    items = json.loads(args.datalist.read_text())["training"][: args.images]
    images = [load({"image": str(args.datalist.parent / d["image"])}) for d in items]

    def views(idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(augment(dict(images[i]))["image"]).float() for i in idx.tolist()])

    net = parser.get_parsed_content("network")
    key = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.SGD(net.parameters(), lr=parser["pretrain_learning_rate"], momentum=0.9, weight_decay=1e-4)
    tau, m = float(parser["temperature"]), float(parser["key_momentum"])
    queue = F.normalize(torch.randn(int(parser["queue_size"]), int(parser["embedding_dim"])), dim=1)
    for step in range(args.steps):
        idx = torch.randperm(len(images))[: args.batch]
        q = net(views(idx))
        with torch.no_grad():
            k = shuffled_key_forward(key, views(idx), 2)
        l_neg = q @ queue.T
        logits = torch.cat([(q * k).sum(1, keepdim=True), l_neg], 1) / tau
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(list(key.parameters()), m)
            torch._foreach_add_(list(key.parameters()), list(net.parameters()), alpha=1 - m)
            queue = torch.cat([k, queue])[: len(queue)]
            if step % 5 == 0:
                sim = q @ q.T
                neg = (sim.sum() - sim.diagonal().sum()) / (len(q) * (len(q) - 1))
                print(
                    f"step {step:3d}  loss {loss.item():.3f}  pos {(q * k).sum(1).mean().item():.3f}  "
                    f"neg {neg.item():.3f}  q.queue {l_neg.mean().item():.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
