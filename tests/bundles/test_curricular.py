"""curricular_ssl_cxr_classification through monai.bundle: every stage of a curriculum runs in order with its own loss,
probe and backbone file; a run killed inside a later stage resumes there and ends as an uninterrupted run; the
fine-tuned model's Grad-CAM attention in the lungs reaches test_metrics.jsonl."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import _bundle_cmd, _run

NAME = "curricular_ssl_cxr_classification"
CURRICULUM = "rotation:1+reconstruction:1+jigsaw:1+contrastive:1"
TASKS = ["rotation", "reconstruction", "jigsaw", "contrastive"]


def _args(out: Path) -> list[str]:
    return [
        *("--phantom_n", "60", "--output_dir", str(out), "--ckpt_dir", str(out / "models")),
        *("--progress_bar", "false", "--pretrain_batch_size", "8", "--curriculum", CURRICULUM),
        *("--checkpoint_every_n_iterations", "2", "--batch_size", "8", "--max_epochs", "1"),
    ]


def _rows(path: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["epoch"]: r for r in rows}  # a re-run epoch: the last row wins


@pytest.mark.slow
def test_curriculum_stages_kill_resume_and_attention(tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(_bundle_cmd(NAME, "pretrain.json", *_args(full)), cwd=tmp_path)
    rows = _rows(full / "pretrain_metrics.jsonl")
    assert sorted(rows) == [1, 2, 3, 4]
    for epoch, task in enumerate(TASKS, start=1):
        r = rows[epoch]
        assert r["stage"] == epoch - 1 and r[f"loss_{task}"] == pytest.approx(r["loss"]) and r["loss"] > 0, r
        assert not any(f"loss_{t}" in r for t in TASKS if t != task), r
        assert "probe_knn_auc_encoder" in r and "probe_linear_auc_encoder" in r, "no probe at the stage's end"
    probes = _rows(full / "probe_metrics.jsonl")
    assert sorted(probes) == [0, 1, 2, 3, 4], "probes: the initialisation, then each stage's end"
    stages = sorted(p.name for p in (full / "models").glob("stage*.pt"))
    assert stages == [f"stage{i}_{t}.pt" for i, t in enumerate(TASKS)]
    last = torch.load(full / "models" / f"stage3_{TASKS[-1]}.pt", weights_only=True)
    final = torch.load(full / "models" / "pretrained.pt", weights_only=True)
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)

    # kill -9 in the middle of the third stage, rerun the same command
    cmd = _bundle_cmd(NAME, "pretrain.json", *_args(killed))
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600

    def in_third_stage() -> bool:
        for f in (killed / "resume_pretrain").glob("checkpoint_iteration=*.pt"):
            try:
                t = torch.load(f, weights_only=True)["trainer"]
            except Exception:  # being replaced right now
                continue
            if t["iteration"] > 2 * t["epoch_length"] and t["iteration"] % t["epoch_length"]:
                return True
        return False

    while not in_third_stage():
        assert proc.poll() is None, "the run ended before a checkpoint inside the third stage was seen"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "models" / "stage2_jigsaw.pt").exists(), "killed after the third stage ended"
    log = _run(cmd, cwd=tmp_path)
    assert re.search(r"Restored all variables from .*resume_pretrain", log), "no resume checkpoint loaded"
    epochs_logged = [json.loads(x)["epoch"] for x in (killed / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert epochs_logged == [1, 2, 3, 4], "a finished stage ran again after the resume"
    resumed = torch.load(killed / "models" / "pretrained.pt", weights_only=True)
    assert all(torch.equal(resumed[k], final[k]) for k in final), "the resumed run ended elsewhere"
    for i, task in enumerate(TASKS):
        a = torch.load(full / "models" / f"stage{i}_{task}.pt", weights_only=True)
        b = torch.load(killed / "models" / f"stage{i}_{task}.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), f"stage {i} ({task}) differs after the resume"
    got = _rows(killed / "pretrain_metrics.jsonl")
    for epoch in rows:
        assert got[epoch]["loss"] == pytest.approx(rows[epoch]["loss"], rel=1e-6), epoch

    # fine-tuning from the curriculum's backbone, then the test set with the attention in the lungs
    log = _run(_bundle_cmd(NAME, "train.json", *_args(full)), cwd=tmp_path)
    assert "loaded the pretrained backbone" in log
    _run(_bundle_cmd(NAME, ["train.json", "evaluate.json"], *_args(full)), cwd=tmp_path)
    test = [json.loads(x) for x in (full / "test_metrics.jsonl").read_text().splitlines()][-1]
    with open(full / "attention_in_lung.csv") as f:
        per_image = list(csv.DictReader(f))
    split = json.loads((full / "split.json").read_text())
    assert len(per_image) == len(split["test"])
    shares = [float(r["share"]) for r in per_image if r["share"] != "nan"]
    assert shares and all(0.0 <= s <= 1.0 for s in shares)
    assert test["val_attention_in_lung"] == pytest.approx(sum(shares) / len(shares), rel=1e-6)
    assert all(0.1 < float(r["mask_area"]) < 0.5 for r in per_image), "the phantom's lungs cover a fifth to a third"


def test_consolidation_overlay_is_a_binary_task() -> None:
    """configs/consolidation.json: one output, each label vector cut to the phantom's consolidation finding."""
    from monai.bundle import ConfigParser

    from tests.bundles.test_bundles import _configs

    parser = ConfigParser()
    parser.read_config([str(_configs(NAME) / "train.json"), str(_configs(NAME) / "consolidation.json")])
    assert parser.get_parsed_content("num_classes") == 1
    assert parser.get_parsed_content("network_def#out_channels") == 1
    assert parser.get_parsed_content("classes") == [5]
    meta = json.loads((_configs(NAME) / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["5"] == "consolidation"


def test_reset_optimizer_flag_as_the_command_line_gives_it() -> None:
    from monai.bundle import ConfigParser

    from tests.bundles.test_bundles import _configs

    parser = ConfigParser()
    parser.read_config(str(_configs(NAME) / "pretrain.json"))
    parser.update({"reset_optimizer": "false"})
    assert parser.get_parsed_content("train#trainer#reset_optimizer") is False
