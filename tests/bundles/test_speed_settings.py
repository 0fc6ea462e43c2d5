"""The speed settings every bundle has (amp, amp_dtype, channels_last, compile, compile_kwargs) reach its trainer and
evaluator, and a bundle trains with them on the CPU where PyTorch supports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from s4mi.bundle import amp_kwargs, memory_format
from tests.bundles.test_bundles import NAMES, _bundle_cmd, _configs, _run, _train_args


def test_helpers() -> None:
    assert amp_kwargs("bfloat16") == {"dtype": torch.bfloat16} and amp_kwargs("float16") == {"dtype": torch.float16}
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        amp_kwargs("float32")
    assert memory_format(False, 2) == {} and memory_format("false", 3) == {}
    assert memory_format(True, 2) == {"memory_format": torch.channels_last}
    assert memory_format("true", 3) == {"memory_format": torch.channels_last_3d}


@pytest.mark.parametrize("name", NAMES)
def test_every_trainer_takes_the_settings(name: str) -> None:
    parser = ConfigParser()
    parser.read_config(str(_configs(name) / "train.json"))
    parser.update(
        {"amp": True, "amp_dtype": "bfloat16", "channels_last": True, "compile": True, "compile_kwargs": {"mode": "x"}}
    )
    assert parser.get("train#trainer#_target_")
    resolved = {
        k: parser.get_parsed_content(f"train#trainer#{k}") for k in ("amp", "amp_kwargs", "to_kwargs", "compile")
    }
    assert resolved["amp"] is True and resolved["amp_kwargs"] == {"dtype": torch.bfloat16}
    dims = len(parser.get_parsed_content("spatial_size"))
    assert resolved["to_kwargs"] == {"memory_format": torch.channels_last if dims == 2 else torch.channels_last_3d}
    assert resolved["compile"] is True
    assert parser.get_parsed_content("train#trainer#compile_kwargs") == {"mode": "x"}
    # validation: autocast on CUDA only (MONAI's evaluator autocasts "cuda"), no memory format (its prepare_batch
    # would convert the class vectors too)
    evaluator_amp = parser.get_parsed_content("validate#evaluator#amp")
    assert evaluator_amp is (torch.device(parser.get_parsed_content("device")).type == "cuda")
    assert "to_kwargs" not in parser.get("validate#evaluator")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, settings",
    [
        ("supervised_cxr_classification", ["--amp", "true", "--amp_dtype", "bfloat16", "--channels_last", "true"]),
        ("mean_teacher_cxr_classification", ["--amp", "true", "--amp_dtype", "float16", "--channels_last", "true"]),
        ("supervised_cxr_classification", ["--compile", "true", "--compile_kwargs", '{"backend": "eager"}']),
    ],
    ids=["bf16-channels-last", "mean-teacher-fp16", "compile"],
)
def test_a_bundle_trains_with_the_settings_on_cpu(name: str, settings: list[str], tmp_path: Path) -> None:
    for dtype in ("bfloat16", "float16"):
        if dtype in settings:
            try:
                with torch.autocast("cpu", dtype=getattr(torch, dtype)):
                    torch.nn.Linear(2, 2)(torch.rand(1, 2))
            except RuntimeError as e:
                pytest.skip(f"CPU autocast in {dtype} unsupported by this PyTorch: {e}")
    if "--compile" in settings and not hasattr(torch, "compile"):
        pytest.skip("torch.compile unavailable")
    args = [*_train_args(tmp_path, epochs=1, name=name), *settings]
    if "mean_teacher" in name:
        args += ["--unlabeled_batch_size", "8"]
    _run(_bundle_cmd(name, "train.json", *args), cwd=tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and 0.0 <= rows[0]["val_mean_auc"] <= 1.0
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values()), "weights must stay float32"
    assert not any(k.startswith("_orig_mod.") for k in state), "the compiled wrapper's keys leaked into model.pt"


@pytest.mark.slow
def test_data_prefetch_changes_nothing_but_the_wait(tmp_path: Path) -> None:
    """Mean Teacher (two streams, random views) with batches made ahead in a thread ends with the weights of the same
    run without prefetching."""
    name = "mean_teacher_cxr_classification"
    outs = {}
    for prefetch in ("0", "2"):
        out = tmp_path / f"prefetch{prefetch}"
        args = [
            *_train_args(out, epochs=1, name=name),
            "--unlabeled_batch_size",
            "8",
            "--epoch_length",
            "3",
            "--data_prefetch",
            prefetch,
        ]
        _run(_bundle_cmd(name, "train.json", *args), cwd=tmp_path)
        outs[prefetch] = torch.load(next((out / "resume").glob("*.pt")), weights_only=True)["model"]
    assert outs["0"].keys() == outs["2"].keys()
    assert all(torch.equal(outs["0"][k], outs["2"][k]) for k in outs["0"]), "prefetching changed the training"


@pytest.mark.parametrize("given", ["false", "False", False, "0"])
def test_amp_off_as_the_command_line_gives_it(given: object) -> None:
    """fire hands `--amp false` over as the string "false", which is truthy: the trainer must read it as off."""
    parser = ConfigParser()
    parser.read_config(str(_configs("mean_teacher_cxr_classification") / "train.json"))
    parser.update({"amp": given})
    assert parser.get_parsed_content("train#trainer#amp") is False
    assert parser.get_parsed_content("validate#evaluator#amp") is False
