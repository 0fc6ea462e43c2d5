"""Shared pieces of the side-by-side step benchmarks: an in-memory loader and alternating timed rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator


class Cycle:
    """``n`` batches cycled from a list kept in memory, so data loading is not what is timed."""

    def __init__(self, batches: list[dict], n: int) -> None:
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict]:
        for i in range(self.n):
            yield self.batches[i % len(self.batches)]


def side_by_side(
    plain: Callable[[], float], ours: Callable[[], float], rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """Time ``plain`` and ``ours`` (each returns seconds per step) in ``rounds`` rounds after one warm-up round.

    The order alternates from round to round so that drift on a shared machine hits both sides alike. Prints each
    round and returns (plain seconds, ours seconds, per-round ratios ours / plain).
    """
    plain(), ours()  # warm-up: allocator, thread pools, first-call dispatch
    plain_s: list[float] = []
    ours_s: list[float] = []
    for r in range(rounds):
        if r % 2:
            o, p = ours(), plain()
        else:
            p, o = plain(), ours()
        plain_s.append(p)
        ours_s.append(o)
        print(f"round {r}: plain {p * 1e3:.1f} ms/step, s4mi {o * 1e3:.1f} ms/step, ratio {o / p:.3f}")
    return plain_s, ours_s, [o / p for o, p in zip(ours_s, plain_s, strict=True)]


def table_row(label: str, threads: int, plain_s: list[float], ours_s: list[float], ratios: list[float]) -> str:
    """A Markdown row: medians in ms/step and the median ratio with its range."""
    return (
        f"| {label} | {threads} | {statistics.median(plain_s) * 1e3:.1f} | {statistics.median(ours_s) * 1e3:.1f} | "
        f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}) |"
    )
