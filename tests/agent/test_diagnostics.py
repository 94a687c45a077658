"""The diagnostics endpoint: loopback by default, read-only without a token, actions logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from linelight.agent.diagnostics import DEFAULT_LISTEN, Diagnostics, parse_listen, render_page
from linelight.agent.metrics import Metrics

STATUS: dict[str, Any] = {
    "agent": "press-7", "version": "0.1.0", "uptime_s": 12.0,
    "health": {"status": "degraded", "reasons": ["broker: not connected"]},
    "state": {"name": "producing", "code": 10000, "for_s": 3.5},
    "lamps": {"red": "off", "amber": "blink_slow", "green": "on"},
    "inputs": {"running": {"value": True, "quality": "good", "age_s": 0.02, "reason": ""},
               "temp": {"value": None, "quality": "stale", "age_s": 9.0, "reason": "timeout"}},
    "queue": {"depth": 42, "bytes": 4200, "oldest_age_s": 8.0, "dropped": 0},
    "broker": {"connected": False, "last_error": "connection refused", "reconnects": 3,
               "published": 10},
    "rules": {"fingerprint": "abc123"},
    "scan": {"ticks": 600, "overruns": 0},
    "components": {"forwarder": {"restarts": 2}},
    "clock": {"synchronized": True, "jumps": 0},
}


class Target:
    def __init__(self) -> None:
        self.metrics_ = Metrics(lambda: STATUS)
        self.lamp_tests = 0
        self.reloads: list[str] = []

    def status(self) -> dict[str, Any]:
        return STATUS

    def health(self) -> tuple[bool, list[str]]:
        return False, ["broker: not connected"]

    def metrics(self) -> bytes:
        return self.metrics_.render()

    async def lamp_test(self) -> str:
        self.lamp_tests += 1
        return "lamp test started"

    async def reload(self, requested_by: str) -> str:
        self.reloads.append(requested_by)
        return "rules reloaded"


async def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                  host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    async with await anyio.connect_tcp(host, port) as s:
        await s.send((head + "\r\n").encode())
        data = b""
        with anyio.fail_after(30):
            while True:
                try:
                    data += await s.receive()
                except anyio.EndOfStream:
                    break
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), hdrs, body


@pytest.mark.anyio
async def test_default_listen_address_is_loopback_only() -> None:
    assert [parse_listen(a)[0] for a in DEFAULT_LISTEN] == ["127.0.0.1"]
    diag = Diagnostics(Target(), [parse_listen(a) for a in DEFAULT_LISTEN][:1], None)
    diag.listen = [("127.0.0.1", 0)]
    async with anyio.create_task_group() as tg:
        bound = await tg.start(diag.run)
        assert all(host == "127.0.0.1" for host, _ in bound)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_read_endpoints_answer_without_a_token(tmp_path: Path) -> None:
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], tmp_path / "token")
    async with anyio.create_task_group() as tg:
        [(_, port)] = await tg.start(diag.run)
        code, _, body = await request(port, "GET", "/healthz")
        assert code == 503 and body.startswith(b"degraded\nbroker: not connected")
        code, hdrs, body = await request(port, "GET", "/status")
        assert code == 200 and hdrs["content-type"] == "application/json"
        assert json.loads(body)["state"]["name"] == "producing"
        code, _, body = await request(port, "GET", "/metrics")
        assert code == 200
        assert b"linelight_queue_depth 42.0" in body
        assert b'linelight_inputs{quality="stale"} 1.0' in body
        code, _, body = await request(port, "GET", "/")
        assert code == 200 and b"producing" in body and b"blink_slow" in body
        code, _, _ = await request(port, "GET", "/nope")
        assert code == 404
        code, _, _ = await request(port, "POST", "/status")
        assert code == 405
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_action_without_token_is_refused_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], token)
    caplog.set_level(logging.WARNING, logger="linelight.agent.diagnostics")
    async with anyio.create_task_group() as tg:
        [(_, port)] = await tg.start(diag.run)
        code, hdrs, _ = await request(port, "POST", "/lamp-test",
                                      {"Tailscale-User-Login": "alice@example.com"})
        assert code == 401 and "bearer" in hdrs["www-authenticate"].lower()
        code, _, _ = await request(port, "POST", "/reload", {"Authorization": "Bearer wrong"})
        assert code == 401
        assert target.lamp_tests == 0 and target.reloads == []
        code, _, body = await request(port, "POST", "/lamp-test",
                                      {"Authorization": "Bearer s3cret",
                                       "Tailscale-User-Login": "bob@example.com"})
        assert code == 200 and target.lamp_tests == 1
        code, _, _ = await request(port, "GET", "/lamp-test", {"Authorization": "Bearer s3cret"})
        assert code == 405
        tg.cancel_scope.cancel()
    text = caplog.text
    assert "/lamp-test refused for alice@example.com via 127.0.0.1" in text
    assert "/reload refused for unidentified caller at 127.0.0.1" in text
    assert "lamp test requested by bob@example.com" in text
    assert "s3cret" not in text


@pytest.mark.anyio
async def test_actions_are_forbidden_when_no_token_file_is_configured(
        caplog: pytest.LogCaptureFixture) -> None:
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], None)
    caplog.set_level(logging.WARNING, logger="linelight.agent.diagnostics")
    async with anyio.create_task_group() as tg:
        [(_, port)] = await tg.start(diag.run)
        code, _, body = await request(port, "POST", "/reload", {"Authorization": "Bearer x"})
        assert code == 403 and b"token_file" in body
        tg.cancel_scope.cancel()
    assert target.reloads == []
    assert "no token_file configured" in caplog.text


@pytest.mark.anyio
async def test_garbage_request_gets_400() -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    async with anyio.create_task_group() as tg:
        [(_, port)] = await tg.start(diag.run)
        async with await anyio.connect_tcp("127.0.0.1", port) as s:
            await s.send(b"hello\r\n\r\n")
            with anyio.fail_after(30):
                assert (await s.receive()).startswith(b"HTTP/1.1 400")
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9750", ("127.0.0.1", 9750)), ("[::1]:9750", ("::1", 9750)),
    ("100.64.1.2:80", ("100.64.1.2", 80)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9750", "localhost", "host:99999", ":80"])
def test_parse_listen_rejects_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="listen address|above 65535"):
        parse_listen(text)


def test_page_escapes_values() -> None:
    page = render_page({**STATUS, "agent": "<script>"})
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.anyio
async def test_token_is_read_from_the_systemd_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "diagnostics-token").write_text("from-credstore\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)],
                       Path("$CREDENTIALS_DIRECTORY/diagnostics-token"))
    async with anyio.create_task_group() as tg:
        [(_, port)] = await tg.start(diag.run)
        code, _, _ = await request(port, "POST", "/lamp-test",
                                   {"Authorization": "Bearer from-credstore"})
        assert code == 200 and target.lamp_tests == 1
        tg.cancel_scope.cancel()
