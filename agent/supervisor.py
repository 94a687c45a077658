"""Restarts a failing component (a source, the forwarder) with backoff, never the scan loop.

This is the one place where `except Exception` is allowed: a component that raises is
logged, counted and restarted after an exponential, jittered, capped delay, while the scan
loop and the lamps carry on. Cancellation is never swallowed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from linelight.agent.humanize import describe_error

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ComponentHealth:
    """What the diagnostics page shows about one supervised component."""

    name: str
    running: bool = False
    restarts: int = 0
    last_error: str = ""
    last_error_at_ns: int = 0
    started_at: float = field(default=0.0)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart attempt n (0-based): base * 2**n, capped, with +-jitter."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.2
    reset_after_s: float = 60.0  # a run this long counts as healthy: the next failure starts over

    def delay(self, attempt: int) -> float:
        raw = min(self.cap_s, self.base_s * float(2 ** min(attempt, 30)))
        return max(0.0, raw * (1 + random.uniform(-self.jitter, self.jitter)))


class Supervisor:
    """Keeps the health record of every component it runs."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self.components: dict[str, ComponentHealth] = {}
        self.stopping = False  # set on planned shutdown: a component that ends is not restarted

    def status(self) -> dict[str, dict[str, Any]]:
        """Each supervised component: running, restarts, last error."""
        return {name: {"running": c.running, "restarts": c.restarts, "last_error": c.last_error}
                for name, c in self.components.items()}

    async def run(
        self,
        name: str,
        component: Callable[..., Awaitable[object]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `component(task_status=...)` forever: restart it whenever it raises or returns.

        Start-up order stays explicit: this returns from `tg.start` once the component's first
        run reports `started()` (e.g. the diagnostics port is bound). If that first run fails
        before starting, start-up goes on without it and the restarts carry on in the
        background: a broken part must never hold the lamps or READY hostage.
        """
        health = self.components.setdefault(name, ComponentHealth(name))
        first = _FirstStart(task_status)
        attempt = 0
        while True:
            health.running = True
            health.started_at = time.monotonic()
            try:
                await component(task_status=first)
                reason = "stopped unexpectedly"
            except Exception as exc:  # the supervisor's job: log, count, restart
                reason = describe_error(exc)
                if self.stopping:
                    log.debug("%s ended during shutdown: %s", name, reason)
                elif not log.isEnabledFor(logging.DEBUG):
                    log.error("%s failed: %s; restarting", name, reason)
                else:
                    log.exception("%s failed; restarting", name)
            health.running = False
            first.started()  # failed before starting: do not block start-up
            if self.stopping:
                return
            health.last_error = reason
            health.last_error_at_ns = time.time_ns()
            if time.monotonic() - health.started_at >= self.backoff.reset_after_s:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            health.restarts += 1
            log.info("%s restarts in %.1f s (restart %d)", name, delay, health.restarts)
            await anyio.sleep(delay)


class _FirstStart:
    """A TaskStatus that passes on only the first `started()` of a restarted component."""

    def __init__(self, outer: TaskStatus[None]) -> None:
        self._outer = outer
        self._done = False

    def started(self, value: object = None) -> None:
        if not self._done:
            self._done = True
            self._outer.started()
