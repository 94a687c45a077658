"""Two ways to test the gpiochip adapter: the kernel's gpio-sim, or a fake of our LineBackend.

Both come with a driver that plays the outside world: set an input line's physical level,
read an output line's physical level.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from linelight.hw.config import GpioInputSpec
from linelight.hw.gpio_chip import GpiodBackend, LineBackend, LineEdge

LINES = 8
NAMES = [f"LINE{i}" for i in range(LINES)]


class FakeChip:
    """A gpiochip in memory: physical levels per offset, named LINE0..LINE7."""

    def __init__(self, path: str = "/dev/gpiochip-fake") -> None:
        self.path = path
        self.physical = [False] * LINES
        self.settings: dict[int, dict[str, object]] = {}
        self._cond = threading.Condition()
        self._edges: list[LineEdge] = []
        self._inputs: dict[int, tuple[int | str, bool]] = {}  # offset -> (as requested, active_low)
        self.outputs: dict[int, bool] = {}  # offset -> active_low

    def offset(self, line: int | str) -> int:
        if isinstance(line, int):
            if not 0 <= line < LINES:
                raise ValueError(f"offset {line} out of range")
            return line
        if line not in NAMES:
            raise ValueError(f"no line named {line}")
        return NAMES.index(line)

    # the driver side: the world outside the board
    def set_input(self, offset: int, level: bool) -> None:
        with self._cond:
            if self.physical[offset] == level:
                return
            self.physical[offset] = level
            if offset in self._inputs:
                line, active_low = self._inputs[offset]
                self._edges.append(LineEdge(line, level != active_low, time.monotonic_ns()))
                self._cond.notify_all()

    def output_level(self, offset: int) -> bool:
        return self.physical[offset]


class _FakeRequest:
    def __init__(self, chip: FakeChip, lines: list[int | str]) -> None:
        self.chip = chip
        self.lines = lines
        self.released = False

    def get_values(self) -> dict[int | str, bool]:
        c = self.chip
        out = {}
        for line in self.lines:
            off = c.offset(line)
            active_low = c._inputs.get(off, (line, c.outputs.get(off, False)))[1]
            out[line] = c.physical[off] != active_low
        return out

    def wait_edges(self, timeout: float) -> list[LineEdge]:
        with self.chip._cond:
            if not self.chip._edges:
                self.chip._cond.wait(timeout)
            edges, self.chip._edges = self.chip._edges, []
            return edges

    def set_value(self, line: int | str, value: bool) -> None:
        if self.released:
            raise ValueError("request released")
        off = self.chip.offset(line)
        self.chip.physical[off] = value != self.chip.outputs[off]

    def release(self) -> None:
        self.released = True


class FakeLineBackend:
    """Implements hw.gpio_chip.LineBackend over one FakeChip, recording the settings asked for."""

    def __init__(self, chip: FakeChip) -> None:
        self.chip = chip

    def request_inputs(self, chip: str, lines: Sequence[GpioInputSpec], consumer: str):
        assert chip == self.chip.path, f"asked for {chip}"
        for spec in lines:
            off = self.chip.offset(spec.pin)
            self.chip._inputs[off] = (spec.pin, spec.active_low)
            self.chip.settings[off] = {"bias": spec.bias, "debounce": spec.debounce,
                                       "active_low": spec.active_low, "consumer": consumer}
        return _FakeRequest(self.chip, [s.pin for s in lines])

    def request_output(self, chip: str, line: int | str, active_low: bool, consumer: str):
        assert chip == self.chip.path, f"asked for {chip}"
        off = self.chip.offset(line)
        self.chip.outputs[off] = active_low
        self.chip.physical[off] = active_low  # requested inactive
        return _FakeRequest(self.chip, [line])


# -- the kernel's gpio-sim -----------------------------------------------------------------------

CONFIGFS = Path("/sys/kernel/config")


def gpio_sim_unavailable() -> str | None:
    """Why gpio-sim cannot be used here, or None if it can."""
    if os.geteuid() != 0:
        return "gpio-sim needs root"
    filesystems = Path("/proc/filesystems")
    if filesystems.exists() and "configfs" not in filesystems.read_text():
        return "this kernel has no configfs (see /proc/filesystems), which gpio-sim needs"
    if not CONFIGFS.is_dir():
        return "configfs is not mounted at /sys/kernel/config"
    if not (CONFIGFS / "gpio-sim").is_dir():
        if not (CONFIGFS / "gpio-sim").exists():
            subprocess.run(["modprobe", "gpio-sim"], check=False, capture_output=True)
        if not (CONFIGFS / "gpio-sim").is_dir():
            return "the gpio-sim kernel module is not available"
    return None


class GpioSim:
    """One simulated chip with LINES named lines, made through configfs (kernel docs:
    admin-guide/gpio/gpio-sim). Inputs are driven by setting a line's simulated pull."""

    def __init__(self) -> None:
        self.root = CONFIGFS / "gpio-sim" / f"linelight-{uuid.uuid4().hex[:8]}"
        bank = self.root / "bank0"
        bank.mkdir(parents=True)
        (bank / "num_lines").write_text(str(LINES))
        for i, name in enumerate(NAMES):
            (bank / f"line{i}").mkdir()
            (bank / f"line{i}" / "name").write_text(name)
        (self.root / "live").write_text("1")
        self.chip_name = (bank / "chip_name").read_text().strip()
        self.path = f"/dev/{self.chip_name}"
        dev_name = (self.root / "dev_name").read_text().strip()
        self.sysfs = Path("/sys/devices/platform") / dev_name / self.chip_name

    def set_input(self, offset: int, level: bool) -> None:
        (self.sysfs / f"sim_gpio{offset}" / "pull").write_text("pull-up" if level else "pull-down")

    def output_level(self, offset: int) -> bool:
        return (self.sysfs / f"sim_gpio{offset}" / "value").read_text().strip() == "1"

    def close(self) -> None:
        (self.root / "live").write_text("0")
        for i in range(LINES):
            (self.root / "bank0" / f"line{i}").rmdir()
        (self.root / "bank0").rmdir()
        self.root.rmdir()


def real_backend() -> LineBackend:
    return GpiodBackend()
