"""The Sparkplug edge node's messages, decoded with the generated classes: births, aliases,
seq and bdSeq wrap, the historical flag and the (agent, seq) dedup properties."""

from __future__ import annotations

import time
from typing import Any

from linelight.agent.journal import Record
from linelight.agent.mqtt import SparkplugSettings
from linelight.agent.mqtt import sparkplug_b_pb2 as pb
from linelight.agent.mqtt.sparkplug import (
    AGENT_EVENT,
    BD_SEQ,
    PACK,
    REBIRTH,
    Out,
    SparkplugNode,
    get_value,
    next_bd_seq,
)

AGENT = "press-7"


def rec(seq: int, kind: str = "count", name: str = "parts", value: Any = 1,
        attrs: dict[str, Any] | None = None, ts_ns: int | None = None) -> Record:
    ts = ts_ns if ts_ns is not None else time.time_ns()
    return Record(seq, 1, kind, name, value, ts, ts, attrs or {})


def node(**kw: Any) -> SparkplugNode:
    return SparkplugNode(SparkplugSettings(group_id="plant", **kw), agent_id=AGENT, bd_seq=5)


def decode(out: Out) -> Any:
    return pb.Payload.FromString(out.message.payload)


def data(n: SparkplugNode, records: list[Record], historical: bool = False) -> list[Out]:
    return list(n.data(records, [historical] * len(records)))


def test_births_nbirth_seq_0_then_each_device_with_names_aliases_types_and_times() -> None:
    n = node(devices=("press-7", "filler"))
    outs = n.births()
    assert [(o.verb, o.message.topic) for o in outs] == [
        ("NBIRTH", "spBv1.0/plant/NBIRTH/press-7"),
        ("DBIRTH", "spBv1.0/plant/DBIRTH/press-7/press-7"),
        ("DBIRTH", "spBv1.0/plant/DBIRTH/press-7/filler")]
    nbirth = decode(outs[0])
    assert nbirth.seq == 0 and nbirth.timestamp > 0
    by_name = {m.name: m for m in nbirth.metrics}
    assert by_name[BD_SEQ].datatype == pb.Int64 and get_value(by_name[BD_SEQ]) == 5
    assert by_name[REBIRTH].datatype == pb.Boolean and by_name[REBIRTH].boolean_value is False
    for m in nbirth.metrics:
        assert m.HasField("name") and m.HasField("alias") and m.HasField("datatype")
        assert m.HasField("timestamp")
    assert [decode(o).seq for o in outs] == [0, 1, 2]


def test_the_will_is_ndeath_with_the_bdseq_and_no_seq() -> None:
    n = node()
    n.start_connection(42)
    will = pb.Payload.FromString(n.will().payload)
    assert not will.HasField("seq")
    assert [(m.name, get_value(m)) for m in will.metrics] == [(BD_SEQ, 42)]
    assert n.will().topic == "spBv1.0/plant/NDEATH/press-7"
    nbirth = decode(n.births()[0])
    assert {m.name: get_value(m) for m in nbirth.metrics}[BD_SEQ] == 42


def test_bdseq_wraps_from_255_to_0_and_starts_at_0() -> None:
    assert [next_bd_seq(v) for v in (None, 0, 41, 254, 255, "x", -1, 300)] == [
        0, 1, 42, 255, 0, 0, 0, 0]


def test_data_is_alias_only_with_event_time_dedup_properties_and_packing() -> None:
    n = node()
    n.births()
    records = [rec(s, value=s, ts_ns=1_700_000_000_123_456_789 + s) for s in range(1, 4)]
    outs = data(n, records)
    # a metric the device was not born with: the device is born again first, with it
    assert [o.verb for o in outs] == ["DBIRTH", "DDATA"]
    dbirth, ddata = decode(outs[0]), decode(outs[1])
    born = {m.name: m for m in dbirth.metrics}
    assert born["Counters/parts"].datatype == pb.Int64
    payload = ddata
    assert len(payload.metrics) == 3 and outs[1].seqs == (1, 2, 3)
    for s, m in zip(range(1, 4), payload.metrics, strict=True):
        assert not m.HasField("name") and m.alias == born["Counters/parts"].alias
        assert not m.HasField("datatype")
        assert m.timestamp == 1_700_000_000_123 and get_value(m) == s
        props = dict(zip(m.properties.keys, m.properties.values, strict=True))
        assert props["agent"].string_value == AGENT and props["agent"].type == pb.String
        assert props["seq"].long_value == s and props["seq"].type == pb.Int64
        assert not m.is_historical
    # known now: the next events go without a birth
    assert [o.verb for o in data(n, [rec(4)])] == ["DDATA"]


def test_aliases_are_unique_across_the_node_and_its_devices() -> None:
    n = node(devices=("a", "b"))
    n.births()
    records = [rec(1, attrs={"machine": "a"}), rec(2, attrs={"machine": "b"}),
               rec(3, "signal", "temp", 20.5, {"machine": "a"}),
               rec(4, "state", "producing", 2, {"machine": "b"}), rec(5, "agent", "start", "1.0")]
    data(n, records)
    every = [m.alias for o in n.births() for m in decode(o).metrics]
    assert len(every) == len(set(every)) and len(every) >= 8
    names = n.alias_names()
    assert {names[a] for a in every} >= {("a", "Counters/parts"), ("b", "State/Code"),
                                         ("b", "State/Name"), ("a", "Signals/temp"),
                                         (None, AGENT_EVENT)}


def test_seq_increments_by_one_and_wraps_255_to_0_across_births_and_data() -> None:
    n = node()
    seqs = [decode(o).seq for o in n.births()]
    for s in range(1, 600):
        seqs += [decode(o).seq for o in data(n, [rec(s, "signal", f"s{s % 3}", s)])]
    assert seqs[0] == 0
    assert all(b == (a + 1) % 256 for a, b in zip(seqs, seqs[1:], strict=False)), seqs[:300]
    assert seqs.count(0) >= 3  # wrapped more than once
    assert [decode(o).seq for o in n.births()][0] == 0  # a rebirth starts over at 0


def test_historical_events_say_so_and_do_not_become_the_born_value() -> None:
    n = node()
    n.births()
    data(n, [rec(1, "signal", "temp", 20.0)])
    outs = data(n, [rec(2, "signal", "temp", 99.0)], historical=True)
    (m,) = decode(outs[-1]).metrics
    assert m.is_historical and get_value(m) == 99.0
    dbirth = decode(n.births()[1])
    assert {x.name: get_value(x) for x in dbirth.metrics}["Signals/temp"] == 20.0


def test_a_value_the_datatype_cannot_carry_rebirths_the_device_with_the_alias_kept() -> None:
    n = node()
    n.births()
    first = data(n, [rec(1, "signal", "mode", 3)])
    alias = {m.name: m.alias for m in decode(first[0]).metrics}["Signals/mode"]
    outs = data(n, [rec(2, "signal", "mode", "auto")])
    assert [o.verb for o in outs] == ["DBIRTH", "DDATA"]
    born = {m.name: m for m in decode(outs[0]).metrics}["Signals/mode"]
    assert (born.alias, born.datatype) == (alias, pb.String)
    assert decode(outs[1]).metrics[0].string_value == "auto"
    # an int where a Double was born fits: no birth
    data(n, [rec(3, "signal", "temp", 1.5)])
    assert [o.verb for o in data(n, [rec(4, "signal", "temp", 2)])] == ["DDATA"]


def test_negative_and_null_values_round_trip() -> None:
    n = node()
    n.births()
    outs = data(n, [rec(1, "signal", "t", -40), rec(2, "signal", "t", None)])
    ms = decode(outs[-1]).metrics
    assert ms[0].long_value == 2**64 - 40 and get_value(ms[0], pb.Int64) == -40
    assert ms[1].is_null and get_value(ms[1]) is None


def test_agent_and_gap_events_are_node_data_as_json_text() -> None:
    n = node()
    n.births()
    outs = data(n, [rec(1, "agent", "start", "1.2", {"boot": 3}), rec(2, "gap", "gap",
                                                                     {"from": 5, "to": 9})])
    assert [o.verb for o in outs] == ["NDATA"]
    ms = decode(outs[0]).metrics
    assert ms[0].string_value == '{"name":"start","value":"1.2","boot":3}'
    assert ms[1].string_value == '{"value":{"from":5,"to":9}}'


def test_a_run_is_split_at_a_device_change_and_at_the_pack_limit() -> None:
    n = node(devices=("a", "b"))
    n.births()
    data(n, [rec(1, attrs={"machine": "a"}), rec(2, attrs={"machine": "b"})])  # born
    records = [rec(s, attrs={"machine": "a"}) for s in range(3, 3 + PACK + 5)]
    records.append(rec(999, attrs={"machine": "b"}))
    outs = data(n, records)
    assert [(o.verb, o.message.topic.rsplit("/", 1)[1], len(o.seqs)) for o in outs] == [
        ("DDATA", "a", PACK), ("DDATA", "a", 5), ("DDATA", "b", 1)]
    assert [s for o in outs for s in o.seqs] == [r.seq for r in records]


def test_a_device_an_event_names_first_is_born_before_its_data() -> None:
    n = node()
    n.births()
    outs = data(n, [rec(1, attrs={"machine": "late"})])
    assert [(o.verb, o.message.topic) for o in outs] == [
        ("DBIRTH", "spBv1.0/plant/DBIRTH/press-7/late"),
        ("DDATA", "spBv1.0/plant/DDATA/press-7/late")]
    assert "late" in n.devices


def test_clean_stop_ddeath_each_device_then_ndeath() -> None:
    n = node(devices=("a", "b"))
    n.births()
    outs = n.deaths()
    assert [(o.verb, o.message.topic) for o in outs] == [
        ("DDEATH", "spBv1.0/plant/DDEATH/press-7/a"), ("DDEATH", "spBv1.0/plant/DDEATH/press-7/b"),
        ("NDEATH", "spBv1.0/plant/NDEATH/press-7")]
    assert [decode(o).seq for o in outs[:2]] == [3, 4]
    assert not decode(outs[2]).HasField("seq")


def test_ids_default_to_the_agent_id() -> None:
    n = SparkplugNode(SparkplugSettings(group_id="g"), agent_id="a1")
    assert n.topic("NBIRTH") == "spBv1.0/g/NBIRTH/a1" and n.devices == ["a1"]
    assert n.command_topics == ("spBv1.0/g/NCMD/a1", "spBv1.0/g/DCMD/a1/+")
    n = SparkplugSettings(group_id="g", edge_node_id="e", device_id="d")
    sp = SparkplugNode(n, agent_id="a1")
    assert sp.topic("DDATA", "d") == "spBv1.0/g/DDATA/e/d" and sp.devices == ["d"]


def test_live_values_are_current_metrics_without_event_properties() -> None:
    n = node()
    n.births()
    data(n, [rec(1, "alarm", "door_open", True), rec(2, "alarm", "jam", True)])
    outs = n.live("signals", ["jam"], 1_700_000_000_000_000_000)
    names = n.alias_names()
    got = {names[m.alias][1]: m for m in decode(outs[-1]).metrics}
    assert {k: m.boolean_value for k, m in got.items()} == {"Alarms/jam": True,
                                                            "Alarms/door_open": False}
    assert all(not m.is_historical and not m.HasField("properties") for m in got.values())
    assert all(m.timestamp == 1_700_000_000_000 for m in got.values())
    outs = n.live("state", {"name": "producing", "code": 10000, "since_ns": 5_000_000}, 9)
    assert [o.verb for o in outs] == ["DBIRTH", "DDATA"]  # State/* were not born yet
    ms = decode(outs[-1]).metrics
    assert [(names.get(m.alias) or n.alias_names()[m.alias])[1] for m in ms] == [
        "State/Code", "State/Name"]
    assert ms[0].timestamp == 5 and outs[-1].seqs == ()
    # what the next births declare
    born = {m.name: get_value(m) for m in decode(n.births()[1]).metrics}
    assert born["State/Name"] == "producing" and born["Alarms/door_open"] is False
    assert n.live("other", {"x": 1}, 1) == [] and n.live("lamps", "not a map", 1) == []


def test_linelight_figures_are_node_metrics_sent_when_they_change() -> None:
    from linelight.agent.mqtt.sparkplug import DROPPED, OLDEST_AGE, QUEUE_DEPTH

    n = node()
    assert n.figures(120, 3.5, 0) == []  # not born: remembered for the births
    born = {m.name: m for m in decode(n.births()[0]).metrics}
    assert get_value(born[QUEUE_DEPTH]) == 120 and born[QUEUE_DEPTH].datatype == pb.Int64
    assert get_value(born[OLDEST_AGE]) == 3.5 and born[OLDEST_AGE].datatype == pb.Double
    assert get_value(born[DROPPED]) == 0
    (out,) = n.figures(0, 0.0, 0)
    assert out.verb == "NDATA" and out.seqs == ()
    ms = decode(out).metrics
    assert {m.alias for m in ms} == {born[QUEUE_DEPTH].alias, born[OLDEST_AGE].alias}
    assert all(not m.HasField("name") for m in ms)
    assert n.figures(0, 0.0, 0) == []  # no change, no message


def test_an_input_that_is_not_good_says_so_with_the_quality_property() -> None:
    n = node()
    n.births()
    outs = data(n, [rec(1, "signal", "temp", 20.5, {"quality": "good"}),
                    rec(2, "signal", "temp", 20.5, {"quality": "stale"}),
                    rec(3, "signal", "temp", None, {"quality": "bad", "reason": "timeout"})])
    ms = decode(outs[-1]).metrics
    props = [dict(zip(m.properties.keys, m.properties.values, strict=True)) for m in ms]
    assert "Quality" not in props[0]  # GOOD goes without (section 6.4.7.1)
    assert (props[1]["Quality"].type, props[1]["Quality"].int_value) == (pb.Int32, 500)
    assert (props[2]["Quality"].type, props[2]["Quality"].int_value) == (pb.Int32, 0)
    born = {m.name: m for m in decode(n.births()[1]).metrics}["Signals/temp"]
    assert dict(zip(born.properties.keys, born.properties.values,
                    strict=True))["Quality"].int_value == 0  # the latest value is BAD


def test_long_values_make_smaller_packs() -> None:
    from linelight.agent.mqtt.sparkplug import PACK_BYTES

    n = node()
    n.births()
    text = "x" * 5000
    outs = [o for o in data(n, [rec(s, "signal", "note", text) for s in range(1, 40)])
            if o.verb == "DDATA"]
    assert len(outs) > 1 and all(len(o.message.payload) <= PACK_BYTES + 5100 for o in outs)
    assert [s for o in outs for s in o.seqs] == list(range(1, 40))
    big = "y" * (2 * PACK_BYTES)  # one event larger than a pack still goes, alone
    assert [len(o.seqs) for o in data(n, [rec(40, "signal", "note", big)])] == [1]
