"""MetricsLogger: one JSON line per epoch, with the epoch means of chosen output keys."""

from __future__ import annotations

import json

import torch
from ignite.engine import Engine, Events

from s4mi.handlers import MetricsLogger


def test_rows_hold_epoch_means_of_output_keys_and_metrics(tmp_path) -> None:
    losses = [[1.0, 3.0], [2.0, 6.0]]

    def step(engine: Engine, batch: int) -> dict:
        epoch = engine.state.epoch - 1
        return {"loss": torch.tensor(losses[epoch][batch]), "temp": 0.04, "other": "text"}

    engine = Engine(step)
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"probe_acc": 0.5 * e.state.epoch})
    )
    MetricsLogger(tmp_path, "pretrain_metrics.jsonl", output_keys=["loss", "temp", "absent"]).attach(engine)
    engine.run([0, 1], max_epochs=2)
    rows = [json.loads(x) for x in (tmp_path / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["loss"] for r in rows] == [2.0, 4.0]  # per-epoch means, reset between epochs
    assert [r["temp"] for r in rows] == [0.04, 0.04] and all("absent" not in r for r in rows)
    assert [r["probe_acc"] for r in rows] == [0.5, 1.0]


def test_an_epoch_resumed_in_its_middle_logs_the_mean_of_all_its_iterations(tmp_path) -> None:
    """The sums of the epoch's first part travel in the engine's state_dict, as a resume checkpoint holds it."""
    losses = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]

    def step(engine: Engine, batch: int) -> dict:
        return {"loss": torch.tensor(losses[engine.state.iteration - 1])}

    full = Engine(step)
    MetricsLogger(tmp_path / "full", output_keys=["loss"]).attach(full)
    full.run(range(4), max_epochs=2)

    first = Engine(step)
    MetricsLogger(tmp_path / "killed", output_keys=["loss"]).attach(first)
    first.add_event_handler(Events.ITERATION_COMPLETED(once=6), lambda e: e.terminate())  # 2 of epoch 2's 4 steps
    first.run(range(4), max_epochs=2)
    state = first.state_dict()

    resumed = Engine(step)
    MetricsLogger(tmp_path / "killed", output_keys=["loss"]).attach(resumed)
    resumed.load_state_dict(state)
    resumed.run(range(4), max_epochs=2)

    def rows(folder):
        return [json.loads(x)["loss"] for x in (folder / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "full") == [2.5, 25.0]
    assert rows(tmp_path / "killed")[-1] == 25.0, "the resumed epoch 2 averages all four of its steps"
