"""`kill -9` a bundle's training in the middle of an epoch, rerun the same command: it ends as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import PHANTOM_N, _bundle_cmd, _run
from tests.conftest import subprocess_threads

EPOCHS = 3


def _args(out: Path, name: str) -> list[str]:
    return [
        *("--phantom_n", str(PHANTOM_N), "--max_epochs", str(EPOCHS), "--output_dir", str(out)),
        *("--ckpt_dir", str(out / "models"), "--progress_bar", "false", "--batch_size", "4"),
        *("--val_batch_size", "8", "--checkpoint_every_n_iterations", "2"),
        *(("--unlabeled_batch_size", "4") if name.startswith("mean_teacher") else ()),
    ]


def _mid_epoch_checkpoint(resume: Path) -> bool:
    """True once the resume folder holds a checkpoint taken in the middle of epoch 2 or later."""
    for f in resume.glob("checkpoint_iteration=*.pt"):
        try:
            trainer = torch.load(f, weights_only=True)["trainer"]
        except Exception:  # being replaced right now
            continue
        if trainer["iteration"] > trainer["epoch_length"] and trainer["iteration"] % trainer["epoch_length"]:
            return True
    return False


def _metrics(out: Path, name: str) -> dict[int, dict]:
    rows = [json.loads(x) for x in (out / name).read_text().splitlines() if x.strip()]
    return {r["epoch"]: {k: v for k, v in r.items() if k != "wall_s"} for r in rows}  # a re-run epoch: last wins


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mean_teacher_polyp_segmentation", "supervised_polyp_segmentation"])
def test_kill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path, name: str) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(_bundle_cmd(name, "train.json", *_args(full, name)), cwd=tmp_path)

    cmd = _bundle_cmd(name, "train.json", *_args(killed, name))
    env = dict(os.environ, OMP_NUM_THREADS=subprocess_threads())
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not _mid_epoch_checkpoint(killed / "resume"):
        assert proc.poll() is None, "the run ended before a mid-epoch checkpoint was seen"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_metrics(killed, "metrics.jsonl")) < EPOCHS

    log = _run(cmd, cwd=tmp_path)
    assert "Restored all variables from" in log
    assert _metrics(killed, "metrics.jsonl") == _metrics(full, "metrics.jsonl")
    a = torch.load(full / "models" / "model.pt", weights_only=True)
    b = torch.load(killed / "models" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _kill_resume_script():
    """benchmarks/kill_resume.py, the repeated-kill benchmark, imported by path (benchmarks/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "kill_resume.py"
    spec = importlib.util.spec_from_file_location("kill_resume", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_three_kills_at_random_moments_end_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """The CI-sized run of benchmarks/kill_resume.py: Mean Teacher SIGKILLed 3 times, each time restarted."""
    kr = _kill_resume_script()
    name = "mean_teacher_polyp_segmentation"
    result = kr.kill_resume(name, kr.BUNDLES[name], tmp_path, kills=3, seed=0)
    assert len(result.kills) == 3, result
    assert result.weights.startswith("equal"), result
    assert result.metrics.startswith("equal"), result
