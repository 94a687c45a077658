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
    from linelight.hw.build import build_hardware

    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    table = InputTable()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(hw.run, table)
            yield hw, table
            tg.cancel_scope.cancel()
    finally:
        await hw.close()


def read_config(text: str, file: str = "agent.toml"):
    """Sources and tower specs from TOML text, raising ConfigProblems like `linelight check`."""
    from linelight.hw.config import read_sources, read_tower
    from linelight.rules.fields import Problems, Table
    from linelight.rules.tomldoc import TomlDoc

    problems = Problems()
    root = Table.root(TomlDoc.parse(text, file), problems)
    sources = read_sources(root)
    tower = read_tower(root, sources)
    problems.raise_if_any()
    return sources, tower


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
