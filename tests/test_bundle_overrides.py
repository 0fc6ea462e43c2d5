from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import monai
import pytest

from s4mi.bundle import BundleConfigError, check_overrides, locate_bundle_root
from s4mi.bundle.overrides import load_stage_config, route_overrides, split_cli_overrides

MONAI_MAIN = str(Path(monai.__file__).parent / "bundle" / "__main__.py")


def _argv(bundle: str, stage: str, *overrides: str) -> list[str]:
    configs = Path(locate_bundle_root(bundle)) / "configs"
    return [MONAI_MAIN, "run", "--config_file", str(configs / f"{stage}.json"), "--meta_file",
            str(configs / "metadata.json"), *overrides]  # fmt: skip


def test_split_cli_overrides_reads_fire_forms() -> None:
    assert split_cli_overrides(["run", "--a", "1", "--b=2", "--flag", "--c-d", "x"]) == [
        ("a", ["--a", "1"]),
        ("b", ["--b=2"]),
        ("flag", ["--flag"]),
        ("c_d", ["--c-d", "x"]),
    ]


def test_unknown_key_is_rejected_naming_the_closest_key() -> None:
    argv = _argv("mean_teacher_polyp_segmentation", "train", "--max_epoch", "1", "--output_dir", "/tmp/x")
    with pytest.raises(
        BundleConfigError, match=r"--max_epoch names nothing in .*train.json; did you mean --max_epochs"
    ):
        check_overrides(True, argv)
    nested = _argv("mean_teacher_polyp_segmentation", "train", "--train#trainer#max_epoch", "1")
    with pytest.raises(BundleConfigError, match="did you mean --train#trainer#max_epochs"):
        check_overrides(True, nested)


def test_known_keys_pass_and_strict_false_lets_new_keys_in() -> None:
    argv = _argv(
        "mean_teacher_polyp_segmentation", "train", "--max_epochs", "1", "--train#trainer#amp=False",
        "--train#handlers#0#_disabled_", "True", "--_meta_#version", "9",
    )  # fmt: skip
    assert check_overrides(True, argv) == ["max_epochs", "train#trainer#amp", "train#handlers#0#_disabled_",
                                           "_meta_#version"]  # fmt: skip
    assert check_overrides("False", [*argv, "--my_new_key", "1"]) == []
    tracked = [*argv, "--tracking", "mlflow", "--tracking_uri", "file:///tmp/ml", "--run_name", "r"]
    assert check_overrides(True, tracked)[-2:] == ["tracking_uri", "run_name"]  # keys that --tracking adds
    routed = route_overrides(_stages("s2mts2_cxr_classification"), split_cli_overrides(tracked[-6:]))
    assert [k for k, _ in routed["pretrain"]] == ["tracking", "tracking_uri", "run_name"]
    # not `python -m monai.bundle run` (a ConfigWorkflow made in Python, MONAI Label): nothing to check
    assert check_overrides(True, ["pytest", "--max_epoch", "1"]) == []


def test_max_epochs_on_a_pretraining_stage_says_to_use_pretrain_epochs() -> None:
    for bundle in ("s2mts2_cxr_classification", "online_pseudolabel_polyp_segmentation"):
        with pytest.raises(BundleConfigError, match=r"counts that setting in pretrain_epochs .*--pretrain_epochs 1"):
            check_overrides(True, _argv(bundle, "pretrain", "--max_epochs", "1"))


def test_monai_bundle_run_stops_on_max_epochs_of_a_pretraining_stage(tmp_path: Path) -> None:
    """Before s4mi checked overrides, this ran pretraining (pretrain_epochs 0 here) and exited 0."""
    configs = Path(locate_bundle_root("s2mts2_cxr_classification")) / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "pretrain.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--max_epochs", "1", "--pretrain_epochs", "0", "--phantom_n", "40", "--output_dir", str(tmp_path),
           "--ckpt_dir", str(tmp_path / "models")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "--pretrain_epochs 1" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "models" / "pretrained.pt").exists()


def _stages(bundle: str) -> dict[str, object]:
    configs = Path(locate_bundle_root(bundle)) / "configs"
    return {s: load_stage_config(configs / f"{s}.json", configs / "metadata.json") for s in ("pretrain", "train")}


def test_route_overrides_gives_each_stage_its_keys() -> None:
    stages = _stages("s2mts2_cxr_classification")
    with pytest.raises(BundleConfigError, match=r"stage pretrain counts it in pretrain_epochs \(20\): pass "):
        route_overrides(stages, split_cli_overrides(["--max_epochs", "1"]))
    with pytest.raises(BundleConfigError, match="did you mean --pretrain_epochs"):
        route_overrides(stages, split_cli_overrides(["--pretrain_epoch", "1"]))
    routed = route_overrides(
        stages, split_cli_overrides(["--max_epochs", "1", "--pretrain_epochs", "2", "--output_dir", "o"])
    )
    assert [k for k, _ in routed["pretrain"]] == ["pretrain_epochs", "output_dir"]
    assert [k for k, _ in routed["train"]] == ["max_epochs", "output_dir"]


def test_s4mi_run_checks_overrides_before_running_a_stage(capsys: pytest.CaptureFixture[str]) -> None:
    from s4mi.cli import main

    with pytest.raises(SystemExit, match="did you mean --max_epochs"):
        main(["run", "supervised_cxr_classification", "--max_epoch", "1"])
    with pytest.raises(SystemExit, match="pass --pretrain_epochs 1 too"):
        main(["run", "s2mts2_cxr_classification", "--max_epochs", "1"])
    assert "stage pretrain" not in capsys.readouterr().out  # stopped before running anything


def test_benchmark_passes_each_stage_its_keys() -> None:
    from s4mi.benchmark.runner import _check_user_keys
    from s4mi.bundle.stages import defined_overrides

    configs = Path(locate_bundle_root("mean_teacher_polyp_segmentation")) / "configs"
    args = {"samples_per_epoch": 100, "max_epochs": 2, "seed": 0}
    assert defined_overrides([configs / "train.json"], configs, args) == {"max_epochs": 2, "seed": 0}
    _check_user_keys(["max_epochs", "consistency_weight"], configs, [])
    with pytest.raises(ValueError, match="did you mean --consistency_weight"):
        _check_user_keys(["consistency_weigth"], configs, [])
