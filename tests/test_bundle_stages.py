from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from s4mi.bundle.stages import (
    Stage,
    StageError,
    StageRun,
    bundle_stages,
    first_stage_overrides,
    is_semi_supervised,
    model_start_overrides,
    monai_bundle_command,
    next_stage_overrides,
    run_stages,
)
from tests.conftest import BUNDLES

S2 = "s2mts2_cxr_classification"
OPL = "online_pseudolabel_polyp_segmentation"
SUP = "supervised_polyp_segmentation"
MT = "mean_teacher_polyp_segmentation"


def test_bundle_stages_in_run_order() -> None:
    assert [s.name for s in bundle_stages(S2)] == ["pretrain", "train"]
    assert [s.name for s in bundle_stages(BUNDLES / SUP)] == ["train"], "a folder works as well as a name"
    assert bundle_stages(S2)[0].config_file == BUNDLES / S2 / "configs" / "pretrain.json"
    assert [s.name for s in bundle_stages(S2, ["train"])] == ["train"]
    with pytest.raises(StageError, match=rf"{SUP} has no stage 'pretrain' \(.*pretrain.json not found\)"):
        bundle_stages(SUP, ["pretrain", "train"])


def test_bundle_without_stages_is_named(tmp_path: Path) -> None:
    (tmp_path / "b" / "configs").mkdir(parents=True)
    with pytest.raises(StageError, match="has no stage: none of pretrain.json, train.json"):
        bundle_stages(tmp_path / "b")


def test_which_first_stages_read_labels() -> None:
    s2_pre, s2_train = bundle_stages(S2)
    opl_pre, _ = bundle_stages(OPL)
    assert not s2_pre.uses_labels, "self-supervised pretraining reads no label"
    assert opl_pre.uses_labels, "the teacher of online pseudo-labelling trains on the labels"
    assert s2_train.uses_labels


def test_first_stage_overrides_share_a_label_free_stage(tmp_path: Path) -> None:
    args = {"label_fraction": 0.1, "samples_per_epoch": 700, "seed": 2, "output_dir": "run", "ckpt_dir": "run/m"}
    out = first_stage_overrides(bundle_stages(S2)[0], args, tmp_path / "pre")
    assert out == {
        "label_fraction": 1.0,
        "seed": 2,
        "output_dir": str(tmp_path / "pre"),
        "ckpt_dir": str(tmp_path / "pre" / "models"),
    }
    out = first_stage_overrides(bundle_stages(OPL)[0], args, tmp_path / "pre")
    assert out["label_fraction"] == 0.1 and out["samples_per_epoch"] == 700
    assert args["output_dir"] == "run", "the caller's overrides are not changed"
    assert next_stage_overrides(tmp_path / "pre") == {
        "pretrained_ckpt": str(tmp_path / "pre" / "models" / "pretrained.pt")
    }


def test_is_semi_supervised_one_test_for_configs_files_and_overlays() -> None:
    def train(name: str) -> dict[str, Any]:
        return json.loads((BUNDLES / name / "configs" / "train.json").read_text())

    for name in (MT, OPL, S2):
        assert is_semi_supervised(train(name)), name
        assert is_semi_supervised(BUNDLES / name / "configs" / "train.json"), name
        assert is_semi_supervised(BUNDLES / name), name
    assert not is_semi_supervised(train(SUP)) and not is_semi_supervised(BUNDLES / SUP)
    # an overlay that trains nothing says so; the last file that says it wins
    export = BUNDLES / OPL / "configs" / "export_teacher.json"
    assert not is_semi_supervised(train(OPL), [export])
    assert is_semi_supervised(train(OPL), [export, {"semi_supervised": True}])
    # a semi-supervised loader alone (no unlabeled_dataset key) is enough
    loader = {"train": {"loader": {"_target_": "s4mi.data.loaders.SemiSupervisedLoader"}}}
    assert is_semi_supervised(loader)
    assert not is_semi_supervised({"train": {"loader": {"_target_": "monai.data.DataLoader"}}})
    # merged as monai.bundle merges files: a top-level key replaces, "+key" merges, "a#b" sets a nested value
    plain = {"train": {"loader": {"_target_": "monai.data.DataLoader"}}}
    assert not is_semi_supervised(train(MT), [plain]), "the overlay's train section replaces the whole section"
    assert is_semi_supervised(train(MT), [{"+train": {"handlers": []}}])
    assert is_semi_supervised(train(SUP), [{"train#unlabeled_dataset": {"data": []}}])
    mt = train(MT)
    is_semi_supervised(mt, [{"+train": {"handlers": []}}])
    assert mt == train(MT), "the caller's config is not changed"


def test_model_start_overrides(tmp_path: Path) -> None:
    two_stage = json.loads((BUNDLES / S2 / "configs" / "train.json").read_text())
    one_stage = json.loads((BUNDLES / SUP / "configs" / "train.json").read_text())
    assert model_start_overrides(two_stage, tmp_path) == {}, "no model.pt: the first stage's weights are needed"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"x")
    assert model_start_overrides(two_stage, tmp_path) == {"pretrained_ckpt": ""}
    assert model_start_overrides(one_stage, tmp_path) == {}


def test_monai_bundle_command() -> None:
    stage = Stage("train", Path("/b/configs/train.json"))
    cmd = monai_bundle_command([stage.config_file], stage.configs, {"max_epochs": 2, "progress_bar": False, "x": "a"})
    assert cmd == [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "/b/configs/train.json",
        "--meta_file", "/b/configs/metadata.json", "--logging_file", "/b/configs/logging.conf",
        "--max_epochs", "2", "--progress_bar", "False", "--x", "a",
    ]  # fmt: skip
    cmd = monai_bundle_command(["/b/configs/train.json", "/b/configs/evaluate.json"], "/b/configs", ["--seed", "1"])
    assert json.loads(cmd[5]) == ["/b/configs/train.json", "/b/configs/evaluate.json"] and cmd[-2:] == ["--seed", "1"]


def test_run_stages_in_order_and_stops_at_a_failure() -> None:
    calls: list[list[str]] = []
    lines: list[str] = []

    def fake_run(cmd: list[str], env: Any = None) -> StageRun:
        calls.append(cmd)
        return StageRun(0 if len(calls) == 1 else 3, 0.0, 0.0)

    with pytest.raises(StageError, match=f"stage train of {S2} failed \\(exit 3\\)"):
        run_stages(S2, ["--max_epochs", "1", "--pretrain_epochs", "1"], echo=lines.append, run=fake_run)
    assert [Path(c[c.index("--config_file") + 1]).name for c in calls] == ["pretrain.json", "train.json"]
    pretrain, train = (" ".join(c) for c in calls)
    assert "--pretrain_epochs 1" in pretrain and "--max_epochs" not in pretrain, "each stage gets its own keys"
    assert "--max_epochs 1" in train
    assert any(line.startswith(f"{S2} stage pretrain: -m monai.bundle run --config_file ") for line in lines)
    calls.clear()
    with pytest.raises(StageError, match="no stage 'pretrain'"):
        run_stages(SUP, names=["train", "pretrain"], run=fake_run)
    assert calls == [], "every stage is checked before the first runs"


def test_run_stages_runs_a_real_child(tmp_path: Path) -> None:
    """The real runner: a one-stage bundle whose run list writes a file, through ``python -m monai.bundle run``."""
    configs = tmp_path / "b" / "configs"
    configs.mkdir(parents=True)
    (configs / "metadata.json").write_text(json.dumps({"version": "0.0.1"}))
    (configs / "logging.conf").write_text((BUNDLES / SUP / "configs" / "logging.conf").read_text())
    out = tmp_path / "out.txt"
    (configs / "train.json").write_text(json.dumps({"out": str(out), "run": ["$open(@out, 'w').write('ran')"]}))
    (done,) = run_stages(tmp_path / "b")
    assert done.code == 0 and done.wall_s > 0 and done.peak_rss_mib > 10
    assert out.read_text() == "ran"
