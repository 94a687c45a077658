"""The stack-light driver: patterns to lamp levels on one shared blink clock, written to outputs.

Writes happen on change and again every `refresh` (so a remote I/O module that was power-cycled
is corrected); a failed write is retried every `retry`, counted, logged and shown in `status()`.
`close()` applies the `on_exit` pattern; for crashes the systemd watchdog and the I/O device's own
fail-safe take over (see docs/hardware.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio

from linelight.hw.errors import DeviceError
from linelight.hw.outputs import Output
from linelight.rules.values import LAMPS, Pattern, TowerCommand

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(slots=True)
class LampStatus:
    pattern: Pattern = Pattern.OFF
    level: bool | None = None  # what the output was last written to; None = never written
    wanted: bool | None = None  # the level of the last attempt
    writes: int = 0
    failures: int = 0
    last_error: str = ""
    last_write_at: float = -math.inf
    failing: bool = False


def level_of(pattern: Pattern, phase_time: float, slow_hz: float, fast_hz: float) -> bool:
    """A pattern's level at `phase_time` seconds on the shared blink clock (on first, 50 % duty)."""
    if pattern is Pattern.ON:
        return True
    if pattern is Pattern.OFF:
        return False
    hz = slow_hz if pattern is Pattern.BLINK_SLOW else fast_hz
    return (phase_time * hz) % 1.0 < 0.5


def next_edge(phase_time: float, hz: float) -> float:
    """Seconds on the blink clock until the next half-period boundary of `hz`."""
    half = 0.5 / hz
    return (math.floor(phase_time / half) + 1) * half - phase_time


class StackLight:
    """Drives one tower. `show` is called by the scan loop every tick; `run` does the writing."""

    def __init__(self, outputs: Mapping[str, Output], *, blink_slow_hz: float = 1.0,
                 blink_fast_hz: float = 4.0, refresh: float = 5.0, retry: float = 0.5,
                 write_timeout: float = 1.0, on_exit: Mapping[str, Pattern] | None = None,
                 clock: Clock = time.monotonic, what: str = "lamp") -> None:
        self.what = what  # "lamp", or "output" for an OutputBank: the word in its messages
        unknown = [lamp for lamp in outputs if lamp not in LAMPS] if what == "lamp" else []
        if unknown:
            raise ValueError(f"unknown lamps {unknown}; lamps are {', '.join(LAMPS)}")
        self.outputs = dict(outputs)
        self.blink_slow_hz = blink_slow_hz
        self.blink_fast_hz = blink_fast_hz
        self.refresh = refresh
        self.retry = retry
        self.write_timeout = write_timeout
        self.on_exit = {lamp: (on_exit or {}).get(lamp, Pattern.OFF) for lamp in self.outputs}
        self._clock = clock
        self.epoch = clock()  # the one blink clock every lamp shares
        self._patterns: dict[str, Pattern] = {lamp: Pattern.OFF for lamp in self.outputs}
        self._override: dict[str, Pattern] | None = None  # lamp test
        self._lamps = {lamp: LampStatus() for lamp in self.outputs}
        self._wake: anyio.Event | None = None
        self._closed = False
        self.write_failures = 0
        self.last_error = ""

    # -- pure part ---------------------------------------------------------------------------
    def patterns(self) -> dict[str, Pattern]:
        """What each lamp shows now (the lamp test wins over the scan loop's command)."""
        return dict(self._override if self._override is not None else self._patterns)

    def levels(self, now: float) -> dict[str, bool]:
        """Each lamp's level at `now`: all blinking lamps share one phase."""
        t = now - self.epoch
        return {lamp: level_of(p, t, self.blink_slow_hz, self.blink_fast_hz)
                for lamp, p in self.patterns().items()}

    def next_change(self, now: float) -> float:
        """Seconds until any blinking lamp changes level (inf when none blinks)."""
        t = now - self.epoch
        waits = [next_edge(t, self.blink_slow_hz if p is Pattern.BLINK_SLOW else self.blink_fast_hz)
                 for p in self.patterns().values() if p in (Pattern.BLINK_SLOW, Pattern.BLINK_FAST)]
        return min(waits, default=math.inf)

    # -- commands ----------------------------------------------------------------------------
    def show(self, command: TowerCommand) -> None:
        """Set the patterns to display (non-blocking). Lamps the tower lacks are ignored;
        lamps the command omits go OFF."""
        new = {lamp: command.get(lamp, Pattern.OFF) for lamp in self.outputs}
        if new != self._patterns:
            self._patterns = new
            for lamp, p in new.items():
                self._lamps[lamp].pattern = p
            self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- writing -----------------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write levels on change, refresh every `refresh`, retry failures every `retry`."""
        self._wake = anyio.Event()
        task_status.started()
        while not self._closed:
            self._wake = anyio.Event()
            now = self._clock()
            await self.write_due(now)
            wait = min(self.next_change(self._clock()), self._next_due(self._clock()))
            with anyio.move_on_after(max(0.0, min(wait, 3600.0))):
                await self._wake.wait()

    async def write_due(self, now: float) -> int:
        """Write every lamp whose level changed, whose refresh is due or whose last write
        failed and is due for a retry. Returns how many writes were attempted."""
        attempted = 0
        for lamp, level in self.levels(now).items():
            if self._closed:
                break  # close() owns the outputs now
            st = self._lamps[lamp]
            if st.failing:
                due = level != st.wanted or now - st.last_write_at >= self.retry
            else:
                due = level != st.level or now - st.last_write_at >= self.refresh
            if not due:
                continue
            attempted += 1
            await self._write(lamp, level, now)
        return attempted

    def _next_due(self, now: float) -> float:
        due = math.inf
        for st in self._lamps.values():
            period = self.retry if st.failing else self.refresh
            due = min(due, st.last_write_at + period - now)
        return due

    async def _write(self, lamp: str, level: bool, now: float) -> bool:
        st = self._lamps[lamp]
        output = self.outputs[lamp]
        st.last_write_at = now
        st.wanted = level
        try:
            with anyio.fail_after(self.write_timeout):
                await output.write(level)
        except (DeviceError, TimeoutError) as exc:
            reason = (str(exc) if isinstance(exc, DeviceError)
                      else f"no answer within {self.write_timeout:g} s")
            st.failures += 1
            self.write_failures += 1
            st.last_error = self.last_error = (f"{self.what} '{lamp}' on {output.name}: cannot "
                                               f"switch {'on' if level else 'off'}: {reason}")
            st.level = None
            if not st.failing:  # log the first failure of a run, not every retry
                log.warning("%s (retrying every %g s)", st.last_error, self.retry)
            st.failing = True
            return False
        st.writes += 1
        st.level = level
        if st.failing:
            log.info("%s '%s' on %s works again after %d failed writes", self.what, lamp,
                     output.name, st.failures)
        st.failing = False
        return True

    async def close(self) -> bool:
        """Stop `run` and apply the `on_exit` pattern to every lamp. Returns False (after logging
        each failure) if a lamp could not be set; shutdown carries on either way."""
        self._closed = True
        self._kick()
        self._override = None
        self._patterns = dict(self.on_exit)
        ok = True
        with anyio.CancelScope(shield=True):
            now = self._clock()
            for lamp, level in self.levels(now).items():
                if not await self._write(lamp, level, now):
                    ok = False
                    log.error("on_exit: %s", self._lamps[lamp].last_error)
        return ok

    async def lamp_test(self, step: float = 0.5) -> None:
        """Light each lamp alone for `step` seconds, then all together, then resume the
        scan loop's patterns. The buzzer sounds only for one short step."""
        try:
            for lamp in self.outputs:
                self._set_override({lamp: Pattern.ON})
                await anyio.sleep(step)
            self._set_override({lamp: Pattern.ON for lamp in self.outputs if lamp != "buzzer"})
            await anyio.sleep(step)
        finally:
            self._override = None
            self._kick()

    def _set_override(self, on: dict[str, Pattern]) -> None:
        self._override = {lamp: on.get(lamp, Pattern.OFF) for lamp in self.outputs}
        self._kick()

    # -- diagnostics -------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """Per-lamp pattern, level, writes, failures and last error, for /status."""
        return {
            "lamps": {lamp: {"pattern": st.pattern.value, "level": st.level, "writes": st.writes,
                             "failures": st.failures, "failing": st.failing,
                             "last_error": st.last_error, "output": self.outputs[lamp].name}
                      for lamp, st in self._lamps.items()},
            "lamp_test": self._override is not None,
            "write_failures": self.write_failures,
            "last_error": self.last_error,
        }


class OutputBank(StackLight):
    """The lines, coils and bits `[[output]]` rules drive: the tower's writing (on change and
    every `refresh`, failures retried, counted and shown, `on_exit` at a clean stop) without
    blinking, and never part of a lamp test (a permit must not flash because someone tests
    the lamps). The scan loop calls `drive` every scan with the rules' outputs."""

    def __init__(self, outputs: Mapping[str, Output], *, refresh: float = 5.0,
                 retry: float = 0.5, write_timeout: float = 1.0,
                 on_exit: Mapping[str, bool] | None = None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(outputs, refresh=refresh, retry=retry, write_timeout=write_timeout,
                         on_exit={name: Pattern.ON if on else Pattern.OFF
                                  for name, on in (on_exit or {}).items()},
                         clock=clock, what="output")

    def drive(self, values: Mapping[str, bool]) -> None:
        """Set each output (non-blocking); an output `values` omits goes off."""
        self.show({name: Pattern.ON if values.get(name) else Pattern.OFF
                   for name in self.outputs})

    async def lamp_test(self, step: float = 0.5) -> None:
        return None  # outputs are no lamps: a lamp test leaves them alone

    def status(self) -> dict[str, object]:
        """Per output: on (what the rules want), level written, writes, failures, last error."""
        lamps = super().status()["lamps"]
        assert isinstance(lamps, dict)
        return {
            "outputs": {name: {"on": st["pattern"] == Pattern.ON.value,
                               **{k: v for k, v in st.items() if k != "pattern"}}
                        for name, st in lamps.items()},
            "write_failures": self.write_failures,
            "last_error": self.last_error,
        }
