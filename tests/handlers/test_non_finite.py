"""NonFiniteGuard stops before a NaN step; savers never write non-finite weights; a resume takes a lower lr."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from s4mi.engines.base import SSLTrainer
from s4mi.handlers import (
    AtomicCheckpointSaver,
    BestModelSaver,
    NonFiniteError,
    NonFiniteGuard,
    ResumeLoader,
    ResumeSaver,
)
from s4mi.keys import Keys


class NaNAfter(torch.nn.Module):
    """A loss that is ``loss`` for its first ``after`` calls and NaN from then on (also used by the bundle test
    through a ``--loss`` override: it counts calls in its own process)."""

    def __init__(self, loss: torch.nn.Module | None = None, after: int = 0) -> None:
        super().__init__()
        self.loss = loss if loss is not None else torch.nn.MSELoss()
        self.after = int(after)
        self.calls = 0

    def forward(self, *args: Any) -> torch.Tensor:
        self.calls += 1
        value = self.loss(*args)
        return value * float("nan") if self.calls > self.after else value


def _data(n: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(2, 3, generator=g), "label": torch.randn(2, 1, generator=g)} for _ in range(n)]


def _supervised(loss: torch.nn.Module, max_epochs: int = 2) -> tuple[SupervisedTrainer, torch.nn.Module]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=_data(),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=loss,
    )
    NonFiniteGuard().attach(trainer)
    return trainer, net


def test_nan_loss_stops_before_the_step_naming_iteration_and_epoch() -> None:
    ref_trainer, ref_net = _supervised(torch.nn.MSELoss())  # the weights after 5 good steps
    ref_trainer.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: e.terminate())
    ref_trainer.run()

    trainer, net = _supervised(NaNAfter(after=5))
    with pytest.raises(NonFiniteError) as info:
        trainer.run()
    message = str(info.value)
    assert "non-finite loss at iteration 6 (epoch 2, step 2 of 4): loss = nan" in message
    assert "--learning_rate" in message
    for a, b in zip(net.parameters(), ref_net.parameters()):
        assert torch.equal(a, b), "the NaN step reached the weights"
    assert net.weight.grad is None or torch.isfinite(net.weight.grad).all()


class _TwoTermTrainer(SSLTrainer):
    """loss = loss_sup + loss_unsup, where the unsupervised term can be NaN."""

    def __init__(self, *args: Any, nan_unsup_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nan_unsup_at = nan_unsup_at

    def split_batch(self, batchdata: Any) -> dict[str, torch.Tensor]:
        return {"x": batchdata["image"], "y": batchdata["label"]}

    def train_step(self, engine: Any, batch: dict[str, torch.Tensor]) -> None:
        pred = self.network(batch["x"])
        loss_sup = torch.nn.functional.mse_loss(pred, batch["y"])
        loss_unsup = pred.pow(2).mean()
        if engine.state.iteration == self.nan_unsup_at:
            loss_unsup = loss_unsup * float("inf") - float("inf")
        out = engine.state.output
        out.update({Keys.LOSS_SUP: loss_sup, Keys.LOSS_UNSUP: loss_unsup, Keys.LOSS: loss_sup + loss_unsup})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)


def test_the_message_names_the_non_finite_term_not_only_the_total() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    trainer = _TwoTermTrainer(
        device="cpu",
        max_epochs=3,
        train_data_loader=_data(),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        nan_unsup_at=11,
    )
    NonFiniteGuard().attach(trainer)
    with pytest.raises(NonFiniteError, match=r"iteration 11 \(epoch 3, step 3 of 4\): loss_unsup = nan"):
        trainer.run()


def test_non_finite_gradient_of_a_finite_loss_is_caught_naming_the_parameter() -> None:
    class SqrtAtZero(torch.nn.Module):
        def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.mse_loss(pred, target) + (pred[:, :1] * 0).sqrt().sum()  # d sqrt(0) = inf

    trainer, net = _supervised(SqrtAtZero())
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteError) as info:
        trainer.run()
    message = str(info.value)
    assert "non-finite gradient at iteration 1 (epoch 1, step 1 of 4) in 2 parameter(s): weight, bias" in message
    assert "loss = " in message and "nan" not in message.split("loss terms:")[1].split(")")[0]
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))


def test_a_finite_run_is_untouched_by_the_guard() -> None:
    plain = SupervisedTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=_data(),
        network=(a := torch.nn.Linear(3, 1)),
        optimizer=torch.optim.SGD(a.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
    )
    b = torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    plain.run()
    guarded, _ = _supervised(torch.nn.MSELoss())
    guarded.network.load_state_dict(b.state_dict())
    guarded.run()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), guarded.network.parameters()))


def _poison(net: torch.nn.Module) -> None:
    with torch.no_grad():
        net.weight[0, 0] = float("nan")


def test_resume_saver_refuses_non_finite_weights_and_keeps_the_last_good_file(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 1)
    engine = Engine(lambda e, b: None)
    ResumeSaver(str(tmp_path), {"model": net}).attach(engine)
    engine.run([0, 1], max_epochs=1)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["checkpoint_iteration=2.pt"]
    before = files[0].read_bytes()
    _poison(net)
    # the same saver goes on: Ignite's Checkpoint would remove checkpoint_iteration=2.pt before writing =4
    with pytest.raises(NonFiniteError, match=r"not writing .*checkpoint_iteration=4.pt: .*\(weight\)"):
        engine.run([0, 1], max_epochs=2)
    assert sorted(tmp_path.iterdir()) == files and files[0].read_bytes() == before
    engine2 = Engine(lambda e, b: None)
    ResumeSaver(str(tmp_path), {"model": net}).attach(engine2)
    with pytest.raises(NonFiniteError, match=r"not writing .*checkpoint_iteration=2.pt: .*\(weight\)"):
        engine2.run([0, 1], max_epochs=1)
    assert sorted(tmp_path.iterdir()) == files and files[0].read_bytes() == before


def test_atomic_checkpoint_saver_refuses_non_finite_weights(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 1)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="model.pt")
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    before = (tmp_path / "model.pt").read_bytes()
    _poison(net)
    engine2 = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="model.pt").attach(engine2)
    with pytest.raises(NonFiniteError, match=r"not writing .*model.pt: .*weight"):
        engine2.run([0], max_epochs=1)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_best_model_saver_refuses_non_finite_weights(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 1)
    saver = BestModelSaver(tmp_path, {"teacher": net}, main="teacher")
    evaluator = Engine(lambda e, b: None)
    evaluator.state.key_metric_name = "m"
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(m=float(e.state.epoch)))
    saver.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    before = (tmp_path / "model.pt").read_bytes()
    _poison(net)
    with pytest.raises(NonFiniteError, match="weight"):
        evaluator.run([0], max_epochs=2)
    assert (tmp_path / "model.pt").read_bytes() == before


def _opt_and_sched(net: torch.nn.Module, lr: float) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)


def _saved_run(tmp_path: Path, lr: float, epochs: int) -> Path:
    net = torch.nn.Linear(3, 1)
    opt, sched = _opt_and_sched(net, lr)
    engine = Engine(lambda e, b: (opt.zero_grad(), net(torch.ones(1, 3)).sum().backward(), opt.step()))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    ResumeSaver(str(tmp_path), {"model": net, "optimizer": opt, "lr_scheduler": sched}).attach(engine)
    engine.run([0, 1], max_epochs=epochs)
    return next(tmp_path.glob("*.pt"))


def _resume(path: Path, lr: float) -> tuple[torch.optim.Optimizer, Any]:
    net = torch.nn.Linear(3, 1)
    opt, sched = _opt_and_sched(net, lr)
    engine = Engine(lambda e, b: None)
    ResumeLoader(str(path), {"model": net, "optimizer": opt, "lr_scheduler": sched}).attach(engine)
    engine.fire_event(Events.STARTED)
    return opt, sched


def test_resume_with_the_same_learning_rate_restores_the_saved_state_exactly(tmp_path: Path) -> None:
    path = _saved_run(tmp_path, 0.1, 3)
    opt, sched = _resume(path, 0.1)
    saved = torch.load(path, weights_only=False)
    assert opt.param_groups[0]["lr"] == saved["optimizer"]["param_groups"][0]["lr"]
    assert sched.base_lrs == [0.1]


def test_resume_with_a_lower_learning_rate_override_scales_the_schedule(tmp_path: Path) -> None:
    path = _saved_run(tmp_path, 0.1, 3)
    saved_lr = torch.load(path, weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    expected_after_3 = 0.1 * (1 + math.cos(math.pi * 3 / 10)) / 2
    assert saved_lr == pytest.approx(expected_after_3)
    opt, sched = _resume(path, 0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(saved_lr / 10)
    assert opt.param_groups[0]["initial_lr"] == 0.01 and sched.base_lrs == [pytest.approx(0.01)]
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 4 / 10)) / 2)
