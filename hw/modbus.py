"""Modbus TCP/RTU: one pymodbus client per connection, a poller per source, coil/register outputs.

pymodbus exceptions stop here: callers see `DeviceError` (no answer, no connection) or
`ModbusExceptionError` (the device answered with a Modbus exception code).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from linelight.hw.config import ModbusLink, ModbusSourceSpec
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable
from linelight.hw.modbus_codec import (
    EXCEPTION_NAMES,
    FUNCTION_NAMES,
    Area,
    Point,
    ReadBlock,
    decode,
    plan_reads,
)
from linelight.rules.values import Quality, Sample

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


@dataclass(slots=True)
class LinkStats:
    connected: bool = False
    connects: int = 0
    requests: int = 0
    failures: int = 0
    last_error: str = ""


class ModbusConnection:
    """One client for one link (a TCP device, or an RTU bus with several units).

    The poller and the tower's Modbus outputs share it. Connecting backs off from
    `reconnect_min` (at least 0.5 s) doubling to `reconnect_max`; a request made while backing off
    fails at once with DeviceError instead of hammering a dead device.
    """

    def __init__(self, name: str, link: ModbusLink, *, timeout: float = 0.5,
                 reconnect_min: float = 0.5, reconnect_max: float = 10.0,
                 clock: Clock = time.monotonic) -> None:
        self.name = name
        self.link = link
        self.timeout = timeout
        self.reconnect_min = max(0.5, reconnect_min)
        self.reconnect_max = max(self.reconnect_min, reconnect_max)
        self._clock = clock
        self._client: Any = None
        self._delay = self.reconnect_min
        self._next_attempt = 0.0
        self._delay_used = 0.0
        self._lock = anyio.Lock()  # one request at a time on the wire (required on RTU)
        self._connect_lock = anyio.Lock()
        self._silent = 0  # requests in a row without any answer
        self.stats = LinkStats()

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
        self._drop_client()
        client = self._new_client()
        ok = False
        try:
            with anyio.move_on_after(self.timeout + 1.0):
                ok = bool(await client.connect())
        except (ModbusException, OSError) as exc:
            self.stats.last_error = str(exc)
        if not ok or not client.connected:
            client.close()
            self._backoff(f"cannot connect to {self.link.describe()}")
            raise DeviceError(f"Modbus device {self.device} does not accept a connection "
                              f"(retry in {self._delay_used:.1f} s)")
        self._client = client
        self._silent = 0
        self._delay = self.reconnect_min
        self._next_attempt = 0.0
        self.stats.connected = True
        self.stats.connects += 1
        log.info("Modbus %s connected", self.device)

    def _backoff(self, reason: str) -> None:
        self.stats.last_error = reason
        self.stats.connected = False
        self._delay_used = self._delay
        self._next_attempt = self._clock() + self._delay
        self._delay = min(self._delay * 2, self.reconnect_max)

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def disconnect(self, reason: str) -> None:
        """Drop the link after a failure; the next request reconnects (after the backoff)."""
        if self._client is not None:
            log.warning("Modbus %s lost: %s", self.device, reason)
        self._drop_client()
        self._backoff(reason)

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
        if len(raw) < block.count:
            raise DeviceError(f"Modbus device {self.device} unit {block.unit} sent {len(raw)} "
                              f"values for {block.describe()}, expected {block.count}")
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


@dataclass(slots=True)
class SourceStatus:
    polls: int = 0
    samples: int = 0
    blocks: int = 0
    last_error: str = ""


class ModbusSource:
    """Polls every input of one Modbus source in as few requests as the protocol allows."""

    def __init__(self, spec: ModbusSourceSpec, connection: ModbusConnection, *,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self.connection = connection
        self.blocks = plan_reads(spec.inputs, max_gap=spec.max_gap, max_count=spec.max_count)
        self._clock = clock
        self.counters = SourceStatus(blocks=len(self.blocks))
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
            while True:
                tick = self._clock()
                await self.poll_once(table)
                next_tick = tick + self.spec.poll
                if not self.connection.connected:
                    next_tick = max(next_tick, self._clock()
                                    + self.connection.seconds_until_attempt())
                await anyio.sleep(max(0.0, next_tick - self._clock()))

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
            except ModbusExceptionError as exc:
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
            samples = {}
            for name, point in st.block.members:
                try:
                    value = decode(point, st.block.slice_for(point, raw))
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
                reason = (f"no answer from Modbus device {self.connection.device} unit "
                          f"{st.block.unit} for {st.block.describe()} in {silent:.1f} s "
                          f"(stale_after {self.spec.stale_after:g} s)")
                log.warning("%s", reason)
                self._mark_stale_block(table, st.block, reason)

    def _mark_stale_block(self, table: InputTable, block: ReadBlock, reason: str) -> None:
        now, wall = self._clock(), time.time_ns()
        samples = {}
        for name, _ in block.members:
            old = table.get(name)
            # Keep the last value so a person can see what it was; quality says it is stale.
            samples[name] = Sample(old.value, Quality.STALE, now, wall, reason)
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
