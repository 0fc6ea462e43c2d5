"""Cross-teaching engine: the loss against a plain computation, gradients of each term, recipes, 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.networks.nets import SwinUNETR, UNet
from torch.utils.data import DataLoader

from s4mi.data.loaders import SemiSupervisedLoader
from s4mi.engines import CrossTeachingTrainer, Keys, cross_teaching_lr_scheduler, cross_teaching_optimizer
from s4mi.handlers.ramps import SigmoidRamp
from s4mi.losses import CrossTeachingLoss
from s4mi.networks import SegmentationPair


def _data(spatial: tuple[int, ...] = (8, 8), n_lb: int = 4, n_ulb: int = 4, batch: int = 2) -> SemiSupervisedLoader:
    g = torch.Generator().manual_seed(0)
    lb = [
        {"image": torch.randn(1, *spatial, generator=g), "label": torch.randint(0, 2, (1, *spatial), generator=g)}
        for _ in range(n_lb)
    ]
    ulb = [{"image": torch.randn(1, *spatial, generator=g)} for _ in range(n_ulb)]
    return SemiSupervisedLoader(
        DataLoader(lb, batch_size=batch), DataLoader(ulb, batch_size=batch, shuffle=False), "unlabeled"
    )


def _pair() -> SegmentationPair:
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    )
    transformer = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 1), torch.nn.GELU(), torch.nn.Conv2d(4, 2, 3, padding=1))
    return SegmentationPair(cnn, transformer)


def _trainer(pair: SegmentationPair, loader: SemiSupervisedLoader, **kwargs: object) -> CrossTeachingTrainer:
    kwargs.setdefault("unsup_weight", 0.1)
    return CrossTeachingTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=pair,
        optimizer=torch.optim.SGD(pair.param_groups(), lr=0.1),
        **kwargs,  # type: ignore[arg-type]
    )


def test_loss_is_both_networks_supervised_plus_weighted_cross_terms() -> None:
    pair = _pair()
    reference = _pair()
    reference.load_state_dict(pair.state_dict())
    loader = _data()
    trainer = _trainer(pair, loader, loss_function=CrossTeachingLoss(class_weights=[1.0, 2.0]), epoch_length=1)
    seen: dict[str, torch.Tensor] = {}
    trainer.add_event_handler(
        IterationEvents.LOSS_COMPLETED, lambda e: seen.update(e.state.output, batch=e.state.batch)
    )
    trainer.run()
    batch = seen["batch"]

    x = torch.cat([batch["labeled"]["image"], batch["unlabeled"]["image"]])
    y = batch["labeled"]["label"]
    reference.train()
    a, b = reference.cnn(x), reference.transformer(x)
    loss = CrossTeachingLoss(class_weights=[1.0, 2.0])
    expected = loss(a[:2], y, a[2:], b[2:], 0.1) + loss(b[:2], y, b[2:], a[2:], 0.1)
    assert seen[Keys.LOSS].item() == pytest.approx(expected.item(), rel=1e-5)
    assert seen[Keys.UNSUP_WEIGHT] == 0.1
    assert torch.equal(seen[Keys.PSEUDO_LABEL_CNN], a[2:].argmax(1, keepdim=True))
    assert torch.equal(seen[Keys.PSEUDO_LABEL_TRANSFORMER], b[2:].argmax(1, keepdim=True))
    for key in (Keys.LOSS_SUP_CNN, Keys.LOSS_SUP_TRANSFORMER, Keys.LOSS_UNSUP_CNN, Keys.LOSS_UNSUP_TRANSFORMER):
        assert math.isfinite(seen[key].item()) and seen[key].item() > 0, key
    assert seen[Keys.LOSS_SUP].item() == pytest.approx(
        (seen[Keys.LOSS_SUP_CNN] + seen[Keys.LOSS_SUP_TRANSFORMER]).item()
    )


def test_each_network_learns_from_its_unlabelled_term() -> None:
    """With the supervised terms switched off, both networks still get gradients: each from its own cross term."""
    pair = _pair()
    trainer = _trainer(pair, _data(), loss_function=CrossTeachingLoss(sup_weight=0.0), unsup_weight=1.0, epoch_length=1)
    grads: dict[str, float] = {}

    def record(engine: CrossTeachingTrainer) -> None:
        for name, net in (("cnn", pair.cnn), ("transformer", pair.transformer)):
            grads[name] = sum(float(p.grad.abs().sum()) for p in net.parameters() if p.grad is not None)

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, record)
    trainer.run()
    assert grads["cnn"] > 0 and grads["transformer"] > 0


def test_weight_follows_the_iteration_ramp() -> None:
    pair = _pair()
    weights: list[float] = []
    trainer = _trainer(pair, _data(n_ulb=8), unsup_weight=SigmoidRamp(0.1, 4))
    trainer.add_event_handler(
        IterationEvents.LOSS_COMPLETED, lambda e: weights.append(e.state.output[Keys.UNSUP_WEIGHT])
    )
    trainer.run()
    assert weights == pytest.approx([0.1 * math.exp(-5 * (1 - t / 4) ** 2) for t in range(4)])


def test_refuses_an_optimizer_that_leaves_a_network_out() -> None:
    pair = _pair()
    with pytest.raises(ValueError, match="leaves out"):
        CrossTeachingTrainer("cpu", 1, _data(), pair, torch.optim.SGD(pair.cnn.parameters(), lr=0.1))


def test_optimizer_recipes() -> None:
    pair = _pair()
    sgd = cross_teaching_optimizer(pair.param_groups(), "ssl4mis")
    assert isinstance(sgd, torch.optim.SGD)
    assert [(g["lr"], g["momentum"], g["weight_decay"]) for g in sgd.param_groups] == [(0.01, 0.9, 1e-4)] * 2
    adam = cross_teaching_optimizer(pair.param_groups(), "s4mi")
    assert isinstance(adam, torch.optim.Adam) and [g["lr"] for g in adam.param_groups] == [3.6e-4] * 2
    assert cross_teaching_optimizer(pair.parameters(), "s4mi", lr=1e-3).param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="recipe"):
        cross_teaching_optimizer(pair.parameters(), "sgd")

    sched = cross_teaching_lr_scheduler(sgd, "ssl4mis", total_iterations=10)
    lrs = []
    for _ in range(10):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        sched.step()
    assert lrs == pytest.approx([0.01 * (1 - t / 10) ** 0.9 for t in range(10)])
    const = cross_teaching_lr_scheduler(adam, "s4mi", total_iterations=10)
    for _ in range(3):
        adam.step()
        const.step()
    assert adam.param_groups[0]["lr"] == pytest.approx(3.6e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_and_swinunetr_train_one_step(dims: int) -> None:
    spatial = (64, 64) if dims == 2 else (64, 64, 32)
    torch.manual_seed(0)
    cnn = UNet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    transformer = SwinUNETR(in_channels=1, out_channels=2, spatial_dims=dims, feature_size=12, depths=(1, 1, 1, 1))
    pair = SegmentationPair(cnn, transformer)
    before = {k: v.clone() for k, v in pair.state_dict().items()}
    trainer = _trainer(pair, _data(spatial, n_lb=1, n_ulb=1, batch=1))
    trainer.run()
    after = pair.state_dict()
    for prefix in ("cnn.", "transformer."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
