"""SRCL joint engine: every loss term finite and non-zero, the student (and head) learn from each unlabelled term and
the teacher from none, the views are paired right, the head must be optimised, the weights' ramps, a seeded run
repeats exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.losses import ContrastiveLoss
from monai.utils import set_determinism

from s4mi.data.loaders import SemiSupervisedLoader
from s4mi.engines import Keys, SRCLTrainer
from s4mi.handlers import EMATeacher, GatedRamp, SigmoidRamp
from s4mi.networks import ProjectionHead
from tests.engines.test_src_mt import data, densenet, student_gradient

FEATURES = 16  # the pooled features of test_src_mt's DenseNet


def trainer(loader: SemiSupervisedLoader | None = None, dropout: float = 0.0, **kwargs: Any) -> SRCLTrainer:
    torch.manual_seed(0)
    net = densenet(dropout)
    head = ProjectionHead(FEATURES, 16, 8, norm="batch")
    optimizer = kwargs.pop("optimizer", None) or torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    return SRCLTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data(lb_strong=True) if loader is None else loader,
        network=net,
        optimizer=optimizer,
        loss_function=torch.nn.CrossEntropyLoss(),
        teachers=[EMATeacher(net, momentum=0.99, warmup="srcmt")],
        head=head,
        **kwargs,
    )


def test_every_term_finite_nonzero_and_who_learns_from_which() -> None:
    t = trainer(unsup_weight=1.0, relation_weight=1.0, contrastive_weight=1.0, epoch_length=1)
    seen: dict[str, float] = {}

    def check(engine: SRCLTrainer) -> None:
        out = engine.state.output
        for k in (Keys.LOSS_SUP, Keys.LOSS_UNSUP, Keys.LOSS_RELATION, Keys.LOSS_CONTRASTIVE, Keys.LOSS):
            assert torch.isfinite(out[k]) and out[k].item() > 0, k
        for k in (Keys.LOSS_UNSUP, Keys.LOSS_RELATION, Keys.LOSS_CONTRASTIVE):
            seen[k] = student_gradient(engine, k)
        head = list(engine.head.parameters())
        grads = torch.autograd.grad(out[Keys.LOSS_CONTRASTIVE], head, retain_graph=True)
        seen["head"] = float(sum(g.abs().sum() for g in grads))
        assert all(p.grad is None for p in engine.teacher.parameters())
        assert not any(p.requires_grad for p in engine.teacher.parameters())
        # 4 labelled + 4 unlabelled images, each in both views
        assert out[Keys.Z_1].shape == out[Keys.Z_2].shape == (8, 8)
        want = ContrastiveLoss(0.5)(out[Keys.Z_1], out[Keys.Z_2])
        assert out[Keys.LOSS_CONTRASTIVE].item() == pytest.approx(want.item(), rel=1e-6)
        parts = (Keys.LOSS_SUP, Keys.LOSS_UNSUP, Keys.LOSS_RELATION, Keys.LOSS_CONTRASTIVE)
        assert out[Keys.LOSS].item() == pytest.approx(sum(out[k].item() for k in parts), rel=1e-6)

    t.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    t.run()
    assert all(seen[k] > 0 for k in (Keys.LOSS_UNSUP, Keys.LOSS_RELATION, Keys.LOSS_CONTRASTIVE, "head")), seen
    assert all(p.grad is None for p in t.teacher.parameters())


@pytest.mark.parametrize("contrast_labeled", [True, False])
def test_each_image_is_paired_with_its_own_other_view(contrast_labeled: bool) -> None:
    """With views equal to their images (and no dropout), each row of z_1 equals the same row of z_2: the
    projections of an image's two views face each other (batch norm treats equal inputs alike)."""
    t = trainer(data(lb_strong=True, noise=0.0), contrast_labeled=contrast_labeled, epoch_length=1)
    seen: list[torch.Tensor] = []
    t.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(e.state.output[Keys.Z_1]))
    t.add_event_handler(
        IterationEvents.FORWARD_COMPLETED,
        lambda e: torch.testing.assert_close(e.state.output[Keys.Z_1], e.state.output[Keys.Z_2], atol=1e-5, rtol=1e-5),
    )
    with pytest.warns(UserWarning, match="identical"):
        t.run()
    assert seen[0].shape[0] == (8 if contrast_labeled else 4)
    assert len({tuple(row.tolist()) for row in seen[0].round(decimals=4)}) == seen[0].shape[0]  # distinct images


def test_the_labelled_strong_view_and_the_head_in_the_optimizer_are_required() -> None:
    with pytest.raises(KeyError, match="contrast_labeled=False"):
        trainer(data(lb_strong=False)).run()
    trainer(data(lb_strong=False), contrast_labeled=False, epoch_length=1).run()  # the unlabelled views alone
    torch.manual_seed(0)
    net = densenet()
    with pytest.raises(ValueError, match="projection head"):
        trainer(optimizer=torch.optim.Adam(net.parameters()))


def test_weights_at_chosen_epochs() -> None:
    """SRC-MT's gated sigmoid for the consistency and relation weights, a constant for the contrastive
    one from epoch 0 (the pretext task needs no teacher), read at each of 4 epochs."""
    gated = GatedRamp(SigmoidRamp(2.0, 3), on_from=1)
    t = trainer(
        data(n_ulb=4, lb_strong=True),
        unsup_weight=gated,
        unsup_weight_every="epoch",
        relation_weight=gated,
        contrastive_weight=SigmoidRamp(0.5, 0),
    )
    t.state.max_epochs = 4
    seen: list[tuple[float, float, float]] = []
    keys = (Keys.UNSUP_WEIGHT, Keys.RELATION_WEIGHT, Keys.CONTRASTIVE_WEIGHT)
    t.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(tuple(e.state.output[k] for k in keys)))
    t.run()
    w = [0.0, 2 * math.exp(-5 * (2 / 3) ** 2), 2 * math.exp(-5 * (1 / 3) ** 2), 2.0]
    assert [s[0] for s in seen] == pytest.approx(w)
    assert [s[1] for s in seen] == pytest.approx(w)
    assert [s[2] for s in seen] == pytest.approx([0.5] * 4)


def test_a_seeded_run_repeats_exactly() -> None:
    def run() -> list[torch.Tensor]:
        set_determinism(seed=0)
        t = trainer(data(lb_strong=True, shuffle=True), dropout=0.2)
        t.state.max_epochs = 2
        t.run()
        return [p.detach().clone() for p in (*t.network.parameters(), *t.head.parameters(), *t.teacher.parameters())]

    try:
        a, b = run(), run()
    finally:
        set_determinism(seed=None)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
