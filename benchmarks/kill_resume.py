"""Repeated ``kill -9``: a bundle run killed N times at random moments and restarted with the same command each time
ends with the same weights and metrics as an uninterrupted run (CPU).

For each bundle the script runs ``s4mi run <bundle> ...`` once without interruption, then again in another folder,
sending SIGKILL to the whole process group (``s4mi run`` and its ``python -m monai.bundle run`` child) and restarting
the same command, ``--kills`` times; a last restart runs to the end. Each kill comes after a random iteration of
the run (drawn without replacement from a seeded RNG over both stages of a two-stage bundle; iteration 0
means during start-up), once the newest checkpoint on disk has passed it, plus a random delay of up to ``--jitter`` seconds, so
the kills land during training steps, checkpoint writes, validation, the stage change of a two-stage bundle and, in
online pseudo-labelling, pseudo-label rendering. Then every ``*.pt`` under ``models/`` and every
``*metrics.jsonl`` (``wall_s`` dropped) are compared with the uninterrupted run's, tensor by tensor.

    .venv/bin/python benchmarks/kill_resume.py --kills 10 --out /tmp/kill_resume
    .venv/bin/python benchmarks/kill_resume.py --bundles mean_teacher_polyp_segmentation --kills 3 --out /tmp/kr

It prints one table row per bundle: kills sent, where each kill landed (stage, epoch.iteration of the newest
checkpoint on disk just after it), whether weights and metrics match. Exit status 1 when any bundle differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: one semi-supervised, one two-stage and one self-supervised bundle (the issue's three kinds), CPU-sized
BUNDLES: dict[str, list[str]] = {
    "mean_teacher_polyp_segmentation": [
        *("--phantom_n", "80", "--max_epochs", "3", "--batch_size", "4", "--unlabeled_batch_size", "4"),
        *("--val_batch_size", "8", "--checkpoint_every_n_iterations", "2"),
    ],
    "online_pseudolabel_polyp_segmentation": [
        *("--phantom_n", "80", "--pretrain_epochs", "2", "--max_epochs", "2", "--batch_size", "4"),
        *("--pretrain_batch_size", "4"),
        *("--unlabeled_batch_size", "4", "--val_batch_size", "8", "--checkpoint_every_n_iterations", "2"),
    ],
    "dino_skin_classification": [
        *("--stages", "pretrain", "--phantom_n", "80", "--pretrain_epochs", "3", "--pretrain_batch_size", "8"),
        *("--checkpoint_every_n_iterations", "2", "--probe_every", "1"),
    ],
}


@dataclass
class Outcome:
    bundle: str
    kills: list[str] = field(default_factory=list)
    restarts: int = 0
    full_s: float = 0.0
    killed_s: float = 0.0
    weights: str = ""
    metrics: str = ""

    @property
    def ok(self) -> bool:
        return self.weights.startswith("equal") and self.metrics.startswith("equal")


def command(bundle: str, out: Path, extra: list[str]) -> list[str]:
    args = list(extra)
    stages: list[str] = []
    if "--stages" in args:
        i = args.index("--stages")
        stages = ["--stages", args[i + 1]]
        del args[i : i + 2]
    return [
        *(sys.executable, "-m", "s4mi.cli", "run", bundle, *stages),
        *(*args, "--output_dir", str(out), "--ckpt_dir", str(out / "models"), "--progress_bar", "false"),
    ]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with open(log, "a") as f:  # the child keeps its own handle
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _check(proc: subprocess.Popen, cmd: list[str], log: Path) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"kill_resume: {' '.join(cmd)} failed (exit {proc.returncode}); see {log}")


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` to its end; return its wall time."""
    start = time.monotonic()
    proc = _start(cmd, log)
    proc.wait()
    _check(proc, cmd, log)
    return time.monotonic() - start


def _run_until(cmd: list[str], log: Path, out: Path, target: int, jitter: float, rng: random.Random) -> bool:
    """Run ``cmd`` until ``target`` iterations are checkpointed in ``out`` (``target`` 0: until ``jitter`` seconds
    have passed), then a random part of ``jitter`` seconds more, then SIGKILL its process group. True if it ended
    by itself first."""
    proc = _start(cmd, log)
    deadline = time.monotonic() + jitter if target == 0 else None
    while proc.poll() is None:
        if deadline is None and where(out)[1] >= target:
            deadline = time.monotonic() + rng.uniform(0.0, jitter)
        if deadline is not None and time.monotonic() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False
        time.sleep(0.05)
    _check(proc, cmd, log)
    return True


def where(out: Path) -> tuple[str, int]:
    """Where a run in ``out`` stands: the stage and ``epoch.iteration`` of its newest resume checkpoint, and the
    iterations done over both stages (the first stage's last checkpoint counts once the second has begun)."""
    label, done = "before the first checkpoint", 0
    for stage, folder in (("pretrain", "resume_pretrain"), ("train", "resume")):
        newest = None
        for f in (out / folder).glob("*.pt"):
            try:
                trainer = torch.load(f, map_location="cpu", weights_only=True)["trainer"]
            except Exception:  # being written or replaced at this moment
                continue
            if newest is None or trainer["iteration"] > newest["iteration"]:
                newest = trainer
        if newest is not None:
            done += int(newest["iteration"])
            epoch_length = max(int(newest["epoch_length"]), 1)
            label = f"{stage} {newest['iteration'] // epoch_length}.{newest['iteration'] % epoch_length}"
    return label, done


def _metrics(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    by_epoch = {}
    for r in rows:  # an epoch re-run after a kill: the last row of it wins
        by_epoch[(r.get("stage"), r.get("epoch"))] = {k: v for k, v in r.items() if k != "wall_s"}
    return list(by_epoch.values())


def compare(full: Path, killed: Path) -> tuple[str, str]:
    """(weights verdict, metrics verdict) between the two output folders."""
    weights = sorted(p.relative_to(full) for p in (full / "models").glob("*.pt"))
    if not weights:
        return "no weights written", ""
    for rel in weights:
        other = killed / rel
        if not other.is_file():
            return f"{rel} missing", ""
        a = torch.load(full / rel, map_location="cpu", weights_only=True)
        b = torch.load(other, map_location="cpu", weights_only=True)
        flat_a, flat_b = _flatten(a), _flatten(b)
        if flat_a.keys() != flat_b.keys():
            return f"{rel}: other keys", ""
        for k in flat_a:
            if not torch.equal(flat_a[k], flat_b[k]):
                return f"{rel}: {k} differs (max |diff| {(flat_a[k].float() - flat_b[k].float()).abs().max():.3g})", ""
    verdict_w = f"equal ({len(weights)} files)"
    logs = sorted(p.relative_to(full) for p in full.glob("*metrics.jsonl"))
    for rel in logs:
        if not (killed / rel).is_file() or _metrics(full / rel) != _metrics(killed / rel):
            return verdict_w, f"{rel} differs"
    return verdict_w, f"equal ({', '.join(str(r) for r in logs)})"


def _flatten(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out: dict[str, torch.Tensor] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: torch.tensor(float(obj))} if isinstance(obj, (int, float)) else {}


def kill_resume(bundle: str, extra: list[str], out: Path, kills: int, seed: int, jitter: float = 2.0) -> Outcome:
    """Run ``bundle`` once uninterrupted and once with ``kills`` SIGKILLs; compare what the two runs wrote."""
    result = Outcome(bundle)
    full, killed = out / bundle / "full", out / bundle / "killed"
    for d in (full, killed):
        if d.exists():
            raise SystemExit(f"kill_resume: {d} exists; give an empty --out")
        d.mkdir(parents=True)
    result.full_s = _run(command(bundle, full, extra), full / "log.txt")
    _, total = where(full)
    rng = random.Random(seed)
    # the iterations after which each kill comes (0, when drawn: during start-up, before any checkpoint)
    targets = sorted(rng.sample(range(total), min(kills, total)))
    cmd = command(bundle, killed, extra)
    start = time.monotonic()
    finished = False
    for target in targets:
        finished = _run_until(cmd, killed / "log.txt", killed, target, jitter, rng)
        result.restarts += 1
        if finished:
            break
        result.kills.append(f"{where(killed)[0]}")
    if not finished:
        _run(cmd, killed / "log.txt")
        result.restarts += 1
    result.killed_s = time.monotonic() - start
    result.weights, result.metrics = compare(full, killed)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=list(BUNDLES))
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--jitter", type=float, default=2.0, help="seconds of random delay after the chosen iteration")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    rows = []
    for name in a.bundles:
        r = kill_resume(name, BUNDLES[name], a.out, a.kills, a.seed, a.jitter)
        rows.append(r)
        print(f"{name}: {len(r.kills)} kills, weights {r.weights}, metrics {r.metrics}", flush=True)
    print()
    print(
        "| bundle | kills | restarts | where the kills landed (stage epoch.iteration) | weights | metrics "
        "| uninterrupted (s) | with kills (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.bundle} | {len(r.kills)} | {r.restarts} | {'; '.join(r.kills)} | {r.weights} | {r.metrics} "
            f"| {r.full_s:.0f} | {r.killed_s:.0f} |"
        )
    raise SystemExit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
