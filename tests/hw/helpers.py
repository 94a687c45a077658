"""Small helpers for hardware tests: wait for an input's sample, read config text."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from harness.waiting import wait_until
from linelight.hw.inputs import InputTable
from linelight.rules.values import Sample


async def wait_sample(table: InputTable, name: str, check: Callable[[Sample], bool], *,
                      within: float = 20.0, what: str = "") -> Sample:
    await wait_until(lambda: check(table.get(name)), within=within,
                     what=what or f"input {name} (now {table.get(name)})")
    return table.get(name)


@asynccontextmanager
async def running_sources(toml: str) -> AsyncIterator[tuple[Any, InputTable]]:
    """The one source `toml` declares, built and running into a fresh input table while the
    block runs; then stopped and closed. Yields (hardware, table)."""
    (spec,), _ = read_config(toml)
    async with _running_hardware([spec], None) as running_hw:
        yield running_hw


def read_config(text: str, file: str = "agent.toml", *, section: str = "tower"):
    """Sources and the tower spec (or, with section="outputs", the [outputs] spec) from TOML
    text, raising ConfigProblems like `linelight check`."""
    from linelight.hw.config import read_outputs, read_sources, read_tower
    from linelight.rules.fields import Problems, Table
    from linelight.rules.tomldoc import TomlDoc

    problems = Problems()
    root = Table.root(TomlDoc.parse(text, file), problems)
    sources = read_sources(root)
    spec = (read_tower if section == "tower" else read_outputs)(root, sources)
    problems.raise_if_any()
    return sources, spec


def read_outputs_config(text: str, file: str = "agent.toml"):
    """Sources and the `[outputs]` spec from TOML text, raising ConfigProblems."""
    return read_config(text, file, section="outputs")


def config_problems(text: str, file: str = "agent.toml") -> list[str]:
    """Every problem message (`file:line:col: message`) the readers find in `text`."""
    from linelight.rules.errors import ConfigProblems, LocatedError

    try:
        read_config(text, file)
    except ConfigProblems as exc:
        return [str(p) for p in exc.problems]
    except LocatedError as exc:
        return [str(exc)]
    return []


async def outputs_follow(hw: Any, steps: list[tuple[dict[str, bool], Callable[[], bool]]]) -> None:
    """Run `hw` and, for each step, drive its [[output]] lines to the values and wait until
    they are written and `device_shows()` says the device holds them; then stop (not close)."""
    bank = hw.outputs
    assert bank is not None
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, InputTable())
        for values, device_shows in steps:
            bank.drive(values)
            await wait_until(lambda v=values: all(  # type: ignore[misc]
                st["level"] is v.get(name, False) for name, st in bank.status()["outputs"].items()),
                what=f"outputs written: {values}")
            assert device_shows(), f"the device does not hold {values}"
        tg.cancel_scope.cancel()


@asynccontextmanager
async def running(toml: str) -> AsyncIterator[tuple[Any, InputTable]]:
    """The sources and tower of `toml` built and running into a fresh input table until the
    block ends, then closed (the tower's on_exit applied)."""
    sources, tower = read_config(toml)
    async with _running_hardware(sources, tower) as running_hw:
        yield running_hw


@asynccontextmanager
async def _running_hardware(sources: Any, tower: Any) -> AsyncIterator[tuple[Any, InputTable]]:
    from linelight.hw.build import build_hardware

    hw = build_hardware(sources, tower)
    table = InputTable()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(hw.run, table)
            yield hw, table
            tg.cancel_scope.cancel()
    finally:
        await hw.close()
