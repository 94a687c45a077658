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

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from linelight.agent.mqtt.config import MqttSettings, read_mqtt, read_password
from linelight.agent.mqtt.errors import TransportError
from linelight.agent.mqtt.link import LinkError, MqttLink, TakeoverWatch, takeover_sentence
from linelight.agent.mqtt.ratelimit import RateLimit
from linelight.agent.mqtt.wire import EncodeError, Message, Wire
from linelight.hw.backoff import Backoff
from linelight.rules.errors import ConfigError

__all__ = ["Forwarder", "LinkStatus", "MqttSettings", "read_mqtt"]

log = logging.getLogger(__name__)

STOP_BUDGET_S = 3.0  # a planned stop waits this long at most for the broker
YIELD_EVERY = 64  # publishes between two yields to the writer (bench/replay.py)


class JournalLike(Protocol):
    """The part of `linelight.agent.journal.Journal` the forwarder uses."""

    async def peek(self, limit: int, after_seq: int = 0) -> Sequence[Any]: ...
    async def ack(self, seqs: Sequence[int]) -> Any: ...
    async def dead_letter(self, seq: int, reason: str) -> Any: ...
    async def wait_new(self, after_seq: int) -> Any: ...


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
        link = MqttLink(self._link_settings, client_id=self.client_id, password=password,
                        will=self.wire.offline(), on_puback=self._on_puback)
        await link.connect()
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
        self._publish_control(self.wire.online(boot=self.boot, version=self.version,
                                               ts_ns=time.time_ns()))
        for key in self._live:
            self._live_dirty[key] = None
        self._live_wake.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(mqtt_link.serve)
            tg.start_soon(self._live_lane, mqtt_link)
            tg.start_soon(self._event_lane, mqtt_link)
            await mqtt_link.wait_closed()
            tg.cancel_scope.cancel()

    def _end_session(self, mqtt_link: MqttLink) -> None:
        mqtt_link.close()
        session, self._session, self._mqtt = self._session, None, None
        self.link.connected = False
        self.link.connected_since = None
        if session is not None:
            # Unacknowledged messages stay in the journal; the next link re-sends them.
            self.link.in_flight -= len(session.pending)
            session.pending.clear()
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
        with anyio.CancelScope(shield=True):
            sent = await self._flush(mqtt_link, flush_through)
            if not sent:
                log.warning("stopping with events still queued: the broker %s did not "
                            "acknowledge them within flush_on_stop (%gs); they are sent at "
                            "the next start", self.settings.broker,
                            self.settings.flush_on_stop)
            with anyio.move_on_after(STOP_BUDGET_S):
                mid = self._publish_control(self.wire.offline())
                if mid is not None:
                    acked = session.waiters[mid] = anyio.Event()
                    with anyio.move_on_after(STOP_BUDGET_S / 2):
                        await acked.wait()
                await mqtt_link.disconnect()
        mqtt_link.close("stopped")
        self.link.connected = False

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
