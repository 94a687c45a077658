"""Topics and payloads on the wire: the linelight layout (msgpack or JSON) and the UMH layout.

Pure functions over plain values, no network: the forwarder asks `Wire.event(record, ...)`
for `(topic, payload, user_properties)` and `Wire.live(key, value, ts_ns)` for the live lane.
docs/wire-format.md is the reference for what these produce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

CODECS = ("msgpack", "json")
TOPIC_MODES = ("linelight", "umh")
UMH_LEVELS = ("enterprise", "site", "area", "line", "workcell")

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


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack_user_properties(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """The property block of a PUBLISH holding only these user properties."""
    body = b"".join(_utf8_pair(k, v) for k, v in pairs)
    return _varint(len(body)) + body


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

    def __init__(self, *, agent_id: str, prefix: str, codec: str = "msgpack",
                 mode: str = "linelight", umh: UmhPath | None = None,
                 user_properties: bool = True) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec '{codec}'; use one of {', '.join(CODECS)}")
        if mode not in TOPIC_MODES:
            raise ValueError(f"unknown topic mode '{mode}'; use one of {', '.join(TOPIC_MODES)}")
        if mode == "umh" and umh is None:
            raise ValueError("topic mode 'umh' needs the ISA-95 path (enterprise at least)")
        self.agent_id = agent_id
        self.prefix = prefix.replace("{agent}", topic_part(agent_id)).rstrip("/")
        self.codec = "json" if mode == "umh" else codec
        self.mode = mode
        self.umh = umh
        self.user_properties = user_properties
        self._umh_base = umh.topic() if umh is not None else ""
        # Encoded once: every event repeats the agent id as a user property.
        self._agent_property = _utf8_pair("agent", agent_id)
        self._topics: dict[tuple[str, str], str] = {}
        self._packer = msgpack.Packer(use_bin_type=True, default=str)

    # -- topics ----------------------------------------------------------------------------
    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    def event_topic(self, kind: str, name: str) -> str:
        if self.mode == "umh":
            return f"{self._umh_base}/_historian/{topic_part(kind)}/{topic_part(name)}"
        return f"{self.prefix}/events/{topic_part(kind)}/{topic_part(name)}"

    def live_topic(self, key: str) -> str:
        # A live key may have levels (`signal/temperature`); each level is made safe.
        levels = "/".join(topic_part(p) for p in key.split("/"))
        if self.mode == "umh":
            return f"{self._umh_base}/_historian/live/{levels}"
        return f"{self.prefix}/live/{levels}"

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
            body_props = (self._agent_property + b"\x26\x00\x03seq"
                          + len(seq).to_bytes(2, "big") + seq.encode())
            packed = _varint(len(body_props)) + body_props
        topic = self._topics.get((record.kind, record.name))
        if topic is None:
            topic = self.event_topic(record.kind, record.name)
            if len(self._topics) < 10_000:
                self._topics[(record.kind, record.name)] = topic
        if self.mode == "umh":
            body: dict[str, Any] = {"timestamp_ms": record.ts_ns // 1_000_000,
                                    topic_part(record.name): _plain(record.value)}
            return Message(topic, encode("json", body), props, packed)
        value = record.value
        body = {
            "agent": self.agent_id,
            "seq": record.seq,
            "boot": record.boot,
            "ts": record.ts_ns,
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

    def live(self, key: str, value: Any, ts_ns: int) -> Message:
        """The retained live-lane message for the latest value of `key`."""
        topic = self.live_topic(key)
        if self.mode == "umh":
            leaf = topic_part(key.split("/")[-1])
            return Message(topic, encode("json", {"timestamp_ms": ts_ns // 1_000_000,
                                                  leaf: _plain(value)}))
        body = {"agent": self.agent_id, "ts": ts_ns, "key": key, "value": _plain(value)}
        return Message(topic, encode(self.codec, body))

    def online(self, *, boot: int, version: str, ts_ns: int) -> Message:
        """The retained status published after each connect (the will says `offline`)."""
        body = {"status": "online", "agent": self.agent_id, "boot": boot,
                "version": version, "ts": ts_ns}
        return Message(self.status_topic, encode("json", body))

    def offline(self) -> Message:
        """The last will and the status left on a clean stop: plain JSON, retained."""
        body = {"status": "offline", "agent": self.agent_id}
        return Message(self.status_topic, encode("json", body))
