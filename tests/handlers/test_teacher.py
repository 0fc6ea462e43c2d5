from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader
from torch import nn

from s4mi.handlers.teacher import EMATeacher


def _scalar_net(w: float = 0.0) -> nn.Linear:
    """A 1-weight float64 network, so closed forms computed over Python floats match exactly."""
    net = nn.Linear(1, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        net.weight.fill_(w)
    return net


def _bn_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 2, dtype=torch.float64), nn.BatchNorm1d(2, dtype=torch.float64))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


def _student_is_iteration(student: nn.Module, bn: nn.BatchNorm1d | None = None) -> Engine:
    """An engine whose step sets every student weight (and BN running mean / count) to the iteration number."""

    def step(engine: Engine, batch: object) -> None:
        t = float(engine.state.iteration)
        with torch.no_grad():
            for p in student.parameters():
                p.fill_(t)
            if bn is not None:
                bn.running_mean.fill_(10 * t)
                bn.num_batches_tracked.fill_(engine.state.iteration)

    return Engine(step)


def _ema(values: list[float], momenta: list[float], start: float) -> float:
    e = start
    for v, m in zip(values, momenta, strict=True):
        e = m * e + (1 - m) * v
    return e


def _w(net: nn.Module) -> float:
    return float(next(net.parameters()).flatten()[0])


def test_constant_momentum_matches_closed_form() -> None:
    student = _scalar_net(0.5)
    teacher = EMATeacher(student, momentum=0.9)
    engine = _student_is_iteration(student)
    teacher.attach(engine)
    assert engine.state.teacher_momentum == 0.9
    engine.run(range(7), max_epochs=1)
    expected = _ema([float(i) for i in range(1, 8)], [0.9] * 7, start=0.5)
    assert _w(teacher.ema_model) == pytest.approx(expected, abs=1e-12)
    assert engine.state.teacher_momentum == 0.9
    assert teacher.momentum == pytest.approx(0.1)  # Ignite's attribute keeps Ignite's meaning: 1 - m


def test_srcmt_warmup_first_update_copies_student() -> None:
    student = _scalar_net(0.5)
    teacher = EMATeacher(student, momentum=0.99, warmup="srcmt")
    engine = _student_is_iteration(student)
    teacher.attach(engine)
    assert engine.state.teacher_momentum == 0.0
    seen: list[tuple[float, float]] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((_w(teacher.ema_model), e.state.teacher_momentum))
    )
    engine.run(range(5), max_epochs=1)
    assert seen[0] == (1.0, 0.0), "m_0 = 0: after the first update the teacher is the student"
    momenta = [min(1 - 1 / (t + 1), 0.99) for t in range(5)]
    assert [m for _, m in seen] == momenta
    # with the warm-up the teacher is the running mean of the students seen so far
    assert _w(teacher.ema_model) == pytest.approx(_ema([1.0, 2.0, 3.0, 4.0, 5.0], momenta, 0.5), abs=1e-12)
    assert _w(teacher.ema_model) == pytest.approx(3.0, abs=1e-12)


def test_callable_schedule() -> None:
    def schedule(t: int) -> float:
        return min(0.5 + 0.1 * t, 0.95)

    student = _scalar_net()
    teacher = EMATeacher(student, momentum=schedule)
    engine = _student_is_iteration(student)
    teacher.attach(engine)
    seen: list[float] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.teacher_momentum))
    engine.run(range(8), max_epochs=1)
    momenta = [schedule(t) for t in range(8)]
    assert seen == momenta
    assert _w(teacher.ema_model) == pytest.approx(_ema([float(i) for i in range(1, 9)], momenta, 0.0), abs=1e-12)


def test_schedule_combined_with_srcmt_warmup() -> None:
    teacher = EMATeacher(_scalar_net(), momentum=lambda t: 0.9, warmup="srcmt")
    assert [teacher.momentum_at(t) for t in range(3)] == [0.0, 0.5, 1 - 1 / 3]
    assert teacher.momentum_at(100) == 0.9


@pytest.mark.parametrize("warmup", [None, "srcmt"])
def test_every_epoch_updates_once_per_epoch(warmup: str | None) -> None:
    student = _scalar_net()
    teacher = EMATeacher(student, momentum=0.8, warmup=warmup, every="epoch")  # type: ignore[arg-type]
    engine = _student_is_iteration(student)
    teacher.attach(engine)
    updates: list[float] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: updates.append(_w(teacher.ema_model)))
    engine.run(range(3), max_epochs=2)
    momenta = [teacher.momentum_at(0), teacher.momentum_at(1)]
    assert momenta == ([0.8, 0.8] if warmup is None else [0.0, 0.5])
    assert _w(teacher.ema_model) == pytest.approx(_ema([3.0, 6.0], momenta, 0.0), abs=1e-12)
    # nothing moves within an epoch: exactly 2 updates, at iterations 3 and 6
    assert updates[0] == updates[1] == 0.0
    assert updates[3] == updates[4] == pytest.approx(_ema([3.0], momenta[:1], 0.0))


@pytest.mark.parametrize("buffers", ["copy", "update"])
def test_batchnorm_buffers(buffers: str) -> None:
    student = _bn_net()
    bn = student[1]
    assert isinstance(bn, nn.BatchNorm1d)
    teacher = EMATeacher(student, momentum=0.7, buffers=buffers)  # type: ignore[arg-type]
    assert not teacher.ema_model.training
    engine = _student_is_iteration(student, bn)
    teacher.attach(engine)
    engine.run(range(4), max_epochs=1)
    t_bn = teacher.ema_model[1]
    assert isinstance(t_bn, nn.BatchNorm1d)
    assert t_bn.running_mean is not None and bn.running_mean is not None
    expected = 40.0 if buffers == "copy" else _ema([10.0, 20.0, 30.0, 40.0], [0.7] * 4, 0.0)
    torch.testing.assert_close(t_bn.running_mean, torch.full((2,), expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert int(t_bn.num_batches_tracked) == 4, "integer buffers are copied in both modes"
    # weights are averaged either way
    assert _w(teacher.ema_model) == pytest.approx(_ema([1.0, 2.0, 3.0, 4.0], [0.7] * 4, 0.0), abs=1e-12)
    # buffers are copied, not aliased (Ignite assigns `.data`, sharing the student's storage)
    assert t_bn.running_mean.data_ptr() != bn.running_mean.data_ptr()
    with torch.no_grad():
        bn.running_mean.fill_(-1.0)
    assert float(t_bn.running_mean[0]) == pytest.approx(expected)


def test_ema_train_mode_leaves_buffers_alone() -> None:
    student = _bn_net()
    teacher = EMATeacher(student, buffers="ema_train")
    assert teacher.ema_model.training
    bn = student[1]
    assert isinstance(bn, nn.BatchNorm1d)
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
    teacher.update(0.5)
    assert float(teacher.ema_model[1].running_mean[0]) == 0.0  # type: ignore[index]


def test_two_teachers_on_one_engine() -> None:
    student = _scalar_net()
    fast = EMATeacher(student, momentum=0.5, name="fast")
    slow = EMATeacher(student, momentum=0.99, warmup="srcmt", name="slow")
    engine = _student_is_iteration(student)
    fast.attach(engine)
    slow.attach(engine)
    engine.run(range(6), max_epochs=1)
    values = [float(i) for i in range(1, 7)]
    assert _w(fast.ema_model) == pytest.approx(_ema(values, [0.5] * 6, 0.0), abs=1e-12)
    slow_m = [min(1 - 1 / (t + 1), 0.99) for t in range(6)]
    assert _w(slow.ema_model) == pytest.approx(_ema(values, slow_m, 0.0), abs=1e-12)
    assert engine.state.fast_momentum == 0.5
    assert engine.state.slow_momentum == slow_m[-1]


def test_same_name_twice_raises() -> None:
    student = _scalar_net()
    engine = _student_is_iteration(student)
    EMATeacher(student).attach(engine)
    with pytest.raises(ValueError, match="own name"):
        EMATeacher(student).attach(engine)
    with pytest.raises(ValueError, match="event"):
        EMATeacher(student, name="other").attach(engine, event=Events.ITERATION_COMPLETED)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        EMATeacher(_scalar_net(), momentum=1.5)
    with pytest.raises(ValueError):
        EMATeacher(_scalar_net(), warmup="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EMATeacher(_scalar_net(), every="step")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EMATeacher(_scalar_net(), buffers="keep")  # type: ignore[arg-type]
    teacher = EMATeacher(_scalar_net(), momentum=lambda t: 0.9 if t < 2 else 2.0)
    with pytest.raises(ValueError):
        teacher.momentum_at(2)


def test_boundary_momenta_are_allowed() -> None:
    student = _scalar_net(3.0)
    teacher = EMATeacher(student, momentum=1.0)
    with torch.no_grad():
        student.weight.fill_(7.0)
    teacher.update(1.0)
    assert _w(teacher.ema_model) == 3.0  # m = 1: a frozen teacher
    with torch.no_grad():
        teacher.ema_model.weight.fill_(float("inf"))
    teacher.update(0.0)
    assert _w(teacher.ema_model) == 7.0  # m = 0: an exact copy


def _naive_update(ema: nn.Module, model: nn.Module, m: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.mul_(m).add_(p, alpha=1 - m)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            if e.is_floating_point():
                e.mul_(m).add_(b, alpha=1 - m)
            else:
                e.copy_(b)


def test_foreach_update_equals_naive_loop() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    student(torch.randn(2, 3, 6, 6))  # materialise the lazy layer and BN statistics
    teacher = EMATeacher(student, momentum=0.99, buffers="update")
    naive = copy.deepcopy(teacher.ema_model)
    for m in (0.9, 0.99, 0.5):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        student(torch.randn(2, 3, 6, 6))
        teacher.update(m)
        _naive_update(naive, student, m)
    for (name, a), b in zip(teacher.ema_model.state_dict().items(), naive.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)


def test_tensor_lists_are_gathered_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler walks the networks for their tensors once per run, not at every update (benchmarks/speed.py: the
    walk cost more than the update); a resumed run walks them again."""
    student = _bn_net()
    teacher = EMATeacher(student, momentum=0.7)
    gathered = []
    pairs = teacher._pairs
    monkeypatch.setattr(teacher, "_pairs", lambda: gathered.append(1) or pairs())
    engine = _student_is_iteration(student, student[1])
    teacher.attach(engine)
    engine.run(range(5), max_epochs=1)
    assert len(gathered) == 1
    assert _w(teacher.ema_model) == pytest.approx(_ema([1.0, 2.0, 3.0, 4.0, 5.0], [0.7] * 5, 0.0), abs=1e-12)
    engine.run(range(5), max_epochs=2)  # resumes: 5 more updates, one more walk
    assert len(gathered) == 2
    assert _w(teacher.ema_model) == pytest.approx(_ema([float(t) for t in range(1, 11)], [0.7] * 10, 0.0), abs=1e-12)


def test_a_new_run_picks_up_replaced_tensors() -> None:
    """A buffer replaced between runs (as ``Module.to`` replaces them) is the one the next run copies."""
    student = _bn_net()
    bn = student[1]
    assert isinstance(bn, nn.BatchNorm1d)
    teacher = EMATeacher(student, momentum=0.7)
    engine = _student_is_iteration(student, bn)
    teacher.attach(engine)
    engine.run(range(4), max_epochs=1)
    bn.running_mean = torch.zeros(2, dtype=torch.float64)  # a new tensor object, which the step now fills
    engine.run(range(4), max_epochs=2)
    t_bn = teacher.ema_model[1]
    assert isinstance(t_bn, nn.BatchNorm1d)
    torch.testing.assert_close(t_bn.running_mean, torch.full((2,), 80.0, dtype=torch.float64), rtol=0, atol=0)


def test_teacher_gets_no_gradients() -> None:
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.ema_model.parameters())
    assert not teacher.ema_model.training
    x = torch.randn(5, 3)
    loss = (student(x) - teacher.ema_model(x)).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.ema_model.parameters())
    teacher.update(0.9)
    assert all(not p.requires_grad for p in teacher.ema_model.parameters())


def test_sync_at_start_picks_up_weights_loaded_after_construction() -> None:
    student = _scalar_net(5.0)
    teacher = EMATeacher(student, momentum=0.9)
    with torch.no_grad():
        student.weight.fill_(-3.0)  # e.g. a CheckpointLoader attached before the teacher
    engine = _student_is_iteration(student)
    teacher.attach(engine)
    at_start: list[float] = []
    engine.add_event_handler(Events.STARTED, lambda e: at_start.append(_w(teacher.ema_model)))
    engine.run(range(3), max_epochs=1)
    assert at_start == [-3.0]
    assert _w(teacher.ema_model) == pytest.approx(_ema([1.0, 2.0, 3.0], [0.9] * 3, -3.0), abs=1e-12)


def test_sync_is_independent_of_loader_order() -> None:
    student = _scalar_net(5.0)
    teacher = EMATeacher(student, momentum=0.9)
    engine = _student_is_iteration(student)
    teacher.attach(engine)

    @engine.on(Events.STARTED)
    def load_pretrained(e: Engine) -> None:  # a CheckpointLoader attached *after* the teacher
        with torch.no_grad():
            student.weight.fill_(-3.0)

    engine.run(range(3), max_epochs=1)
    assert _w(teacher.ema_model) == pytest.approx(_ema([1.0, 2.0, 3.0], [0.9] * 3, -3.0), abs=1e-12)


def test_sync_on_start_false_keeps_teacher_weights() -> None:
    student = _scalar_net(5.0)
    teacher = EMATeacher(student, momentum=0.9, sync_on_start=False)
    with torch.no_grad():
        teacher.ema_model.weight.fill_(2.0)  # a separately trained teacher
    engine = _student_is_iteration(student)
    teacher.attach(engine)
    engine.run(range(3), max_epochs=1)
    assert _w(teacher.ema_model) == pytest.approx(_ema([1.0, 2.0, 3.0], [0.9] * 3, 2.0), abs=1e-12)


def test_sync_copies_weights_and_buffers() -> None:
    student = _bn_net()
    teacher = EMATeacher(student)
    with torch.no_grad():
        student[1].running_var.fill_(4.0)  # type: ignore[union-attr]
        student[0].bias.fill_(1.5)  # type: ignore[union-attr]
    teacher.sync()
    for a, b in zip(teacher.ema_model.state_dict().values(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
        assert a.data_ptr() != b.data_ptr()


def _resume_setup(
    momentum: float | Callable[[int], float],
) -> tuple[nn.Linear, EMATeacher, Engine]:
    student = _scalar_net(0.25)
    teacher = EMATeacher(student, momentum=momentum, warmup="srcmt", buffers="update")
    engine = _student_is_iteration(student)
    return student, teacher, engine


def test_resume_continues_exact_schedule() -> None:
    # uninterrupted: 3 epochs of 2 iterations
    _, teacher, engine = _resume_setup(0.9)
    teacher.attach(engine)
    engine.run(range(2), max_epochs=3)
    reference = teacher.ema_model.weight.detach().clone()

    # interrupted after 4 iterations
    _, teacher, engine = _resume_setup(0.9)
    teacher.attach(engine)
    engine.run(range(2), max_epochs=2)
    saved_teacher = copy.deepcopy(teacher.state_dict())
    saved_engine = copy.deepcopy(engine.state_dict())

    _, teacher2, engine2 = _resume_setup(0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine2.load_state_dict(saved_engine)
        teacher2.load_state_dict(saved_teacher)
        teacher2.attach(engine2)
        engine2.run(range(2), max_epochs=3)
    assert engine2.state.iteration == 6
    assert torch.equal(teacher2.ema_model.weight, reference)
    assert engine2.state.teacher_momentum == min(1 - 1 / 6, 0.9)


@pytest.mark.parametrize("loader_first", [True, False])
def test_resume_through_monai_checkpoint_loader(tmp_path: Path, loader_first: bool) -> None:
    _, teacher, engine = _resume_setup(0.9)
    teacher.attach(engine)
    engine.run(range(2), max_epochs=3)
    reference = teacher.ema_model.weight.detach().clone()

    student, teacher, engine = _resume_setup(0.9)
    teacher.attach(engine)
    engine.run(range(2), max_epochs=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"student": student.state_dict(), "teacher": teacher.state_dict(), "trainer": engine.state_dict()}, path)

    student2, teacher2, engine2 = _resume_setup(0.9)
    loader = CheckpointLoader(str(path), {"student": student2, "teacher": teacher2, "trainer": engine2})
    if loader_first:
        loader.attach(engine2)
        teacher2.attach(engine2)
    else:
        teacher2.attach(engine2)
        loader.attach(engine2)
    engine2.run(range(2), max_epochs=3)
    assert engine2.state.iteration == 6
    assert torch.equal(teacher2.ema_model.weight, reference)


def test_properties_and_data_parallel_unwrapping() -> None:
    net = _scalar_net()
    teacher = EMATeacher(nn.DataParallel(net))
    assert teacher.model is net
    assert isinstance(teacher.ema_model, nn.Linear)
    assert teacher.ema_model is not net
    assert set(teacher.state_dict()) == {"weight"}


def test_ddp_unwrapping(tmp_path: Path) -> None:
    dist = torch.distributed
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    except Exception as exc:  # pragma: no cover - environment dependent
        pytest.skip(f"cannot start a gloo process group: {exc}")
    try:
        net = nn.Linear(2, 1)
        teacher = EMATeacher(nn.parallel.DistributedDataParallel(net))
        assert teacher.model is net
        assert isinstance(teacher.ema_model, nn.Linear)
        assert set(teacher.state_dict()) == {"weight", "bias"}
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("every", ["iteration", "epoch"])
def test_update_runs_before_handlers_attached_earlier(every: str) -> None:
    student = _scalar_net()
    engine = _student_is_iteration(student)
    seen: list[float] = []
    event = Events.ITERATION_COMPLETED if every == "iteration" else Events.EPOCH_COMPLETED
    teacher = EMATeacher(student, momentum=0.5, every=every)  # type: ignore[arg-type]
    engine.add_event_handler(event, lambda e: seen.append(_w(teacher.ema_model)))  # e.g. a saver or a validation
    teacher.attach(engine)
    engine.run(range(2), max_epochs=1)
    assert seen[-1] == _w(teacher.ema_model)
    assert seen[-1] != 0.0


def test_resume_from_a_saver_attached_before_the_teacher(tmp_path: Path) -> None:
    _, teacher, engine = _resume_setup(0.9)
    teacher.attach(engine)
    engine.run(range(2), max_epochs=3)
    reference = teacher.ema_model.weight.detach().clone()

    student, teacher, engine = _resume_setup(0.9)
    to_save = {"student": student, "teacher": teacher, "trainer": engine}
    saver = Checkpoint(to_save, DiskSaver(str(tmp_path), require_empty=False), n_saved=None)
    engine.add_event_handler(Events.ITERATION_COMPLETED, saver)  # as MONAI's train_handlers: before the teacher
    teacher.attach(engine)
    engine.run(range(2), max_epochs=3)
    ckpt = torch.load(tmp_path / "checkpoint_4.pt", weights_only=True)

    student2, teacher2, engine2 = _resume_setup(0.9)
    Checkpoint.load_objects({"student": student2, "teacher": teacher2, "trainer": engine2}, ckpt)
    teacher2.attach(engine2)
    engine2.run(range(2), max_epochs=3)
    assert torch.equal(teacher2.ema_model.weight, reference)


def test_online_momentum() -> None:
    from s4mi.handlers.teacher import online_momentum

    assert online_momentum(True, 0.99) == 0.99 and online_momentum("true", 0.9) == 0.9
    assert online_momentum(False, 0.99) == 1.0 and online_momentum("false", 0.99) == 1.0  # offline: frozen teacher
    with pytest.raises(ValueError, match="momentum"):
        online_momentum(True, 1.5)
