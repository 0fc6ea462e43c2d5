from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine, Events

from s4mi.handlers import AtomicCheckpointSaver, RandomStates, ResumeSaver, latest_checkpoint


def _engine_with_saver(tmp_path: Path, net: torch.nn.Module) -> Engine:
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, epoch_level=True, n_saved=1
    ).attach(engine)
    return engine


def test_saver_writes_atomically_and_readably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = torch.nn.Linear(2, 1)
    engine = _engine_with_saver(tmp_path, net)
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    engine.run([0, 1], max_epochs=2)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["model_epoch=2.pt"], files  # n_saved=1 keeps the last; no temporary file left behind
    assert "model_epoch=2.pt" in seen, "the final file must be moved into place, not written in place"
    mode = stat.S_IMODE((tmp_path / files[0]).stat().st_mode)
    assert mode == 0o644
    state = torch.load(tmp_path / files[0], weights_only=True)
    assert torch.equal(state["weight"], net.weight.detach())


def test_killed_write_leaves_previous_checkpoint_intact(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 1)
    engine = _engine_with_saver(tmp_path, net)
    engine.run([0], max_epochs=1)
    before = (tmp_path / "model_epoch=1.pt").read_bytes()

    def boom(obj: object, f: object, **kwargs: object) -> None:
        if isinstance(f, (str, Path)):  # a non-atomic saver writes straight into the final file
            Path(f).write_bytes(b"partial")
        else:
            f.write(b"partial")  # type: ignore[attr-defined]
        raise KeyboardInterrupt("killed while writing")

    engine2 = _engine_with_saver(tmp_path, net)
    engine2.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 1))
    real_save = torch.save
    torch.save = boom  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            engine2.run([0], max_epochs=2)
    finally:
        torch.save = real_save  # type: ignore[assignment]
    assert (tmp_path / "model_epoch=1.pt").read_bytes() == before
    assert not (tmp_path / "model_epoch=2.pt").exists()


def test_latest_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") == ""
    assert latest_checkpoint(tmp_path) == ""
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"x")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=10.pt")


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save({"rng": RandomStates().state_dict()}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    RandomStates().load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_resume_saver_schedule_names_and_pruning(tmp_path: Path) -> None:
    (tmp_path / "checkpoint_iteration=3.pt").write_bytes(b"left by a killed process")
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    saved: list[int] = []
    saver = ResumeSaver(str(tmp_path), {"model": net}, every_n_iterations=2)
    saver.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: saved.append(int(latest_checkpoint(tmp_path)[-4])))
    engine.run(range(5), max_epochs=2)  # iterations 1..10, epoch ends at 5 and 10
    # mid-epoch saves at 2, 4, 6, 8; the epoch-end saves (5, 10) come after ITERATION_COMPLETED
    assert [p.name for p in tmp_path.glob("*.pt")] == ["checkpoint_iteration=10.pt"]
    assert saved == [3, 2, 2, 4, 4, 6, 6, 8, 8, 8]
    state = torch.load(tmp_path / "checkpoint_iteration=10.pt", weights_only=True)  # one object: saved bare (Ignite)
    assert state.keys() == {"weight", "bias"}
    with pytest.raises(ValueError, match="every_n_iterations"):
        ResumeSaver(str(tmp_path), {"model": net}, every_n_iterations=-1)


def _trainer_ckpt(path: Path, iteration: int, epoch_length: int = 5) -> None:
    state = {"iteration": iteration, "epoch_length": epoch_length, "max_epochs": 2}  # what Engine.state_dict() holds
    torch.save({"trainer": state, "model": {"w": torch.zeros(1)}}, path)


def test_latest_checkpoint_skips_a_finished_run(tmp_path: Path) -> None:
    """A finished run is not resumed (a new /train must train); a stopped or shorter one is."""
    _trainer_ckpt(tmp_path / "checkpoint_iteration=7.pt", iteration=7)
    assert latest_checkpoint(tmp_path, max_epochs=2).endswith("iteration=7.pt"), "a stopped run resumes"
    _trainer_ckpt(tmp_path / "checkpoint_iteration=10.pt", iteration=10)
    assert latest_checkpoint(tmp_path, max_epochs=3).endswith("iteration=10.pt"), "more epochs: resume, go on"
    assert latest_checkpoint(tmp_path).endswith("iteration=10.pt"), "without max_epochs: as before"
    assert latest_checkpoint(tmp_path, max_epochs=2) == "", "finished: start a new run"
    assert not list(tmp_path.glob("*.pt")) and len(list(tmp_path.glob("*.pt.finished-*"))) == 2
    assert latest_checkpoint(tmp_path, max_epochs=2) == ""


def test_latest_checkpoint_keeps_a_finished_run_unless_a_new_run_is_asked_for(tmp_path: Path) -> None:
    """The CLI (overwrite_model false): the same command after a finished run resumes it, which ends at once."""
    _trainer_ckpt(tmp_path / "checkpoint_iteration=10.pt", iteration=10)
    for flag in (False, "false", "False"):
        assert latest_checkpoint(tmp_path, max_epochs=2, restart_finished=flag).endswith("iteration=10.pt")
    assert [f.name for f in tmp_path.iterdir()] == ["checkpoint_iteration=10.pt"], "nothing renamed"
    assert latest_checkpoint(tmp_path, max_epochs=2, restart_finished="True") == ""


def test_latest_checkpoint_reads_a_real_engine_state(tmp_path: Path) -> None:
    """Ignite's Engine.state_dict() holds iteration and epoch_length, not the epoch."""
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    ResumeSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1), "trainer": engine}).attach(engine)
    engine.run(range(5), max_epochs=2)
    assert "epoch" not in torch.load(next(tmp_path.glob("*.pt")), weights_only=True)["trainer"]
    assert latest_checkpoint(tmp_path, max_epochs=3).endswith("iteration=10.pt")
    assert latest_checkpoint(tmp_path, max_epochs=2) == ""
    assert [f.name.split(".finished-")[0] for f in tmp_path.iterdir()] == ["checkpoint_iteration=10.pt"]


def test_resume_loader_is_a_no_op_without_a_checkpoint(tmp_path: Path) -> None:
    from s4mi.handlers import ResumeLoader

    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    ResumeLoader(load_path="", load_dict={"model": net}).attach(engine)
    assert not engine._event_handlers[Events.STARTED]  # nothing attached: a fresh run
    torch.save({"model": {k: torch.full_like(v, 3.0) for k, v in net.state_dict().items()}}, tmp_path / "c.pt")
    ResumeLoader(load_path=str(tmp_path / "c.pt"), load_dict={"model": net}).attach(engine)
    engine.run([0], max_epochs=1)
    assert torch.equal(net.weight, torch.full_like(net.weight, 3.0))


def test_resume_saver_writes_only_on_the_main_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import s4mi.handlers.checkpoint as checkpoint

    engine = Engine(lambda e, b: None)
    ResumeSaver(str(tmp_path), {"model": torch.nn.Linear(2, 1)}).attach(engine)
    monkeypatch.setattr(checkpoint, "is_main_process", lambda: False)
    engine.run([0, 1], max_epochs=1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(checkpoint, "is_main_process", lambda: True)
    engine.run([0, 1], max_epochs=2)
    assert [f.name for f in tmp_path.glob("*.pt")] == ["checkpoint_iteration=4.pt"]


def _evaluator(scores: list[float], name: str) -> Engine:
    """A tiny evaluator whose key metric at epoch e (its run number) is scores[e - 1]."""
    ev = Engine(lambda e, b: None)
    ev.state.key_metric_name = name

    @ev.on(Events.EPOCH_COMPLETED)
    def _metric(e: Engine) -> None:  # before the savers, as MONAI's metrics are
        e.state.metrics[name] = scores[e.state.epoch - 1]

    return ev


def _train_with_best_saver(
    tmp_path: Path, export: str, student_scores: list[float], teacher_scores: list[float]
) -> tuple[Any, dict[str, torch.Tensor]]:
    from s4mi.handlers import BestModelSaver

    student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(2.0)
    saver = BestModelSaver(tmp_path, {"teacher": teacher, "student": student}, main="teacher", export=export)
    ev_student, ev_teacher = (
        _evaluator(student_scores, "val_student_mean_dice"),
        _evaluator(teacher_scores, "val_mean_dice"),
    )
    saver.watch("student").attach(ev_student)
    saver.attach(ev_teacher)
    trainer = Engine(lambda e, b: None)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(e: Engine) -> None:  # student first, as the bundles' ValidationHandlers run
        for ev in (ev_student, ev_teacher):
            ev.state.max_epochs = e.state.epoch  # a ValidationHandler runs the evaluator once per trainer epoch
            ev.run([0], max_epochs=e.state.epoch)

    trainer.run([0], max_epochs=len(student_scores))
    return saver, torch.load(tmp_path / "model.pt", weights_only=True)


def test_best_model_saver_exports_the_better_of_teacher_and_student(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="s4mi.handlers.checkpoint"):
        saver, state = _train_with_best_saver(tmp_path / "best", "best", [0.61, 0.50], [0.34, 0.40])
    assert torch.equal(state["weight"], torch.ones(1, 2)), "the student (0.61) beats every teacher score"
    assert (saver.best_role, saver.best_epoch, saver.best_metric) == ("student", 1, 0.61)
    assert [r.getMessage() for r in caplog.records if "exported" in r.getMessage()] == [
        f"s4mi: epoch 1: exported the student (val_student_mean_dice 0.6100; teacher val_mean_dice 0.3400) to "
        f"{tmp_path / 'best' / 'model.pt'}"
    ]
    # a teacher that overtakes the student later is exported then
    saver, state = _train_with_best_saver(tmp_path / "later", "best", [0.61, 0.62], [0.34, 0.70])
    assert torch.equal(state["weight"], torch.full((1, 2), 2.0)) and saver.best_role == "teacher"
    # export_model=teacher keeps the teacher-only behaviour
    saver, state = _train_with_best_saver(tmp_path / "teacher", "teacher", [0.61, 0.50], [0.34, 0.40])
    assert torch.equal(state["weight"], torch.full((1, 2), 2.0))
    assert (saver.best_role, saver.best_epoch, saver.best_metric) == ("teacher", 2, 0.40)
    restored = type(saver)(tmp_path, {"teacher": torch.nn.Linear(2, 1)}, export="teacher")
    restored.load_state_dict(saver.state_dict())
    assert restored.state_dict() == saver.state_dict()
    # export_model=last: the main role at every validation, even when it got worse
    saver, state = _train_with_best_saver(tmp_path / "last", "last", [0.61, 0.62], [0.34, 0.30])
    assert torch.equal(state["weight"], torch.full((1, 2), 2.0))
    assert (saver.best_role, saver.best_epoch, saver.best_metric) == ("teacher", 2, 0.30)
    with pytest.raises(ValueError, match="export_model must be 'best', 'last' or one of"):
        type(saver)(tmp_path, {"teacher": torch.nn.Linear(2, 1)}, export="studnet")
