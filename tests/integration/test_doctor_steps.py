"""`linelight doctor`'s TLS, Modbus-device and clock steps, against real servers.

The config, DNS, TCP, login, journal and disk steps are in test_tools.py.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from linelight.agent.cli.doctor import Report, check_clock
from linelight.agent.clock import kernel_clock_synchronized
from tests.fixtures.mosquitto import Mosquitto, TestPki, free_port
from tests.hw.modbus_server import ModbusTestServer
from tests.integration.agent_proc import VIRTUAL_TOWER, AgentProcess, write_config
from tests.integration.test_tools import linelight

# -- TLS --------------------------------------------------------------------------------------


def tls_config(directory: Path, port: int, ca_file: Path) -> Path:
    config = write_config(directory, mqtt_port=port)
    config.write_text(config.read_text().replace(
        "[mqtt]\n", f'[mqtt.tls]\nca_file = "{ca_file}"\n\n[mqtt]\n'))
    return config


def test_doctor_passes_the_tls_step_with_the_broker_ca_and_logs_in_over_tls(
        tmp_path: Path, test_pki: TestPki, make_mosquitto: Callable[..., Mosquitto]) -> None:
    broker = make_mosquitto(extra=test_pki.tls_extra())
    proc = linelight("doctor", "--config", str(tls_config(tmp_path / "agent", broker.port,
                                                          test_pki.ca)))
    out = proc.stdout
    assert f"[ok  ] broker TCP 127.0.0.1:{broker.port}" in out, out
    # TLS and login through the agent's own MqttLink: one step, the agent's verdict
    assert "[ok  ] broker login (TLS): MQTT 5 CONNACK accepted (anonymous)" in out, out
    assert "[FAIL]" not in out, out
    assert proc.returncode == 0, out + proc.stderr


def test_doctor_fails_the_tls_step_with_a_ca_that_did_not_sign_the_broker(
        tmp_path: Path, test_pki: TestPki, make_mosquitto: Callable[..., Mosquitto]) -> None:
    broker = make_mosquitto(extra=test_pki.tls_extra())
    other = TestPki(tmp_path / "other-pki", name="some other CA")
    proc = linelight("doctor", "--config", str(tls_config(tmp_path / "agent", broker.port,
                                                          other.ca)))
    out = proc.stdout
    assert proc.returncode == 1, out
    assert f"[ok  ] broker TCP 127.0.0.1:{broker.port}" in out, out
    assert ("[FAIL] broker login (TLS): TLS certificate verification failed (self-signed "
            "certificate in certificate chain); check mqtt.tls.ca_file") in out, out


# -- Modbus devices ---------------------------------------------------------------------------

RULES = """\
[inputs]
running = { type = "bool" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }
"""


def modbus_config(directory: Path, port: int) -> Path:
    sources = f"""\
[sources.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}

[sources.io.inputs]
running = {{ discrete_input = 0 }}
"""
    return write_config(directory, rules=RULES, sources=sources)


@pytest.mark.anyio
async def test_doctor_reaches_a_running_modbus_device(tmp_path: Path) -> None:
    server = ModbusTestServer()
    await server.start()
    try:
        config = modbus_config(tmp_path / "agent", server.port)
        # A thread: the server answers on this test's event loop while doctor runs.
        proc = await anyio.to_thread.run_sync(linelight, "doctor", "--config", str(config))
    finally:
        await server.stop()
    out = proc.stdout
    assert (f"[ok  ] source io (Modbus TCP): 127.0.0.1:{server.port} accepts connections"
            in out), out
    assert "[FAIL]" not in out, out
    assert proc.returncode == 0, out + proc.stderr


def test_doctor_fails_on_a_modbus_device_that_refuses_and_names_its_address(
        tmp_path: Path) -> None:
    port = free_port()
    proc = linelight("doctor", "--config", str(modbus_config(tmp_path / "agent", port)))
    out = proc.stdout
    assert proc.returncode == 1, out
    assert (f"[FAIL] source io (Modbus TCP): 127.0.0.1:{port}: Connection refused"
            in out), out
    assert "is the device powered and on this network?" in out, out


# -- several machines -------------------------------------------------------------------------


def two_machines(directory: Path, plc_port: int) -> Path:
    """press-1 on its own simulator, press-2 on its own Modbus device (at `plc_port`)."""
    (directory / "rules").mkdir(parents=True)
    (directory / "rules" / "press.toml").write_text(RULES)
    def tower(name: str) -> str:
        return VIRTUAL_TOWER.replace("[tower.lamps]", f"[machines.{name}.tower.lamps]")

    path = directory / "agent.toml"
    path.write_text(f"""\
agent_id = "doctor-line"
data_dir = "data"

[diagnostics]
listen = ["127.0.0.1:{free_port()}"]

[machines.press-1]
rules = ["rules/press.toml"]

[machines.press-1.sources.press-1-sim]
type = "sim"
period = "50ms"

[machines.press-1.sources.press-1-sim.inputs]
running = {{ wave = "constant", type = "bool", value = true }}

{tower("press-1")}
[machines.press-2]
rules = ["rules/press.toml"]

[machines.press-2.sources.press-2-plc]
type = "modbus_tcp"
host = "127.0.0.1"
port = {plc_port}
timeout = "200ms"

[machines.press-2.sources.press-2-plc.inputs]
running = {{ discrete_input = 0 }}

{tower("press-2")}""")
    return path


def test_doctor_status_and_metrics_show_each_machine_its_device_and_its_state_now(
        tmp_path: Path) -> None:
    port = free_port()  # press-2's device: nothing listens
    config = two_machines(tmp_path / "line", port)
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["machines"]["press-1"]["state"]["name"] == "producing"
                          and s["machines"]["press-2"]["state"]["name"] == "unknown",
                          what="press-1 producing, press-2 unknown")
        doctor = linelight("doctor", "--config", str(config)).stdout
        status = linelight("status", "--config", str(config)).stdout
        code, body = agent.http("GET", "/metrics")
        assert code == 200, body
        metrics = body.decode()
    rules = tmp_path / "line" / "rules" / "press.toml"
    for name, inputs in (("press-1", "own source press-1-sim"),
                         ("press-2", "own source press-2-plc")):
        assert (f"[ok  ] machine {name}: 1 input, 1 state, 0 signals, 0 counters from {rules}; "
                f"inputs from {inputs}; tower of 5 lamps") in doctor, doctor
    assert (f"[FAIL] machine press-2 source press-2-plc (Modbus TCP): 127.0.0.1:{port}: "
            "Connection refused") in doctor, doctor
    assert "[ok  ] machine press-1 now: producing (code 10000) for " in doctor, doctor
    assert "; lamps green on" in doctor, doctor
    assert "[WARN] machine press-2 now: unknown (code " in doctor, doctor
    lines = status.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("  machine  state"))
    assert lines[header - 1] == "machines   2", status
    assert lines[header + 1].split()[:3] == ["press-1", "producing", "10000"], status
    assert lines[header + 2].split()[:2] == ["press-2", "unknown"], status
    assert "green on" in lines[header + 1] and "all off" not in lines[header + 1], status
    assert lines[header + 3].startswith("           - "), status  # why press-2 is unknown
    # /metrics: every per-machine series carries the machine
    assert 'linelight_state_code{machine="press-1"} 10000.0' in metrics, metrics
    assert 'linelight_state_code{machine="press-2"} 30000.0' in metrics, metrics
    assert 'linelight_lamp_lit{lamp="green",machine="press-1"} 1.0' in metrics, metrics
    assert 'linelight_lamp_lit{lamp="green",machine="press-2"} 0.0' in metrics, metrics
    assert all(f'linelight_tower_write_failures_total{{machine="{m}"}} 0.0' in metrics
               and f'linelight_machine_rules_info{{machine="{m}",rules="' in metrics
               for m in ("press-1", "press-2")), metrics


# -- clock ------------------------------------------------------------------------------------


def test_doctor_reports_the_clock_as_this_kernel_sees_it(tmp_path: Path) -> None:
    proc = linelight("doctor", "--config", str(write_config(tmp_path / "agent")))
    synced = kernel_clock_synchronized()
    if synced is False:
        assert "[WARN] clock: the kernel reports the clock as not synchronized" in proc.stdout
    else:
        assert "[ok  ] clock: " in proc.stdout, proc.stdout
        assert ("(sync state unknown)" in proc.stdout) == (synced is None), proc.stdout


def clock_findings(now: float, synced: bool | None) -> list[tuple[str, str, str]]:
    report = Report()
    check_clock(report, now=lambda: now, synchronized=lambda: synced)
    return [(f.level, f.what, f.detail) for f in report.findings]


# A board booted without an RTC battery, and a sane date.
JAN_2020 = float(calendar.timegm((2020, 1, 2, 0, 0, 0)))
NOV_2026 = float(calendar.timegm((2026, 11, 22, 0, 0, 0)))


def test_clock_step_fails_on_a_wall_clock_in_the_past_whatever_the_sync_flag() -> None:
    for synced in (True, False, None):
        assert clock_findings(JAN_2020, synced) == [
            ("fail", "clock", "the wall clock says 2020-01-02")]


def test_clock_step_warns_when_the_kernel_says_unsynchronized() -> None:
    assert clock_findings(NOV_2026, False) == [
        ("warn", "clock", "the kernel reports the clock as not synchronized")]


def test_clock_step_is_ok_when_synchronized_and_says_when_it_cannot_tell() -> None:
    assert clock_findings(NOV_2026, True) == [("ok", "clock", "2026-11-22 00:00:00 UTC")]
    assert clock_findings(NOV_2026, None) == [
        ("ok", "clock", "2026-11-22 00:00:00 UTC (sync state unknown)")]
