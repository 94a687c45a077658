"""Edge buffer through an outage: linelight vs a mosquitto bridge used as the edge buffer.

Scenario, the same for every contender: an upstream broker with an independent subscriber
(persistent session); the upstream goes down; 10,000 events are handed to the edge buffer;
the edge process is killed with SIGKILL in the middle of the outage and restarted; the
upstream comes back. We count what reached the subscriber: events lost (accepted by the edge
but never delivered), duplicates, order, the edge's intake rate and the time to drain.

Contenders:
- `bridge-default`: an edge mosquitto with persistence on and a `cleansession false` bridge,
  everything else as Debian ships it (max_queued_messages 1000, autosave every 1800 s).
- `bridge-tuned`: the same with `max_queued_messages 0` and `autosave_on_changes true`
  with `autosave_interval 1` (save the in-memory database after every change: the only setting
  that survives kill -9 without loss).
- `linelight`: the journal and forwarder in a child process (`edge_child` below), events handed
  to the journal as the scan loop does and counted as accepted once the last one is durable.

Run: `python -m bench.bridge [--events N] [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.ports import free_port

HOST = "127.0.0.1"
TOPIC_PREFIX = "bench/outage"
PAYLOAD_PAD = 92  # ~100-byte payloads, like the journal benchmark's events


# ---------------------------------------------------------------- processes

def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing is listening on {HOST}:{port} after {timeout:.0f} s")


class Mosquitto:
    """One mosquitto process with its own config file and persistence directory."""

    def __init__(self, workdir: Path, name: str, port: int, extra: str = "") -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            f"listener {port} {HOST}\n"
            "allow_anonymous true\n"
            # Started as root, mosquitto would switch to the `mosquitto` user and could not
            # write its database into our private scratch directory.
            + ("user root\n" if os.geteuid() == 0 else "")
            + "persistence true\n"
            f"persistence_location {self.dir}/\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        """Clean stop (SIGTERM): mosquitto saves its database on the way out."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None


# ---------------------------------------------------------------- the independent subscriber

def payload_seq(payload: bytes) -> int | None:
    """The event's seq from any of the payloads used here (plain, JSON or msgpack)."""
    if payload[:1] == b"#":
        return int(payload[1:11])
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        doc = json.loads(payload)
        if isinstance(doc, dict) and isinstance(doc.get("seq"), int):
            return int(doc["seq"])
    try:
        import msgpack

        doc = msgpack.unpackb(payload, raw=False)
    except Exception:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("seq"), int):
        return int(doc["seq"])
    return None


@dataclass
class Received:
    seqs: list[int] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None


class Subscriber:
    """A paho client with a persistent session (MQTT 3.1.1, clean session off) on upstream."""

    def __init__(self, port: int, topic: str, client_id: str) -> None:
        self.topic = topic
        self.port = port
        self.got = Received()
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        self.connected.clear()

    def _on_message(self, client, userdata, msg):  # type: ignore[no-untyped-def]
        seq = payload_seq(msg.payload)
        if seq is None:
            return
        now = time.monotonic()
        with self.lock:
            self.got.seqs.append(seq)
            if self.got.first_at is None:
                self.got.first_at = now
            self.got.last_at = now

    def start(self) -> None:
        self.client.connect(HOST, self.port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(15):
            raise RuntimeError(f"subscriber could not connect to {HOST}:{self.port}")

    def reset(self) -> None:
        with self.lock:
            self.got = Received()

    def snapshot(self) -> Received:
        with self.lock:
            return Received(list(self.got.seqs), self.got.first_at, self.got.last_at)

    def wait_for(self, expected: set[int], *, idle: float, limit: float) -> Received:
        """Wait until every expected seq arrived, or nothing new came for `idle` seconds after
        the first message (or `limit` seconds passed)."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            got = self.snapshot()
            if expected and expected.issubset(got.seqs):
                return got
            last = got.last_at if got.last_at is not None else start
            if time.monotonic() - last > idle:
                return got
            time.sleep(0.05)
        return self.snapshot()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- results

@dataclass
class OutageResult:
    contender: str
    events: int
    accepted: int  # acknowledged by the edge buffer before the kill
    delivered: int  # unique seqs that reached the subscriber
    lost: int  # accepted but never delivered
    duplicates: int
    in_order: bool  # order kept after removing duplicates
    intake_per_s: float
    first_delivery_s: float | None  # upstream start -> first event at the subscriber
    drain_s: float | None  # upstream start -> last event at the subscriber
    note: str = ""


def judge(contender: str, events: int, accepted: set[int], got: Received, intake: float,
          upstream_at: float, note: str = "") -> OutageResult:
    seen: set[int] = set()
    unique: list[int] = []
    for s in got.seqs:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return OutageResult(
        contender=contender,
        events=events,
        accepted=len(accepted),
        delivered=len(seen),
        lost=len(accepted - seen),
        duplicates=len(got.seqs) - len(unique),
        in_order=unique == sorted(unique),
        intake_per_s=round(intake, 1),
        first_delivery_s=None if got.first_at is None else round(got.first_at - upstream_at, 3),
        drain_s=None if got.last_at is None else round(got.last_at - upstream_at, 3),
        note=note,
    )


# ---------------------------------------------------------------- mosquitto bridge contender

DEFAULT_EDGE = ""  # Debian's mosquitto.conf sets only persistence and its location
TUNED_EDGE = "max_queued_messages 0\nautosave_on_changes true\nautosave_interval 1\n"
UPSTREAM = "max_queued_messages 0\n"  # the upstream must not be the bottleneck


def bridge_conf(upstream_port: int) -> str:
    # restart_timeout 1: both contenders retry the upstream every second, so the drain time
    # measures the buffer, not the reconnect backoff.
    return (
        "connection edge-bridge\n"
        f"address {HOST}:{upstream_port}\n"
        f"topic {TOPIC_PREFIX}/# out 1\n"
        "cleansession false\n"
        "clientid edge-bridge\n"
        "restart_timeout 1\n"
        "try_private false\n"
    )


def publish_all(port: int, events: int, topic: str) -> tuple[set[int], float]:
    """Publish `events` QoS 1 messages to the edge; returns the acknowledged seqs and the rate."""
    count = 0
    lock = threading.Lock()
    done = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties):  # type: ignore[no-untyped-def]
        # Runs on paho's thread under paho's own lock: never take a lock publish() waits on.
        nonlocal count
        with lock:
            count += 1
            if count >= events:
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-producer")
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(HOST, port, keepalive=30)
    client.loop_start()
    pad = b"x" * PAYLOAD_PAD
    start = time.monotonic()
    infos = [client.publish(topic, b"#%010d" % seq + pad, qos=1) for seq in range(1, events + 1)]
    done.wait(600)
    acked = {seq for seq, info in enumerate(infos, 1) if info.is_published()}
    elapsed = time.monotonic() - start
    client.disconnect()
    client.loop_stop()
    return acked, len(acked) / elapsed if elapsed > 0 else 0.0


def run_bridge(contender: str, edge_extra: str, events: int, workdir: Path, *,
               crash: bool = True, idle: float = 12.0) -> OutageResult:
    up = Mosquitto(workdir, f"{contender}-upstream", free_port(), UPSTREAM)
    edge_port = free_port()
    edge = Mosquitto(workdir, f"{contender}-edge", edge_port, edge_extra + bridge_conf(up.port))
    topic = f"{TOPIC_PREFIX}/{contender}"
    up.start()
    sub = Subscriber(up.port, f"{TOPIC_PREFIX}/#", f"bench-sub-{contender}")
    sub.start()
    edge.start()
    try:
        # Prove the path works before the outage: a probe through the bridge reaches upstream.
        probe_ok = _probe(edge_port, sub, f"{topic}/probe")
        if not probe_ok:
            raise RuntimeError(f"{contender}: the bridge never delivered a probe upstream")
        sub.reset()
        up.stop()
        _wait_bridge_down(edge_port)
        accepted, rate = publish_all(edge_port, events, topic)
        if crash:
            edge.kill()  # kill -9 mid-outage: everything was acknowledged before this
        else:
            edge.stop()  # a clean restart instead: shows what the queue kept at all
        edge.start()
        upstream_at = time.monotonic()
        up.start()
        got = sub.wait_for(accepted, idle=idle, limit=300.0)
        return judge(contender, events, accepted, got, rate, upstream_at,
                     "" if crash else "SIGTERM instead of kill -9")
    finally:
        sub.close()
        edge.kill()
        up.stop()


def _probe(edge_port: int, sub: Subscriber, topic: str) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-probe")
    client.connect(HOST, edge_port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            client.publish(topic, b"#%010d" % 0, qos=1).wait_for_publish(5)
            time.sleep(0.2)
            if 0 in sub.snapshot().seqs:
                return True
        return False
    finally:
        client.disconnect()
        client.loop_stop()


def _wait_bridge_down(edge_port: int) -> None:
    """Wait until the edge reports its bridge disconnected ($SYS notification, value 0)."""
    state = threading.Event()

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        if msg.payload == b"0":
            state.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-watch")
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe("$SYS/broker/connection/+/state", qos=1)
    client.connect(HOST, edge_port)
    client.loop_start()
    try:
        if not state.wait(30):
            raise RuntimeError("the edge bridge never reported its upstream connection down")
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------- linelight contender

def run_linelight(events: int, workdir: Path, *, idle: float = 12.0) -> OutageResult:
    up = Mosquitto(workdir, "linelight-upstream", free_port(), UPSTREAM)
    journal = workdir / "linelight-edge" / "journal.db"
    journal.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TOPIC_PREFIX}/linelight"
    up.start()
    sub = Subscriber(up.port, f"{prefix}/events/#", "bench-sub-linelight")
    sub.start()
    up.stop()
    child = _spawn_edge(journal, up.port, prefix, events)
    try:
        accepted: set[int] = set()
        rate = 0.0
        assert child.stdout is not None
        for line in child.stdout:
            words = line.split()
            if words and words[0] == "DURABLE":
                accepted = set(range(int(words[1]), int(words[2]) + 1))
                rate = float(words[3])
                break
        if not accepted:
            raise RuntimeError(f"linelight edge child exited ({child.wait()}) before reporting")
        child.kill()  # kill -9 mid-outage: every event above was durable before this
        child.wait()
        child = _spawn_edge(journal, up.port, prefix, 0)
        upstream_at = time.monotonic()
        up.start()
        got = sub.wait_for(accepted, idle=idle, limit=300.0)
        return judge("linelight", events, accepted, got, rate, upstream_at)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sub.close()
        up.stop()


def _spawn_edge(journal: Path, port: int, prefix: str, events: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.bridge", "--edge-child", str(journal), "--port", str(port),
         "--prefix", prefix, "--events", str(events)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def edge_child(db: str, port: int, prefix: str, events: int) -> None:
    """The linelight edge: journal + forwarder in one process, as the agent runs them.

    Hands `events` ~100-byte events to the journal the way the scan loop does (`submit`, no
    waiting), awaits the durability of the last one, prints `DURABLE first last rate`, and
    keeps forwarding until killed. With `events` 0 it only forwards what is queued.
    """
    import anyio

    from linelight.agent import __version__
    from linelight.agent.journal import Event, Journal
    from linelight.agent.mqtt.config import MqttSettings
    from linelight.agent.mqtt.forwarder import Forwarder

    logging.basicConfig(level=logging.ERROR)  # "broker unreachable" is the point here

    async def main() -> None:
        journal = Journal.open(db)
        # Reconnect every second at most, like the bridge's `restart_timeout 1`.
        settings = MqttSettings(host=HOST, port=port, topic_prefix=prefix, keepalive=5.0,
                                backoff_initial=0.2, backoff_max=1.0)
        forwarder = Forwarder(journal, settings, agent_id="bench-edge", boot=journal.boot,
                              version=__version__)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(journal.run)
                await tg.start(forwarder.run)
                if events:
                    first = journal.newest_seq + 1
                    pad = "x" * 60
                    start = time.perf_counter()
                    for i in range(events - 1):
                        journal.submit(Event("signal", "part_seen", i, time.time_ns(),
                                             {"pad": pad}))
                    last = await journal.append(Event("signal", "part_seen", events - 1,
                                                      time.time_ns(), {"pad": pad}))
                    elapsed = time.perf_counter() - start
                    if last is None or last - first + 1 != events:
                        raise SystemExit(f"edge child: expected {events} durable events "
                                         f"from seq {first}, the last append returned {last}")
                    print(f"DURABLE {first} {last} {events / elapsed:.1f}", flush=True)
                await anyio.sleep_forever()
        finally:
            journal.close()

    anyio.run(main)


# ---------------------------------------------------------------- table

def table(results: list[OutageResult]) -> str:
    head = ("contender", "accepted", "delivered", "lost", "dups", "order", "intake/s",
            "1st s", "drain s")
    rows = [head]
    for r in results:
        rows.append((
            r.contender, str(r.accepted), str(r.delivered), str(r.lost), str(r.duplicates),
            "kept" if r.in_order else "BROKEN", f"{r.intake_per_s:,.0f}",
            "-" if r.first_delivery_s is None else f"{r.first_delivery_s:.2f}",
            "-" if r.drain_s is None else f"{r.drain_s:.2f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    notes = [f"  {r.contender}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="linelight-bridge-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


CONTENDERS = ["bridge-default", "bridge-default-sigterm", "bridge-tuned", "linelight"]
DEFAULT_CONTENDERS = ["bridge-default", "bridge-default-sigterm", "bridge-tuned", "linelight"]


def measure(events: int, contenders: list[str], *, quick: bool = False) -> list[OutageResult]:
    """Run each contender in turn. In quick mode the tuned bridge gets a fifth of the events:
    it saves its whole database after every message, so its intake slows as the queue grows."""
    results: list[OutageResult] = []
    # The bridge reconnects about 6 s after its upstream returns (restart_timeout 1 or not):
    # wait long enough after the last message that a slow start is not counted as a loss.
    idle = 12.0
    with scratch() as work:
        for name in contenders:
            try:
                if name == "bridge-default":
                    results.append(run_bridge(name, DEFAULT_EDGE, events, work, idle=idle))
                elif name == "bridge-default-sigterm":
                    results.append(run_bridge(name, DEFAULT_EDGE, events, work, crash=False,
                                              idle=idle))
                elif name == "bridge-tuned":
                    n = max(1, events // 5) if quick else events
                    r = run_bridge(name, TUNED_EDGE, n, work, idle=idle)
                    if quick:
                        r.note = f"quick: {n:,} events only"
                    results.append(r)
                else:
                    results.append(run_linelight(events, work, idle=idle))
            except Exception as exc:  # one contender failing must not hide the others
                print(f"bridge: {name} could not be measured: {exc}", file=sys.stderr)
    return results


def figures(results: list[OutageResult]) -> dict[str, object]:
    out: dict[str, object] = {r.contender: asdict(r) for r in results}
    by = {r.contender: r for r in results}
    ll, tuned = by.get("linelight"), by.get("bridge-tuned")
    if ll and tuned and tuned.intake_per_s:
        out["linelight_vs_tuned_bridge_intake"] = round(ll.intake_per_s / tuned.intake_per_s, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true",
                        help="the tuned bridge gets a fifth of the events (it is slow)")
    parser.add_argument("--only", action="append", choices=CONTENDERS)
    parser.add_argument("--edge-child", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.edge_child:
        edge_child(args.edge_child, args.port, args.prefix, args.events)
        return 0
    if shutil.which("mosquitto") is None:
        print("bridge: mosquitto is not installed (apt install mosquitto)", file=sys.stderr)
        return 1
    results = measure(args.events, args.only or DEFAULT_CONTENDERS, quick=args.quick)
    print(f"Edge buffer through an outage: {args.events:,} events published while upstream is "
          "down, edge killed with SIGKILL, restarted, upstream back")
    print(table(results))
    print(json.dumps({"bridge": figures(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
