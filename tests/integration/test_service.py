"""The agent as a systemd service sees it: notify protocol, diagnostics port, check, SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.agent_proc import ROOT, VIRTUAL_TOWER, AgentProcess, write_config
from harness.ports import free_port


def receive_until(sock: socket.socket, last: str, limit: int = 500) -> list[str]:
    got: list[str] = []
    while len(got) < limit:
        msg = sock.recv(4096).decode()
        got.append(msg)
        if msg.startswith(last):
            return got
    raise AssertionError(f"no {last} among {got[:20]}")


def test_notify_sends_ready_watchdog_status_stopping_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    # The broker port is closed: READY must not wait for it.
    config = write_config(tmp_path / "agent", mqtt_port=free_port())
    try:
        with AgentProcess(config, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}) as agent:
            agent.start(wait_ready=False)
            first = receive_until(sock, "READY=1")
            more = receive_until(sock, "WATCHDOG=1")
            more += receive_until(sock, "STATUS=")
            assert agent.status()["broker"]["connected"] is False
            agent.signal(signal.SIGTERM)
            rest = receive_until(sock, "STOPPING=1")
            assert agent.stop() == 0
    finally:
        sock.close()
    assert len(first) == 1, f"something was sent before READY: {first}"
    ready = first[-1].split("\n")
    assert ready[0] == "READY=1"
    assert re.match(r"STATUS=state \w+, queue \d+, broker disconnected", ready[1])
    assert any(m == "WATCHDOG=1" for m in more)
    assert any(m.startswith("STATUS=state ") for m in more)
    assert rest[-1].startswith("STOPPING=1")
    assert not any(m.startswith("READY") for m in more + rest)


def test_default_diagnostics_address_is_loopback_and_actions_need_the_token(
        tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken-for-tests\n")
    config = write_config(tmp_path / "agent", extra=f'token_file = "{token}"')
    with AgentProcess(config) as agent:
        agent.start()
        listen = agent.status()["diagnostics"]["listen"]
        assert listen == [f"127.0.0.1:{agent.port}"]
        assert _listening_addresses(agent.port) == {"127.0.0.1"}
        code, body = agent.http("POST", "/lamp-test",
                                {"Tailscale-User-Login": "night-shift@example.com"})
        assert code == 401, body
        code, _ = agent.http("POST", "/reload", {"Authorization": "Bearer wrong"})
        assert code == 401
        code, body = agent.http("POST", "/lamp-test",
                                {"Authorization": "Bearer t0ken-for-tests"})
        assert code == 200 and b"lamp test started" in body
        code, body = agent.http("GET", "/healthz")
        assert code in (200, 503) and body.split(b"\n")[0] in (b"ok", b"degraded")
        code, body = agent.http("GET", "/metrics")
        assert code == 200 and b"linelight_scan_duration_seconds_count" in body
        assert agent.stop() == 0
    log = agent.log()
    assert "/lamp-test refused for night-shift@example.com via 127.0.0.1" in log
    assert "/reload refused for unidentified caller at 127.0.0.1" in log
    assert "lamp test requested by unidentified caller" in log
    assert "t0ken-for-tests" not in log


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port`, from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:
                continue
            if len(addr) == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
            else:
                found.add("ipv6:" + addr)
    return found


def test_check_on_a_broken_config_prints_the_location_and_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent")
    text = config.read_text().replace('period = "20ms"', 'period = "20 furlongs"', 1)
    config.write_text(text)
    line = text.splitlines().index('period = "20 furlongs"') + 1
    proc = subprocess.run([sys.executable, "-m", "linelight.agent", "check", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{config}:{line}:10: '20 furlongs' is not a duration" in proc.stdout + proc.stderr


def test_run_on_a_broken_config_refuses_to_start_and_names_the_location(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent")
    config.write_text(config.read_text() + "\n[scan2]\n")
    proc = subprocess.run([sys.executable, "-m", "linelight.agent", "run", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert re.search(rf"{re.escape(str(config))}:\d+:\d+: unknown key 'scan2'", proc.stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_turns_lamps_to_on_exit_and_records_a_stop_event(
        tmp_path: Path, signum: int) -> None:
    config = write_config(tmp_path / "agent")
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["state"]["name"] != "unknown", what="a known state")
        agent.signal(signum)
        assert agent.stop() == 0
    from harness.agent_proc import journal_records

    records = journal_records(tmp_path / "agent" / "data")
    assert records[-1].kind == "agent" and records[-1].name == "stop"
    assert "SIG" in agent.log() and "stopped" in agent.log()


def test_a_second_agent_on_the_same_queue_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent")
    with AgentProcess(config) as agent:
        agent.start()
        other = write_config(tmp_path / "agent", diag_port=free_port())
        proc = subprocess.run([sys.executable, "-m", "linelight.agent", "run", "--config", str(other)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert agent.stop() == 0
    assert proc.returncode == 1
    assert "is already open in another process" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_uncreatable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    config = write_config(tmp_path / "agent")
    config.write_text(config.read_text().replace('data_dir = "data"',
                                                 f'data_dir = "{tmp_path / "file" / "data"}"'))
    proc = subprocess.run([sys.executable, "-m", "linelight.agent", "run", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"cannot create data_dir {tmp_path / 'file' / 'data'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_packaged_default_config_starts_with_no_io_and_reports_ready(tmp_path: Path) -> None:
    """The .deb's /etc/linelight: no sources, no tower, no broker -> READY, state unknown."""
    import shutil

    etc = ROOT / "packaging" / "etc"
    if not (etc / "agent.toml").exists():
        pytest.skip("no packaging/etc/agent.toml in this checkout")
    shutil.copytree(etc, tmp_path / "etc")
    config = tmp_path / "etc" / "agent.toml"
    port = free_port()
    text = config.read_text()
    text = text.replace('data_dir = "/var/lib/linelight"', f'data_dir = "{tmp_path / "state"}"')
    text = text.replace("127.0.0.1:9750", f"127.0.0.1:{port}")
    assert str(tmp_path / "state") in text and str(port) in text
    config.write_text(text)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    try:
        with AgentProcess(config, env={"NOTIFY_SOCKET": sock_path}) as agent:
            agent.start(wait_ready=False)
            ready = receive_until(sock, "READY=1")
            status = agent.status()
            healthz = agent.http("GET", "/healthz")
            cli = subprocess.run([sys.executable, "-m", "linelight.agent", "status", "--config",
                                  str(config)], cwd=ROOT, capture_output=True, text=True,
                                 timeout=60)
            assert agent.stop() == 0
    finally:
        sock.close()
    assert len(ready) == 1 and "state unknown" in ready[0]
    # A fresh install is ok with warnings, not a 503 that pages for every new IPC (the chroot
    # test checks the same as root; this runs everywhere): no broker, no sources, the clock.
    health = status["health"]
    assert (health["status"], health["reasons"]) == ("ok", []), health
    assert any(w.startswith("broker: none configured") for w in health["warnings"]), health
    assert any("read by the rules but no source" in w for w in health["warnings"]), health
    assert healthz[0] == 200 and healthz[1].startswith(b"ok"), healthz
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "health     ok with" in cli.stdout, cli.stdout
    # every input the packaged rules read is listed, as missing, not an empty table
    assert status["inputs"] and {i["quality"] for i in status["inputs"].values()} == {"missing"}
    assert status["state"]["name"] == "unknown"
    assert status["broker"]["connected"] is False and status["broker"]["url"] is None
    assert status["events"]["submitted"] > 0  # recorded on disk, nothing to send them to
    assert status["diagnostics"]["listen"] == [f"127.0.0.1:{port}"]


def test_a_lamp_output_that_cannot_be_opened_stops_the_start_with_one_line(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent", tower=VIRTUAL_TOWER.replace(
        "red = { virtual = true }", 'red = { line = 3, chip = "/dev/gpiochip-nonexistent" }'))
    proc = subprocess.run([sys.executable, "-m", "linelight.agent", "run", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "linelight: cannot start: " in proc.stderr and "gpiochip-nonexistent" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_during_start_up_still_stops_cleanly(tmp_path: Path) -> None:
    import time

    config = write_config(tmp_path / "agent")
    db = tmp_path / "agent" / "data" / "journal.db"
    with AgentProcess(config) as agent:
        agent.start(wait_ready=False)
        deadline = time.monotonic() + 60
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        agent.signal(signal.SIGTERM)  # the handler is installed before the journal is opened
        assert agent.stop() == 0
    assert "stopped" in agent.log()
