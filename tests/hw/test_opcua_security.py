"""OPC UA security against asyncua's own Server: Basic256Sha256 SignAndEncrypt with certificates
linelight generates, an untrusted server certificate and a wrong password are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from asyncua import ua

from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality
from tests.hw.helpers import config_problems, read_config, wait_sample, wait_until
from tests.hw.opcua_server import OpcUaTestServer, make_server_certificate

pytestmark = pytest.mark.anyio


@pytest.fixture
async def secure_server(tmp_path: Path) -> AsyncIterator[OpcUaTestServer]:
    cert, key = await make_server_certificate(tmp_path)
    server = OpcUaTestServer(certificate=cert, private_key=key, users={"linelight": "s3cret"})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _toml(server: OpcUaTestServer, folder: Path, *, trusted: Path, password: str) -> str:
    (folder / "opcua-password").write_text(password + "\n")
    return f"""
[sources.cell]
type = "opcua"
endpoint = "{server.endpoint}"
publishing_interval = "50ms"
reconnect_max = "1s"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
certificate = "{folder}/client/cert.der"
private_key = "{folder}/client/key.pem"
server_certificate = "{trusted}"
username = "linelight"
password_file = "{folder}/opcua-password"

[sources.cell.inputs]
running = {{ node = "ns=2;i=1042" }}
"""


async def _connects(spec: object) -> None:
    """The source of `spec` runs until its input `running` is GOOD."""
    hw = build_hardware([spec], None)  # type: ignore[list-item]
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD)
        tg.cancel_scope.cancel()
    await hw.close()


RULES = ('[inputs]\nrunning = { type = "bool" }\n\n[[state]]\nname = "producing"\ncode = 1\n'
         'priority = 1\nwhen = "running"\nshow = { green = "on" }\n')


async def _first_outcome(toml: str) -> tuple[InputTable, object]:
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    table = InputTable()
    link = hw.opcua_connections["cell"].stats
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_until(lambda: table.get("running").quality is Quality.GOOD or link.last_error,
                         what="connected or refused")
        tg.cancel_scope.cancel()
    await hw.close()
    return table, link


async def test_sign_and_encrypt_with_generated_client_certificate_connects(
        secure_server: OpcUaTestServer, tmp_path: Path):
    await secure_server.set(1042, True)
    assert secure_server.certificate is not None
    toml = _toml(secure_server, tmp_path, trusted=secure_server.certificate, password="s3cret")
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD and s.value is True)
        tg.cancel_scope.cancel()
    await hw.close()
    assert (tmp_path / "client" / "cert.der").is_file()  # generated on first start
    assert (tmp_path / "client" / "key.pem").is_file()


@pytest.mark.parametrize(("policy", "mode"), [
    ("Basic256Sha256", "Sign"),
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
    ("Aes256_Sha256_RsaPss", "Sign"),
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
])
async def test_every_offered_policy_and_mode_connects_with_the_password_from_credentials_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, mode: str):
    cert, key = await make_server_certificate(tmp_path)
    server = OpcUaTestServer(certificate=cert, private_key=key, users={"linelight": "s3cret"},
                             policy=f"{policy.replace('_', '')}_{mode}")
    await server.start()
    try:
        await server.set(1042, True)
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "cell-password").write_text("s3cret\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))  # systemd LoadCredential=
        toml = _toml(server, tmp_path, trusted=cert, password="not this one").replace(
            'security_mode = "SignAndEncrypt"', f'security_mode = "{mode}"').replace(
            '"Basic256Sha256"', f'"{policy}"').replace(
            f'password_file = "{tmp_path}/opcua-password"', 'password_file = "cell-password"')
        (spec,), _ = read_config(toml)
        assert spec.security is not None and (spec.security.policy, spec.security.mode) == (
            policy, mode)
        await _connects(spec)
    finally:
        await server.stop()


async def test_an_untrusted_server_certificate_is_refused_in_one_sentence(
        secure_server: OpcUaTestServer, tmp_path: Path):
    other, _ = await make_server_certificate(tmp_path, "other")
    table, link = await _first_outcome(_toml(secure_server, tmp_path, trusted=other,
                                             password="s3cret"))
    assert table.get("running").quality is not Quality.GOOD
    error = link.last_error  # type: ignore[attr-defined]
    assert error.startswith(f"OPC UA server 'cell' ({secure_server.endpoint}) presented "
                            "certificate SHA-1 ")
    assert f"not the trusted one in {other} " in error and "refusing to connect" in error


async def test_no_user_for_a_server_that_needs_one_is_refused_in_one_sentence(
        secure_server: OpcUaTestServer, tmp_path: Path):
    assert secure_server.certificate is not None
    toml = _toml(secure_server, tmp_path, trusted=secure_server.certificate, password="x")
    toml = toml.replace('username = "linelight"\n', "").replace(
        f'password_file = "{tmp_path}/opcua-password"\n', "")
    _, link = await _first_outcome(toml)
    assert link.last_error == (  # type: ignore[attr-defined]
        f"OPC UA server 'cell' ({secure_server.endpoint}) refused an anonymous session "
        "(BadUserAccessDenied (0x801f0000)): it needs a user, give username and password_file")


async def test_a_wrong_password_is_refused_in_one_sentence(
        secure_server: OpcUaTestServer, tmp_path: Path):
    assert secure_server.certificate is not None
    table, link = await _first_outcome(_toml(secure_server, tmp_path,
                                             trusted=secure_server.certificate, password="nope"))
    assert table.get("running").quality is not Quality.GOOD
    error = link.last_error  # type: ignore[attr-defined]
    assert error.startswith(f"OPC UA server 'cell' ({secure_server.endpoint}) refused user "
                            "'linelight' (")
    assert error.endswith("wrong user name or password, or the user may not log in")


def test_security_needs_a_trusted_server_certificate_or_an_explicit_opt_out():
    toml = """
[sources.cell]
type = "opcua"
endpoint = "opc.tcp://192.0.2.40:4840"
security_policy = "Basic256Sha256"
certificate = "/var/lib/linelight/opcua/cert.der"
private_key = "/var/lib/linelight/opcua/key.pem"
"""
    assert config_problems(toml) == [
        'agent.toml:2:2: security_policy "Basic256Sha256" needs \'server_certificate\' (the '
        "server's certificate file, which linelight then trusts) or, knowingly, "
        "trust_any_server = true"]
    assert config_problems(toml + "trust_any_server = true\n") == []
    alone = toml.replace('private_key = "/var/lib/linelight/opcua/key.pem"\n', "")
    assert config_problems(alone + "trust_any_server = true\n") == [
        "agent.toml:6:15: 'certificate' and 'private_key' go together (or leave both out: the "
        "agent then keeps them in data_dir/opcua/)"]


def _doctor(toml: str) -> object:
    """`linelight doctor`'s OPC UA step, in a thread: it runs its own event loop (anyio.run)."""
    from linelight.agent.cli.doctor import Report, check_opcua

    (spec,), _ = read_config(toml)
    report = Report()
    check_opcua(report, spec)
    (finding,) = report.findings
    return finding


async def test_doctor_connects_securely_and_reads_every_input(
        secure_server: OpcUaTestServer, tmp_path: Path):
    assert secure_server.certificate is not None
    toml = _toml(secure_server, tmp_path, trusted=secure_server.certificate, password="s3cret")
    await _first_outcome(toml)  # the agent's first start generated the client certificate
    finding = await anyio.to_thread.run_sync(_doctor, toml)
    assert (finding.level, finding.detail) == (  # type: ignore[attr-defined]
        "ok", "connected (Basic256Sha256 SignAndEncrypt), 1 inputs read, all good")
    await secure_server.set(1042, False, ua.StatusCodes.BadSensorFailure)
    toml += 'ghost = { path = "Line/NoSuchThing" }\n'
    finding = await anyio.to_thread.run_sync(_doctor, toml)
    assert finding.level == "warn"  # type: ignore[attr-defined]
    assert finding.detail.startswith(  # type: ignore[attr-defined]
        "connected (Basic256Sha256 SignAndEncrypt), 1 inputs read, 2 not good; first: OPC UA "
        f"server 'cell' ({secure_server.endpoint}) has no node at Objects/Line/NoSuchThing: ")


async def test_doctor_names_an_untrusted_server_and_never_creates_the_client_certificate(
        secure_server: OpcUaTestServer, tmp_path: Path):
    other, _ = await make_server_certificate(tmp_path, "other")
    toml = _toml(secure_server, tmp_path, trusted=other, password="s3cret")
    finding = await anyio.to_thread.run_sync(_doctor, toml)
    assert finding.level == "fail"  # type: ignore[attr-defined]
    assert finding.detail == (  # type: ignore[attr-defined]
        f"the OPC UA client certificate {tmp_path}/client/cert.der or its key "
        f"{tmp_path}/client/key.pem does not exist yet: the agent creates both at its first "
        "start, then the server must trust the certificate")
    assert not (tmp_path / "client").exists()  # doctor (often run as root) wrote nothing
    await _first_outcome(toml)  # the agent's start creates them (and is refused)
    finding = await anyio.to_thread.run_sync(_doctor, toml)
    assert finding.level == "fail"  # type: ignore[attr-defined]
    assert finding.detail.startswith(  # type: ignore[attr-defined]
        f"OPC UA server 'cell' ({secure_server.endpoint}) presented certificate SHA-1 ")
    assert "refusing to connect" in finding.detail  # type: ignore[attr-defined]


async def test_browse_a_configured_source_uses_its_security(
        secure_server: OpcUaTestServer, tmp_path: Path):
    from tests.hw.test_opcua_browse import _linelight

    assert secure_server.certificate is not None
    sources = _toml(secure_server, tmp_path, trusted=secure_server.certificate,
                    password="s3cret")
    await _first_outcome(sources)  # the agent's first start generated the client certificate
    (tmp_path / "rules.toml").write_text(RULES)
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path}/state"\nrules = ["rules.toml"]\n{sources}')
    done = await _linelight("browse", "--source", "cell", "--config", str(config),
                            "--path", "Line")
    assert done.returncode == 0, done.stderr
    assert "Running  [ns=2;i=1042]  Boolean = False" in done.stdout
    unsecured = await _linelight("browse", secure_server.endpoint, "--timeout", "2")
    assert unsecured.returncode == 1  # the server offers no unsecured endpoint
    wrong = await _linelight("browse", "--source", "nope", "--config", str(config))
    assert (wrong.returncode, wrong.stderr) == (
        2, f"linelight browse: {config} has no opcua source 'nope' (its opcua sources: cell)\n")


async def test_client_certificate_defaults_to_the_state_directory_and_names_are_config_relative(
        secure_server: OpcUaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from linelight.agent.config import load_config

    assert secure_server.certificate is not None
    etc = tmp_path / "etc"
    (etc / "opcua").mkdir(parents=True)
    (etc / "opcua" / "cell.der").write_bytes(secure_server.certificate.read_bytes())
    (etc / "rules.toml").write_text(RULES)
    lines = [f'data_dir = "{tmp_path}/state"', 'rules = ["rules.toml"]']
    for line in _toml(secure_server, tmp_path, trusted=Path("opcua/cell.der"),
                      password="s3cret").splitlines():
        if line.startswith(("certificate =", "private_key =")):
            continue  # left out: into data_dir/opcua/
        lines.append('password_file = "opcua-password"' if line.startswith("password_file =")
                     else line)
    (etc / "agent.toml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # _toml wrote the password there
    config = load_config(etc / "agent.toml")
    (spec,) = config.sources
    assert spec.security is not None  # type: ignore[union-attr]
    assert (spec.security.certificate, spec.security.private_key,  # type: ignore[union-attr]
            spec.security.server_certificate) == (  # type: ignore[union-attr]
        f"{tmp_path}/state/opcua/cell.der", f"{tmp_path}/state/opcua/cell.pem",
        f"{etc}/opcua/cell.der")
    await _connects(spec)
    assert (tmp_path / "state" / "opcua" / "cell.der").is_file()  # generated at first start
