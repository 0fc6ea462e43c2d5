"""Checkpoint handlers: atomic saving and finding the run to resume."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from monai.handlers import CheckpointSaver

__all__ = ["AtomicCheckpointSaver", "latest_checkpoint"]


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` that writes every file atomically.

    MONAI builds its disk savers with ``atomic=False`` (to keep files readable by others); a run killed while
    writing then leaves a truncated ``model.pt`` or resume checkpoint behind. Ignite's atomic mode writes to a
    temporary file in the same folder, then ``os.replace``-s it into place and adds group/other read permission,
    so nothing is lost by turning it back on. Arguments are those of :class:`~monai.handlers.CheckpointSaver`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                ckpt.save_handler._atomic = True  # type: ignore[union-attr]


_STEP = re.compile(r"=(\d+)\.pt$")


def latest_checkpoint(folder: str | os.PathLike, pattern: str = "*.pt") -> str:
    """Return the newest resume checkpoint in ``folder`` (highest ``..._<event>=N.pt`` step), or ``""`` if none.

    Bundles use the empty string to disable their ``CheckpointLoader`` on a fresh run, so the same command
    starts a run or resumes it.
    """
    path = Path(folder)
    if not path.is_dir():
        return ""
    files = [f for f in path.glob(pattern) if f.is_file()]
    if not files:
        return ""

    def _key(f: Path) -> tuple[int, float]:
        m = _STEP.search(f.name)
        return (int(m.group(1)) if m else -1, f.stat().st_mtime)

    return str(max(files, key=_key))
