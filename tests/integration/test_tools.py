"""`linelight status` and `linelight doctor` against a real agent and a real mosquitto."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.agent_proc import ROOT, AgentProcess, write_config
from harness.mosquitto import Mosquitto
from harness.ports import free_port


def linelight(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "linelight.agent", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=90, stdin=subprocess.DEVNULL)


def test_status_prints_a_summary_of_the_running_agent(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent")
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["state"]["name"] != "unknown", what="a known state")
        proc = linelight("status", "--config", str(config))
        as_json = linelight("status", "--url", f"http://127.0.0.1:{agent.port}", "--json")
        assert agent.stop() == 0
    assert proc.returncode == 0, proc.stderr  # no broker configured: a warning, not degraded
    out = proc.stdout
    assert "agent it-press" in out and "health     ok with " in out
    assert "- warning: broker: none configured" in out
    assert "state      " in out and "queue      " in out and "spindle_rpm" in out
    assert '"agent": "it-press"' in as_json.stdout


def test_status_names_another_agent_holding_the_port_and_takes_host_port(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "a")
    other = write_config(tmp_path / "b", agent_id="it-other", diag_port=_port(config))
    with AgentProcess(config) as agent, AgentProcess(other) as second:
        agent.start()
        second.start(wait_ready=False)
        wait = 0.0
        while "diagnostics cannot listen" not in second.log() and wait < 60:
            time.sleep(0.1)
            wait += 0.1
        wrong = linelight("status", "--config", str(other))
        plain = linelight("status", "--url", f"127.0.0.1:{agent.port}")
        both = linelight("status", "--config", str(other), "--url", f"127.0.0.1:{agent.port}")
        assert second.stop() == 0 and agent.stop() == 0
    assert both.returncode == 1 and "not agent 'it-other'" in both.stderr, both  # --config: checked
    assert (f"diagnostics cannot listen on 127.0.0.1:{agent.port}: Address already in use"
            in second.log())
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert (f"the agent answering at http://127.0.0.1:{agent.port} is agent 'it-press' with "
            f"config {config}, not agent 'it-other' of {other}") in wrong.stderr
    assert plain.returncode == 0 and "agent it-press" in plain.stdout


def _port(config: Path) -> int:
    return AgentProcess(config).port


def test_status_says_so_when_no_agent_answers() -> None:
    proc = linelight("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 1
    assert "no agent answers at" in proc.stderr and "systemctl status linelight" in proc.stderr


def test_doctor_walks_the_broker_steps_and_passes_with_a_live_broker(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    proc = linelight("doctor", "--config", str(config))
    out = proc.stdout
    assert "[ok  ] config" in out
    assert "[ok  ] broker DNS 127.0.0.1" in out
    assert f"[ok  ] broker TCP 127.0.0.1:{mosquitto.port}" in out
    assert "[ok  ] broker login: MQTT 5 CONNACK accepted (anonymous)" in out
    assert "[ok  ] journal" in out and "[ok  ] disk" in out
    assert "[FAIL]" not in out, out
    assert proc.returncode == 0, out


def test_doctor_reports_a_refused_login_with_what_to_do(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]) -> None:
    broker = make_mosquitto(start=False, extra="allow_anonymous false\n")
    broker.add_user("press", "right")
    broker.start()
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    config = write_config(tmp_path / "agent", mqtt_port=broker.port)
    config.write_text(config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\nusername = "press"\npassword_file = "{secret}"\n'))
    proc = linelight("doctor", "--config", str(config))
    assert proc.returncode == 1
    assert "[FAIL] broker login: connection refused" in proc.stdout
    assert "check username / password_file" in proc.stdout
    assert "wrong" not in proc.stdout  # never print a secret


def test_doctor_fails_on_an_unreachable_broker_and_a_broken_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent", mqtt_port=free_port())
    proc = linelight("doctor", "--config", str(config))
    assert proc.returncode == 1
    assert "[FAIL] broker TCP 127.0.0.1" in proc.stdout and "Connection refused" in proc.stdout
    config.write_text("bogus = 1\n" + config.read_text())
    proc = linelight("doctor", "--config", str(config))
    assert proc.returncode == 1
    assert f"{config}:" in proc.stdout and "unknown key 'bogus'" in proc.stdout


def test_doctor_reads_credentials_as_the_service_gets_them_and_checks_the_token(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]) -> None:
    users = tmp_path / "passwd"
    broker = make_mosquitto(start=False, extra=f"allow_anonymous false\npassword_file {users}\n")
    broker.add_user("press", "right", users)
    broker.start()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("right\n")
    config = write_config(tmp_path / "agent", mqtt_port=broker.port, extra=(
        'token_file = "$CREDENTIALS_DIRECTORY/diagnostics-token"\n'))
    config.write_text(config.read_text().replace(
        "[mqtt]\n", '[mqtt]\nusername = "press"\n'
                    'password_file = "$CREDENTIALS_DIRECTORY/mqtt-password"\n'))
    missing_token = linelight("doctor", "--config", str(config), "--credentials-dir", str(creds))
    (creds / "diagnostics-token").write_text("s3cret\n")
    passes = linelight("doctor", "--config", str(config), "--credentials-dir", str(creds))
    assert "[ok  ] broker login: MQTT 5 CONNACK accepted as press" in missing_token.stdout, \
        missing_token.stdout
    assert "[FAIL] diagnostics token: cannot read token_file" in missing_token.stdout
    assert missing_token.returncode == 1
    assert f"[ok  ] credentials: credentials from {creds} (--credentials-dir)" in passes.stdout
    assert "[ok  ] diagnostics token" in passes.stdout and "[FAIL]" not in passes.stdout
    assert passes.returncode == 0, passes.stdout
    assert "right" not in passes.stdout and "s3cret" not in passes.stdout


def test_a_token_file_that_does_not_exist_is_said_by_check_and_at_start_not_first_on_a_post(
        tmp_path: Path) -> None:
    absent = tmp_path / "etc" / "token"
    config = write_config(tmp_path / "agent", extra=f'token_file = "{absent}"')
    said = (f"[diagnostics] token_file {absent} does not exist: POST /lamp-test and /reload are "
            "refused until it does")
    check = linelight("check", "--config", str(config))
    assert check.returncode == 0 and f"warning: {said}" in check.stdout, check.stdout
    with AgentProcess(config) as agent:
        agent.start()
        assert said in agent.log()
        assert agent.stop() == 0
    absent.parent.mkdir()
    absent.write_text("t0ken\n")
    check = linelight("check", "--config", str(config))
    assert check.returncode == 0 and "warning:" not in check.stdout, check.stdout


def test_status_says_a_broker_error_once_on_the_broker_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent", mqtt_port=free_port())  # nothing listens there
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: bool(s["broker"]["last_error"]), what="a broker error")
        proc = linelight("status", "--config", str(config))
        assert agent.stop() == 0
    assert proc.returncode == 1  # a configured broker that is down: degraded
    out = proc.stdout
    assert "- broker: not connected (why: see broker below)" in out, out
    assert out.count("connection refused") == 1, out
    broker = next(line for line in out.splitlines() if line.startswith("broker "))
    assert "DISCONNECTED" in broker and "connection refused" in broker, out
