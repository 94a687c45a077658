"""Siemens S7 over S7comm (python-snap7's asyncio client): a poller per CPU, lamps as S7 bits.

snap7 exceptions stop here: callers see `DeviceError` (no answer, no connection) or
`S7RefusedError` (the CPU answered a request with an error: no such DB, address out of range,
PUT/GET access not permitted).

Lamp bits are written with the S7 *bit* transport (transport size BIT, one bit address), not
by reading the byte, changing a bit and writing the byte back: the CPU sets exactly that bit
in its image, between two scan cycles, so bits its program (or another client) writes in the
same byte are never overwritten, with no window in which our copy of the byte can go stale.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from snap7 import AsyncClient
from snap7.datatypes import S7WordLen
from snap7.error import S7Error, S7ProtocolError
from snap7.type import Area as SnapArea

from linelight.hw.config import S7SourceSpec
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable, PollCounters
from linelight.hw.reconnect import NextAttempt, reconnecting
from linelight.hw.s7_codec import (
    MIN_PDU,
    BlockDecoder,
    S7Address,
    S7Area,
    S7Block,
    decode_from,
    max_block_bytes,
    plan_reads,
)
from linelight.rules.values import Quality, Sample, Value

log = logging.getLogger(__name__)

Clock = Callable[[], float]

_SNAP_AREA = {S7Area.DB: SnapArea.DB, S7Area.M: SnapArea.MK, S7Area.I: SnapArea.PE,
              S7Area.Q: SnapArea.PA}
# item return codes a CPU gives when its protection refuses PUT/GET or a DB is optimized
_ACCESS_HINT = ("(on an S7-1200/1500, tick 'Permit access with PUT/GET communication' in the "
                "CPU's protection settings and clear 'Optimized block access' on the DB)")


class S7RefusedError(DeviceError):
    """The CPU answered a read or write with an error (no such area, out of range, denied)."""

    def __init__(self, device: str, what: str, detail: str) -> None:
        self.device, self.what, self.detail = device, what, detail
        hint = f" {_ACCESS_HINT}" if _is_access_problem(detail) else ""
        super().__init__(f"S7 PLC {device} refused {what}: {detail}{hint}")


def _is_access_problem(detail: str) -> bool:
    """What a CPU answers when PUT/GET is not permitted (an error in the response header, e.g.
    class 0x81 code 0x04 "service not implemented", in place of data) or the DB is optimized
    or missing (item return codes 0x03 not allowed, 0x05 invalid address, 0x0a no object)."""
    lowered = detail.lower()
    return any(code in lowered for code in ("s7 protocol error (class=", "(0x03)", "(0x05)",
                                            "(0x0a)", "access", "does not exist"))


@dataclass(slots=True)
class S7LinkStats:
    connected: bool = False
    connects: int = 0
    requests: int = 0
    failures: int = 0
    pdu: int = 0
    last_error: str = ""


class S7Connection:
    """One S7comm connection to one CPU, shared by the source's poller and its lamps.

    Only the poller connects (with the backoff of hw.reconnect); a lamp write while the link
    is down fails at once with DeviceError, and the tower retries it.
    """

    def __init__(self, spec: S7SourceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self._client: Any = None
        # one request at a time, one deadline each; fast_acquire: no extra trip through the
        # event loop when it is free (the request itself waits on the socket)
        self._lock = anyio.Lock(fast_acquire=True)
        self.first_connect = anyio.Event()
        self.stats = S7LinkStats()
        self.next_attempt = NextAttempt()

    def link_status(self) -> dict[str, object]:
        return {**asdict(self.stats), "next_attempt_in": self.next_attempt.seconds_left()}

    @property
    def device(self) -> str:
        return f"'{self.name}' ({self.spec.describe()})"

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.get_connected())

    @property
    def pdu(self) -> int:
        """The PDU size the CPU agreed to (the smallest real one before the first connect)."""
        return self.stats.pdu or MIN_PDU

    async def connect(self) -> None:
        """Open the link; DeviceError naming host, rack and slot if the CPU cannot be reached."""
        await self.close()
        client = AsyncClient()
        rack, slot = self.spec.rack, self.spec.slot
        client.local_tsap = self.spec.local_tsap
        if self.spec.remote_tsap is not None:
            # AsyncClient.connect builds the called TSAP as connection_type.(rack << 5 | slot):
            # a configured TSAP is those fields (public attributes) split back out.
            client.connection_type = self.spec.remote_tsap >> 8
            rack, slot = (self.spec.remote_tsap & 0xFF) >> 5, self.spec.remote_tsap & 0x1F
        try:
            with anyio.fail_after(self.spec.timeout + 1.0):
                await client.connect(self.spec.host, rack, slot, self.spec.port)
        except (S7Error, OSError, TimeoutError) as exc:
            self.stats.last_error = (f"cannot connect to S7 PLC {self.device}: "
                                     f"{_text(exc)}")
            self.stats.failures += 1  # a refused or unanswered connect is a failure too
            await _quietly_disconnect(client)
            raise DeviceError(self.stats.last_error) from exc
        self.next_attempt.connected()
        self._client = client
        self.first_connect.set()
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.pdu = int(client.pdu_length)
        log.info("S7 PLC %s connected (PDU %d bytes)", self.device, self.stats.pdu)

    async def close(self) -> None:
        client, self._client = self._client, None
        self.stats.connected = False
        if client is not None:
            await _quietly_disconnect(client)

    async def _call(self, describe: Callable[[], str], call: Callable[[Any], Any]) -> Any:
        """`call(client)` under the lock and a deadline; `describe()` says what it does, for
        an error (made only then: a poll's reads are the hot path)."""
        # The tower starts before the poller's first connect: give that one a chance, so a
        # normal start does not log a failed lamp write. Later outages fail at once.
        if not self.first_connect.is_set():
            with anyio.move_on_after(self.spec.timeout):
                await self.first_connect.wait()
        client = self._client
        if client is None or not self.connected:
            raise DeviceError(f"S7 PLC {self.device} is not connected (last error: "
                              f"{self.stats.last_error or 'none'})")
        async with self._lock:
            self.stats.requests += 1
            try:
                with anyio.fail_after(self.spec.timeout):
                    return await call(client)
            except S7ProtocolError as exc:  # the CPU answered, with an error
                self.stats.failures += 1
                raise S7RefusedError(self.device, describe(), _text(exc)) from exc
            except (S7Error, OSError, TimeoutError) as exc:  # S7ConnectionError, S7TimeoutError
                # No answer on a TCP link means the link is gone (or a later answer would be
                # mistaken for the next one): drop it, the poller reconnects.
                self.stats.failures += 1
                what = describe()
                reason = (f"no answer to {what} within {self.spec.timeout:g} s"
                          if isinstance(exc, TimeoutError) else f"{what} failed: {_text(exc)}")
                self.stats.last_error = reason
                log.warning("S7 PLC %s lost: %s", self.device, reason)
                self._client = None
                self.stats.connected = False
                await _quietly_disconnect(client)
                raise DeviceError(f"S7 PLC {self.device}: {reason}") from exc

    async def read(self, block: S7Block) -> bytes:
        """The bytes of one block (one request: the plan keeps blocks within the PDU)."""
        data = await self._call(lambda: f"reading {block.describe()}", lambda c: c.read_area(
            _SNAP_AREA[block.area], block.db, block.start, block.size))
        if len(data) < block.size:
            raise S7RefusedError(self.device, f"reading {block.describe()}",
                                 f"sent {len(data)} bytes, expected {block.size}")
        return bytes(data)

    async def write_bit(self, address: S7Address, value: bool) -> None:
        """Set or clear one bit with the S7 bit transport: the CPU touches only that bit."""
        if address.bit is None:
            raise DeviceError(f"{address.describe()} is not a bit; a lamp needs e.g. Q1.0")
        bit_address = address.byte * 8 + address.bit

        async def call(client: Any) -> None:
            request = client.protocol.build_write_request(
                area=client._map_area(_SNAP_AREA[address.area]),  # noqa: SLF001 - see below
                db_number=address.db, start=bit_address,
                word_len=S7WordLen.BIT, data=b"\x01" if value else b"\x00")
            # python-snap7's public writes are byte-wide (write_area) or read-modify-write
            # (db_write_bool); the bit transport needs its protocol builder and request cycle.
            # tests/hw/test_s7.py::test_snap7_internals_used_for_bit_writes_exist guards both.
            client.protocol.check_write_response(await client._send_receive(request))  # noqa: SLF001

        await self._call(lambda: f"writing {address.describe()} = {int(value)}", call)


async def _quietly_disconnect(client: Any) -> None:
    # A dead peer may never answer the disconnect request; the socket is dropped either way.
    with anyio.move_on_after(1.0, shield=True):
        with contextlib.suppress(S7Error, OSError):
            await client.disconnect()


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# -- the poller --------------------------------------------------------------------------------

class S7Source:
    """Polls every input of one CPU, coalesced into as few reads as the negotiated PDU allows."""

    def __init__(self, spec: S7SourceSpec, connection: S7Connection, *,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self.connection = connection
        self._clock = clock
        # when inputs were last answered: per input as of the last plan, then per block
        self._last_answer: dict[str, float] = {}
        self._block_answer: list[float | None] = []
        self._decoders: list[tuple[S7Block, BlockDecoder]] = []
        self._stale: set[str] = set()
        self.blocks = self._plan(MIN_PDU)
        self._planned_for = MIN_PDU
        self.counters = PollCounters(blocks=len(self.blocks))

    @property
    def blocks(self) -> list[S7Block]:
        """The reads of one poll (planned for the negotiated PDU size)."""
        return self._blocks

    @blocks.setter
    def blocks(self, blocks: list[S7Block]) -> None:
        self._last_answer = self._answers()
        self._block_answer = [None] * len(blocks)
        self._blocks = blocks
        self._decoders = [(block, BlockDecoder(block)) for block in blocks]
        # per block, the bytes of its last decoded answer and their values: bytes equal to
        # them are not decoded again (and the table sees their values unchanged at once)
        self._last_decoded: list[tuple[bytes, tuple[Value, ...]] | None] = [None] * len(blocks)

    def _plan(self, pdu: int) -> list[S7Block]:
        return plan_reads(self.spec.inputs, max_bytes=max_block_bytes(pdu),
                          max_gap=self.spec.max_gap)

    def input_names(self) -> list[str]:
        return [name for name, _ in self.spec.inputs]

    def status(self) -> dict[str, object]:
        return {"type": "s7", "device": self.spec.describe(), **asdict(self.counters),
                "link": self.connection.link_status()}

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for name in self.input_names():
            table.declare(name)
        start = self._clock()
        self._last_answer = dict.fromkeys(self.input_names(), start)
        self._block_answer = [None] * len(self.blocks)
        task_status.started()
        async with anyio.create_task_group() as tg:
            # The watcher marks STALE on time even while a read hangs until its deadline.
            tg.start_soon(self._watch_stale, table)
            while True:
                async for attempt in reconnecting(self.spec.reconnect_min,
                                                  self.spec.reconnect_max,
                                                  on_wait=self.connection.next_attempt.waiting):
                    with attempt:
                        await self.connection.connect()
                if self.connection.pdu != self._planned_for:
                    self.blocks, self._planned_for = self._plan(self.connection.pdu), \
                        self.connection.pdu
                    self.counters.blocks = len(self.blocks)
                await self._poll_while_connected(table)

    async def _poll_while_connected(self, table: InputTable) -> None:
        while self.connection.connected:
            tick = self._clock()
            await self.poll_once(table)
            await anyio.sleep(max(0.0, tick + self.spec.poll - self._clock()))

    async def poll_once(self, table: InputTable) -> None:
        """Read every block once: GOOD values, BAD where the CPU refused; stops when the link
        is gone (the inputs then go STALE on their own clock)."""
        self.counters.polls += 1
        for i, (block, decoder) in enumerate(self._decoders):
            names = decoder.names
            try:
                data = await self.connection.read(block)
            except S7RefusedError as exc:
                self._answered(i, names)
                self._mark(table, block, Quality.BAD, str(exc))
                continue
            except DeviceError as exc:
                self.counters.last_error = str(exc)
                return
            now, wall = self._answered(i, names), time.time_ns()
            last = self._last_decoded[i]
            if last is not None and last[0] == data:  # read again unchanged
                values = last[1]  # the same tuple: the table sees it unchanged at once
            else:
                try:
                    values = decoder.values(data)
                except (ValueError, IndexError, struct.error):  # a short answer
                    self._last_decoded[i] = None
                    self._store_one_by_one(table, block, data, now, wall)
                    continue
                self._last_decoded[i] = (data, values)
            table.update_good(names, values, now, wall)
            self.counters.samples += len(names)

    def _store_one_by_one(self, table: InputTable, block: S7Block, data: bytes, now: float,
                          wall: int) -> None:
        """A block whose bytes do not all decode: GOOD where they do, BAD naming the input."""
        samples = {}
        for name, address in block.members:
            try:
                value = decode_from(address, data, address.byte - block.start)
                samples[name] = Sample(value, Quality.GOOD, now, wall)
            except (ValueError, IndexError, struct.error) as exc:
                samples[name] = Sample(None, Quality.BAD, now, wall,
                                       f"cannot decode {address.describe()}: {exc}")
        self.counters.samples += len(samples)
        table.update_many(samples)

    def _answered(self, block: int, names: tuple[str, ...]) -> float:
        now = self._clock()
        self._block_answer[block] = now
        if self._stale:
            self._stale.difference_update(names)
        return now

    def _answers(self) -> dict[str, float]:
        """When each input was last answered."""
        answers = dict(self._last_answer)
        for (_, decoder), at in zip(self._decoders, self._block_answer, strict=True):
            if at is not None:
                answers.update(dict.fromkeys(decoder.names, at))
        return answers

    def _mark(self, table: InputTable, block: S7Block, quality: Quality, reason: str) -> None:
        now, wall = self._clock(), time.time_ns()
        self.counters.last_error = reason
        table.update_many({name: Sample(None, quality, now, wall, reason)
                           for name, _ in block.members})

    async def _watch_stale(self, table: InputTable) -> None:
        while True:
            self._mark_stale(table)
            pending = [t + self.spec.stale_after for n, t in self._answers().items()
                       if n not in self._stale]
            wake = min(min(pending, default=math.inf), self._clock() + self.spec.stale_after)
            await anyio.sleep(max(0.001, wake - self._clock()))

    def _mark_stale(self, table: InputTable) -> None:
        now, wall = self._clock(), time.time_ns()
        answers = self._answers()
        samples = {}
        for name, address in self.spec.inputs:
            silent = now - answers.get(name, now)
            if name in self._stale or silent < self.spec.stale_after:
                continue
            self._stale.add(name)
            reason = (f"no answer from S7 PLC {self.connection.device} for "
                      f"{address.describe()} in {silent:.1f} s "
                      f"(stale_after {self.spec.stale_after:g} s)")
            # Keep the last value so a person can see what it was; quality says it is stale.
            samples[name] = Sample(table.get(name).value, Quality.STALE, now, wall, reason)
        if samples:
            log.warning("%s", next(iter(samples.values())).reason)
            table.update_many(samples)


# -- outputs -------------------------------------------------------------------------------------

class S7BitOutput:
    """A lamp on one bit of Q, M or a DB, written with the S7 bit transport (see the module)."""

    def __init__(self, connection: S7Connection, address: S7Address) -> None:
        self.connection = connection
        self.address = address
        self.name = f"{connection.name} {address.describe()}"

    async def write(self, value: bool) -> None:
        await self.connection.write_bit(self.address, bool(value))
