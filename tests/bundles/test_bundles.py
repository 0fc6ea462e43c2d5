"""Every s4mi bundle keeps the MONAI bundle contract and trains, evaluates and infers through monai.bundle."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import BUNDLES, subprocess_threads

NAMES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


def _configs(name: str) -> Path:
    return BUNDLES / name / "configs"


PHANTOM_N = 80
REQUIRED_TOP_LEVEL = (
    "dataset_dir",
    "datalist",
    "label_fraction",
    "in_channels",
    "num_classes",
    "spatial_size",
    "max_epochs",
    "batch_size",
    "output_dir",
    "device",
)


def test_bundles_found() -> None:
    assert {"supervised_cxr_classification", "supervised_skin_classification", "supervised_polyp_segmentation"} <= set(
        NAMES
    )


def _stage_args(name: str, config: str | list[str], args: tuple[str, ...]) -> list[str]:
    """The overrides of ``args`` for this stage: as ``s4mi run`` does, a key that only another stage of the bundle
    defines (``pretrain_epochs`` for train.json) is left out; a key no stage defines stays (the run rejects it)."""
    from s4mi.bundle.overrides import defines_key, load_stage_config, split_cli_overrides

    cfg = _configs(name)
    this = load_stage_config([cfg / c for c in ([config] if isinstance(config, str) else config)])
    stages = [f for f in sorted(cfg.glob("*.json")) if f.name != "metadata.json"]
    stand_alone = ("train.json", "pretrain.json", "inference.json")  # others are overlays merged over train.json
    others = [load_stage_config([f] if f.name in stand_alone else [cfg / "train.json", f]) for f in stages]
    pairs = split_cli_overrides(args)
    keep = [k for k, _ in pairs if defines_key(this, k) or not any(defines_key(o, k) for o in others)]
    return [t for k, tokens in pairs if k in keep for t in tokens]


def _bundle_cmd(name: str, config: str | list[str], *args: str) -> list[str]:
    cfg = _configs(name)
    files = str(cfg / config) if isinstance(config, str) else json.dumps([str(cfg / c) for c in config])
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        files,
        "--meta_file",
        str(cfg / "metadata.json"),
        "--logging_file",
        str(cfg / "logging.conf"),
        *_stage_args(name, config, args),
    ]


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=subprocess_threads())
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_files_and_top_level_keys(name: str) -> None:
    root = BUNDLES / name
    for rel in (
        "LICENSE",
        "docs/README.md",
        "configs/metadata.json",
        "configs/train.json",
        "configs/evaluate.json",
        "configs/inference.json",
        "configs/multi_gpu_train.json",
        "configs/logging.conf",
    ):
        assert (root / rel).is_file(), f"{name}: missing {rel}"
    train = json.loads((root / "configs" / "train.json").read_text())
    missing = [k for k in REQUIRED_TOP_LEVEL if k not in train]
    assert not missing, f"{name}/configs/train.json lacks top-level keys {missing}"
    assert "network" in train and isinstance(train["train"]["handlers"], list)
    inference = (root / "configs" / "inference.json").read_text()
    assert "@_meta_" not in inference, "MONAI Label reads inference.json without metadata"
    for f in (root / "configs").glob("*.json"):
        text = f.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{f} is not formatted with 4 spaces"


STAGES = [
    (n, c) for n in NAMES for c in ("train.json", "inference.json", "pretrain.json") if (_configs(n) / c).is_file()
]


@pytest.mark.parametrize(("name", "config"), STAGES)
def test_check_properties(name: str, config: str, tmp_path: Path) -> None:
    workflow_type = "infer" if config == "inference.json" else "train"
    wf = ConfigWorkflow(
        config_file=str(_configs(name) / config),
        meta_file=str(_configs(name) / "metadata.json"),
        logging_file=str(_configs(name) / "logging.conf"),
        workflow_type=workflow_type,
        output_dir=str(tmp_path),  # not the bundle's runs/: its split.json would name this session's phantom cache
    )
    wf.initialize()
    assert wf.check_properties() == [], f"{name} {workflow_type}: missing properties"


@pytest.mark.parametrize("name", NAMES)
def test_verify_metadata(name: str, tmp_path: Path, meta_schema_file: Path) -> None:
    schema = tmp_path / meta_schema_file.name
    shutil.copy(meta_schema_file, schema)
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(_configs(name) / "metadata.json"), filepath=str(schema))


@pytest.mark.parametrize("name", NAMES)
def test_verify_net_in_out(name: str) -> None:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(_configs(name) / "metadata.json"),
        config_file=str(_configs(name) / "inference.json"),
        device="cpu",
    )


#: bundles that train too slowly on CPU at the common sizes: their own phantom size and batch size here (the 3D
#: CNN + SwinUNETR pair took 10 minutes for one epoch of 80 volumes at batch 8 on 2 busy cores; the other 3D bundles
#: took 60 to 75 s for train, evaluate and resume at 80)
SMALLER: dict[str, dict[str, str]] = {
    name: {"phantom_n": "20", "batch_size": "2"}
    for name in ("cross_teaching_ct_segmentation", "mean_teacher_ct_segmentation", "online_pseudolabel_ct_segmentation")
}


#: pretraining settings of a bundle whose pretraining length is not pretrain_epochs alone (a curriculum's stages)
PRETRAIN_EXTRA: dict[str, list[str]] = {"curricular_ssl_cxr_classification": ["--curriculum", "rotation:1"]}


def _phantom_n(name: str = "") -> str:
    return SMALLER.get(name, {}).get("phantom_n", str(PHANTOM_N))


def _train_args(out: Path, epochs: int, name: str = "") -> list[str]:
    return [
        "--phantom_n",
        _phantom_n(name),
        "--max_epochs",
        str(epochs),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(out / "models"),
        "--progress_bar",
        "false",
        "--batch_size",
        SMALLER.get(name, {}).get("batch_size", "8"),
    ]


@pytest.fixture(scope="module", params=NAMES)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """One short training run per bundle through `python -m monai.bundle run`, then evaluation on the test set."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    args = _train_args(out, epochs=1, name=name)
    log = ""
    if (_configs(name) / "pretrain.json").is_file():  # two-stage bundles: self-supervised pretraining first
        pre = ["--pretrain_epochs", "1", "--pretrain_batch_size", "8", *PRETRAIN_EXTRA.get(name, [])]
        log += _run(_bundle_cmd(name, "pretrain.json", *args, *pre), cwd=out)
    log += _run(_bundle_cmd(name, "train.json", *args), cwd=out)
    log += _run(_bundle_cmd(name, ["train.json", "evaluate.json"], *args), cwd=out)
    return name, out, log


@pytest.mark.slow  # trains every bundle through monai.bundle (most of the suite's time)
def test_train_then_evaluate(trained: tuple[str, Path, str]) -> None:
    name, out, log = trained
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out / "test_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in val] == [1]
    key = "val_mean_dice" if "segmentation" in name else "val_mean_auc"
    assert np.isfinite(test[-1][key]) and 0.0 <= test[-1][key] <= 1.0
    assert list((out).glob("events.out.tfevents.*")), "TensorBoard logs expected by default"
    assert (out / "split.json").is_file()
    assert list((out / "resume").glob("*.pt"))
    if name.endswith("skin_classification"):  # each class on the test set, and its macro mean as reported
        with open(out / "per_class_metrics.csv", newline="") as f:
            per_class = list(csv.DictReader(f))
        assert [r["class"] for r in per_class] == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC", "mean"]
        assert float(per_class[-1]["auc"]) == pytest.approx(test[-1]["val_mean_auc"], abs=1e-6)
        assert float(per_class[-1]["f1"]) == pytest.approx(test[-1]["val_f1_score"], abs=1e-6)
    stage0 = _configs(name) / "pretrain.json"
    if stage0.is_file() and json.loads(stage0.read_text()).get("pretrain_uses_labels"):  # a teacher stage
        rows = [json.loads(x) for x in (out / "pretrain_momentum_metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1] and 0.0 <= rows[0]["val_momentum_mean_dice"] <= 1.0
        teachers = torch.load(out / "models" / "pretrained.pt", weights_only=True)
        assert sorted(teachers) == ["teacher", "teacher_momentum"]
        assert teachers["teacher"].keys() == state.keys(), "the teacher has the student's architecture"
        assert "loaded the teacher momentum as the pseudo-label teacher" in log, "no momentum teacher loaded"
        assert "loaded the teacher momentum as the student" in log, "the student did not start from the teacher"
        rows = [json.loads(x) for x in (out / "teacher_metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1]
    elif stage0.is_file():
        rows = [json.loads(x) for x in (out / "pretrain_metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1] and np.isfinite(rows[0]["loss"]) and rows[0]["loss"] > 0
        # the probe runs at the last pretraining epoch: kNN and linear scores of each pretrained network
        probe = {k: v for k, v in rows[0].items() if k.startswith("probe_")}
        # (student and teacher, or CASS's cnn and vit)
        assert any(k.startswith("probe_knn_auc_") for k in probe), sorted(rows[0])
        assert any(k.startswith("probe_linear_auc_") for k in probe), sorted(rows[0])
        assert all(0.0 <= v <= 1.0 for v in probe.values() if np.isfinite(v)), probe
        backbone = torch.load(out / "models" / "pretrained.pt", weights_only=True)
        assert backbone and not any(k.startswith(("class_layers.out", "head")) for k in backbone)
        assert "loaded the pretrained backbone" in log, "the fine-tuning stage did not start from the pretraining"


@pytest.mark.slow  # trains every bundle through monai.bundle (most of the suite's time)
def test_resume_continues(trained: tuple[str, Path, str]) -> None:
    """Running the same command with more epochs resumes from the saved trainer state instead of restarting."""
    name, out, _ = trained
    args = _train_args(out, epochs=2, name=name)
    log = _run(_bundle_cmd(name, "train.json", *args), cwd=out)
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in val] == [1, 2], "epoch 1 ran again: the run did not resume"
    assert re.search(r"Trainer - INFO - Restored all variables from .*resume", log), "no resume checkpoint loaded"


@pytest.mark.slow  # trains every bundle through monai.bundle (most of the suite's time)
def test_inference(trained: tuple[str, Path, str]) -> None:
    name, out, _ = trained
    pred_dir = out / "pred"
    _run(
        _bundle_cmd(
            name,
            "inference.json",
            "--phantom_n",
            _phantom_n(name),
            "--ckpt_dir",
            str(out / "models"),
            "--output_dir",
            str(pred_dir),
        ),
        cwd=out,
    )
    if "segmentation" not in name:
        rows = (pred_dir / "predictions.csv").read_text().splitlines()
        n_classes = json.loads((_configs(name) / "train.json").read_text())["num_classes"]
        assert rows and all(len(r.split(",")) == 1 + n_classes for r in rows)
        return
    masks = sorted(pred_dir.glob("*_seg.*"))
    assert masks, f"no segmentation written to {pred_dir}"
    split = json.loads((out / "split.json").read_text())
    sources = {Path(i["image"]).name.split(".")[0]: Path(i["image"]) for i in split["test"]}
    for mask in masks:
        source = sources[mask.name.split("_seg")[0]]
        if mask.name.endswith(".nii.gz"):
            import nibabel as nib

            m, src = nib.load(mask), nib.load(source)
            assert m.shape == src.shape, f"{mask.name}: {m.shape} vs source {src.shape}"
            assert np.allclose(m.affine, src.affine, atol=1e-4), f"{mask.name}: affine differs from the source's"
            assert set(np.unique(np.asarray(m.dataobj))) <= set(range(5))
        else:
            from PIL import Image

            assert Image.open(mask).size == Image.open(source).size


@pytest.mark.slow  # trains every bundle through monai.bundle (most of the suite's time)
def test_ckpt_export(trained: tuple[str, Path, str]) -> None:
    name, out, _ = trained
    ts = out / "model.ts"
    meta = json.loads((_configs(name) / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    shape = [1, image["num_channels"], *image["spatial_shape"]]
    # a network TorchScript cannot compile (MONAI's SwinUNETR) is traced, as the bundle's metadata says
    trace = ["--use_trace", "True", "--input_shape", json.dumps(shape)] if meta.get("ckpt_export_use_trace") else []
    _run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts),
            "--ckpt_file",
            str(out / "models" / "model.pt"),
            "--meta_file",
            str(_configs(name) / "metadata.json"),
            "--config_file",
            str(_configs(name) / "inference.json"),
            *trace,
        ],
        cwd=out,
    )
    net = torch.jit.load(str(ts))
    y = net(torch.rand(*shape))
    assert y.shape[1] == json.loads((_configs(name) / "train.json").read_text())["num_classes"]


SEMI = [n for n in NAMES if "unlabeled_dataloader" in json.loads((_configs(n) / "train.json").read_text())["train"]]


@pytest.mark.parametrize("name", SEMI)
def test_labelled_stream_draws_whole_batches(name: str) -> None:
    """The cycled labelled set must not end a pass with a short batch (see ``full_batch_sampler``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_configs(name) / "train.json"))
    batch_size = int(parser.get_parsed_content("batch_size"))
    n = 3 * batch_size + 1  # a plain shuffle would end each pass with a batch of one
    parser["train#dataset"] = list(range(n))
    loader = parser.get_parsed_content("train#dataloader")
    sizes = [len(batch) for batch in loader]
    assert sizes == [batch_size] * 4, f"{name}: labelled batch sizes {sizes}"


@pytest.mark.parametrize("name", SEMI)
def test_labelled_stream_draws_whole_batches_under_torchrun(name: str) -> None:
    """With the multi-GPU overlay each of 2 ranks also draws whole labelled batches (a ``DistributedSampler`` did
    not: it pads only to the world size). The overlay keeps train.json's ``full_batch_sampler``, which reads the
    world size and rank of the process group; here they are given as torchrun would set them."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(_configs(name) / "train.json"), str(_configs(name) / "multi_gpu_train.json")])
    batch_size = int(parser.get_parsed_content("batch_size"))
    n = 6 * batch_size + 2  # DistributedSampler: 3 * batch_size + 1 per rank, a batch of one at the end
    parser["train#dataset"] = list(range(n))
    assert parser["train#dataloader#sampler"].replace("::", "#") == "@train#sampler"
    assert parser["train#sampler#_target_"] == "s4mi.data.loaders.full_batch_sampler"
    seen: list[int] = []
    for rank in (0, 1):
        parser["train#sampler#num_replicas"] = 2  # what the process group gives under torchrun
        parser["train#sampler#rank"] = rank
        loader = parser.get_parsed_content("train#dataloader", lazy=False)
        batches = [[int(i) for i in batch] for batch in loader]
        assert [len(b) for b in batches] == [batch_size] * 4, f"{name} rank {rank}: labelled batch sizes"
        seen += [i for b in batches for i in b]
    assert set(seen) == set(range(n)), f"{name}: the two ranks together miss labelled items"
