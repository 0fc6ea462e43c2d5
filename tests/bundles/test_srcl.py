"""The SRC-MT and SRCL bundles' own settings: SRC-MT's schedule scaled to the run's length, the paper overlay, the
joint bundle's second labelled view and head, the two-stage bundle's shared split and its SRC-MT fine-tuning."""

from __future__ import annotations

import math

import pytest
from monai.bundle import ConfigParser

from tests.conftest import BUNDLES

SRC_MT = "src_mt_skin_classification"
JOINT = "srcl_skin_classification"
TWO_STAGE = "srcl_two_stage_skin_classification"


def _parser(name: str, *configs: str, **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / name / "configs" / c) for c in configs])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _weights(parser: ConfigParser, ramp: str, epochs: int) -> list[float]:
    return [parser.get_parsed_content(ramp)(e) for e in range(epochs)]


@pytest.mark.parametrize("name", [SRC_MT, JOINT, TWO_STAGE])
def test_srcmt_schedule_scales_with_the_run(name: str) -> None:
    """Both unlabelled weights are SRC-MT's w(t) = weight exp(-5 (1 - t/L)^2), zero before the on-epoch: at the
    default 12 epochs L = 4 and on at 3 (SRC-MT's 30 and 21 of 100, scaled); the paper overlay gives 30 and 21."""
    p = _parser(name, "train.json")
    assert p.get_parsed_content("max_epochs") == 12
    want = [0.0, 0.0, 0.0] + [math.exp(-5 * (1 - min(e / 4, 1.0)) ** 2) for e in range(3, 12)]
    assert _weights(p, "unsup_weight", 12) == pytest.approx([10.0 * w for w in want])
    assert _weights(p, "relation_ramp", 12) == pytest.approx(want)
    paper = _parser(name, "train.json", "srcmt_paper.json")
    w = _weights(paper, "unsup_weight", 100)
    assert w[20] == 0.0 and w[21] == pytest.approx(7 * math.exp(-5 * (1 - 21 / 30) ** 2))  # on after epoch 20
    assert w[30:] == pytest.approx([7.0] * 70)  # weight = the number of classes, the code's sum over classes
    assert _weights(paper, "relation_ramp", 100)[21] == pytest.approx(math.exp(-5 * 0.09))


def test_paper_overlay_is_srcmt_setting() -> None:
    p = _parser(SRC_MT, "train.json", "srcmt_paper.json")
    assert (p["learning_rate"], p["weight_decay"], p["batch_size"], p["unlabeled_batch_size"]) == (1e-4, 5e-4, 12, 36)
    assert p["spatial_size"] == [224, 224]
    net = p.get_parsed_content("network_def")
    assert net.features.denseblock1.denselayer1.layers.dropout.p == 0.2  # dropout 0.2, as in both configs
    teacher = p.get_parsed_content("teacher")
    assert teacher.warmup == "srcmt" and teacher.momentum_at(1000) == 0.99 and teacher.momentum_at(0) == 0.0
    # SRC-MT's weak augmentation drawn twice: flip and affine, for the image and for its second view
    assert [t["_target_"] for t in p["train#augmentation"]] == ["RandFlipd", "RandAffined"]
    assert [t["keys"] for t in p["train#strong_augmentation"]] == ["image_s", "image_s"]
    relation = p.get_parsed_content("relation")
    assert relation.reduction == "srcmt" and p["teacher_train_mode"] is True


def test_joint_bundle_labelled_view_and_head() -> None:
    """The joint bundle's labelled batch carries a strong view (its second contrastive view), and the head is in the
    optimizer, the resume checkpoint and, under torchrun, its own DistributedDataParallel."""
    p = _parser(JOINT, "train.json")
    p["train#dataset#data"] = [{"image": str(i)} for i in range(2)]  # never loaded: the transforms are read
    keys = [t.keys for t in p.get_parsed_content("train#preprocessing").transforms if hasattr(t, "keys")]
    assert ("image_s",) in keys and ("image", "image_s", "label") in keys
    assert p["train#checkpoint#head"] == "@head"
    optimizer = p.get_parsed_content("optimizer")
    head = p.get_parsed_content("head")
    held = {id(q) for g in optimizer.param_groups for q in g["params"]}
    assert all(id(q) in held for q in head.parameters())
    gpu = _parser(JOINT, "train.json", "multi_gpu_train.json")
    assert gpu["head#_target_"] == "torch.nn.parallel.DistributedDataParallel"


def test_two_stage_reads_one_split_and_fine_tunes_srcmt() -> None:
    pre = _parser(TWO_STAGE, "pretrain.json")
    train = _parser(TWO_STAGE, "train.json")
    assert pre["label_fraction"] == train["label_fraction"] == 0.2  # both stages save and read one split.json
    assert pre["train#trainer#_target_"] == "s4mi.engines.SimCLRTrainer"
    assert train["train#trainer#_target_"] == "s4mi.engines.SRCMTTrainer"
    assert any("load_pretrained_backbone" in step for step in train["run"])
