"""Validation curves of an `s4mi benchmark` grid: where each method's model peaks and where it ends.

For every (method, label fraction) of a results folder, reads each seed's ``metrics.jsonl`` (the validation of the
bundle's main model: the teacher of a teacher-student bundle, the CNN of cross teaching) and every other validated
model's ``<role>_metrics.jsonl`` that has the metric as ``val_<role>_<name>`` (``student``; cross teaching's
``transformer`` and ``average``), and prints a Markdown row: the metric after the first epoch, at its best (and the
epoch), and after the last, each the mean over seeds, for each model, beside the test metric of the exported model
(mean ± sample std). With ``--plot`` it also draws the mean curve of each method's main model, one panel per fraction.
The test set chooses nothing here: the epochs are validation's.

    .venv/bin/python benchmarks/curves.py benchmarks/results/srcl_skin --plot
    .venv/bin/python benchmarks/curves.py benchmarks/results/cross_teaching_skin --metric val_mean_dice --plot
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def load(out: Path, metric: str) -> dict[tuple[str, float], list[dict]]:
    """{(method, fraction): [{"seed", "main": [values by epoch], "roles": {role: [...]}, "test": value}]}."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for result in sorted((out / "runs").glob("**/result.json")):
        row = json.loads(result.read_text())
        roles = {}
        for file in sorted(result.parent.glob("*_metrics.jsonl")):
            role = file.name.removesuffix("_metrics.jsonl")
            key = metric.replace("val_", f"val_{role}_", 1)  # e.g. val_student_mean_auc in student_metrics.jsonl
            values = [r[key] for r in _jsonl(file) if key in r]
            if values:  # test_metrics.jsonl, probe_metrics.jsonl, ...: not a validated model's curve
                roles[role] = values
        test_key = "test_" + metric.removeprefix("val_")
        groups.setdefault((row["method"], float(row["fraction"])), []).append(
            {
                "seed": row["seed"],
                "main": [r[metric] for r in _jsonl(result.parent / "metrics.jsonl") if metric in r],
                "roles": roles,
                "test": row.get(test_key, float("nan")),
            }
        )
    return groups


def roles(groups: dict[tuple[str, float], list[dict]]) -> list[str]:
    """Every validated model besides the main one, in any run: the student first, then by name."""
    found = {role for runs in groups.values() for r in runs for role in r["roles"]}
    return sorted(found, key=lambda role: (role != "student", role))


def summary(curves: list[list[float]]) -> str:
    """ "first → best (epoch e) → last", each the mean over seeds (the best is each seed's own best; e its median)."""
    curves = [c for c in curves if c]
    if not curves:
        return "-"
    best_epochs = [max(range(len(c)), key=c.__getitem__) + 1 for c in curves]
    first = statistics.fmean(c[0] for c in curves)
    best = statistics.fmean(max(c) for c in curves)
    last = statistics.fmean(c[-1] for c in curves)
    return f"{first:.3f} → {best:.3f} (epoch {statistics.median(best_epochs):g}) → {last:.3f}"


def table(groups: dict[tuple[str, float], list[dict]], metric: str) -> list[str]:
    others = roles(groups)
    lines = [
        f"| method | labels | seeds | {metric}: first → best → last (main model: the teacher or the CNN) | "
        + "".join(f"{role} | " for role in others)
        + "test |",
        "|---|---|---|---|" + "---|" * len(others) + "---|",
    ]
    for (method, fraction), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tests = [r["test"] for r in runs]
        spread = f" ± {statistics.stdev(tests):.3f}" if len(tests) > 1 else ""
        cells = "".join(f"{summary([r['roles'].get(role, []) for r in runs])} | " for role in others)
        lines.append(
            f"| {method} | {fraction:.0%} | {len(runs)} | {summary([r['main'] for r in runs])} | "
            f"{cells}{statistics.fmean(tests):.3f}{spread} |"
        )
    return lines


def plot(groups: dict[tuple[str, float], list[dict]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({f for _, f in groups})
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.2 * len(fractions), 3.6), squeeze=False, sharey=True)
    for ax, fraction in zip(axes[0], fractions, strict=True):
        for (method, f), runs in sorted(groups.items()):
            if f != fraction:
                continue
            n = min(len(r["main"]) for r in runs)
            if n == 0:
                continue
            mean = [statistics.fmean(r["main"][i] for r in runs) for i in range(n)]
            ax.plot(range(1, n + 1), mean, marker=".", label=f"{method} ({len(runs)} seeds)")
        ax.set_title(f"{fraction:.0%} labels")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"validation {metric.removeprefix('val_')} (mean over seeds)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.06 * max(1, (len(labels) + 1) // 2), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="an s4mi benchmark output folder")
    p.add_argument("--metric", default="val_mean_auc", help="a key of the runs' metrics.jsonl (val_mean_dice, ...)")
    p.add_argument("--plot", action="store_true", help="also write <out>/curves.png")
    a = p.parse_args()
    groups = load(a.out, a.metric)
    if not groups:
        raise SystemExit(f"no finished run (runs/**/result.json) in {a.out}")
    print("\n".join(table(groups, a.metric)))
    if a.plot:
        plot(groups, a.metric, a.out / "curves.png")
        print(f"\nplot: {a.out / 'curves.png'}")


if __name__ == "__main__":
    main()
