"""benchmarks/speed.py: its plain PyTorch loops do the engines' maths, and the script prints its table."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _speed():
    """benchmarks/speed.py imported by path (benchmarks/ is not a package; speed.py imports its sibling _timing)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("speed", BENCHMARKS / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look the module up there
    spec.loader.exec_module(module)
    return module


speed = _speed()

#: every engine's case, the curriculum's two timed tasks apart
CASES = [(e, None) for e in speed.ENGINES if e != "curriculum"] + [
    ("curriculum", t) for t in ("rotation", "contrastive")
]

STEPS = 2


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as the benchmark runs: on a shared machine several threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _case(engine: str, task: str | None):
    (case,) = speed.build_cases(engine, speed.Setup(small=True), curriculum_tasks=[task] if task else ())
    return case


def _plain_state(engine: str, task: str | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The plain loop's state after the steps, and its student's before."""
    case = _case(engine, task)
    start = {k: v.clone() for k, v in speed.flat_state({"student": case.network}).items()}
    torch.manual_seed(1)  # the draws of one side (a queue's first rows, dropout, the pretext tasks' rotations)
    loop = case.plain()
    for i in range(STEPS):
        loop.step(case.batches[i % len(case.batches)], i + 1)
    return speed.flat_state(loop.state()), start


def _s4mi_state(engine: str, task: str | None) -> dict[str, torch.Tensor]:
    case = _case(engine, task)
    torch.manual_seed(1)  # the other side's draws, from the same seed
    trainer = case.trainer(speed.Cycle(case.batches, STEPS))
    trainer.run()
    return speed.flat_state(case.trainer_state(trainer))


@pytest.mark.parametrize(("engine", "task"), CASES, ids=[t or e for e, t in CASES])
def test_plain_loop_gives_the_trainers_weights(engine: str, task: str | None) -> None:
    """From the same seed, weights and batches, two steps of the plain loop and of the s4mi trainer leave the same
    student, teachers, queue, DINO centre and SRCL head (within 1e-5): the plain loop does the engine's maths, so
    the ratio in the table is the engine's cost alone. Two steps rather than one, so that the teacher (whose first
    update under Mean Teacher's warm-up is a plain copy) and the queue written by step 1 are used by step 2."""
    (plain, start), ours = _plain_state(engine, task), _s4mi_state(engine, task)
    assert plain.keys() == ours.keys()
    moved = 0
    for name, value in plain.items():
        torch.testing.assert_close(value, ours[name], rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        if name in start and value.is_floating_point() and not torch.equal(value, start[name]):
            moved += 1
    assert moved > 0, "training moved no weight: the comparison would prove nothing"


def test_plain_loop_is_sensitive_to_the_maths() -> None:
    """The comparison can fail: a Mean Teacher plain loop with another unlabelled weight ends elsewhere."""
    case = _case("mean_teacher", None)
    torch.manual_seed(1)
    loop = case.plain()
    loop.unsup_weight = lambda t: 100.0
    for i in range(STEPS):
        loop.step(case.batches[i % len(case.batches)], i + 1)
    wrong = speed.flat_state(loop.state())
    ours = _s4mi_state("mean_teacher", None)
    assert any(not torch.allclose(wrong[k], ours[k], rtol=1e-5, atol=1e-5) for k in wrong if k.startswith("student."))


def test_script_prints_a_row_per_engine_with_finite_ratios() -> None:
    """The script end to end, as a smoke run: three engines, ``--small``, one round of two steps."""
    engines = ["supervised", "mean_teacher", "dino"]
    cmd = [sys.executable, str(BENCHMARKS / "speed.py"), "--small", "--steps", "2", "--rounds", "1"]
    out = subprocess.run([*cmd, "--engines", *engines], capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| engine")]
    assert [r.split("|")[1].strip() for r in rows] == ["FullySupervisedTrainer", "MeanTeacherTrainer", "DINOTrainer"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        plain_ms, s4mi_ms, ratio = float(cells[3]), float(cells[4]), float(cells[5].split()[0])
        assert all(math.isfinite(x) and x > 0 for x in (plain_ms, s4mi_ms, ratio)), row
        assert ratio == pytest.approx(s4mi_ms / plain_ms, rel=0.02), row
        assert cells[7] == "-"  # no peak memory on a CPU
