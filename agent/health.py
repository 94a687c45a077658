"""What the running agent reports: the /status document and the /healthz reasons.

Each health reason starts with the part it concerns (`scan:`, `journal:`, `broker:`,
`input:`, `source:`, `tower:`, `clock:`, `rules:`, `state:`); docs/operations.md explains
every one and what to do about it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linelight.agent.app import Agent

STALE_NAMES_SHOWN = 5


def reasons(agent: Agent) -> list[str]:
    out: list[str] = []
    scan, journal = agent.scan, agent.journal
    if scan is None or journal is None:
        return ["agent: starting"]
    if not scan.healthy():
        out.append(f"scan: no scan tick for {time.monotonic() - scan.stats.last_tick:.1f} s")
    if not agent._journal_running:
        out.append("journal: the writer is not running")
    jh = journal.health
    if not jh.ok:
        out += [f"journal: {r}" for r in jh.reasons] or ["journal: degraded"]
    if agent.config.mqtt is None:
        out.append("broker: none configured ([mqtt] missing), events stay queued on disk")
    elif agent.forwarder is not None and not agent.forwarder.link.connected:
        err = agent.forwarder.link.last_error
        out.append(f"broker: not connected to {agent.config.mqtt.broker}"
                   + (f" ({err})" if err else ""))
    bad = [(n, s) for n, s in scan.view.snapshot.items() if not s.quality.usable]
    if bad:
        names = ", ".join(f"{n} {s.quality.value}" for n, s in bad[:STALE_NAMES_SHOWN])
        more = f" and {len(bad) - STALE_NAMES_SHOWN} more" if len(bad) > STALE_NAMES_SHOWN else ""
        out.append(f"input: {len(bad)} not good ({names}{more})")
    for name, comp in agent.supervisor.components.items():
        if not comp.running and comp.restarts:
            out.append(f"{_part(name)}: {name} failed ({comp.last_error}), restarting")
    hw = agent.hardware
    if hw is not None and hw.stacklight is not None:
        lamps: Any = hw.stacklight.status()["lamps"]
        failing = [lamp for lamp, st in lamps.items() if st["failing"]]
        if failing:
            out.append(f"tower: cannot write lamps {', '.join(failing)} "
                       f"({hw.stacklight.last_error})")
    if not agent.clock.synchronized:
        out.append("clock: wall clock not synchronized; event timestamps are marked")
    if agent.reloader is not None and agent.reloader.last is not None and not agent.reloader.last.ok:
        out.append("rules: the last reload was rejected, the previous rules are running")
    if scan.view.state == "unknown":
        out.append(f"state: unknown ({scan.view.reason or 'inputs missing, stale or not yet read'})")
    return out


def _part(component: str) -> str:
    return component.split(" ", 1)[0]


def status(agent: Agent) -> dict[str, Any]:
    now = time.monotonic()
    cfg = agent.config
    ok, found = agent.health()
    doc: dict[str, Any] = {
        "agent": cfg.agent_id,
        "version": agent.version,
        "pid": _pid(),
        "config": str(cfg.path),
        "config_fingerprint": cfg.fingerprint,
        "started_ns": agent.started_ns,
        "uptime_s": round(now - agent.started_mono, 3),
        "ready": agent.ready,
        "health": {"status": "ok" if ok else "degraded", "reasons": found},
    }
    scan = agent.scan
    if scan is not None:
        v = scan.view
        doc["state"] = {"name": v.state, "code": v.code, "since_ns": v.state_since_ns,
                        "for_s": round(now - v.state_since_mono, 3), "reason": v.reason}
        doc["lamps"] = {lamp: p.value for lamp, p in v.lamps.items()}
        doc["signals"] = list(v.signals)
        doc["counters"] = dict(v.counters)
        doc["inputs"] = {
            name: {"value": s.value, "quality": s.quality.value,
                   "age_s": round(now - s.at, 3) if s.at else None, "reason": s.reason}
            for name, s in sorted(v.snapshot.items())}
        st = scan.stats
        doc["scan"] = {"period_s": scan.period, "ticks": st.ticks, "overruns": st.overruns,
                       "skipped": st.skipped, "last_duration_s": st.last_duration,
                       "max_duration_s": st.max_duration}
        doc["events"] = {"submitted": st.events}
    hw = agent.hardware
    if hw is not None and hw.stacklight is not None:
        doc["tower"] = hw.stacklight.status()
    journal = agent.journal
    if journal is not None:
        q = journal.stats()
        wall = time.time_ns()
        doc["queue"] = {
            "depth": q.depth + q.pending, "committed": q.depth, "pending": q.pending,
            "bytes": q.bytes, "file_bytes": q.file_bytes,
            "oldest_seq": q.oldest_seq, "newest_seq": q.newest_seq, "seq_hwm": q.seq_hwm,
            "oldest_age_s": round((wall - q.oldest_enq_ns) / 1e9, 3) if q.oldest_enq_ns else 0.0,
            "dropped": q.dropped, "gaps": q.gaps, "dead_letters": q.dead_letters,
            "recovered": q.recovered, "boot": q.boot, "health": str(q.health),
            "path": str(cfg.journal_path)}
    fwd = agent.forwarder
    if fwd is not None:
        link = fwd.link
        doc["broker"] = {"url": link.broker, "connected": link.connected,
                         "last_error": link.last_error, "connects": link.connects,
                         "reconnects": link.reconnects, "published": link.acked,
                         "sent": link.published, "in_flight": link.in_flight,
                         "dead_letters": link.dead_letters,
                         "connected_for_s": round(now - link.connected_since, 3)
                         if link.connected and link.connected_since else None}
    else:
        doc["broker"] = {"url": None, "connected": False,
                         "last_error": "no [mqtt] section in the config"}
    if agent.reloader is not None:
        doc["rules"] = agent.reloader.status()
    doc["components"] = {
        name: {"running": c.running, "restarts": c.restarts, "last_error": c.last_error}
        for name, c in agent.supervisor.components.items()}
    doc["clock"] = {"synchronized": agent.clock.synchronized, "jumps": agent.clock.jumps}
    if agent.diagnostics is not None:
        doc["diagnostics"] = {"listen": [f"{h}:{p}" for h, p in agent.diagnostics.bound],
                              "refused": agent.diagnostics.refused}
    return doc


def _pid() -> int:
    import os

    return os.getpid()
