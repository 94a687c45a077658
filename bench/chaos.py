"""Chaos: the real agent against a real broker through a stall/cut proxy, faults at random.

For a bounded time, `linelight run` (sim machine, the example rules, optionally a Modbus
source on a pymodbus server we can kill) publishes through a TCP proxy to a real mosquitto
while this harness injects, at random: kill -9 of the agent (then a restart, sometimes with a
small journal limit), broker restarts and kill -9, link stalls and cuts, disk-full episodes on
the journal's directory (a small tmpfs when we may mount one, else a free-disk reserve larger
than the disk; on the tmpfs also a start on the full disk after a kill -9), the journal's
-wal truncated or deleted between kills, rule reloads (good and broken) by SIGHUP, and Modbus
server disappearance.
A first round, in shuffled order, reaches every family in FAULT_GROUPS once (agent kill -9,
broker outage or kill, link stall or cut, disk full or max_bytes drop, rule reload) even in a
short run; the weighted random picks follow until the time is up.

An independent MQTT 5 subscriber with a persistent session, connected straight to the broker,
checks at the end that every seq up to the agent's committed high-water mark arrived or is
named by a gap event, that the first copies arrived in seq order, that every gap has a reason
a configured limit or an injected fault explains at that time, that every drop the agent
counted is announced by a gap, and that no seq was issued to two events; and, while running, that the tower never showed the
`producing` state or a lit green lamp (steady or blinking) while an input the producing
decision depends on was stale or bad (from /status: each tick's view holds its snapshot,
state and lamps together).

mosquitto acknowledges a message before it is on disk, so a broker killed with SIGKILL can
lose messages it had already acknowledged to the agent; that loss would be the broker's, not
the agent's. A broker kill is therefore injected after stalling the link and letting the
subscriber catch up, so the kill costs only what the agent still holds.

The checks themselves live in bench/chaos_check.py.

Run: `python -m bench.chaos --minutes N [--seed S] [--no-modbus] [--no-tmpfs] [--fault NAME]`. Exit 0 when no
invariant was violated, 1 otherwise; the last line is one JSON object with the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/chaos.py` as well as `python -m bench.chaos`
    sys.path.insert(0, str(ROOT))

from bench.chaos_check import (  # noqa: E402
    AGENT,
    DISK_REASONS,
    EVENTS,
    FILE_REASONS,
    NORMAL,
    SMALL,
    Book,
    Variant,
    Violation,
    Watcher,
    Window,
    check_delivery,
)
from harness.agent_proc import FAST_MACHINE, VIRTUAL_TOWER, forwarder_child  # noqa: E402
from harness.mosquitto import Mosquitto  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.proxy import TcpProxy  # noqa: E402
from harness.subscriber import Subscriber  # noqa: E402

RULES = ROOT / "examples" / "rules.d" / "machine.toml"
STALE_AFTER = 2.0

# The fault families every run reaches, however short: a shuffled first round injects one
# random member of each (a member can cover two families), then the weighted random picks
# take over. Without it a one-minute run could miss, say, every rule reload.
FAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "agent kill -9": ("agent_kill9",),
    "forwarder process kill -9": ("forwarder_kill9",),
    "broker outage or kill": ("broker_restart", "broker_kill9", "long_outage_small_journal"),
    "link stall or cut": ("link_stall", "link_cut"),
    "disk full or max_bytes drop": ("disk_full", "disk_full_at_start",
                                    "long_outage_small_journal"),
    "damaged files": ("wal_truncate", "wal_delete"),
    "rule reload": ("rules_reload_good", "rules_reload_broken"),
}


# ------------------------------------------------------------------------------ config

SIM_MACHINE = FAST_MACHINE  # the same fast machine cycle the integration tests use

# With a Modbus source the PLC's inputs come from the pymodbus server; the rest from the sim.
SIM_AND_MODBUS = """\
[sources.machine]
type = "sim"
period = "20ms"

[sources.machine.inputs]
door_closed = {{ wave = "square", period = "9s", duty = 0.85 }}
part_seen = {{ wave = "square", period = "400ms", duty = 0.3 }}
spindle_rpm = {{ wave = "random_walk", low = 2900.0, high = 3200.0, start = 3000.0, step = 15.0 }}

[sources.plc]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll = "100ms"
timeout = "300ms"
stale_after = "{stale}s"
reconnect_min = "500ms"
reconnect_max = "1s"

[sources.plc.inputs]
running = {{ coil = 0 }}
estop_ok = {{ discrete_input = 0 }}
fault_code = {{ holding_register = 0 }}
"""

TOWER = VIRTUAL_TOWER


def config_text(*, diag_port: int, mqtt_port: int, modbus_port: int | None, variant: Variant,
                min_free_disk: str) -> str:
    sources = (SIM_AND_MODBUS.format(port=modbus_port, stale=STALE_AFTER)
               if modbus_port is not None else SIM_MACHINE)
    return f"""\
agent_id = "{AGENT}"
data_dir = "data"
rules = ["rules.d/*.toml"]

[scan]
period = "20ms"
deadbands = {{ spindle_rpm = {variant.rpm_deadband} }}

[diagnostics]
listen = ["127.0.0.1:{diag_port}"]

[journal]
max_bytes = "{variant.max_bytes}"
min_free_disk = "{variant.min_free_disk or min_free_disk}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive = "2s"
backoff = {{ initial = "200ms", max = "1s" }}

{sources}
{TOWER}"""


def good_rules(flip: bool) -> str:
    """The example rules, with the overspeed threshold moved when `flip` (a real change)."""
    text = RULES.read_text()
    if flip:
        text = text.replace("spindle_rpm > 3100", "spindle_rpm > 3120")
    return text


BROKEN_RULES = (
    # a syntax error
    lambda text: text + "\n[[state]]\nname = \n",
    # a condition naming an input that does not exist
    lambda text: text.replace('when = "running"', 'when = "runing"'),
)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp-chaos")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ the agent

class Agent:
    """`python -m agent run --config F` as a subprocess, with /status over loopback HTTP."""

    def __init__(self, directory: Path, diag_port: int) -> None:
        self.dir = directory
        self.config = directory / "agent.toml"
        self.log_path = directory / "agent.log"
        self.port = diag_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.variant = NORMAL

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "linelight.agent", "run", "--config", str(self.config)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 3.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status",
                                        timeout=timeout) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise Violation("agent", f"the agent exited with {code} instead of starting; "
                                f"log tail:\n{self.log_tail()}")
            doc = self.status()
            if doc is not None and doc.get("ready") is True:
                return doc
            time.sleep(0.1)
        raise Violation("agent", f"the agent was not ready within {timeout:.0f} s; log tail:\n"
                        f"{self.log_tail()}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            code = None
        self.proc = None
        return code

    def hup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


# ------------------------------------------------------------------------------ Modbus device

class ModbusDevice:
    """A pymodbus server in its own process (`--modbus-server PORT`), so it can vanish."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.chaos", "--modbus-server", str(self.port)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, 20.0)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None


def _wait_port(port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def modbus_server(port: int) -> None:
    """The Modbus device: estop chain closed; `running` 3 s on / 1 s off; a fault every 12 s."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def main() -> None:
        device = SimDevice(id=0, simdata=(
            [SimData(0, count=1, values=0xFFFF, datatype=DataType.BITS)],  # discrete inputs
            [SimData(0, count=1, values=0xFFFF, datatype=DataType.BITS)],  # coils
            [SimData(0, count=4, values=0, datatype=DataType.REGISTERS)],  # holding
            [SimData(0, count=4, values=0, datatype=DataType.REGISTERS)],  # input registers
        ))
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        start = time.monotonic()
        while True:
            t = time.monotonic() - start
            running = (t % 4.0) < 3.0
            fault = 17 if (t % 12.0) > 11.0 else 0
            await server.context.async_setValues(1, 1, 0, [running])
            await server.context.async_setValues(1, 3, 0, [fault])
            await asyncio.sleep(0.1)

    asyncio.run(main())


# ------------------------------------------------------------------------------ the harness

class Chaos:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = work
        self.book = Book()
        self.broker = Mosquitto(work / "broker")
        self.agent_dir = work / "agent"
        self.data = self.agent_dir / "data"
        self.rules_dir = self.agent_dir / "rules.d"
        self.diag_port = free_port()
        self.agent = Agent(self.agent_dir, self.diag_port)
        self.modbus = ModbusDevice(free_port()) if args.modbus else None
        self.proxy: TcpProxy | None = None
        self.sub: Subscriber | None = None
        self.watcher: Watcher | None = None
        self.tmpfs = False
        self.flip = False
        self.first_seq = 1

    # -- set-up and tear-down ---------------------------------------------------------------
    def setup(self) -> None:
        self.data.mkdir(parents=True)
        self.rules_dir.mkdir(parents=True)
        if self.args.tmpfs:
            self.tmpfs = _mount_tmpfs(self.data, self.args.tmpfs_mib)
        write_atomically(self.rules_dir / "machine.toml", good_rules(self.flip))
        self.broker.start()
        self.proxy = TcpProxy("127.0.0.1", self.broker.port)
        self.sub = Subscriber("127.0.0.1", self.broker.port, [f"{EVENTS}#"],
                              client_id="chaos-checker").start()
        if self.modbus is not None:
            self.modbus.start()
        self.start_agent(NORMAL)
        self.watcher = Watcher(self.agent, self.sub, self.book)
        self.watcher.start()

    def teardown(self) -> None:
        if self.watcher is not None:
            self.watcher.halt.set()
            self.watcher.join(10)
        self.agent.kill9()
        if self.modbus is not None:
            self.modbus.kill9()
        if self.sub is not None:
            self.sub.stop()
        if self.proxy is not None:
            self.proxy.close()
        self.broker.kill()
        if self.tmpfs:
            _unmount(self.data)

    def write_config(self, variant: Variant) -> None:
        assert self.proxy is not None
        self.agent.config.write_text(config_text(
            diag_port=self.diag_port, mqtt_port=self.proxy.port,
            modbus_port=self.modbus.port if self.modbus else None, variant=variant,
            min_free_disk="2MiB" if self.tmpfs else "64MiB"))

    def start_agent(self, variant: Variant) -> None:
        self.write_config(variant)
        self.agent.variant = variant
        self.agent.start()
        status = self.agent.wait_ready()
        boot = int(status["queue"]["boot"])
        with self.book.lock:
            self.book.boots[boot] = variant

    def pick_variant(self) -> Variant:
        return SMALL if self.rng.random() < 0.3 else NORMAL

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> int:
        deadline = time.monotonic() + self.args.minutes * 60.0
        faults = self.fault_table()
        names = [n for n in faults if not self.args.fault or n in self.args.fault]
        weights = [faults[n][1] for n in names]
        opening = self.opening_round(names)
        while opening or time.monotonic() < deadline:  # the opening round always completes
            self.pause(self.rng.uniform(0.5, 2.5))
            name = opening.pop(0) if opening else self.rng.choices(names, weights)[0]
            self.book.faults[name] += 1
            print(f"chaos: {time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)
            try:
                faults[name][0]()
            except Violation as exc:
                self.book.violate(exc.kind, str(exc))
                break
        return self.finish()

    def opening_round(self, names: list[str]) -> list[str]:
        """One fault of each family in FAULT_GROUPS (among `names`), families shuffled."""
        groups = [[n for n in members if n in names] for members in FAULT_GROUPS.values()]
        self.rng.shuffle(groups)
        picked: list[str] = []
        for members in groups:
            if members and not any(n in picked for n in members):
                picked.append(self.rng.choice(members))
        return picked

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)
        if not self.agent.running:
            code = self.agent.proc.returncode if self.agent.proc else None
            self.book.violate("agent", f"the agent exited by itself ({code}); log tail:\n"
                              f"{self.agent.log_tail()}")
            self.start_agent(NORMAL)

    def fault_table(self) -> dict[str, tuple[Any, float]]:
        table: dict[str, tuple[Any, float]] = {
            "agent_kill9": (self.fault_agent_kill, 2.0),
            "forwarder_kill9": (self.fault_forwarder_kill, 1.0),
            "broker_restart": (self.fault_broker_restart, 1.0),
            "broker_kill9": (self.fault_broker_kill, 1.0),
            "long_outage_small_journal": (self.fault_long_outage, 0.6),
            "link_stall": (self.fault_link_stall, 1.5),
            "link_cut": (self.fault_link_cut, 1.5),
            "disk_full": (self.fault_disk_full, 1.0),
            "wal_truncate": (self.fault_wal_truncate, 0.5),
            "wal_delete": (self.fault_wal_delete, 0.5),
            "rules_reload_good": (self.fault_reload_good, 1.0),
            "rules_reload_broken": (self.fault_reload_broken, 1.0),
        }
        if self.tmpfs:  # a disk can be really full only on the harness's own small tmpfs
            table["disk_full_at_start"] = (self.fault_disk_full_at_start, 0.7)
        if self.modbus is not None:
            table["modbus_gone"] = (self.fault_modbus_gone, 1.0)
        return table

    def mark_drain(self, fault: str) -> None:
        status = self.agent.status()
        if status is not None and "queue" in status:
            with self.book.lock:
                self.book.drains.append((int(status["queue"]["seq_hwm"]), time.monotonic(),
                                         fault))

    # -- faults -----------------------------------------------------------------------------
    def fault_agent_kill(self) -> None:
        self.agent.kill9()
        time.sleep(self.rng.uniform(0.0, 1.0))
        self.start_agent(self.pick_variant())
        self.mark_drain("agent_kill9")

    def fault_forwarder_kill(self) -> None:
        """kill -9 of the agent's forwarder process only: the agent restarts it, the lamps
        go on, and the new one re-sends from the oldest row still queued."""
        child, deadline = None, time.monotonic() + 10.0  # it starts just after READY
        while child is None and self.agent.proc is not None and time.monotonic() < deadline:
            child = forwarder_child(self.agent.proc.pid)
            time.sleep(0.05)
        if child is None:
            self.book.violate("agent", "the agent runs no forwarder process to kill")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        self.mark_drain("forwarder_kill9")

    def fault_broker_restart(self) -> None:
        self.broker.stop()
        time.sleep(self.rng.uniform(0.5, 4.0))
        self.broker.start()
        self.mark_drain("broker_restart")

    def fault_long_outage(self) -> None:
        """An agent restarted with the smallest journal, then a broker outage long enough to
        overflow it: the oldest low-class events must go, each drop named by a gap event."""
        self.agent.kill9()
        self.start_agent(SMALL)
        self.broker.stop()
        time.sleep(self.rng.uniform(14.0, 20.0))
        self.broker.start()
        self.mark_drain("long_outage_small_journal")

    def fault_broker_kill(self) -> None:
        assert self.proxy is not None and self.sub is not None
        self.proxy.stall()
        try:
            self._wait_subscriber_caught_up()
            self.broker.kill()
            time.sleep(self.rng.uniform(0.2, 3.0))
            self.broker.start()
        finally:
            self.proxy.resume()
        self.mark_drain("broker_kill9")

    def _wait_subscriber_caught_up(self, quiet: float = 1.0, limit: float = 20.0) -> None:
        """With the link stalled, wait until the subscriber is connected and got nothing new
        for `quiet` seconds: then the broker holds nothing it acknowledged and did not pass on."""
        assert self.sub is not None
        deadline = time.monotonic() + limit
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = len(self.sub.messages)
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            if (self.sub._client.is_connected()  # noqa: SLF001 (the fixture has no property)
                    and time.monotonic() - last_change >= quiet):
                return
            time.sleep(0.05)
        raise Violation("harness", "the subscriber did not settle within "
                        f"{limit:.0f} s with the link stalled")

    def fault_link_stall(self) -> None:
        assert self.proxy is not None
        self.proxy.stall()
        time.sleep(self.rng.uniform(1.0, 7.0))  # longer than 1.5 x keepalive (3 s) at times
        self.proxy.resume()
        self.mark_drain("link_stall")

    def fault_link_cut(self) -> None:
        assert self.proxy is not None
        self.proxy.cut()
        self.mark_drain("link_cut")

    def fault_disk_full(self) -> None:
        """A full disk while the link is stalled, so the queue has to grow and cannot."""
        assert self.proxy is not None
        window = Window(DISK_REASONS, time.time_ns())
        with self.book.lock:
            self.book.windows.append(window)
        self.proxy.stall()
        try:
            if self.tmpfs:
                filler = self.data / "chaos-filler"
                _fill(filler)
                time.sleep(self.rng.uniform(1.0, 4.0))
                filler.unlink()
            else:
                # No mount allowed: a free-disk reserve larger than the disk has the same
                # effect on the journal (it stops growing and drops oldest-first).
                self.agent.kill9()
                self.start_agent(Variant("no-free-disk", min_free_disk="1000000GiB"))
                time.sleep(self.rng.uniform(1.0, 4.0))
                self.agent.kill9()
                self.start_agent(NORMAL)
        finally:
            self.proxy.resume()
            window.end_ns = time.time_ns()
        self.mark_drain("disk_full")

    def fault_disk_full_at_start(self) -> None:
        """kill -9 during an outage, then a start on a full disk: the agent must come up
        (lamps, rules, degraded health), count what it refuses and recover when space returns."""
        assert self.proxy is not None
        window = Window(DISK_REASONS, time.time_ns())
        with self.book.lock:
            self.book.windows.append(window)
        self.proxy.stall()
        filler = self.data / "chaos-filler"
        try:
            time.sleep(self.rng.uniform(0.2, 1.0))
            self.agent.kill9()
            _fill(filler)
            self.start_agent(self.pick_variant())  # a Violation if it does not get ready
            time.sleep(self.rng.uniform(1.0, 4.0))
        finally:
            filler.unlink(missing_ok=True)
            self.proxy.resume()
            window.end_ns = time.time_ns()
        self.mark_drain("disk_full_at_start")

    def fault_wal_truncate(self) -> None:
        self._damage_wal("wal_truncate", keep=self.rng.uniform(0.1, 0.9))

    def fault_wal_delete(self) -> None:
        self._damage_wal("wal_delete", keep=0.0)

    def _damage_wal(self, fault: str, keep: float) -> None:
        """Between two kills, cut the journal's -wal to `keep` of its size (0: delete it):
        committed events are lost, and the journal must say so with a `lost` gap and never
        issue their seqs again."""
        assert self.proxy is not None
        window = Window(FILE_REASONS, time.time_ns())
        with self.book.lock:
            self.book.windows.append(window)
        self.proxy.stall()  # events pile up in the -wal, unsent
        try:
            time.sleep(self.rng.uniform(0.5, 2.0))
            self.agent.kill9()
            wal = self.data / "journal.db-wal"
            if wal.exists():
                if keep == 0.0:
                    wal.unlink()
                else:
                    os.truncate(wal, int(wal.stat().st_size * keep))
            self.start_agent(self.pick_variant())
        finally:
            self.proxy.resume()
            window.end_ns = time.time_ns()
        self.mark_drain(fault)

    def fault_reload_good(self) -> None:
        before = self._rules_status()
        self.flip = not self.flip
        write_atomically(self.rules_dir / "machine.toml", good_rules(self.flip))
        self.agent.hup()
        self._wait_rules(lambda r: r["fingerprint"] != before["fingerprint"],
                         "a good rule file to be loaded")
        self.book.reloads_ok += 1

    def fault_reload_broken(self) -> None:
        before = self._rules_status()
        breaker = self.rng.choice(BROKEN_RULES)
        write_atomically(self.rules_dir / "machine.toml", breaker(good_rules(self.flip)))
        try:
            self.agent.hup()
            self._wait_rules(lambda r: r["rejections"] > before["rejections"],
                             "a broken rule file to be rejected")
            after = self._rules_status()
            if after["fingerprint"] != before["fingerprint"]:
                raise Violation("reload", "a broken rule file replaced the running rules")
            self.book.reloads_rejected += 1
        finally:
            # Put the good file back before anything can restart the agent.
            write_atomically(self.rules_dir / "machine.toml", good_rules(self.flip))
            self.agent.hup()
        self._wait_rules(lambda r: r["fingerprint"] == before["fingerprint"],
                         "the good rules to be back after a rejected reload")

    def _rules_status(self) -> dict[str, Any]:
        status = self.agent.status()
        if status is None or "rules" not in status:
            raise Violation("agent", "no /status with rules from the agent")
        rules: dict[str, Any] = status["rules"]
        return rules

    def _wait_rules(self, predicate: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.agent.status()
            if status is not None and predicate(status.get("rules") or {}):
                return
            if not self.agent.running:
                raise Violation("agent", f"the agent died waiting for {what}:\n"
                                f"{self.agent.log_tail()}")
            time.sleep(0.1)
        raise Violation("reload", f"timed out after {timeout:.0f} s waiting for {what}")

    def fault_modbus_gone(self) -> None:
        assert self.modbus is not None
        self.modbus.kill9()
        # Longer than stale_after at times, so the inputs do go stale.
        time.sleep(self.rng.uniform(1.0, 3.0 * STALE_AFTER))
        self.modbus.start()

    # -- the end ----------------------------------------------------------------------------
    def finish(self) -> int:
        assert self.sub is not None and self.proxy is not None
        if not self.broker.running:
            self.broker.start()
        self.proxy.resume()
        if not self.agent.running:
            self.start_agent(NORMAL)
        status = self.agent.wait_ready()
        hwm = int(status["queue"]["seq_hwm"])
        started = time.monotonic()
        summary: dict[str, Any] = {}
        try:
            self.sub.wait_for(lambda msgs: any(m.topic.startswith(EVENTS) and m.seq is not None
                                               and m.seq >= hwm for m in msgs),
                              timeout=180.0, what=f"seq {hwm} (the last committed at the end)")
        except TimeoutError as exc:
            self.book.violate("lost", f"the backlog did not drain after the faults: {exc}")
        final_drain = time.monotonic() - started
        if self.watcher is not None:
            self.watcher.halt.set()
            self.watcher.join(10)
            self.watcher.settle_drains()
        code = self.agent.stop()
        if code != 0:
            self.book.violate("agent", f"SIGTERM at the end: exit code {code}")
        summary.update(check_delivery(self.sub, hwm, self.book, first_seq=self.first_seq))
        summary["final_drain_s"] = round(final_drain, 2)
        summary.update(self.check_journal_offline(hwm, int(summary.get("dropped") or 0)))
        return self.report(summary)

    def check_journal_offline(self, hwm: int, dropped_seen: int) -> dict[str, Any]:
        """The stopped agent's journal, read with `linelight queue stats` as an engineer would:
        its seq never went backwards, it never needed salvage, it counted every drop."""
        done = subprocess.run(
            [sys.executable, "-m", "linelight.agent", "queue", "stats", "--db",
             str(self.data / "journal.db"), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        try:
            stats = json.loads(done.stdout)
        except ValueError:
            self.book.violate("journal", f"`linelight queue stats` failed ({done.returncode}): "
                              f"{done.stderr.strip()[-300:]}")
            return {}
        if int(stats["seq_hwm"]) < hwm:
            self.book.violate("seq", f"the journal's seq high-water mark {stats['seq_hwm']} is "
                              f"below {hwm}, which the running agent reported")
        damaged = self.book.faults["wal_truncate"] + self.book.faults["wal_delete"]
        if int(stats["recovered"]) and not damaged:  # a cut -wal may cut a checkpoint too
            self.book.violate("journal", f"the journal was salvaged {stats['recovered']} times; "
                              "kill -9 and a full disk must not corrupt it")
        if dropped_seen > int(stats["dropped"]):
            self.book.violate("gap", f"gap events name {dropped_seen} dropped events, the "
                              f"journal counted {stats['dropped']}")
        return {"journal_seq_hwm": stats["seq_hwm"], "journal_dropped": stats["dropped"],
                "journal_boots": stats["boot"], "journal_depth_at_end": stats["depth"]}

    def report(self, summary: dict[str, Any]) -> int:
        b = self.book
        drains = b.drain_times
        summary.update(
            minutes=self.args.minutes, seed=self.args.seed,
            faults=dict(sorted(b.faults.items())), faults_total=sum(b.faults.values()),
            families={g: sum(b.faults[n] for n in members)
                      for g, members in FAULT_GROUPS.items()},
            disk_full_mode="tmpfs" if self.tmpfs else "min_free_disk",
            modbus=self.modbus is not None,
            status_polls=b.status_polls, stale_views=b.stale_seen,
            states_seen=dict(b.states_seen), max_queue_depth=b.max_depth,
            reloads_ok=b.reloads_ok, reloads_rejected=b.reloads_rejected,
            boots=len(b.boots), small_journal_boots=sum(1 for v in b.boots.values()
                                                        if v is SMALL),
            drains_measured=len(drains),
            max_drain_s=round(max(drains), 2) if drains else None,
            undrained=len(b.drains),
            violations=[{"kind": k, "message": m[:500]} for k, m in b.violations],
        )
        print(f"chaos: {summary['minutes']} min, seed {summary['seed']}, "
              f"{summary['faults_total']} faults injected")
        print(f"  {'fault':<28}{'count':>6}")
        for name, n in summary["faults"].items():
            print(f"  {name:<28}{n:>6}")
        print("  families: " + ", ".join(f"{g} {n}" for g, n in summary["families"].items()))
        print(f"  events received {summary.get('received')}, unique {summary.get('unique')}, "
              f"duplicates {summary.get('duplicates')}, committed up to seq {summary.get('hwm')}")
        print(f"  journal offline: seq_hwm {summary.get('journal_seq_hwm')}, dropped "
              f"{summary.get('journal_dropped')}, boots {summary.get('journal_boots')}")
        print(f"  gaps {summary.get('gap_events')} ({summary.get('drop_reasons')}), "
              f"max queue depth {b.max_depth}, max drain {summary['max_drain_s']} s "
              f"({len(drains)} drains), final drain {summary.get('final_drain_s')} s")
        print(f"  tower checked in {b.status_polls} status views, {b.stale_seen} with a stale "
              f"input; states seen {dict(b.states_seen)}")
        print(f"  violations: {len(b.violations)}"
              + "".join(f"\n    {k}: {m[:300]}" for k, m in b.violations))
        print(json.dumps({"chaos": summary}))
        return 1 if b.violations else 0


def _mount_tmpfs(path: Path, mib: int) -> bool:
    """A size-limited tmpfs for the journal, when we are root and may mount; else False."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", "tmpfs",
                           str(path)], capture_output=True, check=False)
    return done.returncode == 0


def _unmount(path: Path) -> None:
    """Unmount the journal's tmpfs; a lazy unmount only if it stays busy for seconds."""
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(path: Path) -> None:
    """Write zeros until the filesystem is full (ENOSPC)."""
    chunk = b"\0" * (256 * 1024)
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="how long to inject faults (the final drain comes on top)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--no-modbus", dest="modbus", action="store_false",
                        help="sim source only, no Modbus device to make disappear")
    parser.add_argument("--no-tmpfs", dest="tmpfs", action="store_false",
                        help="disk-full episodes by a free-disk reserve instead of a full tmpfs")
    parser.add_argument("--tmpfs-mib", type=int, default=48)
    parser.add_argument("--fault", action="append", metavar="NAME",
                        help="inject only this kind of fault (repeatable; default: all)")
    parser.add_argument("--modbus-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.modbus_server:
        modbus_server(args.modbus_server)
        return 0
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        print("chaos: mosquitto is not installed (apt install mosquitto)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="linelight-chaos-"))
    chaos = Chaos(args, work)
    try:
        chaos.setup()
        return chaos.run()
    except Violation as exc:
        chaos.book.violate(exc.kind, str(exc))
        return chaos.report({})
    finally:
        chaos.teardown()
        if chaos.book.violations:
            print(f"chaos: work directory kept for inspection: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
