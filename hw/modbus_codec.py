"""Pure Modbus data handling: register areas, data types and orders, and read coalescing.

Nothing here does I/O, so every decode and every read plan is unit-tested without a device.
Addresses are the 0-based protocol addresses (what goes on the wire); the manuals' 1-based
numbers (00001, 10001, 30001, 40001) are explained in docs/hardware.md.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from linelight.rules.values import Value


class Area(enum.Enum):
    """The four Modbus data areas, with the function code that reads each."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit(self) -> bool:
        return self in (Area.COIL, Area.DISCRETE_INPUT)

    @property
    def read_function(self) -> int:
        return _READ_FC[self]

    @property
    def max_read(self) -> int:
        """Largest count one read request may ask for (Modbus application protocol 1.1b3)."""
        return 2000 if self.is_bit else 125

    @property
    def manual_base(self) -> int:
        """The prefix of the 1-based numbering many manuals use (40001 = holding register 0)."""
        return _MANUAL_BASE[self]


_READ_FC = {Area.COIL: 1, Area.DISCRETE_INPUT: 2, Area.HOLDING_REGISTER: 3,
            Area.INPUT_REGISTER: 4}
_MANUAL_BASE = {Area.COIL: 1, Area.DISCRETE_INPUT: 10001, Area.INPUT_REGISTER: 30001,
                Area.HOLDING_REGISTER: 40001}

FUNCTION_NAMES = {
    1: "read coils (01)", 2: "read discrete inputs (02)", 3: "read holding registers (03)",
    4: "read input registers (04)", 5: "write single coil (05)", 6: "write single register (06)",
    15: "write multiple coils (15)", 16: "write multiple registers (16)",
}

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target device failed to respond",
}


class DataType(enum.Enum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"

    @property
    def registers(self) -> int:
        return 2 if self in (DataType.INT32, DataType.UINT32, DataType.FLOAT32) else 1

    @property
    def struct_code(self) -> str:
        return _STRUCT[self]


_STRUCT = {DataType.INT16: "h", DataType.UINT16: "H", DataType.INT32: "i", DataType.UINT32: "I",
           DataType.FLOAT32: "f"}


class Order(enum.Enum):
    """Byte order inside a register, or word order across the registers of a 32-bit value."""

    BIG = "big"  # the Modbus default: high byte first, high word first
    LITTLE = "little"


@dataclass(frozen=True, slots=True)
class Point:
    """Where one input lives on a device and how its raw bits become a value."""

    area: Area
    address: int
    type: DataType = DataType.UINT16
    unit: int = 1
    bit: int | None = None  # bit-in-register: 0 = least significant
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        """How many addresses (bits or registers) this point occupies."""
        if self.area.is_bit or self.bit is not None:
            return 1
        return self.type.registers

    def describe(self) -> str:
        """`holding register 10 (manual 40011), unit 1` for messages."""
        kind = self.area.value.replace("_", " ")
        return f"{kind} {self.address} (manual {self.area.manual_base + self.address})"


def decode(point: Point, raw: Sequence[int] | Sequence[bool]) -> Value:
    """The value of `point` from its `width` raw items (bits or 16-bit registers)."""
    if point.area.is_bit:
        return bool(raw[0])
    if point.bit is not None:
        return bool((int(raw[0]) >> point.bit) & 1)
    regs = [int(r) & 0xFFFF for r in raw[: point.type.registers]]
    value: int | float = words_to_number(regs, point.type, point.word_order, point.byte_order)
    if point.scale != 1.0 or point.offset != 0.0:
        return value * point.scale + point.offset
    return value


def words_to_number(regs: Sequence[int], dtype: DataType, word_order: Order,
                    byte_order: Order) -> int | float:
    """Registers as received (first register first) to a number under the given orders."""
    words = list(regs) if word_order is Order.BIG else list(reversed(regs))
    data = b"".join(_word_bytes(w, byte_order) for w in words)
    (number,) = struct.unpack(">" + dtype.struct_code, data)
    if dtype is DataType.FLOAT32:
        return float(number)
    return int(number)


def number_to_words(value: float, dtype: DataType, word_order: Order,
                    byte_order: Order) -> list[int]:
    """The inverse of `words_to_number`: what a device holding `value` sends, register by register."""
    packed = struct.pack(">" + dtype.struct_code,
                         float(value) if dtype is DataType.FLOAT32 else int(value))
    words = [_bytes_word(packed[i : i + 2], byte_order) for i in range(0, len(packed), 2)]
    return words if word_order is Order.BIG else list(reversed(words))


def _word_bytes(word: int, byte_order: Order) -> bytes:
    hi, lo = (word >> 8) & 0xFF, word & 0xFF
    return bytes((hi, lo)) if byte_order is Order.BIG else bytes((lo, hi))


def _bytes_word(pair: bytes, byte_order: Order) -> int:
    a, b = pair[0], pair[1]
    return (a << 8 | b) if byte_order is Order.BIG else (b << 8 | a)


# -- read planning ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` items from `address` of `area` on `unit`, and who uses them."""

    unit: int
    area: Area
    address: int
    count: int
    members: tuple[tuple[str, Point], ...]  # input name and its point, all inside the block

    def slice_for(self, point: Point, raw: Sequence[int] | Sequence[bool]) -> Sequence[int] | Sequence[bool]:
        start = point.address - self.address
        return raw[start : start + point.width]

    def describe(self) -> str:
        last = self.address + self.count - 1
        kind = self.area.value.replace("_", " ")
        return f"{kind}s {self.address}..{last}" if self.count > 1 else f"{kind} {self.address}"


def plan_reads(points: Iterable[tuple[str, Point]], *, max_gap: int = 0,
               max_count: int | None = None) -> list[ReadBlock]:
    """Group points into as few reads as the protocol allows.

    Points of the same unit and area merge into one block when the hole between them is at most
    `max_gap` addresses and the block stays within the protocol's limit per request (2000 bits,
    125 registers; `max_count` can lower it for devices that accept less). Holes cost bandwidth
    and may hit unmapped addresses, so `max_gap` defaults to 0 (only touching points merge).
    """
    groups: dict[tuple[int, Area], list[tuple[str, Point]]] = {}
    for name, point in points:
        groups.setdefault((point.unit, point.area), []).append((name, point))
    blocks: list[ReadBlock] = []
    for (unit, area), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        limit = min(area.max_read, max_count) if max_count else area.max_read
        members.sort(key=lambda m: (m[1].address, m[1].width))
        current: list[tuple[str, Point]] = []
        start = end = 0  # end is exclusive
        for name, point in members:
            p_end = point.address + point.width
            if current and point.address - end <= max_gap and max(end, p_end) - start <= limit:
                current.append((name, point))
                end = max(end, p_end)
                continue
            if current:
                blocks.append(ReadBlock(unit, area, start, end - start, tuple(current)))
            current, start, end = [(name, point)], point.address, p_end
        if current:
            blocks.append(ReadBlock(unit, area, start, end - start, tuple(current)))
    return blocks
