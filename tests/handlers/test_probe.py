"""ProbeHandler: probe keys at the chosen epochs, and the training bit-identical with or without it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from s4mi.engines import MoCoTrainer
from s4mi.handlers import ContrastiveMonitor, EMATeacher, ProbeHandler
from s4mi.handlers.probe import backbone_features
from s4mi.handlers.ramps import LinearRamp
from s4mi.losses import JCLLoss
from s4mi.networks import EncoderWithHead, KeyQueue, ProjectionHead

VIEWS = ["image_q", "image_k0"]


def _encoder() -> EncoderWithHead:
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    return EncoderWithHead(backbone, ProjectionHead(4, 8, 6))


def _labelled(n: int, multilabel: bool, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        c = i % 2
        image = torch.randn(1, 8, 8, generator=g) + 2.0 * c
        label = torch.tensor([c, 1 - c, i % 3 == 0], dtype=torch.float32) if multilabel else torch.tensor(c)
        items.append({"image": image, "label": label})
    return items


def _run(tmp_path: Path | None, every: int = 2, epochs: int = 3, multilabel: bool = False, at_start: bool = False):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    items = [{v: torch.randn(1, 8, 8, generator=g) for v in VIEWS} for _ in range(12)]
    net = _encoder()
    queue = KeyQueue(6, 8)
    key = EMATeacher(net, momentum=0.9, buffers="ema_train", name="key_encoder")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer = MoCoTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=DataLoader(Dataset(items), batch_size=4, shuffle=True),  # draws from the global RNG
        network=net,
        optimizer=opt,
        loss_function=JCLLoss(temperature=0.2),
        teachers=[key],
        queue=queue,
        jcl_lambda=LinearRamp(1.0, epochs, start=-1),
        key_keys=VIEWS[1:],
    )
    handler = None
    if tmp_path is not None:
        handler = ProbeHandler(
            {"student": net, "teacher": key},
            DataLoader(Dataset(_labelled(12, multilabel, 1)), batch_size=5, shuffle=True),
            DataLoader(Dataset(_labelled(8, multilabel, 2)), batch_size=5),
            every=every,
            at_start=at_start,
            k=3,
            folder=tmp_path,
        )
        handler.attach(trainer)
        ContrastiveMonitor(tmp_path).attach(trainer)
    trainer.run()
    return trainer, net, key, queue, handler


def test_probe_logs_its_keys_at_the_chosen_epochs(tmp_path: Path) -> None:
    trainer, _, _, _, handler = _run(tmp_path)
    assert handler is not None
    assert [row["epoch"] for row in handler.history] == [2, 3]  # every 2 epochs, and the last
    names = {
        f"probe_{p}_{m}_{n}" for p in ("knn", "linear") for m in ("acc", "f1", "auc") for n in ("student", "teacher")
    }
    assert set(handler.history[0]) == {"epoch", "wall_s", *names}
    assert names <= set(trainer.state.metrics)
    assert all(0.0 <= handler.history[-1][k] <= 1.0 for k in names)
    rows = [json.loads(line) for line in (tmp_path / "probe_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2, 3]
    monitor = [json.loads(line) for line in (tmp_path / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [names <= set(r) for r in monitor] == [False, True, True]  # cleared in an epoch without a probe


def test_at_start_probes_the_initialised_networks_once(tmp_path: Path) -> None:
    trainer, _, _, _, handler = _run(tmp_path, at_start=True)
    assert handler is not None
    assert [row["epoch"] for row in handler.history] == [0, 2, 3]
    # epoch 0 is the network as initialised: the same scores as a probe of a fresh network built the same way
    torch.manual_seed(0)
    fresh = ProbeHandler(
        {"student": _encoder()},
        DataLoader(Dataset(_labelled(12, False, 1)), batch_size=5),
        DataLoader(Dataset(_labelled(8, False, 2)), batch_size=5),
        k=3,
    )
    fresh_scores = fresh.scores("cpu")
    for key, value in fresh_scores.items():
        assert handler.history[0][key] == pytest.approx(value, abs=1e-6)
    # a resumed run (epoch > 0 at STARTED) does not probe at its start
    trainer.state.max_epochs = 4
    trainer.run()
    assert [row["epoch"] for row in handler.history] == [0, 2, 3, 4]


def test_multilabel_probe_logs_mean_auc_only(tmp_path: Path) -> None:
    _, _, _, _, handler = _run(tmp_path, every=1, epochs=1, multilabel=True)
    assert handler is not None
    keys = set(handler.history[0]) - {"epoch", "wall_s"}
    assert keys == {f"probe_{p}_auc_{n}" for p in ("knn", "linear") for n in ("student", "teacher")}


def test_training_is_bit_identical_with_and_without_the_probe(tmp_path: Path) -> None:
    random.seed(0)
    np.random.seed(0)
    _, net_a, key_a, queue_a, _ = _run(None)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())
    random.seed(0)
    np.random.seed(0)
    _, net_b, key_b, queue_b, handler = _run(tmp_path)
    assert handler is not None and len(handler.history) == 2
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.random.get_rng_state(), states[2])
    for a, b in ((net_a, net_b), (key_a.ema_model, key_b.ema_model), (queue_a, queue_b)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # modes restored (the trainer sets them each iteration; after the last epoch's probe only the handler does)
    assert all(m.training for m in (*net_b.modules(), *key_b.ema_model.modules()))


def test_every_zero_disables_and_bad_batches_are_named(tmp_path: Path) -> None:
    _, _, _, _, handler = _run(tmp_path, every=0, epochs=1)
    assert handler is not None and handler.history == []
    bad = ProbeHandler({"s": _encoder()}, [{"image": torch.zeros(2, 1, 8, 8)}], [])
    with pytest.raises(KeyError, match="lacks 'image' or 'label'"):
        bad.scores("cpu")
    with pytest.raises(ValueError, match="every must be >= 0"):
        ProbeHandler({"s": _encoder()}, [], [], every=-1)


def test_backbone_features_drops_the_projection_head() -> None:
    enc = _encoder()
    assert backbone_features(enc) is enc.backbone
    assert backbone_features(EMATeacher(enc, momentum=0.9)) is not enc.backbone  # the EMA copy's backbone
