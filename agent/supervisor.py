"""Restarts a failing component (a source, the forwarder) with backoff, never the scan loop.

This is the one place where `except Exception` is allowed: a component that raises is
logged, counted and restarted after an exponential, jittered, capped delay (the shared policy,
`linelight.hw.backoff`), while the scan loop and the lamps carry on. Cancellation is never
swallowed: only `Exception` is restarted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus
from tenacity import RetryCallState

from linelight.agent.humanize import describe_error
from linelight.hw.backoff import Backoff

__all__ = ["DEFAULT_RESTART", "Backoff", "ComponentHealth", "Supervisor"]

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


# Restarts: 0.5 s, 1 s, 2 s ... up to 30 s, plus up to 0.5 s of jitter; a component that ran
# for a minute counts as healthy, so its next failure starts the series over.
DEFAULT_RESTART = Backoff(initial=0.5, maximum=30.0, jitter=0.5, healthy_after=60.0)


class _Ended(Exception):
    """A component returned although it should run until cancelled."""


class Supervisor:
    """Keeps the health record of every component it runs."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or DEFAULT_RESTART
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

        def restarting(retry_state: RetryCallState) -> None:
            health.restarts += 1
            log.info("%s restarts in %.1f s (restart %d)", name, retry_state.upcoming_sleep,
                     health.restarts)

        async for attempt in self.backoff.retrying(Exception, before_sleep=restarting):
            with attempt:
                await self._run_once(name, component, health, first)

    async def _run_once(self, name: str, component: Callable[..., Awaitable[object]],
                        health: ComponentHealth, first: _FirstStart) -> None:
        """One run of the component; raises (to be restarted) unless we are stopping."""
        health.running = True
        health.started_at = time.monotonic()
        try:
            await component(task_status=first)
            raise _Ended("stopped unexpectedly")
        except Exception as exc:  # the supervisor's job: log, count, restart
            reason = str(exc) if isinstance(exc, _Ended) else describe_error(exc)
            health.running = False
            first.started()  # failed before starting: do not block start-up
            if self.stopping:
                log.debug("%s ended during shutdown: %s", name, reason)
                return
            if not log.isEnabledFor(logging.DEBUG):
                log.error("%s failed: %s; restarting", name, reason)
            else:
                log.exception("%s failed; restarting", name)
            health.last_error = reason
            health.last_error_at_ns = time.time_ns()
            raise
        finally:
            health.running = False


class _FirstStart:
    """A TaskStatus that passes on only the first `started()` of a restarted component."""

    def __init__(self, outer: TaskStatus[None]) -> None:
        self._outer = outer
        self._done = False

    def started(self, value: object = None) -> None:
        if not self._done:
            self._done = True
            self._outer.started()
