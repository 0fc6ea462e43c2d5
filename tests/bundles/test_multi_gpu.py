"""Bundles train under torchrun (2 gloo processes on CPU) with their multi-GPU overlays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import _bundle_cmd, _train_args
from tests.conftest import free_port


def _torchrun(bundle: list[str], cwd: Path) -> None:
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
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _pretrain_under_torchrun(name: str, tmp_path: Path, *extra: str) -> Path:
    """2 epochs of a bundle's pretrain.json + multi_gpu_pretrain.json on 2 gloo ranks, 40 phantom images, batch 4
    per rank; returns the run's output folder."""
    out = tmp_path / "out"
    args = ["--phantom_n", "40", "--pretrain_epochs", "2", "--pretrain_batch_size", "4", *extra]
    args += ["--output_dir", str(out), "--ckpt_dir", str(out / "models"), "--progress_bar", "false"]
    _torchrun(_bundle_cmd(name, ["pretrain.json", "multi_gpu_pretrain.json"], *args), tmp_path)
    return out


@pytest.mark.slow
def test_s2mts2_pretraining_under_torchrun(tmp_path: Path) -> None:
    out = _pretrain_under_torchrun("s2mts2_cxr_classification", tmp_path, "--queue_size", "64")
    rows = [json.loads(x) for x in (out / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2], "rank 0 alone logs, once per epoch"
    assert torch.load(out / "models" / "pretrained.pt", weights_only=True)
    ckpt = sorted((out / "resume_pretrain").glob("*.pt"))
    assert len(ckpt) == 1
    state = torch.load(ckpt[0], weights_only=True)
    # 28 training images, 2 ranks x batch 4 -> 3 iterations per epoch, 8 keys enqueued per iteration (both ranks')
    iterations = state["trainer"]["iteration"]
    assert iterations == 6 and int(state["queue"]["ptr"]) == (8 * iterations) % 64


@pytest.mark.slow
def test_mean_teacher_training_under_torchrun(tmp_path: Path) -> None:
    """The engine's bundle with its overlay: DDP student, per-rank labelled and unlabelled samplers, rank-0 logging."""
    out = tmp_path / "out"
    bundle = _bundle_cmd(
        "mean_teacher_cxr_classification",
        ["train.json", "multi_gpu_train.json"],
        *_train_args(out, epochs=2),
        "--unlabeled_batch_size",
        "8",
    )
    _torchrun(bundle, tmp_path)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2], "rank 0 alone logs, once per epoch"
    assert torch.load(out / "models" / "model.pt", weights_only=True)
    ckpt = sorted((out / "resume").glob("*.pt"))
    assert len(ckpt) == 1
    n_unlabeled = json.loads((out / "split.json").read_text())["split"]["n_unlabeled"]
    # an epoch is one pass over each rank's half of the unlabelled set, in whole batches of 8
    assert torch.load(ckpt[0], weights_only=True)["trainer"]["iteration"] == 2 * (-(-n_unlabeled // 2) // 8)


@pytest.mark.slow
def test_srcl_joint_training_under_torchrun(tmp_path: Path) -> None:
    """SRCL joint on 2 ranks: the student and the projection head each in DistributedDataParallel, the penultimate
    features recorded by a hook through the DDP wrapper; rank 0 alone logs, and the head is checkpointed."""
    out = tmp_path / "out"
    args = [*_train_args(out, epochs=1), "--phantom_n", "40", "--batch_size", "4", "--unlabeled_batch_size", "4"]
    _torchrun(_bundle_cmd("srcl_skin_classification", ["train.json", "multi_gpu_train.json"], *args), tmp_path)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1], "rank 0 alone logs, once per epoch"
    (ckpt,) = sorted((out / "resume").glob("*.pt"))
    state = torch.load(ckpt, weights_only=True)
    assert state["head"] and not any(k.startswith("module.") for k in state["head"])


@pytest.mark.slow
def test_simclr_pretraining_under_torchrun(tmp_path: Path) -> None:
    """SRCL two-stage's SimCLR pretraining on 2 ranks: rank 0 alone logs and writes the backbone."""
    out = _pretrain_under_torchrun("srcl_two_stage_skin_classification", tmp_path)
    rows = [json.loads(x) for x in (out / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)
    assert torch.load(out / "models" / "pretrained.pt", weights_only=True)
    (ckpt,) = sorted((out / "resume_pretrain").glob("*.pt"))
    # 28 training images, 2 ranks x batch 4 -> 3 iterations per epoch
    assert torch.load(ckpt, weights_only=True)["trainer"]["iteration"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dino_skin_classification", "cass_skin_classification"])
def test_vit_pretraining_under_torchrun(name: str, tmp_path: Path) -> None:
    """DINO (student in DDP, centre all-reduced) and CASS (both networks in one DDP module) pretrain on 2 ranks;
    rank 0 alone logs and writes the backbones, and each rank takes its share of the epoch."""
    out = _pretrain_under_torchrun(name, tmp_path)
    rows = [json.loads(x) for x in (out / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2], "rank 0 alone logs, once per epoch"
    assert all(r["loss"] > 0 for r in rows) and any(k.startswith("probe_") for k in rows[-1])
    assert torch.load(out / "models" / "pretrained.pt", weights_only=True)
    (ckpt,) = sorted((out / "resume_pretrain").glob("*.pt"))
    # 28 training images, 2 ranks x batch 4 -> 3 iterations per epoch
    assert torch.load(ckpt, weights_only=True)["trainer"]["iteration"] == 6


@pytest.mark.slow
def test_cross_teaching_training_under_torchrun(tmp_path: Path) -> None:
    """Cross teaching on 2 ranks: the CNN + SwinUNETR pair in one DistributedDataParallel (one forward gives both
    networks' logits, so both are synchronised); rank 0 alone logs; model.pt is the pair with its selected output, and
    the resume checkpoint holds both networks and the optimizer's two groups."""
    out = tmp_path / "out"
    args = [*_train_args(out, epochs=1), "--phantom_n", "40", "--batch_size", "2", "--unlabeled_batch_size", "2"]
    _torchrun(_bundle_cmd("cross_teaching_skin_segmentation", ["train.json", "multi_gpu_train.json"], *args), tmp_path)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1], "rank 0 alone logs, once per epoch"
    for name in ("transformer_metrics.jsonl", "average_metrics.jsonl"):
        assert len((out / name).read_text().splitlines()) == 1, name
    model = torch.load(out / "models" / "model.pt", weights_only=True)
    assert "output_index" in model and {k.split(".")[0] for k in model} == {"cnn", "transformer", "output_index"}
    (ckpt,) = sorted((out / "resume").glob("*.pt"))
    state = torch.load(ckpt, weights_only=True)
    assert {k.split(".")[0] for k in state["model"]} == {"cnn", "transformer", "output_index"}, "DDP unwrapped"
    assert len(state["optimizer"]["param_groups"]) == 2
    n_unlabeled = json.loads((out / "split.json").read_text())["split"]["n_unlabeled"]
    assert state["trainer"]["iteration"] == -(-n_unlabeled // 2) // 2, "one pass over each rank's unlabelled half"
