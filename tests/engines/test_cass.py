"""CASSTrainer: the step's loss, both networks learn, labels refused, a seeded run repeats exactly."""

from __future__ import annotations

import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.networks.nets import DenseNet
from torch.utils.data import DataLoader

from s4mi.engines import CASSTrainer, LabelLeakError
from s4mi.losses import CASSLoss
from s4mi.networks import CASSPair, CropViT


def _pair() -> CASSPair:
    cnn = DenseNet(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(2, 2))
    vit = CropViT(in_channels=1, img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
    return CASSPair(cnn, vit, torch.nn.Linear(cnn.class_layers.out.in_features, 8), torch.nn.Linear(16, 8))


def _loader(n: int = 8, label: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    items = [{"image": torch.rand(1, 16, 16, generator=g)} for _ in range(n)]
    if label:
        for item in items:
            item["label"] = torch.tensor(0)
    return DataLoader(items, batch_size=4, shuffle=True)  # the order follows the global seed


def _trainer(seed: int = 0, loader: DataLoader | None = None, **kw) -> CASSTrainer:
    torch.manual_seed(seed)
    pair = _pair()
    return CASSTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=_loader() if loader is None else loader,
        network=pair,
        optimizer=torch.optim.Adam(pair.param_groups(), lr=1e-3),
        **kw,
    )


def test_step_loss_is_cass_loss_and_both_networks_learn() -> None:
    trainer = _trainer(epoch_length=1)
    pair = trainer.network
    seen = []

    def check(engine: CASSTrainer) -> None:
        out = engine.state.output
        assert out["loss"].item() == pytest.approx(CASSLoss()(out["cnn_out"], out["vit_out"]).item(), rel=1e-6)
        assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
        assert out["cnn_out"].shape == out["vit_out"].shape == (4, 8)
        assert out["cnn_out"].requires_grad and out["vit_out"].requires_grad  # neither side detached
        seen.append(out["loss"].item())

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    before = {k: v.clone() for k, v in pair.state_dict().items()}
    trainer.run()
    assert len(seen) == 1
    for part in ("cnn", "vit", "cnn_head", "vit_head"):
        params = [(n, p) for n, p in pair.named_parameters() if n.split(".")[0] == part and p.requires_grad]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), part
        assert any(not torch.equal(p.detach(), before[n]) for n, p in params), f"{part} did not change"


def test_labels_are_refused() -> None:
    with pytest.raises(LabelLeakError, match="label"):
        _trainer(loader=_loader(label=True)).run()


def test_optimizer_must_hold_both_networks() -> None:
    pair = _pair()
    with pytest.raises(ValueError, match="leaves out"):
        CASSTrainer(
            device="cpu",
            max_epochs=1,
            train_data_loader=_loader(),
            network=pair,
            optimizer=torch.optim.Adam(pair.param_groups()[0]["params"], lr=1e-3),
        )


def test_image_key_and_loss_are_settings() -> None:
    g = torch.Generator().manual_seed(2)
    loader = [{"view": torch.rand(2, 1, 16, 16, generator=g)}]
    calls = []

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape, y.shape))
        return CASSLoss()(x, y)

    _trainer(loader=loader, image_key="view", loss_function=loss).run()  # type: ignore[arg-type]
    assert calls == [(torch.Size([2, 8]), torch.Size([2, 8]))]
    with pytest.raises(KeyError, match="view"):
        _trainer(loader=_loader(), image_key="view").run()


def test_a_seeded_run_repeats_exactly() -> None:
    def run(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        trainer = _trainer(seed)
        losses: list[float] = []
        trainer.add_event_handler(
            IterationEvents.MODEL_COMPLETED, lambda e: losses.append(e.state.output["loss"].item())
        )
        trainer.run()
        assert trainer.state.iteration == 2
        return losses, trainer.network.state_dict()

    (losses_a, state_a), (losses_b, state_b), (losses_c, _) = run(0), run(0), run(1)
    assert losses_a == losses_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert losses_a != losses_c
