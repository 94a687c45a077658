"""Wall-clock watch: detects jumps (monotonic vs wall) and whether the clock is synchronized.

Industrial PCs often boot without a battery-backed clock: the wall clock starts in the past
and jumps when NTP (or a person) sets it. The scan loop runs on the monotonic clock, so only
event timestamps are affected; this module notices the jump, reports it once as an event, and
says whether timestamps taken now can be trusted (`synchronized`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex() return value: clock not synchronized (STA_UNSYNC set)


@dataclass(frozen=True, slots=True)
class ClockJump:
    """The wall clock moved by `delta_s` relative to the monotonic clock between two checks."""

    delta_s: float
    before_ns: int  # the wall time we expected
    after_ns: int  # the wall time we read


TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def kernel_clock_synchronized() -> bool | None:
    """What the kernel says (the same flag `timedatectl` shows), or None if it cannot tell.

    A hardened unit (ProtectClock=, a seccomp filter without @clock) refuses even the
    read-only adjtimex(); then systemd-timesyncd's flag file is the only hint left.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        state = -1
    if state < 0:
        return True if TIMESYNC_FLAG.exists() else None
    return state != _TIME_ERROR


class ClockWatch:
    """Compares wall and monotonic clocks at each `check()`; a difference above `threshold_s`
    is a jump. Clocks and the sync probe are injectable for tests."""

    def __init__(
        self,
        *,
        threshold_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        synchronized: Callable[[], bool | None] = kernel_clock_synchronized,
        sync_probe_every_s: float = 10.0,
    ) -> None:
        self.threshold_s = threshold_s
        self._mono = monotonic
        self._wall_ns = wall_ns
        self._probe = synchronized
        self._probe_every = sync_probe_every_s
        self._offset_ns = self._wall_ns() - int(self._mono() * 1e9)
        self._last_probe = self._mono()
        probed = self._probe()
        # None (cannot tell) counts as synchronized: we only mark what we know to be wrong.
        self._synchronized = probed is not False
        self.jumps = 0

    @property
    def synchronized(self) -> bool:
        """False while the kernel reports the wall clock as not synchronized."""
        return self._synchronized

    def status(self) -> dict[str, object]:
        return {"synchronized": self._synchronized, "jumps": self.jumps}

    def now_ns(self) -> int:
        return self._wall_ns()

    def check(self) -> tuple[ClockJump | None, bool | None]:
        """Call once per scan tick. Returns (a jump or None, the new sync flag if it changed)."""
        mono = self._mono()
        wall = self._wall_ns()
        expected = int(mono * 1e9) + self._offset_ns
        jump: ClockJump | None = None
        if abs(wall - expected) > self.threshold_s * 1e9:
            jump = ClockJump((wall - expected) / 1e9, expected, wall)
            self._offset_ns = wall - int(mono * 1e9)
            self.jumps += 1
            log.warning("wall clock jumped by %+.3f s", jump.delta_s)
        changed: bool | None = None
        if jump is not None or mono - self._last_probe >= self._probe_every:
            self._last_probe = mono
            probed = self._probe()
            now_synced = probed is not False
            if now_synced != self._synchronized:
                self._synchronized = now_synced
                changed = now_synced
        return jump, changed
