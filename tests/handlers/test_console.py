from __future__ import annotations

import json
import logging

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser

from s4mi.handlers import EpochLossLogger, RunLengthLogger
from tests.conftest import BUNDLES


def test_run_length_is_logged_when_training_starts(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(lambda e, b: None)
    RunLengthLogger({"samples_per_epoch": 8, "batch_size": 2}).attach(engine)
    with caplog.at_level(logging.INFO, logger="s4mi.handlers.console"):
        engine.run(range(4), max_epochs=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "s4mi.handlers.console"]
    assert lines == [
        "s4mi: training: 3 epochs x 4 steps per epoch (12 steps); set by samples_per_epoch=8, batch_size=2"
    ]


def test_epoch_means_of_the_losses_and_the_ramped_weight(caplog: pytest.LogCaptureFixture) -> None:
    def step(engine: Engine, batch: int) -> dict[str, object]:
        w = 0.1 * engine.state.epoch  # a ramp of the epoch
        sup, unsup = torch.tensor(float(batch)), torch.tensor(2.0 * batch)
        return {"loss": sup + w * unsup, "loss_sup": sup, "loss_unsup": unsup, "unsup_weight": w, "pred": torch.ones(2)}

    engine = Engine(step)
    EpochLossLogger().attach(engine)
    with caplog.at_level(logging.INFO, logger="s4mi.handlers.console"):
        engine.run([1, 2, 3], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "s4mi.handlers.console"]
    # epoch 1: sup 1,2,3 -> 2; unsup 2,4,6 -> 4; loss = 2 + 0.1 * 4 = 2.4; epoch 2: 2 + 0.2 * 4 = 2.8
    assert lines == [
        "s4mi: training: epoch 1/2: loss 2.4, loss_sup 2, loss_unsup 4, unsup_weight 0.1 (means of 3 steps)",
        "s4mi: training: epoch 2/2: loss 2.8, loss_sup 2, loss_unsup 4, unsup_weight 0.2 (means of 3 steps)",
    ]


def test_decollated_output_and_a_weight_kept_in_the_state(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(lambda e, b: [{"loss": torch.tensor(float(b))}, {"loss": torch.tensor(float(b))}])
    engine.state.jcl_lambda = 0.5
    EpochLossLogger(name="pretraining").attach(engine)
    with caplog.at_level(logging.INFO, logger="s4mi.handlers.console"):
        engine.run([1.0, 4.0], max_epochs=1)
    assert [r.getMessage() for r in caplog.records if r.name == "s4mi.handlers.console"] == [
        "s4mi: pretraining: epoch 1/1: loss 2.5, jcl_lambda 0.5 (means of 2 steps)"
    ]


STAGES = sorted(
    (p.parent.parent.name, p.name) for n in ("train.json", "pretrain.json") for p in BUNDLES.glob(f"*/configs/{n}")
)


@pytest.mark.parametrize(("bundle", "stage"), STAGES)
def test_every_training_stage_logs_its_length(bundle: str, stage: str) -> None:
    path = BUNDLES / bundle / "configs" / stage
    handlers = json.loads(path.read_text())["train"]["handlers"]
    i = [h["_target_"] for h in handlers].index("s4mi.handlers.RunLengthLogger")
    parser = ConfigParser()
    parser.read_config(str(path))
    settings = parser.get_parsed_content(f"train#handlers#{i}#settings")
    epochs_key = "pretrain_epochs" if stage == "pretrain.json" else "max_epochs"
    assert settings[epochs_key] == parser.get_parsed_content(epochs_key)
    assert {"samples_per_epoch", "epoch_length"} & set(settings) or stage == "pretrain.json"
    assert "s4mi.handlers.EpochLossLogger" in [h["_target_"] for h in handlers]
