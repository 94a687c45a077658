"""The diagnostics endpoint: loopback by default, read-only without a token, actions logged."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from linelight.agent.addresses import DEFAULT_LISTEN, parse_listen
from linelight.agent.diagnostics import Diagnostics, DiagnosticsBindError, render_page
from linelight.agent.health import Verdict
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
        self.verdict = Verdict("degraded", ("broker: not connected",), ())
        self.history_asks: list[tuple[float, int]] = []

    def status(self) -> dict[str, Any]:
        return STATUS

    def health(self) -> Verdict:
        return self.verdict

    def metrics(self) -> bytes:
        return self.metrics_.render()

    async def lamp_test(self) -> str:
        self.lamp_tests += 1
        return "lamp test started"

    async def reload(self, requested_by: str) -> str:
        self.reloads.append(requested_by)
        return "rules reloaded"

    async def history_view(self, hours: float, points: int) -> dict[str, Any]:
        self.history_asks.append((hours, points))
        return {"asked": [hours, points], "states": [], "marks": [], "depth": []}


@asynccontextmanager
async def serving(diag: Diagnostics) -> AsyncIterator[int]:
    """The endpoint running on its (one) free loopback port, stopped at the end."""
    async with anyio.create_task_group() as tg:
        [(_, port)] = await tg.start(diag.run)
        yield port
        tg.cancel_scope.cancel()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    """A token file holding `s3cret`."""
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    return path


async def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                  host: str = "127.0.0.1", host_header: str | None = None
                  ) -> tuple[int, dict[str, str], bytes]:
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
            "Content-Length: 0\r\n")
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return split_response(await exchange(port, (head + "\r\n").encode(), host))


async def exchange(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, read the whole answer until the server closes."""
    async with await anyio.connect_tcp(host, port) as s:
        await s.send(data)
        answer = b""
        with anyio.fail_after(30):
            while True:
                try:
                    answer += await s.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    return answer


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
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
    async with serving(diag) as port:
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


@pytest.mark.anyio
async def test_action_without_token_is_refused_and_logged(
        token: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], token)
    caplog.set_level(logging.WARNING, logger="linelight.agent.diagnostics")
    async with serving(diag) as port:
        code, hdrs, _ = await request(port, "POST", "/lamp-test",
                                      {"Tailscale-User-Login": "alice@example.com"})
        assert code == 401 and "bearer" in hdrs["www-authenticate"].lower()
        code, _, body = await request(port, "POST", "/reload", {"Authorization": "Bearer wrong"})
        assert code == 401 and body.startswith(b"wrong token")
        assert target.lamp_tests == 0 and target.reloads == []
        code, _, body = await request(port, "POST", "/lamp-test",
                                      {"Authorization": "Bearer s3cret",
                                       "Tailscale-User-Login": "bob@example.com"})
        assert code == 200 and target.lamp_tests == 1
        code, _, _ = await request(port, "GET", "/lamp-test", {"Authorization": "Bearer s3cret"})
        assert code == 405
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
    async with serving(diag) as port:
        code, _, body = await request(port, "POST", "/reload", {"Authorization": "Bearer x"})
        assert code == 403 and b"token_file" in body
    assert target.reloads == []
    assert "no token_file configured" in caplog.text


@pytest.mark.anyio
async def test_garbage_request_gets_400() -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    async with serving(diag) as port, await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(b"hello\r\n\r\n")
        with anyio.fail_after(30):
            assert (await s.receive()).startswith(b"HTTP/1.1 400")


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
    hostile = "</script><script>alert(1)</script>"
    page = render_page({**STATUS, "agent": hostile, "state": {"name": "<b>&"}})
    assert hostile not in page and "<b>&" not in page
    assert "<title>linelight &lt;/script&gt;" in page  # the title, escaped as HTML
    assert page.count("</script>") == 2  # the page's own two script elements, nothing more
    embedded = page.split('id="initial">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["agent"] == hostile  # the value itself arrives intact
    page = render_page({**STATUS, "agent": "__STATUS__"})  # a valid agent_id
    assert "<title>linelight __STATUS__</title>" in page
    assert json.loads(page.split('id="initial">', 1)[1].split("</script>", 1)[0])["agent"] == \
        "__STATUS__"


def test_page_needs_nothing_from_another_site() -> None:
    page = render_page(STATUS)
    assert "http://" not in page and "https://" not in page and "//" not in page.split(
        "<script>", 1)[0].replace("data:,", "")
    assert '<meta name="viewport"' in page and "prefers-color-scheme:dark" in page


@pytest.mark.anyio
async def test_history_is_served_with_bounded_parameters() -> None:
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], None)
    async with serving(diag) as port:
        code, _, body = await request(port, "GET", "/history?hours=8&points=300")
        assert code == 200 and json.loads(body)["asked"] == [8.0, 300]
        code, _, body = await request(port, "GET", "/history")
        assert code == 200 and json.loads(body)["asked"] == [24.0, 1000]
        for query in ("hours=1e9", "hours=nan", "points=0", "points=999999", "hours=x",
                      "evil=1", "hours=1&hours=2&hours=3&hours=4&hours=5", "%zz"):
            code, _, body = await request(port, "GET", f"/history?{query}")
            assert code == 400, (query, body)
        code, _, _ = await request(port, "POST", "/history")
        assert code == 405
    assert target.history_asks == [(8.0, 300), (24.0, 1000)]


@pytest.mark.anyio
async def test_token_is_read_from_the_systemd_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "diagnostics-token").write_text("from-credstore\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)],
                       Path("$CREDENTIALS_DIRECTORY/diagnostics-token"))
    async with serving(diag) as port:
        code, _, _ = await request(port, "POST", "/lamp-test",
                                   {"Authorization": "Bearer from-credstore"})
        assert code == 200 and target.lamp_tests == 1


# -- hostile clients (issue 12, group 5) ----------------------------------------------------------

@pytest.mark.anyio
async def test_bound_addresses_are_not_repeated_when_the_endpoint_restarts() -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    for _ in range(3):  # what the supervisor does after a failure: run the same object again
        async with anyio.create_task_group() as tg:
            await tg.start(diag.run)
            tg.cancel_scope.cancel()
    assert len(diag.bound) == 1


MALFORMED = [
    # (what, raw request with {port} for the bound port, expected status)
    ("Content-Length of a Unicode digit",
     "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: ²\r\n\r\n", 400),
    ("Content-Length of 4,301 digits",
     "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: " + "9" * 4301
     + "\r\n\r\n", 400),
    ("a body above the limit",
     "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 99999\r\n\r\n", 413),
    ("a negative Content-Length",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: -1\r\n\r\n", 400),
    ("no Host header", "GET /status HTTP/1.1\r\n\r\n", 400),
    ("two Host headers",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n", 400),
    ("a Host that is not a name", "GET /status HTTP/1.1\r\nHost: a b:{port}\r\n\r\n", 400),
    ("a Host with a port above 65535",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:99999999\r\n\r\n", 400),
    ("a LF inside a header value",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Note: a\nb\r\n\r\n", 400),
    ("a folded header line",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Note: a\r\n b\r\n\r\n", 400),
    ("a header name with a space",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX Note: a\r\n\r\n", 400),
    ("an absolute-form target",
     "GET http://evil.example/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", 400),
    ("a request line with two spaces",
     "GET  /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", 400),
    ("HTTP/2.0 in the request line",
     "GET /status HTTP/2.0\r\nHost: 127.0.0.1:{port}\r\n\r\n", 505),
    ("a chunked body",
     "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ("too many header lines",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "X-A: 1\r\n" * 100 + "\r\n", 431),
    ("a head above 16 KiB",
     "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-A: " + "a" * 20000 + "\r\n\r\n", 431),
]


@pytest.mark.anyio
@pytest.mark.parametrize("what,raw,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_a_malformed_request_gets_an_error_and_the_server_keeps_serving(
        what: str, raw: str, expected: int) -> None:
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], None)
    async with serving(diag) as port:
        code, _, body = split_response(await exchange(port, raw.replace("{port}", str(port))
                                                      .encode("utf-8")))
        assert code == expected, body
        assert b"producing" not in body and target.reloads == []
        code, _, _ = await request(port, "GET", "/healthz")
        assert code == 503  # the Target is degraded: the endpoint still answers


class FailingTarget(Target):
    def status(self) -> dict[str, Any]:
        raise KeyError("inputs")


@pytest.mark.anyio
async def test_a_failing_handler_gets_500_and_the_server_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    diag = Diagnostics(FailingTarget(), [("127.0.0.1", 0)], None)
    caplog.set_level(logging.WARNING, logger="linelight.agent.diagnostics")
    async with serving(diag) as port:
        for _ in range(3):
            code, _, body = await request(port, "GET", "/status")
            assert code == 500 and b"log" in body and b"KeyError" not in body
        code, _, _ = await request(port, "GET", "/healthz")
        assert code == 503
    assert "GET /status from 127.0.0.1" in caplog.text and "KeyError: 'inputs'" in caplog.text


@pytest.mark.anyio
async def test_connections_beyond_the_cap_get_503_until_some_finish() -> None:
    from harness.waiting import wait_until
    from linelight.agent import diagnostics as module

    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    async with serving(diag) as port:
        idle = [await anyio.connect_tcp("127.0.0.1", port)
                for _ in range(module.MAX_CONNECTIONS)]
        await wait_until(lambda: diag.active == module.MAX_CONNECTIONS,
                         what="every idle connection being served")
        code, hdrs, _ = split_response(await exchange(port, b"GET /healthz HTTP/1.1\r\n"))
        assert code == 503 and hdrs["retry-after"] == "1"
        assert diag.active == module.MAX_CONNECTIONS
        for s in idle:
            await s.aclose()
        await wait_until(lambda: diag.active == 0, what="the idle connections to be closed")
        code, _, _ = await request(port, "GET", "/healthz")
        assert code == 503  # answered again (the Target is degraded)


@pytest.mark.anyio
async def test_a_client_that_sends_nothing_is_disconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    from linelight.agent import diagnostics as module

    monkeypatch.setattr(module, "REQUEST_TIMEOUT_S", 0.2)
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    async with serving(diag) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as s:
            await s.send(b"GET /status HTTP/1.1\r\n")  # and never the rest of the head
            with anyio.fail_after(30), pytest.raises(anyio.EndOfStream):
                await s.receive()
        assert diag.active == 0


HOSTS = [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST.:{port}", 200),
    ("[::1]:{port}", 200), ("press-07.tail1234.ts.net", 200), ("Press-07.Tail1234.ts.net:443", 200),
    ("grafana.plant.example:8443", 200),
    ("evil.example", 421), ("evil.example:{port}", 421), ("localhost:1", 421), ("localhost", 421),
    ("grafana.plant.example", 421), ("grafana.plant.example:443", 421), ("10.0.0.1:{port}", 421),
]


@pytest.mark.anyio
@pytest.mark.parametrize("host,expected", HOSTS, ids=[h for h, _ in HOSTS])
async def test_only_loopback_and_configured_hosts_are_served(host: str, expected: int) -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None,
                       allowed_hosts=["press-07.tail1234.ts.net", "grafana.plant.example:8443"])
    async with serving(diag) as port:
        code, _, body = await request(port, "GET", "/status",
                                      host_header=host.replace("{port}", str(port)))
        assert code == expected
        if expected == 421:
            assert b"allowed_hosts" in body and b"producing" not in body and diag.refused == 1


@pytest.mark.anyio
async def test_a_refused_host_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    caplog.set_level(logging.WARNING, logger="linelight.agent.diagnostics")
    async with serving(diag) as port:
        for _ in range(3):
            code, _, _ = await request(port, "GET", "/healthz", host_header="evil.example")
            assert code == 421
    assert caplog.text.count("refused Host 'evil.example'") == 1 and diag.refused == 3


@pytest.mark.anyio
async def test_a_forged_line_in_a_caller_name_reaches_the_log_escaped(
        token: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = Target()
    diag = Diagnostics(target, [("127.0.0.1", 0)], token)
    caplog.set_level(logging.DEBUG, logger="linelight.agent.diagnostics")
    forged = "mallory\u2028ERROR linelight forged\u0085line".encode()  # UTF-8 line breaks
    async with serving(diag) as port:
        for login, expected in ((b"mallory\nWARNING forged", 400), (forged, 200)):
            raw = (f"POST /lamp-test HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Authorization: Bearer s3cret\r\nTailscale-User-Login: ").encode()
            code, _, _ = split_response(await exchange(port, raw + login + b"\r\n\r\n"))
            assert code == expected
    assert target.lamp_tests == 1 and target.reloads == []
    messages = [r.getMessage() for r in caplog.records]
    assert all(len(m.splitlines()) == 1 for m in messages), messages
    assert "lamp test requested by mallory\\u2028ERROR linelight forged\\x85line via" in caplog.text


@pytest.mark.anyio
async def test_head_answers_the_headers_without_a_body() -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None)
    async with serving(diag) as port:
        _, get_headers, get_body = await request(port, "GET", "/status")
        code, hdrs, body = await request(port, "HEAD", "/status")
        assert code == 200 and body == b""
        assert hdrs["content-length"] == get_headers["content-length"] == str(len(get_body))
        code, _, body = await request(port, "HEAD", "/nope")
        assert code == 404 and body == b""


@pytest.mark.anyio
async def test_with_token_for_reads_only_healthz_is_open(token: Path) -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], token, token_for_reads=True)
    bearer = {"Authorization": "Bearer s3cret"}
    async with serving(diag) as port:
        code, _, _ = await request(port, "GET", "/healthz")
        assert code == 503  # answered without a token (degraded Target)
        for path in ("/status", "/metrics", "/"):
            code, _, body = await request(port, "GET", path)
            assert code == 401 and b"producing" not in body, path
            code, _, _ = await request(port, "GET", path, bearer)
            assert code == 200, path
        code, _, _ = await request(port, "GET", "/status", {"Authorization": "Bearer nope"})
        assert code == 401


@pytest.mark.anyio
async def test_late_scans_are_in_the_metrics() -> None:
    status = {**STATUS, "scan": {"ticks": 600, "overruns": 1, "skipped": 7}}
    text = Metrics(lambda: status).render().decode()
    assert "linelight_scan_skipped_total 7.0" in text


@pytest.mark.anyio
async def test_lamp_holds_their_timeouts_and_refusals_are_in_the_metrics() -> None:
    status = {**STATUS, "scan": {"lamp_holds": 5, "lamp_hold_timeouts": 2,
                                 "lamp_hold_refused": 1}}
    text = Metrics(lambda: status).render().decode()
    assert "linelight_lamp_holds_total 5.0" in text
    assert "linelight_lamp_hold_timeouts_total 2.0" in text
    assert "linelight_lamp_hold_refused_total 1.0" in text


@pytest.mark.anyio
async def test_healthz_is_200_with_warnings_and_lists_them() -> None:
    target = Target()
    target.verdict = Verdict("ok", (), ("clock: wall clock not synchronized",))
    async with serving(Diagnostics(target, [("127.0.0.1", 0)], None)) as port:
        code, _, body = await request(port, "GET", "/healthz")
    assert (code, body) == (200, b"ok\nwarning: clock: wall clock not synchronized\n")


@pytest.mark.anyio
async def test_a_port_already_taken_is_named_in_the_error() -> None:
    async with serving(Diagnostics(Target(), [("127.0.0.1", 0)], None)) as port:
        with pytest.raises(DiagnosticsBindError) as caught:
            await Diagnostics(Target(), [("127.0.0.1", port)], None).run()
    assert str(caught.value).startswith(f"diagnostics cannot listen on 127.0.0.1:{port}: ")
    assert "another process" in str(caught.value)


TAILNET = [("press-07.tail1234.ts.net", 200), ("PRESS-07.tail-5678.ts.net:443", 200),
           ("press-07.tail1234.ts.net:80", 421), ("press-08.tail1234.ts.net", 421),
           ("press-07.ts.net", 421), ("press-07.tail1234.ts.net.evil.example", 421),
           ("x.press-07.tail1234.ts.net", 421)]


@pytest.mark.anyio
@pytest.mark.parametrize("host,expected", TAILNET, ids=[h for h, _ in TAILNET])
async def test_the_tailscale_serve_name_of_this_machine_is_served_without_allowed_hosts(
        host: str, expected: int) -> None:
    diag = Diagnostics(Target(), [("127.0.0.1", 0)], None, tailnet_machine="press-07")
    async with serving(diag) as port:
        code, _, _ = await request(port, "GET", "/status", host_header=host)
    assert code == expected


@pytest.mark.anyio
async def test_without_tailnet_a_ts_net_name_needs_allowed_hosts() -> None:
    async with serving(Diagnostics(Target(), [("127.0.0.1", 0)], None)) as port:
        code, _, _ = await request(port, "GET", "/status", host_header="press-07.tail1234.ts.net")
    assert code == 421
