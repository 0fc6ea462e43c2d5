"""SRC-MT engine: every loss term finite and non-zero, gradients of each unlabelled term, SRC-MT's schedule, the
relation term on the features of the same forward, a seeded run repeats exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.networks.nets import DenseNet
from monai.utils import set_determinism
from torch.utils.data import DataLoader

from s4mi.data.loaders import SemiSupervisedLoader
from s4mi.engines import Keys, SRCMTTrainer
from s4mi.handlers import EMATeacher, GatedRamp, SigmoidRamp
from s4mi.losses import relation_consistency_loss, softmax_mse_loss
from s4mi.networks import densenet_features

N_CLASSES = 3


def data(
    n_lb: int = 8, n_ulb: int = 16, lb_strong: bool = False, shuffle: bool = False, noise: float = 0.3
) -> SemiSupervisedLoader:
    """16 x 16 one-channel images, one-hot labels; a strong view (the image plus ``noise`` times Gaussian noise) of
    every unlabelled image (and, with ``lb_strong``, of every labelled one)."""
    g = torch.Generator().manual_seed(0)
    lb = []
    for i in range(n_lb):
        x = torch.rand(1, 16, 16, generator=g)
        item = {"image": x, "label": torch.nn.functional.one_hot(torch.tensor(i % N_CLASSES), N_CLASSES).float()}
        if lb_strong:
            item["image_s"] = x + noise * torch.randn(1, 16, 16, generator=g)
        lb.append(item)
    ulb = []
    for _ in range(n_ulb):
        x = torch.rand(1, 16, 16, generator=g)
        ulb.append({"image": x, "image_s": x + noise * torch.randn(1, 16, 16, generator=g)})
    return SemiSupervisedLoader(
        DataLoader(lb, batch_size=4, shuffle=shuffle), DataLoader(ulb, batch_size=4, shuffle=shuffle), "unlabeled"
    )


def densenet(dropout: float = 0.0) -> DenseNet:
    """A MONAI DenseNet small enough for a unit test (its pooled features: 16 channels)."""
    return DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=N_CLASSES,
        init_features=8,
        growth_rate=4,
        block_config=(2, 2),
        dropout_prob=dropout,
    )


def trainer(
    loader: SemiSupervisedLoader | None = None,
    dropout: float = 0.0,
    cls: type[SRCMTTrainer] = SRCMTTrainer,
    **kwargs: Any,
) -> Any:
    torch.manual_seed(0)
    net = densenet(dropout)
    return cls(
        device="cpu",
        max_epochs=1,
        train_data_loader=data() if loader is None else loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        loss_function=torch.nn.CrossEntropyLoss(),
        teachers=[EMATeacher(net, momentum=0.99, warmup="srcmt")],
        **kwargs,
    )


def student_gradient(engine: SRCMTTrainer, key: str) -> float:
    """The size of the gradient the output term ``key`` alone sends to the student's weights (a term on the
    features reaches every layer but the classifier's last)."""
    params = list(engine.network.parameters())
    grads = torch.autograd.grad(engine.state.output[key], params, retain_graph=True, allow_unused=True)
    return float(sum(g.abs().sum() for g in grads if g is not None))


def test_every_term_finite_nonzero_and_the_student_alone_learns_from_each() -> None:
    t = trainer(unsup_weight=1.0, relation_weight=1.0, epoch_length=1)
    seen: dict[str, float] = {}

    def check(engine: SRCMTTrainer) -> None:
        out = engine.state.output
        for k in (Keys.LOSS_SUP, Keys.LOSS_UNSUP, Keys.LOSS_RELATION, Keys.LOSS):
            assert torch.isfinite(out[k]) and out[k].item() > 0, k
        for k in (Keys.LOSS_UNSUP, Keys.LOSS_RELATION):
            seen[k] = student_gradient(engine, k)
        assert not any(p.requires_grad for p in engine.teacher.parameters())
        assert all(p.grad is None for p in engine.teacher.parameters())
        assert not out[Keys.FEATS_ULB_T].requires_grad
        total = out[Keys.LOSS_SUP] + out[Keys.LOSS_UNSUP] + out[Keys.LOSS_RELATION]
        assert out[Keys.LOSS].item() == pytest.approx(total.item(), rel=1e-6)

    t.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    t.run()
    assert seen[Keys.LOSS_UNSUP] > 0 and seen[Keys.LOSS_RELATION] > 0
    assert all(p.grad is None for p in t.teacher.parameters())


class RecordingSRCMT(SRCMTTrainer):
    """Keeps the iteration's batch, to recompute its terms."""

    def split_batch(self, batchdata: Any) -> dict[str, torch.Tensor]:
        self.batch = super().split_batch(batchdata)
        return self.batch


def test_terms_are_the_losses_of_the_features_and_logits_of_one_forward() -> None:
    """The relation term is computed on the student's pooled features of the strong views from the very forward
    that gave the logits (recomputed here from the same weights and the same joint batch), and the consistency is
    Mean Teacher's softmax MSE."""
    t = trainer(unsup_weight=1.0, relation_weight=1.0, epoch_length=1, cls=RecordingSRCMT)

    def check(engine: RecordingSRCMT) -> None:
        out, x_lb, x_ulb_s = engine.state.output, engine.batch[Keys.X_LB], engine.batch[Keys.X_ULB_S]
        with torch.no_grad():  # train mode, as in the step: batch norm normalises by this joint batch again
            feats = densenet_features(engine.network)(torch.cat([x_lb, x_ulb_s]))[x_lb.shape[0] :]
        assert torch.allclose(out[Keys.FEATS_ULB_S], feats, atol=1e-5)
        want = relation_consistency_loss(out[Keys.FEATS_ULB_S], out[Keys.FEATS_ULB_T])
        assert out[Keys.LOSS_RELATION].item() == pytest.approx(want.item(), rel=1e-6)
        want = softmax_mse_loss(out[Keys.LOGITS_ULB_S], out[Keys.LOGITS_ULB_T])
        assert out[Keys.LOSS_UNSUP].item() == pytest.approx(want.item(), rel=1e-6)

    t.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    t.run()


def test_srcmt_schedule_at_chosen_epochs() -> None:
    """SRC-MT's w(t) = exp(-5 (1 - t/L)^2), added only from epoch ``on_from`` (here L = 4, on from epoch 2 of 5):
    the consistency and relation weights read at each epoch."""
    ramp = GatedRamp(SigmoidRamp(1.0, 4), on_from=2)
    t = trainer(data(n_ulb=4), unsup_weight=ramp, unsup_weight_every="epoch", relation_weight=ramp)
    t.state.max_epochs = 5
    seen: list[tuple[float, float]] = []
    t.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append((e.state.output[Keys.UNSUP_WEIGHT], e.state.output[Keys.RELATION_WEIGHT])),
    )
    t.run()
    want = [0.0, 0.0, math.exp(-5 * 0.5**2), math.exp(-5 * 0.25**2), 1.0]
    assert [u for u, _ in seen] == pytest.approx(want)
    assert [r for _, r in seen] == pytest.approx(want)


def test_weights_zero_is_a_supervised_step() -> None:
    t = trainer(unsup_weight=0.0, relation_weight=0.0, epoch_length=1)
    t.run()
    out = t.state.output
    assert out[Keys.LOSS].item() == pytest.approx(out[Keys.LOSS_SUP].item())
    assert out[Keys.LOSS_RELATION].item() > 0  # computed (and logged) all the same


class ReusesItsActivation(torch.nn.Module):
    """A classifier whose ``act`` runs twice per forward: not a per-image feature layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act, self.out = torch.nn.Linear(256, 8), torch.nn.ReLU(), torch.nn.Linear(8, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.act(self.fc(x.flatten(1)))))


def test_a_wrong_feature_layer_is_a_clear_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        trainer(feature_layer="nope").run()
    net = ReusesItsActivation()
    t = SRCMTTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data(),
        network=net,
        optimizer=torch.optim.Adam(net.parameters()),
        loss_function=torch.nn.CrossEntropyLoss(),
        teachers=[EMATeacher(net)],
        feature_layer="act",
    )
    with pytest.raises(RuntimeError, match="gave 8 rows for a batch of 4 images"):
        t.run()


def test_a_seeded_run_repeats_exactly() -> None:
    """Two runs with the same seed (shuffled loaders, dropout, a ramp) end with the same weights."""

    def run() -> list[torch.Tensor]:
        set_determinism(seed=0)
        t = trainer(data(shuffle=True), dropout=0.2, unsup_weight=SigmoidRamp(1.0, 2), relation_weight=1.0)
        t.state.max_epochs = 2
        t.run()
        return [p.detach().clone() for p in (*t.network.parameters(), *t.teacher.parameters())]

    try:
        a, b = run(), run()
    finally:
        set_determinism(seed=None)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
