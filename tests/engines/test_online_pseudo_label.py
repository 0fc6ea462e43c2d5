"""Online pseudo-labelling engine: the loss against a plain computation, momentum updates checked analytically."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.losses import DiceLoss
from torch.utils.data import DataLoader

from s4mi.data.loaders import SemiSupervisedLoader
from s4mi.engines import Keys, OnlinePseudoLabelTrainer
from s4mi.handlers import EMATeacher
from s4mi.losses import SoftDiceConsistencyLoss
from s4mi.transforms.batch import random_crop, random_flip_rot90


def _data(n_lb: int = 8, n_ulb: int = 8, batch: int = 4, index: bool = False) -> SemiSupervisedLoader:
    g = torch.Generator().manual_seed(0)
    lb = [
        {"image": torch.randn(1, 8, 8, generator=g), "label": (torch.rand(1, 8, 8, generator=g) > 0.5).float()}
        for _ in range(n_lb)
    ]
    ulb = [{"image": torch.randn(1, 8, 8, generator=g)} for _ in range(n_ulb)]
    if index:
        ulb = [dict(d, ulb_index=i) for i, d in enumerate(ulb)]
    return SemiSupervisedLoader(
        DataLoader(lb, batch_size=batch), DataLoader(ulb, batch_size=batch, shuffle=False), "unlabeled"
    )


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)
    )


def _trainer(
    loader: SemiSupervisedLoader,
    teacher_m: float = 0.99,
    every: str = "iteration",
    student_m: float = 0.9,
    max_epochs: int = 1,
    **kwargs: object,
) -> OnlinePseudoLabelTrainer:
    torch.manual_seed(0)
    student = _net()
    teacher = EMATeacher(student, momentum=teacher_m, every=every, buffers="update", sync_on_start=False)
    torch.manual_seed(1)
    teacher.load_state_dict(_net().state_dict())  # the stage-0 teacher: other weights than the student's
    student_ema = EMATeacher(student, momentum=student_m, every=every, name="student_ema")
    return OnlinePseudoLabelTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=student,
        optimizer=torch.optim.SGD(student.parameters(), lr=0.5),
        loss_function=DiceLoss(sigmoid=True, batch=True),
        teachers=[teacher, student_ema],
        unsup_weight=0.3,
        **kwargs,  # type: ignore[arg-type]
    )


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


def test_loss_is_dice_plus_beta_soft_dice_to_the_teacher() -> None:
    trainer = _trainer(_data(n_ulb=4))
    seen: dict[str, float] = {}

    def check(engine: OnlinePseudoLabelTrainer) -> None:
        out = engine.state.output
        with torch.no_grad():
            engine.pseudo_teacher.eval()
            x_lb, y_lb = out[Keys.IMAGE], out[Keys.LABEL]
            ulb = next(iter(engine.data_loader))["unlabeled"]["image"]
            q = torch.sigmoid(engine.pseudo_teacher(ulb))
            # the student in train mode over labelled and unlabelled images together (one batch-norm batch)
            logits = engine.network(torch.cat([x_lb, ulb]))
        sup = DiceLoss(sigmoid=True, batch=True)(logits[:4], y_lb)
        unsup = SoftDiceConsistencyLoss()(logits[4:], q)
        assert torch.allclose(out[Keys.PSEUDO_LABEL], q, atol=1e-6)
        assert out[Keys.LOSS_SUP].item() == pytest.approx(sup.item(), rel=1e-5)
        assert out[Keys.LOSS_UNSUP].item() == pytest.approx(unsup.item(), rel=1e-5)
        assert out[Keys.LOSS].item() == pytest.approx(sup.item() + 0.3 * unsup.item(), rel=1e-5)
        grads = torch.autograd.grad(out[Keys.LOSS_UNSUP], list(engine.network.parameters()), retain_graph=True)
        seen["grad"] = float(sum(g.abs().sum() for g in grads))
        assert all(p.grad is None for p in engine.pseudo_teacher.parameters())

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert seen["grad"] > 0


def _record_students(trainer: OnlinePseudoLabelTrainer, event: Events) -> list[torch.Tensor]:
    """The student's weights after each update point (the teachers' updates run first on the event, on the
    student of that moment, which is what they average)."""
    seen: list[torch.Tensor] = []
    trainer.add_event_handler(event, lambda e: seen.append(_flat(e.network)))
    return seen


def _closed_form(t0: torch.Tensor, students: list[torch.Tensor], m: float) -> torch.Tensor:
    """T_K = m^K T_0 + (1 - m) sum_k m^(K - k) w_k, k = 1..K."""
    k_total = len(students)
    out = m**k_total * t0
    for k, w in enumerate(students, start=1):
        out = out + (1 - m) * m ** (k_total - k) * w
    return out


@pytest.mark.parametrize("every", ["iteration", "epoch"])
def test_online_teacher_and_student_momentum_copy_follow_the_closed_form(every: str) -> None:
    trainer = _trainer(_data(n_ulb=8), teacher_m=0.8, every=every, student_m=0.7, max_epochs=3)  # 2 steps/epoch
    teacher, student_ema = trainer.teachers["teacher"], trainer.teachers["student_ema"]
    t0, s0 = _flat(teacher.ema_model), _flat(trainer.network)
    assert not torch.equal(t0, s0)
    event = Events.ITERATION_COMPLETED if every == "iteration" else Events.EPOCH_COMPLETED
    students = _record_students(trainer, event)
    trainer.run()
    assert len(students) == (6 if every == "iteration" else 3)
    assert torch.allclose(_flat(teacher.ema_model), _closed_form(t0, students, 0.8), atol=1e-6)
    # the student's momentum copy starts as the student (sync at start) and follows the same rule
    assert torch.allclose(_flat(student_ema.ema_model), _closed_form(s0, students, 0.7), atol=1e-6)


def test_offline_teacher_never_moves_buffers_included() -> None:
    trainer = _trainer(_data(n_ulb=8), teacher_m=1.0, max_epochs=2)
    before = {k: v.clone() for k, v in trainer.pseudo_teacher.state_dict().items()}
    student_before = _flat(trainer.network)
    trainer.run()
    for k, v in trainer.pseudo_teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(_flat(trainer.network), student_before)


def test_hard_labels_threshold_and_weak_view() -> None:
    g = torch.Generator().manual_seed(0)
    lb = [{"image": torch.randn(1, 8, 8, generator=g), "label": torch.ones(1, 8, 8)} for _ in range(4)]
    ulb = []
    for _ in range(4):
        x = torch.randn(1, 8, 8, generator=g)
        ulb.append({"image": x, "image_s": x + torch.randn(1, 8, 8, generator=g)})
    loader = SemiSupervisedLoader(DataLoader(lb, batch_size=4), DataLoader(ulb, batch_size=4), "unlabeled")
    trainer = _trainer(loader, hard=True, threshold=0.6, teacher_view="weak")
    seen = {}
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: seen.update(e.state.output))
    with torch.no_grad():
        trainer.pseudo_teacher.eval()
        weak = torch.stack([u["image"] for u in ulb])
        q = torch.sigmoid(trainer.pseudo_teacher(weak))
    trainer.run()
    # the teacher labels the weak view; the student is trained on the strong one with hard, thresholded targets
    assert torch.allclose(seen[Keys.PSEUDO_LABEL], q, atol=1e-6)
    expected = SoftDiceConsistencyLoss(hard=True, threshold=0.6)(seen[Keys.LOGITS_ULB_S], q)
    assert seen[Keys.LOSS_UNSUP].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() != pytest.approx(SoftDiceConsistencyLoss()(seen[Keys.LOGITS_ULB_S], q).item(), rel=1e-3)


class _FakeRenderer:
    """A renderer whose cache is a fixed tensor: index i holds a map of value i / 10."""

    index_key = "ulb_index"

    def __init__(self) -> None:
        self.attached = False
        self.asked: list[list[int]] = []

    def attach(self, engine) -> None:  # noqa: ANN001
        self.attached = True

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        self.asked.append(idx.tolist())
        return (idx.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()


def test_rendered_pseudo_labels_are_served_by_index() -> None:
    renderer = _FakeRenderer()
    trainer = _trainer(_data(n_ulb=8, index=True), renderer=renderer, device_augment=False)
    assert renderer.attached
    seen = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: seen.append(e.state.output[Keys.PSEUDO_LABEL]))
    trainer.run()
    assert renderer.asked == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.allclose(seen[1][:, 0, 0, 0], torch.tensor([0.4, 0.5, 0.6, 0.7]))


def test_rendered_mode_needs_the_index() -> None:
    trainer = _trainer(_data(n_ulb=4), renderer=_FakeRenderer())
    with pytest.raises(Exception, match="ulb_index"):
        trainer.run()


def test_random_flip_rot90_moves_image_and_label_together() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    y = x * 10
    torch.manual_seed(3)
    seen = set()
    for _ in range(20):
        a, b = random_flip_rot90((x, y))
        assert torch.equal(b, a * 10)
        assert sorted(a[0].flatten().tolist()) == sorted(x[0].flatten().tolist())
        seen.add(tuple(a[0, 0, 0].tolist()))
    assert len(seen) > 2  # it does augment
    v = torch.randn(1, 1, 4, 5, 3)
    (w,) = random_flip_rot90((v,))  # non-square: flips only
    assert w.shape == v.shape


def test_unknown_teacher_name() -> None:
    with pytest.raises(ValueError, match="pseudo-label teacher"):
        _trainer(_data(), teacher_name="nope")


def test_random_crop_cuts_the_same_box() -> None:
    x = torch.arange(2 * 1 * 6 * 5 * 4, dtype=torch.float32).view(2, 1, 6, 5, 4)
    a, b = random_crop((x, x * 2), (3, 5, 8))
    assert a.shape == (2, 1, 3, 5, 4) and torch.equal(b, a * 2)
    for i in range(2):  # each crop is a contiguous block of the original
        start = int((x[i, 0, :, 0, 0] == a[i, 0, 0, 0, 0]).nonzero()[0])
        assert torch.equal(a[i], x[i, :, start : start + 3])
    with pytest.raises(ValueError, match="crop size"):
        random_crop((x,), (3, 3))


def test_student_learning_rate() -> None:
    from s4mi.engines.online_pseudo_label import student_learning_rate

    assert student_learning_rate("teacher") == 1e-4 and student_learning_rate("scratch") == 1e-3
    with pytest.raises(ValueError, match="student_init"):
        student_learning_rate("random")
