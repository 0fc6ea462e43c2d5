"""SSLTrainer, the base of every s4mi trainer: MONAI's schedule, prepare_batch, to_kwargs, compile, named weights."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.data import MetaTensor
from monai.engines import PrepareBatchDefault, SupervisedTrainer
from monai.engines.utils import IterationEvents

from s4mi.engines import FullySupervisedTrainer, SSLTrainer
from s4mi.keys import Keys


class _SupervisedStep(SSLTrainer):
    """The plainest method: MONAI's supervised step, written as an SSLTrainer step."""

    def split_batch(self, batchdata):
        x, y = self.prepare_stream(batchdata, "image", "label", "training")
        return {Keys.X_LB: x, Keys.Y_LB: y}

    def initial_output(self, batch):
        return {Keys.IMAGE: batch[Keys.X_LB], Keys.LABEL: batch[Keys.Y_LB]}

    def train_step(self, engine, batch):
        out = engine.state.output
        out[Keys.PRED] = engine.inferer(batch[Keys.X_LB], engine.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        out[Keys.LOSS] = engine.loss_function(out[Keys.PRED], batch[Keys.Y_LB]).mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)


def _data(n: int = 7) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 3, generator=g), "label": torch.rand(2, 1, generator=g)} for _ in range(n)]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _run(cls: type, data: list, **kwargs) -> tuple[torch.nn.Module, list]:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer = cls(
        device="cpu",
        max_epochs=2,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        decollate=False,
        **kwargs,
    )
    losses: list = []
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED, lambda e: losses.append(e.state.output[Keys.LOSS].item())
    )
    trainer.run()
    return net, losses


@pytest.mark.parametrize("cls", [_SupervisedStep, FullySupervisedTrainer])
@pytest.mark.parametrize("epoch_length", [None, 7, 5])
@pytest.mark.parametrize("accumulation_steps", [1, 3])
def test_iteration_matches_monai_step_for_step(accumulation_steps: int, epoch_length: int | None, cls: type) -> None:
    """Gradient accumulation (window of 3 over 7 or 5 iterations an epoch: the last window is cut short), zeroing
    and stepping give MONAI SupervisedTrainer's weights exactly (the package's FullySupervisedTrainer too)."""
    data = _data()
    kw = {"accumulation_steps": accumulation_steps, "epoch_length": epoch_length}
    ours, ours_losses = _run(cls, data, **kw)
    monai, monai_losses = _run(SupervisedTrainer, data, **kw)
    assert ours_losses == monai_losses
    for a, b in zip(ours.parameters(), monai.parameters(), strict=True):
        assert torch.equal(a, b)
    if accumulation_steps > 1:  # the schedule matters: a plain step each iteration ends elsewhere
        plain, _ = _run(_SupervisedStep, data, epoch_length=epoch_length)
        assert not all(torch.equal(a, b) for a, b in zip(ours.parameters(), plain.parameters(), strict=True))


def test_custom_prepare_batch_and_to_kwargs_are_used() -> None:
    class Doubling(PrepareBatchDefault):
        def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
            image, label = super().__call__(batchdata, device, non_blocking, **kwargs)
            return image * 2, label

    data = [{"image": torch.rand(2, 3, 4, 4), "label": torch.rand(2, 1, 1, 1)} for _ in range(2)]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1))
    seen: list = []
    trainer = _SupervisedStep(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        prepare_batch=Doubling(),
        to_kwargs={"memory_format": torch.channels_last},
    )
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(e.state.output[Keys.IMAGE]))
    trainer.run()
    assert torch.equal(seen[0], data[0]["image"] * 2)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert not data[0]["image"].is_contiguous(memory_format=torch.channels_last)


def test_prepare_batch_with_extra_inputs_is_refused() -> None:
    def extra(batchdata, device=None, non_blocking=False, **kwargs):
        return batchdata["image"], batchdata["label"], (), {"mode": 1}

    with pytest.raises(ValueError, match="returned 4 items for the training batch"):
        _run(_SupervisedStep, _data(2), prepare_batch=extra)


def test_compile_runs_the_compiled_network_on_plain_tensors() -> None:
    data = [{"image": MetaTensor(torch.rand(2, 3)), "label": torch.rand(2, 1)} for _ in range(2)]
    seen: list = []
    net = _net()
    trainer = _SupervisedStep(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        compile=True,
        compile_kwargs={"backend": "eager"},
    )
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(e.state.output[Keys.IMAGE]))
    before = copy.deepcopy(net.state_dict())
    trainer.run()
    assert isinstance(trainer.network, torch._dynamo.eval_frame.OptimizedModule)
    assert type(seen[0]) is torch.Tensor  # the MetaTensor reached the compiled network as a plain tensor
    assert not torch.equal(before["0.weight"], net.state_dict()["0.weight"])  # the original module was trained


def test_weights_are_scheduled_by_name() -> None:
    from s4mi.handlers.ramps import LinearRamp

    seen: list = []
    net = _net()
    trainer = _SupervisedStep(
        device="cpu",
        max_epochs=3,
        train_data_loader=_data(2),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
    )
    trainer.schedule("lam", LinearRamp(1.0, 2), every="epoch")
    trainer.schedule("beta", 0.3)
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED, lambda e: seen.append((e.scheduled("lam"), e.state.beta))
    )
    trainer.run()
    assert [s[0] for s in seen] == [LinearRamp(1.0, 2)(t) for t in (0, 0, 1, 1, 2, 2)]
    assert all(s[1] == 0.3 for s in seen)
    assert set(trainer.schedulers) == {"lam"}
    assert not hasattr(trainer.state, Keys.UNSUP_WEIGHT)  # no stand-in weight of another method


class _CrossTeach(SSLTrainer):
    """Two students that teach each other (cross teaching's shape): one ModuleDict, one optimizer."""

    def split_batch(self, batchdata):
        x, y = self.prepare_stream(batchdata, "image", "label", "training")
        return {Keys.X_LB: x, Keys.Y_LB: y}

    def train_step(self, engine, batch):
        x, y = batch[Keys.X_LB], batch[Keys.Y_LB]
        pa, pb = engine.network["a"](x), engine.network["b"](x)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = (pa - y).pow(2).mean() + (pb - y).pow(2).mean()
        loss = loss + (pa - pb.detach()).pow(2).mean() + (pb - pa.detach()).pow(2).mean()
        engine.state.output.update({Keys.PRED: pa, Keys.LOSS: loss})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)


def test_two_networks_teach_each_other_through_the_base() -> None:
    nets = torch.nn.ModuleDict({"a": _net(), "b": torch.nn.Linear(3, 1)})
    opt = torch.optim.SGD([{"params": nets["a"].parameters()}, {"params": nets["b"].parameters(), "lr": 0.05}], lr=0.1)
    before = copy.deepcopy(nets.state_dict())
    _CrossTeach(
        device="cpu", max_epochs=1, train_data_loader=_data(3), network=nets, optimizer=opt, loss_function=None
    ).run()
    after = nets.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in ("a.0.weight", "b.weight"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_autocasts_on_the_cpu(dtype: torch.dtype) -> None:
    """``amp`` on a CPU trainer runs the forward under CPU autocast in the asked dtype (MONAI's trainers autocast
    "cuda" only, which leaves a CPU run in float32); the weights stay float32 and no CUDA gradient scaler is used."""
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.nn.Linear(2, 2)(torch.rand(1, 2))
    except RuntimeError as e:  # a PyTorch build without CPU autocast for this dtype
        pytest.skip(f"CPU autocast in {dtype} unsupported here: {e}")
    data = [{"image": torch.rand(4, 1, 8, 8), "label": torch.rand(4, 1)} for _ in range(3)]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 1))
    seen: list[torch.dtype] = []
    trainer = FullySupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        amp=True,
        amp_kwargs={"dtype": dtype},
    )
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(e.state.output[Keys.PRED].dtype))
    before = copy.deepcopy(net.state_dict())
    trainer.run()
    assert seen == [dtype] * 3
    assert trainer.scaler is None
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert not torch.equal(before["0.weight"], net.state_dict()["0.weight"])
    plain = _run(_SupervisedStep, _data(2))[1]
    assert all(torch.isfinite(torch.tensor(plain)))


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "scaled"), [(torch.float16, True), (torch.bfloat16, False)])
def test_cuda_amp_scales_float16_only(dtype: torch.dtype, scaled: bool) -> None:
    """On CUDA a gradient scaler guards float16 steps; bfloat16 needs none (MONAI makes one for any dtype, and it
    synchronises the GPU at every step)."""
    data = [{"image": torch.rand(4, 3), "label": torch.rand(4, 1)} for _ in range(2)]
    net = _net().cuda()
    trainer = FullySupervisedTrainer(
        device="cuda",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        amp=True,
        amp_kwargs={"dtype": dtype},
    )
    trainer.run()
    assert (trainer.scaler is not None) is scaled
    assert all(torch.isfinite(p).all() for p in net.parameters())
