"""OPC UA (asyncua): one session and one data-change subscription per source, Boolean lamps.

asyncua exceptions stop here: callers see `DeviceError`. Quality from the StatusCode of every
notification: Good -> GOOD; Uncertain -> BAD with the status name (the value is kept for
display; rules never use it, only `on_stale` can say what a not-GOOD input reads as); Bad ->
BAD with the status name. A lost session (asyncua's watchdog reads the server state every
`watchdog` seconds) turns every input STALE; the source reconnects with hw.reconnect's
backoff and re-creates the subscription. asyncua's own auto-reconnect stays off: one policy.
A subscription without publish responses or keep-alives for 3 keep-alive periods, while the
session answers, turns every input STALE and the source reconnects the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import DataChangeNotif
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from linelight.hw.config import OpcUaSecurity, OpcUaSourceSpec
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable
from linelight.hw.reconnect import NextAttempt, reconnecting
from linelight.rules.values import Quality, Sample, Value

log = logging.getLogger(__name__)

Clock = Callable[[], float]
WATCHDOG = 1.0  # s between asyncua's server-state probes: a dead session is seen within ~2 x


@dataclass(slots=True)
class OpcUaLinkStats:
    connected: bool = False
    connects: int = 0
    subscriptions: int = 0
    notifications: int = 0
    writes: int = 0
    failures: int = 0
    last_error: str = ""


def quality_of(status: ua.StatusCode) -> tuple[Quality, str]:
    """GOOD, or BAD with a reason naming the status (Uncertain included: never green)."""
    if status.is_good():
        return Quality.GOOD, ""
    kind = "uncertain" if status.is_uncertain() else "bad"
    return Quality.BAD, f"the server reports the value as {kind}: {status.name}"


def _plain(value: Any) -> Value:
    """An OPC UA value as one of the rules' value types (bool, int, float, str) or None."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, ua.LocalizedText):
        return value.Text
    return str(value)


class OpcUaConnection:
    """One asyncua Client session, shared by the source's subscription and its lamps."""

    def __init__(self, spec: OpcUaSourceSpec, *, generate_certificate: bool = True) -> None:
        self.spec = spec
        self.name = spec.name
        self.generate_certificate = generate_certificate
        self.client: Client | None = None
        self.lost = anyio.Event()
        self.first_connect = anyio.Event()
        self.stats = OpcUaLinkStats()
        self.next_attempt = NextAttempt()

    def link_status(self) -> dict[str, object]:
        return {**asdict(self.stats), "next_attempt_in": self.next_attempt.seconds_left()}

    @property
    def device(self) -> str:
        return f"'{self.name}' ({self.spec.endpoint})"

    @property
    def connected(self) -> bool:
        return self.client is not None and not self.lost.is_set()

    async def connect(self) -> Client:
        await self.close()
        client = Client(self.spec.endpoint, timeout=self.spec.timeout, watchdog_intervall=WATCHDOG)
        lost = anyio.Event()

        async def on_lost(exc: Exception) -> None:
            self.stats.last_error = f"session to {self.device} lost: {exc!r}"
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            with anyio.fail_after(2 * self.spec.timeout + 2.0):
                if self.spec.security is not None:
                    await self._secure(client, self.spec.security)
                await client.connect()
        except DeviceError as exc:
            self.stats.last_error = str(exc)
            self.stats.failures += 1  # a refused connect is a failure too
            await _quietly_disconnect(client)
            raise
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            self.stats.failures += 1
            self.stats.last_error = f"cannot connect to OPC UA server {self.device}: {_text(exc)}"
            user = self.spec.security.username if self.spec.security else ""
            if isinstance(exc, UaStatusCodeError) and exc.code in _IDENTITY_REFUSED:
                self.stats.last_error = (
                    f"OPC UA server {self.device} refused user '{user}' ({_text(exc)}): wrong "
                    "user name or password, or the user may not log in" if user else
                    f"OPC UA server {self.device} refused an anonymous session ({_text(exc)}): "
                    "it needs a user, give username and password_file")
            await _quietly_disconnect(client)
            raise DeviceError(self.stats.last_error) from exc
        self.client, self.lost = client, lost
        self.next_attempt.connected()
        self.first_connect.set()
        self.stats.connected = True
        self.stats.connects += 1
        log.info("OPC UA server %s connected", self.device)
        return client

    async def _secure(self, client: Client, sec: OpcUaSecurity) -> None:
        """Client certificate (generated on first use), the trusted server certificate, user."""
        client.application_uri = APPLICATION_URI
        if not sec.certificate or not sec.private_key:  # the agent's config places both
            raise DeviceError(f"OPC UA source {self.device} has no client certificate and key "
                              "file names")
        cert, key = Path(sec.certificate), Path(sec.private_key)
        if not (await anyio.Path(cert).is_file() and await anyio.Path(key).is_file()):
            if not self.generate_certificate:
                raise DeviceError(f"the OPC UA client certificate {cert} or its key {key} does "
                                  "not exist yet: the agent creates both at its first start, "
                                  "then the server must trust the certificate")
            await client.setup_self_signed_certificate(key, cert)
            log.warning("generated the OPC UA client certificate %s (key %s): the server %s "
                        "must trust it before it accepts the connection", cert, key, self.device)
        policy = _POLICIES[sec.policy]
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        endpoints = await client.connect_and_get_server_endpoints()
        offered = [e for e in endpoints if e.SecurityPolicyUri == policy.URI
                   and e.SecurityMode == mode]
        if not offered:
            names = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]} {e.SecurityMode.name}"
                            for e in endpoints})
            raise DeviceError(f"OPC UA server {self.device} offers no {sec.policy} {sec.mode} "
                              f"endpoint (it offers: {', '.join(names)})")
        presented = bytes(offered[0].ServerCertificate or b"")
        trusted: bytes | None = None
        if not sec.trust_any_server:
            trusted = _load_der(sec.server_certificate)
            if not presented.startswith(trusted):  # the chain starts with the server's own
                raise DeviceError(
                    f"OPC UA server {self.device} presented certificate "
                    f"{_thumbprint(presented)}, not the trusted one in {sec.server_certificate} "
                    f"({_thumbprint(trusted)}); refusing to connect (replace the file with the "
                    "server's certificate if it changed on purpose)")
        await client.set_security(policy, str(cert), str(key), server_certificate=trusted,
                                  mode=mode)
        if sec.username:
            client.set_user(sec.username)
            client.set_password(_read_password(sec.password_file))

    async def close(self) -> None:
        client, self.client = self.client, None
        self.stats.connected = False
        if client is not None:
            await _quietly_disconnect(client)

    async def write_bool(self, node_id: str, value: bool) -> None:
        # The tower starts before the source's first connect: give that one a chance, so a
        # normal start does not log a failed lamp write. Later outages fail at once.
        if not self.first_connect.is_set():
            with anyio.move_on_after(self.spec.timeout):
                await self.first_connect.wait()
        client = self.client
        if client is None or self.lost.is_set():
            raise DeviceError(f"OPC UA server {self.device} is not connected (last error: "
                              f"{self.stats.last_error or 'none'})")
        self.stats.writes += 1
        try:
            with anyio.fail_after(self.spec.timeout):
                await client.get_node(node_id).write_value(
                    ua.DataValue(ua.Variant(bool(value), ua.VariantType.Boolean)))
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            self.stats.failures += 1
            raise DeviceError(f"OPC UA server {self.device} refused writing {node_id} = "
                              f"{bool(value)}: {_text(exc)}") from exc


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _quietly_disconnect(client: Client) -> None:
    # A dead server never answers CloseSession; asyncua's tasks are stopped either way.
    with anyio.move_on_after(2.0, shield=True), contextlib.suppress(
            OSError, TimeoutError, UaError, ConnectionError):
        await client.disconnect()


APPLICATION_URI = "urn:linelight:agent"
_POLICIES: dict[str, Any] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_IDENTITY_REFUSED = {StatusCodes.BadUserAccessDenied, StatusCodes.BadIdentityTokenInvalid,
                     StatusCodes.BadIdentityTokenRejected}
MAX_SECRET_FILE = 64 * 1024  # a certificate or password file larger than this is a mistake


def _load_der(path: str) -> bytes:
    """A certificate file (DER or PEM) as DER; DeviceError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
        if len(data) > MAX_SECRET_FILE:
            raise ValueError(f"larger than {MAX_SECRET_FILE} bytes")
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except (OSError, ValueError) as exc:
        raise DeviceError(f"cannot read the trusted OPC UA server certificate {path}: "
                          f"{exc}") from exc


def _thumbprint(der: bytes) -> str:
    return "SHA-1 " + hashlib.sha1(der[:4096]).hexdigest()[:16] + "..."  # noqa: S324 - as UA shows it


def _read_password(name: str) -> str:
    """`password_file`, relative names in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""
    path = Path(name)
    if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise DeviceError(f"cannot read the OPC UA password file {path}: "
                          f"{exc.strerror or exc}") from exc
    if len(data) > MAX_SECRET_FILE:
        raise DeviceError(f"the OPC UA password file {path} is larger than {MAX_SECRET_FILE} "
                          "bytes")
    return data.decode("utf-8", "replace").strip()


def _text(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return f"{type(exc).__name__} ({exc.code:#010x})"
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class OpcUaSourceStatus:
    samples: int = 0
    monitored: int = 0
    mode: str = "subscription"  # or "polled": the server cannot subscribe
    why_polled: str = ""
    polls: int = 0
    last_error: str = ""


# a server answering CreateSubscription with one of these cannot subscribe: poll it instead
_CANNOT_SUBSCRIBE = {StatusCodes.BadTooManySubscriptions, StatusCodes.BadServiceUnsupported,
                     StatusCodes.BadNotSupported, StatusCodes.BadNotImplemented}
MAX_NODES_PER_READ = 500  # nodes per Read request when polling (servers commonly allow 1000+)


class OpcUaSource:
    """Keeps the inputs of one OPC UA server current through a data-change subscription."""

    def __init__(self, spec: OpcUaSourceSpec, connection: OpcUaConnection, *,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self.connection = connection
        self._clock = clock
        self.counters = OpcUaSourceStatus()
        self._names: dict[int, str] = {}  # monitored item's client handle -> input
        self._polled: list[tuple[str, str, Any]] = []  # polled mode: (input, as written, node)
        self._data_at = 0.0  # time.monotonic() of the last data-change notification
        self._table: InputTable | None = None

    def input_names(self) -> list[str]:
        return [name for name, _ in self.spec.inputs]

    def status(self) -> dict[str, object]:
        return {"type": "opcua", "device": self.spec.endpoint, **asdict(self.counters),
                "link": self.connection.link_status()}

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for name in self.input_names():
            table.declare(name)
        self._table = table
        task_status.started()
        while True:
            async for attempt in reconnecting(self.spec.reconnect_min, self.spec.reconnect_max,
                                              on_wait=self.connection.next_attempt.waiting):
                with attempt:
                    sub = await self._connect_and_subscribe(table)
            reason = ""
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_when, self.connection.lost, tg.cancel_scope)
                reason = await (self._keep_fresh(table, sub) if sub is not None
                                else self._poll(table))
                tg.cancel_scope.cancel()
            if reason:  # the session answers, the subscription or the reads do not: start over
                self.connection.stats.last_error = reason
            self._mark_all(table, Quality.STALE, reason or self.connection.stats.last_error
                           or f"session to OPC UA server {self.connection.device} lost")
            await self.connection.close()

    async def _keep_fresh(self, table: InputTable, sub: Any) -> str:
        """A value that does not change is not sent again, yet it holds while the subscription
        is alive: its publish responses or keep-alives (one at least every KEEPALIVE s) prove
        it, so GOOD inputs are restamped with the time of the last proof, and a rule's
        `stale_after` measures the link, not how often the value changes. Returns the reason
        when no proof came for 3 keep-alive periods (counted from the subscription's creation)
        while the session lives on: the caller marks every input STALE and reconnects.

        asyncua's client re-creates a subscription it finds silent for 1.5 keep-alive periods,
        and doing so resets its `last_publish_at`, which therefore proves nothing when the
        subscription id changed with it: a server that accepts subscriptions and never
        publishes would otherwise keep its inputs green for ever."""
        silent_limit = 3 * keepalive_period(self.spec.publishing) + self.spec.publishing
        proof = time.monotonic()
        seen = (getattr(sub, "subscription_id", None), getattr(sub, "last_publish_at", None))
        while True:
            await anyio.sleep(max(0.1, min(self.spec.publishing, 0.5)))
            now_mono = time.monotonic()
            current = (getattr(sub, "subscription_id", None), getattr(sub, "last_publish_at", None))
            if current != seen:
                if current[0] == seen[0] and current[1] is not None:  # a publish response
                    proof = max(proof, current[1])
                seen = current
            proof = max(proof, self._data_at)  # a notification is proof too
            quiet = now_mono - proof
            if quiet >= silent_limit:
                return (f"no publish response or keep-alive from OPC UA server "
                        f"{self.connection.device} for {quiet:.1f} s (subscription silent); "
                        "reconnecting")
            at = self._clock() - quiet
            table.update_many({name: s._replace(at=at) for name in self.input_names()
                               if (s := table.get(name)).quality is Quality.GOOD and s.at < at})

    async def _connect_and_subscribe(self, table: InputTable) -> Any:
        """The new subscription, or None when the server cannot subscribe (the inputs are then
        read every publishing interval, see `_poll`)."""
        client = await self.connection.connect()
        try:
            with anyio.fail_after(self.spec.timeout * 2 + 2.0):
                sub: Any = None
                try:
                    sub = await client.create_subscription(_subscription_parameters(
                        self.spec.publishing), self)
                except UaStatusCodeError as exc:
                    if exc.code not in _CANNOT_SUBSCRIBE:
                        raise
                    if self.counters.mode != "polled":
                        log.warning("OPC UA server %s cannot subscribe (%s): reading its inputs "
                                    "every %g s instead", self.connection.device, _text(exc),
                                    self.spec.publishing)
                    self.counters.mode = "polled"
                    self.counters.why_polled = (f"the server refused a subscription: "
                                                f"{_text(exc)}")
                resolved, refused = await self._resolve(client)
                # by client handle: two inputs may watch the same node
                self._names = {handle: name for handle, (name, _, _) in enumerate(resolved, 1)}
                if sub is None:
                    self._polled = resolved
                    self.counters.monitored = 0
                    table.update_many(refused)
                    return None
                self.counters.mode, self.counters.why_polled = "subscription", ""
                deadbands = dict(self.spec.deadbands)
                requests = [_monitor_request(node, handle, self.spec.sampling,
                                             deadbands.get(name))
                            for handle, (name, _, node) in enumerate(resolved, start=1)]
                # create_monitored_items (asyncua's documented call for full control) instead
                # of subscribe_data_change, which takes no deadband together with a sampling
                # interval; this subscription is ours alone, so handles 1..n are unique.
                results: list[Any] = list(await sub.create_monitored_items(requests)) \
                    if requests else []
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            self.connection.stats.last_error = (f"cannot subscribe on OPC UA server "
                                                f"{self.connection.device}: {_text(exc)}")
            self.connection.stats.failures += 1
            await self.connection.close()
            raise DeviceError(self.connection.stats.last_error) from exc
        self.connection.stats.subscriptions += 1
        for (name, node_id, _), result in zip(resolved, results, strict=True):
            if isinstance(result, ua.StatusCode):  # this node cannot be monitored
                refused[name] = Sample(None, Quality.BAD, self._clock(), time.time_ns(),
                                       f"OPC UA server {self.connection.device} refused to "
                                       f"monitor {node_id}: {result.name}")
        self.counters.monitored = len(self.spec.inputs) - len(refused)
        table.update_many(refused)
        return sub

    async def _poll(self, table: InputTable) -> str:
        """Read every input's value every publishing interval (servers without subscriptions);
        each answer is GOOD or BAD by its StatusCode as a notification's would be. Returns the
        reason when a read fails while the session lives on: the caller marks every input
        STALE and reconnects."""
        client, nodes = self.connection.client, self._polled
        device = self.connection.device
        while client is not None:
            tick = time.monotonic()
            try:
                with anyio.fail_after(self.spec.timeout):
                    samples = await read_samples(client, nodes, device, self._clock)
            except (OSError, TimeoutError, UaError, ConnectionError, ValueError) as exc:
                return (f"reading {len(nodes)} nodes from OPC UA server {device} failed: "
                        f"{_text(exc)}; reconnecting")
            self.counters.samples += len(samples)
            self.counters.polls += 1
            table.update_many(samples)
            await anyio.sleep(max(0.0, tick + self.spec.publishing - time.monotonic()))
        return f"session to OPC UA server {device} closed"

    async def _resolve(self, client: Client) -> tuple[list[tuple[str, str, Any]],
                                                      dict[str, Sample]]:
        """Each input's node: by node id, or by browse path below Objects (`/Line/Speed`)."""
        resolved: list[tuple[str, str, Any]] = []
        missing: dict[str, Sample] = {}
        for name, ref in self.spec.inputs:
            if not ref.startswith("/"):
                resolved.append((name, ref, client.get_node(ref)))
                continue
            try:
                node = await find_path(client.nodes.objects, ref)
            except (UaError, LookupError) as exc:
                missing[name] = Sample(None, Quality.BAD, self._clock(), time.time_ns(),
                                       f"OPC UA server {self.connection.device} has no node at "
                                       f"Objects{ref}: {_text(exc)}")
                continue
            resolved.append((name, ref, node))
        return resolved, missing

    # -- asyncua's SubscriptionHandler interface (called in the event loop) ---------------------
    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        table = self._table
        name = self._names.get(int(data.monitored_item.ClientHandle))
        if table is None or name is None:
            return
        value = data.monitored_item.Value
        status = value.StatusCode if value is not None and value.StatusCode is not None \
            else ua.StatusCode()
        quality, why = quality_of(status)
        reason = (f"OPC UA server {self.connection.device} node {node.nodeid.to_string()}: {why}"
                  if why else "")
        self.connection.stats.notifications += 1
        self._data_at = time.monotonic()
        self.counters.samples += 1
        table.update(name, Sample(_plain(val), quality, self._clock(), _wall_ns(value), reason))

    def status_change_notification(self, status: Any) -> None:
        log.info("OPC UA server %s: subscription status %s", self.connection.device, status)

    def _mark_all(self, table: InputTable, quality: Quality, reason: str) -> None:
        now, wall = self._clock(), time.time_ns()
        log.warning("%s", reason)
        self.counters.last_error = reason
        table.update_many({name: Sample(table.get(name).value, quality, now, wall, reason)
                           for name in self.input_names()})


async def read_samples(client: Client, nodes: list[tuple[str, str, Any]], device: str,
                       clock: Clock) -> dict[str, Sample]:
    """One Read of every (input, as written, node) in requests of MAX_NODES_PER_READ, each value
    GOOD or BAD by its StatusCode as a notification's would be; ValueError if the server
    answers with the wrong number of values."""
    values: list[Any] = []
    for i in range(0, len(nodes), MAX_NODES_PER_READ):
        values += await client.read_attributes(
            [node for _, _, node in nodes[i : i + MAX_NODES_PER_READ]])
    if len(values) != len(nodes):
        raise ValueError(f"{len(values)} values for {len(nodes)} nodes")
    now, samples = clock(), {}
    for (name, _, node), value in zip(nodes, values, strict=True):
        quality, why = quality_of(value.StatusCode or ua.StatusCode())
        reason = f"OPC UA server {device} node {node.nodeid.to_string()}: {why}" if why else ""
        samples[name] = Sample(_plain(value.Value.Value if value.Value else None), quality, now,
                               _wall_ns(value), reason)
    return samples


async def probe(spec: OpcUaSourceSpec) -> tuple[int, list[str]]:
    """What `linelight doctor` checks: connect as the source does (security, trusted server
    certificate, user; but never generating the client certificate), resolve and read every
    input once. Returns how many inputs were read and the reasons of those not GOOD;
    DeviceError when the server cannot be reached or refuses."""
    connection = OpcUaConnection(spec, generate_certificate=False)
    client = await connection.connect()
    try:
        with anyio.fail_after(spec.timeout * 4 + 2.0):
            resolved, missing = await OpcUaSource(spec, connection)._resolve(client)  # noqa: SLF001
            samples = await read_samples(client, resolved, connection.device, time.monotonic)
    except (OSError, TimeoutError, UaError, ConnectionError, ValueError) as exc:
        raise DeviceError(f"reading the inputs of OPC UA server {connection.device} failed: "
                          f"{_text(exc)}") from exc
    finally:
        await connection.close()
    problems = [s.reason for s in [*missing.values(), *samples.values()]
                if s.quality is not Quality.GOOD]
    return len(samples), problems


def _monitor_request(node: Any, handle: int, sampling: float,
                     deadband: float | None) -> ua.MonitoredItemCreateRequest:
    """One monitored item: the Value attribute, sampled every `sampling` s, reported on a
    change of status or value (beyond an absolute `deadband`, when given)."""
    item = ua.ReadValueId()
    item.NodeId = node.nodeid
    item.AttributeId = AttributeIds.Value
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = sampling * 1000
    params.QueueSize = 1
    params.DiscardOldest = True
    if deadband is not None:
        change = ua.DataChangeFilter()
        change.Trigger = ua.DataChangeTrigger.StatusValue
        change.DeadbandType = 1  # absolute (Part 8: DeadbandType.Absolute)
        change.DeadbandValue = deadband
        params.Filter = change
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = item
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


KEEPALIVE = 1.0  # s: the server sends a keep-alive after this long without changes


def _keepalive_count(publishing: float) -> int:
    return max(1, math.ceil(KEEPALIVE / publishing))


def keepalive_period(publishing: float) -> float:
    """Seconds between keep-alives of a quiet subscription: KEEPALIVE, or the publishing
    interval when that is longer (a keep-alive goes out at a publishing cycle)."""
    return publishing * _keepalive_count(publishing)


def _subscription_parameters(publishing: float) -> ua.CreateSubscriptionParameters:
    """asyncua's default keep-alive is 75 % of the session lifetime (45 min with its 1 h
    session): ask for one about every KEEPALIVE s so a silent subscription is seen quickly."""
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = publishing * 1000
    params.RequestedMaxKeepAliveCount = _keepalive_count(publishing)
    params.RequestedLifetimeCount = 10 * params.RequestedMaxKeepAliveCount
    params.MaxNotificationsPerPublish = 0  # no limit
    params.PublishingEnabled = True
    params.Priority = 0
    return params


def _wall_ns(value: ua.DataValue | None) -> int:
    """The source timestamp when the server gives one (the event time at the source)."""
    stamp = value.SourceTimestamp if value is not None else None
    if stamp is None:
        return time.time_ns()
    if stamp.tzinfo is None:  # asyncua gives naive datetimes in UTC
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return int(stamp.timestamp() * 1_000_000_000)


class OpcUaBoolOutput:
    """A lamp on a Boolean variable; write failures are DeviceErrors the tower retries."""

    def __init__(self, connection: OpcUaConnection, node_id: str) -> None:
        self.connection = connection
        self.node_id = node_id
        self.name = f"{connection.name} {node_id}"

    async def write(self, value: bool) -> None:
        await self.connection.write_bool(self.node_id, bool(value))


# -- browsing (linelight browse) -----------------------------------------------------------------

MAX_BROWSE_NODES = 2000  # bound on what one browse walks, whatever the server holds


@dataclass(frozen=True, slots=True)
class BrowsedNode:
    """One node of a server's address space as `linelight browse` shows it."""

    node_id: str
    name: str  # browse name without its namespace index
    node_class: str  # Object, Variable, ...
    data_type: str  # variables: Boolean, Double, ...; "" otherwise
    value: Value
    depth: int


async def browse(spec: OpcUaSourceSpec, *, path: str = "", depth: int = 3,
                 max_nodes: int = MAX_BROWSE_NODES) -> list[BrowsedNode]:
    """Walk the address space below Objects (or below `path`, browse names separated by '/'),
    depth first, at most `depth` levels and `max_nodes` nodes; DeviceError if unreachable.
    A secured `spec` needs the client certificate the agent generated (browse makes none)."""
    connection = OpcUaConnection(spec, generate_certificate=False)
    client = await connection.connect()
    try:
        with anyio.fail_after(spec.timeout * 10 + max_nodes * 0.05):
            start = client.nodes.objects
            if path:
                try:
                    start = await find_path(start, path)
                except (UaError, LookupError) as exc:
                    raise DeviceError(f"OPC UA server {connection.device} has no node at "
                                      f"Objects/{path.strip('/')}: {_text(exc)}") from exc
            out: list[BrowsedNode] = []
            await _walk(start, 0, depth, max_nodes, out)
            return out
    except (OSError, TimeoutError, UaError, ConnectionError) as exc:
        raise DeviceError(f"browsing OPC UA server {connection.device} failed: "
                          f"{_text(exc)}") from exc
    finally:
        await connection.close()


async def _walk(node: Any, level: int, depth: int, max_nodes: int,
                out: list[BrowsedNode]) -> None:
    for child in await node.get_children():
        if len(out) >= max_nodes:
            return
        name = (await child.read_browse_name()).Name
        node_class = (await child.read_node_class()).name
        data_type, value = "", None
        if node_class == "Variable":
            data_type = (await child.read_data_type_as_variant_type()).name
            try:
                value = _plain(await child.read_value())
            except UaError:
                value = None
        out.append(BrowsedNode(child.nodeid.to_string(), name, node_class, data_type, value,
                               level))
        if node_class == "Object" and level + 1 < depth:
            await _walk(child, level + 1, depth, max_nodes, out)


async def find_path(start: Any, path: str) -> Any:
    """The node at `Line/Press` below `start`: each part a browse name, in any namespace
    unless written `3:Press`; LookupError naming the first part not found."""
    node = start
    for part in [p for p in path.strip("/").split("/") if p]:
        ns, _, name = part.rpartition(":") if ":" in part else ("", "", part)
        for child in await node.get_children():
            qualified = await child.read_browse_name()
            if qualified.Name == name and (not ns or str(qualified.NamespaceIndex) == ns):
                node = child
                break
        else:
            raise LookupError(f"no child '{part}'")
    return node


def inputs_snippet(source: str, endpoint: str, nodes: list[BrowsedNode]) -> str:
    """A `[sources.NAME]` table with one input per variable, ready for agent.toml."""
    lines = [f"[sources.{source}]", 'type = "opcua"', f'endpoint = "{endpoint}"', "",
             f"[sources.{source}.inputs]"]
    seen: set[str] = set()
    for node in nodes:
        if node.node_class != "Variable":
            continue
        base = "".join(c if c.isalnum() else "_" for c in _snake(node.name)).strip("_") or "input"
        if base[0].isdigit():
            base = f"n_{base}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        node_id = node.node_id.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{name} = {{ node = "{node_id}" }}  # {node.data_type}')
    return "\n".join(lines) + "\n"


def _snake(name: str) -> str:
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and (name[i - 1].islower() or name[i - 1].isdigit()):
            out.append("_")
        out.append(c.lower())
    return "".join(out)
