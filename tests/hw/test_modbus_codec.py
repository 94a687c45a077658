"""Data types, word/byte orders and read coalescing, without a device."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linelight.hw.modbus_codec import (
    Area,
    DataType,
    Order,
    Point,
    decode,
    number_to_words,
    plan_reads,
    words_to_number,
)

B, L = Order.BIG, Order.LITTLE


# Known vectors: the bytes of the value in big-endian, then how each order puts them on the wire.
@pytest.mark.parametrize(("dtype", "value", "word_order", "byte_order", "registers"), [
    (DataType.UINT16, 0x1234, B, B, [0x1234]),
    (DataType.UINT16, 0x1234, B, L, [0x3412]),
    (DataType.INT16, -2, B, B, [0xFFFE]),
    (DataType.INT16, -2, B, L, [0xFEFF]),
    (DataType.UINT32, 0x11223344, B, B, [0x1122, 0x3344]),  # ABCD
    (DataType.UINT32, 0x11223344, L, B, [0x3344, 0x1122]),  # CDAB (word swap)
    (DataType.UINT32, 0x11223344, B, L, [0x2211, 0x4433]),  # BADC (byte swap)
    (DataType.UINT32, 0x11223344, L, L, [0x4433, 0x2211]),  # DCBA
    (DataType.INT32, -100000, B, B, [0xFFFE, 0x7960]),
    (DataType.INT32, -100000, L, B, [0x7960, 0xFFFE]),
    (DataType.FLOAT32, 1.5, B, B, [0x3FC0, 0x0000]),
    (DataType.FLOAT32, 1.5, L, B, [0x0000, 0x3FC0]),
    (DataType.FLOAT32, 1.5, B, L, [0xC03F, 0x0000]),
    (DataType.FLOAT32, 1.5, L, L, [0x0000, 0xC03F]),
])
def test_every_type_and_order_decodes_known_registers(dtype, value, word_order, byte_order,
                                                      registers):
    point = Point(Area.HOLDING_REGISTER, 0, dtype, word_order=word_order, byte_order=byte_order)
    assert decode(point, registers) == value
    assert number_to_words(value, dtype, word_order, byte_order) == registers


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(list(Order)),
       st.sampled_from(list(Order)))
def test_int32_round_trips_in_every_order(value, word_order, byte_order):
    words = number_to_words(value, DataType.INT32, word_order, byte_order)
    assert words_to_number(words, DataType.INT32, word_order, byte_order) == value


@given(st.floats(width=32, allow_nan=False), st.sampled_from(list(Order)),
       st.sampled_from(list(Order)))
def test_float32_round_trips_in_every_order(value, word_order, byte_order):
    words = number_to_words(value, DataType.FLOAT32, word_order, byte_order)
    got = words_to_number(words, DataType.FLOAT32, word_order, byte_order)
    assert got == value or (math.isinf(value) and math.isinf(got))


def test_float32_nan_decodes_as_nan():
    words = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    assert math.isnan(decode(Point(Area.INPUT_REGISTER, 0, DataType.FLOAT32), words))


def test_bit_in_register_counts_from_least_significant():
    reg = [0b1000_0000_0000_0100]
    assert decode(Point(Area.HOLDING_REGISTER, 0, DataType.BOOL, bit=2), reg) is True
    assert decode(Point(Area.HOLDING_REGISTER, 0, DataType.BOOL, bit=15), reg) is True
    assert decode(Point(Area.HOLDING_REGISTER, 0, DataType.BOOL, bit=0), reg) is False


def test_scale_and_offset_apply_after_decoding():
    point = Point(Area.INPUT_REGISTER, 0, DataType.INT16, scale=0.1, offset=-40.0)
    assert decode(point, [0xFFF6]) == pytest.approx(-41.0)  # -10 * 0.1 - 40


def test_coils_and_discrete_inputs_decode_as_bool():
    assert decode(Point(Area.COIL, 5, DataType.BOOL), [1]) is True
    assert decode(Point(Area.DISCRETE_INPUT, 5, DataType.BOOL), [False]) is False


def test_manual_numbers_are_one_based_with_area_prefix():
    assert Point(Area.HOLDING_REGISTER, 0).describe() == "holding register 0 (manual 40001)"
    assert Point(Area.INPUT_REGISTER, 9).describe() == "input register 9 (manual 30010)"
    assert Point(Area.DISCRETE_INPUT, 0, DataType.BOOL).describe().endswith("(manual 10001)")
    assert Point(Area.COIL, 0, DataType.BOOL).describe().endswith("(manual 1)")


# -- coalescing -------------------------------------------------------------------------------

def _regs(*addresses: int, dtype: DataType = DataType.UINT16, unit: int = 1):
    return [(f"r{a}", Point(Area.HOLDING_REGISTER, a, dtype, unit)) for a in addresses]


def test_adjacent_registers_coalesce_into_one_read():
    blocks = plan_reads(_regs(3, 0, 1, 2))
    assert [(b.address, b.count) for b in blocks] == [(0, 4)]


def test_32_bit_values_span_two_registers():
    blocks = plan_reads(_regs(0, 2, dtype=DataType.FLOAT32))
    assert [(b.address, b.count) for b in blocks] == [(0, 4)]


def test_a_hole_splits_unless_max_gap_allows_it():
    assert [(b.address, b.count) for b in plan_reads(_regs(0, 1, 5))] == [(0, 2), (5, 1)]
    assert [(b.address, b.count) for b in plan_reads(_regs(0, 1, 5), max_gap=3)] == [(0, 6)]


def test_areas_and_units_never_share_a_read():
    points = [*_regs(0, 1), *_regs(2, unit=2),
              ("c", Point(Area.COIL, 0, DataType.BOOL)), ("i", Point(Area.INPUT_REGISTER, 2))]
    blocks = plan_reads(points)
    assert sorted((b.unit, b.area.value, b.address, b.count) for b in blocks) == [
        (1, "coil", 0, 1), (1, "holding_register", 0, 2), (1, "input_register", 2, 1),
        (2, "holding_register", 2, 1)]


def test_blocks_respect_the_protocol_limit_per_request():
    regs = plan_reads(_regs(*range(300)))
    assert [(b.address, b.count) for b in regs] == [(0, 125), (125, 125), (250, 50)]
    coils = plan_reads([(f"c{a}", Point(Area.COIL, a, DataType.BOOL)) for a in range(2500)])
    assert [(b.address, b.count) for b in coils] == [(0, 2000), (2000, 500)]
    smaller = plan_reads(_regs(*range(30)), max_count=16)
    assert [(b.address, b.count) for b in smaller] == [(0, 16), (16, 14)]


def test_a_32_bit_value_is_never_split_across_requests():
    blocks = plan_reads(_regs(*range(0, 130, 2), dtype=DataType.UINT32))
    for b in blocks:
        assert b.count <= 125
        for _, p in b.members:
            assert b.address <= p.address and p.address + p.width <= b.address + b.count


def test_several_bits_of_one_register_share_it():
    points = [("a", Point(Area.HOLDING_REGISTER, 7, DataType.BOOL, bit=0)),
              ("b", Point(Area.HOLDING_REGISTER, 7, DataType.BOOL, bit=9))]
    blocks = plan_reads(points)
    assert [(b.address, b.count, len(b.members)) for b in blocks] == [(7, 1, 2)]
    raw = [1 << 9]
    got = {name: decode(p, blocks[0].slice_for(p, raw)) for name, p in blocks[0].members}
    assert got == {"a": False, "b": True}
