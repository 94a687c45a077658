"""Health is composed from the status each part publishes; per-source status reaches /status
and /metrics."""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness.waiting import wait_until
from linelight.agent import health
from linelight.agent.app import Agent
from linelight.agent.config import load_config
from tests.hw.modbus_server import ModbusTestServer

ROOT = Path(__file__).resolve().parents[2]
RULES = '[[state]]\nname = "running"\ncode = 1\npriority = 1\nwhen = true\n'


def _parts(**changes: Any) -> dict[str, Any]:
    """The sections of a healthy agent, as its parts publish them."""
    parts: dict[str, Any] = {
        "state": {"name": "running", "reason": ""},
        "inputs": {"run": {"quality": "good"}},
        "scan": {"healthy": True, "since_last_tick_s": 0.01},
        "queue": {"writer_running": True, "health": "ok", "health_reasons": []},
        "broker": {"url": "mqtt://127.0.0.1:1883", "connected": True, "last_error": None},
        "components": {"forwarder": {"running": True, "restarts": 0, "last_error": ""}},
        "clock": {"synchronized": True, "jumps": 0},
        "rules": {"last_reload": None},
    }
    parts.update(changes)
    return parts


def _texts(parts: dict[str, Any]) -> list[str]:
    return [f.text for f in health.findings(parts)]


def test_a_healthy_set_of_parts_has_no_reasons() -> None:
    assert health.findings(_parts()) == []
    assert health.compose({"agent": "a"}, _parts())["health"] == {
        "status": "ok", "reasons": [], "warnings": []}


@pytest.mark.parametrize(("change", "reason"), [
    ({"scan": None}, "agent: starting"),
    ({"queue": {"writer_running": False, "health": "ok"}}, "journal: the writer is not running"),
    ({"queue": {"writer_running": True, "health": "degraded", "health_reasons": ["disk full"]}},
     "journal: disk full"),
    ({"scan": {"healthy": False, "since_last_tick_s": 3.0}}, "scan: no scan tick for 3.0 s"),
    ({"broker": None}, "broker: none configured ([mqtt] missing), events stay queued on disk"),
    ({"broker": {"url": "mqtt://b:1883", "connected": False, "last_error": "refused"}},
     "broker: not connected to mqtt://b:1883 (refused)"),
    ({"inputs": {"run": {"quality": "stale"}}}, "input: 1 not good (run stale)"),
    ({"components": {"source plc": {"running": False, "restarts": 2, "last_error": "boom"}}},
     "source: source plc failed (boom), restarting"),
    ({"clock": {"synchronized": False}}, "clock: wall clock not synchronized; event timestamps "
                                         "are marked"),
    ({"rules": {"last_reload": {"ok": False}}},
     "rules: the last reload was rejected, the previous rules are running"),
    ({"state": {"name": "unknown", "reason": "run is stale"}}, "state: unknown (run is stale)"),
])
def test_each_part_status_turns_into_its_reason(change: dict[str, Any], reason: str) -> None:
    assert reason in _texts(_parts(**change))


@pytest.mark.parametrize(("change", "status"), [
    ({"scan": {"healthy": False, "since_last_tick_s": 3.0}}, "failed"),
    ({"queue": {"writer_running": False, "health": "ok"}}, "failed"),
    ({"tower": {"lamps": {"red": {"failing": True}}, "last_error": "EIO"}}, "failed"),
    ({"broker": {"url": "mqtt://b:1883", "connected": False, "last_error": "refused"}},
     "degraded"),
    ({"inputs": {"run": {"quality": "stale"}}}, "degraded"),
    ({"state": {"name": "unknown", "reason": "run is stale"}}, "degraded"),
    ({"clock": {"synchronized": False}}, "ok"),
    ({"broker": None}, "ok"),
])
def test_each_reason_has_the_level_an_operator_would_page_on(change: dict[str, Any],
                                                             status: str) -> None:
    assert health.assess(_parts(**change)).status == status


def test_an_install_without_broker_sources_or_synced_clock_is_ok_with_warnings() -> None:
    parts = _parts(broker=None, clock={"synchronized": False},
                   state={"name": "unknown", "reason": "running not yet read"},
                   inputs={"running": {"quality": "missing"}})
    verdict = health.assess(parts)
    assert (verdict.status, verdict.reasons) == ("ok", ())
    assert [w.split(":")[0] for w in verdict.warnings] == ["broker", "input", "clock", "state"]
    assert "running read by the rules but no source delivers them" in verdict.warnings[1]


def test_degraded_on_turns_a_chosen_warning_into_degraded() -> None:
    parts = _parts(broker=None, clock={"synchronized": False})
    verdict = health.assess(parts, degraded_on=("clock",))
    assert verdict.status == "degraded"
    assert verdict.reasons == ("clock: wall clock not synchronized; event timestamps are marked",)
    assert [w.split(":")[0] for w in verdict.warnings] == ["broker"]


def test_health_imports_no_part_of_the_agent() -> None:
    """No circle: app imports health, health imports none of the parts it reports on."""
    tree = ast.parse((ROOT / "agent/health.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m and m.startswith("linelight")], imported


def _config(tmp_path: Path, live: int, dead: int) -> Path:
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "r.toml").write_text(RULES)
    path = tmp_path / "agent.toml"
    path.write_text(f'agent_id = "t"\ndata_dir = "data"\n[diagnostics]\nenabled = false\n'
                    f'[sources.plc]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = {live}\n'
                    f'[sources.plc.inputs]\na = {{ coil = 0 }}\n'
                    f'[sources.gone]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = {dead}\n'
                    f'[sources.gone.inputs]\nb = {{ coil = 0 }}\n'
                    f'[sources.demo]\ntype = "sim"\n[sources.demo.inputs]\n'
                    f'c = {{ wave = "square", period = "1s" }}\n')
    return path


@contextlib.asynccontextmanager
async def agent_with_sources(tmp_path: Path) -> AsyncIterator[Agent]:
    """A running agent with a live Modbus device (`plc`: input a), one nobody listens for
    (`gone`: b) and a simulator (`demo`: c), once both links were tried and the sim ticks."""
    server = ModbusTestServer()
    dead = ModbusTestServer()  # never started: nobody listens on its port
    await server.start()
    try:
        agent = Agent(load_config(_config(tmp_path, server.port, dead.port)),
                      handle_signals=False, watch_files=False)
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)

            def seen() -> bool:
                sources = agent.status()["sources"]
                return (sources["plc"]["link"]["connects"] >= 1
                        and bool(sources["gone"]["link"]["last_error"])
                        and sources["demo"]["ticks"] > 0)

            await wait_until(seen, what="both Modbus links tried and the simulator ticking")
            yield agent
            await agent.stop()
    finally:
        await server.stop()


@pytest.mark.anyio
async def test_status_and_metrics_show_every_source(tmp_path: Path) -> None:
    async with agent_with_sources(tmp_path) as agent:
        status = agent.status()
        metrics = agent.metrics().decode()
    sources = status["sources"]
    assert sources["plc"]["type"] == "modbus_tcp" and sources["plc"]["link"]["connected"]
    assert not sources["gone"]["link"]["connected"]
    assert "connection refused by 127.0.0.1:" in sources["gone"]["link"]["last_error"]
    assert sources["demo"]["type"] == "sim"
    assert 'linelight_source_connected{source="plc"} 1.0' in metrics
    assert 'linelight_source_connected{source="gone"} 0.0' in metrics
    assert 'linelight_source_info{source="demo",type="sim"} 1.0' in metrics
    assert 'linelight_source_ticks_total{source="demo"}' in metrics
    assert 'linelight_source_next_attempt_seconds{source="gone"}' in metrics


@pytest.mark.anyio
async def test_inputs_no_source_delivers_are_listed_missing_and_only_warned(
        tmp_path: Path) -> None:
    """The packaged default: rules that read inputs, no source, no broker: ok with warnings."""
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "r.toml").write_text(
        '[inputs]\nrunning = { type = "bool" }\n'
        '[[state]]\nname = "producing"\ncode = 1\npriority = 1\nwhen = "running"\n')
    path = tmp_path / "agent.toml"
    path.write_text('agent_id = "t"\ndata_dir = "data"\n[diagnostics]\nenabled = false\n')
    agent = Agent(load_config(path), handle_signals=False, watch_files=False)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await wait_until(lambda: agent.status()["scan"]["ticks"] > 0, what="a scan")
        status = agent.status()
        await agent.stop()
    assert status["inputs"]["running"] == {
        "value": None, "quality": "missing", "age_s": None, "source": None,
        "reason": "read by the rules, delivered by no source"}
    assert status["health"]["status"] == "ok" and status["health"]["reasons"] == []
    assert any(w.startswith("input: running read by the rules but no source delivers them")
               for w in status["health"]["warnings"])
    assert any(w.startswith("state: unknown") for w in status["health"]["warnings"])


# One part status per way `health.findings` can speak: every sentence and its level.
EVERY_REASON: list[dict[str, Any]] = [
    {"scan": None},
    {"scan": {"healthy": False, "since_last_tick_s": None}},
    {"scan": {"healthy": False, "since_last_tick_s": 9.0, "last_duration_s": 9.0,
              "stall_limit_s": 1.0}},
    {"scan": {"healthy": False, "since_last_tick_s": 3.0}},
    {"queue": {"writer_running": False, "health": "ok"}},
    {"queue": {"writer_running": True, "health": "degraded", "health_reasons": []}},
    {"queue": {"writer_running": True, "health": "degraded",
               "health_reasons": ["disk_full: 12 events dropped"]}},
    {"broker": None},
    {"broker": {"url": "mqtt://b:1883", "connected": False, "last_error": "refused"}},
    {"inputs": {"run": {"quality": "missing"}}},
    {"inputs": {"run": {"quality": "stale"}}},
    *({"components": {name: {"running": False, "restarts": 1, "last_error": "boom"}}}
      for name in ("source plc", "tower", "outputs", "forwarder", "history", "diagnostics")),
    {"tower": {"lamps": {"red": {"failing": True}}, "last_error": "EIO"}},
    {"output_lines": {"outputs": {"may_start": {"failing": True}}, "last_error": "EIO"}},
    {"clock": {"synchronized": False}},
    {"rules": {"last_reload": {"ok": False}}},
    {"rules": {"last_reload": {"ok": False, "rejected_machines": ["press-2"]}}},
    {"state": {"name": "unknown", "reason": "run is stale"}},
    {"machines": {"press-2": {"named": True, "state": {"name": "unknown", "reason": "x"},
                              "tower": {"lamps": {"red": {"failing": True}},
                                        "last_error": "EIO"},
                              "output_lines": {"outputs": {"horn": {"failing": True}},
                                               "last_error": "EIO"}}}},
]


def _documented_reasons() -> list[tuple[re.Pattern[str], str]]:
    """docs/operations.md's table of health reasons: (what a reason starts with, its level)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("| reason starts with | level |"):].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for written in re.findall(r"`([^`]+)`", cells[0]):
            if ":" not in written:
                continue  # a `warning_name` or log line, not a reason
            pattern = re.escape(written.removesuffix(" ...").removesuffix("..."))
            pattern = re.sub(r"\b(N|M|URL|NAME)\b", r"\\S+", pattern)  # the placeholders
            pattern = pattern.replace(re.escape("(...)"), r"\(.*\)").replace(
                re.escape("..."), ".*").replace(re.escape("(error)"), r"\(.*\)")
            rows.append((re.compile(pattern), cells[1]))
    return rows


@pytest.mark.parametrize("change", EVERY_REASON, ids=lambda c: ",".join(c))
def test_every_reason_is_documented_with_its_level(change: dict[str, Any]) -> None:
    documented = _documented_reasons()
    found = health.findings(_parts(**change))
    assert found, change
    for finding in found:
        levels = [level for pattern, level in documented if pattern.match(finding.text)]
        assert levels, f"'{finding.text}' has no row in docs/operations.md, Health reasons"
        assert any(level.split(" ", 1)[0] == finding.level for level in levels), \
            (finding, levels)
