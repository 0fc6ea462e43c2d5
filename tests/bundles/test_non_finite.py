"""A bundle run whose loss turns NaN stops naming the step, keeps every file, and resumes with a lower lr."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import PHANTOM_N, _bundle_cmd, _run
from tests.conftest import REPO, subprocess_threads

NAME = "supervised_polyp_segmentation"
NAN_LOSS = {
    "_target_": "tests.handlers.test_non_finite.NaNAfter",
    "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
    "after": 0,
}


def _cmd(out: Path, epochs: int, *extra: str) -> list[str]:
    return _bundle_cmd(
        NAME,
        "train.json",
        *("--phantom_n", str(PHANTOM_N), "--max_epochs", str(epochs), "--output_dir", str(out)),
        *("--progress_bar", "false", "--batch_size", "8", "--val_batch_size", "16", "--spatial_size", "[32, 32]"),
        *("--checkpoint_every_n_iterations", "1"),
        *extra,
    )


def _files(out: Path) -> dict[str, str]:
    return {
        str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(out.rglob("*.pt"))
        if f.is_file()
    }


@pytest.mark.slow  # about 90 s: three short bundle runs
def test_nan_loss_stops_the_bundle_and_a_lower_lr_resume_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(_cmd(out, 1), cwd=tmp_path)
    files = _files(out)
    assert "models/model.pt" in files and any(k.startswith("resume/") for k in files), files

    # epoch 2 with a loss that is NaN from its first step: with a resume checkpoint after every step, plain
    # TerminateOnNan (at ITERATION_COMPLETED) would have saved the NaN weights over the epoch-1 checkpoint
    env = dict(os.environ, OMP_NUM_THREADS=subprocess_threads(), PYTHONPATH=str(REPO))
    nan = subprocess.run(_cmd(out, 3, "--loss", repr(NAN_LOSS)), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert nan.returncode != 0
    log = nan.stdout + nan.stderr
    assert "NonFiniteError: non-finite loss at iteration" in log
    assert "(epoch 2, step 1 of" in log and "loss = nan" in log, log[-3000:]
    assert _files(out) == files, "a file was written or changed by the NaN run"

    log = _run(_cmd(out, 2, "--learning_rate", "0.0001"), cwd=tmp_path)
    assert "Restored all variables from" in log
    assert "with learning rate [0.0001] (the checkpoint's was [0.001])" in log
    resume = sorted((out / "resume").glob("checkpoint_iteration=*.pt"))
    state = torch.load(resume[-1], weights_only=True)
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.0001
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
