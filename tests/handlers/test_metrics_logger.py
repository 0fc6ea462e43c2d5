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


def _epochs(path):
    return [(r["epoch"], r.get("loss")) for r in map(json.loads, path.read_text().splitlines())]


def test_a_run_that_starts_over_replaces_the_rows_of_an_earlier_attempt(tmp_path) -> None:
    """Curves kept from a run whose checkpoints are gone (a grid's committed runs), one line cut short by a kill."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 9.0}\n{"epoch": 2, "loss": 9.0}\n{"epoch": 3, "loss": 9.0}\n{"epo')
    engine = Engine(lambda e, b: {"loss": torch.tensor(float(e.state.epoch))})
    MetricsLogger(tmp_path, output_keys=["loss"]).attach(engine)
    engine.run([0], max_epochs=2)
    assert _epochs(path) == [(1, 1.0), (2, 2.0)]


def test_a_resumed_run_keeps_the_epochs_before_it_and_redoes_the_rest(tmp_path) -> None:
    """Killed after logging epoch 2 but before its checkpoint: the run resumes from epoch 1's, and does 2 again."""
    path = tmp_path / "metrics.jsonl"

    def step(e, b):
        return {"loss": torch.tensor(10.0 * e.state.epoch)}

    first = Engine(step)
    MetricsLogger(tmp_path, output_keys=["loss"]).attach(first)
    first.run([0], max_epochs=1)
    state = first.state_dict()
    with open(path, "a") as f:
        f.write('{"epoch": 2, "loss": -1.0}\n')  # the epoch the checkpoint did not keep
    resumed = Engine(step)
    MetricsLogger(tmp_path, output_keys=["loss"]).attach(resumed)
    resumed.load_state_dict(state)
    resumed.run([0], max_epochs=3)
    assert _epochs(path) == [(1, 10.0), (2, 20.0), (3, 30.0)]


def test_handlers_of_one_engine_share_a_file(tmp_path) -> None:
    from s4mi.handlers.metrics_logger import append_epoch_row

    path = tmp_path / "pretrain_metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 9.0}\n')
    engine, other = Engine(lambda e, b: None), Engine(lambda e, b: None)
    append_epoch_row(path, {"epoch": 1, "loss": 1.0}, engine)
    append_epoch_row(path, {"epoch": 1, "probe": 0.5}, engine)  # a second handler on the same engine, same epoch
    append_epoch_row(path, {"epoch": 2, "loss": 2.0}, engine)
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"epoch": 1, "loss": 1.0},
        {"epoch": 1, "probe": 0.5},
        {"epoch": 2, "loss": 2.0},
    ]
    append_epoch_row(path, {"epoch": 2, "loss": 3.0}, other)  # another engine (a run again) takes the file over
    assert _epochs(path) == [(1, 1.0), (1, None), (2, 3.0)]
