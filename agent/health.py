"""What the running agent reports: the /status document and the /healthz reasons.

Pure composition: each part publishes its own `status()` (the scan loop, the journal, the
broker link, the sources and tower, the supervisor, the clock, the reloader); `agent.app`
collects them into a mapping of sections and this module derives the health verdict from
those sections alone. It knows no part's internals and imports none of them.

Each health reason starts with the part it concerns (`scan:`, `journal:`, `broker:`,
`input:`, `source:`, `tower:`, `clock:`, `rules:`, `state:`); docs/operations.md explains
every one and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STALE_NAMES_SHOWN = 5
STARTING = "agent: starting"

# Sections of the /status document, in the order it lists them after the agent's identity.
SECTIONS = ("state", "lamps", "signals", "counters", "inputs", "scan", "events", "sources",
            "tower", "queue", "broker", "rules", "components", "clock", "diagnostics",
            "machines")
NO_BROKER = {"url": None, "connected": False, "last_error": "no [mqtt] section in the config"}


def reasons(parts: Mapping[str, Any]) -> list[str]:
    """Why the agent is not `ok`, from the parts' status sections; empty when it is."""
    scan, queue = parts.get("scan"), parts.get("queue")
    if scan is None or queue is None:
        return [STARTING]
    out: list[str] = []
    if not scan["healthy"]:
        since = scan.get("since_last_tick_s")
        took = scan.get("last_duration_s") or 0.0
        if since is None:
            out.append("scan: no scan tick yet")
        elif took >= scan.get("stall_limit_s", float("inf")):
            out.append(f"scan: the last scan took {took:.1f} s (the rules are too slow)")
        else:
            out.append(f"scan: no scan tick for {since:.1f} s")
    if not queue["writer_running"]:
        out.append("journal: the writer is not running")
    if queue["health"] != "ok":
        out += [f"journal: {r}" for r in queue.get("health_reasons", ())] or ["journal: degraded"]
    out += _broker(parts.get("broker") or NO_BROKER)
    out += _inputs(parts.get("inputs", {}))
    for name, comp in parts.get("components", {}).items():
        if not comp["running"] and comp["restarts"]:
            out.append(f"{name.split(' ', 1)[0]}: {name} failed ({comp['last_error']}), "
                       "restarting")
    machines = parts.get("machines") or {}
    named = any(m.get("named") for m in machines.values())
    tower = parts.get("tower")
    if tower is not None and not named:  # with machines: each machine's tower, named below
        failing = [lamp for lamp, st in tower["lamps"].items() if st["failing"]]
        if failing:
            out.append(f"tower: cannot write lamps {', '.join(failing)} ({tower['last_error']})")
    if not parts.get("clock", {}).get("synchronized", True):
        out.append("clock: wall clock not synchronized; event timestamps are marked")
    last = (parts.get("rules") or {}).get("last_reload")
    if last is not None and not last["ok"]:
        out.append("rules: the last reload was rejected, the previous rules are running")
    state = parts.get("state") or {}
    if not named and state.get("name") == "unknown":
        out.append(f"state: unknown ({state.get('reason') or 'inputs missing, stale or not yet read'})")
    return out + _machines(machines)


def _machines(machines: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Several machines: each one's unknown state and failing lamps, naming the machine."""
    out: list[str] = []
    for name, m in machines.items():
        if not m.get("named"):
            continue
        state = m.get("state") or {}
        if state.get("name") == "unknown":
            reason = state.get("reason") or "inputs missing, stale or not yet read"
            out.append(f"machine {name}: state unknown ({reason})")
        tower = m.get("tower")
        failing = [lamp for lamp, st in (tower or {}).get("lamps", {}).items() if st["failing"]]
        if failing:
            out.append(f"machine {name}: tower cannot write lamps {', '.join(failing)} "
                       f"({tower['last_error'] if tower else ''})")
    return out


def _broker(broker: Mapping[str, Any]) -> list[str]:
    if broker.get("url") is None:
        return ["broker: none configured ([mqtt] missing), events stay queued on disk"]
    if broker["connected"]:
        return []
    err = broker.get("last_error")
    return [f"broker: not connected to {broker['url']}" + (f" ({err})" if err else "")]


def _inputs(inputs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    bad = [(name, i["quality"]) for name, i in inputs.items() if i["quality"] != "good"]
    if not bad:
        return []
    names = ", ".join(f"{n} {q}" for n, q in bad[:STALE_NAMES_SHOWN])
    more = f" and {len(bad) - STALE_NAMES_SHOWN} more" if len(bad) > STALE_NAMES_SHOWN else ""
    return [f"input: {len(bad)} not good ({names}{more})"]


def compose(identity: Mapping[str, Any], parts: Mapping[str, Any]) -> dict[str, Any]:
    """The /status document: the agent's identity, its health, then each part's section."""
    found = reasons(parts)
    doc: dict[str, Any] = {**identity,
                           "health": {"status": "degraded" if found else "ok", "reasons": found}}
    for section in SECTIONS:
        if parts.get(section) is not None:
            doc[section] = parts[section]
    doc.setdefault("broker", dict(NO_BROKER))
    return doc
