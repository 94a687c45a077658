"""The demo: a line of simulated machines, the example rules, stack lights, the queue, a broker.

Everything a newcomer needs to see in one terminal: one agent serves a line of three machines
(two presses and a capper), each with its own simulated machine, its own copy of the example
rules and its own stack light, shown side by side; each cycles through producing, microstop,
fault and idle on its own clock. Every event is queued on disk and forwarded to a mosquitto
the demo starts; an outage (a key, or every so often) shows the queue filling and then
draining in order to an independent subscriber. The keys 1, 2, 3 choose the machine that the
mode keys (f, p, m, i, a) drive and the detail panel shows. `--single`: one machine, as an
agent without [machines.*] runs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from linelight.agent.app import Agent
from linelight.agent.config import load_config
from linelight.agent.demo.broker import (
    INSTALL_HINT,
    DemoSubscriber,
    LocalBroker,
    find_mosquitto,
    free_port,
)
from linelight.agent.demo.view import (
    HIDE_CURSOR,
    SHOW_CURSOR,
    Frame,
    MachineFrame,
    describe_rules,
    render_line,
    render_screen,
)

REPO_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules.d" / "machine.toml"
PACKAGED_RULES = Path(__file__).resolve().parent / "rules.toml"
KEY_MODES = {"f": "fault", "p": "producing", "m": "microstop", "i": "idle", "a": "auto"}

CONFIG = """\
# Written by `linelight demo`; see examples/agent.toml for a commented config.
agent_id = "demo-press-1"
data_dir = "data"
rules = ["rules.d/*.toml"]

[scan]
period = "20ms"
deadbands = {{ spindle_rpm = 100.0 }}

[diagnostics]
listen = ["127.0.0.1:{diag_port}"]

[journal]
max_bytes = "64MiB"
{mqtt}
[sources.machine]
type = "sim"
model = "machine"
period = "50ms"

[sources.machine.machine]
producing = "12s"
microstop = "3s"
fault = "6s"
idle = "5s"
cycle = "1500ms"

[tower.lamps]
red = {{ virtual = true }}
amber = {{ virtual = true }}
green = {{ virtual = true }}
blue = {{ virtual = true }}
buzzer = {{ virtual = true }}
"""

LINE_AGENT = "demo-line-1"
LINE_MACHINES = (  # name, seed, phase lengths and part cycle: each machine on its own clock
    ("press-1", 1, 'producing = "12s", microstop = "3s", fault = "6s", idle = "5s", '
                   'cycle = "1500ms"'),
    ("press-2", 2, 'producing = "9s", microstop = "2s", fault = "8s", idle = "4s", '
                   'cycle = "1200ms"'),
    ("capper", 3, 'producing = "15s", microstop = "4s", fault = "5s", idle = "6s", '
                  'cycle = "900ms"'),
)
LINE_MACHINE = """
[machines.{name}]
rules = ["rules.d/{name}.toml"]

[machines.{name}.sources.{name}-sim]
type = "sim"
model = "machine"
period = "50ms"
seed = {seed}
machine = {{ {phases} }}

[machines.{name}.tower.lamps]
red = {{ virtual = true }}
amber = {{ virtual = true }}
green = {{ virtual = true }}
blue = {{ virtual = true }}
buzzer = {{ virtual = true }}
"""


def line_config(diag_port: int, mqtt: str) -> str:
    """The demo's config in --line mode: the single machine's, its machine as three."""
    head = CONFIG[:CONFIG.index("[sources.machine]")].format(diag_port=diag_port, mqtt=mqtt)
    head = head.replace('agent_id = "demo-press-1"', f'agent_id = "{LINE_AGENT}"').replace(
        'rules = ["rules.d/*.toml"]\n', "")
    return head + "".join(LINE_MACHINE.format(name=name, seed=seed, phases=phases)
                          for name, seed, phases in LINE_MACHINES)


MQTT = """
[mqtt]
host = "127.0.0.1"
port = {port}
inflight = 64
keepalive = "5s"
backoff = {{ initial = "500ms", max = "2s" }}
# The backlog after an outage drains at this rate (about twice what the machine makes), slow
# enough for a person to watch the queue go down; a real plant leaves it off (as fast as it can).
replay = {{ msgs_per_s = {replay_rate} }}
flush_on_stop = "3s"
"""
REPLAY_RATE = 8.0  # messages/s while draining; the simulated machine makes about 4 events/s
MIN_STORY_S = 20.0  # the shortest --seconds with an outage that fills and drains
CATCH_UP_S = 3.0  # at the end, how long to wait for the subscriber to see the last event


@dataclass(frozen=True, slots=True)
class OutagePlan:
    """When automatic outages happen in a demo of known length: each one must start, fill the
    queue and drain visibly before the end, whatever `--seconds` (20 or more) says."""

    first: float  # seconds after the start; 0: no automatic outage
    length: float
    every: float
    drain_room: float  # seconds kept free after an outage ends, for the drain and the summary

    @staticmethod
    def for_run(seconds: float | None, every: float, length: float) -> OutagePlan:
        if every <= 0:
            return OutagePlan(0.0, length, 0.0, 0.0)
        if seconds is None:  # until stopped: as asked
            return OutagePlan(every, length, every, 0.0)
        return OutagePlan(first=min(every, max(3.0, 0.15 * seconds)),
                          length=min(length, max(2.0, 0.25 * seconds)), every=every,
                          drain_room=max(6.0, 0.35 * seconds))

    def fits(self, start: float, seconds: float | None) -> bool:
        """Whether an outage starting `start` s into the run still ends with its drain seen."""
        return seconds is None or start + self.length + self.drain_room <= seconds



@dataclass(frozen=True, slots=True)
class DemoOptions:
    seconds: float | None  # stop after this long; None: until Ctrl-C / q
    outage_every: float  # seconds between automatic outages; 0: only on key
    outage_length: float
    use_broker: bool
    data_dir: Path | None  # None: a temp dir, removed at the end
    interactive: bool  # full-screen view and keys (stdout and stdin are terminals)
    line: bool = True  # a line of three machines on one agent; False: one machine


def rules_source() -> Path:
    return REPO_RULES if REPO_RULES.exists() else PACKAGED_RULES


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.started = time.monotonic()
        self.workdir = options.data_dir or Path(tempfile.mkdtemp(prefix="linelight-demo-"))
        self.broker: LocalBroker | None = None
        self.subscriber: DemoSubscriber | None = None
        self.agent: Agent | None = None
        self.outages = 0
        self.outage_until: float | None = None  # monotonic time the broker comes back
        self.next_outage: float | None = None
        self.plan = OutagePlan.for_run(options.seconds, options.outage_every,
                                       options.outage_length)
        self.message = ""
        self.notes: list[str] = []
        self._quit: anyio.Event | None = None
        self.log_tail = LogTail()
        self.selected = 0  # the line's machine the mode keys drive and the detail panel shows

    # -- set-up -------------------------------------------------------------------------------
    def prepare(self) -> Agent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules.d").mkdir(exist_ok=True)
        for name in ([name for name, _, _ in LINE_MACHINES] if self.options.line
                     else ["machine"]):  # each machine its own rule file
            shutil.copy(rules_source(), self.workdir / "rules.d" / f"{name}.toml")
        mqtt = ""
        if self.options.use_broker:
            binary = find_mosquitto()
            if binary is None:
                self.notes.append("mosquitto is not installed, so there is no broker: events stay "
                                  f"queued on disk. To see forwarding: {INSTALL_HINT}")
            else:
                self.broker = LocalBroker(binary, self.workdir / "mosquitto")
                self.broker.start()
                # a line has three machines making events: the drain rate grows with it
                rate = REPLAY_RATE * (len(LINE_MACHINES) if self.options.line else 1)
                mqtt = MQTT.format(port=self.broker.port, replay_rate=rate)
                topic = (f"linelight/{LINE_AGENT}/#" if self.options.line  # every machine's
                         else "linelight/demo-press-1/events/#")
                self.subscriber = DemoSubscriber(self.broker.port, topic)
                self.subscriber.start()
                if self.plan.first > 0 and self.plan.fits(self.plan.first, self.options.seconds):
                    self.next_outage = self.started + self.plan.first
                elif self.plan.first > 0:  # one that could not drain would end with a backlog
                    self.notes.append(f"no automatic outage: {self.options.seconds:g} s is too "
                                      f"short for one to fill and drain (--seconds "
                                      f"{MIN_STORY_S:g} or more shows it)")
        else:
            self.notes.append("--no-broker: events stay queued on disk (buffering)")
        config_path = self.workdir / "agent.toml"
        text = (line_config(free_port(), mqtt) if self.options.line
                else CONFIG.format(diag_port=free_port(), mqtt=mqtt))
        config_path.write_text(text)
        self.agent = Agent(load_config(config_path), handle_signals=False, watch_files=False)
        return self.agent

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        agent = self.prepare()
        self._quit = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stop_on_signals)
            await tg.start(agent.run)
            tg.start_soon(self._outages)
            if self.options.interactive:
                tg.start_soon(self._keys)
            tg.start_soon(self._show)
            await self._quit.wait()
            await agent.stop()  # lamps to on_exit, a stop event, offline to the broker
            tg.cancel_scope.cancel()

    async def _show(self) -> None:
        interval = 0.1 if self.options.interactive else 1.0
        end = self.started + self.options.seconds if self.options.seconds else None
        if self.options.interactive:
            self.out.write(HIDE_CURSOR)
        else:
            for note in self.notes:
                self.out.write(f"note: {note}\n")
            run_for = f"{self.options.seconds:g} s" if self.options.seconds else "until stopped"
            what = ("a line of three simulated machines, example rules, a virtual stack light "
                    "each" if self.options.line
                    else "simulated machine, example rules, virtual stack light")
            self.out.write(f"linelight demo: {what}; one line per second, {run_for}\n")
        self.out.flush()
        next_line = time.monotonic()
        while end is None or time.monotonic() < end:
            frame = self.frame()
            if self.options.interactive:
                size = shutil.get_terminal_size()
                self.out.write(render_screen(frame, size.columns, size.lines))
                self.out.flush()
            elif time.monotonic() >= next_line:
                self.out.write(render_line(frame) + "\n")
                self.out.flush()
                next_line += 1.0
            await anyio.sleep(interval)
        self.quit()

    async def _stop_on_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.quit()

    async def _keys(self) -> None:
        fd = sys.stdin.fileno()
        while True:
            await anyio.wait_readable(fd)
            key = os.read(fd, 1).decode(errors="ignore").lower()
            if key in ("q", ""):  # q, or end of input
                self.quit()
                return
            await self.on_key(key)

    def quit(self) -> None:
        if self._quit is not None:
            self._quit.set()

    @property
    def machine_name(self) -> str | None:
        """The line's machine the keys drive; None without a line."""
        return LINE_MACHINES[self.selected][0] if self.options.line else None

    async def on_key(self, key: str) -> None:
        agent = self.agent
        if agent is None or agent.hardware is None:
            return
        name = self.machine_name
        if self.options.line and key.isdigit() and 1 <= int(key) <= len(LINE_MACHINES):
            self.selected = int(key) - 1
            self.message = (f"{self.machine_name} chosen: f p m i a drive it, the panel below "
                            "shows it")
        elif key in KEY_MODES:
            agent.hardware.sim(f"{name}-sim" if name else None).set_mode(KEY_MODES[key])
            what = "back on its automatic cycle" if key == "a" else "set to " + KEY_MODES[key]
            self.message = f"{name or 'machine'} {what}"
        elif key == "o":
            await self.toggle_outage()
        elif key == "l":
            self.message = await agent.lamp_test()

    async def toggle_outage(self) -> None:
        if self.broker is None:
            self.message = "no broker to take down: " + INSTALL_HINT
        elif self.broker.running:
            await self._begin_outage()
        else:
            await self._end_outage()

    async def _begin_outage(self) -> None:
        assert self.broker is not None
        await anyio.to_thread.run_sync(self.broker.stop)
        self.outages += 1
        self.outage_until = time.monotonic() + self.plan.length
        self.message = "broker stopped: watch the queue fill; the lamps carry on"

    async def _end_outage(self) -> None:
        assert self.broker is not None
        await anyio.to_thread.run_sync(self.broker.start)
        self.outage_until = None
        self.next_outage = None
        if self.plan.every > 0:
            start = time.monotonic() + self.plan.every
            if self.plan.fits(start - self.started, self.options.seconds):
                self.next_outage = start
        self.message = "broker back: the backlog drains in order, live state first"

    async def _outages(self) -> None:
        while self.broker is not None:
            now = time.monotonic()
            if self.outage_until is not None and now >= self.outage_until:
                await self._end_outage()
            elif (self.outage_until is None and self.next_outage is not None
                  and now >= self.next_outage and self.broker.running):
                await self._begin_outage()
            await anyio.sleep(0.1)

    # -- what is shown ------------------------------------------------------------------------
    def frame(self) -> Frame:
        agent = self.agent
        assert agent is not None and agent.scan is not None and agent.journal is not None
        now = time.monotonic()
        name = self.machine_name  # the chosen machine of a line: the detail panel's
        lane = agent.scan.machines[self.selected if name else 0]
        view = lane.view
        hw = agent.hardware
        sim = hw.sim(f"{name}-sim" if name else None) if hw is not None else None
        phase, pinned = ("-", False)
        if sim is not None and sim.machine is not None:
            phase = sim.machine.phase_at(now)[0]
            pinned = sim.machine.mode is not None
        stack = (hw.towers.get(name) if name else hw.stacklight) if hw is not None else None
        ruleset = agent.config.machines[self.selected].ruleset if name else agent.config.ruleset
        levels = stack.levels(now) if stack is not None else {}
        # what the lamps show, the lamp test included (the rules' command is paused meanwhile)
        patterns = ({lamp: p.value for lamp, p in stack.patterns().items()} if stack is not None
                    else {lamp: p.value for lamp, p in view.lamps.items()})
        q = agent.journal.stats()
        fwd = agent.forwarder
        broker, url, error = "none", "", ""
        if fwd is not None:
            broker = "connected" if fwd.link.connected else "down"
            url, error = fwd.link.broker, fwd.link.last_error or ""
        sub = self.subscriber
        return Frame(
            elapsed=now - self.started, agent_id=agent.config.agent_id, phase=phase,
            pinned=pinned, state=view.state, code=view.code,
            state_for=now - view.state_since_mono, reason=view.reason,
            lamps={lamp: p for lamp, p in patterns.items() if lamp != "white"},
            levels=levels, signals=view.signals, counters=view.counters,
            inputs={n: s.value for n, s in sorted(view.snapshot.items())},
            queue_depth=q.depth + q.pending,
            queue_oldest=(time.time_ns() - q.oldest_enq_ns) / 1e9 if q.oldest_enq_ns else 0.0,
            seq_hwm=q.seq_hwm, dropped=q.dropped, broker=broker, broker_url=url,
            broker_error=error, outage=self._outage_text(now),
            received=sub.received if sub else 0, duplicates=sub.duplicates if sub else 0,
            out_of_order=sub.out_of_order if sub else 0, missing=sub.missing if sub else 0,
            last_seq=sub.last_seq if sub else 0,
            diagnostics_url=(f"http://{agent.diagnostics.bound[0][0]}:"
                             f"{agent.diagnostics.bound[0][1]}/"
                             if agent.diagnostics is not None and agent.diagnostics.bound else ""),
            rules_file=(f"rules.d/{name}.toml, {name}'s own copy of the example" if name
                        else str(rules_source())), rules=describe_rules(ruleset),
            message=self.message or (self.notes[0] if self.notes else ""),
            log_lines=list(self.log_tail.lines),
            machines=self._machines(now) if self.options.line else [],
            selected=self.selected, machine=name or "",
        )

    def _machines(self, now: float) -> list[MachineFrame]:
        """Every machine of the line: its simulated phase, state and lamps."""
        agent = self.agent
        assert agent is not None and agent.scan is not None and agent.hardware is not None
        out = []
        for lane in agent.scan.machines:
            sim = agent.hardware.sim(f"{lane.label}-sim")
            tower = agent.hardware.towers.get(lane.label)
            v = lane.view
            out.append(MachineFrame(
                name=lane.label, phase=sim.machine.phase_at(now)[0] if sim.machine else "-",
                state=v.state, code=v.code, state_for=now - v.state_since_mono,
                # what its tower shows, the lamp test included (as the chosen one's panel)
                lamps={lamp: p.value for lamp, p in
                       (tower.patterns() if tower is not None else v.lamps).items()
                       if lamp != "white"},
                levels=tower.levels(now) if tower is not None else {},
                counters=dict(v.counters)))
        return out

    def _outage_text(self, now: float) -> str:
        if self.broker is None:
            return ""
        if self.outage_until is not None:
            return f"broker stopped for the demo, back in {max(0.0, self.outage_until - now):.0f} s"
        key = self.options.interactive
        if self.next_outage is not None:
            return (f"next automatic outage in {max(0.0, self.next_outage - now):.0f} s"
                    + (" (or press o)" if key else ""))
        return "press o to stop the broker" if key else ""

    # -- tear-down ----------------------------------------------------------------------------
    async def close(self) -> str:
        """Stop everything the demo started; returns the closing summary."""
        agent = self.agent
        summary = ""
        if self.subscriber is not None and agent is not None and agent.journal is not None:
            last = agent.journal.stats().seq_hwm  # the stop event, flushed by agent.stop()
            with anyio.move_on_after(CATCH_UP_S):
                # the subscriber is a paho thread that signals nothing: poll its counter
                while self.subscriber.last_seq < last:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        if agent is not None and agent.journal is not None:
            q = agent.journal.stats()
            sub = self.subscriber
            summary = (f"demo over after {time.monotonic() - self.started:.0f} s: "
                       f"{q.seq_hwm} events recorded")
            if sub is not None:
                summary += (f", {sub.received} delivered to the subscriber "
                            f"({'in order' if sub.out_of_order == 0 else 'OUT OF ORDER'}, "
                            f"{sub.duplicates} re-sends removed by seq), {self.outages} outages")
            summary += f", {q.depth + q.pending} still queued"
            if sub is not None and self.options.line:  # each machine's share, on its own line
                summary = ("per machine: " + ", ".join(
                    f"{m} {sub.by_machine.get(m, 0)} events" for m, _, _ in LINE_MACHINES)
                    + " delivered\n" + summary)
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.options.data_dir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            summary += f"; data kept in {self.workdir}"
        return summary


class LogTail(logging.Handler):
    """Keeps the last few log lines for the screen instead of writing them over it."""

    def __init__(self, keep: int = 3) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=keep)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record).replace("\n", " ")[:200])


@contextlib.contextmanager
def _logs_into(tail: LogTail) -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = [tail]
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.handlers = saved
        root.setLevel(level)


async def run_demo(options: DemoOptions, out: TextIO) -> int:
    demo = Demo(options, out)
    terminal = _Terminal() if options.interactive else None
    try:
        with terminal or contextlib.nullcontext(), _logs_into(demo.log_tail):
            try:
                await demo.run()
            finally:
                with anyio.CancelScope(shield=True):
                    summary = await demo.close()
    finally:
        if options.interactive:
            out.write(SHOW_CURSOR + "\n")
    out.write(summary + "\n")
    out.flush()
    return 0


class _Terminal:
    """cbreak mode for single-key commands; Ctrl-C still interrupts. Restored on exit."""

    def __enter__(self) -> _Terminal:
        import termios
        import tty

        self.fd = sys.stdin.fileno()
        self.saved: Any = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
