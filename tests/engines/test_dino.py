"""DINOTrainer: the step's loss against the loss module, no teacher gradient, the frozen last layer, the schedules."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents

from s4mi.engines import DINOTrainer, LabelLeakError
from s4mi.engines.dino import clip_gradients, dino_param_groups
from s4mi.handlers import EMATeacher, WarmupCosine
from s4mi.losses import DINOLoss
from s4mi.networks import CropViT, DINOHead, MultiCropWrapper


def _student() -> MultiCropWrapper:
    torch.manual_seed(0)
    vit = CropViT(in_channels=1, img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
    return MultiCropWrapper(vit, DINOHead(16, 12, hidden_dim=16, bottleneck_dim=8))


def _data(n: int = 3, label: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        d = {"image_g0": torch.rand(2, 1, 16, 16, generator=g), "image_g1": torch.rand(2, 1, 16, 16, generator=g)}
        d["image_l0"] = torch.rand(2, 1, 8, 8, generator=g)
        if label:
            d["label"] = torch.zeros(2, 3)
        out.append(d)
    return out


def _trainer(data, epochs: int = 2, **kw) -> DINOTrainer:
    student = _student()
    teacher = EMATeacher(student, momentum=WarmupCosine(0.996, 1.0, epochs * len(data)))
    opt = torch.optim.AdamW(dino_param_groups(student), lr=1e-3)
    return DINOTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=data,
        network=student,
        optimizer=opt,
        loss_function=DINOLoss(12),
        teachers=[teacher],
        teacher_temp=WarmupCosine(0.07, 0.07, 10, warmup=2, warmup_start=0.04),
        weight_decay=WarmupCosine(0.04, 0.4, epochs * len(data)),
        local_keys=("image_l0",),
        **kw,
    )


def test_step_loss_is_the_loss_module_on_the_crops_and_only_the_student_learns() -> None:
    trainer = _trainer(_data(), epochs=1)
    seen = []

    def check(engine: DINOTrainer) -> None:
        out = engine.state.output
        center_before = engine.loss_function.center.clone()  # the centre is updated after this event
        expected = DINOLoss(12)
        expected.center.copy_(center_before)
        assert out["loss"].item() == pytest.approx(
            expected(out["student_out"], out["teacher_out"], out["teacher_temp"]).item(), rel=1e-6
        )
        assert len(out["student_out"]) == 3 and len(out["teacher_out"]) == 2
        seen.append(out["teacher_temp"])

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    teacher_params = list(trainer.teacher.parameters())
    trainer.run()
    assert seen == [0.04] * 3  # the first epoch of the temperature warm-up
    assert all(not p.requires_grad and p.grad is None for p in teacher_params)
    assert trainer.loss_function.center.abs().sum() > 0


def test_last_layer_frozen_in_the_first_epoch_then_learns() -> None:
    trainer = _trainer(_data(), epochs=2, freeze_last_layer=1)
    last = trainer.network.head.last_layer.parametrizations.weight.original1
    snapshots = {}
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED, lambda e: snapshots.setdefault(e.state.epoch, []).append(last.detach().clone())
    )
    start = last.detach().clone()
    first_block = copy.deepcopy(trainer.network.backbone.blocks[0].state_dict())
    trainer.run()
    assert all(torch.equal(s, start) for s in snapshots[1])
    assert not torch.equal(snapshots[2][-1], start)
    assert any(not torch.equal(v, trainer.network.backbone.blocks[0].state_dict()[k]) for k, v in first_block.items())


def test_weight_decay_schedule_skips_the_no_decay_group() -> None:
    trainer = _trainer(_data(2), epochs=2)
    wd = []
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED, lambda e: wd.append([g["weight_decay"] for g in e.optimizer.param_groups])
    )
    trainer.run()
    ramp = WarmupCosine(0.04, 0.4, 4)
    assert [w[0] for w in wd] == pytest.approx([ramp(t) for t in range(4)])
    assert all(w[1] == 0.0 for w in wd)


def test_labels_are_refused() -> None:
    with pytest.raises(LabelLeakError, match="label"):
        _trainer(_data(1, label=True), epochs=1).run()


def test_clip_gradients_per_parameter() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])
    model = torch.nn.Module()
    model.a, model.b = a, b
    clip_gradients(model, 1.0)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8]), atol=1e-6)  # norm 5 -> 1
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4]))  # norm 0.5: kept


def test_a_stopped_run_resumes_exactly() -> None:
    """Two epochs straight equal one epoch, a checkpoint (networks, teacher, optimizer, loss centre, trainer) loaded
    into fresh objects, then the second epoch: the centre and every schedule come back from the checkpoint."""
    data = _data()
    straight = _trainer(data, epochs=2)
    straight.run()

    first = _trainer(data, epochs=2)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    first.run()
    names = ("network", "optimizer", "loss_function")
    saved = {n: copy.deepcopy(getattr(first, n).state_dict()) for n in names}
    saved["teacher"] = copy.deepcopy(next(iter(first.teachers.values())).state_dict())
    saved["trainer"] = first.state_dict()

    resumed = _trainer(data, epochs=2)
    for n in names:
        getattr(resumed, n).load_state_dict(saved[n])
    next(iter(resumed.teachers.values())).load_state_dict(saved["teacher"])
    resumed.load_state_dict(saved["trainer"])
    resumed.run()
    assert resumed.state.epoch == 2 and resumed.state.iteration == straight.state.iteration
    assert torch.equal(resumed.loss_function.center, straight.loss_function.center)
    for a, b in zip(resumed.network.state_dict().values(), straight.network.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.teacher.state_dict().values(), straight.teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.optimizer.param_groups[0]["weight_decay"] == straight.optimizer.param_groups[0]["weight_decay"]
