"""`linelight status`: a readable summary of the running agent, from its diagnostics endpoint.

Exit codes: 0 healthy, 1 degraded or no agent answering, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from linelight.agent.humanize import format_age

DEFAULT_CONFIG = Path("/etc/linelight/agent.toml")
DEFAULT_URL = "http://127.0.0.1:9750"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help=f"read the diagnostics address from this config "
                             f"(default {DEFAULT_CONFIG} if it exists)")
    parser.add_argument("--url", default=None,
                        help=f"the agent's diagnostics URL (default {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print /status as JSON")


def endpoint(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            listen = data.get("diagnostics", {}).get("listen", [])
            first = listen[0] if isinstance(listen, list) and listen else listen
            if isinstance(first, str) and ":" in first:
                host, _, port = first.rpartition(":")
                host = "127.0.0.1" if host in ("0.0.0.0", "") else host
                host = "[::1]" if host in ("[::]", "::") else host
                return f"http://{host}:{port}"
        except (OSError, tomllib.TOMLDecodeError, AttributeError, IndexError):
            pass
    return DEFAULT_URL


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/status", timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def run(args: argparse.Namespace) -> int:
    url = endpoint(args)
    try:
        status = fetch(url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"linelight status: no agent answers at {url} ({reason}).\n"
              "  Is it running?  systemctl status linelight   /   journalctl -u linelight -e",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(summary(status, url))
    return 0 if status.get("health", {}).get("status") == "ok" else 1


def summary(s: dict[str, Any], url: str) -> str:
    lines: list[str] = []
    health = s.get("health", {})
    lines.append(f"linelight {s.get('version', '?')} · agent {s.get('agent', '?')} · "
                 f"up {format_age(s.get('uptime_s'))} · {url}")
    lines.append(f"health     {health.get('status', '?')}")
    lines += [f"           - {r}" for r in health.get("reasons", [])]
    machines = s.get("machines", {})
    if any(m.get("named") for m in machines.values()):
        lines += _machines(machines)
    else:
        lines += _machine(s)
    q = s.get("queue", {})
    lines.append(f"queue      {q.get('depth', '?')} events, {_bytes(q.get('bytes'))}, oldest "
                 f"{format_age(q.get('oldest_age_s'))}, dropped {q.get('dropped', 0)}, last seq "
                 f"{q.get('seq_hwm', '?')}, boot {q.get('boot', '?')}")
    b = s.get("broker", {})
    if b.get("url"):
        link = "connected" if b.get("connected") else "DISCONNECTED"
        lines.append(f"broker     {link} {b['url']}, {b.get('published', 0)} acknowledged, "
                     f"{b.get('reconnects', 0)} reconnects"
                     + (f"; last error: {b['last_error']}" if b.get("last_error") else ""))
    else:
        lines.append("broker     none configured: events stay queued on disk")
    inputs = s.get("inputs", {})
    if inputs:
        lines.append("inputs")
        width = max(len(n) for n in inputs)
        for name, i in inputs.items():
            extra = f"  {i['reason']}" if i.get("reason") else ""
            lines.append(f"  {name:<{width}}  {str(i.get('value')):>10}  {i.get('quality'):<5}"
                         f"  {format_age(i.get('age_s'))}{extra}")
    rules = s.get("rules", {})
    last = rules.get("last_reload")
    lines.append(f"rules      {rules.get('fingerprint', '?')} from {len(rules.get('files', []))} "
                 f"files" + ("" if not last else
                             f"; last reload {'ok' if last.get('ok') else 'REJECTED'}"))
    scan = s.get("scan", {})
    lines.append(f"scan       every {_ms(scan.get('period_s'))}, last {_ms(scan.get('last_duration_s'))}"
                 f", max {_ms(scan.get('max_duration_s'))}, overruns {scan.get('overruns', 0)}")
    return "\n".join(lines)




def _machine(m: dict[str, Any], indent: str = "") -> list[str]:
    """State, lamps, signals and counters of one machine (the agent's, without machines)."""
    lines: list[str] = []
    state = m.get("state", {})
    pad = " " * len(indent)
    lines.append(f"{indent}state      {state.get('name', '?')} (code {state.get('code', '?')}) "
                 f"for {format_age(state.get('for_s'))}"
                 + (f" - {state['reason']}" if state.get("reason") else ""))
    lit = [f"{lamp} {p}" for lamp, p in m.get("lamps", {}).items() if p != "off"]
    lines.append(f"{pad}lamps      {', '.join(lit) or 'all off'}")
    if m.get("signals"):
        lines.append(f"{pad}signals    {', '.join(m['signals'])}")
    if m.get("counters"):
        lines.append(f"{pad}counters   "
                     + ", ".join(f"{k} = {v}" for k, v in m["counters"].items()))
    return lines


def _machines(machines: dict[str, Any]) -> list[str]:
    """Several machines, one block each, side by side in the order of the config."""
    lines = [f"machines   {len(machines)}"]
    width = max(len(name) for name in machines)
    for name, m in machines.items():
        lines += _machine(m, indent=f"  {name:<{width}}  ")
    return lines


def _ms(seconds: Any) -> str:
    return f"{seconds * 1000:.2f} ms" if isinstance(seconds, int | float) else "-"


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
