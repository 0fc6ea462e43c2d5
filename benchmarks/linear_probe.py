"""Linear and kNN probes of pretrained backbones over label fractions and seeds: a loop over ``s4mi probe``.

The probe itself lives in the package (:func:`s4mi.benchmark.probe.probe_checkpoint`, ``s4mi probe``): DINO's
weighted cosine kNN and a logistic-regression probe on the frozen pooled features of the labelled share of
training, scored on the validation set, for a randomly initialised network of the bundle's architecture and the
same network with each checkpoint's backbone (same seed).

Example (the S2MTS2 cxr phantom)::

    .venv/bin/python benchmarks/linear_probe.py --datalist benchmarks/data/cxr-n2000/datalist.json \
        --ckpt runs/pretrain/models/pretrained.pt --fractions 0.1 1.0
"""

from __future__ import annotations

import argparse

import torch

from s4mi.benchmark.probe import probe_checkpoint, probe_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="s2mts2_cxr_classification", help="bundle whose network and transforms to use")
    p.add_argument("--datalist", default=None, help="datalist JSON (default: the bundle's phantom)")
    p.add_argument("--ckpt", nargs="+", required=True, help="pretrained.pt file(s) to probe")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for ckpt in args.ckpt:
        for fraction in args.fractions:
            for seed in args.seeds:
                print(f"\n{ckpt}, labelled share {fraction:g}, seed {seed}", flush=True)
                scores = probe_checkpoint(args.bundle, ckpt, datalist=args.datalist, fraction=fraction, seed=seed)
                print(probe_table(scores), flush=True)


if __name__ == "__main__":
    main()
