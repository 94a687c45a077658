"""The simulator: waveforms, scripts, the machine model and commands from tests and the demo."""

from __future__ import annotations

import anyio
import pytest

from linelight.hw.build import build_hardware
from linelight.hw.config import MACHINE_INPUTS
from linelight.hw.inputs import InputTable
from linelight.hw.sim import SimSource
from linelight.rules.values import Quality
from tests.hw.helpers import read_config, wait_sample


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


SIM = """
[sources.demo]
type = "sim"
period = "20ms"
seed = 7
model = "machine"

[sources.demo.machine]
cycle = "1s"
producing = "10s"
microstop = "2s"
fault = "4s"
idle = "3s"
fault_code = 42

[sources.demo.inputs]
beacon = { wave = "square", period = "2s", duty = 0.25 }
level = { wave = "ramp", period = "10s", low = 0, high = 100 }
pressure = { wave = "random_walk", low = 1.0, high = 2.0, start = 1.5, step = 0.1 }
recipe = { wave = "script", type = "int", repeat = false, steps = [
    { value = 1, hold = "1s" }, { value = 2, hold = "2s" }, { value = 3, hold = "1s" } ] }
"""


def _sim(clock: FakeClock) -> SimSource:
    (spec,), _ = read_config(SIM)
    return SimSource(spec, clock=clock)


def test_waveforms_follow_their_period_and_bounds():
    clock = FakeClock()
    sim = _sim(clock)
    start = clock.now
    beacon = [sim.values_at(start + t)["beacon"] for t in (0.0, 0.4, 0.6, 1.9, 2.1)]
    assert beacon == [True, True, False, False, True]
    assert sim.values_at(start + 2.5)["level"] == pytest.approx(25.0)
    assert sim.values_at(start + 12.5)["level"] == pytest.approx(25.0)
    walk = [sim.values_at(start + i * 0.02)["pressure"] for i in range(500)]
    assert all(1.0 <= x <= 2.0 for x in walk)  # type: ignore[operator]
    assert len(set(walk)) > 10  # it moves
    assert all(abs(a - b) <= 0.1 + 1e-9 for a, b in zip(walk, walk[1:], strict=False))  # type: ignore[operator]


def test_script_plays_its_steps_then_holds_the_last_value():
    clock = FakeClock()
    sim = _sim(clock)
    start = clock.now
    got = [sim.values_at(start + t)["recipe"] for t in (0.5, 1.5, 2.9, 3.5, 60.0)]
    assert got == [1, 2, 2, 3, 3]


def test_machine_cycles_through_producing_microstop_fault_idle():
    clock = FakeClock()
    sim = _sim(clock)
    assert sim.machine is not None
    start = clock.now
    phases = [sim.machine.phase_at(start + t)[0] for t in (1, 11, 13, 23, 27, 30, 31)]
    assert phases == ["producing", "microstop", "producing", "fault", "idle", "producing",
                      "producing"]
    producing = sim.values_at(start + 5.2)
    assert producing["running"] is True and producing["fault_code"] == 0
    assert producing["door_closed"] is True and producing["estop_ok"] is True
    assert 2900 < producing["spindle_rpm"] < 3100  # type: ignore[operator]
    fault = sim.values_at(start + 25)
    assert fault["running"] is False and fault["fault_code"] == 42 and fault["spindle_rpm"] == 0
    assert sim.values_at(start + 27)["door_closed"] is False  # idle: the operator opened it
    assert set(MACHINE_INPUTS) <= set(producing)


def test_part_seen_pulses_once_per_cycle_while_producing():
    clock = FakeClock()
    sim = _sim(clock)
    start = clock.now
    samples = [sim.values_at(start + i * 0.02)["part_seen"] for i in range(500)]  # 10 s
    rising = sum(1 for a, b in zip(samples, samples[1:], strict=False) if b and not a)
    assert rising in (9, 10)
    assert not any(sim.values_at(start + 10.1 + i * 0.02)["part_seen"] for i in range(90))


@pytest.mark.anyio
async def test_commands_change_inputs_at_once_while_running():
    sources, _ = read_config(SIM)
    hw = build_hardware(sources, None)
    sim = hw.sim("demo")
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        assert all(table.get(n).quality is Quality.GOOD for n in MACHINE_INPUTS)
        sim.set_mode("fault")
        assert table.get("fault_code").value == 42 and table.get("running").value is False
        sim.force("estop_ok", False)
        assert table.get("estop_ok").value is False
        status = hw.status()["sources"]["demo"]  # type: ignore[index]
        assert status["machine"] == "fault" and status["forced"] == {"estop_ok": False}
        sim.set_mode("producing")
        await wait_sample(table, "running", lambda s: s.value is True)
        assert table.get("estop_ok").value is False  # still forced
        sim.release("estop_ok")
        assert table.get("estop_ok").value is True
        sim.script("door_closed", [(False, 0.05), (True, 0.05)])
        assert table.get("door_closed").value is False
        await wait_sample(table, "door_closed", lambda s: s.value is True)
        sim.force("new_input", 3.5)  # tests may add inputs of their own
        assert table.get("new_input").value == 3.5
        tg.cancel_scope.cancel()
    with pytest.raises(ValueError, match="unknown machine mode 'broken'"):
        sim.set_mode("broken")
