from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

import s4mi
from s4mi.bundle import BundleConfigError, locate_bundle_root, protect_model, run_ckpt_dir


def test_run_ckpt_dir(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    assert run_ckpt_dir(root, root / "runs") == str(root / "models")  # the default run: the bundle's models/
    assert run_ckpt_dir(root, tmp_path / "smoke") == str(tmp_path / "smoke" / "models")


def test_protect_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "models" / "model.pt"
    assert protect_model(model) == str(model)  # nothing there yet
    model.parent.mkdir()
    torch.save({"w": torch.ones(1)}, model)
    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(BundleConfigError, match=r"model.pt already holds a model .* --overwrite_model True"):
        protect_model(model)
    assert protect_model(model, resume_ckpt=tmp_path / "resume" / "c.pt") == str(model)  # the same run, resumed
    assert protect_model(model, overwrite="True") == str(model)
    monai_main = str(Path(sys.modules["monai"].__file__).parent / "bundle" / "__main__.py")
    monkeypatch.setattr(
        sys, "argv", [monai_main, "run", "--config_file", "['b/configs/monailabel_train.json','m.json']"]
    )
    assert protect_model(model) == str(model)  # MONAI Label's multi-GPU training fine-tunes the model in place


def _parsed(bundle: str, config: str, **overrides: object) -> ConfigParser:
    configs = Path(locate_bundle_root(bundle)) / "configs"
    parser = ConfigParser(globals={"s4mi": s4mi})
    parser.read_config(str(configs / config))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize(
    ("bundle", "config"),
    [
        ("supervised_polyp_segmentation", "train.json"),
        ("mean_teacher_cxr_classification", "train.json"),
        ("s2mts2_cxr_classification", "pretrain.json"),
        ("online_pseudolabel_polyp_segmentation", "train.json"),
    ],
)
def test_weights_go_under_the_runs_output_dir(bundle: str, config: str, tmp_path: Path) -> None:
    root = Path(locate_bundle_root(bundle))
    assert _parsed(bundle, config).get_parsed_content("ckpt_dir") == str(root / "models")
    assert _parsed(bundle, config, output_dir=str(tmp_path)).get_parsed_content("ckpt_dir") == str(tmp_path / "models")
    given = _parsed(bundle, config, output_dir=str(tmp_path), ckpt_dir=str(tmp_path / "w"))
    assert given.get_parsed_content("ckpt_dir") == str(tmp_path / "w")
    # inference (and MONAI Label) still read the bundle's models/model.pt
    assert _parsed(bundle, "inference.json").get_parsed_content("ckpt_dir") == str(root / "models")


def test_a_new_run_does_not_replace_an_existing_model(tmp_path: Path) -> None:
    """Before, this run trained one epoch and replaced models/model.pt with its own model."""
    configs = Path(locate_bundle_root("supervised_polyp_segmentation")) / "configs"
    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    torch.save({"trained": torch.ones(3)}, model)
    before = model.read_bytes()
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--phantom_n", "40", "--max_epochs", "1", "--batch_size", "4", "--progress_bar", "False",
           "--output_dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"s4mi: {model} already holds a model") and "--overwrite_model True" in last
    assert model.read_bytes() == before
