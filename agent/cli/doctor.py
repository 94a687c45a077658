"""`linelight doctor`: the checks an engineer would run, step by step, each with what to do.

Config and rules, the journal file, free disk, the broker (DNS, TCP, TLS, MQTT login), every
Modbus device and GPIO chip, the clock and the running agent's diagnostics port. Exit 0 when
nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from linelight.rules.errors import ConfigError, ConfigProblems

DEFAULT_CONFIG = "/etc/linelight/agent.toml"
TIMEOUT = 5.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                        help=f"the agent's config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per network step (default: the broker's "
                             f"mqtt.connect_timeout, {TIMEOUT:g} s for devices)")
    parser.add_argument("--credentials-dir", type=Path, default=None,
                        help="where the config's $CREDENTIALS_DIRECTORY files are (default: "
                             "read them as the installed unit's LoadCredential= loads them)")


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # "ok", "warn", "fail"
    what: str
    detail: str = ""
    todo: str = ""


class Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, level: str, what: str, detail: str = "", todo: str = "") -> None:
        finding = Finding(level, what, detail, todo)
        self.findings.append(finding)
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[level]
        print(f"[{mark}] {what}" + (f": {detail}" if detail else ""), flush=True)
        if todo and level != "ok":
            print(f"       -> {todo}", flush=True)

    @property
    def failed(self) -> bool:
        return any(f.level == "fail" for f in self.findings)


def run(args: argparse.Namespace) -> int:
    from linelight.agent.cli.credentials import credentials_directory

    with credentials_directory(args.credentials_dir) as where:
        return _run(args, where)


def _run(args: argparse.Namespace, credentials: str) -> int:
    from linelight.agent.config import load_config

    report = Report()
    try:
        config = load_config(args.config)
    except ConfigProblems as exc:
        report.add("fail", f"config {args.config}", f"{len(exc.problems)} problems",
                   "fix these, then run `linelight check --config FILE`")
        for problem in exc.problems:
            print(f"       {problem}")
        return 1
    files = sum(len(m.rule_files.files) for m in config.machines)
    named = [m.name for m in config.machines if m.named]
    machines = f" for machines {', '.join(named)}" if named else ""
    report.add("ok", f"config {args.config} and {files} rule files{machines} valid")
    check_machines(report, config)
    for warning in config.warnings:
        report.add("warn", "config", warning)
    report.add("ok", "credentials", credentials)
    check_token(report, config)
    check_journal(report, config)
    check_disk(report, config)
    check_clock(report)
    if config.mqtt is None:
        report.add("warn", "broker", "no [mqtt] section: events are only queued on disk",
                   "add [mqtt] host/port (see docs/operations.md)")
    else:
        check_broker(report, config, args.timeout)
    check_devices(report, config, args.timeout or TIMEOUT)
    check_agent(report, config)
    print("doctor: " + ("problems found" if report.failed else "nothing failed"))
    return 1 if report.failed else 0


def check_machines(report: Report, config: Any) -> None:
    """Each machine of a config with [machines.NAME], one line each: its rules, where its
    inputs come from, its tower."""
    from linelight.agent.cli.check import _summary
    from linelight.agent.machines import STATE_OF
    from linelight.hw.config import input_names

    shared = {n: spec.name for spec in config.sources for n in input_names(spec)}
    for m in config.machines:
        if not m.named:
            continue
        own = [spec.name for spec in m.sources]
        used = sorted({shared[key] for key in m.inputs.values() if key in shared})
        states = sorted(key[len(STATE_OF):] for key in m.inputs.values()
                        if key.startswith(STATE_OF))
        inputs = [f"own source{'s' * (len(own) > 1)} {', '.join(own)}"] if own else []
        inputs += [f"shared {', '.join(used)}"] if used else []
        inputs += [f"the state of {', '.join(states)}"] if states else []
        tower = f"tower of {len(m.tower.lamps)} lamps" if m.tower is not None else "no tower"
        report.add("ok", f"machine {m.name}",
                   f"{_summary(m.ruleset)} from {', '.join(m.rule_files.names)}; inputs from "
                   f"{'; '.join(inputs) or 'no source'}; {tower}")


def check_token(report: Report, config: Any) -> None:
    """The diagnostics token file, read as the agent reads it on a POST (never printed)."""
    from linelight.agent.secrets import resolve_secret_path

    d = config.diagnostics
    if d.token_file is None:
        report.add("ok", "diagnostics token", "no token_file: lamp test and reload are disabled")
        return
    try:
        token = resolve_secret_path(str(d.token_file), "token_file").read_text(
            encoding="utf-8").strip()
    except ConfigError as exc:
        report.add("fail", "diagnostics token", str(exc),
                   "give --credentials-dir, or run doctor as root (the unit's LoadCredential= "
                   "sources are readable by root only)")
        return
    except (OSError, UnicodeDecodeError) as exc:
        report.add("fail", "diagnostics token", f"cannot read token_file {d.token_file}: "
                   f"{getattr(exc, 'strerror', None) or exc}",
                   "create it (e.g. `openssl rand -hex 24 > FILE`, mode 0600) or remove "
                   "token_file; actions are refused until it can be read")
        return
    if not token:
        report.add("fail", "diagnostics token", f"token_file {d.token_file} is empty",
                   "write a token into it (openssl rand -hex 24)")
        return
    report.add("ok", "diagnostics token", f"token_file {d.token_file} readable")


# -- journal and disk -------------------------------------------------------------------------

def check_journal(report: Report, config: Any) -> None:
    path = config.journal_path
    if not path.exists():
        writable = os.access(config.data_dir if config.data_dir.exists()
                             else config.data_dir.parent, os.W_OK)
        report.add("ok" if writable else "fail", f"journal {path}",
                   "not created yet (the agent creates it at start)",
                   f"make {config.data_dir} writable for the agent's user")
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            depth = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        report.add("fail", f"journal {path}", f"cannot be read: {exc}",
                   "the agent salvages a damaged journal at start; restart it "
                   "(systemctl restart linelight) and look for a `recovered` event")
        return
    if result != "ok":
        report.add("fail", f"journal {path}", f"integrity check: {result}",
                   "restart the agent: it moves the file aside and salvages the readable rows")
    else:
        report.add("ok", f"journal {path}", f"integrity ok, {depth} events queued")


def check_disk(report: Report, config: Any) -> None:
    where = config.data_dir if config.data_dir.exists() else config.data_dir.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        report.add("fail", f"disk at {where}", str(exc))
        return
    need = config.journal.min_free_disk
    free_mib = usage.free / 2**20
    if usage.free < need:
        report.add("fail", f"disk at {where}", f"{free_mib:.0f} MiB free, below min_free_disk "
                   f"({need / 2**20:.0f} MiB): new events are being dropped",
                   "free disk space; the queue resumes by itself")
    elif usage.free < need + config.journal.max_bytes:
        report.add("warn", f"disk at {where}", f"{free_mib:.0f} MiB free: less than max_bytes "
                   f"({config.journal.max_bytes / 2**20:.0f} MiB) + min_free_disk",
                   "a long outage would stop at the disk limit before max_bytes")
    else:
        report.add("ok", f"disk at {where}", f"{free_mib:.0f} MiB free")


def check_clock(report: Report, *, now: Callable[[], float] = time.time,
                synchronized: Callable[[], bool | None] | None = None) -> None:
    """The wall clock's year and the kernel's sync flag; both injectable for tests."""
    from linelight.agent.clock import kernel_clock_synchronized

    wall = time.gmtime(now())
    synced = (synchronized or kernel_clock_synchronized)()
    if wall.tm_year < 2024:
        report.add("fail", "clock", f"the wall clock says {time.strftime('%Y-%m-%d', wall)}",
                   "set up NTP (systemd-timesyncd or chrony); events are marked clock_unsynced")
    elif synced is False:
        report.add("warn", "clock", "the kernel reports the clock as not synchronized",
                   "check NTP: timedatectl timesync-status; events carry clock_unsynced "
                   "until it is")
    else:
        report.add("ok", "clock", time.strftime("%Y-%m-%d %H:%M:%S UTC", wall)
                   + ("" if synced else " (sync state unknown)"))


# -- broker -----------------------------------------------------------------------------------

def check_broker(report: Report, config: Any, timeout: float | None) -> None:
    """DNS and TCP by hand (to say which step fails), then TLS and the MQTT login through the
    agent's own `MqttLink`, with its settings and timeouts: the verdict is the agent's."""
    m = config.mqtt
    step = timeout if timeout is not None else m.connect_timeout
    try:
        infos = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        report.add("fail", f"broker DNS {m.host}", str(exc.strerror),
                   "check the host name in [mqtt] and /etc/resolv.conf")
        return
    addrs = sorted({str(i[4][0]) for i in infos})
    report.add("ok", f"broker DNS {m.host}", ", ".join(addrs))
    try:
        socket.create_connection((m.host, m.port), timeout=step).close()
    except OSError as exc:
        report.add("fail", f"broker TCP {m.host}:{m.port}", exc.strerror or str(exc),
                   "is the broker running and the port open in every firewall on the way?")
        return
    report.add("ok", f"broker TCP {m.host}:{m.port}", "connected")
    check_mqtt_login(report, config, timeout)


def check_mqtt_login(report: Report, config: Any, timeout: float | None) -> None:
    import anyio

    from linelight.agent.mqtt import LinkError, MqttLink, read_password

    m = config.mqtt
    if timeout is not None:
        m = replace(m, connect_timeout=timeout)
    what = "broker login" + (" (TLS)" if m.tls is not None else "")
    try:
        password = read_password(m)
    except ConfigError as exc:
        report.add("fail", what, str(exc), "fix password_file, or give the credentials as the "
                   "service gets them: --credentials-dir, or run doctor as root so the unit's "
                   "LoadCredential= sources can be read")
        return

    async def attempt() -> str | None:
        link = MqttLink(m, client_id=f"linelight-doctor-{os.getpid()}", password=password,
                        will=None, on_puback=lambda mid, code, text: None)
        try:
            with anyio.fail_after(m.connect_timeout + 1.0):
                await link.connect()
        except LinkError as exc:
            return exc.reason
        except TimeoutError:
            return f"no CONNACK within {m.connect_timeout:g} s"
        finally:
            link.close("doctor done")
        return None

    refusal = anyio.run(attempt)
    if refusal is None:
        report.add("ok", what, f"MQTT {m.protocol} CONNACK accepted"
                   + (f" as {m.username}" if m.username else " (anonymous)"))
    else:
        report.add("fail", what, refusal,
                   "check username / password_file, the broker's ACL for the topic prefix, "
                   "and [mqtt.tls] (ca_file, cert_file/key_file, the broker's host name)")


# -- devices and the running agent ------------------------------------------------------------

def check_devices(report: Report, config: Any, timeout: float) -> None:
    from linelight.hw.config import (
        GpioChipSourceSpec,
        ModbusSourceSpec,
        OpcUaSourceSpec,
        S7SourceSpec,
    )

    # the shared sources, then each machine's own, named with their machine
    specs = [("", spec) for spec in config.sources] + [
        (f"machine {m.name} ", spec) for m in config.machines if m.named for spec in m.sources]
    for owner, spec in specs:
        what = f"{owner}source {spec.name}"
        if isinstance(spec, ModbusSourceSpec):
            if spec.link.kind == "tcp":
                _check_tcp(report, f"{what} (Modbus TCP)", spec.link.host, spec.link.port,
                           timeout)
            else:
                _check_device(report, f"{what} (Modbus RTU)", spec.link.device)
        elif isinstance(spec, GpioChipSourceSpec):
            _check_device(report, f"{what} (gpiochip)", spec.chip)
        elif isinstance(spec, S7SourceSpec):
            check_s7(report, spec, what)
        elif isinstance(spec, OpcUaSourceSpec):
            check_opcua(report, spec, what)
        else:
            report.add("ok", f"{what} ({spec.type})", "nothing to reach")


def check_opcua(report: Report, spec: Any, what: str | None = None) -> None:
    """Connect with the agent's own OpcUaConnection (security, trusted server certificate,
    user) and read every input once, so an untrusted server, a refused password or a node id
    that leads nowhere is named here."""
    import anyio

    from linelight.hw.errors import DeviceError
    from linelight.hw.opcua import probe

    what = f"{what or f'source {spec.name}'} (OPC UA)"
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # it narrates every refusal too
    try:
        read, problems = anyio.run(probe, spec)
    except DeviceError as exc:
        cert = spec.security.certificate if spec.security is not None else ""
        report.add("fail", what, str(exc), "is the server running and reachable? "
                   + (f"a secured server must trust linelight's certificate {cert}"
                      if cert else "check the endpoint URL"))
        return
    security = (f"{spec.security.policy} {spec.security.mode}" if spec.security is not None
                else "no security")
    if problems:
        report.add("warn", what, f"connected ({security}), {read} inputs read, "
                   f"{len(problems)} not good; first: {problems[0]}",
                   "check the node ids or browse paths (linelight browse) and the server's "
                   "values")
        return
    report.add("ok", what, f"connected ({security}), {read} inputs read, all good")


def check_s7(report: Report, spec: Any, what: str | None = None) -> None:
    """Connect with the agent's own S7Connection and read every block the poller would read,
    so a CPU that refuses PUT/GET or an optimized DB is named here, not at 3 a.m."""
    import anyio

    from linelight.hw.errors import DeviceError
    from linelight.hw.s7 import S7Connection
    from linelight.hw.s7_codec import max_block_bytes, plan_reads

    what = f"{what or f'source {spec.name}'} (S7)"

    async def probe() -> tuple[str, str, str]:
        conn = S7Connection(spec)
        try:
            await conn.connect()
            blocks = plan_reads(spec.inputs, max_bytes=max_block_bytes(conn.pdu),
                                max_gap=spec.max_gap)
            for block in blocks:
                await conn.read(block)
        except DeviceError as exc:
            return ("fail", str(exc), "an S7-1200/1500 answers only with PUT/GET access "
                    "permitted and DBs without optimized block access; check rack and slot "
                    "(S7-1200/1500: 0/1, S7-300: 0/2)")
        finally:
            await conn.close()
        return "ok", f"connected (PDU {conn.stats.pdu}), {len(blocks)} reads answered", ""

    level, detail, todo = anyio.run(probe)
    report.add(level, what, detail, todo)


def _check_tcp(report: Report, what: str, host: str, port: int, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        report.add("fail", what, f"{host}:{port}: {exc.strerror or exc}",
                   "is the device powered and on this network? ping it; check host/port")
        return
    report.add("ok", what, f"{host}:{port} accepts connections")


def _check_device(report: Report, what: str, device: str) -> None:
    if device.startswith("socket://"):
        host, _, port = device.removeprefix("socket://").rpartition(":")
        _check_tcp(report, what, host, int(port or 0), TIMEOUT)
        return
    path = Path(device)
    if not path.exists():
        report.add("fail", what, f"{device} does not exist",
                   "is the adapter plugged in? ls /dev/serial/by-id /dev/gpiochip*")
    elif not os.access(path, os.R_OK | os.W_OK):
        report.add("fail", what, f"{device} is not readable and writable by this user",
                   "the agent's user must be in the dialout (serial) or gpio group")
    else:
        report.add("ok", what, f"{device} present")


def check_agent(report: Report, config: Any) -> None:
    d = config.diagnostics
    if not d.enabled or not d.listen:
        report.add("warn", "agent", "diagnostics disabled: cannot ask the running agent")
        return
    host, port = d.listen[0]
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            body = resp.read().decode()
        report.add("ok", f"running agent at {url}", body.strip().replace("\n", "; "))
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        exc.close()
        report.add("warn", f"running agent at {url}", body.strip().replace("\n", "; "),
                   "see docs/operations.md, 'health reasons'")
    except OSError as exc:
        report.add("warn", f"running agent at {url}", f"not answering ({exc})",
                   "systemctl status linelight; journalctl -u linelight -e")
        return
    if any(m.named for m in config.machines):
        check_running_machines(report, config, url.removesuffix("/healthz"))


def check_running_machines(report: Report, config: Any, url: str) -> None:
    """What each machine of the running agent shows now, side by side: one line each, its
    name padded to the longest; `unknown` is a warning with its reason."""
    from linelight.agent.cli.status import fetch
    from linelight.agent.humanize import format_age
    from linelight.agent.secrets import resolve_secret_path

    token = None
    if config.diagnostics.token_file is not None:  # asked for by a non-loopback bind
        with contextlib.suppress(OSError, ConfigError, UnicodeDecodeError):
            token = resolve_secret_path(str(config.diagnostics.token_file), "token_file"
                                        ).read_text(encoding="utf-8").strip() or None
    try:
        status = fetch(url, token)
    except (OSError, ValueError) as exc:
        report.add("warn", "running machines", f"{url}/status cannot be read ({exc})")
        return
    machines = {name: m for name, m in (status.get("machines") or {}).items()
                if isinstance(m, dict) and m.get("named")}
    width = max((len(name) for name in machines), default=0)
    for name, m in machines.items():
        state = m.get("state") or {}
        lit = [f"{lamp} {p}" for lamp, p in (m.get("lamps") or {}).items() if p != "off"]
        counters = [f"{k} = {v}" for k, v in (m.get("counters") or {}).items()]
        detail = (f"{state.get('name', '?')} (code {state.get('code', '?')}) for "
                  f"{format_age(state.get('for_s'))}; lamps {', '.join(lit) or 'all off'}"
                  + (f"; {', '.join(counters)}" if counters else ""))
        unknown = state.get("name") == "unknown"
        report.add("warn" if unknown else "ok", f"machine {name:<{width}} now", detail,
                   f"{state.get('reason') or 'its inputs are not good'}: see `linelight "
                   "status` and the page's inputs and sources")
