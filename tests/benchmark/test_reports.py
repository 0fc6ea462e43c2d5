from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from s4mi.benchmark import summarise, write_reports


def _rows() -> list[dict]:
    rows = []
    for frac, base in ((0.1, 0.6), (1.0, 0.8)):
        for seed, d in enumerate((0.0, 0.02, -0.01)):
            rows.append(
                {
                    "method": "m",
                    "fraction": frac,
                    "seed": seed,
                    "test_val_mean_auc": base + d,
                    "epochs": 3,
                    "train_wall_s": 10.0 + seed,
                    "eval_wall_s": 1.0,
                    "peak_rss_mib": 100.0,
                }
            )
    return rows


def test_summarise_mean_and_sample_std() -> None:
    s = {r["fraction"]: r for r in summarise(_rows())}
    assert s[0.1]["test_val_mean_auc"] == pytest.approx(0.6 + 0.01 / 3)
    assert s[0.1]["test_val_mean_auc_std"] == pytest.approx(statistics.stdev([0.6, 0.62, 0.59]))
    assert s[1.0]["n_seeds"] == 3


def test_write_reports(tmp_path: Path) -> None:
    paths = write_reports(_rows(), tmp_path, command="s4mi benchmark --task cxr")
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["method"] == "m"
    md = paths["markdown"].read_text()
    assert "`s4mi benchmark --task cxr`" in md and "| m | 10 % | 3 | 0.6033 ± 0.0153" in md
    assert paths["plot"].stat().st_size > 1000
