"""The stack-light driver: patterns, one blink clock, write on change, refresh, retries, on_exit."""

from __future__ import annotations

import logging

import anyio
import pytest

from harness.waiting import wait_until
from linelight.hw.errors import DeviceError
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.values import LAMPS, Pattern

P = Pattern


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class RecordingOutput:
    """A stand-in for a device: records writes, fails the next `fail` writes with DeviceError."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writes: list[bool] = []
        self.fail = 0

    async def write(self, value: bool) -> None:
        if self.fail:
            self.fail -= 1
            raise DeviceError(f"{self.name} does not answer")
        self.writes.append(value)


def _tower(clock: FakeClock, **kw) -> tuple[StackLight, dict[str, RecordingOutput]]:
    outs = {lamp: RecordingOutput(f"out-{lamp}") for lamp in LAMPS}
    return StackLight(outs, clock=clock, **kw), outs


def test_patterns_map_to_levels():
    clock = FakeClock()
    light, _ = _tower(clock)
    light.show({"red": P.ON, "green": P.OFF})
    levels = light.levels(clock.now)
    assert levels["red"] is True and levels["green"] is False
    assert set(levels) == set(LAMPS)  # lamps the command omits are OFF
    assert not any(v for k, v in levels.items() if k != "red")


def test_blinking_lamps_share_one_phase_whenever_they_start():
    clock = FakeClock()
    light, _ = _tower(clock, blink_slow_hz=1.0, blink_fast_hz=4.0)
    light.show({"red": P.BLINK_SLOW})
    clock.now += 0.3  # amber starts blinking later, mid-phase
    light.show({"red": P.BLINK_SLOW, "amber": P.BLINK_SLOW, "green": P.BLINK_FAST})
    seen_slow, seen_fast = set(), set()
    for i in range(400):
        t = clock.now + i * 0.005
        lv = light.levels(t)
        assert lv["red"] == lv["amber"], f"out of phase at {t}"
        phase = t - light.epoch
        assert lv["red"] == ((phase * 1.0) % 1.0 < 0.5)
        assert lv["green"] == ((phase * 4.0) % 1.0 < 0.5)
        if lv["red"] and not light.levels(t - 0.005)["red"]:
            assert lv["green"], "a slow flash starts together with a fast flash"
        seen_slow.add(lv["red"])
        seen_fast.add(lv["green"])
    assert seen_slow == {True, False} and seen_fast == {True, False}


def test_next_change_points_at_the_next_blink_edge():
    clock = FakeClock()
    light, _ = _tower(clock, blink_fast_hz=4.0)
    assert light.next_change(clock.now) == float("inf")
    light.show({"red": P.BLINK_FAST})
    wait = light.next_change(clock.now + 0.05)
    assert wait == pytest.approx(0.075)
    assert light.levels(clock.now + 0.05 + wait + 1e-9)["red"] is False


@pytest.mark.anyio
async def test_writes_on_change_only_and_refreshes_every_period():
    clock = FakeClock()
    light, outs = _tower(clock, refresh=5.0)
    assert await light.write_due(clock.now) == 6  # first pass writes every lamp
    assert await light.write_due(clock.now) == 0
    light.show({"green": P.ON})
    clock.now += 1.0
    assert await light.write_due(clock.now) == 1
    assert outs["green"].writes == [False, True]
    clock.now += 4.5  # the other lamps were last written 5.5 s ago, green 4.5 s ago
    assert await light.write_due(clock.now) == 5
    clock.now += 0.5
    assert await light.write_due(clock.now) == 1  # green's refresh
    assert outs["green"].writes == [False, True, True]  # refresh rewrites the same level


@pytest.mark.anyio
async def test_failed_write_is_reported_counted_and_retried(caplog):
    clock = FakeClock()
    light, outs = _tower(clock, retry=0.5, refresh=60.0)
    await light.write_due(clock.now)
    outs["red"].fail = 2
    light.show({"red": P.ON})
    with caplog.at_level(logging.WARNING, logger="linelight.hw.stacklight"):
        await light.write_due(clock.now)
    st = light.status()
    assert st["lamps"]["red"]["failing"] is True and st["lamps"]["red"]["failures"] == 1
    assert st["write_failures"] == 1
    assert st["last_error"] == "lamp 'red' on out-red: cannot switch on: out-red does not answer"
    assert "lamp 'red' on out-red: cannot switch on" in caplog.text
    clock.now += 0.2
    assert await light.write_due(clock.now) == 0  # not yet due for a retry
    clock.now += 0.3
    assert await light.write_due(clock.now) == 1  # retried, fails again
    assert light.status()["lamps"]["red"]["failures"] == 2
    clock.now += 0.5
    await light.write_due(clock.now)
    assert outs["red"].writes[-1] is True
    assert light.status()["lamps"]["red"]["failing"] is False
    assert light.status()["lamps"]["red"]["failures"] == 2  # history kept for diagnostics


@pytest.mark.anyio
async def test_a_write_that_hangs_times_out_and_counts_as_a_failure():
    class Hanging:
        name = "hanging"

        async def write(self, value: bool) -> None:
            await anyio.sleep_forever()

    light = StackLight({"red": Hanging()}, write_timeout=0.05)
    light.show({"red": P.ON})
    await light.write_due(0.0)
    assert light.status()["lamps"]["red"]["last_error"].endswith("no answer within 0.05 s")


@pytest.mark.anyio
async def test_close_applies_the_on_exit_pattern():
    clock = FakeClock()
    light, outs = _tower(clock, on_exit={"red": P.ON})
    light.show({"green": P.ON, "amber": P.BLINK_FAST})
    await light.write_due(clock.now)
    assert await light.close() is True
    assert {lamp: o.writes[-1] for lamp, o in outs.items()} == {
        "red": True, "amber": False, "green": False, "blue": False, "white": False,
        "buzzer": False}


@pytest.mark.anyio
async def test_close_reports_a_lamp_it_cannot_set_and_sets_the_others(caplog):
    clock = FakeClock()
    light, outs = _tower(clock)
    light.show({"green": P.ON})
    await light.write_due(clock.now)
    outs["green"].fail = 1
    with caplog.at_level(logging.ERROR, logger="linelight.hw.stacklight"):
        assert await light.close() is False
    assert "on_exit: lamp 'green' on out-green: cannot switch off" in caplog.text
    assert outs["red"].writes[-1] is False


@pytest.mark.anyio
async def test_run_writes_every_blink_edge_and_follows_show():
    outs = {lamp: VirtualOutput(lamp) for lamp in ("red", "green")}
    light = StackLight(outs, blink_fast_hz=20.0, refresh=3600.0)
    async with anyio.create_task_group() as tg:
        await tg.start(light.run)
        light.show({"red": P.BLINK_FAST})
        await wait_until(lambda: len(outs["red"].changes) >= 6, what="red blinking")
        levels = [lv for _, lv in outs["red"].changes]
        assert all(a != b for a, b in zip(levels, levels[1:], strict=False))  # alternates
        light.show({"green": P.ON})
        await wait_until(lambda: outs["green"].level is True and outs["red"].level is False)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_lamp_test_lights_each_lamp_then_restores_the_command():
    outs = {lamp: VirtualOutput(lamp) for lamp in LAMPS}
    light = StackLight(outs, refresh=3600.0)
    async with anyio.create_task_group() as tg:
        await tg.start(light.run)
        light.show({"green": P.ON})
        await wait_until(lambda: outs["green"].level is True)
        await light.lamp_test(step=0.05)
        await wait_until(lambda: light.status()["lamp_test"] is False
                         and {lamp: o.level for lamp, o in outs.items()}
                         == {lamp: lamp == "green" for lamp in LAMPS})
        tg.cancel_scope.cancel()
    for lamp in LAMPS:
        assert True in [lv for _, lv in outs[lamp].changes], f"{lamp} never lit in the test"
