"""OPC UA security against asyncua's own Server: Basic256Sha256 SignAndEncrypt with certificates
linelight generates, an untrusted server certificate and a wrong password are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from harness.waiting import wait_until
from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality
from tests.hw.helpers import config_problems, read_config, running_sources, wait_sample
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
    async with running_sources(toml) as (hw, table):
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD and s.value is True)
    assert (tmp_path / "client" / "cert.der").is_file()  # generated on first start
    assert (tmp_path / "client" / "key.pem").is_file()


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
