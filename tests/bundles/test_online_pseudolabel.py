"""The online pseudo-labelling bundles' own paths: rendered pseudo labels with write-back, exporting a teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import _bundle_cmd, _run

POLYP = "online_pseudolabel_polyp_segmentation"
pytestmark = pytest.mark.slow  # each test needs the teacher stage trained through monai.bundle


@pytest.fixture(scope="module")
def teacher_stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("opl")
    args = [
        "--phantom_n", "60", "--output_dir", str(out), "--ckpt_dir", str(out / "models"), "--progress_bar", "false",
        "--pretrain_epochs", "1", "--pretrain_batch_size", "8", "--max_epochs", "1", "--batch_size", "4",
        "--unlabeled_batch_size", "4",
    ]  # fmt: skip
    _run(_bundle_cmd(POLYP, "pretrain.json", *args), cwd=out)
    return out, args


def test_rendered_pseudo_labels_are_served_and_written_back_at_the_source_size(
    teacher_stage: tuple[Path, list[str]],
) -> None:
    from PIL import Image

    out, args = teacher_stage
    pseudo = out / "pseudo"
    log = _run(_bundle_cmd(POLYP, "train.json", *args, "--render_every", "1", "--pseudo_label_dir", str(pseudo)), out)
    assert "pseudo labels rendered for" in log
    split = json.loads((out / "split.json").read_text())
    sources = {Path(i["image"]).name.rsplit(".", 1)[0]: Path(i["image"]) for i in split["unlabeled"]}
    masks = sorted(pseudo.glob("*_pseudo.png"))
    assert len(masks) == len(sources), "one pseudo label per unlabelled image"
    for mask in masks:
        stem = mask.name.removesuffix("_pseudo.png")
        size = Image.open(sources[stem]).size
        assert Image.open(mask).size == size
        assert Image.open(pseudo / f"{stem}_confidence.png").size == size
    assert (out / "models" / "model.pt").is_file()


def test_export_teacher_overlay_writes_the_chosen_teacher(teacher_stage: tuple[Path, list[str]]) -> None:
    out, args = teacher_stage
    export = out / "export"
    a = [*args[: args.index("--ckpt_dir")], "--ckpt_dir", str(export), *args[args.index("--ckpt_dir") + 2 :]]
    a += ["--pretrained_ckpt", str(out / "models" / "pretrained.pt")]
    teachers = torch.load(out / "models" / "pretrained.pt", weights_only=True)
    for source in ("teacher", "teacher_momentum"):
        _run(_bundle_cmd(POLYP, ["train.json", "export_teacher.json"], *a, "--teacher_source", source), out)
        model = torch.load(export / "model.pt", weights_only=True)
        assert model.keys() == teachers[source].keys()
        assert all(torch.equal(model[k], teachers[source][k]) for k in model)
    assert not all(torch.equal(teachers["teacher"][k], teachers["teacher_momentum"][k]) for k in model)


def test_without_teacher_weights_the_teacher_starts_as_the_student(teacher_stage: tuple[Path, list[str]]) -> None:
    """MONAI Label trains on from models/model.pt with pretrained_ckpt='' (s4mi.label.overrides): no stage 0 needed."""
    out, args = teacher_stage
    a = [*args, "--pretrained_ckpt", "", "--output_dir", str(out / "no_teacher"), "--ckpt_dir", str(out / "nt")]
    log = _run(_bundle_cmd(POLYP, "train.json", *a), out)
    assert "loaded the teacher" not in log
    assert (out / "nt" / "model.pt").is_file()
