"""README's claim "the same numbers on every run": two runs of the same `s4mi benchmark` grid on one machine write
identical tables, measured columns (wall time, memory) aside."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from s4mi import cli

#: what a run measures about the machine rather than computes: these may differ between two runs
MEASURED = {"train_wall_s", "eval_wall_s", "pretrain_wall_s", "peak_rss_mib"}


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in MEASURED} for row in csv.DictReader(f)]


def _markdown_without_measured_columns(out: Path) -> list[list[str]]:
    rows = [line.split("|") for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    head = [c.strip() for c in rows[0]]
    keep = [i for i, c in enumerate(head) if not c.endswith("(s)") and not c.endswith("(MiB)")]
    return [[r[i].strip() for i in keep] for r in rows]


@pytest.mark.slow
def test_two_benchmark_runs_write_the_same_table(tmp_path: Path) -> None:
    """A semi-supervised and a supervised bundle, two seeds, two runs at a time, twice; every metric equal."""
    args = [
        *("benchmark", "--task", "polyp", "--phantom-n", "40", "--fractions", "0.5", "--seeds", "0", "1"),
        *("--methods", "supervised_polyp_segmentation", "mean_teacher_polyp_segmentation"),
        *("--threads", "1", "--jobs", "2"),
        *("--set", "max_epochs=2", "batch_size=4", "unlabeled_batch_size=4", "val_batch_size=8"),
    ]
    cli.main([*args, "--out", str(tmp_path / "a")])
    cli.main([*args, "--out", str(tmp_path / "b")])
    a, b = _table(tmp_path / "a"), _table(tmp_path / "b")
    assert len(a) == 4 and all(float(r["test_mean_dice"]) > 0 for r in a), a
    assert a == b
    assert _markdown_without_measured_columns(tmp_path / "a") == _markdown_without_measured_columns(tmp_path / "b")
