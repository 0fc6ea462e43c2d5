"""benchmarks/curves.py: first, best and last validation values, means over seeds, from a grid's committed runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _script():
    spec = importlib.util.spec_from_file_location("curves", BENCHMARKS / "curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, method: str, fraction: float, seed: int, teacher, student=None, test=0.5, done=True) -> None:
    run = out / "runs" / method.replace(":", "__") / f"frac{fraction:g}" / f"seed{seed}"
    run.mkdir(parents=True)
    rows = "".join(json.dumps({"epoch": i + 1, "val_mean_auc": v}) + "\n" for i, v in enumerate(teacher))
    (run / "metrics.jsonl").write_text(rows)
    if student:
        rows = "".join(json.dumps({"epoch": i + 1, "val_student_mean_auc": v}) + "\n" for i, v in enumerate(student))
        (run / "student_metrics.jsonl").write_text(rows)
    if done:
        result = {"method": method, "fraction": fraction, "seed": seed, "test_mean_auc": test}
        (run / "result.json").write_text(json.dumps(result))


def test_table_and_plot(tmp_path: Path) -> None:
    c = _script()
    _run(tmp_path, "mt", 0.1, 0, [0.5, 0.7, 0.6], student=[0.4, 0.5, 0.8], test=0.6)
    _run(tmp_path, "mt", 0.1, 1, [0.6, 0.8, 0.7], student=[0.6, 0.5, 0.6], test=0.8)
    _run(tmp_path, "mt", 0.1, 2, [0.1, 0.2, 0.3], done=False)  # unfinished: not read
    _run(tmp_path, "sup", 0.1, 0, [0.9, 0.5], test=0.7)
    _run(tmp_path, "sup", 0.2, 0, [0.3], test=0.9)
    groups = c.load(tmp_path, "val_mean_auc")
    assert sorted(groups) == [("mt", 0.1), ("sup", 0.1), ("sup", 0.2)]
    lines = c.table(groups, "val_mean_auc")
    assert (
        lines[2]
        == "| mt | 10% | 2 | 0.550 → 0.750 (epoch 2) → 0.650 | 0.500 → 0.700 (epoch 2) → 0.700 | 0.700 ± 0.141 |"
    )
    assert lines[3] == "| sup | 10% | 1 | 0.900 → 0.900 (epoch 1) → 0.500 | - | 0.700 |"
    assert lines[4].startswith("| sup | 20% | 1 | 0.300 → 0.300 (epoch 1) → 0.300 |")
    c.plot(groups, "val_mean_auc", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 5_000


def test_every_validated_model_gets_a_column(tmp_path: Path) -> None:
    """Cross teaching validates its CNN (metrics.jsonl), its Transformer and their average; test_metrics.jsonl is no model."""
    c = _script()
    run = tmp_path / "runs" / "ct" / "frac0.1" / "seed0"
    run.mkdir(parents=True)
    for file, key, values in (
        ("metrics.jsonl", "val_mean_dice", [0.5, 0.6]),
        ("transformer_metrics.jsonl", "val_transformer_mean_dice", [0.4, 0.9]),
        ("average_metrics.jsonl", "val_average_mean_dice", [0.7, 0.8]),
        ("test_metrics.jsonl", "val_mean_dice", [0.3]),
    ):
        (run / file).write_text("".join(json.dumps({"epoch": i + 1, key: v}) + "\n" for i, v in enumerate(values)))
    result = {"method": "ct", "fraction": 0.1, "seed": 0, "test_mean_dice": 0.85}
    (run / "result.json").write_text(json.dumps(result))
    groups = c.load(tmp_path, "val_mean_dice")
    assert c.roles(groups) == ["average", "transformer"]
    lines = c.table(groups, "val_mean_dice")
    assert lines[0].endswith("| average | transformer | test |")
    assert lines[1].count("---") == 7
    assert lines[2] == (
        "| ct | 10% | 1 | 0.500 → 0.600 (epoch 2) → 0.600 | 0.700 → 0.800 (epoch 2) → 0.800 | "
        "0.400 → 0.900 (epoch 2) → 0.900 | 0.850 |"
    )
