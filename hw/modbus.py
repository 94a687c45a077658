"""Modbus TCP/RTU: one pymodbus client per connection, a poller per source, coil/register outputs.

pymodbus exceptions stop here: callers see `DeviceError` (no answer, no connection: "connection
refused by host:port", ...), `ModbusExceptionError` (the device answered with a Modbus
exception code) or `ModbusAnswerError` (the device answered something else than what was asked:
another function, a wrong byte count). pymodbus's own log lines (tracebacks, hex dumps) are kept
out of the agent log; what they say reaches it as those errors. Reconnects follow the shared
policy (`linelight.hw.backoff`), driven by the source's poller.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from tenacity import RetryCallState

from linelight.hw.backoff import Backoff
from linelight.hw.config import ModbusLink, ModbusSourceSpec
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable, PollCounters
from linelight.hw.modbus_codec import (
    EXCEPTION_NAMES,
    FUNCTION_NAMES,
    Area,
    Point,
    ReadBlock,
    decode,
    plan_reads,
)
from linelight.rules.values import Quality, Sample, Value

log = logging.getLogger(__name__)

Clock = Callable[[], float]

SILENT_LIMIT = 3  # TCP: unanswered requests in a row before the connection is dropped


class ModbusExceptionError(DeviceError):
    """The device answered a request with a Modbus exception (illegal address, busy, ...)."""

    def __init__(self, device: str, unit: int, function: int, address: int, code: int) -> None:
        self.device, self.unit, self.function, self.address, self.code = (
            device, unit, function, address, code)
        fname = FUNCTION_NAMES.get(function, f"function {function}")
        cname = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"Modbus device {device} unit {unit} answered {fname} at address "
                         f"{address} with exception {code} ({cname})")


class ModbusAnswerError(DeviceError):
    """The device answered, but not what was asked (another function, a wrong byte count)."""

    def __init__(self, device: str, unit: int, function: int, address: int, what: str) -> None:
        self.device, self.unit, self.function, self.address = device, unit, function, address
        fname = FUNCTION_NAMES.get(function, f"function {function}")
        super().__init__(f"Modbus device {device} unit {unit} answered {fname} at address "
                         f"{address} with {what}")


class ModbusLinkLost(DeviceError):
    """The connection was up and went away; the poller reconnects."""


def _keep_pymodbus_out_of_the_log() -> None:
    # pymodbus logs every failure itself, with tracebacks and hex dumps, on its own logger;
    # we translate each into one DeviceError sentence instead. Idempotent.
    quiet = logging.getLogger("pymodbus")
    quiet.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
        quiet.addHandler(logging.NullHandler())  # else logging's last resort prints them


def _tcp_address(link: ModbusLink) -> tuple[str, int] | None:
    """Where a TCP connection goes: a TCP device, or RTU over `socket://host:port`."""
    if link.kind == "tcp":
        return link.host, link.port
    if link.device.startswith("socket://"):
        parsed = urlsplit(link.device)
        if parsed.hostname and parsed.port:
            return parsed.hostname, parsed.port
    return None


def _describe_os_error(exc: OSError, where: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by peer {where}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} to the connection request"
    return f"cannot connect to {where}: {exc.strerror or exc}"


@dataclass(slots=True)
class LinkStats:
    connected: bool = False
    connects: int = 0
    requests: int = 0
    failures: int = 0
    last_error: str = ""


class ModbusConnection:
    """One client for one link (a TCP device, or an RTU bus with several units).

    The poller and the tower's Modbus outputs share it. The poller reconnects with `backoff`
    (from `reconnect_min`, at least 0.5 s, doubling to `reconnect_max`); a request made while it
    waits fails at once with DeviceError instead of hammering a dead device.
    """

    def __init__(self, name: str, link: ModbusLink, *, timeout: float = 0.5,
                 reconnect_min: float = 0.5, reconnect_max: float = 10.0,
                 clock: Clock = time.monotonic) -> None:
        self.name = name
        self.link = link
        self.timeout = timeout
        self.reconnect_min = max(0.5, reconnect_min)
        self.reconnect_max = max(self.reconnect_min, reconnect_max)
        self.backoff = Backoff(initial=self.reconnect_min, maximum=self.reconnect_max)
        self._clock = clock
        self._client: Any = None
        self._next_attempt = 0.0
        # one request at a time on the wire (required on RTU); fast_acquire: no extra trip
        # through the event loop when it is free (the request itself waits on the socket)
        self._lock = anyio.Lock(fast_acquire=True)
        self._connect_lock = anyio.Lock()
        self._silent = 0  # requests in a row without any answer
        self.stats = LinkStats()
        _keep_pymodbus_out_of_the_log()

    @property
    def device(self) -> str:
        return f"'{self.name}' ({self.link.describe()})"

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    def seconds_until_attempt(self) -> float:
        return max(0.0, self._next_attempt - self._clock())

    def _new_client(self) -> Any:
        # reconnect_delay=0: pymodbus must not reconnect behind our back; we own the backoff.
        # retries=0: one request, one deadline; a poll that gets no answer simply counts.
        common: dict[str, Any] = {"timeout": self.timeout, "retries": 0, "reconnect_delay": 0,
                                  "name": self.name}
        if self.link.kind == "tcp":
            return AsyncModbusTcpClient(self.link.host, port=self.link.port, **common)
        return AsyncModbusSerialClient(
            self.link.device, framer=FramerType.RTU, baudrate=self.link.baudrate,
            parity=self.link.parity, stopbits=self.link.stopbits, bytesize=self.link.bytesize,
            **common)

    async def ensure_connected(self) -> None:
        """Connect if needed; DeviceError if the device cannot be reached (or we are backing off)."""
        if self.connected:
            return
        async with self._connect_lock:  # the poller and the tower may both ask at once
            if not self.connected:
                await self._connect()

    async def _connect(self) -> None:
        wait = self.seconds_until_attempt()
        if wait > 0:
            raise DeviceError(f"Modbus device {self.device} is not connected "
                              f"(next attempt in {wait:.1f} s; last error: {self.stats.last_error})")
        await self._connect_now()

    async def connect(self) -> None:
        """One connection attempt now, whatever the wait (the poller's retry loop waited)."""
        if self.connected:
            return
        async with self._connect_lock:
            if not self.connected:
                await self._connect_now()

    async def _connect_now(self) -> None:
        self._drop_client()
        client = self._new_client()
        ok = False
        error: OSError | None = None
        try:
            with anyio.move_on_after(self.timeout + 1.0):
                ok = bool(await client.connect())
        except OSError as exc:
            error = exc
        except ModbusException:
            pass
        if not ok or not client.connected:
            client.close()
            reason = await self._why_not(error)
            self.stats.last_error = reason
            self.stats.connected = False
            self.stats.failures += 1  # a refused or unanswered connect is a failure too
            raise DeviceError(f"Modbus device {self.device} does not accept a connection: "
                              f"{reason}")
        self._client = client
        self._silent = 0
        self._next_attempt = 0.0
        self.stats.connected = True
        self.stats.connects += 1
        log.info("Modbus %s connected", self.device)

    async def _why_not(self, error: OSError | None) -> str:
        """Why a connection failed, in words: pymodbus only says False (and logs the reason)."""
        where = self.link.describe()
        address = _tcp_address(self.link)
        if error is None and address is None and not await anyio.Path(self.link.device).exists():
            return f"serial port {self.link.device} does not exist"
        if error is None and address is not None:
            # Ask the network ourselves: one TCP connection, closed at once (in a thread: the
            # socket module keeps the errno that anyio's happy eyeballs folds into a group).
            limit = self.timeout + 1.0
            try:
                probe = await anyio.to_thread.run_sync(
                    lambda: socket.create_connection(address, timeout=limit))
                probe.close()
            except OSError as exc:
                error = exc
        if error is not None:
            return _describe_os_error(error, where)
        return f"cannot connect to {where}"

    def waiting(self, retry_state: RetryCallState) -> None:
        """The poller's retry loop is about to wait: requests fail fast until then."""
        self._next_attempt = self._clock() + retry_state.upcoming_sleep
        self.stats.connected = False

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def disconnect(self, reason: str) -> None:
        """Drop the link after a failure; the next request reconnects (after the backoff)."""
        if self._client is not None:
            log.warning("Modbus %s lost: %s", self.device, reason)
        self._drop_client()
        self.stats.last_error = reason
        self.stats.connected = False

    def close(self) -> None:
        self._drop_client()
        self.stats.connected = False

    async def _request(self, function: int, unit: int, address: int, call: Callable[[], Any]) -> Any:
        await self.ensure_connected()
        async with self._lock:
            self.stats.requests += 1
            fname = FUNCTION_NAMES.get(function, str(function))
            try:
                with anyio.fail_after(self.timeout + 0.5):
                    response = await call()
            except TimeoutError:
                response = None
                error = f"no answer to {fname} at address {address} within {self.timeout:.2f} s"
            except ModbusException as exc:
                response = None
                error = f"{fname} at address {address} failed: {exc}"
                if not self.connected:
                    error = (f"connection to {self.link.describe()} lost (closed or reset by "
                             f"peer) during {fname} at address {address}")
            else:
                error = ""
        if response is None:
            self.stats.failures += 1
            self._silent += 1
            # One unit not answering must not cut off the others on an RTU bus or behind a
            # TCP gateway: drop the link only when it is gone, or (TCP) when nothing on it has
            # answered SILENT_LIMIT requests in a row (a pulled cable shows no RST).
            if not self.connected or (self.link.kind == "tcp" and self._silent >= SILENT_LIMIT):
                self.disconnect(error)
            raise DeviceError(f"Modbus device {self.device} unit {unit}: {error}")
        self._silent = 0
        if response.isError():
            self.stats.failures += 1
            raise ModbusExceptionError(self.device, unit, function, address,
                                       int(response.exception_code))
        if response.function_code != function:
            self.stats.failures += 1
            other = FUNCTION_NAMES.get(response.function_code,
                                       f"function {response.function_code}")
            raise ModbusAnswerError(self.device, unit, function, address,
                                    f"an answer to {other} instead")
        return response

    async def read(self, block: ReadBlock) -> Sequence[int] | Sequence[bool]:
        """The raw bits or registers of one block."""
        method = {
            Area.COIL: "read_coils", Area.DISCRETE_INPUT: "read_discrete_inputs",
            Area.HOLDING_REGISTER: "read_holding_registers",
            Area.INPUT_REGISTER: "read_input_registers",
        }[block.area]

        async def call() -> Any:
            return await getattr(self._client, method)(block.address, count=block.count,
                                                       device_id=block.unit)

        response = await self._request(block.area.read_function, block.unit, block.address, call)
        raw = response.bits if block.area.is_bit else response.registers
        # pymodbus unpacks every byte it got: 8 bits per byte, 2 bytes per register.
        got, expected = ((len(raw) // 8, -(-block.count // 8)) if block.area.is_bit
                         else (2 * len(raw), 2 * block.count))
        if got != expected:
            self.stats.failures += 1
            raise ModbusAnswerError(self.device, block.unit, block.area.read_function,
                                    block.address, f"{got} data byte(s) for "
                                    f"{block.describe()}, expected {expected}")
        return list(raw[: block.count])

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        async def call() -> Any:
            return await self._client.write_coil(address, value, device_id=unit)
        await self._request(5, unit, address, call)

    async def write_register(self, unit: int, address: int, value: int) -> None:
        async def call() -> Any:
            return await self._client.write_register(address, value & 0xFFFF, device_id=unit)
        await self._request(6, unit, address, call)

    async def read_register(self, unit: int, address: int) -> int:
        async def call() -> Any:
            return await self._client.read_holding_registers(address, count=1, device_id=unit)
        response = await self._request(3, unit, address, call)
        return int(response.registers[0])


# -- the poller --------------------------------------------------------------------------------

@dataclass(slots=True)
class _BlockState:
    block: ReadBlock
    last_answer: float
    stale: bool = False
    names: tuple[str, ...] = ()  # of the block's members, in their order
    # the last answer decoded and its values: an equal answer only refreshes the ages
    last: tuple[Sequence[int] | Sequence[bool], tuple[Value, ...]] | None = None

    def __post_init__(self) -> None:
        self.names = tuple(name for name, _ in self.block.members)


class ModbusSource:
    """Polls every input of one Modbus source in as few requests as the protocol allows."""

    def __init__(self, spec: ModbusSourceSpec, connection: ModbusConnection, *,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self.connection = connection
        self.blocks = plan_reads(spec.inputs, max_gap=spec.max_gap, max_count=spec.max_count)
        self._clock = clock
        self.counters = PollCounters(blocks=len(self.blocks))
        self._states = [_BlockState(b, clock()) for b in self.blocks]

    def input_names(self) -> list[str]:
        return [name for name, _ in self.spec.inputs]

    def status(self) -> dict[str, object]:
        """Polls, samples, blocks, last error and the link's counters, for /status."""
        link = asdict(self.connection.stats)
        link["next_attempt_in"] = round(self.connection.seconds_until_attempt(), 2)
        return {"type": self.spec.type, "device": self.connection.link.describe(),
                **asdict(self.counters), "link": link}

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for name in self.input_names():
            table.declare(name)
        start = self._clock()
        self._states = [_BlockState(b, start) for b in self.blocks]
        task_status.started()
        # The connection may be shared with the tower, so closing it is its owner's job
        # (hw.build.Hardware.close), after the tower has applied its on_exit pattern.
        async with anyio.create_task_group() as tg:
            # A separate watcher marks STALE on time even while a request hangs until its
            # timeout (several of them in one poll on a bus with a dead unit).
            tg.start_soon(self._watch_stale, table)
            # A link that was up and got lost is a healthy attempt: the waits start over.
            retrying = self.connection.backoff.retrying(
                DeviceError, healthy=lambda exc: isinstance(exc, ModbusLinkLost),
                before_sleep=self.connection.waiting)
            async for attempt in retrying:
                with attempt:
                    await self.connection.connect()
                    await self._poll_until_lost(table)

    async def _poll_until_lost(self, table: InputTable) -> None:
        while True:
            tick = self._clock()
            await self.poll_once(table)
            if not self.connection.connected:
                raise ModbusLinkLost(self.connection.stats.last_error)
            await anyio.sleep(max(0.0, tick + self.spec.poll - self._clock()))

    async def _watch_stale(self, table: InputTable) -> None:
        while True:
            self._mark_stale(table)
            wake = min(self._next_stale_deadline(), self._clock() + self.spec.stale_after)
            await anyio.sleep(max(0.001, wake - self._clock()))

    async def poll_once(self, table: InputTable) -> None:
        """Read every block once: GOOD values, BAD on a Modbus exception. A block without an
        answer is skipped (its inputs go STALE on their own clock); the poll stops early only
        when the link itself is gone."""
        if self.connection.seconds_until_attempt() > 0 and not self.connection.connected:
            return
        self.counters.polls += 1
        for st in self._states:
            try:
                raw = await self.connection.read(st.block)
            except (ModbusExceptionError, ModbusAnswerError) as exc:
                st.last_answer = self._clock()
                st.stale = False
                self._mark(table, st.block, Quality.BAD, str(exc))
                continue
            except DeviceError as exc:
                self.counters.last_error = str(exc)
                if not self.connection.connected:
                    return  # the link is gone: the watcher marks STALE, run() reconnects
                continue  # this block got no answer; the other units may still answer
            now, wall = self._clock(), time.time_ns()
            st.last_answer = now
            st.stale = False
            block = st.block
            if st.last is not None and st.last[0] == raw:  # read again unchanged
                values = st.last[1]  # the same tuple: the table sees it unchanged at once
            else:
                try:
                    values = tuple([decode(point, block.slice_for(point, raw))
                                    for _, point in block.members])
                except (ValueError, IndexError):  # a malformed answer: say for which points
                    st.last = None
                    self._store_one_by_one(table, block, raw, now, wall)
                    continue
                st.last = (raw, values)
            table.update_good(st.names, values, now, wall)
            self.counters.samples += len(st.names)

    def _store_one_by_one(self, table: InputTable, block: ReadBlock,
                          raw: Sequence[int] | Sequence[bool], now: float,
                          wall: int) -> None:
        samples = {}
        for name, point in block.members:
            try:
                value = decode(point, block.slice_for(point, raw))
                samples[name] = Sample(value, Quality.GOOD, now, wall)
            except (ValueError, IndexError) as exc:  # malformed answer for this point
                samples[name] = Sample(None, Quality.BAD, now, wall,
                                       f"cannot decode {point.describe()}: {exc}")
        self.counters.samples += len(samples)
        table.update_many(samples)

    def _mark(self, table: InputTable, block: ReadBlock, quality: Quality, reason: str) -> None:
        now, wall = self._clock(), time.time_ns()
        self.counters.last_error = reason
        table.update_many({name: Sample(None, quality, now, wall, reason)
                           for name, _ in block.members})

    def _mark_stale(self, table: InputTable) -> None:
        now = self._clock()
        for st in self._states:
            silent = now - st.last_answer
            if not st.stale and silent >= self.spec.stale_after:
                st.stale = True
                if self.connection.connected or not self.connection.stats.last_error:
                    why = f"no answer for {st.block.describe()} in {silent:.1f} s"
                else:  # say why there is no answer: refused, reset, unreachable
                    why = (f"{self.connection.stats.last_error}; {st.block.describe()} "
                           f"unread for {silent:.1f} s")
                reason = (f"Modbus device {self.connection.device} unit {st.block.unit}: "
                          f"{why} (stale_after {self.spec.stale_after:g} s)")
                log.warning("%s", reason)
                self._mark_stale_block(table, st.block, reason)

    def _mark_stale_block(self, table: InputTable, block: ReadBlock, reason: str) -> None:
        now, wall = self._clock(), time.time_ns()
        samples = {}
        for name, _ in block.members:
            old = table.get(name)
            # Keep the last value so a person can see what it was; quality says it is stale.
            # An input never read stays INIT (with the reason): it has no old value to age.
            quality = Quality.INIT if old.quality is Quality.INIT else Quality.STALE
            samples[name] = Sample(old.value, quality, old.at if quality is Quality.INIT
                                   else now, wall, reason)
        table.update_many(samples)

    def _next_stale_deadline(self) -> float:
        pending = [st.last_answer + self.spec.stale_after for st in self._states if not st.stale]
        return min(pending) if pending else math.inf


# -- outputs -------------------------------------------------------------------------------------

class ModbusCoilOutput:
    """A lamp on a coil (function 05)."""

    def __init__(self, connection: ModbusConnection, point: Point) -> None:
        self.connection = connection
        self.point = point
        self.name = f"{connection.name} unit {point.unit} {point.describe()}"

    async def write(self, value: bool) -> None:
        await self.connection.write_coil(self.point.unit, self.point.address, bool(value))


class RegisterImage:
    """The tower's copy of one holding register whose bits drive several lamps.

    Seeded from the device on first use so bits the tower does not own keep their value;
    each lamp write sets its bit and writes the whole register (function 06), which every
    Modbus device supports (mask write, function 22, is often missing).
    """

    def __init__(self, connection: ModbusConnection, unit: int, address: int) -> None:
        self.connection = connection
        self.unit = unit
        self.address = address
        self.value: int | None = None

    async def set_bit(self, bit: int, on: bool) -> None:
        if self.value is None:
            self.value = await self.connection.read_register(self.unit, self.address)
        new = (self.value | (1 << bit)) if on else (self.value & ~(1 << bit))
        await self.connection.write_register(self.unit, self.address, new)
        self.value = new


class ModbusRegisterOutput:
    """A lamp on a holding register: one bit of it (`bit`), or the whole register as 1/0."""

    def __init__(self, connection: ModbusConnection, point: Point,
                 image: RegisterImage | None = None) -> None:
        self.connection = connection
        self.point = point
        self.image = image
        bit = f" bit {point.bit}" if point.bit is not None else ""
        self.name = f"{connection.name} unit {point.unit} {point.describe()}{bit}"

    async def write(self, value: bool) -> None:
        if self.point.bit is not None and self.image is not None:
            await self.image.set_bit(self.point.bit, bool(value))
        else:
            await self.connection.write_register(self.point.unit, self.point.address, int(value))
