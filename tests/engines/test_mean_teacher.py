"""Mean Teacher engine: sanity of every loss term, gradients, teacher updates, label guard, events."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from torch.utils.data import DataLoader

from s4mi.data.loaders import SemiSupervisedLoader
from s4mi.engines import Keys, LabelLeakError, MeanTeacherTrainer
from s4mi.handlers import EMATeacher


def _data(n_lb: int = 8, n_ulb: int = 16, leak: bool = False) -> SemiSupervisedLoader:
    g = torch.Generator().manual_seed(0)
    lb = [
        {"image": torch.randn(1, 8, 8, generator=g), "label": torch.tensor([i % 2, 1 - i % 2], dtype=torch.float32)}
        for i in range(n_lb)
    ]
    ulb = []
    for _ in range(n_ulb):
        x = torch.randn(1, 8, 8, generator=g)
        item = {"image": x, "image_s": x + 0.3 * torch.randn(1, 8, 8, generator=g)}
        if leak:
            item["label"] = torch.zeros(2)
        ulb.append(item)
    return SemiSupervisedLoader(DataLoader(lb, batch_size=4), DataLoader(ulb, batch_size=4), "unlabeled")


def _trainer(loader: SemiSupervisedLoader, momentum: float = 0.9, **kwargs: object) -> MeanTeacherTrainer:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    teacher = EMATeacher(net, momentum=momentum)
    return MeanTeacherTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        teachers=[teacher],
        activation="sigmoid",
        **kwargs,  # type: ignore[arg-type]
    )


def test_losses_finite_nonzero_and_student_gets_unlabelled_gradient() -> None:
    trainer = _trainer(_data(), unsup_weight=1.0)
    seen: dict[str, torch.Tensor] = {}

    def check(engine: MeanTeacherTrainer) -> None:
        out = engine.state.output
        for k in (Keys.LOSS_SUP, Keys.LOSS_UNSUP, Keys.LOSS):
            assert torch.isfinite(out[k]) and out[k].item() > 0, k
        # the unlabelled term alone must reach the student's weights
        grads = torch.autograd.grad(out[Keys.LOSS_UNSUP], list(engine.network.parameters()), retain_graph=True)
        seen["grad"] = sum(g.abs().sum() for g in grads)
        assert all(p.grad is None for p in engine.teacher.parameters())
        assert not any(p.requires_grad for p in engine.teacher.parameters())

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert seen["grad"] > 0


def test_teacher_moves_by_the_ema_of_the_student() -> None:
    trainer = _trainer(_data(n_ulb=4), momentum=0.9)  # one iteration
    student, teacher = trainer.network, trainer.teacher
    before = [p.detach().clone() for p in teacher.parameters()]
    trainer.run()
    # srcmt warm-up is off by default: teacher = 0.9 * teacher_0 + 0.1 * student_1 (teacher_0 = student_0)
    for t0, t1, s1 in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s1.detach(), atol=1e-6)
    assert any(not torch.equal(t0, t1) for t0, t1 in zip(before, teacher.parameters()))


def test_unsup_weight_zero_equals_supervised_step() -> None:
    a = _trainer(_data(n_ulb=4), unsup_weight=0.0)
    a.run()
    b = _trainer(_data(n_ulb=4), unsup_weight=1.0)
    b.run()
    assert any(not torch.equal(p, q) for p, q in zip(a.network.parameters(), b.network.parameters()))
    assert a.state.output[Keys.LOSS].item() == pytest.approx(a.state.output[Keys.LOSS_SUP].item())


def test_label_leak_raises() -> None:
    trainer = _trainer(_data(leak=True))
    with pytest.raises(LabelLeakError, match="label"):
        trainer.run()


def test_missing_strong_view_is_a_clear_error() -> None:
    lb = DataLoader([{"image": torch.zeros(1, 8, 8), "label": torch.zeros(2)}] * 4, batch_size=2)
    ulb = DataLoader([{"image": torch.zeros(1, 8, 8)}] * 4, batch_size=2)
    trainer = _trainer(SemiSupervisedLoader(lb, ulb))
    with pytest.raises(KeyError, match="image_s"):
        trainer.run()


def test_identical_views_warn() -> None:
    lb = DataLoader([{"image": torch.randn(1, 8, 8), "label": torch.zeros(2)} for _ in range(4)], batch_size=2)
    x = [torch.randn(1, 8, 8) for _ in range(4)]
    ulb = DataLoader([{"image": v, "image_s": v.clone()} for v in x], batch_size=2)
    with pytest.warns(UserWarning, match="identical"):
        _trainer(SemiSupervisedLoader(lb, ulb)).run()


def test_events_fire_in_order_and_accumulation_steps() -> None:
    trainer = _trainer(_data(), accumulation_steps=2)
    order: list[str] = []
    for ev in (
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    ):
        trainer.add_event_handler(ev, lambda e, name=ev.name: order.append(name))
    steps: list[int] = []
    real_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(trainer.state.iteration), real_step(*a, **k))[1]  # type: ignore[method-assign]
    trainer.run()
    assert order[:4] == ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"]
    assert steps == [2, 4]  # 4 iterations, accumulation over 2


def test_ramped_weight_by_epoch() -> None:
    from s4mi.handlers.ramps import LinearRamp

    loader = _data(n_ulb=8)
    trainer = _trainer(loader, unsup_weight=LinearRamp(1.0, 2), unsup_weight_every="epoch")
    trainer.state.max_epochs = 3
    weights: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: weights.append(e.state.output[Keys.UNSUP_WEIGHT]))
    trainer.run()
    assert weights == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
