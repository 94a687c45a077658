"""Replay vs the C client: linelight's forwarder vs `mosquitto_pub -l`, same broker, same run.

    python -m bench.peers [--quick] [--events N]

`mosquitto_pub -l` reads one message per line from stdin and publishes each at QoS 1; it exits
once the broker acknowledged the last one (PUBACKs arrive in order on one connection), so
its rate is events / wall time of the processes, start-up included (a few ms each; it is fed
at most 50,000 lines per process, see CHUNK: past 65,535 lines it stops early). It gets the same
events as JSON lines (the wire's JSON codec, one topic: `mosquitto_pub` publishes every line
to the topic it was given). The forwarder drains a journal holding the same number of events
(its default JSON codec, a topic per event; msgpack before issue 14) against the same mosquitto, measured by
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

from bench.replay import _event, _replay
from harness.mosquitto import Mosquitto
from linelight.agent.journal import Record
from linelight.agent.mqtt.wire import Wire

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


def json_lines(count: int) -> list[bytes]:
    """The same events bench.replay publishes, as the wire's JSON payloads, one per line."""
    wire = Wire(agent_id="bench-1", prefix="linelight/{agent}", codec="json")
    now = time.time_ns()
    out = []
    for i in range(count):
        ev = _event(i)
        msg = wire.event(Record(i + 1, 1, ev.kind, ev.name, ev.value, ev.ts_ns, now,
                                dict(ev.attrs)), historical=True)
        out.append(msg.payload)
    return out


TOPIC = "linelight/bench-1/events/signal/peer"
# mosquitto_pub -l stops once the PUBACK of the packet id it sent last arrives; packet ids are
# 16-bit, so past 65,535 lines an earlier message with the same id ends the run early and the
# rest is dropped (seen here: 456 of 200,000 delivered). It is fed at most this many per run.
CHUNK = 50_000


def _pub(broker: Mosquitto, lines: list[bytes]) -> None:
    done = subprocess.run(
        [MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-l",
         "-t", TOPIC, "-i", f"peer-{time.monotonic_ns()}"],
        input=b"\n".join(lines) + b"\n", capture_output=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mosquitto_pub exited with {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()}")


def mosquitto_pub_rate(broker: Mosquitto, lines: list[bytes]) -> float:
    """All lines through mosquitto_pub -l, CHUNK lines per process, one after the other."""
    started = time.perf_counter()
    for i in range(0, len(lines), CHUNK):
        _pub(broker, lines[i:i + CHUNK])
    return len(lines) / (time.perf_counter() - started)


def delivered(broker: Mosquitto, lines: list[bytes]) -> int:
    """How many of `lines`, given to one mosquitto_pub -l, a QoS 1 subscriber receives
    (mosquitto_sub, stopping after 5 s without a message). Not part of the timed runs."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", TOPIC,
         "-C", str(len(lines)), "-W", "5"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it subscribe
    _pub(broker, lines)
    out, _ = sub.communicate(timeout=600)
    return out.count(b"\n")


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
                pub.append(mosquitto_pub_rate(broker, lines))
                fwd.append(anyio.run(_replay, workdir, broker, count, 4096))
                for old in workdir.glob("journal-*.db*"):
                    old.unlink()
            chunk_ok = delivered(broker, lines[:CHUNK])
            whole = delivered(broker, lines) if count > 65_535 else None
        finally:
            broker.kill()
    best_pub = max(pub)
    best_fwd = max(r["rate"] for r in fwd)
    figures: dict[str, Any] = {
        "events": count, "rounds": rounds,
        "mosquitto_pub_l_msgs_per_s": round(best_pub),
        "forwarder_replay_events_per_s": round(best_fwd),
        "ratio_forwarder_vs_mosquitto_pub": round(best_fwd / best_pub, 2),
        "json_line_bytes": round(sum(map(len, lines)) / count, 1),
        "mosquitto_pub_lines_per_process": CHUNK,
        "check_delivered_of_one_process": f"{chunk_ok}/{min(CHUNK, count)}",
        "one_process_all_lines_delivered": None if whole is None else f"{whole}/{count}",
    }
    print(f"replay vs the C client: {count:,} events, {rounds} round(s), mosquitto on loopback")
    print(f"  {'mosquitto_pub -l -q 1 (C, libmosquitto)':<44}{best_pub:>12,.0f} msg/s  "
          f"JSON lines, {figures['json_line_bytes']:.0f} B")
    print(f"  {'linelight forwarder (journal -> PUBACK+delete)':<44}{best_fwd:>12,.0f} ev/s  "
          f"{best_fwd / best_pub:.2f}x mosquitto_pub")
    print(f"  check: one mosquitto_pub -l run of {min(CHUNK, count):,} lines delivered "
          f"{chunk_ok:,} (mosquitto_sub, QoS 1)")
    if whole is not None:
        print(f"  note: one mosquitto_pub -l run fed all {count:,} lines delivered {whole:,} "
              "(16-bit packet ids: it stops at the first PUBACK matching its last id)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
