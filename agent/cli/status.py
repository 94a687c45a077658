"""`linelight status`: a readable summary of the running agent, from its diagnostics endpoint.

With `--config` (or the default config) it reads the diagnostics address and token from that
file, sends the token (needed when `allow_remote` makes /status ask for it), and checks that the
agent answering is the one that config names: another agent holding the port is an error, not
its status (with `--url` too: then only its agent_id, the config may be a copy of another
machine's). Exit codes: 0 ok (warnings allowed), 1 degraded, failed, not answering or another
agent, 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from linelight.agent.addresses import DEFAULT_LISTEN
from linelight.agent.cli import DEFAULT_CONFIG
from linelight.agent.cli.credentials import credentials_directory
from linelight.agent.diagnostics_config import (
    DiagnosticsSettings,
    Identity,
    default_agent_id,
    read_identity,
)
from linelight.agent.humanize import format_age
from linelight.rules.errors import ConfigProblems

DEFAULT_URL = f"http://{DEFAULT_LISTEN[0]}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help=f"read the diagnostics address and token from this config "
                             f"(default {DEFAULT_CONFIG} if it exists)")
    parser.add_argument("--url", default=None,
                        help=f"the agent's diagnostics URL or host:port (default {DEFAULT_URL})")
    parser.add_argument("--credentials-dir", type=Path, default=None,
                        help="where the config's $CREDENTIALS_DIRECTORY files are (default: "
                             "as the installed unit's LoadCredential= loads them)")
    parser.add_argument("--json", action="store_true", help="print /status as JSON")


class StatusError(Exception):
    """Why no status could be shown: one sentence for stderr."""


def normalize_url(text: str) -> str:
    """`host:port`, `[::1]:port`, `::1:port` or a full URL -> an http URL without a trailing
    slash."""
    url = text.strip().rstrip("/")
    if "://" in url:
        return url
    host, _, port = url.rpartition(":")
    if host.count(":") >= 1 and not host.startswith("[") and port.isdigit():
        url = f"[{host}]:{port}"  # an IPv6 address written without brackets
    return f"http://{url}"


def read_config(path: Path | None) -> Identity:
    """The agent id and `[diagnostics]` of the config, read by the agent's own readers, without
    the rules and sources (status must work while they are bad); the defaults without one."""
    if path is None:
        return Identity(default_agent_id(), DiagnosticsSettings())
    try:
        return read_identity(Path(path))
    except ConfigProblems as exc:
        raise StatusError(f"cannot read the config {path}: {exc}") from None


def config_path(args: argparse.Namespace) -> Path | None:
    default = Path(DEFAULT_CONFIG)
    return args.config or (default if default.exists() else None)


def endpoint(args: argparse.Namespace, identity: Identity | None = None) -> str:
    if args.url:
        return normalize_url(str(args.url))
    identity = read_config(config_path(args)) if identity is None else identity
    host, port = identity.diagnostics.listen[0]
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def read_token(identity: Identity) -> tuple[str | None, str]:
    """The diagnostics token the config names (None if none) and where it came from."""
    from linelight.agent.secrets import resolve_secret_path
    from linelight.rules.errors import ConfigError

    spec = identity.diagnostics.token_file
    if spec is None:
        return None, ""
    try:
        file = resolve_secret_path(str(spec), "token_file")
        return file.read_text(encoding="utf-8").strip(), str(file)
    except ConfigError as exc:
        raise StatusError(str(exc)) from None
    except OSError as exc:
        raise StatusError(f"cannot read the diagnostics token_file {spec}: "
                          f"{exc.strerror or exc}") from None


def fetch(url: str, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url + "/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def check_identity(status: dict[str, Any], identity: Identity, path: Path, url: str,
                   *, here: bool = True) -> None:
    """The agent answering must be the one `path` configures, not another holding the port.
    `here`: the agent runs on this machine, so its config file must be `path` too (with
    `--url` it may be another machine's, read from a copy: only the agent_id is compared)."""
    expected = identity.agent_id  # as the agent names itself (the host name when not set)
    answered, its_config = status.get("agent"), str(status.get("config", ""))
    same_file = False
    with contextlib.suppress(OSError):
        same_file = os.path.samefile(its_config, path)
    if answered != expected or (here and Path(its_config).is_absolute() and not same_file):
        raise StatusError(f"the agent answering at {url} is agent '{answered}' with config "
                          f"{its_config or '?'}, not agent '{expected}' of {path}: another "
                          "agent holds that diagnostics port (is this agent running? "
                          "journalctl -u linelight -e)")


def run(args: argparse.Namespace) -> int:
    try:
        with credentials_directory(args.credentials_dir):
            return _run(args)
    except StatusError as exc:
        print(f"linelight status: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    path = config_path(args)
    identity = read_config(path)
    url = endpoint(args, identity)
    token, token_from = read_token(identity)
    try:
        status = fetch(url, token)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        exc.close()
        if exc.code in (401, 403):
            raise StatusError(f"the agent at {url} refused /status: {body}"
                              + (f" (sent the token from {token_from})" if token else
                                 " (give --config with the token_file it uses)")) from None
        raise StatusError(f"the agent at {url} answered {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"no agent answers at {url} ({reason}).\n"
                          "  Is it running?  systemctl status linelight   /   "
                          "journalctl -u linelight -e") from None
    if path is not None and (args.config is not None or not args.url):
        check_identity(status, identity, path, url, here=not args.url)  # --url alone: any agent
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
    warnings = health.get("warnings", [])
    lines.append(f"health     {health.get('status', '?')}"
                 + (f" with {len(warnings)} warning{'s' * (len(warnings) != 1)}"
                    if warnings else ""))
    b = s.get("broker", {})
    for reason in health.get("reasons", []):
        if reason.startswith("broker: not connected") and b.get("last_error"):
            reason = "broker: not connected (why: see broker below)"  # its error, said once
        lines.append(f"           - {reason}")
    lines += [f"           - warning: {w}" for w in warnings]
    machines = s.get("machines", {})
    if any(m.get("named") for m in machines.values()):
        lines += _machines(machines)
    else:
        lines += _machine(s)
    q = s.get("queue", {})
    lines.append(f"queue      {q.get('depth', '?')} events, {_bytes(q.get('bytes'))}, oldest "
                 f"{format_age(q.get('oldest_age_s'))}, dropped {q.get('dropped', 0)}, last seq "
                 f"{q.get('seq_hwm', '?')}, boot {q.get('boot', '?')}")
    if b.get("url"):
        link = "connected" if b.get("connected") else "DISCONNECTED"
        lines.append(f"broker     {link} {b['url']}, {b.get('published', 0)} acknowledged, "
                     f"{b.get('reconnects', 0)} reconnects"
                     + (f"; last error: {b['last_error']}" if b.get("last_error") else ""))
    else:
        lines.append("broker     none configured: events stay queued on disk")
    lines += _inputs(s.get("inputs", {}))
    rules = s.get("rules", {})
    last = rules.get("last_reload")
    kept = ", ".join(last.get("rejected_machines") or []) if last else ""
    lines.append(f"rules      {rules.get('fingerprint', '?')} from {len(rules.get('files', []))} "
                 f"files" + ("" if not last else
                             f"; last reload {'ok' if last.get('ok') else 'REJECTED'}")
                 + (f" for machine {kept} (its old rules run, the others reloaded)"
                    if kept else ""))
    scan = s.get("scan", {})
    lines.append(f"scan       every {_ms(scan.get('period_s'))}, last {_ms(scan.get('last_duration_s'))}"
                 f", max {_ms(scan.get('max_duration_s'))}, overruns {scan.get('overruns', 0)}")
    return "\n".join(lines)




def _inputs(inputs: dict[str, Any]) -> list[str]:
    """One aligned row per input: name, value (`-` never read), quality, age, source, why."""
    if not inputs:
        return []
    rows = [(str(name), "-" if i.get("value") is None else str(i["value"]),
             str(i.get("quality", "?")), format_age(i.get("age_s")),
             str(i.get("source") or "-"), str(i.get("reason") or ""))
            for name, i in inputs.items()]
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    out = ["inputs"]
    for row in rows:
        cells = [cell.rjust(w) if c == 1 else cell.ljust(w)
                 for c, (cell, w) in enumerate(zip(row[:5], widths, strict=True))]
        out.append(("  " + "  ".join(cells) + "  " + row[5]).rstrip())
    return out


def _machine(m: dict[str, Any], indent: str = "") -> list[str]:
    """State, lamps, signals, counters and outputs of one machine (the agent's, without
    machines)."""
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
    if m.get("outputs"):
        wired = (m.get("output_lines") or {}).get("outputs", {})
        lines.append(f"{pad}outputs    " + ", ".join(
            f"{k} {'on' if v else 'off'}"
            + (" (CANNOT WRITE)" if wired.get(k, {}).get("failing") else "")
            for k, v in m["outputs"].items()))
    return lines


def _machines(machines: dict[str, Any]) -> list[str]:
    """Several machines side by side: one row each, in the order of the config, its columns
    aligned (state, code, for how long, lamps lit, signals and counters); a machine's reason
    (why `unknown`) on the line below its row."""
    lines = [f"machines   {len(machines)}"]
    rows = [("machine", "state", "code", "for", "lamps", "signals, counters")]
    reasons: dict[int, str] = {}
    for name, m in machines.items():
        state = m.get("state") or {}
        lit = [f"{lamp} {p}" for lamp, p in (m.get("lamps") or {}).items() if p != "off"]
        extra = [str(s) for s in m.get("signals") or []]
        extra += [f"{k} = {v}" for k, v in (m.get("counters") or {}).items()]
        rows.append((str(name), str(state.get("name", "?")), str(state.get("code", "?")),
                     format_age(state.get("for_s")), ", ".join(lit) or "all off",
                     ", ".join(extra) or "-"))
        if state.get("reason"):
            reasons[len(rows) - 1] = str(state["reason"])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if c != 2 else cell.rjust(w)
                 for c, (cell, w) in enumerate(zip(row, widths, strict=False))]
        lines.append(("  " + "  ".join(cells + [row[-1]])).rstrip())
        if n in reasons:
            lines.append(" " * (4 + widths[0]) + "- " + reasons[n])
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
