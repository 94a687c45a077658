"""Topics and payloads on the wire: the linelight layout (JSON or msgpack) and the UMH layout.

Pure functions over plain values, no network: the forwarder asks `Wire.event(record, ...)`
for `(topic, payload, user_properties)` and `Wire.live(key, value, ts_ns)` for the live lane.
docs/wire-format.md is the reference for what these produce.

Times on the wire are integer milliseconds since the epoch (exact as a double, which is how
JavaScript, Node-RED and most JSON readers hold numbers) plus `<name>_sub_ns`, the
nanoseconds within that millisecond, so nothing of the source's nanosecond time is lost:
`ns = ms * 1_000_000 + sub_ns`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import msgpack

CODECS = ("json", "msgpack")  # the first is the default
# MQTT 5 Content Type per codec; msgpack has no IANA type, `application/msgpack` is the usual one.
CONTENT_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
TOPIC_MODES = ("linelight", "umh", "umh-core", "sparkplug")
UMH_MODES = frozenset({"umh", "umh-core"})  # both take their location from [mqtt.umh]
UMH_LEVELS = ("enterprise", "site", "area", "line", "workcell")
DEFAULT_DATA_CONTRACT = "_raw"  # UMH Core: raw device data, no contract enforced

_TOPIC_UNSAFE = re.compile(r"[#+/\x00]")


class EncodeError(ValueError):
    """A journal record the wire cannot encode (attrs not a map, a value no codec carries)."""


class EventRecord(Protocol):
    """What the wire needs from a journal record (linelight.agent.journal.Record has these fields)."""

    seq: int
    boot: int
    kind: str
    name: str
    value: Any
    ts_ns: int
    enq_ns: int
    attrs: Any


@dataclass(frozen=True, slots=True)
class UmhPath:
    """The ISA-95 levels of `umh/v1/{enterprise}/{site}/{area}/{line}/{workcell}`."""

    enterprise: str
    site: str = ""
    area: str = ""
    line: str = ""
    workcell: str = ""
    data_contract: str = DEFAULT_DATA_CONTRACT  # UMH Core only

    def levels(self) -> list[str]:
        parts = [self.enterprise, self.site, self.area, self.line, self.workcell]
        while parts and not parts[-1]:
            parts.pop()
        return parts

    def core_topic(self) -> str:
        """`umh.v1.<location path>.<data contract>`: UMH Core's topic up to the virtual path."""
        return "umh.v1." + ".".join([*self.levels(), self.data_contract])

    def topic(self) -> str:
        parts = [self.enterprise, self.site, self.area, self.line, self.workcell]
        # UMH allows leaving out trailing levels, never a level in the middle.
        while parts and not parts[-1]:
            parts.pop()
        return "umh/v1/" + "/".join(parts)


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message ready to publish.

    `properties` is the MQTT 5 property block already encoded (length prefix included), or
    empty; `user_properties` says what it holds, for logs and tests.
    """

    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...] = ()
    properties: bytes = b""


def _utf8_pair(key: str, value: str) -> bytes:
    """One MQTT 5 User Property (identifier 0x26, then two length-prefixed UTF-8 strings)."""
    out = bytearray(b"\x26")
    for text in (key, value):
        raw = text.encode()
        if len(raw) > 0xFFFF:
            raise ValueError("an MQTT user property cannot be longer than 65535 bytes")
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def _format_properties(codec: str) -> bytes:
    """Payload Format Indicator (0x01: 1 = UTF-8 text, 0 = bytes) and Content Type (0x03)."""
    content_type = CONTENT_TYPES[codec].encode()
    return (b"\x01" + (b"\x01" if codec == "json" else b"\x00")
            + b"\x03" + len(content_type).to_bytes(2, "big") + content_type)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack_user_properties(pairs: tuple[tuple[str, str], ...], codec: str | None = None) -> bytes:
    """The property block of a PUBLISH: the payload format and content type of `codec` (if
    given), then these user properties."""
    body = (_format_properties(codec) if codec is not None else b"") + b"".join(
        _utf8_pair(k, v) for k, v in pairs)
    return _varint(len(body)) + body


def split_ns(ns: int) -> tuple[int, int]:
    """UTC epoch ns as (integer ms, ns within that ms): both exact as doubles."""
    ms, sub = divmod(int(ns), 1_000_000)
    return ms, sub


def _exact_times(value: Any) -> Any:
    """A live value with every `<name>_ns` time as `<name>` (ms) and `<name>_sub_ns`."""
    if not isinstance(value, Mapping):
        return _plain(value)
    out: dict[str, Any] = {}
    for key, item in value.items():
        key = str(key)
        if key.endswith("_ns") and type(item) is int:
            stem = key[:-3]
            out[stem], out[f"{stem}_sub_ns"] = split_ns(item)
        else:
            out[key] = _plain(item)
    return out


def topic_part(text: str) -> str:
    """A name made safe as one topic level: `/`, `+`, `#` and NUL become `_`."""
    return _TOPIC_UNSAFE.sub("_", text) or "_"


def attrs_items(attrs: Any) -> list[tuple[str, Any]]:
    """A record's attrs as (key, value) pairs, whether stored as a mapping or as pairs."""
    if not attrs:
        return []
    if isinstance(attrs, Mapping):
        return [(str(k), v) for k, v in attrs.items()]
    if isinstance(attrs, (str, bytes)):
        return [("detail", attrs if isinstance(attrs, str) else attrs.decode(errors="replace"))]
    return [(str(k), v) for k, v in attrs]


_SCALARS = frozenset({int, float, str, bool, type(None)})


def machine_of(attrs: Any) -> str | None:
    """The named machine an event belongs to (its `machine` attr), or None."""
    if not attrs:
        return None
    if isinstance(attrs, Mapping):
        machine = attrs.get("machine")
    else:
        machine = dict(attrs_items(attrs)).get("machine")
    return machine if isinstance(machine, str) and machine else None


def _plain(value: Any) -> Any:
    """Values both codecs can carry: tuples become lists, bytes become text."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _classic(value: Any) -> Any:
    """A value as UMH Classic's historian stores it usefully: booleans as 1/0 (its numeric
    table, where they can be graphed; a bool would become the text 'true'), lists as one
    comma-separated string (its bridge rejects arrays), maps kept (it flattens them)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _classic(v) for k, v in value.items()}
    return _plain(value)


def _scalar(value: Any) -> Any:
    """One UMH Core time-series value: a number, bool or string (anything else as JSON text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)


def encode(codec: str, body: Mapping[str, Any]) -> bytes:
    if codec == "json":
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                          default=str).encode()
    return bytes(msgpack.packb(body, use_bin_type=True, default=str))


def decode(codec: str, payload: bytes) -> Any:
    if codec == "json":
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False)


class Wire:
    """Topic and payload layout for one agent; see docs/wire-format.md."""

    def __init__(self, *, agent_id: str, prefix: str, codec: str = CODECS[0],
                 mode: str = "linelight", umh: UmhPath | None = None,
                 user_properties: bool = True) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec '{codec}'; use one of {', '.join(CODECS)}")
        if mode not in TOPIC_MODES:
            raise ValueError(f"unknown topic mode '{mode}'; use one of {', '.join(TOPIC_MODES)}")
        if mode in UMH_MODES and umh is None:
            raise ValueError(f"topic mode '{mode}' needs the ISA-95 path (enterprise at least)")
        self.agent_id = agent_id
        self.prefix = prefix.replace("{agent}", topic_part(agent_id)).rstrip("/")
        self.codec = "json" if mode in UMH_MODES else codec
        self.mode = mode
        self.umh = umh
        self.user_properties = user_properties
        self.content_type = CONTENT_TYPES[self.codec]
        # MQTT 5 property blocks, encoded once: format and content type, plus the agent id
        # that every event repeats as a user property.
        self._format = _format_properties(self.codec)
        self._json_properties = pack_user_properties((), "json") if user_properties else b""
        self._codec_properties = (pack_user_properties((), self.codec) if user_properties
                                  else b"")
        self._umh_base = umh.topic() if umh is not None else ""
        self._core_base = umh.core_topic() if umh is not None else ""
        self._machine_bases: dict[str, tuple[str, str, str]] = {}
        # Encoded once: every event repeats the agent id as a user property.
        self._agent_property = _utf8_pair("agent", agent_id)
        self._topics: dict[tuple[str | None, str, str], str] = {}
        self._packer = msgpack.Packer(use_bin_type=True, default=str)

    # -- topics ----------------------------------------------------------------------------
    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    def _bases(self, machine: str | None) -> tuple[str, str, str]:
        """(native prefix, UMH Classic base, UMH Core base) of a machine: a named machine is
        one level below the agent's prefix, and the workcell of the agent's ISA-95 line."""
        if machine is None:
            return self.prefix, self._umh_base, self._core_base
        bases = self._machine_bases.get(machine)
        if bases is None:
            umh = replace(self.umh, workcell=machine) if self.umh is not None else None
            bases = (f"{self.prefix}/{topic_part(machine)}",
                     umh.topic() if umh is not None else "",
                     umh.core_topic() if umh is not None else "")
            if len(self._machine_bases) < 1000:
                self._machine_bases[machine] = bases
        return bases

    def event_topic(self, kind: str, name: str, machine: str | None = None) -> str:
        prefix, umh_base, core_base = self._bases(machine)
        if self.mode == "umh-core":
            # Virtual path = the event kind; names are rule identifiers, UMH-safe as they are.
            return f"{core_base}.{kind}.{name}"
        if self.mode == "umh":
            # One tag group per kind; the name is the tag (`count$parts`), so a kind's tags
            # share a topic and the state is one tag (`state$code`) whose value changes.
            return f"{umh_base}/_historian/{topic_part(kind)}"
        return f"{prefix}/events/{topic_part(kind)}/{topic_part(name)}"

    def live_topic(self, key: str, machine: str | None = None) -> str:
        # A live key may have levels (`signal/temperature`); each level is made safe.
        prefix, umh_base, core_base = self._bases(machine)
        levels = "/".join(topic_part(p) for p in key.split("/"))
        if self.mode == "umh-core":
            return f"{core_base}.live.{key.replace('/', '.')}"
        if self.mode == "umh":
            return f"{umh_base}/_historian/live/{levels}"
        return f"{prefix}/live/{levels}"

    # -- messages --------------------------------------------------------------------------
    def event(self, record: EventRecord, *, historical: bool) -> Message:
        """The event-lane message for one journal record; EncodeError if it has none."""
        try:
            return self._event(record, historical)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodeError(f"event seq {record.seq} ({record.kind}/{record.name}) cannot "
                              f"be encoded: {exc}") from exc

    def _event(self, record: EventRecord, historical: bool) -> Message:
        props: tuple[tuple[str, str], ...] = ()
        packed = b""
        if self.user_properties:
            seq = str(record.seq)
            props = (("agent", self.agent_id), ("seq", seq))
            # "seq" user property: 0x26, length 3, "seq", length, digits (ASCII).
            body_props = (self._format + self._agent_property + b"\x26\x00\x03seq"
                          + len(seq).to_bytes(2, "big") + seq.encode())
            packed = _varint(len(body_props)) + body_props
        machine = machine_of(record.attrs)
        topic = self._topics.get((machine, record.kind, record.name))
        if topic is None:
            topic = self.event_topic(record.kind, record.name, machine)
            if len(self._topics) < 10_000:
                self._topics[(machine, record.kind, record.name)] = topic
        if self.mode == "umh-core":
            core = {"timestamp_ms": record.ts_ns // 1_000_000, "value": _scalar(record.value)}
            return Message(topic, encode("json", core), props, packed)
        if self.mode == "umh":
            body: dict[str, Any] = {"timestamp_ms": record.ts_ns // 1_000_000}
            if record.kind == "state":
                body.update(code=record.value, name=record.name)
            else:
                body[topic_part(record.name)] = _classic(record.value)
            return Message(topic, encode("json", body), props, packed)
        value = record.value
        ts_ms, ts_sub_ns = split_ns(record.ts_ns)
        body = {
            "agent": self.agent_id,
            "seq": record.seq,
            "boot": record.boot,
            "ts": ts_ms,
            "ts_sub_ns": ts_sub_ns,
            "kind": record.kind,
            "name": record.name,
            "value": value if type(value) in _SCALARS else _plain(value),
            "historical": historical,
        }
        if record.attrs:
            for key, item in attrs_items(record.attrs):
                body.setdefault(key, item if type(item) in _SCALARS else _plain(item))
        payload = (self._packer.pack(body) if self.codec == "msgpack"
                   else encode(self.codec, body))
        return Message(topic, payload, props, packed)

    def live(self, key: str, value: Any, ts_ns: int, machine: str | None = None) -> Message:
        """The retained live-lane message for the latest value of `key` (of `machine`)."""
        topic = self.live_topic(key, machine)
        if self.mode == "umh":
            leaf = topic_part(key.split("/")[-1])
            if isinstance(value, Mapping):
                # Epoch times (`since_ns`) would be destroyed by the historian's REAL column;
                # the state events carry when a state began.
                value = {k: v for k, v in value.items() if not str(k).endswith("_ns")}
            return Message(topic, encode("json", {"timestamp_ms": ts_ns // 1_000_000,
                                                  leaf: _classic(value)}),
                           properties=self._json_properties)
        ts_ms, ts_sub_ns = split_ns(ts_ns)
        body = {"agent": self.agent_id, "ts": ts_ms, "ts_sub_ns": ts_sub_ns, "key": key,
                "value": _exact_times(value)}
        if machine is not None:
            body["machine"] = machine
        return Message(topic, encode(self.codec, body), properties=self._codec_properties)

    def live_messages(self, key: str, value: Any, ts_ns: int,
                      machine: str | None = None) -> list[Message]:
        """The live lane's messages for `key`: one, or in UMH Core mode one per scalar (UMH
        Core's time series carry one scalar `value`: a map becomes one topic per entry,
        `<key>.<entry>`, the signal list one comma-separated string)."""
        if self.mode != "umh-core":
            return [self.live(key, value, ts_ns, machine)]
        ts_ms = ts_ns // 1_000_000
        if isinstance(value, Mapping):
            items = list(_exact_times(value).items())
        elif isinstance(value, (list, tuple)):
            items = [("active", ",".join(str(v) for v in value))]
        else:
            items = [("value", value)]
        return [Message(f"{self.live_topic(key, machine)}.{entry}",
                        encode("json", {"timestamp_ms": ts_ms, "value": _scalar(item)}),
                        properties=self._json_properties)
                for entry, item in items]

    def online(self, *, boot: int, version: str, ts_ns: int) -> Message:
        """The retained status published after each connect (the will says `offline`)."""
        ts_ms, ts_sub_ns = split_ns(ts_ns)
        body = {"status": "online", "agent": self.agent_id, "boot": boot,
                "version": version, "ts": ts_ms, "ts_sub_ns": ts_sub_ns}
        return Message(self.status_topic, encode("json", body),
                       properties=self._json_properties)

    def offline(self) -> Message:
        """The last will and the status left on a clean stop: plain JSON, retained."""
        body = {"status": "offline", "agent": self.agent_id}
        return Message(self.status_topic, encode("json", body),
                       properties=self._json_properties)
