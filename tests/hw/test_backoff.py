"""The shared reconnect/restart policy: tenacity's AsyncRetrying with capped exponential waits."""

from __future__ import annotations

import anyio
import pytest
from tenacity import RetryCallState

from linelight.hw.backoff import Backoff

pytestmark = pytest.mark.anyio


class Refused(Exception):
    pass


class Lost(Exception):
    """A link that was up and then went away: a healthy attempt."""


async def _waits_until(policy: Backoff, outcomes: list[type[Exception] | None], *,
                       healthy: type[Exception] | None = None,
                       clock: list[float] | None = None, ran: float = 0.0) -> list[float]:
    """Run a retry loop whose attempts end with `outcomes` (None = success); its waits."""
    waits: list[float] = []
    pending = list(outcomes)

    def sleeping(state: RetryCallState) -> None:
        waits.append(state.upcoming_sleep)

    kwargs = {} if clock is None else {"clock": lambda: clock[0]}
    retrying = policy.retrying((Refused, Lost), before_sleep=sleeping,
                               healthy=(lambda exc: isinstance(exc, healthy))
                               if healthy else None, **kwargs)
    async for attempt in retrying:
        with attempt:
            if clock is not None:
                clock[0] += ran
            outcome = pending.pop(0)
            if outcome is not None:
                raise outcome("attempt failed")
    return waits


async def test_waits_double_from_initial_and_stop_at_the_cap() -> None:
    policy = Backoff(initial=0.001, maximum=0.004)
    waits = await _waits_until(policy, [Refused] * 5 + [None])
    assert waits == [0.001, 0.002, 0.004, 0.004, 0.004]


async def test_jitter_adds_at_most_its_amount_and_never_passes_the_cap() -> None:
    policy = Backoff(initial=0.001, maximum=0.0035, jitter=0.001)
    waits = await _waits_until(policy, [Refused] * 6 + [None])
    lows = [0.001, 0.002, 0.0035, 0.0035, 0.0035, 0.0035]
    assert all(low <= w <= min(low + 0.001, 0.0035) for low, w in zip(lows, waits, strict=True))


async def test_a_healthy_attempt_starts_the_series_over() -> None:
    policy = Backoff(initial=0.001, maximum=0.008)
    waits = await _waits_until(policy, [Refused, Refused, Refused, Lost, Refused, None],
                               healthy=Lost)
    assert waits == [0.001, 0.002, 0.004, 0.001, 0.002]


async def test_an_attempt_that_ran_for_healthy_after_starts_the_series_over() -> None:
    policy = Backoff(initial=0.001, maximum=0.008, healthy_after=60.0)
    clock = [0.0]
    short = await _waits_until(policy, [Refused] * 3 + [None], clock=clock, ran=1.0)
    long = await _waits_until(policy, [Refused] * 3 + [None], clock=clock, ran=61.0)
    assert short == [0.001, 0.002, 0.004] and long == [0.001, 0.001, 0.001]


async def test_other_exceptions_and_cancellation_are_not_retried() -> None:
    attempts = 0
    with pytest.raises(KeyError):
        async for attempt in Backoff(initial=0.001).retrying(Refused):
            with attempt:
                attempts += 1
                raise KeyError("not a retried kind")
    assert attempts == 1

    with anyio.CancelScope() as scope:
        async for attempt in Backoff(initial=0.001).retrying(Exception):
            with attempt:
                attempts += 1
                scope.cancel()
                await anyio.sleep(1)  # cancelled here: must leave the loop, not retry
    assert attempts == 2 and scope.cancelled_caught


def test_a_policy_that_cannot_work_is_refused_with_its_numbers() -> None:
    with pytest.raises(ValueError, match="initial 5 s and maximum 1 s"):
        Backoff(initial=5.0, maximum=1.0)
    with pytest.raises(ValueError, match="jitter must not be negative"):
        Backoff(jitter=-1.0)
