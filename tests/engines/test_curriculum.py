"""CurriculumTrainer: stages in order, each from the previous stage's backbone (bit-identical at the handover), its
own checkpoint and optimizer state, the learning rate restarted per stage, labels refused, a killed run resumed inside
the right stage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from s4mi.engines import CurriculumTrainer, LabelLeakError, StageCosine, curriculum_epochs, parse_curriculum, stage_ends
from s4mi.engines.curriculum import stage_at
from s4mi.handlers import RandomStates
from s4mi.networks import backbone_state_dict_for_classifier, curriculum_network
from tests.engines.test_src_mt import densenet

CURRICULUM = [["rotation", 2], ["jigsaw", 1], ["contrastive", 2]]


def test_parse_curriculum_forms_and_errors() -> None:
    want = [("rotation", 2), ("jigsaw", 1), ("contrastive", 2)]
    assert parse_curriculum(CURRICULUM) == want
    assert parse_curriculum("rotation:2 + jigsaw:1+contrastive:2") == want
    assert curriculum_epochs(CURRICULUM) == 5 and stage_ends(CURRICULUM) == [2, 3, 5]
    assert [stage_at(CURRICULUM, e) for e in range(6)] == [0, 0, 1, 2, 2, 2]
    for bad, match in [
        ([], "empty"),
        ("rotation", "task:epochs"),
        ([["rotation", 0]], "positive"),
        ([["rotation", "two"]], "integer"),
        ([["rotation", 1.5]], "positive integer"),
        (["rotation"], r"\[task, epochs\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_curriculum(bad)


def test_stage_cosine_restarts_at_each_stage() -> None:
    f = StageCosine([["a", 4], ["b", 2]], final=0.1)
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    expected += [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * e / 2)) for e in range(2)]
    assert [f(e) for e in range(6)] == pytest.approx(expected)
    assert f(0) == f(4) == 1.0 and f(6) == pytest.approx(0.1)


def _loader(n: int = 8, label: bool = False, shuffle: bool = True) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(n):
        item = {"image_v0": torch.rand(1, 16, 16, generator=g), "image_v1": torch.rand(1, 16, 16, generator=g)}
        if label:
            item["label"] = torch.tensor(0)
        items.append(item)
    return DataLoader(items, batch_size=4, shuffle=shuffle, generator=torch.Generator().manual_seed(2))


def _trainer(stage_dir: Path | None = None, loader: DataLoader | None = None, **kwargs: object) -> CurriculumTrainer:
    torch.manual_seed(0)
    net = curriculum_network(densenet(), CURRICULUM, {"contrastive": {"hidden_features": 16, "out_features": 8}})
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    return CurriculumTrainer(
        device="cpu",
        max_epochs=curriculum_epochs(CURRICULUM),
        train_data_loader=loader or _loader(),
        network=net,
        optimizer=opt,
        curriculum=CURRICULUM,
        stage_dir=stage_dir,
        **kwargs,  # type: ignore[arg-type]
    )


def _backbone(t: CurriculumTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone_state_dict_for_classifier(t.network).items()}


def test_stage_handover_keeps_the_backbone_bit_identical(tmp_path: Path) -> None:
    t = _trainer(tmp_path)
    ends: dict[int, dict[str, torch.Tensor]] = {}
    starts: dict[int, dict[str, torch.Tensor]] = {}
    tasks_run: list[tuple[int, str]] = []
    heads: dict[int, dict[str, torch.Tensor]] = {}

    @t.on(Events.EPOCH_COMPLETED)
    def _end(engine: CurriculumTrainer) -> None:
        ends[engine.state.epoch] = _backbone(engine)
        heads[engine.state.epoch] = {k: v.detach().clone() for k, v in engine.network.tasks.state_dict().items()}

    @t.on(Events.ITERATION_STARTED)
    def _start(engine: CurriculumTrainer) -> None:
        epoch = engine.state.epoch
        if epoch not in starts:
            starts[epoch] = _backbone(engine)
        tasks_run.append((epoch, engine.task))

    t.run()
    assert sorted({(e, task) for e, task in tasks_run}) == [
        (1, "rotation"),
        (2, "rotation"),
        (3, "jigsaw"),
        (4, "contrastive"),
        (5, "contrastive"),
    ]
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert files == ["stage0_rotation.pt", "stage1_jigsaw.pt", "stage2_contrastive.pt"]
    for stage, (end_epoch, name) in enumerate([(2, "rotation"), (3, "jigsaw")]):
        saved = torch.load(tmp_path / f"stage{stage}_{name}.pt", weights_only=True)
        nxt = starts[end_epoch + 1]  # the next stage's first step starts from exactly these weights
        assert saved.keys() == nxt.keys()
        assert all(torch.equal(saved[k], nxt[k]) and torch.equal(ends[end_epoch][k], nxt[k]) for k in saved)
    # the backbone did train in every stage
    assert not all(torch.equal(starts[1][k], ends[2][k]) for k in starts[1])
    assert not all(torch.equal(starts[4][k], ends[5][k]) for k in starts[4])
    # a head keeps its weights while another task trains
    rot = [k for k in heads[2] if k.startswith("rotation.")]
    assert rot and all(torch.equal(heads[2][k], heads[5][k]) for k in rot)
    jig = [k for k in heads[3] if k.startswith("jigsaw.head")]
    assert not all(torch.equal(heads[2][k], heads[3][k]) for k in jig)


def test_optimizer_state_is_cleared_at_each_stage_start() -> None:
    t = _trainer()
    steps: dict[int, int] = {}

    @t.on(Events.ITERATION_COMPLETED)
    def _count(engine: CurriculumTrainer) -> None:
        p = next(engine.network.backbone.parameters())
        steps.setdefault(engine.state.epoch, int(engine.optimizer.state[p]["step"]))

    t.run()
    # 2 iterations per epoch: the first step of epoch 3 (jigsaw) and 4 (contrastive) is the backbone's first again
    assert steps == {1: 1, 2: 3, 3: 1, 4: 1, 5: 3}
    kept = _trainer(reset_optimizer=False)
    steps.clear()
    kept.add_event_handler(Events.ITERATION_COMPLETED, _count)
    kept.run()
    assert steps == {1: 1, 2: 3, 3: 5, 4: 7, 5: 9}


def test_outputs_name_the_stage_and_labels_are_refused() -> None:
    t = _trainer()
    rows: list[tuple[int, float, set[str]]] = []
    t.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: rows.append((e.state.epoch, e.state.metrics["stage"], set(e.state.output))),
    )
    t.run()
    assert [r[1] for r in rows[::2]] == [0, 0, 1, 2, 2]
    assert {"loss", "loss_rotation", "rotation_acc"} <= rows[0][2]
    assert {"loss", "loss_jigsaw", "jigsaw_acc"} <= rows[4][2] and "loss_rotation" not in rows[4][2]
    with pytest.raises(LabelLeakError):
        _trainer(loader=_loader(label=True)).run()


def test_configuration_errors_are_named() -> None:
    with pytest.raises(ValueError, match="differs from the curriculum's 5 epochs"):
        CurriculumTrainer(
            device="cpu",
            max_epochs=3,
            train_data_loader=_loader(),
            network=curriculum_network(densenet(), CURRICULUM),
            optimizer=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
            curriculum=CURRICULUM,
        )
    net = curriculum_network(densenet(), [["rotation", 1]])
    with pytest.raises(ValueError, match=r"not the network's"):
        CurriculumTrainer(
            device="cpu",
            max_epochs=2,
            train_data_loader=_loader(),
            network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            curriculum="rotation:1+jigsaw:1",
        )
    net = curriculum_network(densenet(), [["contrastive", 1]])
    with pytest.raises(ValueError, match="two views"):
        CurriculumTrainer(
            device="cpu",
            max_epochs=1,
            train_data_loader=_loader(),
            network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            curriculum="contrastive:1",
            view_keys=["image_v0"],
        )


@pytest.mark.parametrize("stop", [3, 5, 8])
def test_a_run_killed_inside_a_stage_resumes_there(tmp_path: Path, stop: int) -> None:
    """Stopped after iteration ``stop`` (2 per epoch: inside the first stage, at the first step of the one-epoch
    jigsaw stage, inside the contrastive stage's last epoch) and resumed from its checkpoint (network, optimizer,
    trainer, random states and the loader's position, as the bundles save them): the right stage goes on and every
    weight ends as in an uninterrupted run. A mid-epoch resume at a stage's first epoch keeps the optimizer state
    it stepped with (only the stage's first step clears it)."""
    from s4mi.data.loaders import ResumableLoader

    def loader() -> ResumableLoader:
        return ResumableLoader(_loader(), seed=0, name="pretrain")

    full = _trainer(loader=loader())
    full.run()
    want = {k: v.detach().clone() for k, v in full.network.state_dict().items()}

    first_loader = loader()
    first = _trainer(loader=first_loader)
    rng = RandomStates()
    saved: dict = {}

    @first.on(Events.ITERATION_COMPLETED(once=stop))
    def _stop(engine: CurriculumTrainer) -> None:
        saved.update(
            network={k: v.clone() for k, v in engine.network.state_dict().items()},
            optimizer=engine.optimizer.state_dict(),
            trainer=engine.state_dict(),
            loader=first_loader.state_dict(),
            rng=rng.state_dict(),
        )
        engine.terminate()

    first.run()
    torch.save(saved, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    second_loader = loader()
    second = _trainer(loader=second_loader)
    second_loader.load_state_dict(saved["loader"])
    second.network.load_state_dict(saved["network"])
    second.optimizer.load_state_dict(saved["optimizer"])
    second.load_state_dict(saved["trainer"])
    RandomStates().load_state_dict(saved["rng"])
    tasks: list[str] = []
    second.add_event_handler(Events.ITERATION_STARTED, lambda e: tasks.append(e.task))
    second.run()
    stages = ["rotation"] * 4 + ["jigsaw"] * 2 + ["contrastive"] * 4
    assert tasks == stages[stop:]
    got = second.network.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])][:3]
