"""pymodbus's own server, in-process on 127.0.0.1, that tests can stop, restart and inspect."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from harness.ports import free_port

READ_FUNCTIONS = (1, 2, 3, 4)


class ModbusTestServer:
    """A device (every unit id answers, except `silent_units`) with coils and discrete inputs 0..255 and input/holding registers 0..199.

    Addresses outside those ranges answer "illegal data address". `requests` counts the
    requests the server handled per function code (server side, not what the client thinks
    it sent). `busy_addresses` makes reads touching a holding register answer "device busy".
    The data survives stop/start, like a real device that only lost its network.
    """

    BITS = 256
    REGISTERS = 200

    def __init__(self, *, framer: FramerType = FramerType.SOCKET) -> None:
        self.port = free_port()
        self.framer = framer
        self.requests: Counter[int] = Counter()
        self.busy_addresses: set[int] = set()
        self.silent_units: set[int] = set()  # unit ids that never answer (a dead unit on a bus)
        self.server: Any = None
        self.device = SimDevice(
            id=0,  # every unit id answers
            simdata=(
                [SimData(0, count=self.BITS // 16, values=0, datatype=DataType.BITS)],
                [SimData(0, count=self.BITS // 16, values=0, datatype=DataType.BITS)],
                [SimData(0, count=self.REGISTERS, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=self.REGISTERS, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )
        self._saved: dict[int, list[Any]] = {}

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    async def _action(self, function: int, _start: int, address: int, count: int,
                      _registers: list[int], values: Any) -> ExcCodes | None:
        if self._internal:
            return None
        self.requests[function] += 1
        if function == 3 and any(a in self.busy_addresses for a in range(address, address + count)):
            return ExcCodes.DEVICE_BUSY
        return None

    _internal = False

    def _trace_pdu(self, sending: bool, pdu: Any) -> Any:
        # Returning None for a received request makes pymodbus drop it unanswered.
        if not sending and pdu.dev_id in self.silent_units:
            return None
        return pdu

    async def start(self) -> None:
        self.server = ModbusTcpServer(self.device, address=("127.0.0.1", self.port),
                                      framer=self.framer, trace_pdu=self._trace_pdu)
        await self.server.serve_forever(background=True)
        # a new server builds fresh memory from the device description: restore the data
        for function, values in self._saved.items():
            await self._set(function, 0, values)

    async def stop(self) -> None:
        if self.server is not None:
            self._saved = {1: await self._get(1, 0, self.BITS), 2: await self._get(2, 0, self.BITS),
                           3: await self._get(3, 0, self.REGISTERS),
                           4: await self._get(4, 0, self.REGISTERS)}
            await self.server.shutdown()
            self.server = None

    async def _get(self, function: int, address: int, count: int) -> list[Any]:
        self._internal = True
        try:
            return list(await self.server.context.async_getValues(1, function, address, count))
        finally:
            self._internal = False

    async def _set(self, function: int, address: int, values: list[Any]) -> None:
        self._internal = True
        try:
            result = await self.server.context.async_setValues(1, function, address, values)
        finally:
            self._internal = False
        assert result is None, f"test server refused to set {function}/{address}: {result}"

    # function codes used for the four areas: 1 coils, 2 discrete inputs, 3 holding, 4 input
    async def set_coils(self, address: int, values: list[bool]) -> None:
        await self._set(1, address, values)

    async def set_discrete(self, address: int, values: list[bool]) -> None:
        await self._set(2, address, values)

    async def set_holding(self, address: int, values: list[int]) -> None:
        await self._set(3, address, values)

    async def set_input(self, address: int, values: list[int]) -> None:
        await self._set(4, address, values)

    async def coils(self, address: int, count: int) -> list[bool]:
        return [bool(v) for v in await self._get(1, address, count)]

    async def holding(self, address: int, count: int) -> list[int]:
        return [int(v) for v in await self._get(3, address, count)]

    def reads(self) -> int:
        return sum(self.requests[f] for f in READ_FUNCTIONS)
