"""Value types that cross every layer: samples with quality, lamps and lamp patterns."""

from __future__ import annotations

import enum
from typing import NamedTuple

Value = bool | int | float | str | None


class Quality(enum.Enum):
    """How far a sample can be trusted. Only GOOD samples may make a condition true or false."""

    GOOD = "good"
    STALE = "stale"  # the source stopped delivering for longer than stale_after
    BAD = "bad"  # the device answered with an error, or the value could not be decoded
    INIT = "init"  # nothing received yet since start

    @property
    def usable(self) -> bool:
        return self is Quality.GOOD


class Sample(NamedTuple):
    """One reading of one input (immutable; a named tuple, as cheap to make as Python allows:
    a poll makes one per input).

    `at` is monotonic seconds (the scan clock the evaluator's `now` uses); `wall_ns` is the
    wall-clock time taken at the source (UTC epoch nanoseconds), used for event timestamps.
    """

    value: Value
    quality: Quality
    at: float
    wall_ns: int = 0
    reason: str = ""

    @staticmethod
    def init() -> Sample:
        return Sample(None, Quality.INIT, 0.0)


LAMPS: tuple[str, ...] = ("red", "amber", "green", "blue", "white", "buzzer")


class Pattern(enum.Enum):
    """What one lamp shows. Timed patterns (`on:5s`) are resolved by the evaluator to ON/OFF."""

    OFF = "off"
    ON = "on"
    BLINK_SLOW = "blink_slow"
    BLINK_FAST = "blink_fast"


TowerCommand = dict[str, Pattern]
"""Lamp name -> pattern; every lamp of the tower is present (OFF when nothing names it)."""
