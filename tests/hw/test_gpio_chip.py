"""gpiochip inputs and tower outputs: one contract, run against the kernel's gpio-sim where this
machine allows it (root, configfs, the gpio-sim module) and always against a fake of our own
LineBackend. The gpio-sim case is skipped with the reason when unavailable (see `pytest -ra`),
and each test records which backend it ran against."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from harness.waiting import wait_until
from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.rules.values import Pattern, Quality
from tests.hw.gpiochip_backends import (
    FakeChip,
    FakeLineBackend,
    GpioSim,
    gpio_sim_unavailable,
    real_backend,
)
from tests.hw.helpers import read_config, wait_sample


@dataclass
class World:
    kind: str
    backend: Any
    driver: Any  # set_input(offset, level), output_level(offset)
    chip: str


@pytest.fixture(params=["gpio-sim", "fake"])
def world(request: pytest.FixtureRequest, record_property: Any) -> Iterator[World]:
    record_property("gpiochip_backend", request.param)
    if request.param == "gpio-sim":
        why = gpio_sim_unavailable()
        if why:
            pytest.skip(f"kernel gpio-sim not used: {why}; the fake LineBackend case runs instead")
        sim = GpioSim()
        try:
            yield World("gpio-sim", real_backend(), sim, sim.path)
        finally:
            sim.close()
    else:
        chip = FakeChip()
        yield World("fake", FakeLineBackend(chip), chip, chip.path)


def _config(chip: str) -> str:
    return f"""
[sources.board]
type = "gpiochip"
chip = "{chip}"

[sources.board.inputs]
running = {{ line = "LINE1" }}
estop_ok = {{ line = 2, active_low = true, bias = "pull_up", debounce = "5ms" }}

[tower]
chip = "{chip}"
refresh = "1h"
on_exit = {{ red = "on" }}

[tower.lamps]
red = {{ line = 4 }}
green = {{ line = "LINE5" }}
buzzer = {{ line = 6, active_low = true }}
"""


@pytest.mark.anyio
async def test_input_lines_by_name_and_offset_follow_edges(world: World):
    sources, _ = read_config(_config(world.chip))
    hw = build_hardware(sources, None, line_backend=world.backend)
    table = InputTable()
    world.driver.set_input(1, False)
    world.driver.set_input(2, False)
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        assert table.get("running").value is False
        assert table.get("estop_ok").value is True  # active low: a low line is active
        world.driver.set_input(1, True)
        world.driver.set_input(2, True)
        await wait_sample(table, "running", lambda s: s.value is True)
        await wait_sample(table, "estop_ok", lambda s: s.value is False)
        assert table.get("running").quality is Quality.GOOD
        tg.cancel_scope.cancel()
    await hw.close()
    print(f"gpiochip input test ran against: {world.kind}")


@pytest.mark.anyio
async def test_tower_lines_follow_patterns_and_on_exit(world: World):
    _, tower = read_config(_config(world.chip).split("[sources.board]")[0]
                           + "[tower]" + _config(world.chip).split("[tower]")[1])
    hw = build_hardware([], tower, line_backend=world.backend)
    light = hw.stacklight
    assert light is not None
    async with anyio.create_task_group() as tg:
        await tg.start(light.run)
        light.show({"green": Pattern.ON, "buzzer": Pattern.ON})
        await wait_until(lambda: world.driver.output_level(5) and not world.driver.output_level(6),
                         what="green line high, active-low buzzer line low")
        assert world.driver.output_level(4) is False
        tg.cancel_scope.cancel()
    assert await hw.close()
    assert [world.driver.output_level(i) for i in (4, 5, 6)] == [True, False, True]
    print(f"gpiochip tower test ran against: {world.kind}")


def test_kernel_settings_reach_the_line_request():
    """Bias, debounce and active-low are the kernel's job: check our adapter asks for them."""
    chip = FakeChip()
    sources, _ = read_config(_config(chip.path))
    hw = build_hardware(sources, None, line_backend=FakeLineBackend(chip))

    async def start_and_stop() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(hw.run, InputTable())
            tg.cancel_scope.cancel()

    anyio.run(start_and_stop)
    assert chip.settings[2] == {"bias": "pull_up", "debounce": 0.005, "active_low": True,
                                "consumer": "linelight:board"}
    assert chip.settings[1]["bias"] == "as_is" and chip.settings[1]["debounce"] == 0.0
