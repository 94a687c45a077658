"""The whole agent as a Sparkplug B edge node, as a subprocess, read by an independent host
(tests/agent/mqtt/sparkplug_host.py): kill -9 makes the broker publish the NDEATH will with the
connection's bdSeq; the restart is born with bdSeq + 1 and every committed event reaches the
host, identified by its (agent, seq) properties, in order after dedup."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.agent_proc import AgentProcess, journal_records, write_config
from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber, dedup_in_order
from tests.agent.mqtt.sparkplug_host import Host

pytestmark = pytest.mark.slow

GROUP = "plant-1"
AGENT = "it-press"
SPARKPLUG = f'[mqtt]\ntopic_mode = "sparkplug"\nsparkplug = {{ group_id = "{GROUP}" }}\n'


def sparkplug_config(directory: Path, port: int) -> Path:
    config = write_config(directory, mqtt_port=port, agent_id=AGENT)
    config.write_text(config.read_text().replace("[mqtt]\n", SPARKPLUG, 1))
    return config


def start_connected(agent: AgentProcess, events: int) -> None:
    """Start the agent and wait until it is connected and has committed `events` events."""
    agent.start()
    agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["seq_hwm"] > events,
                      what="connected with some events")


def wait_host(sub: Subscriber | list[Subscriber], done: Callable[[Host], bool], what: str,
              timeout: float = 60.0) -> Host:
    """The host's view once `done`; of `sub`, or of one session's subscribers in turn."""
    subs = sub if isinstance(sub, list) else [sub]
    deadline = time.monotonic() + timeout
    while True:
        host = Host(GROUP, AGENT).feed([m for s in subs for m in s.snapshot()])
        if done(host):
            return host
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout}s; verbs "
                                 f"{host.verbs[-10:]}, problems {host.problems[:3]}")
        time.sleep(0.1)


def clean_stop_seen(host: Host) -> bool:
    """The outage test's end: the clean stop's NDEATH and its will, both bdSeq 1 (an outage's
    will, bdSeq 0, comes earlier: a shutting down mosquitto 2.0 sends it)."""
    return len([d for d in host.deaths if d[0] == 1]) >= 2


def test_kill_9_gives_the_will_and_the_restart_delivers_every_committed_event(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    config = sparkplug_config(tmp_path / "agent", mosquitto.port)
    with AgentProcess(config) as agent:
        start_connected(agent, 80)
        committed = agent.status()["queue"]["seq_hwm"]  # at least these are the first run's
        agent.kill9()
        host = wait_host(sub, lambda h: len(h.deaths) == 1, "the NDEATH will")
        assert host.deaths == [(0, 1)]  # bdSeq of the first connection, QoS 1
        agent.start()
        before = agent.status()["queue"]["seq_hwm"]
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
                          and s["queue"]["seq_hwm"] > before + 20, timeout=90,
                          what="restarted, drained and going on")
        # a long run: seq wraps 255 -> 0 (the host checks +1 per message throughout)
        wait_host(sub, lambda h: h.wraps >= 1, "seq wrapping", timeout=120)
        assert agent.stop() == 0
    left = journal_records(config.parent / "data")
    # The clean stop flushed: everything but rows whose barrier came too late has left.
    host = wait_host(sub, lambda h: len(h.deaths) == 3, "the clean stop's NDEATH and will")
    sent = left[0].seq - 1 if left else max(host.seqs())
    host = wait_host(sub, lambda h: set(range(1, sent + 1)) <= set(h.seqs()),
                     "every committed event")
    assert host.problems == [] and host.wraps >= 1
    nbirths = [b["metrics"]["bdSeq"] for b in host.births if b["verb"] == "NBIRTH"]
    assert nbirths == [0, 1]
    # the will, then the clean stop's NDEATH and (MQTT 5 DISCONNECT 0x04) its will
    assert [d[0] for d in host.deaths] == [0, 1, 1]
    kept = dedup_in_order(host.seqs())
    assert kept[:sent] == list(range(1, sent + 1)), "an event missing or out of order"
    assert {s.agent for s in host.seen} == {AGENT}
    names = {s.name for s in host.seen}
    assert {"State/Code", "State/Name", "linelight/agent event"} <= names, names
    assert any(n.startswith("Lamps/") for n in names) and any(
        n.startswith("Signals/") for n in names), names
    # what the first run committed and the restart sent (the kill left it unconfirmed, or
    # it was never sent) waited through a restart: flagged historical
    assert all(s.historical for s in host.seen if s.bd_seq == 1 and s.seq <= committed)
    assert not host.seen[-1].historical


@pytest.mark.parametrize("host_back", ["by itself", "after the agent stopped"])
def test_a_broker_outage_of_a_running_agent_loses_nothing_backlog_historical(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber], host_back: str) -> None:
    # the host is away while the broker restarts: the broker keeps its QoS 0 messages for it.
    # It comes back by itself (its client retries every 1-2 s: before or after the agent), or
    # only after the agent has stopped (a new client resuming its session), so that the whole
    # second connection waits for it.
    broker = make_mosquitto("queue_qos0_messages true")
    sub = make_subscriber(broker, "spBv1.0/#")
    subs = [sub]
    config = sparkplug_config(tmp_path / "agent", broker.port)
    with AgentProcess(config) as agent:
        start_connected(agent, 50)
        broker.stop()
        if host_back != "by itself":
            sub.stop()
        agent.wait_status(lambda s: not s["broker"]["connected"], what="broker down")
        outage = agent.wait_status(lambda s: s["queue"]["depth"] > 20, what="a backlog")
        broker.start()
        drained = agent.wait_status(
            lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
            and s["queue"]["seq_hwm"] > outage["queue"]["seq_hwm"] + 20,
            timeout=90, what="backlog drained, live again")
        assert agent.stop() == 0
    if host_back != "by itself":
        # what the host saw before it left (the first connection's will among it) must not
        # pass for the end: the test would check a partial view
        assert not clean_stop_seen(Host(GROUP, AGENT).feed(sub.snapshot()))
        subs.append(make_subscriber(broker, "spBv1.0/#", client_id=sub.client_id))
    left = journal_records(config.parent / "data")
    # The host may come back long after the agent stopped (on a loaded machine even when it
    # comes back by itself); the broker queued everything for it meanwhile. So wait for the
    # clean stop's deaths, and count what the agent sent, not what the host has seen so far.
    host = wait_host(subs, clean_stop_seen, "the clean stop's NDEATH and will")
    sent = left[0].seq - 1 if left else max([drained["queue"]["seq_hwm"], *host.seqs()])
    host = wait_host(subs, lambda h: set(range(1, sent + 1)) <= set(h.seqs()),
                     "every committed event")
    assert host.problems == []
    assert [b["metrics"]["bdSeq"] for b in host.births if b["verb"] == "NBIRTH"] == [0, 1]
    assert [d[0] for d in host.deaths][-2:] == [1, 1]  # nothing after the clean stop
    kept = dedup_in_order(host.seqs())
    assert kept[:sent] == list(range(1, sent + 1)), "an event missing or out of order"
    # what queued during the outage came after the new births, flagged historical
    backlog = range(outage["queue"]["seq_hwm"] - outage["queue"]["depth"] + 1,
                    outage["queue"]["seq_hwm"] + 1)
    firsts: dict[int, bool] = {}
    for s in host.seen:
        if s.bd_seq == 1 and s.seq in backlog:
            firsts.setdefault(s.seq, s.historical)
    assert firsts and all(firsts.values())
