"""The one reconnect/restart policy: tenacity's `AsyncRetrying`, capped exponential waits with jitter.

Every loop that retries after a failure (the forwarder's broker reconnects, the supervisor's
component restarts, a Modbus source's reconnects) is written the same way:

    async for attempt in policy.retrying(LinkError, healthy=lambda exc: ...):
        with attempt:
            ...  # one attempt; raise to be retried after the next wait

The wait after the n-th failure in a row is `initial * 2**(n-1) + uniform(0, jitter)`, capped
at `maximum` (tenacity's `wait_exponential_jitter`). A failure that follows a *healthy*
attempt (one that ran for `healthy_after` seconds, or whose exception `healthy(exc)` accepts,
e.g. a link that was up and then got lost) starts the series over at `initial`. The loop never
gives up; cancellation is never retried (only the given exception types are).

hw is the lowest I/O layer, so the policy lives here and the agent imports it from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before attempt n+1 after n failures in a row (see the module doc)."""

    initial: float = 0.5  # seconds: the first wait
    maximum: float = 30.0  # seconds: the cap, jitter included
    jitter: float = 0.0  # seconds: up to this much random extra per wait
    healthy_after: float | None = None  # an attempt that ran this long starts the series over

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got initial "
                             f"{self.initial:g} s and maximum {self.maximum:g} s")
        if self.jitter < 0:
            raise ValueError(f"backoff jitter must not be negative, got {self.jitter:g} s")

    def retrying(self, retry_on: ExceptionTypes, *,
                 healthy: Callable[[BaseException], bool] | None = None,
                 before_sleep: Callable[[RetryCallState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> AsyncRetrying:
        """A fresh retry loop: retries `retry_on` forever with this policy's waits.

        `before_sleep(retry_state)` runs after each failure, when `retry_state.upcoming_sleep`
        holds the wait just chosen (to log it or to show "next attempt in ...").
        """
        series = _Series(self, healthy, clock)
        return AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop_never,
            retry=retry_if_exception_type(retry_on),
            wait=series.wait,
            before=series.attempt_starts,
            before_sleep=before_sleep,
            reraise=True,
        )


class _Series:
    """The waits of one retry loop, counted from the last healthy attempt."""

    def __init__(self, policy: Backoff, healthy: Callable[[BaseException], bool] | None,
                 clock: Callable[[], float]) -> None:
        self._policy = policy
        self._healthy = healthy
        self._clock = clock
        self._started = clock()
        self._waits = wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum,
                                              jitter=policy.jitter)

    def attempt_starts(self, retry_state: RetryCallState) -> None:
        self._started = self._clock()

    def wait(self, retry_state: RetryCallState) -> float:
        if self._was_healthy(retry_state):
            # tenacity's attempt_number drives the exponent: the series starts over.
            retry_state.attempt_number = 1
        return float(self._waits(retry_state))

    def _was_healthy(self, retry_state: RetryCallState) -> bool:
        limit = self._policy.healthy_after
        if limit is not None and self._clock() - self._started >= limit:
            return True
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        return self._healthy is not None and exc is not None and self._healthy(exc)
