"""Replay benchmark: the forwarder draining a journal backlog vs bare paho QoS 1, same run.

    python -m bench.replay [--quick] [--events N] [--inflight N ...] [--stock-puback]

Measured in one run, against one local mosquitto on a free loopback port:

- fill: committing the backlog to the journal (events/s);
- forwarder replay: events/s from journal to PUBACK and delete (journal empty at the end),
  for each `--inflight` window;
- bare paho: one stock paho client (its own network thread) publishing the same topics and
  payloads at QoS 1 as fast as it can within a window, counted when every PUBACK is in;
  once without and once with the MQTT 5 user properties the forwarder adds (agent, seq)
  using paho's `Properties`; the headline ratio uses the faster variant (the stricter one);
- bare paho with the forwarder's two client tweaks (fast PUBACK decode, pre-encoded user
  properties) and the very same messages: what is left is the cost of the journal and the
  forwarder themselves (`ratio_replay_vs_bare_paho_tuned`);
- with `--stock-puback`: the forwarder once more per round with paho's own PUBACK decoder
  instead of link.py's fast one (the public-API alternative to that override);
- codecs side by side: the headline window's replay with JSON (the default) and with msgpack,
  events/s and payload bytes per event of the same events;
- Sparkplug B (`topic_mode = "sparkplug"`): the headline window's replay as an edge node
  (QoS 0 DDATA packing up to `sparkplug.PACK` events, a QoS 1 receipt barrier acking the rows),
  and once more with one event per DDATA, next to the native dialect of the same round;
- broker start to first delivery: the forwarder waits with the default backoff while the
  broker is down (2 s), then the broker starts; time until the first row is PUBACKed and
  deleted.

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness.mosquitto import Mosquitto
from linelight.agent.journal import Event, Journal, Record
from linelight.agent.mqtt import link as link_module
from linelight.agent.mqtt import sparkplug as sparkplug_module
from linelight.agent.mqtt.config import MqttSettings, SparkplugSettings
from linelight.agent.mqtt.forwarder import Forwarder
from linelight.agent.mqtt.link import PackedProperties, _Client
from linelight.agent.mqtt.wire import CODECS, Message, Wire

AGENT = "bench-1"


async def _until(predicate: Callable[[], bool], limit: float = 600.0) -> None:
    """Poll every millisecond (the figure's resolution), with a deadline."""
    with anyio.fail_after(limit):
        while True:
            if predicate():
                return
            await anyio.sleep(0.001)


def _event(i: int) -> Event:
    return Event("signal", f"sensor{i % 16}", i * 0.5, time.time_ns(), {"unit": "mm"})


async def _fill(journal: Journal, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        if i % 20_000 == 19_999 or i == count - 1:
            await journal.append(_event(i))
        else:
            journal.submit(_event(i))
    return count / (time.perf_counter() - started)


class _StockPubackClient(_Client):
    """The forwarder's client with paho's own PUBACK decoder (the public-API alternative)."""

    _handle_pubackcomp = mqtt.Client._handle_pubackcomp  # type: ignore[assignment]


async def _replay(workdir: Path, broker: Mosquitto, count: int, inflight: int,
                  stock_puback: bool = False, codec: str = CODECS[0],
                  sparkplug_pack: int = 0) -> dict[str, float]:
    """One replay; `sparkplug_pack` > 0: as a Sparkplug edge node packing that many events
    per DDATA at most."""
    if stock_puback:
        # bench only: the forwarder builds its client from this module name
        link_module._Client = _StockPubackClient  # type: ignore[misc]
    pack = sparkplug_module.PACK
    if sparkplug_pack:
        sparkplug_module.PACK = sparkplug_pack  # bench only: read at each batch
    try:
        return await _replay_once(workdir, broker, count, inflight, codec, bool(sparkplug_pack))
    finally:
        link_module._Client = _Client  # type: ignore[misc]
        sparkplug_module.PACK = pack


async def _replay_once(workdir: Path, broker: Mosquitto, count: int, inflight: int,
                       codec: str = CODECS[0], sparkplug: bool = False) -> dict[str, float]:
    mode = "sparkplug" if sparkplug else "linelight"
    journal = Journal.open(str(workdir / f"journal-{inflight}-{codec}-{mode}.db"))
    settings = MqttSettings(host=broker.host, port=broker.port, inflight=inflight, codec=codec,
                            topic_mode=mode, sparkplug=SparkplugSettings(group_id="bench")
                            if sparkplug else None)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            fill_rate = await _fill(journal, count)
            forwarder = Forwarder(journal, settings, agent_id=AGENT, boot=journal.boot,
                                  version="bench")
            await tg.start(forwarder.run)
            await _until(lambda: forwarder.link.connected)
            started = time.perf_counter()
            cpu = time.process_time()
            await _until(lambda: journal.stats().depth == 0 and forwarder.link.acked >= count)
            elapsed = time.perf_counter() - started
            cpu_share = (time.process_time() - cpu) / elapsed
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return {"rate": count / elapsed, "seconds": elapsed, "fill_rate": fill_rate,
            "cpu": cpu_share}


def _messages(count: int, codec: str = CODECS[0]) -> list[Message]:
    wire = Wire(agent_id=AGENT, prefix="linelight/{agent}", codec=codec)
    now = time.time_ns()
    out = []
    for i in range(count):
        ev = _event(i)
        out.append(wire.event(Record(i + 1, 1, ev.kind, ev.name, ev.value, ev.ts_ns, now,
                                     dict(ev.attrs)), historical=True))
    return out


def _bare_paho(broker: Mosquitto, messages: list[Message], window: int,
               user_properties: bool, tuned: bool = False) -> float:
    """paho alone: loop thread for the network, this thread publishes within `window`.

    Stock paho by default; `tuned` uses the forwarder's paho subclass (fast PUBACK decode)
    and its pre-encoded user properties, to show what the journal and forwarder add on top
    of the very same client.
    """
    cls = _Client if tuned else mqtt.Client
    client = cls(CallbackAPIVersion.VERSION2, client_id=f"bare-{time.monotonic_ns()}",
                 protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)
    slots = threading.Semaphore(window)
    done = threading.Event()
    acked = [0]
    total = len(messages)

    def on_publish(*_: Any) -> None:
        slots.release()
        acked[0] += 1
        if acked[0] == total:
            done.set()

    connected = threading.Event()
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    if not connected.wait(30):
        raise RuntimeError("bare paho could not connect")
    started = time.perf_counter()
    for msg in messages:
        slots.acquire()
        props: Any = None
        if user_properties and tuned:
            props = PackedProperties(msg.properties)
        elif user_properties:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = list(msg.user_properties)
        client.publish(msg.topic, msg.payload, qos=1, properties=props)
    if not done.wait(300):
        raise RuntimeError("bare paho: PUBACKs missing")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return total / elapsed


async def _first_delivery(workdir: Path, broker: Mosquitto) -> dict[str, float]:
    """Backlog waiting, broker down; start the broker; time to the first PUBACK+delete."""
    broker.stop()
    journal = Journal.open(str(workdir / "journal-first.db"))
    settings = MqttSettings(host=broker.host, port=broker.port)  # default backoff 1s..60s
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            await _fill(journal, 1000)
            forwarder = Forwarder(journal, settings, agent_id=AGENT, boot=journal.boot,
                                  version="bench")
            await tg.start(forwarder.run)
            await anyio.sleep(2.0)  # outage: a few refused attempts, backoff grows
            started = time.perf_counter()
            await anyio.to_thread.run_sync(broker.start)
            listening = time.perf_counter() - started
            await _until(lambda: forwarder.link.acked > 0)
            first = time.perf_counter() - started
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return {"broker_start_to_first_delivery_s": first, "broker_listening_s": listening,
            "attempts_before": forwarder.link.attempts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 events, two rounds")
    parser.add_argument("--events", type=int, help="backlog size (default 200,000)")
    parser.add_argument("--inflight", type=int, nargs="+", default=[4096, 1024],
                        help="forwarder windows to measure (the first, the default, is the "
                             "headline)")
    parser.add_argument("--window", type=int, default=1000, help="bare paho window")
    parser.add_argument("--stock-puback", action="store_true",
                        help="also replay (interleaved, headline window) with paho's own PUBACK "
                             "decoder instead of the forwarder's fast one")
    args = parser.parse_args(argv)
    count = args.events or (50_000 if args.quick else 200_000)
    rounds = 2 if args.quick else 3
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="linelight-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker", autosave=0)  # no periodic full writes
        broker.start()
        try:
            messages = _messages(count)
            replay: dict[int, list[dict[str, float]]] = {w: [] for w in args.inflight}
            bare: list[float] = []
            bare_props: list[float] = []
            tuned_runs: list[float] = []
            stock: list[dict[str, float]] = []
            headline = args.inflight[0]
            # The default codec's runs are the headline window's; the others run beside them.
            codec_runs: dict[str, list[dict[str, float]]] = {c: [] for c in CODECS}
            sparkplug_runs: dict[int, list[dict[str, float]]] = {
                sparkplug_module.PACK: [], 1: []}
            for _ in range(rounds):  # interleaved, so machine noise hits both sides
                bare.append(_bare_paho(broker, messages, args.window, user_properties=False))
                for w in args.inflight:
                    replay[w].append(anyio.run(_replay, workdir, broker, count, w))
                if args.stock_puback:
                    stock.append(anyio.run(_replay, workdir, broker, count, args.inflight[0],
                                           True))
                codec_runs[CODECS[0]].append(replay[headline][-1])
                for codec in CODECS[1:]:
                    codec_runs[codec].append(anyio.run(_replay, workdir, broker, count,
                                                       headline, False, codec))
                for pack in sparkplug_runs:
                    sparkplug_runs[pack].append(anyio.run(_replay, workdir, broker, count,
                                                          headline, False, CODECS[0], pack))
                tuned_runs.append(_bare_paho(broker, messages, args.window,
                                             user_properties=True, tuned=True))
            bare_props.append(_bare_paho(broker, messages, args.window, user_properties=True))
            tuned = max(tuned_runs)
            first = anyio.run(_first_delivery, workdir, broker)
        finally:
            broker.kill()

    best_bare = max(bare)
    rows = [("bare paho QoS 1, topic+payload", f"{best_bare:,.0f} msg/s", f"window {args.window}"),
            ("bare paho QoS 1, + user properties", f"{max(bare_props):,.0f} msg/s",
             "paho Properties"),
            ("bare paho, forwarder's client tweaks", f"{tuned:,.0f} msg/s",
             "same messages and client as the forwarder, no journal")]
    figures: dict[str, Any] = {
        "events": count, "rounds": rounds,
        "bare_paho_msgs_per_s": round(best_bare),
        "bare_paho_user_props_msgs_per_s": round(max(bare_props)),
        "fill_events_per_s": round(max(r["fill_rate"] for rs in replay.values() for r in rs)),
    }
    for w, runs in replay.items():
        best = max(runs, key=lambda r: r["rate"])
        rows.append((f"forwarder replay, inflight {w}", f"{best['rate']:,.0f} ev/s",
                     f"{best['rate'] / best_bare:.0%} of bare, cpu {best['cpu']:.0%}"))
        figures[f"replay_inflight_{w}_events_per_s"] = round(best["rate"])
        figures[f"ratio_inflight_{w}"] = round(best["rate"] / best_bare, 3)
    for codec, runs in codec_runs.items():
        best = max(runs, key=lambda r: r["rate"])
        sample = _messages(min(count, 10_000), codec)
        per_event = sum(len(m.payload) for m in sample) / len(sample)
        rows.append((f"forwarder replay, codec {codec}", f"{best['rate']:,.0f} ev/s",
                     f"inflight {headline}, {per_event:.1f} payload bytes/event"))
        figures[f"codec_{codec}_events_per_s"] = round(best["rate"])
        figures[f"codec_{codec}_bytes_per_event"] = round(per_event, 1)
    figures["ratio_msgpack_vs_json_events_per_s"] = round(
        figures["codec_msgpack_events_per_s"] / figures["codec_json_events_per_s"], 3)
    figures["ratio_msgpack_vs_json_bytes"] = round(
        figures["codec_msgpack_bytes_per_event"] / figures["codec_json_bytes_per_event"], 3)
    figures["replay_events_per_s"] = figures[f"replay_inflight_{headline}_events_per_s"]
    for pack, runs in sparkplug_runs.items():
        best = max(runs, key=lambda r: r["rate"])
        name = "packed" if pack > 1 else "single"
        rows.append((f"forwarder replay, Sparkplug B, {pack} event(s)/DDATA",
                     f"{best['rate']:,.0f} ev/s",
                     f"{best['rate'] / figures['replay_events_per_s']:.0%} of native, "
                     f"cpu {best['cpu']:.0%}"))
        figures[f"sparkplug_{name}_events_per_s"] = round(best["rate"])
        figures[f"ratio_sparkplug_{name}_vs_native"] = round(
            best["rate"] / figures["replay_events_per_s"], 3)
    figures["sparkplug_pack"] = sparkplug_module.PACK
    figures["ratio_replay_vs_bare_paho"] = figures[f"ratio_inflight_{headline}"]
    figures["ratio_replay_vs_bare_paho_user_props"] = round(
        figures["replay_events_per_s"] / max(bare_props), 3)
    figures["bare_paho_tuned_msgs_per_s"] = round(tuned)
    figures["ratio_replay_vs_bare_paho_tuned"] = round(figures["replay_events_per_s"] / tuned, 3)
    figures["broker_start_to_first_delivery_s"] = round(
        first["broker_start_to_first_delivery_s"], 3)
    figures["target_ratio"] = 0.9
    if stock:
        best_stock = max(r["rate"] for r in stock)
        figures["replay_stock_puback_events_per_s"] = round(best_stock)
        figures["ratio_stock_puback_vs_fast"] = round(best_stock / figures["replay_events_per_s"],
                                                      3)
        rows.append((f"forwarder replay, paho's PUBACK decoder, inflight {headline}",
                     f"{best_stock:,.0f} ev/s",
                     f"{figures['ratio_stock_puback_vs_fast']:.0%} of the fast decoder"))
    rows.append(("journal fill", f"{figures['fill_events_per_s']:,} ev/s", "submit + append"))
    rows.append(("broker start -> first delivery",
                 f"{first['broker_start_to_first_delivery_s']:.2f} s",
                 f"default backoff 1s..60s, {first['attempts_before']:.0f} attempts"))

    width = max(len(r[0]) for r in rows)
    print(f"replay benchmark: {count:,} events, {rounds} round(s), mosquitto on loopback")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>16}  {note}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
