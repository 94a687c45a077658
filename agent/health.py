"""What the running agent reports: the /status document and its health verdict.

Pure composition: each part publishes its own `status()` (the scan loop, the journal, the
broker link, the sources and tower, the supervisor, the clock, the reloader); `agent.app`
collects them into a mapping of sections and this module derives the verdict from those
sections alone. It knows no part's internals and imports none of them.

The verdict is what an operator would page on: `failed` (the lamps or the queue cannot be
trusted: the scan loop stalled, the journal writer stopped, lamps cannot be written),
`degraded` (something the operator set up is not working: the broker configured but
unreachable, inputs not good, the state unknown, a part restarting, a reload rejected), or
`ok`. A few conditions are normal on a new or deliberately minimal install and are only
*warnings* (`ok` with warnings, `/healthz` still 200): the clock not yet synchronized, no
broker configured, no source configured for the inputs the rules read. `[diagnostics]
degraded_on` turns chosen warnings into degraded.

Each reason starts with the part it concerns (`scan:`, `journal:`, `broker:`, `input:`,
`source:`, `tower:`, `outputs:`, `clock:`, `rules:`, `state:`); docs/operations.md explains every one and
what to do about it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

STALE_NAMES_SHOWN = 5
STARTING = "agent: starting"
NO_TICK_YET = "scan: no scan tick yet"
MISSING = "missing"  # the quality /status shows for an input no source delivers

OK, DEGRADED, FAILED = "ok", "degraded", "failed"
# Warnings by the name `[diagnostics] degraded_on` uses for them.
WARNINGS = {
    "clock": "the wall clock is not synchronized",
    "no_broker": "no [mqtt] broker is configured",
    "no_sources": "no source delivers the inputs the rules read",
}

# Sections of the /status document, in the order it lists them after the agent's identity.
SECTIONS = ("state", "lamps", "signals", "counters", "outputs", "inputs", "scan", "events",
            "sources", "tower", "output_lines", "queue", "broker", "rules", "components", "clock", "diagnostics",
            "machines")
NO_BROKER = {"url": None, "connected": False, "last_error": "no [mqtt] section in the config"}


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # FAILED, DEGRADED, or "warning"
    text: str
    warning: str = ""  # the WARNINGS name, for a warning


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # OK, DEGRADED or FAILED
    reasons: tuple[str, ...]  # why it is not ok
    warnings: tuple[str, ...]  # worth knowing, not worth paging for

    @property
    def ok(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons),
                "warnings": list(self.warnings)}


def assess(parts: Mapping[str, Any], degraded_on: Collection[str] = ()) -> Verdict:
    """The verdict from the parts' status sections; `degraded_on` names warnings that count
    as degraded here."""
    found = findings(parts)
    levels = [DEGRADED if f.warning in degraded_on else f.level for f in found]
    status = FAILED if FAILED in levels else DEGRADED if DEGRADED in levels else OK
    return Verdict(status,
                   tuple(f.text for f, lv in zip(found, levels, strict=True) if lv != "warning"),
                   tuple(f.text for f, lv in zip(found, levels, strict=True) if lv == "warning"))


def findings(parts: Mapping[str, Any]) -> list[Finding]:
    """Every reason the agent is not plainly ok, each with its level."""
    scan, queue = parts.get("scan"), parts.get("queue")
    if scan is None or queue is None:
        return [Finding(DEGRADED, STARTING)]
    out = [Finding(DEGRADED if text == NO_TICK_YET else FAILED, text) for text in _scan(scan)]
    if not queue["writer_running"]:
        out.append(Finding(FAILED, "journal: the writer is not running"))
    if queue["health"] != "ok":
        out += [Finding(DEGRADED, f"journal: {r}") for r in queue.get("health_reasons", ())] \
            or [Finding(DEGRADED, "journal: degraded")]
    out += _broker(parts.get("broker") or NO_BROKER)
    inputs = parts.get("inputs", {})
    missing = sorted(n for n, i in inputs.items() if i["quality"] == MISSING)
    if missing:
        out.append(Finding("warning", f"input: {_names(missing)} read by the rules but no "
                                      "source delivers them (add [sources.*])", "no_sources"))
    out += _inputs({n: i for n, i in inputs.items() if i["quality"] != MISSING})
    for name, comp in parts.get("components", {}).items():
        if not comp["running"] and comp["restarts"]:
            out.append(Finding(DEGRADED, f"{name.split(' ', 1)[0]}: {name} failed "
                                         f"({comp['last_error']}), restarting"))
    machines = parts.get("machines") or {}
    named = any(m.get("named") for m in machines.values())
    tower = parts.get("tower")
    if tower is not None and not named:  # with machines: each machine's tower, named below
        failing = [lamp for lamp, st in tower["lamps"].items() if st["failing"]]
        if failing:
            out.append(Finding(FAILED, f"tower: cannot write lamps {', '.join(failing)} "
                                       f"({tower['last_error']})"))
    lines = parts.get("output_lines")
    if lines is not None and not named:
        out += _failing_outputs("outputs", lines)
    if not parts.get("clock", {}).get("synchronized", True):
        out.append(Finding("warning", "clock: wall clock not synchronized; event timestamps "
                                      "are marked", "clock"))
    last = (parts.get("rules") or {}).get("last_reload")
    if last is not None and not last["ok"]:
        machines_kept = last.get("rejected_machines") or []
        out.append(Finding(DEGRADED, "rules: the last reload was rejected, the previous rules "
                                     "are running" if not machines_kept else
                           f"rules: the last reload was rejected for machine "
                           f"{', '.join(machines_kept)}: its previous rules are running, the "
                           "other machines reloaded"))
    state = parts.get("state") or {}
    if not named and state.get("name") == "unknown":
        # Without any source for its inputs the state cannot be known: part of that warning.
        level, kind = ("warning", "no_sources") if missing else (DEGRADED, "")
        out.append(Finding(level, "state: unknown ("
                           f"{state.get('reason') or 'inputs missing, stale or not yet read'})",
                           kind))
    return out + _machines(machines)


def _machines(machines: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """Several machines: each one's unknown state and failing lamps, naming the machine."""
    out: list[Finding] = []
    for name, m in machines.items():
        if not m.get("named"):
            continue
        state = m.get("state") or {}
        if state.get("name") == "unknown":
            reason = state.get("reason") or "inputs missing, stale or not yet read"
            out.append(Finding(DEGRADED, f"machine {name}: state unknown ({reason})"))
        tower = m.get("tower")
        failing = [lamp for lamp, st in (tower or {}).get("lamps", {}).items() if st["failing"]]
        if failing:
            out.append(Finding(FAILED, f"machine {name}: tower cannot write lamps "
                                       f"{', '.join(failing)} "
                                       f"({tower['last_error'] if tower else ''})"))
        if m.get("output_lines"):
            out += _failing_outputs(f"machine {name}: outputs", m["output_lines"])
    return out


def _failing_outputs(prefix: str, lines: Mapping[str, Any]) -> list[Finding]:
    """Outputs the [[output]] rules drive that cannot be written: failed, like lamps."""
    failing = [name for name, st in lines["outputs"].items() if st["failing"]]
    if not failing:
        return []
    return [Finding(FAILED, f"{prefix}: cannot write {', '.join(failing)} "
                            f"({lines['last_error']})")]


def _scan(scan: Mapping[str, Any]) -> list[str]:
    if scan["healthy"]:
        return []
    since = scan.get("since_last_tick_s")
    took = scan.get("last_duration_s") or 0.0
    if since is None:
        return [NO_TICK_YET]  # starting: degraded, not failed
    if took >= scan.get("stall_limit_s", float("inf")):
        return [f"scan: the last scan took {took:.1f} s (the rules are too slow)"]
    return [f"scan: no scan tick for {since:.1f} s"]


def _broker(broker: Mapping[str, Any]) -> list[Finding]:
    if broker.get("url") is None:
        return [Finding("warning", "broker: none configured ([mqtt] missing), events stay "
                                   "queued on disk", "no_broker")]
    if broker["connected"]:
        return []
    err = broker.get("last_error")
    return [Finding(DEGRADED, f"broker: not connected to {broker['url']}"
                    + (f" ({err})" if err else ""))]


def _names(names: list[str]) -> str:
    more = f" and {len(names) - STALE_NAMES_SHOWN} more" if len(names) > STALE_NAMES_SHOWN else ""
    return ", ".join(names[:STALE_NAMES_SHOWN]) + more


def _inputs(inputs: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    bad = [f"{name} {i['quality']}" for name, i in inputs.items() if i["quality"] != "good"]
    if not bad:
        return []
    return [Finding(DEGRADED, f"input: {len(bad)} not good ({_names(bad)})")]


def compose(identity: Mapping[str, Any], parts: Mapping[str, Any],
            degraded_on: Collection[str] = ()) -> dict[str, Any]:
    """The /status document: the agent's identity, its health, then each part's section."""
    doc: dict[str, Any] = {**identity, "health": assess(parts, degraded_on).as_dict()}
    for section in SECTIONS:
        if parts.get(section) is not None:
            doc[section] = parts[section]
    doc.setdefault("broker", dict(NO_BROKER))
    return doc
