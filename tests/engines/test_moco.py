"""MoCoTrainer (MoCo v2 / JCL pretraining): the same maths as a plain PyTorch loop, lambda ramp, guards, resume."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader
from monai.transforms import Compose, RandGaussianNoised

from s4mi.data.loaders import ResumableLoader
from s4mi.engines import LabelLeakError, MoCoTrainer
from s4mi.handlers import EMATeacher, RandomStates, ResumeSaver, latest_checkpoint
from s4mi.handlers.ramps import LinearRamp
from s4mi.losses import JCLLoss, jcl_loss
from s4mi.networks import EncoderWithHead, KeyQueue, ProjectionHead

B, N, DIM, QSIZE, M_KEY = 4, 12, 6, 10, 0.9  # 3 iterations per epoch; the queue wraps in the second epoch
VIEWS = ["image_q", "image_k0", "image_k1"]


def _encoder() -> EncoderWithHead:
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    return EncoderWithHead(backbone, ProjectionHead(4, 8, DIM))


def _items(n: int = N, label: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    items = []
    for _ in range(n):
        base = torch.randn(1, 8, 8, generator=g)
        item = {v: base + 0.3 * torch.randn(1, 8, 8, generator=g) for v in VIEWS}
        if label:
            item["label"] = torch.tensor([1.0])
        items.append(item)
    return items


def _build(
    epochs: int = 2, splits: int = 2, items: list[dict] | None = None, resumable: bool = False, init: int = 0
) -> tuple[MoCoTrainer, dict]:
    torch.manual_seed(init)
    seed = 0
    net = _encoder()
    queue = KeyQueue(DIM, QSIZE)
    transform = Compose([RandGaussianNoised(keys=VIEWS, prob=1.0, std=0.05)]) if resumable else None
    loader: DataLoader | ResumableLoader = DataLoader(
        Dataset(items or _items(), transform), batch_size=B, shuffle=resumable
    )
    if resumable:
        loader = ResumableLoader(loader, seed=seed, name="pretrain")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    key_encoder = EMATeacher(net, momentum=M_KEY, buffers="ema_train", name="key_encoder")
    trainer = MoCoTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=JCLLoss(temperature=0.2),
        teachers=[key_encoder],
        queue=queue,
        jcl_lambda=LinearRamp(2.0, epochs, start=-1),
        key_keys=VIEWS[1:],
        shuffle_splits=splits,
    )
    save = {"model": net, "key_encoder": key_encoder, "queue": queue, "optimizer": opt, "trainer": trainer}
    if resumable:
        save.update(loader=loader, rng=RandomStates())
    return trainer, save


def test_iteration_equals_a_plain_pytorch_moco_jcl_loop() -> None:
    """Three iterations through the engine give the weights, key encoder and queue of a hand-written loop."""
    trainer, save = _build(epochs=1, splits=1)
    net0 = copy.deepcopy(save["model"])
    queue0 = save["queue"].queue.clone()
    trainer.run()

    net, key = net0, copy.deepcopy(net0)
    key.requires_grad_(False)
    queue = queue0.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    ptr = 0
    for start in range(0, N, B):
        batch = _items()[start : start + B]
        x_q = torch.stack([b["image_q"] for b in batch])
        net.train()
        key.train()
        q = net(x_q)
        with torch.no_grad():
            keys = torch.stack([key(torch.stack([b[v] for b in batch])) for v in VIEWS[1:]], dim=1)
        lam = 2.0 * (0 + 1) / 1  # epoch 0 of 1: lambda = 2 (e + 1) / E
        loss = jcl_loss(q, keys, queue.clone(), lam, temperature=0.2)
        for row in keys.mean(dim=1):
            queue[ptr % QSIZE] = row
            ptr += 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        m = M_KEY  # no warm-up: the key encoder's m at every step
        with torch.no_grad():
            for pk, pq in zip(key.parameters(), net.parameters(), strict=True):
                pk.mul_(m).add_(pq, alpha=1 - m)

    for a, b in zip(save["model"].parameters(), net.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), "query encoder differs from the plain loop"
    for a, b in zip(trainer.teacher.parameters(), key.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), "key encoder differs from the plain loop"
    assert torch.allclose(save["queue"].queue, queue, atol=1e-5), "queue differs from the plain loop"
    assert int(save["queue"].ptr) == N % QSIZE


def test_losses_gradients_and_lambda_ramp() -> None:
    trainer, save = _build(epochs=4, splits=2)
    seen: list[tuple[int, float]] = []
    grads: list[bool] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _(engine: MoCoTrainer) -> None:
        out = engine.state.output
        seen.append((engine.state.epoch, out["jcl_lambda"]))
        assert torch.isfinite(out["loss"]) and out["loss"] > 0
        assert out["q"].shape == (B, DIM) and out["keys"].shape == (B, 2, DIM)
        assert torch.allclose(out["q"].norm(dim=1), torch.ones(B), atol=1e-5)
        grads.append(all(p.grad is None for p in engine.teacher.parameters()))

    @trainer.on(Events.ITERATION_COMPLETED(once=1))
    def _student_has_grad(engine: MoCoTrainer) -> None:
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in engine.network.parameters())

    trainer.run()
    per_epoch = {e: lam for e, lam in seen}
    assert per_epoch == pytest.approx({1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0}), "lambda = 2 (epoch + 1) / epochs"
    assert all(grads) and not any(p.requires_grad for p in trainer.teacher.parameters())
    assert trainer.teacher.training, "the key encoder runs in train mode (shuffle-BN on batch statistics)"


def test_key_encoder_moves_by_the_ema() -> None:
    """After one step the key encoder is m * initial + (1 - m) * the stepped query encoder, exactly."""
    trainer, save = _build(epochs=1)
    initial = [p.detach().clone() for p in save["model"].parameters()]

    @trainer.on(Events.ITERATION_COMPLETED(once=1))
    def _(engine: MoCoTrainer) -> None:
        for k, q0, q1 in zip(engine.teacher.parameters(), initial, engine.network.parameters(), strict=True):
            assert torch.allclose(k, M_KEY * q0 + (1 - M_KEY) * q1, atol=1e-6)
        engine.terminate()

    trainer.run()


def test_labels_in_a_pretraining_batch_raise() -> None:
    trainer, _ = _build(epochs=1, items=_items(label=True))
    with pytest.raises(LabelLeakError, match="label"):
        trainer.run()


def test_missing_view_is_named() -> None:
    items = [{k: v for k, v in it.items() if k != "image_k1"} for it in _items()]
    trainer, _ = _build(epochs=1, items=items)
    with pytest.raises(KeyError, match="image_k1"):
        trainer.run()


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    full, full_save = _build(epochs=2, resumable=True)
    full.run()

    killed, save = _build(epochs=2, resumable=True)
    ResumeSaver(str(tmp_path), save, every_n_iterations=2).attach(killed)

    @killed.on(Events.ITERATION_COMPLETED(once=5))
    def _(_: MoCoTrainer) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        killed.run()
    resumed, resumed_save = _build(epochs=2, resumable=True, init=1)  # other init: everything must come from disk
    CheckpointLoader(load_path=latest_checkpoint(tmp_path), load_dict=resumed_save, map_location="cpu").attach(resumed)
    resumed.run()
    assert resumed.state.iteration == full.state.iteration == 6
    for name in ("model", "queue"):
        for a, b in zip(resumed_save[name].state_dict().values(), full_save[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(resumed.teacher.state_dict().values(), full.teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b), "key encoder differs after resume"


class _ToyViews(torch.utils.data.Dataset):
    """256 random images; every view is its image plus fresh noise, so instances are told apart by content."""

    def __init__(self, m: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.base = [torch.randn(1, 16, 16, generator=g) for _ in range(256)]
        self.names = ["image_q"] + [f"image_k{i}" for i in range(m)]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {n: self.base[i] + 0.5 * torch.randn(1, 16, 16) for n in self.names}


@pytest.mark.slow
def test_jcl_pretraining_learns_instance_discrimination() -> None:
    """Sanity: on a toy problem the loss falls well below chance and different images stop sharing an embedding."""
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
    )
    net = EncoderWithHead(backbone, ProjectionHead(128, 128, 32))
    key = EMATeacher(net, momentum=0.99, buffers="ema_train", name="key_encoder")
    queue = KeyQueue(32, 128)
    trainer = MoCoTrainer(
        device="cpu",
        max_epochs=12,
        train_data_loader=torch.utils.data.DataLoader(_ToyViews(2), batch_size=32, shuffle=True, drop_last=True),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4),
        loss_function=JCLLoss(temperature=0.2),
        teachers=[key],
        queue=queue,
        jcl_lambda=LinearRamp(2.0, 12, start=-1),
        key_keys=["image_k0", "image_k1"],
    )
    history: list[tuple[float, float]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _(engine: MoCoTrainer) -> None:
        q = engine.state.output["q"].detach()
        b = q.shape[0]
        neg = float(((q @ q.T).sum() - b) / (b * (b - 1)))
        history.append((float(engine.state.output["loss"]), neg))

    trainer.run()
    chance = float(torch.log(torch.tensor(128.0 + 1)))
    first_full_queue, last = history[4:12], history[-8:]
    loss_last = sum(x[0] for x in last) / len(last)
    assert loss_last < 0.7 * chance, f"loss {loss_last:.2f} vs chance {chance:.2f}"
    assert sum(x[0] for x in first_full_queue) / 8 > loss_last
    assert sum(x[1] for x in last) / len(last) < 0.3, "different images still share one embedding"
