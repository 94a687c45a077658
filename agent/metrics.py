"""Prometheus metrics through prometheus-client, on a registry of our own (no global state).

The scan loop observes its own duration into a histogram; everything else (queue, broker,
inputs, sources, components) is read from the agent's status at scrape time by a custom
collector, so there is one source of truth for `/status` and `/metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

StatusFn = Callable[[], Mapping[str, Any]]


class Metrics:
    """The agent's metrics registry. `render()` gives the exposition text."""

    def __init__(self, status: StatusFn) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.scan_duration = Histogram(
            "linelight_scan_duration_seconds",
            "Time one scan tick took: snapshot, rules, tower.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self.registry.register(_StatusCollector(status))

    def observe_scan(self, seconds: float) -> None:
        self.scan_duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _num(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return 0.0


class _StatusCollector(Collector):
    def __init__(self, status: StatusFn) -> None:
        self._status = status

    def describe(self) -> Iterator[Any]:
        return iter(())  # values are produced at scrape time only

    def collect(self) -> Iterator[Any]:
        s = self._status()
        info = InfoMetricFamily("linelight_agent", "Agent identity.")
        info.add_metric([], {"agent": str(s.get("agent", "")), "version": str(s.get("version", "")),
                             "rules": str(s.get("rules", {}).get("fingerprint", ""))})
        yield info
        yield _gauge("linelight_up_seconds", "Seconds since the agent started.", s.get("uptime_s"))
        yield _gauge("linelight_healthy", "1 when /healthz says ok, 0 when degraded.",
                     s.get("health", {}).get("status") == "ok")
        yield from _machines(s)

        scan = s.get("scan", {})
        yield _counter("linelight_scan_ticks", "Scan ticks run.", scan.get("ticks"))
        yield _counter("linelight_scan_overruns", "Scan ticks that took longer than the period.",
                       scan.get("overruns"))
        yield _counter("linelight_scan_skipped", "Scan periods skipped to catch up after overruns "
                       "(late scans: the lamps followed the machine late).", scan.get("skipped"))
        yield _counter("linelight_lamp_holds", "Tower commands held until a new latch was "
                       "committed.", scan.get("lamp_holds"))
        yield _counter("linelight_lamp_hold_timeouts", "Held tower commands shown after the "
                       "bound without the latch committed.", scan.get("lamp_hold_timeouts"))
        yield _counter("linelight_lamp_hold_refused", "Held tower commands shown at once "
                       "because the journal refused to store the latch.",
                       scan.get("lamp_hold_refused"))

        q = s.get("queue", {})
        yield _gauge("linelight_queue_depth", "Events waiting in the on-disk queue.", q.get("depth"))
        yield _gauge("linelight_queue_bytes", "Bytes of queued events.", q.get("bytes"))
        yield _gauge("linelight_queue_oldest_age_seconds", "Age of the oldest queued event.",
                     q.get("oldest_age_s"))
        yield _counter("linelight_events_dropped", "Events dropped by queue limits.",
                       q.get("dropped"))
        yield _counter("linelight_events_submitted", "Events handed to the journal.",
                       s.get("events", {}).get("submitted"))

        b = s.get("broker", {})
        yield _gauge("linelight_broker_connected", "1 while the MQTT link is up.",
                     b.get("connected"))
        yield _counter("linelight_broker_reconnects", "MQTT reconnects.", b.get("reconnects"))
        yield _counter("linelight_published", "Events acknowledged by the broker (PUBACK).",
                       b.get("published"))

        by_quality = GaugeMetricFamily("linelight_inputs", "Inputs by quality.", labels=["quality"])
        counts: dict[str, int] = {"good": 0, "stale": 0, "bad": 0, "init": 0}
        for entry in s.get("inputs", {}).values():
            quality = str(entry.get("quality", "init"))
            counts[quality] = counts.get(quality, 0) + 1
        for quality, n in counts.items():
            by_quality.add_metric([quality], n)
        yield by_quality

        restarts = CounterMetricFamily("linelight_component_restarts",
                                       "Restarts of a supervised component.", labels=["component"])
        for name, comp in s.get("components", {}).items():
            restarts.add_metric([name], _num(comp.get("restarts")))
        yield restarts

        yield from _sources(s.get("sources", {}))

        clock = s.get("clock", {})
        yield _gauge("linelight_clock_synchronized", "1 when the wall clock is synchronized.",
                     clock.get("synchronized"))
        yield _counter("linelight_clock_jumps", "Wall-clock jumps seen.", clock.get("jumps"))


def _machines(s: Mapping[str, Any]) -> Iterator[Any]:
    """Per-machine series with a `machine` label (the agent id for a config without
    [machines.*]): state code, lamps lit, counter totals, the machine's rules (a reload that
    rejected one machine's file leaves that machine's old fingerprint), its tower's failed
    lamp writes, its outputs on and their failed writes."""
    machines = s.get("machines") or {str(s.get("agent", "")): s}
    code = GaugeMetricFamily("linelight_state_code", "Numeric code of the machine's current "
                             "state.", labels=["machine"])
    lamp = GaugeMetricFamily("linelight_lamp_lit", "1 while the lamp shows anything but off.",
                             labels=["machine", "lamp"])
    count = CounterMetricFamily("linelight_machine_count", "A rule counter's total.",
                                labels=["machine", "counter"])
    rules = InfoMetricFamily("linelight_machine_rules", "The rules a machine runs.",
                             labels=["machine"])
    failures = CounterMetricFamily("linelight_tower_write_failures", "Lamp writes of the "
                                   "machine's tower that failed.", labels=["machine"])
    output = GaugeMetricFamily("linelight_output_on", "1 while an [[output]] rule has its "
                               "output on.", labels=["machine", "output"])
    output_failures = CounterMetricFamily("linelight_output_write_failures", "Failed writes "
                                          "of an [[output]] rule's line, coil or bit.",
                                          labels=["machine", "output"])
    for name, m in machines.items():
        code.add_metric([name], _num((m.get("state") or {}).get("code")))
        for lamp_name, pattern in (m.get("lamps") or {}).items():
            lamp.add_metric([name, lamp_name], 0.0 if pattern == "off" else 1.0)
        for counter, total in (m.get("counters") or {}).items():
            count.add_metric([name, counter], _num(total))
        machine_rules = m.get("rules")
        if isinstance(machine_rules, Mapping) and machine_rules.get("fingerprint"):
            rules.add_metric([name], {"rules": str(machine_rules["fingerprint"])})
        tower = m.get("tower")
        if isinstance(tower, Mapping):
            failures.add_metric([name], _num(tower.get("write_failures")))
        for output_name, on in (m.get("outputs") or {}).items():
            output.add_metric([name, output_name], 1.0 if on else 0.0)
        for output_name, line in ((m.get("output_lines") or {}).get("outputs") or {}).items():
            output_failures.add_metric([name, output_name], _num(line.get("failures")))
    yield from (code, lamp, count, rules, failures, output, output_failures)


def _sources(sources: Mapping[str, Mapping[str, Any]]) -> Iterator[Any]:
    """Per-source series with a `source` label, from each source's own status(): every source
    has an info series; Modbus its link; GPIO its edges; the simulator its ticks."""
    info = GaugeMetricFamily("linelight_source_info", "A configured input source (value 1).",
                             labels=["source", "type"])
    connected = GaugeMetricFamily("linelight_source_connected",
                                  "1 while the source's device link is up.", labels=["source"])
    connects = CounterMetricFamily("linelight_source_connects",
                                   "Successful connections to the device.", labels=["source"])
    failures = CounterMetricFamily("linelight_source_failures",
                                   "Failed requests and connection attempts.", labels=["source"])
    next_attempt = GaugeMetricFamily("linelight_source_next_attempt_seconds",
                                     "Seconds until the next connection attempt (0: now or "
                                     "connected).", labels=["source"])
    polls = CounterMetricFamily("linelight_source_polls", "Poll rounds run.", labels=["source"])
    edges = CounterMetricFamily("linelight_source_edges", "Line edges seen.", labels=["source"])
    ticks = CounterMetricFamily("linelight_source_ticks", "Simulator updates.", labels=["source"])
    for name, st in sources.items():
        info.add_metric([name, str(st.get("type", ""))], 1.0)
        link = st.get("link")
        if isinstance(link, Mapping):
            connected.add_metric([name], _num(link.get("connected")))
            connects.add_metric([name], _num(link.get("connects")))
            failures.add_metric([name], _num(link.get("failures")))
            next_attempt.add_metric([name], _num(link.get("next_attempt_in")))
        for family, key in ((polls, "polls"), (edges, "edges"), (ticks, "ticks")):
            if key in st:
                family.add_metric([name], _num(st[key]))
    yield from (info, connected, connects, failures, next_attempt, polls, edges, ticks)


def _gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=_num(value))


def _counter(name: str, doc: str, value: Any) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=_num(value))
