"""Replay vs the C client: linelight's forwarder vs `mosquitto_pub -l`, same broker, same run.

    python -m bench.peers [--quick] [--events N]

`mosquitto_pub -l` reads one message per line from stdin and publishes each at QoS 1; it exits
once the broker acknowledged the last one (PUBACKs arrive in order on one connection), so
its rate is events / wall time of the process, start-up included (a few ms). It gets the same
events as JSON lines (the wire's JSON codec, one topic: `mosquitto_pub` publishes every line
to the topic it was given). The forwarder drains a journal holding the same number of events
(its default msgpack codec, a topic per event) against the same mosquitto, measured by
bench.replay's own routine. bench/replay.py measures the forwarder against bare paho.

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from agent.journal import Record
from agent.wire import Wire
from bench.replay import _event, _replay
from tests.fixtures.mosquitto import Mosquitto

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


def json_lines(count: int) -> bytes:
    """The same events bench.replay publishes, as the wire's JSON payloads, one per line."""
    wire = Wire(agent_id="bench-1", prefix="linelight/{agent}", codec="json")
    now = time.time_ns()
    out = []
    for i in range(count):
        ev = _event(i)
        msg = wire.event(Record(i + 1, 1, ev.kind, ev.name, ev.value, ev.ts_ns, now,
                                dict(ev.attrs)), historical=True)
        out.append(msg.payload)
    return b"\n".join(out) + b"\n"


def mosquitto_pub_rate(broker: Mosquitto, lines: bytes, count: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-l",
         "-t", "linelight/bench-1/events/signal/peer", "-i", f"peer-{time.monotonic_ns()}"],
        input=lines, capture_output=True, timeout=600, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"mosquitto_pub exited with {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
    return count / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 events, one round")
    parser.add_argument("--events", type=int, help="events per run (default 200,000)")
    args = parser.parse_args(argv)
    if not Path(MOSQUITTO_PUB).exists():
        print("peers: mosquitto_pub is not installed (apt install mosquitto-clients)",
              file=sys.stderr)
        return 1
    count = args.events or (50_000 if args.quick else 200_000)
    rounds = 1 if args.quick else 2
    logging.basicConfig(level=logging.WARNING)
    lines = json_lines(count)
    pub: list[float] = []
    fwd: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="linelight-peers-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker")
        broker.start()
        try:
            for _ in range(rounds):  # interleaved, so machine noise hits both
                pub.append(mosquitto_pub_rate(broker, lines, count))
                fwd.append(anyio.run(_replay, workdir, broker, count, 4096))
                for old in workdir.glob("journal-*.db*"):
                    old.unlink()
        finally:
            broker.kill()
    best_pub = max(pub)
    best_fwd = max(r["rate"] for r in fwd)
    figures: dict[str, Any] = {
        "events": count, "rounds": rounds,
        "mosquitto_pub_l_msgs_per_s": round(best_pub),
        "forwarder_replay_events_per_s": round(best_fwd),
        "ratio_forwarder_vs_mosquitto_pub": round(best_fwd / best_pub, 2),
        "json_line_bytes": round(len(lines) / count - 1, 1),
    }
    print(f"replay vs the C client: {count:,} events, {rounds} round(s), mosquitto on loopback")
    print(f"  {'mosquitto_pub -l -q 1 (C, libmosquitto)':<44}{best_pub:>12,.0f} msg/s  "
          f"JSON lines, {figures['json_line_bytes']:.0f} B")
    print(f"  {'linelight forwarder (journal -> PUBACK+delete)':<44}{best_fwd:>12,.0f} ev/s  "
          f"{best_fwd / best_pub:.2f}x mosquitto_pub")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
