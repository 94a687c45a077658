"""The Sparkplug B 3.0 edge node: journal events in, NBIRTH/DBIRTH/NDATA/DDATA/NDEATH/DDEATH out.

Pure, no network: `SparkplugNode` keeps what Sparkplug makes an edge node remember (the bdSeq of
this connection, the message seq, the metrics each device was born with and their aliases)
and turns journal records into ready `Message`s; the forwarder publishes them (QoS 0, the
will and the receipt barrier QoS 1) in the order they were made. docs/wire-format.md,
"Sparkplug B mode", is the reference; the tck ids quoted below are the specification's.

- Topics `spBv1.0/{group}/{verb}/{edge node}[/{device}]` (tck-id-topic-structure).
- `seq` 0..255 on every message but NDEATH, +1 per message, wrapping; NBIRTH has 0
  (tck-id-payloads-sequence-num-always-included, -zero-nbirth, -incrementing).
- bdSeq (Int64) in NBIRTH and in the NDEATH will, the same value (tck-id-payloads-nbirth-bdseq,
  tck-id-payloads-ndeath-bdseq); the forwarder persists it and adds 1 per connect, 255 -> 0.
- Births carry name, alias, datatype, value and timestamp of every metric; DATA carries the
  alias only (tck-id-payloads-alias-birth-requirement, -alias-data-cmd-requirement), aliases
  unique across the node (tck-id-payloads-alias-uniqueness).
- Every metric is timestamped in ms: events with their source time, births with the time of
  the value they declare (tck-id-payloads-name-birth-data-requirement).
- Each event metric carries properties `agent` (String) and `seq` (Int64): linelight's dedup key,
  since Sparkplug's seq restarts with every birth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from linelight.agent.mqtt import sparkplug_b_pb2
from linelight.agent.mqtt.config import SparkplugSettings
from linelight.agent.mqtt.wire import EventRecord, Message, attrs_items, machine_of

pb: Any = sparkplug_b_pb2  # protoc's classes are made at import: to mypy they are unknown
# The datatypes linelight sends (section 6.4.16)
INT64: int = pb.Int64
DOUBLE: int = pb.Double
BOOLEAN: int = pb.Boolean
STRING: int = pb.String

NAMESPACE = "spBv1.0"
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
AGENT_EVENT = "linelight/agent event"  # the agent's own events (start, stop, clock, ...), JSON
GAP_EVENT = "linelight/gap"  # a gap the journal announces, JSON
# linelight's own figures, node metrics: births carry them, NDATA when they change
QUEUE_DEPTH = "linelight/queue depth"  # events in the journal not yet confirmed by the broker
OLDEST_AGE = "linelight/oldest age s"  # seconds the oldest of them has waited
DROPPED = "linelight/dropped"  # events the journal dropped (bounds), since the file was made
META_BD_SEQ = "sparkplug.bd_seq"  # journal meta: the bdSeq of the last connection
# Metrics per DATA message at most: a replay packs up to this many events into one payload.
PACK = 128
# ... and about this many payload bytes: a packed message stays far below a broker's packet
# limit (mosquitto's message_size_limit, MQTT 5 Maximum Packet Size) when values are long
PACK_BYTES = 32 * 1024
_METRIC_BYTES = 48  # alias, time, properties (agent, seq): what a metric costs besides its value
_U64 = (1 << 64) - 1
_I64 = range(-(1 << 63), 1 << 63)
_FOLDERS = {"signal": "Signals", "lamp": "Lamps", "count": "Counters", "alarm": "Alarms"}
_NODE_KINDS = frozenset({"agent", "gap"})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def next_bd_seq(previous: Any) -> int:
    """The bdSeq after `previous` (the stored value; anything unreadable starts at 0)."""
    if type(previous) is not int or not 0 <= previous <= 255:
        return 0
    return (previous + 1) % 256


def datatype_of(value: Any) -> int:
    """The Sparkplug datatype a Python value is sent as."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int) and value in _I64:
        return INT64
    if isinstance(value, float):
        return DOUBLE
    return STRING


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def fits(datatype: int, value: Any) -> bool:
    """Whether `value` can be sent as a metric declared with `datatype`."""
    if value is None or datatype == STRING:
        return True
    if datatype == DOUBLE:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return datatype_of(value) == datatype


def set_value(metric: Any, datatype: int, value: Any) -> None:
    """Put `value` into `metric` as `datatype` (a null value says so: is_null)."""
    if value is None:
        metric.is_null = True
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == INT64:
        metric.long_value = int(value) & _U64  # two's complement in the uint64 field
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    else:
        metric.string_value = _text(value)


def get_value(metric: Any, datatype: int | None = None) -> Any:
    """A decoded metric's value as Python; signed types back from two's complement. DATA
    metrics carry no datatype: pass the one their birth declared."""
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    if which is None:
        return None
    value = getattr(metric, which)
    datatype = metric.datatype if datatype is None else datatype
    if which == "long_value" and datatype in (pb.Int8, pb.Int16, pb.Int32, INT64) \
            and value >= 1 << 63:
        return value - (1 << 64)
    return value


# One event (or live value) of a DATA message: journal seq (None: a live value), historical,
# time (ms), [(metric name, value)], Sparkplug quality code
_Item = tuple[int | None, bool, int, list[tuple[str, Any]], int]
# Section 6.4.7.1, the 'Quality' property (Int32), sent only when not GOOD
# (tck-id-payloads-propertyset-quality-value-type, -quality-value-value)
GOOD, STALE, BAD = 192, 500, 0
INT32: int = pb.Int32
_QUALITY = {"good": GOOD, "stale": STALE, "bad": BAD, "init": BAD}  # init: nothing read yet


def quality_of(record: EventRecord) -> int:
    """The Sparkplug quality of an input's (signal) event, from its `quality` attribute."""
    if record.kind != "signal" or not record.attrs:
        return GOOD
    for key, value in attrs_items(record.attrs):
        if key == "quality":
            return _QUALITY.get(str(value), GOOD)
    return GOOD


def _add_quality(metric: Any, quality: int) -> None:
    if quality != GOOD:
        metric.properties.keys.append("Quality")
        metric.properties.values.add(type=INT32, int_value=quality)


def live_metrics(key: str, value: Any) -> list[tuple[str, Any]]:
    """The metrics of a live-lane value: `state` -> State/Code and State/Name, `lamps` -> one
    Lamps/{lamp} each, `counters` -> one Counters/{name} each (the same metrics the events
    update; `signals`, the rule signals that are on, is `SparkplugNode.live`'s, as it needs
    the alarms known). Other keys have none."""
    if not isinstance(value, Mapping):
        return []
    if key == "state":
        return [("State/Code", value.get("code")), ("State/Name", value.get("name"))]
    if key == "lamps":
        return [(f"Lamps/{lamp}", str(pattern)) for lamp, pattern in value.items()]
    if key == "counters":
        return [(f"Counters/{name}", total) for name, total in value.items()
                if isinstance(total, int) and not isinstance(total, bool)]
    return []


@dataclass(slots=True)
class _Metric:
    """One metric as born: alias and datatype stay for the process; the value is the latest."""

    name: str
    alias: int
    datatype: int
    value: Any
    ts_ms: int
    quality: int = GOOD


@dataclass(frozen=True, slots=True)
class Out:
    """One message to publish, and the journal seqs whose events it carries."""

    message: Message
    seqs: tuple[int, ...] = ()
    verb: str = "DDATA"


class SparkplugNode:
    """One edge node's Sparkplug state; see the module docstring.

    Devices are born in the order they are known: the configured machines first, then any
    device an event names later (it gets its DBIRTH before its first DDATA). A metric a device
    was not born with (a new event name, or a value its datatype cannot carry) makes the
    device be born again, with the new metric, before the DDATA that carries it.
    """

    def __init__(self, settings: SparkplugSettings, *, agent_id: str, bd_seq: int = 0,
                 clock: Callable[[], int] = now_ms) -> None:
        self.agent_id = agent_id
        self._clock = clock  # ms since the epoch, UTC (the docs' examples pass a fixed one)
        self.group = settings.group_id
        self.node = settings.edge_node_id or agent_id
        self.default_device = settings.device_id or agent_id
        self.bd_seq = bd_seq
        self.seq = 0  # of the next message
        self.born = False  # NBIRTH (and the DBIRTHs) sent on this connection
        self._aliases = 0
        self._node_metrics: dict[str, _Metric] = {}
        self._devices: dict[str, dict[str, _Metric]] = {}
        self._born_devices: set[str] = set()
        self._agent_property = pb.Payload.PropertyValue(type=STRING, string_value=agent_id)
        ts = clock()
        for name, datatype, value in ((BD_SEQ, INT64, bd_seq), (REBIRTH, BOOLEAN, False),
                                      (AGENT_EVENT, STRING, None), (GAP_EVENT, STRING, None),
                                      (QUEUE_DEPTH, INT64, 0), (OLDEST_AGE, DOUBLE, 0.0),
                                      (DROPPED, INT64, 0)):
            self._declare(self._node_metrics, name, datatype, value, ts)
        for device in settings.devices or (self.default_device,):
            self._devices[device] = {}

    # -- topics ------------------------------------------------------------------------------
    def topic(self, verb: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{verb}/{self.node}"
        return base if device is None else f"{base}/{device}"

    @property
    def command_topics(self) -> tuple[str, str]:
        """NCMD for this node, DCMD for any of its devices (to subscribe to)."""
        return self.topic("NCMD"), self.topic("DCMD") + "/+"

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    def alias_names(self) -> dict[int, tuple[str | None, str]]:
        """alias -> (device or None for the node, metric name); for commands and tests."""
        out: dict[int, tuple[str | None, str]] = {
            m.alias: (None, m.name) for m in self._node_metrics.values()}
        for device, metrics in self._devices.items():
            out.update({m.alias: (device, m.name) for m in metrics.values()})
        return out

    # -- births and deaths -------------------------------------------------------------------
    def start_connection(self, bd_seq: int) -> None:
        """A new MQTT connection with this bdSeq: nothing is born on it yet."""
        self.bd_seq = bd_seq
        self.born = False
        self._born_devices.clear()
        self._node_metrics[BD_SEQ].value = bd_seq

    def will(self) -> Message:
        """The NDEATH the CONNECT carries as its will: bdSeq, no seq (tck-id-payloads-ndeath-seq)."""
        payload = pb.Payload(timestamp=self._clock())
        payload.metrics.add(name=BD_SEQ, timestamp=payload.timestamp, datatype=INT64,
                            long_value=self.bd_seq)
        return Message(self.topic("NDEATH"), payload.SerializeToString())

    def births(self) -> list[Out]:
        """NBIRTH (seq 0) and then every device's DBIRTH (tck-id-payloads-dbirth-order)."""
        self.seq = 0
        ts = self._clock()
        self._node_metrics[BD_SEQ].value = self.bd_seq
        self._node_metrics[BD_SEQ].ts_ms = ts
        self._node_metrics[REBIRTH].value = False
        self._node_metrics[REBIRTH].ts_ms = ts
        nbirth = self._birth_payload(self._node_metrics, ts)
        out = [Out(Message(self.topic("NBIRTH"), nbirth.SerializeToString()), verb="NBIRTH")]
        self.born = True
        self._born_devices.clear()
        for device in self._devices:
            out.append(self._dbirth(device))
        return out

    def deaths(self) -> list[Out]:
        """A clean stop: every device's DDEATH (with seq), then the NDEATH (with bdSeq)."""
        out = []
        for device in self._devices:
            payload = pb.Payload(timestamp=self._clock(), seq=self._next_seq())
            out.append(Out(Message(self.topic("DDEATH", device), payload.SerializeToString()),
                           verb="DDEATH"))
        out.append(Out(self.will(), verb="NDEATH"))
        self.born = False
        return out

    def _dbirth(self, device: str) -> Out:
        payload = self._birth_payload(self._devices[device], self._clock())
        self._born_devices.add(device)
        return Out(Message(self.topic("DBIRTH", device), payload.SerializeToString()),
                   verb="DBIRTH")

    def _birth_payload(self, metrics: Mapping[str, _Metric], ts: int) -> Any:
        payload = pb.Payload(timestamp=ts, seq=self._next_seq())
        for m in metrics.values():
            metric = payload.metrics.add(name=m.name, alias=m.alias, timestamp=m.ts_ms,
                                         datatype=m.datatype)
            set_value(metric, m.datatype, m.value)
            _add_quality(metric, m.quality)
        return payload

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (seq + 1) % 256
        return seq

    def _declare(self, metrics: dict[str, _Metric], name: str, datatype: int, value: Any,
                 ts_ms: int) -> _Metric:
        old = metrics.get(name)
        if old is not None:  # a new datatype keeps the alias: it names the same tag
            old.datatype = datatype
            return old
        self._aliases += 1
        metric = metrics[name] = _Metric(name, self._aliases, datatype, value, ts_ms)
        return metric

    # -- data --------------------------------------------------------------------------------
    def metrics_of(self, record: EventRecord) -> tuple[str | None, list[tuple[str, Any]]]:
        """(device, or None for the node; [(metric name, value)]) of one journal event."""
        kind, name = record.kind, record.name
        if kind in _NODE_KINDS:
            body: dict[str, Any] = {"name": name, "value": record.value} if kind == "agent" \
                else {"value": record.value}
            for key, item in attrs_items(record.attrs):
                body.setdefault(key, item)
            return None, [(AGENT_EVENT if kind == "agent" else GAP_EVENT, _text(body))]
        device = machine_of(record.attrs) or self.default_device
        if kind == "state":
            return device, [("State/Code", record.value), ("State/Name", name)]
        folder = _FOLDERS.get(kind)
        metric = f"{folder}/{name}" if folder is not None else f"Events/{kind}/{name}"
        value = record.value
        if isinstance(value, (list, tuple, Mapping, bytes)):
            value = _text(value)
        return device, [(metric, value)]

    def data(self, records: Sequence[EventRecord], historical: Sequence[bool]
             ) -> Iterator[Out]:
        """DATA messages for `records` (in order), packing up to PACK events of one device
        (or of the node) into one message; a DBIRTH first where a device or a metric is new.

        A generator: each message takes its seq when it is made, so a rebirth between two
        messages (the caller publishes each one before asking for the next) stays in order.
        """
        i, n = 0, len(records)
        while i < n:
            target, _ = self.metrics_of(records[i])
            run: list[_Item] = []
            size = 0
            while i < n and len(run) < PACK:
                device, metrics = self.metrics_of(records[i])
                size += sum(_METRIC_BYTES + (len(v) if isinstance(v, str) else 8)
                            for _, v in metrics)
                if device != target or (run and size > PACK_BYTES):
                    break
                run.append((records[i].seq, historical[i], records[i].ts_ns // 1_000_000,
                            metrics, quality_of(records[i])))
                i += 1
            yield from self._run(target, run)

    def live(self, key: str, value: Any, ts_ns: int, machine: str | None = None
             ) -> list[Out]:
        """The live lane's latest value of `key` (agent.scan's `state`, `lamps`, `counters`)
        as one DDATA of current values (not historical, no `seq` property: it is no event),
        for the host's tags while a backlog replays; [] for a key with no metric."""
        device = machine or self.default_device
        pairs = live_metrics(key, value)
        if key == "signals" and isinstance(value, (list, tuple)):
            # the rule signals that are on; the alarm metrics of the others are off
            on = {f"Alarms/{name}" for name in value if isinstance(name, str)}
            known = [n for n in self._devices.get(device, {}) if n.startswith("Alarms/")]
            pairs = [(n, True) for n in sorted(on)] + [(n, False) for n in known
                                                       if n not in on]
        if not pairs:
            return []
        ts = ts_ns // 1_000_000
        if key == "state" and isinstance(value, Mapping) and type(value.get("since_ns")) is int \
                and value["since_ns"] > 0:
            ts = value["since_ns"] // 1_000_000
        return list(self._run(device, [(None, False, ts, pairs, GOOD)]))

    def figures(self, depth: int, oldest_age_s: float, dropped: int) -> list[Out]:
        """NDATA of the figures that changed (births carry the latest); [] if none did or
        the node is not born on this connection (then only the next births carry them)."""
        ts = self._clock()
        changed = []
        for name, value in ((QUEUE_DEPTH, int(depth)), (OLDEST_AGE, round(oldest_age_s, 3)),
                            (DROPPED, int(dropped))):
            m = self._node_metrics[name]
            if m.value != value:
                m.value, m.ts_ms = value, ts
                changed.append(m)
        if not changed or not self.born:
            return []
        payload = pb.Payload(timestamp=ts, seq=self._next_seq())
        for m in changed:
            set_value(payload.metrics.add(alias=m.alias, timestamp=ts), m.datatype, m.value)
        return [Out(Message(self.topic("NDATA"), payload.SerializeToString()), verb="NDATA")]

    def _run(self, device: str | None, run: list[_Item]) -> Iterator[Out]:
        metrics = self._node_metrics if device is None else self._devices.setdefault(device, {})
        # Metrics this device was not born with, or values its datatypes cannot carry.
        stale = device is not None and device not in self._born_devices
        for _, _, ts, pairs, _ in run:
            for name, value in pairs:
                known = metrics.get(name)
                if device is None:
                    continue  # the node's event metrics are declared, String, at start
                if known is None or not fits(known.datatype, value):
                    self._declare(metrics, name, datatype_of(value), value, ts)
                    stale = True
        if stale and device is not None:
            yield self._dbirth(device)
        payload = pb.Payload(timestamp=self._clock(), seq=self._next_seq())
        seqs = []
        for seq, historical, ts, pairs, quality in run:
            for name, value in pairs:
                m = metrics[name]
                metric = payload.metrics.add(alias=m.alias, timestamp=ts)
                set_value(metric, m.datatype, value)
                _add_quality(metric, quality)
                if historical:
                    metric.is_historical = True
                else:  # the birth of a later connection declares the newest live value
                    m.value, m.ts_ms, m.quality = value, ts, quality
                if seq is None:
                    continue  # a live value, no event
                props = metric.properties
                props.keys.extend(("agent", "seq"))
                props.values.append(self._agent_property)
                props.values.add(type=INT64, long_value=seq)
            if seq is not None:
                seqs.append(seq)
        verb = "NDATA" if device is None else "DDATA"
        yield Out(Message(self.topic(verb, device), payload.SerializeToString()),
                  tuple(seqs), verb)


def decode(payload: bytes) -> Any:
    """A Sparkplug B payload from bytes; raises `DecodeError` (protobuf's) if malformed."""
    return pb.Payload.FromString(payload)


def describe(payload: Any, names: Mapping[int, tuple[str | None, str]] | None = None
             ) -> dict[str, Any]:
    """A decoded payload as plain data (for logs, tests and the docs' examples)."""
    out: dict[str, Any] = {}
    if payload.HasField("timestamp"):
        out["timestamp"] = payload.timestamp
    metrics = []
    for m in payload.metrics:
        item: dict[str, Any] = {}
        if m.HasField("name"):
            item["name"] = m.name
        if m.HasField("alias"):
            item["alias"] = m.alias
            if names is not None and not m.HasField("name") and m.alias in names:
                item["(name)"] = names[m.alias][1]
        if m.HasField("timestamp"):
            item["timestamp"] = m.timestamp
        if m.HasField("datatype"):
            item["datatype"] = pb.DataType.Name(m.datatype)
        item["value"] = get_value(m)
        if m.is_historical:
            item["is_historical"] = True
        if m.HasField("properties"):
            item["properties"] = {k: _property_value(v)
                                  for k, v in zip(m.properties.keys, m.properties.values,
                                                  strict=False)}
        metrics.append(item)
    out["metrics"] = metrics
    if payload.HasField("seq"):
        out["seq"] = payload.seq
    return out


def _property_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    return None if which is None or value.is_null else getattr(value, which)
