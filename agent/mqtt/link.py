"""One MQTT connection: a fresh paho client per attempt, its network I/O run in our event loop.

paho does the protocol; we do the waiting. The TCP connect and TLS handshake (blocking in
paho) run in a worker thread bounded by `connect_timeout`; after that the socket is
non-blocking and driven from the event loop through paho's socket callbacks (the approach of
paho's examples/loop_asyncio.py and aiomqtt): a reader task calls `loop_read` when the socket
is readable, a writer task calls `loop_write` while paho has bytes queued, a housekeeping
task pings after half a keepalive of silence, calls `loop_misc`, and drops a link that
stayed silent for 1.5 x keepalive, or that has messages in flight and sent no PUBACK for
`puback_timeout` (a broker that answers pings but acknowledges nothing). All paho
callbacks therefore run in the event loop thread: no locks and no thread hand-offs on the hot path.

paho's own in-flight limit is switched off (`max_inflight_messages = 0`): the forwarder keeps
its own window, and paho's limit rescans its whole message table on every PUBACK.

Library exceptions stop here: callers see `LinkError` (could not connect, with a sentence
naming the broker and the reason) and `MqttLink.lost` (why an open link ended; a malformed
packet from the broker is a "protocol error: ..." sentence there, never an exception).
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as _Properties
from paho.mqtt.reasoncodes import ReasonCode

from linelight.agent.mqtt.config import MqttSettings
from linelight.agent.mqtt.errors import TransportError
from linelight.agent.mqtt.wire import CONTENT_TYPES, Message, pack_user_properties

log = logging.getLogger(__name__)

Properties: Any = _Properties  # paho's Properties has no type hints

# (mid, reason code, reason text); reason >= 0x80 is a refusal (MQTT 5 only).
PubackHandler = Callable[[int, int, str], None]
# (topic, payload) of a message the broker delivers to a subscription of this link
MessageHandler = Callable[[str, bytes], None]

UNSUPPORTED_PROTOCOL = 0x84  # CONNACK reason "Unsupported Protocol Version"
DISCONNECT_WITH_WILL = 0x04  # DISCONNECT reason: the broker publishes the will all the same
SESSION_TAKEN_OVER = 0x8E  # DISCONNECT reason: another client connected with our client id
# A broker that does not send DISCONNECT 0x8E (mosquitto 2.0.11 closes the old connection
# silently): this many links in a row, each accepted and then closed by the broker within
# TAKEOVER_LINK_S without a reason, are read as another client with our client id.
TAKEOVER_CLOSES = 3
TAKEOVER_LINK_S = 30.0


def takeover_sentence(client_id: str, how: str) -> str:
    return (f"session taken over ({how}): another client connected to the broker with the same "
            f"client id '{client_id}', e.g. a second agent with the same agent_id (a copied "
            "config); give each agent a unique agent_id")


class TakeoverWatch:
    """Decides, link by link, whether a lost link was taken over by another client."""

    def __init__(self) -> None:
        self.short_closes = 0
        self.reported = False

    def lost(self, link: MqttLink, lived_s: float) -> str | None:
        """The takeover sentence the first time a takeover is seen; None otherwise."""
        if link.closed_by_broker and lived_s < TAKEOVER_LINK_S:
            self.short_closes += 1
        elif not link.taken_over:
            self.short_closes = 0
            if lived_s >= TAKEOVER_LINK_S:
                self.reported = False  # the episode is over: a new one is reported again
        suspected = link.taken_over or self.short_closes >= TAKEOVER_CLOSES
        if not suspected or self.reported:
            return None
        self.reported = True
        if link.taken_over:
            return link.lost
        return takeover_sentence(link.client_id, f"the broker closed {self.short_closes} links "
                                                 "in a row right after accepting them, without "
                                                 "a reason")

    def taken_over(self, link: MqttLink) -> bool:
        return link.taken_over or self.short_closes >= TAKEOVER_CLOSES
SILENT_FACTOR = 1.5  # a link with no byte from the broker for 1.5 x keepalive is dead
READ_SLICE = 64  # packets handled per turn of the event loop


class PackedProperties:
    """MQTT 5 PUBLISH properties already encoded by `wire`.

    paho's `Properties.pack()` is generic and slow enough to halve the publish rate; paho only
    ever calls `pack()` on what it is given, so this stands in for it on the hot path.
    """

    __slots__ = ("_packed",)

    def __init__(self, packed: bytes) -> None:
        self._packed = packed

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:
        return f"[properties: {len(self._packed)} bytes]"


class LinkError(TransportError):
    """The broker could not be reached or refused the connection; one plain sentence."""

    def __init__(self, broker: str, reason: str, *, auth: bool = False,
                 unsupported_protocol: bool = False) -> None:
        super().__init__(f"cannot connect to MQTT broker {broker}: {reason}")
        self.broker = broker
        self.reason = reason
        self.auth = auth  # refused for credentials or authorization
        self.unsupported_protocol = unsupported_protocol  # refused our protocol version


# OpenSSL X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH
_NAME_MISMATCH = frozenset({62, 63, 64})


def _describe_connect_error(exc: BaseException, settings: MqttSettings) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _NAME_MISMATCH:
        return (f"TLS certificate is not valid for '{settings.host}' ({exc.verify_message}); "
                f"connect by a name the certificate lists, or set "
                f"mqtt.tls.insecure_skip_hostname = true")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        hint = ("check mqtt.tls.ca_file" if settings.tls and settings.tls.ca_file
                else "set mqtt.tls.ca_file to the CA that signed the broker's certificate")
        return f"TLS certificate verification failed ({detail}); {hint}"
    if isinstance(exc, ssl.CertificateError):
        return f"TLS certificate does not match host '{settings.host}' ({exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host '{settings.host}' ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {settings.connect_timeout:g}s"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def _tls_context(settings: MqttSettings) -> ssl.SSLContext:
    tls = settings.tls
    assert tls is not None
    try:
        ctx = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None)
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except FileNotFoundError as exc:
        raise LinkError(settings.broker, f"TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise LinkError(settings.broker, f"cannot load TLS files ({exc})") from None
    if tls.insecure_skip_hostname:
        ctx.check_hostname = False
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


def _will_properties() -> Any:
    """The last will is the JSON `offline` status: say so, as every other message does."""
    props = Properties(PacketTypes.WILLMESSAGE)
    props.PayloadFormatIndicator = 1
    props.ContentType = CONTENT_TYPES["json"]
    return props


_NO_PROPERTIES = Properties(PacketTypes.PUBACK)
_SUCCESS_REASONS: dict[int, ReasonCode] = {}
# MQTT 5.0 section 3.4.2.1: the reason codes a PUBACK may carry; success is < 0x80.
PUBACK_REASONS = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
# What paho raises while decoding a packet (its own _packet.DECODE_ERRORS, plus MalformedPacket).
_DECODE_ERRORS = (MQTTException, struct.error, IndexError, KeyError, ValueError)


def _success_reason(code: int) -> ReasonCode:
    """One shared ReasonCode object per PUBACK success code (callers only read it)."""
    reason = _SUCCESS_REASONS.get(code)
    if reason is None:
        reason = _SUCCESS_REASONS[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
    return reason


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails.

    paho leaves a socket whose TLS handshake failed to the garbage collector (a
    ResourceWarning per retry during a long outage with a wrong CA). `SSLContext.sslsocket_class`
    is the standard library's public hook for this, so paho's `_ssl_wrap_socket` stays as it is.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _Client(mqtt.Client):
    """paho's client with a bounded read and a fast, strict PUBACK decoder.

    paho 2.2 is pinned to its minor version: the private names used here are checked by
    tests/agent/mqtt/test_paho_contract.py, which fails in plain words when they change.

    - `read_some` handles at most `limit` packets (paho's `loop_read` ignores its argument
      and reads as many packets as it has messages in flight).
    - A PUBACK that says success without properties is decoded without building a
      ReasonCode and a Properties object per packet; that decoding was a third of paho's
      per-message cost (bench/replay.py measures both, `--stock-puback`). Anything else goes
      through paho's own decoder. A malformed PUBACK (wrong size, a reason code MQTT does not
      define for PUBACK, a packet id that is not in flight) is a protocol error: the
      connection ends and `protocol_error` says why, in one sentence.
    """

    protocol_error: str | None = None

    def read_some(self, limit: int) -> tuple[MQTTErrorCode, bool]:
        """Read and handle at most `limit` packets. Returns (rc, True if the limit was reached)."""
        for _ in range(limit):
            if self._sock is None:  # noqa: SLF001 paho internal, checked by test_paho_contract
                return MQTTErrorCode.MQTT_ERR_NO_CONN, False
            try:
                rc = self._packet_read()  # noqa: SLF001 one packet at a time: loop_read ignores its limit
            except _DECODE_ERRORS as exc:  # paho decodes some packets without its guard
                self.protocol_error = self.protocol_error or (
                    f"undecodable packet 0x{self._in_packet['command']:02x} "  # noqa: SLF001
                    f"({exc})")
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
            if rc > 0:
                return self._loop_rc_handle(rc), False  # noqa: SLF001 paho's own handling of a failed read
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS, False
        return MQTTErrorCode.MQTT_ERR_SUCCESS, True

    def ping(self) -> None:
        """Send a PINGREQ now, unless one is already waiting for its PINGRESP."""
        # paho pings only after a whole keepalive of silence; we ping after half of one.
        if self._ping_t == 0 and self._sock is not None:  # noqa: SLF001 paho internals, see test_paho_contract
            self._send_pingreq()  # noqa: SLF001 no public "ping now" in paho

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]  # noqa: SLF001 the packet paho just read (override of its decoder)
        size = len(packet)
        if cmd != "PUBACK" or size < 2:
            return self._paho_decode(cmd, packet)
        mid = (packet[0] << 8) | packet[1]
        v5 = self.protocol == mqtt.MQTTv5
        if v5 and size >= 3 and packet[2] not in PUBACK_REASONS:
            return self._reject(f"PUBACK for packet id {mid} with reason code "
                                f"0x{packet[2]:02x}, which MQTT 5 does not define for PUBACK")
        with self._out_message_mutex:  # noqa: SLF001 as paho's own decoder does
            if mid not in self._out_messages:  # noqa: SLF001 as paho's own decoder does
                return self._reject(f"PUBACK for packet id {mid}, which is not in flight")
            # Success (< 0x80, e.g. 0x10 "no matching subscribers" from mosquitto) and no
            # properties: packet id alone (3.1.1, MQTT 5's short form), or followed by the
            # reason and possibly an empty property length.
            if size == 2 or (v5 and size <= 4 and packet[2] < 0x80
                             and (size == 3 or packet[3] == 0)):
                reason = _success_reason(packet[2] if size >= 3 else 0)
                # paho's delivery of an ack: on_publish, then the message leaves its table
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)  # noqa: SLF001
        return self._paho_decode(cmd, packet)

    def _paho_decode(self, cmd: Any, packet: bytes | bytearray) -> MQTTErrorCode:
        try:
            return super()._handle_pubackcomp(cmd)  # noqa: SLF001 paho's own decoder
        except MalformedPacket as exc:
            self._reject(f"malformed {cmd} of {len(packet)} byte(s) ({exc})")
            raise  # paho's _packet_read turns it into MQTT_ERR_PROTOCOL

    def _reject(self, reason: str) -> MQTTErrorCode:
        self.protocol_error = self.protocol_error or reason
        return MQTTErrorCode.MQTT_ERR_PROTOCOL


class MqttLink:
    """One connection attempt and, if it succeeds, the open link until it is lost.

    `await connect()` returns once the broker accepted (CONNACK success) or raises
    `LinkError`. Then run `await serve()` (in a task) for as long as the link lives; it
    returns when the link is lost, with the reason in `lost`. `publish()` queues a QoS 1
    message and returns its packet id; PUBACKs come back through `on_puback`.
    """

    def __init__(self, settings: MqttSettings, *, client_id: str, password: str | None,
                 will: Message | None, on_puback: PubackHandler, will_retain: bool = True,
                 will_json: bool = True, on_message: MessageHandler | None = None) -> None:
        self.settings = settings
        self.broker = settings.broker
        self.client_id = client_id
        self.taken_over = False  # the broker said DISCONNECT 0x8E session taken over
        self.closed_by_broker = False  # the broker closed the connection without a reason
        self._on_puback = on_puback
        self._v5 = settings.protocol == "5"
        self._client = _Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else True,
        )
        c = self._client
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.connect_timeout = settings.connect_timeout
        c.suppress_exceptions = False
        if settings.username is not None:
            c.username_pw_set(settings.username, password)
        if settings.tls is not None:
            c.tls_set_context(_tls_context(settings))
            if settings.tls.insecure_skip_hostname:
                c.tls_insecure_set(True)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=1, retain=will_retain,
                       properties=_will_properties() if self._v5 and will_json else None)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_publish = self._handle_publish
        self._on_message = on_message
        if on_message is not None:
            c.on_message = self._handle_message
        self._disconnecting = False  # our DISCONNECT is on its way: the close is ours
        self._qos0: set[int] = set()  # QoS 0 packet ids: paho reports them written, not acked
        self._sock: Any = None
        self._fd = -1
        self._connack: anyio.Event = anyio.Event()
        self._connected = False
        self._refusal: LinkError | None = None
        self._want_write = anyio.Event()
        self._closed = anyio.Event()
        self.lost: str | None = None
        self.last_rx = time.monotonic()
        self._unacked = 0  # QoS 1 messages published on this link and not yet acknowledged
        self._acked_at = 0.0  # monotonic: the last PUBACK, or the first publish after none were due

    # -- paho callbacks (run in the event loop thread, inside loop_read/loop_write) ---------
    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                        reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            auth = reason.value in (0x04, 0x05, 0x86, 0x87, 0x8C)  # 3.1.1 rc 4/5, v5 codes
            # 0x84: an MQTT 5 broker's refusal, and what paho makes of a 3.1.1-only broker's
            # CONNACK return code 1 "unacceptable protocol version".
            unsupported = reason.value == UNSUPPORTED_PROTOCOL
            said = getattr(properties, "ReasonString", None) if properties else None
            self._refusal = LinkError(
                self.broker, f"connection refused: {reason.getName()}"
                + (f" ({said})" if said else "")
                + (" (check mqtt.username and mqtt.password_file)" if auth else ""),
                auth=auth, unsupported_protocol=unsupported)
        else:
            self._connected = True
        self._connack.set()

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                           reason: ReasonCode, properties: Any) -> None:
        if self.lost is None:
            if self._disconnecting:
                self._mark_lost("disconnected by us")
                return
            if self._client.protocol_error is not None:
                self._mark_lost(f"protocol error: the broker sent a "
                                f"{self._client.protocol_error}; connection dropped")
                return
            from_broker = bool(getattr(flags, "is_disconnect_packet_from_server", False))
            code = reason.value if isinstance(reason, ReasonCode) else None
            if from_broker and code == SESSION_TAKEN_OVER:
                self.taken_over = True
                self._mark_lost(takeover_sentence(self.client_id, "the broker says"))
                return
            text = reason.getName() if isinstance(reason, ReasonCode) else str(reason)
            if from_broker:
                said = getattr(properties, "ReasonString", None) if properties else None
                self._mark_lost(f"disconnected by the broker: {text}"
                                + (f" ({said})" if said else ""))
            else:  # the broker closed the TCP connection without saying why
                self.closed_by_broker = True
                self._mark_lost("connection closed by the broker (no DISCONNECT reason)")

    def _handle_message(self, client: mqtt.Client, userdata: Any,
                        msg: mqtt.MQTTMessage) -> None:
        assert self._on_message is not None
        self._on_message(msg.topic, bytes(msg.payload))

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                        reason: ReasonCode, properties: Any) -> None:
        if mid in self._qos0:
            self._qos0.discard(mid)  # written to the socket; no PUBACK will come
            return
        self._unacked -= 1
        self._acked_at = time.monotonic()
        code = reason.value if isinstance(reason, ReasonCode) else 0
        self._on_puback(mid, code, reason.getName() if code >= 0x80 else "")

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._want_write.set()

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._want_write.is_set():
            self._want_write = anyio.Event()

    def _mark_lost(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        self._connected = False
        self._closed.set()
        self._connack.set()

    # -- public -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected and self.lost is None

    async def connect(self) -> None:
        """TCP (+TLS) in a worker thread, then CONNECT/CONNACK in the loop; raises LinkError."""
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        keepalive = max(1, math.ceil(self.settings.keepalive))
        try:
            await anyio.to_thread.run_sync(
                lambda: self._client.connect(
                    self.settings.host, self.settings.port, keepalive=keepalive,
                    clean_start=True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=props))
        except (OSError, ValueError) as exc:
            self._client._sock_close()  # noqa: SLF001 no public close without DISCONNECT
            raise LinkError(self.broker, _describe_connect_error(exc, self.settings)) from None
        self._sock = self._client.socket()
        # Waits use the bare descriptor: paho may close the socket object while another task
        # waits on it, and deregistering a closed socket *object* raises in asyncio.
        self._fd = self._sock.fileno()
        self.last_rx = time.monotonic()
        # From here on paho must not write by itself; it asks us through these callbacks.
        self._client.on_socket_register_write = self._register_write
        self._client.on_socket_unregister_write = self._unregister_write
        if self._client.want_write():
            self._want_write.set()
        try:
            with anyio.fail_after(self.settings.connect_timeout):
                while not self._connack.is_set():
                    await self._io_once()
        except TimeoutError:
            self.close()
            raise LinkError(self.broker, f"no CONNACK within "
                                         f"{self.settings.connect_timeout:g}s") from None
        if self._refusal is not None:
            self.close()
            raise self._refusal
        if not self._connected:
            self.close()
            raise LinkError(self.broker, self.lost or "connection closed during CONNECT")

    async def _io_once(self) -> None:
        """One step of I/O while waiting for CONNACK: write what is queued, then read."""
        if self._want_write.is_set():
            await anyio.wait_writable(self._fd)
            self._client.loop_write()
            return
        with anyio.move_on_after(0.5):
            await anyio.wait_readable(self._fd)
            self._read()
        if self._sock is not None and self._client.socket() is None:
            self._mark_lost("connection closed by the broker")

    def publish(self, msg: Message, *, retain: bool = False, qos: int = 1) -> int:
        """Queue one message (QoS 1, or 0: no PUBACK comes back); returns its packet id.
        Raises TransportError if closed."""
        props: Any = None
        if self._v5 and (msg.properties or msg.user_properties):
            props = PackedProperties(msg.properties or pack_user_properties(msg.user_properties))
        info = self._client.publish(msg.topic, msg.payload, qos=qos, retain=retain,
                                    properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._mark_lost(f"publish failed: {mqtt.error_string(info.rc)}")
            raise TransportError(f"MQTT link to {self.broker} lost: {self.lost}")
        if qos == 0:
            self._qos0.add(int(info.mid))
            return int(info.mid)
        if self._unacked == 0:
            self._acked_at = time.monotonic()  # the PUBACK clock starts with the first one due
        self._unacked += 1
        return int(info.mid)

    def subscribe(self, topics: list[str]) -> None:
        """Subscribe (QoS 0) to `topics`; messages come to `on_message`. Raises
        TransportError if closed."""
        rc, _ = self._client.subscribe([(topic, 0) for topic in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._mark_lost(f"subscribe failed: {mqtt.error_string(rc)}")
            raise TransportError(f"MQTT link to {self.broker} lost: {self.lost}")

    async def serve(self) -> None:
        """Drive the open link until it is lost; `lost` then says why."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reader)
                tg.start_soon(self._writer)
                tg.start_soon(self._housekeeping)
                await self._closed.wait()
                tg.cancel_scope.cancel()
        finally:
            self.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self, reason: str = "closed") -> None:
        """Drop the connection without DISCONNECT (the will fires, as after a crash)."""
        self._mark_lost(reason)
        if self._client.socket() is not None:
            self._client._sock_close()  # noqa: SLF001 no public close without DISCONNECT

    async def disconnect(self, *, with_will: bool = False) -> None:
        """A clean DISCONNECT (the broker drops the will; with MQTT 5 and `with_will`,
        reason 0x04 "Disconnect with Will Message": the broker publishes it), then close.

        `serve()` must be running: its writer sends the packet, after which paho closes the
        socket and `wait_closed` returns. Bounded by `connect_timeout`.
        """
        if self.connected:
            self._disconnecting = True
            if with_will and self._v5:
                self._client.disconnect(reasoncode=ReasonCode(
                    PacketTypes.DISCONNECT, identifier=DISCONNECT_WITH_WILL))
            else:
                self._client.disconnect()
            with anyio.move_on_after(self.settings.connect_timeout):
                await self._closed.wait()
        self.close("disconnected by us")

    # -- I/O tasks -------------------------------------------------------------------------
    def _read(self) -> bool:
        """Handle up to READ_SLICE packets; True if more may be waiting (read again soon)."""
        self.last_rx = time.monotonic()
        c = self._client
        rc, more = c.read_some(READ_SLICE)
        if rc != mqtt.MQTT_ERR_SUCCESS or c.socket() is None:
            self._mark_lost(f"connection lost: {mqtt.error_string(rc)}"
                            if rc != mqtt.MQTT_ERR_SUCCESS else "connection closed by the broker")
            return False
        # TLS may hold decrypted bytes that select() cannot see.
        pending = getattr(self._sock, "pending", None)
        return more or (pending is not None and pending() > 0)

    async def _reader(self) -> None:
        while self.lost is None and self._client.socket() is not None:
            await anyio.wait_readable(self._fd)
            if self._client.socket() is None:
                break
            # A slice at a time: thousands of PUBACKs in one go would hold the event loop
            # (and the scan loop that shares it) for tens of milliseconds.
            while self._read():
                await anyio.lowlevel.checkpoint()
        self._mark_lost("connection closed")

    async def _writer(self) -> None:
        while self.lost is None and self._client.socket() is not None:
            await self._want_write.wait()
            if self._client.socket() is None:
                break
            await anyio.wait_writable(self._fd)
            if self._client.socket() is None:
                break
            rc = self._client.loop_write()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._mark_lost(f"connection lost: {mqtt.error_string(rc)}")
        self._mark_lost("connection closed")

    async def _housekeeping(self) -> None:
        keepalive = max(1.0, float(math.ceil(self.settings.keepalive)))
        period = min(1.0, keepalive / 4)
        while self.lost is None:
            await anyio.sleep(period)
            # paho pings only after a whole keepalive of silence and gives up after a second
            # one; we ask after half a keepalive, so a live broker has answered long before
            # the 1.5 x keepalive limit even on a loaded machine.
            silent = time.monotonic() - self.last_rx
            if silent >= SILENT_FACTOR * keepalive:
                self._mark_lost(f"no data from the broker for {silent:.1f}s "
                                f"(keepalive {keepalive:g}s): silent link")
                return
            if silent >= keepalive / 2:
                self._client.ping()
            # A broker that answers PINGREQ but acknowledges nothing would keep this link
            # "connected" forever with the window full: PUBACKs must keep coming.
            waited = time.monotonic() - self._acked_at
            if self._unacked and waited >= self.settings.puback_timeout:
                self._mark_lost(f"no PUBACK for {waited:.1f}s with {self._unacked} message(s) "
                                f"in flight (mqtt.puback_timeout "
                                f"{self.settings.puback_timeout:g}s)")
                return
            self._client.loop_misc()
