"""S7 addresses, types and read plans (pure), and the `type = "s7"` config reader's messages."""

from __future__ import annotations

import pytest

from linelight.hw.config import S7SourceSpec
from linelight.hw.s7_codec import (
    BlockDecoder,
    S7Address,
    S7AddressError,
    S7Area,
    S7Type,
    decode,
    decode_from,
    encode,
    max_block_bytes,
    parse_address,
    plan_reads,
)
from tests.hw.helpers import config_problems, read_config


@pytest.mark.parametrize(("text", "type_name", "expected"), [
    ("DB10.DBX4.0", None, S7Address(S7Area.DB, 10, 4, S7Type.BOOL, 0)),
    ("db10.dbx4.7", None, S7Address(S7Area.DB, 10, 4, S7Type.BOOL, 7)),
    ("DB10.DBB5", None, S7Address(S7Area.DB, 10, 5, S7Type.BYTE)),
    ("DB10.DBW6", None, S7Address(S7Area.DB, 10, 6, S7Type.WORD)),
    ("DB10.DBW6", "INT", S7Address(S7Area.DB, 10, 6, S7Type.INT)),
    ("DB10.DBD8", None, S7Address(S7Area.DB, 10, 8, S7Type.DWORD)),
    ("DB10.DBD8", "REAL", S7Address(S7Area.DB, 10, 8, S7Type.REAL)),
    ("DB10.DBD8", "DINT", S7Address(S7Area.DB, 10, 8, S7Type.DINT)),
    ("M0.1", None, S7Address(S7Area.M, 0, 0, S7Type.BOOL, 1)),
    ("MW2", "INT", S7Address(S7Area.M, 0, 2, S7Type.INT)),
    ("I0.3", None, S7Address(S7Area.I, 0, 0, S7Type.BOOL, 3)),
    ("IB1", None, S7Address(S7Area.I, 0, 1, S7Type.BYTE)),
    ("Q1.0", None, S7Address(S7Area.Q, 0, 1, S7Type.BOOL, 0)),
    ("QD4", "REAL", S7Address(S7Area.Q, 0, 4, S7Type.REAL)),
    ("DB10.DBB20", "STRING[10]", S7Address(S7Area.DB, 10, 20, S7Type.STRING, length=10)),
])
def test_addresses_parse_as_tia_portal_writes_them(text, type_name, expected):
    address = parse_address(text, type_name)
    assert address == expected
    assert parse_address(address.describe(), type_name) == expected  # describe round-trips


@pytest.mark.parametrize(("text", "type_name", "message"), [
    ("DB10.DBX4", None, "'DB10.DBX4': a bit address needs '.bit' (0-7), e.g. DB10.DBX4.0"),
    ("DB10.DBX4.8", None, "'DB10.DBX4.8': the bit must be 0 to 7, not 8"),
    ("DB0.DBW2", None, "'DB0.DBW2': the DB number must be 1 to 65535, not 0"),
    ("DB10.DBW6", "REAL", "'DB10.DBW6' holds a 2-byte word: type must be WORD or INT, not REAL"),
    ("DB10.DBD8", "BOOL", "'DB10.DBD8' holds a 4-byte double word: type must be DWORD or "
                          "DINT or REAL, not BOOL"),
    ("MW2.1", None, "'MW2.1': only bit addresses (X, or I/Q/M byte.bit) take '.1'"),
    ("M100000.0", None, "'M100000.0': the byte offset must be 0 to 65535, not 100000"),
    ("X1.0", None, "'X1.0' is not an S7 address; write e.g. DB10.DBX4.0"),
    ("MB2", "STRING[4]", "'MB2': a STRING starts at a byte of a DB, e.g. DB10.DBB20"),
    ("DB1.DBB2", "STRING[300]", "'STRING[300]': the length must be 1 to 254"),
])
def test_bad_addresses_are_one_sentence_naming_the_address(text, type_name, message):
    with pytest.raises(S7AddressError) as info:
        parse_address(text, type_name)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(("type_name", "value"), [
    ("BYTE", 200), ("WORD", 54321), ("INT", -1234), ("DWORD", 3_000_000_000),
    ("DINT", -123456789), ("REAL", 2.5)])
def test_numbers_decode_from_the_big_endian_bytes_a_cpu_holds(type_name, value):
    text = {"BYTE": "MB0", "WORD": "MW0", "INT": "MW0"}.get(type_name, "MD0")
    address = parse_address(text, type_name)
    assert decode(address, encode(address, value)) == value
    assert decode_from(address, b"\x00\x00" + encode(address, value), 2) == value  # poller's path


def test_a_string_reads_its_actual_length_bounded_by_the_declared_one():
    address = parse_address("DB1.DBB0", "STRING[8]")
    assert address.size == 10
    assert decode(address, encode(address, "HELLO")) == "HELLO"
    assert decode(address, b"\x08\xffABCDEFGHIJ") == "ABCDEFGH"  # a garbled length byte


def test_scale_and_offset_apply_to_numbers():
    address = parse_address("DB1.DBW0", "INT", scale=0.1, offset=-5.0)
    assert decode(address, b"\x00\xfa") == pytest.approx(20.0)


def test_reads_coalesce_per_area_and_db_and_split_at_the_pdu():
    points = [(f"w{i}", parse_address(f"DB20.DBW{2 * i}")) for i in range(150)]  # 300 bytes
    points += [("m", parse_address("M0.1")), ("m2", parse_address("MW2")),
               ("other_db", parse_address("DB10.DBX4.0")), ("q", parse_address("Q1.0"))]
    blocks = plan_reads(points, max_bytes=max_block_bytes(240), max_gap=16)
    db20 = [b for b in blocks if b.area is S7Area.DB and b.db == 20]
    assert [(b.start, b.size) for b in db20] == [(0, 222), (222, 78)]  # PDU 240: 222 data bytes
    assert sorted((b.area.value, b.db, b.start, b.size) for b in blocks if b not in db20) == [
        ("DB", 10, 4, 1), ("M", 0, 0, 4), ("Q", 0, 1, 1)]
    assert sum(len(b.members) for b in blocks) == len(points)
    assert len(plan_reads(points, max_bytes=max_block_bytes(480))) == 5  # 300 bytes fit one


def test_bits_of_one_byte_share_a_read_and_gaps_above_max_gap_split():
    points = [("a", parse_address("M0.0")), ("b", parse_address("M0.7")),
              ("c", parse_address("MB20"))]
    assert [b.size for b in plan_reads(points, max_bytes=222, max_gap=0)] == [1, 1]
    assert [b.size for b in plan_reads(points, max_bytes=222, max_gap=19)] == [21]


def test_a_block_decodes_at_once_as_each_address_would_alone():
    """BlockDecoder (one struct call for the plain numbers) gives what decode_from gives for
    each member: bits sharing a byte, overlapping words, a hole, scaled, REAL, STRING."""
    import random
    import struct

    points = [("bit0", "DB20.DBX0.0", None), ("bit7", "DB20.DBX0.7", None),
              ("byte", "DB20.DBB1", None), ("word", "DB20.DBW2", None),
              ("int_same", "DB20.DBW2", "INT"), ("overlap", "DB20.DBW3", None),
              ("dint", "DB20.DBD6", "DINT"), ("real", "DB20.DBD10", "REAL"),
              ("dword_after_hole", "DB20.DBD20", None), ("bit_mid", "DB20.DBX21.3", None),
              ("string", "DB20.DBB24", "STRING[6]"), ("last", "DB20.DBW34", "INT")]
    addresses = [(n, parse_address(a, t)) for n, a, t in points]
    addresses.append(("scaled", parse_address("DB20.DBW14", "INT", scale=0.1, offset=-5.0)))
    (block,) = plan_reads(addresses, max_bytes=222, max_gap=16)
    decoder = BlockDecoder(block)
    one_by_one = {name for name, _, _ in decoder.others}
    assert not {"word", "dint", "real", "dword_after_hole", "last"} & one_by_one
    assert sorted(decoder.names) == sorted(n for n, _ in addresses)
    rng = random.Random(19)
    for _ in range(50):
        data = bytearray(rng.randbytes(block.size))
        data[24:26] = bytes([6, rng.randrange(9)])  # a STRING[6] header, length maybe garbled
        data[10:14] = struct.pack(">f", rng.uniform(-1e6, 1e6))
        expected = {n: decode_from(a, bytes(data), a.byte - block.start) for n, a in addresses}
        assert decoder.decode(bytes(data)) == expected
        assert decoder.values(bytes(data)) == tuple(expected[n] for n in decoder.names)
    with pytest.raises(struct.error):
        decoder.decode(b"\x00" * (block.size - 1))  # a short answer fails as a whole


S7_TOML = """
[sources.plc]
type = "s7"
host = "192.0.2.20"
rack = 0
slot = 1

[sources.plc.inputs]
running = {{ address = "DB10.DBX4.0" }}
speed = {{ address = "DB10.DBD8", type = "REAL", scale = 2.0 }}
{extra}
"""


def test_s7_source_config_reads_host_rack_slot_and_inputs():
    (spec,), _ = read_config(S7_TOML.format(extra=""))
    assert isinstance(spec, S7SourceSpec)
    assert (spec.host, spec.port, spec.rack, spec.slot, spec.max_gap) == ("192.0.2.20", 102, 0, 1,
                                                                          16)
    assert dict(spec.inputs)["speed"] == S7Address(S7Area.DB, 10, 8, S7Type.REAL, None, 2.0)


def test_s7_config_mistakes_are_located():
    problems = config_problems(S7_TOML.format(
        extra='bad = { address = "DB10.DBW6", type = "REAL" }\nq = { address = "Q1" }'))
    assert problems == [
        "agent.toml:11:19: input 'bad': 'DB10.DBW6' holds a 2-byte word: type must be WORD or "
        "INT, not REAL",
        "agent.toml:12:17: input 'q': 'Q1': a bit address needs '.bit' (0-7), e.g. Q1.0",
    ]


def test_s7_lamp_must_be_a_bit_on_an_s7_source():
    toml = S7_TOML.format(extra="") + """
[sources.io]
type = "modbus_tcp"
host = "192.0.2.30"

[tower.lamps]
red = { s7 = "Q1.0", source = "plc" }
green = { s7 = "QW2", source = "plc" }
amber = { s7 = "Q1.1", source = "io" }
"""
    assert config_problems(toml) == [
        "agent.toml:1:1: lamp 'amber' names source 'io' (bound at agent.toml:20:1), which is "
        "not an S7 source (S7 sources: plc)",
        "agent.toml:19:16: lamp 'green': a lamp is one bit in Q, M or a DB (e.g. Q1.0, "
        "DB10.DBX2.1), not QW2",
    ]


def test_tsap_and_rack_slot_exclude_each_other():
    problems = config_problems(S7_TOML.format(extra="").replace(
        "slot = 1\n", 'slot = 1\nremote_tsap = "3.1"\n'))
    assert problems == ["agent.toml:7:15: 'remote_tsap' must be two hex bytes such as \"03.01\", "
                        "not '3.1'"]
    problems = config_problems(S7_TOML.format(extra="").replace(
        "slot = 1\n", 'slot = 1\nremote_tsap = "03.01"\n'))
    assert problems == ["agent.toml:7:15: write either rack and slot or remote_tsap, not both"]
