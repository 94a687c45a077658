"""`linelight doctor`: the checks an engineer would run, step by step, each with what to do.

Config and rules, the journal file, free disk, the broker (DNS, TCP, TLS, MQTT login), every
Modbus device and GPIO chip, the clock and the running agent's diagnostics port. Exit 0 when
nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linelight.rules.errors import ConfigError, ConfigProblems

DEFAULT_CONFIG = "/etc/linelight/agent.toml"
TIMEOUT = 5.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                        help=f"the agent's config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help=f"seconds per network step (default {TIMEOUT:g})")


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
    for warning in config.warnings:
        report.add("warn", "config", warning)
    check_journal(report, config)
    check_disk(report, config)
    check_clock(report)
    if config.mqtt is None:
        report.add("warn", "broker", "no [mqtt] section: events are only queued on disk",
                   "add [mqtt] host/port (see docs/operations.md)")
    else:
        check_broker(report, config, args.timeout)
    check_devices(report, config, args.timeout)
    check_agent(report, config)
    print("doctor: " + ("problems found" if report.failed else "nothing failed"))
    return 1 if report.failed else 0


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

def check_broker(report: Report, config: Any, timeout: float) -> None:
    m = config.mqtt
    try:
        infos = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        report.add("fail", f"broker DNS {m.host}", str(exc.strerror),
                   "check the host name in [mqtt] and /etc/resolv.conf")
        return
    addrs = sorted({str(i[4][0]) for i in infos})
    report.add("ok", f"broker DNS {m.host}", ", ".join(addrs))
    try:
        sock = socket.create_connection((m.host, m.port), timeout=timeout)
    except OSError as exc:
        report.add("fail", f"broker TCP {m.host}:{m.port}", exc.strerror or str(exc),
                   "is the broker running and the port open in every firewall on the way?")
        return
    report.add("ok", f"broker TCP {m.host}:{m.port}", "connected")
    if m.tls is not None:
        try:
            ctx = _tls_context(m.tls)
            with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
                tls.settimeout(timeout)
                cert = tls.getpeercert() or {}
                report.add("ok", "broker TLS", f"{tls.version()}, certificate for "
                           f"{_subject(cert)}")
        except (ssl.SSLError, OSError) as exc:
            report.add("fail", "broker TLS", str(exc),
                       "check [mqtt.tls] ca_file (and cert_file/key_file if the broker asks "
                       "for a client certificate) and the broker's host name")
            return
    else:
        sock.close()
    check_mqtt_login(report, config, timeout)


def _tls_context(tls: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure_skip_hostname:
        ctx.check_hostname = False
    return ctx


def _subject(cert: dict[str, Any]) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "?"


def check_mqtt_login(report: Report, config: Any, timeout: float) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from linelight.agent.mqtt import read_password

    m = config.mqtt
    try:
        password = read_password(m)
    except ConfigError as exc:
        report.add("fail", "broker login", str(exc), "fix password_file or LoadCredential=")
        return
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"linelight-doctor-{os.getpid()}",
                         protocol=protocol)
    if m.username:
        client.username_pw_set(m.username, password)
    if m.tls is not None:
        client.tls_set_context(_tls_context(m.tls))
    done = threading.Event()
    outcome: list[str] = []

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome.append("ok" if not reason.is_failure else str(reason))
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=10)
        client.loop_start()
        done.wait(timeout)
    except OSError as exc:
        outcome.append(exc.strerror or str(exc))
    finally:
        client.disconnect()
        client.loop_stop()
    if outcome == ["ok"]:
        report.add("ok", "broker login", f"MQTT {m.protocol} CONNACK accepted"
                   + (f" as {m.username}" if m.username else " (anonymous)"))
    elif outcome:
        report.add("fail", "broker login", f"refused: {outcome[0]}",
                   "check username / password_file and the broker's ACL for the topic prefix")
    else:
        report.add("fail", "broker login", f"no CONNACK within {timeout:g} s",
                   "the port answers TCP but not MQTT: wrong port, or TLS expected?")


# -- devices and the running agent ------------------------------------------------------------

def check_devices(report: Report, config: Any, timeout: float) -> None:
    from linelight.hw.config import (
        GpioChipSourceSpec,
        ModbusSourceSpec,
        OpcUaSourceSpec,
        S7SourceSpec,
    )

    for spec in config.sources:
        if isinstance(spec, ModbusSourceSpec):
            if spec.link.kind == "tcp":
                _check_tcp(report, f"source {spec.name} (Modbus TCP)", spec.link.host,
                           spec.link.port, timeout)
            else:
                _check_device(report, f"source {spec.name} (Modbus RTU)", spec.link.device)
        elif isinstance(spec, GpioChipSourceSpec):
            _check_device(report, f"source {spec.name} (gpiochip)", spec.chip)
        elif isinstance(spec, S7SourceSpec):
            check_s7(report, spec)
        elif isinstance(spec, OpcUaSourceSpec):
            host, _, port = spec.endpoint.removeprefix("opc.tcp://").split("/")[0].rpartition(":")
            _check_tcp(report, f"source {spec.name} (OPC UA)", host.strip("[]"),
                       int(port) if port.isdigit() else 4840, timeout)
        else:
            report.add("ok", f"source {spec.name} ({spec.type})", "nothing to reach")


def check_s7(report: Report, spec: Any) -> None:
    """Connect with the agent's own S7Connection and read every block the poller would read,
    so a CPU that refuses PUT/GET or an optimized DB is named here, not at 3 a.m."""
    import anyio

    from linelight.hw.errors import DeviceError
    from linelight.hw.s7 import S7Connection
    from linelight.hw.s7_codec import max_block_bytes, plan_reads

    what = f"source {spec.name} (S7)"

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
