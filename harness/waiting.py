"""Polling a condition with a deadline, for state that has no event to wait on (a pin, a
server register, a broker's view)."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def wait_until(condition: Callable[[], bool], what: str = "condition", *,
                     within: float = 60.0) -> None:
    """Poll `condition` every 10 ms until true; fail naming `what` after `within` seconds
    (generous: the machine is shared, and a deadline only matters when something is wrong)."""
    with anyio.move_on_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {within:g} s waiting for {what}")
