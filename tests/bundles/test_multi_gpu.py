"""Two-stage bundles pretrain under torchrun (2 gloo processes on CPU) with their multi-GPU overlay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import _bundle_cmd
from tests.conftest import free_port


@pytest.mark.slow
def test_s2mts2_pretraining_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bundle = _bundle_cmd(
        "s2mts2_cxr_classification",
        ["pretrain.json", "multi_gpu_pretrain.json"],
        "--phantom_n",
        "40",
        "--pretrain_epochs",
        "2",
        "--pretrain_batch_size",
        "4",
        "--queue_size",
        "64",
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(out / "models"),
        "--progress_bar",
        "false",
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    cmd = torchrun + bundle[1:]  # "python -m monai.bundle run ..." under torchrun: "-m monai.bundle run ..."
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = [json.loads(x) for x in (out / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2], "rank 0 alone logs, once per epoch"
    assert torch.load(out / "models" / "pretrained.pt", weights_only=True)
    ckpt = sorted((out / "resume_pretrain").glob("*.pt"))
    assert len(ckpt) == 1
    state = torch.load(ckpt[0], weights_only=True)
    # 28 training images, 2 ranks x batch 4 -> 3 iterations per epoch, 8 keys enqueued per iteration (both ranks')
    iterations = state["trainer"]["iteration"]
    assert iterations == 6 and int(state["queue"]["ptr"]) == (8 * iterations) % 64
