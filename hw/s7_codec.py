"""Pure Siemens S7 data handling: addresses (`DB10.DBX4.0`, `MW2`, `Q1.0`), types, read plans.

Nothing here does I/O, so parsing, decoding and coalescing are unit-tested without a PLC.
S7 data is big-endian (the CPU's own byte order); offsets are byte offsets as TIA Portal and
STEP 7 show them, bits 0..7 with 0 the least significant bit of the byte.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from linelight.rules.values import Value

MAX_DB = 65535
MAX_OFFSET = 65535  # bytes; far beyond any real DB or I/O image, small enough to catch typos
READ_OVERHEAD = 18  # bytes of a read response that are not data (header, parameter, item header)
MIN_PDU = 240  # the smallest PDU real CPUs negotiate (S7-300, S7-1200)


class S7Area(enum.Enum):
    """The memory areas linelight reads and writes: data blocks, markers, inputs, outputs."""

    DB = "DB"
    M = "M"  # markers (Merker)
    I = "I"  # noqa: E741 - the process image of inputs (German: E)
    Q = "Q"  # the process image of outputs (German: A)


class S7Type(enum.Enum):
    BOOL = "BOOL"
    BYTE = "BYTE"
    WORD = "WORD"
    INT = "INT"
    DWORD = "DWORD"
    DINT = "DINT"
    REAL = "REAL"
    STRING = "STRING"  # STRING[n]: max length byte, actual length byte, n characters

    @property
    def size(self) -> int:
        """Bytes the value occupies (a BOOL reads its whole byte)."""
        return _SIZE[self]


_SIZE = {S7Type.BOOL: 1, S7Type.BYTE: 1, S7Type.WORD: 2, S7Type.INT: 2, S7Type.DWORD: 4,
         S7Type.DINT: 4, S7Type.REAL: 4, S7Type.STRING: 2}  # STRING: + its length
MAX_STRING = 254
_STRING_RE = re.compile(r"STRING\[(\d{1,3})\]")
_STRUCT = {S7Type.BYTE: ">B", S7Type.WORD: ">H", S7Type.INT: ">h", S7Type.DWORD: ">I",
           S7Type.DINT: ">i", S7Type.REAL: ">f"}
# the width letter of an address and the types it may hold (the first is the default)
_WIDTH_TYPES = {"X": (S7Type.BOOL,), "B": (S7Type.BYTE,), "W": (S7Type.WORD, S7Type.INT),
                "D": (S7Type.DWORD, S7Type.DINT, S7Type.REAL)}

_DB_RE = re.compile(r"DB(?P<db>\d+)\.DB(?P<width>[XBWD])(?P<byte>\d+)(?:\.(?P<bit>\d+))?")
_AREA_RE = re.compile(r"(?P<area>[MIQ])(?P<width>[BWD]?)(?P<byte>\d+)(?:\.(?P<bit>\d+))?")


class S7AddressError(ValueError):
    """An S7 address that cannot be parsed or does not fit its type; the text is one sentence."""


@dataclass(frozen=True, slots=True)
class S7Address:
    """One value in the PLC: area, DB number (0 outside DBs), byte offset, bit, type."""

    area: S7Area
    db: int
    byte: int
    type: S7Type
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    length: int = 0  # STRING[n]: n

    @property
    def size(self) -> int:
        return self.type.size + self.length

    def describe(self) -> str:
        """The address as TIA Portal writes it: `DB10.DBX4.0`, `DB10.DBD8`, `M0.1`, `QW2`."""
        width = "B" if self.type is S7Type.STRING else {1: "B", 2: "W", 4: "D"}[self.size]
        if self.area is S7Area.DB:
            if self.bit is not None:
                return f"DB{self.db}.DBX{self.byte}.{self.bit}"
            return f"DB{self.db}.DB{width}{self.byte}"
        if self.bit is not None:
            return f"{self.area.value}{self.byte}.{self.bit}"
        return f"{self.area.value}{width}{self.byte}"


def parse_address(text: str, type_name: str | None = None, *, scale: float = 1.0,
                  offset: float = 0.0) -> S7Address:
    """`DB10.DBX4.0`, `DB10.DBW6`, `DB10.DBD8` (with `type_name` REAL or DINT), `M0.1`, `MB3`,
    `I0.3`, `IW4`, `Q1.0`; raises S7AddressError naming the address."""
    clean = text.strip().upper().replace(" ", "")
    db = 0
    m = _DB_RE.fullmatch(clean)
    if m is not None:
        area, db = S7Area.DB, int(m["db"])
        width = m["width"]
    else:
        m = _AREA_RE.fullmatch(clean)
        if m is None:
            raise S7AddressError(
                f"'{text}' is not an S7 address; write e.g. DB10.DBX4.0, DB10.DBW6, DB10.DBD8, "
                "M0.1, MW2, I0.3, Q1.0")
        area = S7Area(m["area"])
        width = m["width"] or "X"
    byte, bit = int(m["byte"]), m["bit"]
    if area is S7Area.DB and not 1 <= db <= MAX_DB:
        raise S7AddressError(f"'{text}': the DB number must be 1 to {MAX_DB}, not {db}")
    if byte > MAX_OFFSET:
        raise S7AddressError(f"'{text}': the byte offset must be 0 to {MAX_OFFSET}, not {byte}")
    if width == "X":
        if bit is None:
            raise S7AddressError(f"'{text}': a bit address needs '.bit' (0-7), e.g. "
                                 f"{'DB' + str(db) + '.DBX' if area is S7Area.DB else area.value}"
                                 f"{byte}.0")
        if int(bit) > 7:
            raise S7AddressError(f"'{text}': the bit must be 0 to 7, not {bit}")
    elif bit is not None:
        raise S7AddressError(f"'{text}': only bit addresses (X, or I/Q/M byte.bit) take '.{bit}'")
    allowed = _WIDTH_TYPES[width]
    dtype = allowed[0]
    string = _STRING_RE.fullmatch(type_name.upper().replace(" ", "")) if type_name else None
    if string is not None:
        length = int(string[1])
        if width != "B" or area is not S7Area.DB:
            raise S7AddressError(f"'{text}': a STRING starts at a byte of a DB, e.g. DB10.DBB20")
        if not 1 <= length <= MAX_STRING:
            raise S7AddressError(f"'{type_name}': the length must be 1 to {MAX_STRING}")
        if scale != 1.0 or offset != 0.0:
            raise S7AddressError(f"'{text}' is a STRING: 'scale' and 'offset' apply to numbers")
        return S7Address(area, db, byte, S7Type.STRING, None, length=length)
    if type_name is not None:
        try:
            dtype = S7Type(type_name.upper())
            if dtype is S7Type.STRING:
                raise ValueError(type_name)
        except ValueError:
            raise S7AddressError(f"'{type_name}' is not an S7 type; types are "
                                 f"{', '.join(t.value for t in S7Type if t is not S7Type.STRING)}"
                                 f", STRING[n]") from None
        if dtype not in allowed:
            raise S7AddressError(
                f"'{text}' holds {_width_words(width)}: type must be "
                f"{' or '.join(t.value for t in allowed)}, not {dtype.value}")
    if dtype is S7Type.BOOL and (scale != 1.0 or offset != 0.0):
        raise S7AddressError(f"'{text}' is a bit: 'scale' and 'offset' apply to numbers")
    return S7Address(area, db, byte, dtype, None if bit is None else int(bit), scale, offset)


def _width_words(width: str) -> str:
    return {"X": "one bit", "B": "one byte", "W": "a 2-byte word", "D": "a 4-byte double word"}[width]


def decode(address: S7Address, data: bytes) -> Value:
    """The value of `address` from its `size` bytes (big-endian, as the CPU stores them)."""
    if address.type is S7Type.BOOL:
        assert address.bit is not None
        return bool((data[0] >> address.bit) & 1)
    if address.type is S7Type.STRING:
        return decode_from(address, bytes(data), 0)
    (number,) = struct.unpack(_STRUCT[address.type], bytes(data[: address.size]))
    value: int | float = float(number) if address.type is S7Type.REAL else int(number)
    if address.scale != 1.0 or address.offset != 0.0:
        return value * address.scale + address.offset
    return value


def decode_from(address: S7Address, data: bytes, offset: int) -> Value:
    """`decode` of the value at `offset` of a block's bytes, without copying them (the poller's
    hot path: one call per input per poll)."""
    dtype = address.type
    if dtype is S7Type.BOOL:
        return bool((data[offset] >> address.bit) & 1) if address.bit is not None else False
    if dtype is S7Type.STRING:
        # the CPU's actual length, bounded by the declared one (a garbled header reads short)
        used = min(data[offset + 1], address.length, len(data) - offset - 2)
        return bytes(data[offset + 2 : offset + 2 + used]).decode("latin-1")
    number: int | float = struct.unpack_from(_STRUCT[dtype], data, offset)[0]
    if address.scale != 1.0 or address.offset != 0.0:
        return number * address.scale + address.offset
    return number


def encode(address: S7Address, value: int | float | str) -> bytes:
    """The bytes a PLC holds for `value` at a non-bit address (the inverse of `decode`)."""
    if address.type is S7Type.STRING:
        raw = str(value).encode("latin-1")[: address.length]
        return bytes([address.length, len(raw)]) + raw.ljust(address.length, b"\x00")
    if isinstance(value, str):
        raise ValueError(f"{address.describe()} holds a number, not '{value}'")
    if address.type is S7Type.REAL:
        return struct.pack(">f", float(value))
    return struct.pack(_STRUCT[address.type], int(value))


# -- read planning ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class S7Block:
    """One read request: `size` bytes from `start` of one area (one DB), and who uses them."""

    area: S7Area
    db: int
    start: int
    size: int
    members: tuple[tuple[str, S7Address], ...]

    def slice_for(self, address: S7Address, data: bytes) -> bytes:
        begin = address.byte - self.start
        return data[begin : begin + address.size]

    def describe(self) -> str:
        last = self.start + self.size - 1
        prefix = f"DB{self.db}.DBB" if self.area is S7Area.DB else f"{self.area.value}B"
        return f"{prefix}{self.start}..{last}" if self.size > 1 else f"{prefix}{self.start}"


def max_block_bytes(pdu: int) -> int:
    """Largest data a read answer may carry under the negotiated PDU size."""
    return max(1, pdu - READ_OVERHEAD)


def plan_reads(points: Iterable[tuple[str, S7Address]], *, max_bytes: int,
               max_gap: int = 0) -> list[S7Block]:
    """Group addresses into as few reads as the PDU allows.

    Addresses of one area (one DB) merge when the hole between them is at most `max_gap` bytes
    and the block fits one answer (`max_bytes`, from the negotiated PDU: 222 bytes at PDU 240).
    Bits of one byte always share it. A hole is read and thrown away, so `max_gap` trades
    bytes on the wire for requests; an S7 request costs a PLC scan-cycle slot, so the default
    merges holes of up to 16 bytes.
    """
    groups: dict[tuple[S7Area, int], list[tuple[str, S7Address]]] = {}
    for name, address in points:
        groups.setdefault((address.area, address.db), []).append((name, address))
    blocks: list[S7Block] = []
    for (area, db), members in sorted(groups.items(), key=lambda kv: (kv[0][0].value, kv[0][1])):
        members.sort(key=lambda m: (m[1].byte, m[1].size))
        current: list[tuple[str, S7Address]] = []
        start = end = 0
        for name, address in members:
            a_end = address.byte + address.size
            if current and address.byte - end <= max_gap and max(end, a_end) - start <= max_bytes:
                current.append((name, address))
                end = max(end, a_end)
                continue
            if current:
                blocks.append(S7Block(area, db, start, end - start, tuple(current)))
            current, start, end = [(name, address)], address.byte, a_end
        if current:
            blocks.append(S7Block(area, db, start, end - start, tuple(current)))
    return blocks


class BlockDecoder:
    """Decodes every member of one block from its bytes, as `decode_from` does for each: the
    numbers without scale that do not overlap with one `struct.unpack_from` (a poll's hot path:
    one call per block instead of one per input), bits, strings, scaled numbers and overlaps one
    by one."""

    def __init__(self, block: S7Block) -> None:
        fmt, pos = [">"], 0
        names: list[str] = []
        self.others: list[tuple[str, S7Address, int]] = []
        for name, address in block.members:  # sorted by byte offset (plan_reads)
            at = address.byte - block.start
            if (address.type in _STRUCT and address.scale == 1.0 and address.offset == 0.0
                    and at >= pos):
                if at > pos:
                    fmt.append(f"{at - pos}x")
                fmt.append(_STRUCT[address.type][1])
                pos = at + address.size
                names.append(name)
            else:
                self.others.append((name, address, at))
        self._struct = struct.Struct("".join(fmt)) if names else None
        # the order of `values`: the struct's numbers first, then the others
        self.names = tuple(names) + tuple(name for name, _, _ in self.others)

    def values(self, data: bytes) -> tuple[Value, ...]:
        """Every member's value in the order of `names`; struct.error, IndexError or ValueError
        if `data` is short."""
        numbers: tuple[Value, ...] = self._struct.unpack_from(data) \
            if self._struct is not None else ()
        if not self.others:
            return numbers
        return numbers + tuple(decode_from(address, data, at) for _, address, at in self.others)

    def decode(self, data: bytes) -> dict[str, Value]:
        """Every member's value by name (`values` as a dict)."""
        return dict(zip(self.names, self.values(data), strict=True))
