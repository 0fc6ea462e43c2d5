from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from s4mi.handlers.ramps import (
    ConstantRamp,
    CosineRampDown,
    GatedRamp,
    LinearRamp,
    Ramp,
    RampHandler,
    SigmoidRamp,
    attach_ramp,
    ramp_from_config,
)


def test_sigmoid_ramp_values() -> None:
    r = SigmoidRamp(1.0, 10)
    assert r(5) == pytest.approx(math.exp(-5 * 0.25))
    assert r(0) == pytest.approx(math.exp(-5))
    assert r(10) == r(100) == 1.0
    assert r(-1) == 0.0
    shifted = SigmoidRamp(2.0, 10, start=5)
    assert shifted(4) == 0.0
    assert shifted(5) == pytest.approx(2 * math.exp(-5))
    assert shifted(10) == pytest.approx(2 * math.exp(-5 * 0.25))
    assert shifted(15) == shifted(99) == 2.0
    assert SigmoidRamp(3.0, 0, start=2)(1) == 0.0
    assert SigmoidRamp(3.0, 0, start=2)(2) == 3.0


def test_linear_ramp_values() -> None:
    r = LinearRamp(1.0, 4)
    assert [r(t) for t in range(-1, 7)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    shifted = LinearRamp(2.0, 4, start=2)
    assert [shifted(t) for t in (0, 1, 2, 4, 6, 10)] == [0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
    # S2MTS2: w = epoch / epochs and the JCL lambda = 2 (epoch + 1) / epochs
    assert [LinearRamp(1.0, 100)(e) for e in range(100)] == pytest.approx([e / 100 for e in range(100)])
    assert [LinearRamp(2.0, 100, start=-1)(e) for e in range(100)] == pytest.approx(
        [2 * (e + 1) / 100 for e in range(100)]
    )
    assert LinearRamp(3.0, 0, start=2)(1) == 0.0
    assert LinearRamp(3.0, 0, start=2)(2) == 3.0


def test_constant_and_cosine_ramps() -> None:
    assert [ConstantRamp(0.3)(t) for t in (-5, 0, 10**6)] == [0.3, 0.3, 0.3]
    r = CosineRampDown(1.0, 10, start=3)
    assert r(0) == r(3) == 1.0
    assert r(8) == pytest.approx(0.5)
    assert r(13) == pytest.approx(0.0, abs=1e-15)
    assert r(100) == pytest.approx(0.0, abs=1e-15)


def _srcmt_sigmoid_rampup(current: float, rampup_length: float) -> float:
    """SRC-MT's / Mean Teacher's ramps.sigmoid_rampup."""
    if rampup_length == 0:
        return 1.0
    current = min(max(current, 0.0), rampup_length)
    phase = 1.0 - current / rampup_length
    return math.exp(-5.0 * phase * phase)


def test_gated_ramp_reproduces_srcmt_delayed_start() -> None:
    ramp = ramp_from_config("sigmoid", 1.0, 30, on_from=21)
    assert isinstance(ramp, GatedRamp)
    # SRC-MT adds the consistency terms, weighted by sigmoid_rampup(epoch, 30), only `if epoch > 20`
    expected = [_srcmt_sigmoid_rampup(e, 30) if e > 20 else 0.0 for e in range(100)]
    assert [ramp(e) for e in range(100)] == pytest.approx(expected, abs=1e-15)
    assert ramp(20) == 0.0
    assert ramp(21) == pytest.approx(math.exp(-5 * 0.3**2))
    # a shifted start is a different schedule
    assert SigmoidRamp(1.0, 30, start=21)(21) == pytest.approx(math.exp(-5))


def test_ramp_from_config() -> None:
    assert ramp_from_config("constant", 0.5) == ConstantRamp(0.5)
    assert ramp_from_config("linear", 1.0, 10, start=2) == LinearRamp(1.0, 10, 2)
    assert ramp_from_config("sigmoid", 0.1, 200) == SigmoidRamp(0.1, 200)
    assert ramp_from_config("cosine_down", 1.0, 5) == CosineRampDown(1.0, 5)
    with pytest.raises(ValueError, match="unknown ramp kind"):
        ramp_from_config("exp", 1.0, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length"):
        LinearRamp(1.0, -1)


def _recording_engine(name: str, seen: list[float]) -> Engine:
    def step(engine: Engine, batch: object) -> None:
        seen.append(getattr(engine.state, name))

    return Engine(step)


def test_attach_ramp_per_iteration_is_zero_based() -> None:
    ramp = LinearRamp(1.0, 10)
    seen: list[float] = []
    engine = _recording_engine("w", seen)
    scheduler = attach_ramp(engine, ramp, "w")
    assert engine.state.w == ramp(0), "the value is a number before the run starts"
    engine.run(range(3), max_epochs=2)
    assert seen[0] == ramp(0) == 0.0, "iteration 1 reads ramp(0)"
    assert seen == [ramp(t) for t in range(6)]
    assert scheduler.event_index == 6


def test_attach_ramp_per_epoch() -> None:
    ramp = SigmoidRamp(1.0, 4)
    seen: list[float] = []
    engine = _recording_engine("w", seen)
    attach_ramp(engine, ramp, "w", every="epoch")
    epoch_start: list[float] = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: epoch_start.append(e.state.w))
    engine.run(range(3), max_epochs=3)
    assert seen == [ramp(0)] * 3 + [ramp(1)] * 3 + [ramp(2)] * 3
    assert epoch_start == [ramp(0), ramp(1), ramp(2)]


def test_two_ramps_and_name_clash() -> None:
    seen: list[float] = []
    engine = _recording_engine("a", seen)
    attach_ramp(engine, ConstantRamp(0.5), "a")
    attach_ramp(engine, LinearRamp(1.0, 2), "b")
    engine.run(range(3), max_epochs=1)
    assert seen == [0.5] * 3
    assert engine.state.b == 1.0
    with pytest.raises(ValueError, match="already exists"):
        attach_ramp(engine, ConstantRamp(1.0), "a")
    with pytest.raises(ValueError):
        attach_ramp(engine, ConstantRamp(1.0), "c", every="step")  # type: ignore[arg-type]


def test_any_callable_works() -> None:
    seen: list[float] = []
    engine = _recording_engine("w", seen)
    attach_ramp(engine, lambda t: 2.0 * t, "w")
    engine.run(range(4), max_epochs=1)
    assert seen == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.parametrize("load_scheduler", [True, False])
def test_handler_state_dict_round_trip_resumes(tmp_path: Path, load_scheduler: bool) -> None:
    ramp = SigmoidRamp(1.0, 8, start=1)
    full: list[float] = []
    engine = _recording_engine("unsup_weight", full)
    RampHandler(ramp).attach(engine)
    engine.run(range(2), max_epochs=3)
    assert full == [ramp(t) for t in range(6)]

    first: list[float] = []
    engine = _recording_engine("unsup_weight", first)
    handler = RampHandler(ramp)
    handler.attach(engine)
    engine.run(range(2), max_epochs=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"ramp": handler.state_dict(), "trainer": engine.state_dict()}, path)
    state = torch.load(path, weights_only=True)  # plain values only: MONAI's CheckpointLoader loads this way
    assert state["ramp"]["event_index"] == 4

    rest: list[float] = []
    engine = _recording_engine("unsup_weight", rest)
    handler = RampHandler(ramp)
    handler.attach(engine)
    engine.load_state_dict(state["trainer"])
    if load_scheduler:
        handler.load_state_dict(state["ramp"])
    engine.run(range(2), max_epochs=3)
    assert first + rest == full
    assert handler.scheduler.lambda_obj is ramp, "the ramp comes from code, not from the checkpoint"


def test_ramp_base_is_abstract_and_stateless() -> None:
    with pytest.raises(TypeError):
        Ramp()  # type: ignore[abstract]
    r = LinearRamp(1.0, 3)
    assert r.state_dict() == {}
    r.load_state_dict({})
