"""SimCLRTrainer: the step's loss is NT-Xent of the two views' projections, views paired right, labels refused, a
seeded run repeats exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.losses import ContrastiveLoss
from monai.utils import set_determinism
from torch.utils.data import DataLoader

from s4mi.engines import Keys, LabelLeakError, SimCLRTrainer
from s4mi.handlers import ContrastiveMonitor
from s4mi.networks import EncoderWithHead, ProjectionHead
from tests.engines.test_src_mt import densenet


def _loader(n: int = 8, same: bool = False, label: bool = False, shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(n):
        x = torch.rand(1, 16, 16, generator=g)
        item = {"image_v0": x, "image_v1": x.clone() if same else torch.rand(1, 16, 16, generator=g)}
        if label:
            item["label"] = torch.tensor(0)
        items.append(item)
    return DataLoader(items, batch_size=4, shuffle=shuffle)


def _trainer(loader: DataLoader, **kwargs: object) -> SimCLRTrainer:
    torch.manual_seed(0)
    encoder = EncoderWithHead(densenet(), ProjectionHead(16, 16, 8, norm="batch"))
    return SimCLRTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=encoder,
        optimizer=torch.optim.Adam(encoder.parameters(), lr=1e-3),
        **kwargs,  # type: ignore[arg-type]
    )


def test_loss_is_nt_xent_of_the_two_views_and_the_encoder_learns() -> None:
    t = _trainer(_loader(), temperature=0.2, epoch_length=1)
    seen: list[float] = []

    def check(engine: SimCLRTrainer) -> None:
        out = engine.state.output
        assert out[Keys.Z_1].shape == out[Keys.Z_2].shape == (4, 8)
        assert out[Keys.Z_1].requires_grad and out[Keys.Z_2].requires_grad  # both views learn
        want = ContrastiveLoss(0.2)(out[Keys.Z_1], out[Keys.Z_2])
        assert torch.isfinite(out[Keys.LOSS]) and out[Keys.LOSS].item() == pytest.approx(want.item(), rel=1e-6)
        seen.append(out[Keys.LOSS].item())

    t.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    before = [p.detach().clone() for p in t.network.parameters()]
    t.run()
    assert seen and seen[0] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, t.network.parameters()))


def test_each_view_faces_its_pair() -> None:
    """Equal views give equal projections row by row (one forward over both views: batch norm treats equal inputs
    alike), so the positives are each image's own other view."""
    t = _trainer(_loader(same=True), epoch_length=1)
    t.add_event_handler(
        IterationEvents.FORWARD_COMPLETED,
        lambda e: torch.testing.assert_close(e.state.output[Keys.Z_1], e.state.output[Keys.Z_2]),
    )
    t.run()


def test_labels_and_missing_views_are_refused() -> None:
    with pytest.raises(LabelLeakError):
        _trainer(_loader(label=True)).run()
    with pytest.raises(KeyError, match="image_v2"):
        _trainer(_loader(), view_keys=("image_v0", "image_v2")).run()
    with pytest.raises(ValueError, match="two views"):
        _trainer(_loader(), view_keys=("image_v0",))


def test_a_seeded_run_repeats_exactly() -> None:
    def run() -> list[torch.Tensor]:
        set_determinism(seed=0)
        t = _trainer(_loader(shuffle=True))
        t.state.max_epochs = 2
        t.run()
        return [p.detach().clone() for p in t.network.parameters()]

    try:
        a, b = run(), run()
    finally:
        set_determinism(seed=None)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_contrastive_monitor_reads_the_two_views(tmp_path: Path) -> None:
    """ContrastiveMonitor on SimCLR's z_1 and z_2: equal views agree fully (pos_cosine 1), and a row per epoch."""
    t = _trainer(_loader(same=True))
    ContrastiveMonitor(tmp_path, query_key=Keys.Z_1, key_key=Keys.Z_2, normalize=True).attach(t)
    t.run()
    (row,) = [json.loads(line) for line in (tmp_path / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert row["epoch"] == 1 and row["loss"] > 0
    assert row["pos_cosine"] == pytest.approx(1.0, abs=1e-5) and row["neg_cosine"] < 1.0
    assert 0.0 <= row["collapse"] <= 1.0
