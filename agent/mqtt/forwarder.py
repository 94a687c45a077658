"""The forwarder: the journal's events to the broker in seq order, through outages and crashes.

One MQTT connection at a time (`link`), QoS 1. Each connection starts from the
oldest row still in the journal and publishes rows in seq order within a bounded window; a
row leaves the journal only after its PUBACK (acks are batched into one journal transaction).
A negative PUBACK (MQTT 5 reason >= 0x80) moves the row to the dead-letter table and delivery
goes on. The live lane (`publish_live`) keeps the latest value per key and publishes it
retained at once and after every connect, outside the event window, so it is never stuck
behind a backlog. Between connections: exponential backoff with jitter, capped (the shared
tenacity policy, `linelight.hw.backoff`).

Layout on the wire: `wire`; settings: `config`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from linelight.agent.addresses import printable
from linelight.agent.mqtt.config import MqttSettings, read_mqtt, read_password
from linelight.agent.mqtt.errors import TransportError
from linelight.agent.mqtt.link import LinkError, MqttLink, TakeoverWatch, takeover_sentence
from linelight.agent.mqtt.ratelimit import RateLimit
from linelight.agent.mqtt.wire import EncodeError, Message, Wire

if TYPE_CHECKING:
    from linelight.agent.mqtt.sparkplug import SparkplugNode
from linelight.hw.backoff import Backoff
from linelight.rules.errors import ConfigError

__all__ = ["Forwarder", "LinkStatus", "MqttSettings", "read_mqtt"]

log = logging.getLogger(__name__)

STOP_BUDGET_S = 3.0  # a planned stop waits this long at most for the broker
# Sparkplug: QoS 0 events published since the last receipt barrier, at most
BARRIER_EVERY = 512
FIGURES_S = 5.0  # Sparkplug: how often linelight's own figures are looked at (NDATA on change)
YIELD_EVERY = 64  # publishes between two yields to the writer (bench/replay.py)


class JournalLike(Protocol):
    """The part of `linelight.agent.journal.Journal` the forwarder uses."""

    async def peek(self, limit: int, after_seq: int = 0) -> Sequence[Any]: ...
    async def ack(self, seqs: Sequence[int]) -> Any: ...
    async def dead_letter(self, seq: int, reason: str) -> Any: ...
    async def wait_new(self, after_seq: int) -> Any: ...
    def get_meta(self, key: str, default: Any = None) -> Any: ...
    async def put_meta(self, key: str, value: Any) -> Any: ...


@dataclass(slots=True)
class LinkStatus:
    """The broker link as the diagnostics page and metrics show it (updated in place)."""

    broker: str
    connected: bool = False
    last_error: str | None = None
    connects: int = 0  # successful connections
    reconnects: int = 0  # successful connections after the first
    attempts: int = 0  # connection attempts, failed ones included
    published: int = 0  # event-lane messages handed to the broker (re-sends included)
    acked: int = 0  # journal rows deleted after PUBACK
    dead_letters: int = 0  # rows refused by the broker and moved to the dead-letter table
    in_flight: int = 0  # published, not yet deleted from the journal
    live_published: int = 0
    connected_since: float | None = None  # monotonic
    protocol: str = "5"  # the MQTT version of the next (or current) connection

    def status(self, now: float) -> dict[str, Any]:
        """The link as /status shows it (`now`: monotonic seconds)."""
        return {"url": self.broker, "connected": self.connected, "protocol": self.protocol,
                "last_error": self.last_error,
                "connects": self.connects, "reconnects": self.reconnects,
                "published": self.acked, "sent": self.published, "in_flight": self.in_flight,
                "dead_letters": self.dead_letters,
                "connected_for_s": round(now - self.connected_since, 3)
                if self.connected and self.connected_since else None}


class _LinkLost(TransportError):
    """An open link ended (the reason is in the message); the forwarder reconnects."""


class _Session:
    """Book-keeping of one connection: packet id -> journal seq of the event lane."""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}  # mid -> seq, waiting for PUBACK
        self.control: set[int] = set()  # mids of live/status messages
        self.waiters: dict[int, anyio.Event] = {}  # control mids someone waits on
        # Sparkplug: seqs sent at QoS 0 since the last barrier; barrier mid -> the seqs it covers
        self.unconfirmed: list[int] = []
        self.barriers: dict[int, list[int]] = {}

    @property
    def uncounted(self) -> int:
        """Rows published on this connection whose receipt is not known."""
        return (len(self.pending) + len(self.unconfirmed)
                + sum(len(seqs) for seqs in self.barriers.values()))


class Forwarder:
    """Publishes the journal's events in order; see the module docstring.

    `run()` is the long-running task (start it with `await tg.start(forwarder.run)`; it is
    ready at once and never waits for the broker). `publish_live(key, value)` may be called
    at any time from the event loop thread. `link` is the live status.
    """

    def __init__(self, journal: JournalLike, settings: MqttSettings, *, agent_id: str,
                 boot: int, version: str) -> None:
        self.journal = journal
        self.settings = settings
        self.agent_id = agent_id
        self.boot = boot
        self.version = version
        self.wire = Wire(agent_id=agent_id, prefix=settings.topic_prefix, codec=settings.codec,
                         mode=settings.topic_mode, umh=settings.umh,
                         user_properties=settings.protocol == "5")
        self.client_id = settings.client_id or f"linelight-{agent_id}"[:128]
        self.link = LinkStatus(broker=settings.broker, protocol=settings.protocol)
        # The settings each connection uses: `protocol` may fall back from 5 to 3.1.1.
        self._link_settings = settings
        self._window = settings.inflight
        # by (machine, key); machine None: the agent's or the unnamed single machine's
        self._live: dict[tuple[str | None, str], tuple[Any, int]] = {}
        self._live_dirty: dict[tuple[str | None, str], None] = {}
        self._live_wake = anyio.Event()
        self._acks: list[int] = []
        self._dead: list[tuple[int, str]] = []
        self._ack_wake = anyio.Event()
        self._ack_idle = anyio.Event()
        self._ack_idle.set()
        self._acked = anyio.Event()  # set after every journal ack round (stop's flush waits)
        self._space = anyio.Event()
        self._session: _Session | None = None
        self._mqtt: MqttLink | None = None
        self._rate = RateLimit(settings.msgs_per_s, settings.bytes_per_s)
        # initial, 2 x initial, 4 x ... plus up to one `initial` of jitter, capped at max.
        self._backoff = Backoff(initial=settings.backoff_initial, maximum=settings.backoff_max,
                                jitter=settings.backoff_initial)
        self._last_logged_error: str | None = None
        self._takeover = TakeoverWatch()
        self._stopped = False
        self.sparkplug: SparkplugNode | None = None
        self._born = anyio.Event()  # Sparkplug: births sent on this connection
        self._host_offline = anyio.Event()  # the primary host went offline: leave
        self._host_ts = -1  # the newest primary host STATE timestamp accepted
        self._births_ns = 0  # Sparkplug: when this connection's first births went out
        self._replaying = False  # Sparkplug: the event lane is sending historical rows
        self._barrier_refused = False
        if settings.topic_mode == "sparkplug":
            from linelight.agent.mqtt.sparkplug import SparkplugNode

            if settings.sparkplug is None:
                raise ValueError("topic mode 'sparkplug' needs [mqtt.sparkplug] group_id")
            self.sparkplug = SparkplugNode(settings.sparkplug, agent_id=agent_id)
            self._barrier_topic = f"{self.wire.prefix}/sparkplug/received"

    # -- public ------------------------------------------------------------------------------
    def publish_live(self, key: str, value: Any, machine: str | None = None) -> None:
        """Remember `value` as the latest for `key` (of a named `machine`); publish it
        retained as soon as possible.

        Non-blocking. Only the latest value per key is kept; it is published at once when
        connected, and again right after every (re)connect. Call from the event loop thread.
        """
        self._live[(machine, key)] = (value, time.time_ns())
        self._live_dirty[(machine, key)] = None
        self._live_wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, forward, reconnect with backoff; forever (until cancelled)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._acker)
            task_status.started()
            await self._connect_loop()

    # -- connection loop ---------------------------------------------------------------------
    async def _connect_loop(self) -> None:
        # A link that was up and then got lost counts as healthy: the waits start over.
        retrying = self._backoff.retrying((LinkError, ConfigError, _LinkLost),
                                          healthy=lambda exc: isinstance(exc, _LinkLost))
        async for attempt in retrying:
            with attempt:
                await self._connect_and_serve()

    async def _connect_and_serve(self) -> None:
        """One attempt: connect, forward until the link is lost; raises to be retried."""
        self.link.attempts += 1
        try:
            mqtt_link = await self._connect()
        except LinkError as exc:
            self._note_error(str(exc))
            if not (exc.unsupported_protocol and self._fall_back()):
                raise
            mqtt_link = await self._connect_again()  # at once, speaking 3.1.1
        except ConfigError as exc:
            self._note_error(str(exc))
            raise
        began = time.monotonic()
        try:
            await self._serve(mqtt_link)
        finally:
            self._end_session(mqtt_link)
        if self._stopped:
            await anyio.sleep_forever()  # planned stop: no reconnect, no new `online`
        reason = mqtt_link.lost or "closed"
        takeover = self._takeover.lost(mqtt_link, time.monotonic() - began)
        if takeover is not None:  # said once, with the remedy; later losses go to debug
            log.error("MQTT link to %s: %s", self.settings.broker, takeover)
        if self._takeover.taken_over(mqtt_link):
            self.link.last_error = (f"MQTT link to {self.settings.broker} lost: "
                                    + (takeover or self._takeover_text(mqtt_link)))
            log.debug("MQTT link to %s lost: %s", self.settings.broker, reason)
            raise _LinkLost(reason)
        self._note_error(f"MQTT link to {self.settings.broker} lost: {reason}")
        raise _LinkLost(reason)

    async def _connect_again(self) -> MqttLink:
        self.link.attempts += 1
        try:
            return await self._connect()
        except (LinkError, ConfigError) as exc:
            self._note_error(str(exc))
            raise

    @staticmethod
    def _takeover_text(mqtt_link: MqttLink) -> str:
        return takeover_sentence(mqtt_link.client_id, "seen before")

    def _fall_back(self) -> bool:
        """MQTT 5 was refused as an unsupported version: use 3.1.1 unless the config pins 5."""
        current = self._link_settings
        if current.protocol != "5" or current.protocol_pinned:
            return False
        self._link_settings = replace(current, protocol="3.1.1")
        self.link.protocol = "3.1.1"
        log.warning("MQTT broker %s does not support MQTT 5: connecting with MQTT 3.1.1 "
                    "(no user properties; set mqtt.protocol to pin a version)",
                    current.broker)
        return True

    def _note_error(self, message: str) -> None:
        self.link.last_error = message
        # One line per distinct problem, not one per retry: the log stays readable during
        # a long outage, and a new kind of failure is still reported at once.
        if message != self._last_logged_error:
            log.warning("%s", message)
            self._last_logged_error = message
        else:
            log.debug("%s", message)

    async def _connect(self) -> MqttLink:
        password = read_password(self.settings)
        sp = self.sparkplug
        if sp is None:
            link = MqttLink(self._link_settings, client_id=self.client_id, password=password,
                            will=self.wire.offline(), on_puback=self._on_puback)
            await link.connect()
            return link
        from linelight.agent.mqtt.sparkplug import META_BD_SEQ, next_bd_seq

        # Each connection's will is an NDEATH with the next bdSeq; it is stored once the
        # broker accepted the connection, so a restart goes on from it (255 -> 0).
        sp.start_connection(next_bd_seq(self.journal.get_meta(META_BD_SEQ)))
        link = MqttLink(self._link_settings, client_id=self.client_id, password=password,
                        will=sp.will(), on_puback=self._on_puback, will_retain=False,
                        will_json=False, on_message=self._on_command)
        await link.connect()
        try:
            await self.journal.put_meta(META_BD_SEQ, sp.bd_seq)
        except BaseException:
            link.close()
            raise
        return link

    async def _serve(self, mqtt_link: MqttLink) -> None:
        # Rows acked by the broker on the last link but not yet deleted must not be re-read.
        await self._ack_idle.wait()
        self._session = _Session()
        self._mqtt = mqtt_link
        self.link.connected = True
        self.link.connects += 1
        if self.link.connects > 1:
            self.link.reconnects += 1
        self.link.connected_since = time.monotonic()
        self.link.last_error = None
        self._last_logged_error = None
        log.log(logging.DEBUG if self._takeover.reported else logging.INFO,
                "connected to MQTT broker %s as %s (MQTT %s)", self.settings.broker,
                self.client_id, self._link_settings.protocol)
        self._births_ns = 0
        self._replaying = False
        if self.sparkplug is not None:
            self._born = anyio.Event()
            self._host_offline = anyio.Event()
            topics = list(self.sparkplug.command_topics)
            host = self.settings.sparkplug.primary_host_id if self.settings.sparkplug else None
            if host is not None:
                # births wait for the host's online STATE, retained by the broker
                # (tck-id-message-flow-edge-node-birth-publish-phid-wait)
                topics += [f"spBv1.0/STATE/{host}", f"STATE/{host}"]
            mqtt_link.subscribe(topics)
            figures = self._figures()
            if figures is not None:
                self.sparkplug.figures(*figures)  # not born yet: remembered for the births
            if host is None:
                self._births(mqtt_link)
        else:
            self._publish_control(self.wire.online(boot=self.boot, version=self.version,
                                                   ts_ns=time.time_ns()))
        for key in self._live:
            self._live_dirty[key] = None
        self._live_wake.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(mqtt_link.serve)
            tg.start_soon(self._live_lane, mqtt_link)
            tg.start_soon(self._event_lane, mqtt_link)
            if self.sparkplug is not None:
                tg.start_soon(self._leave_when_host_offline, mqtt_link)
                tg.start_soon(self._sparkplug_figures, mqtt_link)
            await mqtt_link.wait_closed()
            tg.cancel_scope.cancel()

    def _end_session(self, mqtt_link: MqttLink) -> None:
        mqtt_link.close()
        session, self._session, self._mqtt = self._session, None, None
        self.link.connected = False
        self.link.connected_since = None
        if session is not None:
            # Unacknowledged messages stay in the journal; the next link re-sends them.
            self.link.in_flight -= session.uncounted
            session.pending.clear()
            session.unconfirmed.clear()
            session.barriers.clear()
        self._space.set()

    # -- event lane --------------------------------------------------------------------------
    async def _event_lane(self, mqtt_link: MqttLink) -> None:
        """Publish rows in seq order from the oldest one still queued, within the window."""
        session = self._session
        assert session is not None
        historical_ns = int(self.settings.historical_after * 1e9)
        # The next batch is read while this one is being published: a journal read waits
        # for the journal's commit cycle, and the link should not idle meanwhile.
        send, receive = anyio.create_memory_object_stream[Sequence[Any]](1)
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(self._read_ahead, send)
            async for records in receive:
                if not await self._publish_batch(mqtt_link, session, records, historical_ns):
                    break  # the link is lost; the session ends and the next one re-sends
            tg.cancel_scope.cancel()

    async def _publish_batch(self, mqtt_link: MqttLink, session: _Session,
                             records: Sequence[Any], historical_ns: int) -> bool:
        """Publish `records` in order; False as soon as the link is gone."""
        if self.sparkplug is not None:
            return await self._publish_sparkplug(mqtt_link, session, records, historical_ns)
        now_ns = time.time_ns()
        for record in records:
            while self.link.in_flight >= self._window:
                self._space = anyio.Event()
                await self._space.wait()
            try:
                msg = self.wire.event(record, historical=now_ns - record.enq_ns > historical_ns)
            except EncodeError as exc:
                # Never retried: it would stop every row behind it. The journal moves it to
                # the dead letters with a gap naming its seq, and delivery goes on.
                self._dead.append((record.seq, str(exc)))
                self.link.in_flight += 1  # the acker counts it out with the dead letters
                self._wake_acker()
                continue
            if self._rate.active:
                await self._rate_wait(len(msg.payload) + len(msg.topic))
            if not mqtt_link.connected:
                return False
            try:
                mid = mqtt_link.publish(msg)
            except TransportError:
                return False
            session.pending[mid] = record.seq
            self.link.in_flight += 1
            self.link.published += 1
            if self.link.published % YIELD_EVERY == 0:
                # paho only queues; let the writer put these on the wire (and the reader
                # take PUBACKs) while the rest of the batch is encoded.
                await anyio.lowlevel.checkpoint()
        return True

    # -- Sparkplug ---------------------------------------------------------------------------
    async def _publish_sparkplug(self, mqtt_link: MqttLink, session: _Session,
                                 records: Sequence[Any], historical_ns: int) -> bool:
        """Sparkplug DATA (QoS 0, several events per message), then a receipt barrier: one
        QoS 1 message whose PUBACK says the broker has read everything before it on this
        connection, which acknowledges those rows (docs/wire-format.md, "No loss at QoS 0")."""
        from linelight.agent.mqtt.sparkplug import PACK

        sp = self.sparkplug
        assert sp is not None
        # no DATA before the births (tck-id-payloads-ndata-order, -ddata-order)
        await self._born.wait()
        for start in range(0, len(records), PACK):
            chunk = records[start:start + PACK]
            now_ns = time.time_ns()
            while self.link.in_flight >= self._window:
                if not self._barrier(mqtt_link, session):
                    return False
                self._space = anyio.Event()
                await self._space.wait()
            if not mqtt_link.connected:
                return False
            # Historical: it waited in the journal, for this connection's births (a backlog,
            # a re-send, a restart) or for longer than historical_after.
            flags = [r.enq_ns < self._births_ns or now_ns - r.enq_ns > historical_ns
                     for r in chunk]
            self._replaying = any(flags)
            chunk, flags = self._encodable(chunk, flags)
            # Each message takes its Sparkplug seq when it is made: made and published with
            # no wait between, so the live lane and a rebirth (which publish between two
            # awaits here) never put a later seq on the wire first.
            for out in sp.data(chunk, flags):
                if not mqtt_link.connected or not self._born.is_set():
                    return False
                try:
                    mqtt_link.publish(out.message, qos=0)
                except TransportError:
                    return False
                if out.seqs:
                    session.unconfirmed.extend(out.seqs)
                    self.link.in_flight += len(out.seqs)
                    self.link.published += len(out.seqs)
                if self._rate.active:
                    await self._rate_wait(len(out.message.payload) + len(out.message.topic))
            if len(session.unconfirmed) >= BARRIER_EVERY and not self._barrier(mqtt_link,
                                                                               session):
                return False
            await anyio.lowlevel.checkpoint()
        return self._barrier(mqtt_link, session)

    def _encodable(self, chunk: Sequence[Any], flags: list[bool]
                   ) -> tuple[list[Any], list[bool]]:
        """The rows of `chunk` Sparkplug can carry; the others go to the dead letters (never
        retried: they would stop every row behind them)."""
        assert self.sparkplug is not None
        rows, kept = [], []
        for record, flag in zip(chunk, flags, strict=True):
            try:
                self.sparkplug.metrics_of(record)
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                self._dead.append((record.seq, f"event seq {record.seq} ({record.kind}/"
                                               f"{record.name}) cannot be encoded: {exc}"))
                self.link.in_flight += 1  # the acker counts it out with the dead letters
                self._wake_acker()
                continue
            rows.append(record)
            kept.append(flag)
        return rows, kept

    def _barrier(self, mqtt_link: MqttLink, session: _Session) -> bool:
        """The receipt barrier after the QoS 0 rows sent since the last one; False if the
        link is gone."""
        if not session.unconfirmed:
            return True
        if not mqtt_link.connected:
            return False
        through = session.unconfirmed[-1]
        try:
            mid = mqtt_link.publish(Message(self._barrier_topic, str(through).encode()), qos=1)
        except TransportError:
            return False
        session.barriers[mid] = session.unconfirmed
        session.unconfirmed = []
        return True

    def _births(self, mqtt_link: MqttLink) -> None:
        """NBIRTH and every DBIRTH, QoS 0 (tck-id-payloads-nbirth-qos, -dbirth-qos)."""
        assert self.sparkplug is not None
        for out in self.sparkplug.births():
            try:
                mqtt_link.publish(out.message, qos=0)
            except TransportError:
                return
        self._births_ns = self._births_ns or time.time_ns()
        self._born.set()

    def _on_state(self, topic: str, payload: bytes) -> None:
        """The primary host's STATE: 3.0 JSON `{"online": bool, "timestamp": ms}` on
        spBv1.0/STATE/{host}, or the pre-3.0 plain `ONLINE`/`OFFLINE` on STATE/{host}.
        Online: births (once per connection). Offline while born: NDEATH and leave; the
        journal keeps everything until the host is back."""
        mqtt_link = self._mqtt
        online: bool | None = None
        if topic.startswith("spBv1.0/"):
            try:
                state = json.loads(payload[:1024]) if len(payload) <= 1024 else None
            except ValueError:
                state = None
            if isinstance(state, dict) and type(state.get("online")) is bool \
                    and type(state.get("timestamp")) is int:
                if state["timestamp"] < self._host_ts:
                    log.debug("Sparkplug STATE on %s older than the last one: ignored",
                              printable(topic))
                    return  # tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp
                self._host_ts = state["timestamp"]
                online = state["online"]
        elif payload.strip() in (b"ONLINE", b"OFFLINE"):
            online = payload.strip() == b"ONLINE"
        if online is None:
            log.warning("Sparkplug STATE on %s ignored: %d bytes that are neither 3.0 JSON "
                        "{\"online\", \"timestamp\"} nor ONLINE/OFFLINE", printable(topic),
                        len(payload))
            return
        if mqtt_link is None or not mqtt_link.connected:
            return
        if online and not self._born.is_set():
            log.info("Sparkplug primary host %s is online: births", printable(topic))
            self._births(mqtt_link)
        elif not online and self._born.is_set():
            self._host_offline.set()

    async def _leave_when_host_offline(self, mqtt_link: MqttLink) -> None:
        """tck-id-message-flow-edge-node-birth-publish-phid-offline: NDEATH, DISCONNECT."""
        await self._host_offline.wait()
        session = self._session
        log.warning("Sparkplug primary host of %s went offline: NDEATH sent and the link "
                    "closed; the journal keeps the events until the host is back",
                    self.settings.broker)
        if session is not None:
            self._deaths(mqtt_link, session)
        await mqtt_link.disconnect(with_will=True)

    def _on_command(self, topic: str, payload: bytes) -> None:
        """An NCMD or DCMD: `Node Control/Rebirth` = true births again (same bdSeq); any
        other write is refused and logged; a payload that is not Sparkplug B is ignored."""
        from google.protobuf.message import DecodeError

        from linelight.agent.mqtt.sparkplug import REBIRTH, decode

        sp, mqtt_link = self.sparkplug, self._mqtt
        if sp is None:
            return
        if topic not in (sp.command_topics[0],) and not topic.startswith(
                sp.command_topics[1][:-1]):
            self._on_state(topic, payload)  # the only other subscription
            return
        shown = printable(topic)
        try:
            command = decode(payload)
        except (DecodeError, ValueError) as exc:
            log.warning("Sparkplug command on %s ignored: %d bytes that are not a Sparkplug B "
                        "payload (%s)", shown, len(payload), printable(str(exc)))
            return
        names = sp.alias_names()
        rebirth = False
        refused: list[str] = []
        node_command = topic == sp.command_topics[0]
        for metric in command.metrics:
            name = metric.name if metric.HasField("name") else \
                names.get(metric.alias, (None, f"alias {metric.alias}"))[1]
            if node_command and name == REBIRTH:
                rebirth = rebirth or (metric.WhichOneof("value") == "boolean_value"
                                      and metric.boolean_value)
            else:
                refused.append(printable(name))
        if refused:
            log.warning("Sparkplug command on %s refused: it writes %s; linelight's lamps and "
                        "data come from its rules and inputs, not from the network", shown,
                        ", ".join(refused[:10]) + (f" and {len(refused) - 10} more"
                                                   if len(refused) > 10 else ""))
        if rebirth and mqtt_link is not None and mqtt_link.connected and self._born.is_set():
            log.info("Sparkplug rebirth asked on %s: NBIRTH and DBIRTHs again (bdSeq %d)",
                     shown, sp.bd_seq)
            self._births(mqtt_link)

    async def _read_ahead(self, send: Any) -> None:
        cursor = 0
        batch = max(1, min(self.settings.batch, self._window))
        async with send:
            while True:
                records = await self.journal.peek(batch, after_seq=cursor)
                if not records:
                    await self.journal.wait_new(cursor)
                    continue
                cursor = records[-1].seq
                await send.send(records)

    async def _rate_wait(self, nbytes: int) -> None:
        while True:
            wait = self._rate.delay(nbytes, time.monotonic())
            if wait <= 0:
                return
            await anyio.sleep(wait)

    def _on_puback(self, mid: int, reason: int, text: str) -> None:
        session = self._session
        if session is None:
            return
        if mid in session.control:
            session.control.discard(mid)
            waiter = session.waiters.pop(mid, None)
            if waiter is not None:
                waiter.set()
            if reason >= 0x80:
                log.warning("broker %s refused a live/status message: %s",
                            self.settings.broker, text)
            return
        covered = session.barriers.pop(mid, None)
        if covered is not None:
            if reason >= 0x80 and not self._barrier_refused:
                self._barrier_refused = True
                log.warning("broker %s refused the receipt barrier on %s (%s); its PUBACK still "
                            "proves the events before it arrived; allow this topic to the "
                            "agent in the broker's ACL", self.settings.broker,
                            self._barrier_topic, text)
            self._acks.extend(covered)
            self._wake_acker()
            return
        seq = session.pending.pop(mid, None)
        if seq is None:
            return
        if reason >= 0x80:
            self._dead.append((seq, f"broker refused (MQTT reason 0x{reason:02x} {text})"))
        else:
            self._acks.append(seq)
        self._wake_acker()

    def _wake_acker(self) -> None:
        if self._ack_idle.is_set():
            self._ack_idle = anyio.Event()
        self._ack_wake.set()

    async def _acker(self) -> None:
        """Deletes PUBACKed rows in batches: whatever arrived while the last commit ran."""
        while True:
            await self._ack_wake.wait()
            self._ack_wake = anyio.Event()
            while self._acks or self._dead:
                acks, self._acks = self._acks, []
                dead, self._dead = self._dead, []
                if acks:
                    await self.journal.ack(acks)
                    self.link.acked += len(acks)
                for seq, why in dead:
                    await self.journal.dead_letter(seq, why)
                    self.link.dead_letters += 1
                    log.warning("event seq %d dead-lettered: %s", seq, why)
                self.link.in_flight -= len(acks) + len(dead)
                self._space.set()
            self._ack_idle.set()
            self._acked.set()
            self._acked = anyio.Event()

    # -- live lane and status ----------------------------------------------------------------
    def _publish_control(self, msg: Message) -> int | None:
        """Publish a retained live/status message now; its packet id, or None if no link."""
        mqtt_link, session = self._mqtt, self._session
        if mqtt_link is None or session is None or not mqtt_link.connected:
            return None
        try:
            mid = mqtt_link.publish(msg, retain=True)
        except TransportError:
            return None  # link lost: live values are sent again after the reconnect
        session.control.add(mid)
        return mid

    async def _live_lane(self, mqtt_link: MqttLink) -> None:
        if self.sparkplug is not None:
            await self._sparkplug_live(mqtt_link)
            return
        while mqtt_link.connected:
            await self._live_wake.wait()
            self._live_wake = anyio.Event()
            dirty, self._live_dirty = list(self._live_dirty), {}
            for machine, key in dirty:
                value, ts_ns = self._live[(machine, key)]
                for msg in self.wire.live_messages(key, value, ts_ns, machine):
                    self._publish_control(msg)
                    self.link.live_published += 1

    async def stop(self, *, flush_through: int | None = None) -> None:
        """Planned shutdown while `run()` still runs: send what the journal holds (up to
        `flush_through`, or all of it; for `flush_on_stop` at most), then leave `offline`
        retained (waiting up to 3 s for its PUBACK), then DISCONNECT. Events not yet
        acknowledged by then stay queued for the next start."""
        self._stopped = True
        mqtt_link, session = self._mqtt, self._session
        if mqtt_link is None or session is None or not mqtt_link.connected:
            return
        # Sparkplug before its births (the primary host offline): nothing may be sent
        unborn = self.sparkplug is not None and not self._born.is_set()
        with anyio.CancelScope(shield=True):
            sent = False if unborn else await self._flush(mqtt_link, flush_through)
            if not sent and unborn:
                log.warning("stopping with events still queued: the Sparkplug primary host "
                            "is offline; they are sent at the next start")
            elif not sent:
                log.warning("stopping with events still queued: the broker %s did not "
                            "acknowledge them within flush_on_stop (%gs); they are sent at "
                            "the next start", self.settings.broker,
                            self.settings.flush_on_stop)
            with anyio.move_on_after(STOP_BUDGET_S):
                mid = (self._publish_control(self.wire.offline()) if self.sparkplug is None
                       else None if unborn else self._deaths(mqtt_link, session))
                if mid is not None:
                    acked = session.waiters[mid] = anyio.Event()
                    with anyio.move_on_after(STOP_BUDGET_S / 2):
                        await acked.wait()
                # Sparkplug over MQTT 5: reason 0x04, the broker sends the NDEATH will too
                # (tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt50)
                await mqtt_link.disconnect(with_will=self.sparkplug is not None and not unborn)
        mqtt_link.close("stopped")
        self.link.connected = False

    def _figures(self) -> tuple[int, float, int] | None:
        """(queue depth, oldest age in s, dropped) from the journal, if it tells them."""
        stats = getattr(self.journal, "stats", None)
        if stats is None:
            return None
        s = stats()
        if s is None:
            return None
        age = max(0.0, (time.time_ns() - s.oldest_enq_ns) / 1e9) if s.depth and \
            s.oldest_enq_ns else 0.0
        return int(s.depth), age, int(s.dropped)

    async def _sparkplug_figures(self, mqtt_link: MqttLink) -> None:
        """linelight's queue depth, oldest age and dropped count as node metrics: the births
        carry the latest (they are updated before them), NDATA every FIGURES_S on change."""
        sp = self.sparkplug
        assert sp is not None
        if self._figures() is None:
            return
        while mqtt_link.connected:
            await anyio.sleep(FIGURES_S)
            figures = self._figures()
            if figures is None or not self._born.is_set():
                continue
            for out in sp.figures(*figures):
                try:
                    mqtt_link.publish(out.message, qos=0)
                except TransportError:
                    return

    async def _sparkplug_live(self, mqtt_link: MqttLink) -> None:
        """The live lane as DDATA of current values (not historical): every value once right
        after the births (the backlog behind them is historical), then each change while
        the event lane replays historical rows; otherwise the events carry the changes live."""
        sp = self.sparkplug
        assert sp is not None
        await self._born.wait()
        every = True
        while mqtt_link.connected:
            if not every:
                await self._live_wake.wait()
            self._live_wake = anyio.Event()
            dirty = list(self._live) if every else list(self._live_dirty)
            self._live_dirty = {}
            if (every or self._replaying) and self._born.is_set():
                for machine, key in dirty:
                    value, ts_ns = self._live[(machine, key)]
                    for out in sp.live(key, value, ts_ns, machine):
                        try:
                            mqtt_link.publish(out.message, qos=0)
                        except TransportError:
                            return
                        self.link.live_published += 1
            every = False

    def _deaths(self, mqtt_link: MqttLink, session: _Session) -> int | None:
        """Sparkplug clean stop: DDEATHs (QoS 0), then the NDEATH (QoS 1: its packet id)."""
        assert self.sparkplug is not None
        self._born = anyio.Event()  # no DATA after the deaths
        mid = None
        for out in self.sparkplug.deaths():
            try:
                mid = mqtt_link.publish(out.message, qos=1 if out.verb == "NDEATH" else 0)
            except TransportError:
                return None
        if mid is not None:
            session.control.add(mid)
        return mid

    async def _flush(self, mqtt_link: MqttLink, through: int | None) -> bool:
        """Wait until every row up to seq `through` (every row, if None) is acknowledged and
        deleted; False if `flush_on_stop` ran out or the link was lost first."""
        with anyio.move_on_after(self.settings.flush_on_stop):
            while mqtt_link.connected:
                acked = self._acked
                oldest = await self.journal.peek(1)
                if not oldest or (through is not None and oldest[0].seq > through):
                    return True
                # Woken by the next ack round; the timeout re-checks a link that went quiet.
                with anyio.move_on_after(0.5):
                    await acked.wait()
        return False

