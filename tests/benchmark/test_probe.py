"""`s4mi probe`: kNN and linear probes of a checkpoint vs random initialisation, on a tiny phantom."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import DenseNet121

from s4mi.benchmark.probe import probe_checkpoint
from s4mi.cli import main
from s4mi.data.phantoms import make_phantom
from s4mi.data.prepare import prepare_datalist
from s4mi.handlers import save_pretrained_backbone
from s4mi.handlers.probe import embed
from s4mi.networks import EncoderWithHead, ProjectionHead, densenet_features
from s4mi.probe import knn_probe

BUNDLE = "s2mts2_cxr_classification"
pytestmark = pytest.mark.slow  # DenseNet121 features of a 40-image phantom, 5 probes: minutes on 2 busy CPUs

ACT = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})


def _net() -> DenseNet121:
    torch.manual_seed(0)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=6, act=ACT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("probe")
    make_phantom("cxr", root / "data", n=40, image_size=32)
    same = save_pretrained_backbone(EncoderWithHead(_net(), ProjectionHead(1024, 16, 8)), root / "same.pt")
    other = _net()
    with torch.no_grad():
        for p in other.features.parameters():
            p.mul_(-1.5)
    changed = save_pretrained_backbone(EncoderWithHead(other, ProjectionHead(1024, 16, 8)), root / "changed.pt")
    return root / "data" / "datalist.json", same, changed


def test_random_and_pretrained_rows(tiny: tuple[Path, Path, Path]) -> None:
    datalist, same, changed = tiny
    # the checkpoint of the same seeded initialisation: both rows are the same network
    rows = probe_checkpoint(BUNDLE, same, datalist=datalist, fraction=0.5, k=5, batch_size=16)
    assert list(rows) == ["random", "pretrained"]
    assert set(rows["random"]) == {"knn_auc", "linear_auc"}  # cxr: multi-hot findings, mean AUC
    assert rows["random"] == rows["pretrained"]
    moved = probe_checkpoint(BUNDLE, changed, datalist=datalist, fraction=0.5, k=5, batch_size=16)
    assert moved["random"] == rows["random"] and moved["pretrained"] != rows["pretrained"]


def test_knn_column_matches_a_direct_probe(tiny: tuple[Path, Path, Path]) -> None:
    datalist, _, changed = tiny
    rows = probe_checkpoint(BUNDLE, changed, datalist=datalist, fraction=0.5, k=5, batch_size=16)
    parser = ConfigParser()
    parser.read_config(f"bundles/{BUNDLE}/configs/train.json")
    parser["bundle_root"] = f"bundles/{BUNDLE}"
    transform = parser.get_parsed_content("validate#preprocessing")
    data = prepare_datalist("", datalist, "cxr", 0.5, 0, 40)
    net = _net()
    net.load_state_dict(torch.load(changed, weights_only=True), strict=False)
    feats = densenet_features(net)
    tr = embed(feats, _batches(data["training"], transform), "cpu")
    va = embed(feats, _batches(data["validation"], transform), "cpu")
    assert rows["pretrained"]["knn_auc"] == pytest.approx(knn_probe(*tr, *va, k=5, multilabel=True)["auc"])


def _batches(items: list[dict], transform: Callable[[dict], dict]) -> list[dict]:
    out = [transform(d) for d in items]
    return [{"image": torch.stack([o["image"] for o in out]), "label": torch.stack([o["label"] for o in out])}]


def test_cli_prints_the_table(tiny: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    datalist, same, _ = tiny
    main(["probe", "--bundle", BUNDLE, "--ckpt", str(same), "--datalist", str(datalist), "--fraction", "0.5"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| backbone | knn_auc | linear_auc |"
    assert out[2].startswith("| random | ") and out[3].startswith("| pretrained | ")


def test_set_overrides_a_train_key_and_refuses_an_unknown_one() -> None:
    from s4mi.benchmark.probe import _bundle_parser

    parser = _bundle_parser("cass_skin_classification", {"finetune_backbone": "vit"})
    assert parser.get_parsed_content("pretrained_exclude") == ["head."]
    assert type(parser.get_parsed_content("network_def", lazy=False)).__name__ == "ViTClassifier"
    with pytest.raises(KeyError, match="finetune_backbonee"):
        _bundle_parser("cass_skin_classification", {"finetune_backbonee": "vit"})
