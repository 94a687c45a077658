"""gpiozero inputs and tower outputs on gpiozero's MockFactory."""

from __future__ import annotations

import anyio
import pytest
from gpiozero.pins.mock import MockFactory

from harness.waiting import wait_until
from linelight.hw.build import build_hardware
from linelight.hw.gpio_zero import Debouncer
from linelight.hw.inputs import InputTable
from linelight.rules.values import Pattern, Quality
from tests.hw.helpers import read_config, wait_sample

INPUTS = """
[sources.pi]
type = "gpiozero"
pin_factory = "mock"

[sources.pi.inputs]
part_seen = { pin = 17, debounce = "%s" }
door_closed = { pin = 27, pull = "up" }
estop_ok = { pin = 22, pull = "none", active_low = true }
"""


class HistoryTable(InputTable):
    """An input table that also keeps every value written, to check what debounce let through."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[object]] = {}

    def update(self, name, sample):
        self.history.setdefault(name, []).append(sample.value)
        super().update(name, sample)


@pytest.mark.anyio
async def test_input_edges_reach_the_table_with_active_low_and_pull(mock_factory: MockFactory):
    sources, _ = read_config(INPUTS % "0ms")
    hw = build_hardware(sources, None, pin_factory=mock_factory)
    table = HistoryTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        snap = table.snapshot()
        assert {n: (s.value, s.quality) for n, s in snap.items()} == {
            "part_seen": (False, Quality.GOOD),  # pulled down, active high
            "door_closed": (False, Quality.GOOD),  # pulled up: the idle high level is inactive
            "estop_ok": (True, Quality.GOOD),  # floating mock pin reads low; active low -> True
        }
        # The edges come from this thread here; on a Pi they come from gpiozero's threads.
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_low()  # switch to ground closes: active
        mock_factory.pin(22).drive_high()
        await wait_sample(table, "part_seen", lambda s: s.value is True)
        await wait_sample(table, "door_closed", lambda s: s.value is True)
        await wait_sample(table, "estop_ok", lambda s: s.value is False)
        tg.cancel_scope.cancel()
    await hw.close()


@pytest.mark.anyio
async def test_debounce_drops_bounces_and_accepts_a_level_that_holds(mock_factory: MockFactory):
    sources, _ = read_config(INPUTS % "1s")
    hw = build_hardware(sources, None, pin_factory=mock_factory)
    table = HistoryTable()
    pin = mock_factory.pin(17)
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        # a contact bouncing for a few microseconds, ending where it started ...
        for _ in range(5):
            pin.drive_high()
            pin.drive_low()
        # ... then bouncing and settling high
        for _ in range(5):
            pin.drive_high()
            pin.drive_low()
        pin.drive_high()
        await wait_sample(table, "part_seen", lambda s: s.value is True)
        tg.cancel_scope.cancel()
    await hw.close()
    assert table.history["part_seen"] == [False, True]  # one clean edge, bounces dropped
    assert hw.source("pi").edges == 21  # type: ignore[attr-defined]


def test_debouncer_on_a_fake_clock():
    d = Debouncer(0.05, level=False, now=0.0)
    assert d.edge(True, 0.000) is None
    assert d.edge(False, 0.010) is None  # bounced back: nothing pending
    assert d.settle(0.100) is None
    assert d.edge(True, 0.200) is None
    assert d.settle(0.249) is None
    assert d.deadline() == pytest.approx(0.25)
    assert d.settle(0.250) is True and d.level is True
    assert Debouncer(0.0, False, 0.0).edge(True, 1.0) is True  # no debounce: at once


TOWER = """
[tower]
profile = "raspberry-pi-gpio-tower"
pin_factory = "mock"
refresh = "1h"
blink_fast_hz = 10.0

[tower.lamps]
buzzer = { pin = 5, active_low = true }
"""


@pytest.mark.anyio
async def test_tower_outputs_follow_patterns_on_mock_pins(mock_factory: MockFactory):
    _, tower = read_config(TOWER)
    hw = build_hardware([], tower, pin_factory=mock_factory)
    light = hw.stacklight
    assert light is not None
    pins = {lamp: mock_factory.pin(p) for lamp, p in [
        ("red", "GPIO17"), ("amber", "GPIO27"), ("green", "GPIO22"), ("blue", "GPIO23"),
        ("white", "GPIO24"), ("buzzer", 5)]}
    async with anyio.create_task_group() as tg:
        await tg.start(light.run)
        light.show({"green": Pattern.ON, "buzzer": Pattern.ON, "red": Pattern.BLINK_FAST})
        await wait_until(lambda: pins["green"].state and not pins["buzzer"].state,
                         what="green on, buzzer on (active low drives the pin low)")
        await wait_until(lambda: len(pins["red"].states) >= 5, what="red blinking on its pin")
        assert not pins["amber"].state and not pins["blue"].state and not pins["white"].state
        tg.cancel_scope.cancel()
    assert await hw.close()
    assert not any(p.state for lamp, p in pins.items() if lamp != "buzzer")
    assert pins["buzzer"].state  # on_exit off: active-low buzzer pin released high
