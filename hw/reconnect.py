"""The reconnect loop of the S7 and OPC UA links: hw.backoff's policy, logging the first failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState

from linelight.hw.backoff import Backoff
from linelight.hw.errors import DeviceError

log = logging.getLogger(__name__)


class NextAttempt:
    """When a link's next connect attempt is due, for /status: `waiting` is reconnecting()'s
    `on_wait`, `connected` clears it."""

    def __init__(self) -> None:
        self._at = 0.0  # time.monotonic()

    def waiting(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def connected(self) -> None:
        self._at = 0.0

    def seconds_left(self) -> float:
        return round(max(0.0, self._at - time.monotonic()), 2)


def reconnecting(minimum: float, maximum: float, *,
                 on_wait: Callable[[float], None] | None = None) -> AsyncRetrying:
    """Retry a connect that raises DeviceError forever with the shared policy (`minimum`,
    doubling to `maximum`, up to a tenth of `minimum` of jitter so agents restarted together
    do not knock at once); `on_wait(seconds)` before each wait. Anything else, cancellation
    included, passes through."""
    policy = Backoff(initial=minimum, maximum=maximum, jitter=minimum / 10)

    def before_sleep(state: RetryCallState) -> None:
        _log_retry(state)
        if on_wait is not None:
            on_wait(state.upcoming_sleep)

    return policy.retrying(DeviceError, before_sleep=before_sleep)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    # The first failure is worth a person's attention; the repeats of one outage are not.
    level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
    log.log(level, "%s (retry in %.1f s)", exc, state.upcoming_sleep)
