from __future__ import annotations

import json
import logging

import pytest
from ignite.engine import Engine
from monai.bundle import ConfigParser

from s4mi.handlers import RunLengthLogger
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
    assert settings[epochs_key] == parser[epochs_key]
    assert {"samples_per_epoch", "epoch_length"} & set(settings) or stage == "pretrain.json"
