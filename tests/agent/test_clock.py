"""The clock watch notices wall-clock jumps and a change of the kernel's sync flag."""

from __future__ import annotations

from linelight.agent.clock import ClockWatch, kernel_clock_synchronized


class FakeClocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_000_000 * 10**9
        self.synced: bool | None = False

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += int(seconds * 1e9)

    def watch(self) -> ClockWatch:
        return ClockWatch(
            threshold_s=2.0,
            monotonic=lambda: self.mono,
            wall_ns=lambda: self.wall,
            synchronized=lambda: self.synced,
            sync_probe_every_s=5.0,
        )


def test_steady_clocks_report_no_jump() -> None:
    clocks = FakeClocks()
    watch = clocks.watch()
    for _ in range(100):
        clocks.advance(0.02)
        assert watch.check() == (None, None)
    assert watch.jumps == 0


def test_forward_jump_is_reported_once_with_its_size() -> None:
    clocks = FakeClocks()
    watch = clocks.watch()
    clocks.advance(0.02)
    clocks.wall += 3600 * 10**9  # NTP sets the clock an hour ahead
    jump, _ = watch.check()
    assert jump is not None
    assert round(jump.delta_s) == 3600
    clocks.advance(0.02)
    assert watch.check()[0] is None
    assert watch.jumps == 1


def test_backward_jump_is_reported() -> None:
    clocks = FakeClocks()
    watch = clocks.watch()
    clocks.wall -= 10 * 10**9
    jump, _ = watch.check()
    assert jump is not None and round(jump.delta_s) == -10


def test_small_drift_below_threshold_is_not_a_jump() -> None:
    clocks = FakeClocks()
    watch = clocks.watch()
    clocks.wall += 10**9  # one second: NTP slewing, not a jump
    assert watch.check()[0] is None


def test_sync_flag_change_is_reported_when_probed() -> None:
    clocks = FakeClocks()
    watch = clocks.watch()
    assert watch.synchronized is False
    clocks.synced = True
    clocks.advance(1.0)
    assert watch.check() == (None, None)  # not probed yet
    clocks.advance(5.0)
    assert watch.check() == (None, True)
    assert watch.synchronized is True


def test_unknown_sync_state_counts_as_synchronized() -> None:
    clocks = FakeClocks()
    clocks.synced = None
    assert clocks.watch().synchronized is True


def test_kernel_probe_answers_without_raising() -> None:
    assert kernel_clock_synchronized() in (True, False, None)
