"""`linelight demo` without a terminal: plain lines, a clean stop, its mosquitto stopped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.agent_proc import ROOT
from linelight.agent.demo.view import Frame, render_line, render_screen

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(),
                                reason="the demo's broker part needs /usr/sbin/mosquitto")


def mosquittos_under(directory: Path) -> list[int]:
    """Pids of mosquitto processes whose config lives under `directory`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"mosquitto") and any(
                str(directory).encode() in part for part in cmdline):
            pids.append(int(entry.name))
    return pids


def test_demo_without_a_tty_prints_lines_goes_through_an_outage_and_stops(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "linelight.agent", "demo", "--seconds", "12", "--outage-every", "3",
         "--outage-length", "2", "--data-dir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ticks = [line for line in lines if line.startswith("t=")]
    assert len(ticks) >= 5
    first_down = next(i for i, t in enumerate(ticks) if "broker=DOWN" in t)
    assert any("broker=up" in t for t in ticks[first_down:]), "the broker never came back"
    assert all("in_order=yes" in t for t in ticks)
    assert "\x1b[" not in proc.stdout  # no ANSI codes in a pipe
    summary = lines[-1]
    assert summary.startswith("demo over after") and "(in order," in summary
    assert re.search(r", [1-9]\d* outages", summary)
    assert mosquittos_under(tmp_path / "demo") == []


def test_demo_stops_cleanly_on_sigterm_and_stops_its_broker(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "linelight.agent", "demo", "--seconds", "300",
         "--data-dir", str(tmp_path / "demo")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and not line.startswith("t="):
            line = proc.stdout.readline()
        assert line.startswith("t="), proc.stderr.read() if proc.stderr else ""
        assert mosquittos_under(tmp_path / "demo") != []
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].startswith("demo over after")
    assert mosquittos_under(tmp_path / "demo") == []


def test_demo_rules_shipped_in_the_package_match_the_example() -> None:
    assert (ROOT / "agent" / "demo" / "rules.toml").read_text() == \
        (ROOT / "examples" / "rules.d" / "machine.toml").read_text()


def frame(**changes: object) -> Frame:
    base = dict(elapsed=3.0, agent_id="demo", phase="fault", pinned=False, state="fault",
                code=180000, state_for=1.2, reason="", lamps={"red": "blink_fast", "green": "off"},
                levels={"red": True, "green": False}, signals=(), counters={"parts": 3},
                inputs={"running": False}, queue_depth=12, queue_oldest=2.0, seq_hwm=40,
                dropped=0, broker="down", broker_url="mqtt://127.0.0.1:1883",
                broker_error="connection refused", outage="back in 3 s")
    base.update(changes)
    return Frame(**base)  # type: ignore[arg-type]


def test_screen_shows_lamps_in_colour_state_queue_and_link() -> None:
    screen = render_screen(frame())
    assert "\x1b[48;2;230;40;40m" in screen  # the red lamp lit, as a red block
    assert "FAULT" in screen and "12\x1b[0m events waiting" in screen
    assert "○ down" in screen and "back in 3 s" in screen


def test_plain_line_has_no_colours_and_names_everything() -> None:
    line = render_line(frame(broker="connected", outage="", received=38))
    assert "\x1b" not in line
    assert "state=fault" in line and "lamps=[red:blink_fast]" in line and "parts=3" in line
    assert "queue=12" in line and "broker=up" in line and "received=38 in_order=yes" in line


async def until(condition: Callable[[], bool]) -> None:
    import anyio

    with anyio.fail_after(60):
        while not condition():  # noqa: ASYNC110 - polling the agent's own state
            await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_demo(tmp_path: Path, summary: list[str], **options: Any
                       ) -> AsyncIterator[tuple[Any, Any]]:
    """A demo without a terminal, run in this test's event loop: (demo, its agent) once the
    agent is ready; quit at the end, its closing summary appended to `summary`."""
    import io

    import anyio

    from linelight.agent.demo import Demo, DemoOptions

    demo = Demo(DemoOptions(seconds=None, outage_every=0, outage_length=60,
                            data_dir=tmp_path / "demo", interactive=False, **options),
                io.StringIO())
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(demo.run)
            await until(lambda: demo.agent is not None and demo.agent.ready)
            agent = demo.agent
            assert agent is not None and agent.scan is not None and agent.hardware is not None
            yield demo, agent
            demo.quit()
    finally:
        summary.append(await demo.close())


LINE = ("press-1", "press-2", "capper")


@pytest.mark.anyio
async def test_keys_choose_each_machine_of_the_line_and_drive_only_it(tmp_path: Path) -> None:
    async with running_demo(tmp_path, [], use_broker=False) as (demo, agent):
        lanes = {lane.label: lane for lane in agent.scan.machines}
        assert tuple(lanes) == LINE
        # each its own rule file
        assert [m.rule_files.names[0].rsplit("/", 1)[-1] for m in agent.config.machines] \
            == [f"{name}.toml" for name in LINE]
        for key, name in (("3", "capper"), ("1", "press-1"), ("2", "press-2")):
            await demo.on_key(key)
            assert demo.machine_name == name and demo.message.startswith(f"{name} chosen")
            await demo.on_key("f")
            await until(lambda n=name: lanes[n].view.state == "fault")  # type: ignore[misc]
            frame = demo.frame()
            assert frame.machine == name and frame.pinned and frame.state == "fault"
            assert frame.lamps["red"] == "blink_fast"  # the chosen machine's own tower
            assert agent.hardware.towers[name].patterns()["red"].value == "blink_fast"
            pinned = [m for m in LINE if agent.hardware.sim(f"{m}-sim").machine.mode is not None]
            assert pinned == [name], pinned  # the keys drove only the chosen machine
            screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", render_screen(frame, 80, 24))
            assert f"▶ {key} {name}" in screen and f"machine     {name} fault" in screen
            await demo.on_key("a")
            assert agent.hardware.sim(f"{name}-sim").machine.mode is None


@pytest.mark.anyio
async def test_keys_pin_the_machine_and_toggle_an_outage(tmp_path: Path) -> None:
    summary: list[str] = []
    async with running_demo(tmp_path, summary, use_broker=True, line=False) as (demo, agent):
        assert demo.broker is not None
        await demo.on_key("f")
        await until(lambda: agent.scan.view.state == "fault")
        assert demo.frame().pinned and demo.frame().lamps["red"] == "blink_fast"
        await until(lambda: agent.forwarder.link.connected)
        await demo.on_key("o")
        assert not demo.broker.running and "broker stopped" in demo.message
        await until(lambda: not agent.forwarder.link.connected)
        await demo.on_key("o")
        assert demo.broker.running
        await until(lambda: agent.forwarder.link.connected)
        await demo.on_key("a")
        assert not demo.frame().pinned
    assert summary[0].startswith("demo over after") and "1 outages" in summary[0]
    assert mosquittos_under(tmp_path / "demo") == []


@pytest.mark.anyio
async def test_without_mosquitto_the_demo_says_how_to_install_it_and_shows_buffering(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import linelight.agent.demo.runner
    from linelight.agent.demo import Demo, DemoOptions

    monkeypatch.setattr(linelight.agent.demo.runner, "find_mosquitto", lambda: None)  # as on a fresh machine
    out = io.StringIO()
    demo = Demo(DemoOptions(seconds=3, outage_every=25, outage_length=8, use_broker=True,
                            data_dir=None, interactive=False), out)
    try:
        await demo.run()
        frame = demo.frame()
    finally:
        summary = await demo.close()
    assert demo.broker is None and frame.broker == "none"
    assert frame.queue_depth > 0 or frame.seq_hwm > 0
    text = out.getvalue()
    assert "note: mosquitto is not installed" in text and "apt install mosquitto" in text
    assert "broker=none" in text and "still queued" in summary
    assert not demo.workdir.exists()  # the temp dir is removed


def test_screen_lines_never_exceed_a_narrow_terminal() -> None:
    import re

    screen = render_screen(frame(rules=["state  fault  prio 100 when " + "x" * 200]), width=60,
                           height=20)
    lines = screen.rstrip("\n").split("\n")
    assert len(lines) <= 19 and "[q] quit" in screen
    for line in lines:
        assert len(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)) < 60, line


STORY = re.compile(r"demo over after \d+ s: (\d+) events recorded, (\d+) delivered to the "
                   r"subscriber \(in order, \d+ re-sends removed by seq\), ([1-9]\d*) outages, "
                   r"0 still queued$")


def test_demo_of_20_seconds_without_a_terminal_tells_the_whole_story(tmp_path: Path) -> None:
    """Outage, fill, a visible drain, and the end: the subscriber has all, nothing queued."""
    proc = subprocess.run(
        [sys.executable, "-m", "linelight.agent", "demo", "--seconds", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ticks = [line for line in lines if line.startswith("t=")]
    queues = [int(re.search(r" queue=(\d+)", t).group(1)) for t in ticks]  # type: ignore[union-attr]
    down = [i for i, t in enumerate(ticks) if "broker=DOWN" in t]
    assert down, proc.stdout
    after = queues[down[-1] + 1:]
    assert max(queues[down[0]:down[-1] + 1]) > 0, "the queue never filled"
    # the drain is seen: the backlog goes down over at least two lines, to 0, before the end
    assert len([q for q in after if q > 0]) >= 1 and 0 in after, proc.stdout
    assert "(or press o)" not in proc.stdout and "press o" not in proc.stdout
    story = STORY.search(lines[-1])
    assert story is not None, lines[-1]
    assert story.group(1) == story.group(2), lines[-1]
    # every machine of the line on every line, each with its own states, its events delivered
    for name in LINE:
        states = [re.search(rf"[\[ ]{name}:(\w+)/", t) for t in ticks]
        assert all(states), (name, ticks)
        assert len({m.group(1) for m in states if m}) >= 2, f"{name} never changed state"
    shares = re.fullmatch(r"per machine: press-1 (\d+) events, press-2 (\d+) events, capper "
                          r"(\d+) events delivered", lines[-2])
    assert shares is not None, lines[-2]
    assert all(int(n) > 0 for n in shares.groups())
    assert sum(int(n) for n in shares.groups()) <= int(story.group(2))


def test_demo_of_20_seconds_in_an_80x24_terminal_fits_and_ends_well(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: an 80x24 terminal on stdin and stdout
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "linelight.agent", "demo",
                                  "--seconds", "20"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.kill(pid, signal.SIGWINCH)
    data = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = data.decode(errors="replace")
    screen, _, _ = text.rpartition("demo over after")  # the summary follows the last frame
    frames = [f for f in screen.split("\x1b[H\x1b[J") if "linelight demo" in f][:-1]
    assert frames, text[-2000:]
    plain = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", f) for f in frames]
    for frame in plain:
        rows = frame.rstrip("\r\n").split("\n")
        assert len(rows) <= 23, frame  # never scrolls a 24-line terminal
        assert all(len(row.rstrip("\r")) < 80 for row in rows), frame
        assert "[q] quit" in frame and "queue" in frame and "broker" in frame
        assert "[1-3] machine" in frame and "▶ 1 press-1" in frame  # the first chosen
        assert all(f"{i} {name}" in frame for i, name in enumerate(LINE, 1)), frame
    assert any("down" in f and "broker stopped" in f for f in plain), "no outage shown"
    assert any("(or press o)" in f for f in plain)  # a terminal has the key
    summary = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).strip().splitlines()[-1]
    story = STORY.search(summary.strip())
    assert story is not None and story.group(1) == story.group(2), summary


@pytest.mark.anyio
async def test_during_the_lamp_test_every_machines_lamps_say_what_its_tower_shows(
        tmp_path: Path) -> None:
    async with running_demo(tmp_path, [], use_broker=False) as (demo, agent):
        towers = agent.hardware.towers
        await demo.on_key("f")  # the chosen press-1 in fault: its rules blink red
        await until(lambda: towers["press-1"].patterns()["red"].value == "blink_fast")
        await demo.on_key("l")
        assert demo.message.startswith("lamp test started")
        await until(lambda: all(t.status()["lamp_test"] for t in towers.values()))
        frame = demo.frame()
        for m in frame.machines:  # the line's rows and plain lines say the test, not the rules
            shown = {lamp: p.value for lamp, p in towers[m.name].patterns().items()
                     if lamp != "white"}
            assert dict(m.lamps) == shown, (m.name, m.lamps, shown)
        assert frame.lamps == frame.machines[0].lamps  # the chosen machine's panel too
        lit = "+".join(f"{k}:{v}" for k, v in frame.machines[0].lamps.items() if v != "off")
        assert f"press-1:fault/{lit or 'off'} " in render_line(frame)
        assert "blink_fast" not in render_line(frame)  # every tower in the test: on or off


def test_the_rules_panel_shows_each_condition_as_written_with_one_arrow_column() -> None:
    from linelight.agent.config import load_ruleset
    from linelight.agent.demo.runner import rules_source
    from linelight.agent.demo.view import describe_rules
    from linelight.agent.machines import RuleFiles

    text = rules_source().read_text()
    lines = describe_rules(load_ruleset(RuleFiles(((str(rules_source()), text),))))
    written = re.findall(r'^when = "(.*)"$', text, re.M)
    assert written and all(any(w in ln for ln in lines) for w in written), (written, lines)
    arrows = {ln.index("→") for ln in lines if "→" in ln}
    assert len(arrows) == 1, lines


def test_a_demo_too_short_for_an_outage_to_drain_has_none_and_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "linelight.agent", "demo", "--seconds", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert ("note: no automatic outage: 8 s is too short for one to fill and drain "
            "(--seconds 20 or more shows it)") in proc.stdout, proc.stdout
    ticks = [line for line in proc.stdout.splitlines() if line.startswith("t=")]
    first_up = next(i for i, t in enumerate(ticks) if "broker=up" in t)  # once connected
    assert not any("broker=DOWN" in t for t in ticks[first_up:]), ticks
    summary = proc.stdout.splitlines()[-1]
    assert summary.endswith(", 0 outages, 0 still queued"), summary


@pytest.mark.parametrize("seconds", [20, 21, 30, 45, 60, 120, 600, 3600])
def test_from_20_seconds_on_the_first_outage_ends_with_room_for_its_drain(seconds: int) -> None:
    from linelight.agent.demo.runner import OutagePlan

    plan = OutagePlan.for_run(seconds, every=25.0, length=8.0)  # the command's defaults
    assert plan.first > 0 and plan.fits(plan.first, seconds), plan
    assert plan.length >= 2.0 and plan.drain_room >= 6.0, plan  # seen, then drained
