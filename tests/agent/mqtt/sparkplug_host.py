"""A Sparkplug host application's view of what an edge node sent, for the tests.

It decodes every payload with the classes protoc generated from our .proto (not with the
agent's own encoder), remembers what each birth declared (alias -> device, name, datatype),
and checks the rules a host relies on while it reads: NBIRTH first with seq 0, DBIRTH right
after it, seq +1 per message wrapping 255 -> 0, DATA by alias only and only for born metrics,
every metric with a timestamp, births and data at QoS 0. `events()` gives every event metric
with its (agent, seq) properties, so a test can dedup and check order and completeness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.subscriber import Received
from linelight.agent.mqtt import sparkplug_b_pb2 as pb

SIGNED = (pb.Int8, pb.Int16, pb.Int32, pb.Int64)


def value_of(metric: Any, datatype: int) -> Any:
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    value = getattr(metric, which) if which else None
    if which == "long_value" and datatype in SIGNED and value >= 1 << 63:
        value -= 1 << 64
    return value


@dataclass(frozen=True)
class Seen:
    """One event metric as the host decoded it."""

    agent: str
    seq: int
    device: str | None
    name: str
    value: Any
    timestamp: int
    historical: bool
    bd_seq: int  # of the NBIRTH it came under


@dataclass
class Host:
    group: str
    node: str
    births: list[dict[str, Any]] = field(default_factory=list)  # every NBIRTH/DBIRTH, decoded
    deaths: list[tuple[int, int | None]] = field(default_factory=list)  # (bdSeq, qos)
    verbs: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    # metrics without the (agent, seq) properties (the live lane's current values), with the
    # number of event metrics seen before each: (position, device, name, value, historical)
    live: list[tuple[int, str | None, str, Any, bool]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wraps: int = 0  # seq 255 followed by 0 (within one birth)
    _aliases: dict[int, tuple[str | None, str, int]] = field(default_factory=dict)
    _seq: int | None = None
    _bd_seq: int | None = None
    _born_devices: set[str] = field(default_factory=set)

    def feed(self, messages: list[Received]) -> Host:
        prefix = f"spBv1.0/{self.group}/"
        for m in messages:
            if m.topic.startswith(prefix):
                self._one(m)
        return self

    def _problem(self, text: str) -> None:
        self.problems.append(text)

    def _one(self, m: Received) -> None:
        parts = m.topic.split("/")
        verb, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        if node != self.node or verb in ("NCMD", "DCMD"):
            return
        payload = pb.Payload.FromString(m.payload)
        self.verbs.append(verb)
        if verb == "NDEATH":
            bd = [value_of(x, pb.Int64) for x in payload.metrics if x.name == "bdSeq"]
            self.deaths.append((bd[0] if bd else -1, m.qos))
            if payload.HasField("seq"):
                self._problem("NDEATH with a seq")
            self._seq = None
            return
        if not payload.HasField("timestamp") or not payload.HasField("seq"):
            self._problem(f"{verb} without timestamp or seq")
        if m.qos != 0 or m.retain:
            self._problem(f"{verb} at QoS {m.qos} retain {m.retain}")
        if verb == "NBIRTH":
            if payload.seq != 0:
                self._problem(f"NBIRTH seq {payload.seq}")
            self._aliases = {}
            self._born_devices = set()
            bd = [value_of(x, pb.Int64) for x in payload.metrics if x.name == "bdSeq"]
            self._bd_seq = bd[0] if bd else None
        elif self._seq is None:
            self._problem(f"{verb} before any NBIRTH")
        elif payload.seq == 0 and self._seq == 255:
            self.wraps += 1
        elif payload.seq != (self._seq + 1) % 256:
            self._problem(f"{verb} seq {payload.seq} after {self._seq}")
        self._seq = payload.seq
        if verb in ("NBIRTH", "DBIRTH"):
            decoded: dict[str, Any] = {"verb": verb, "device": device, "seq": payload.seq,
                                       "metrics": {}}
            for x in payload.metrics:
                if not (x.HasField("name") and x.HasField("alias") and x.HasField("datatype")
                        and x.HasField("timestamp")):
                    self._problem(f"{verb} metric without name, alias, datatype or time: {x}")
                owner = self._aliases.get(x.alias)
                if owner is not None and owner[:2] != (device, x.name):
                    self._problem(f"alias {x.alias} of {owner[:2]} reused for {device} {x.name}")
                self._aliases[x.alias] = (device, x.name, x.datatype)
                decoded["metrics"][x.name] = value_of(x, x.datatype)
            if device is not None:
                self._born_devices.add(device)
            self.births.append(decoded)
            return
        if device is not None and device not in self._born_devices:
            self._problem(f"DDATA for {device} before its DBIRTH")
        for x in payload.metrics:
            if x.HasField("name") or not x.HasField("alias"):
                self._problem(f"{verb} metric with a name or without alias: {x}")
            if not x.HasField("timestamp"):
                self._problem(f"{verb} metric without timestamp")
            owner = self._aliases.get(x.alias)
            if owner is None or owner[0] != device:
                self._problem(f"{verb} alias {x.alias} not born for {device}")
                continue
            props = dict(zip(x.properties.keys, x.properties.values, strict=True))
            if "seq" not in props:
                self.live.append((len(self.seen), device, owner[1], value_of(x, owner[2]),
                                  x.is_historical))
                continue
            self.seen.append(Seen(props["agent"].string_value, props["seq"].long_value, device,
                                  owner[1], value_of(x, owner[2]), x.timestamp,
                                  x.is_historical, self._bd_seq if self._bd_seq is not None
                                  else -1))

    def seqs(self, name: str | None = None) -> list[int]:
        """Every event seq in arrival order, duplicates included (a state event's second
        metric, State/Name, is not counted again)."""
        return [s.seq for s in self.seen
                if (name is None and s.name != "State/Name") or s.name == name]
