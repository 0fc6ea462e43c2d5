"""Append every validation's metrics to a JSON-lines file."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ignite.engine import Engine, Events

if TYPE_CHECKING:
    from monai.engines import Workflow

__all__ = ["MetricsLogger", "append_epoch_row"]

#: the engine that last took over each JSON-lines file in this process (see :func:`append_epoch_row`)
_OWNERS: dict[Path, weakref.ref] = {}
_OWNERS_LOCK = threading.Lock()


def _epoch_of(line: str) -> float:
    try:
        return float(json.loads(line).get("epoch", -math.inf))
    except (ValueError, AttributeError):
        return math.inf  # a line cut short by a kill: dropped with the rows it was written among


def append_epoch_row(path: str | os.PathLike, row: dict, engine: Engine) -> None:
    """Append ``row`` (which has an ``"epoch"``) to the JSON-lines file ``path``, flushed.

    The first row an engine writes to a file in this process first drops the rows of that epoch and later that the
    file holds: they are what an earlier attempt measured of the epochs this run does again, e.g. a run killed after
    logging an epoch but before its checkpoint, or a run that starts over because its checkpoints are gone while its
    curves were kept (a benchmark grid's committed runs). An append-only file would list those epochs twice. Every
    handler attached to the same engine shares the file; a later engine (a resumed run, an evaluation run again)
    takes it over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    with _OWNERS_LOCK:
        owner = _OWNERS.get(key)
        if owner is None or owner() is not engine:
            _OWNERS[key] = weakref.ref(engine)
            if path.is_file():
                lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
                keep = [ln for ln in lines if _epoch_of(ln) < row["epoch"]]
                if len(keep) < len(lines):
                    tmp = path.with_name(path.name + ".tmp")
                    tmp.write_text("".join(ln + "\n" for ln in keep))
                    os.replace(tmp, path)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


class MetricsLogger:
    """Write ``{"epoch", "wall_s", <metric>: value, ...}`` per evaluator run to ``<folder>/<name>``.

    MONAI's :class:`~monai.handlers.MetricsSaver` keeps only the latest values; benchmarks and learning curves
    need the history. Under a :class:`~monai.handlers.ValidationHandler` the evaluator's epoch is the trainer's.
    The file is appended and flushed, so a killed run keeps what it had measured, and the epochs a run does again
    replace their earlier rows (:func:`append_epoch_row`).

    Args:
        folder: output folder (made if missing).
        name: file name.
        output_keys: keys of the engine's iteration output (a trainer's ``loss``, ...) whose epoch means go in each
            row too (for a trainer, which has no metric of its own but the probes'). Their running sums live in the
            engine's state and are saved with it (Ignite's ``state_dict_user_keys``), so an epoch resumed after a kill
            in its middle logs the mean over all of its iterations, as an uninterrupted run does.
    """

    def __init__(self, folder: str | os.PathLike, name: str = "metrics.jsonl", output_keys: Sequence[str] = ()) -> None:
        self.path = Path(folder) / name
        self.output_keys = list(output_keys)
        self.state_key = "s4mi_epoch_sums_" + "".join(c if c.isalnum() else "_" for c in name)
        self._start = time.perf_counter()

    def attach(self, engine: Workflow) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.output_keys:
            if self.state_key not in engine.state_dict_user_keys:
                engine.state_dict_user_keys.append(self.state_key)
            setattr(engine.state, self.state_key, {"sums": {}, "counts": {}})
            engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)

    def _sums(self, engine: Engine) -> dict[str, dict[str, float]]:
        return getattr(engine.state, self.state_key)

    def _reset(self, engine: Engine) -> None:
        length = engine.state.epoch_length
        if length and engine.state.iteration % length:
            return  # an epoch resumed in its middle: the sums of its first part came back with the checkpoint
        setattr(engine.state, self.state_key, {"sums": {}, "counts": {}})

    def _accumulate(self, engine: Engine) -> None:
        output = engine.state.output
        if not isinstance(output, dict):
            return
        sums, counts = self._sums(engine)["sums"], self._sums(engine)["counts"]
        for k in self.output_keys:
            v = output.get(k)
            if v is None:
                continue
            sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
            counts[k] = counts.get(k, 0) + 1

    def __call__(self, engine: Engine) -> None:
        row: dict[str, float | int | str] = {
            "epoch": int(engine.state.epoch),
            "wall_s": round(time.perf_counter() - self._start, 3),
        }
        if self.output_keys:
            sums, counts = self._sums(engine)["sums"], self._sums(engine)["counts"]
            row.update({k: sums[k] / counts[k] for k in self.output_keys if counts.get(k)})
        for k, v in engine.state.metrics.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        append_epoch_row(self.path, row, engine)
