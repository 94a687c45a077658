"""python-snap7's own S7 server, on a free 127.0.0.1 port, that tests can stop, restart, inspect.

One correction to the library's server: it applies an S7 *bit* write (transport size BIT) by
storing the data byte (0 or 1) over the whole addressed byte, while a real CPU sets or clears
only the addressed bit. `BitExactServer` does what the CPU does, under the area's lock, so the
lamp tests check linelight against S7 semantics rather than against that simplification
(`test_stock_server_bit_write_is_byte_wide` in test_s7.py notes when upstream changes it).
"""

from __future__ import annotations

import threading
from typing import Any

import snap7
from snap7.datatypes import S7WordLen
from snap7.type import SrvArea

from tests.hw.modbus_server import free_port

# The answer of an S7-1200/1500 whose protection does not permit PUT/GET to every read and
# write: no data, the header's error class 0x81 and code 0x04 (service not supported).
PUT_GET_REFUSED = 0x8104


class BitExactServer(snap7.Server):
    """snap7.Server whose bit writes touch one bit, as a CPU's do; counts read requests."""

    def __init__(self, *, put_get: bool = True) -> None:
        super().__init__(log=False)
        self.reads = 0
        self.put_get = put_get

    def register_area(self, area: SrvArea, index: int, userdata: Any) -> int:
        result = super().register_area(area, index, userdata)
        for key in self.area_locks:  # re-entrant: the bit merge and the base write nest
            if not isinstance(self.area_locks[key], type(threading.RLock())):
                self.area_locks[key] = threading.RLock()  # type: ignore[assignment]
        return result

    def _parse_address_specification(self, addr_spec: bytes) -> dict[str, Any]:
        parsed = super()._parse_address_specification(addr_spec)
        if parsed and parsed.get("word_len") == S7WordLen.BIT:
            parsed["bit"] = addr_spec[11] & 0x07  # the low 3 bits of the 3-byte bit address
        return parsed

    def _handle_read_area(self, request: dict[str, Any], client_address: Any) -> bytes:
        self.reads += 1
        if not self.put_get:
            return self._build_error_response(request, PUT_GET_REFUSED)
        return super()._handle_read_area(request, client_address)

    def _handle_write_area(self, request: dict[str, Any], client_address: Any) -> bytes:
        if not self.put_get:
            return self._build_error_response(request, PUT_GET_REFUSED)
        spec = request.get("parameters", {}).get("address_spec", {})
        if spec.get("word_len") != S7WordLen.BIT or "bit" not in spec:
            return super()._handle_write_area(request, client_address)
        key = (spec["area"], spec["db_number"])
        memory = self.memory_areas.get(key)
        if memory is None or spec["start"] >= len(memory):
            return super()._handle_write_area(request, client_address)
        with self.area_locks[key]:
            mask = 1 << spec["bit"]
            on = bool(request["data"]["data"][:1] == b"\x01")
            merged = (memory[spec["start"]] | mask) if on else (memory[spec["start"]] & ~mask)
            request["data"]["data"] = bytes([merged])
            return super()._handle_write_area(request, client_address)


class S7TestServer:
    """A CPU with DB10 (64 bytes), DB20 (300 bytes), markers, inputs and outputs (16 bytes
    each). The memory survives stop/start, like a CPU that only lost its network."""

    def __init__(self, *, put_get: bool = True) -> None:
        """`put_get=False`: a CPU whose protection refuses PUT/GET (every read and write)."""
        self.put_get = put_get
        self.port = free_port()
        self.db10 = bytearray(64)
        self.db20 = bytearray(300)
        self.m = bytearray(16)
        self.i = bytearray(16)
        self.q = bytearray(16)
        self.server: BitExactServer | None = None
        self.reads_before = 0

    def start(self) -> None:
        server = BitExactServer(put_get=self.put_get)
        server.register_area(SrvArea.DB, 10, self.db10)
        server.register_area(SrvArea.DB, 20, self.db20)
        server.register_area(SrvArea.MK, 0, self.m)
        server.register_area(SrvArea.PE, 0, self.i)
        server.register_area(SrvArea.PA, 0, self.q)
        server.start_to("127.0.0.1", self.port)
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.reads_before += self.server.reads
            self.server.stop()
            self.server = None

    @property
    def reads(self) -> int:
        """Read requests the server answered (counted by the server), across restarts."""
        return self.reads_before + (self.server.reads if self.server is not None else 0)

    def set_bit(self, memory: bytearray, byte: int, bit: int, on: bool) -> None:
        """What the PLC program does: change one bit of its own memory."""
        assert self.server is not None
        key = next(k for k, v in self.server.memory_areas.items() if v is memory)
        with self.server.area_locks[key]:
            memory[byte] = (memory[byte] | (1 << bit)) if on else (memory[byte] & ~(1 << bit))
