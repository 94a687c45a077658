"""The diagnostics HTTP endpoint: /healthz, /status, /metrics, a read-only page, two actions.

Binds to 127.0.0.1:9750 unless configured otherwise; remote access goes through
`tailscale serve` in front of that loopback port. Reading needs nothing; the two actions that
change something (`POST /lamp-test`, `POST /reload`) need the token from `token_file`, and every
attempt is logged with who asked (the `Tailscale-User-Login` header `tailscale serve` adds).
A deliberately small HTTP/1.1 server over anyio streams: one request per connection.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from linelight.agent.humanize import format_age
from linelight.agent.metrics import CONTENT_TYPE as METRICS_TYPE
from linelight.agent.secrets import resolve_secret_path
from linelight.rules.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1:9750",)  # loopback only: remote access goes through tailscale serve
MAX_HEAD = 16 * 1024
MAX_BODY = 4 * 1024
READ_TIMEOUT_S = 10.0


class DiagnosticsTarget(Protocol):
    """What the endpoint needs from the running agent."""

    def status(self) -> dict[str, Any]: ...

    def health(self) -> tuple[bool, list[str]]: ...

    def metrics(self) -> bytes: ...

    async def lamp_test(self) -> str: ...

    async def reload(self, requested_by: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    peer: str

    @property
    def who(self) -> str:
        user = self.headers.get("tailscale-user-login", "").strip()
        return f"{user} via {self.peer}" if user else f"unidentified caller at {self.peer}"


@dataclass(frozen=True, slots=True)
class Response:
    code: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra: tuple[tuple[str, str], ...] = ()


def parse_listen(text: str) -> tuple[str, int]:
    """`"127.0.0.1:9750"` or `"[::1]:9750"` -> (host, port). Raises ValueError with a sentence."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"'{text}' is not a listen address; write host:port, "
                         "e.g. '127.0.0.1:9750' or '[::1]:9750'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if number > 65535:
        raise ValueError(f"port {number} in '{text}' is above 65535")
    return host, number


class Diagnostics:
    """Serves the endpoint on every configured address until cancelled."""

    def __init__(self, target: DiagnosticsTarget, listen: list[tuple[str, int]],
                 token_file: Path | None) -> None:
        self.target = target
        self.listen = listen
        self.token_file = token_file
        self.bound: list[tuple[str, int]] = []
        self.refused = 0

    async def run(self, *, task_status: TaskStatus[list[tuple[str, int]]] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        listeners = []
        try:
            for host, port in self.listen:
                listener = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                                           reuse_port=False)
                listeners.append(listener)
                for sub in listener.listeners:
                    addr = sub.extra(SocketAttribute.local_address)
                    self.bound.append((str(addr[0]), int(addr[1])))
            log.info("diagnostics on %s", ", ".join(f"{h}:{p}" for h, p in self.bound))
            task_status.started(list(self.bound))
            async with anyio.create_task_group() as tg:
                for listener in listeners:
                    tg.start_soon(listener.serve, self._serve_one)
        finally:
            for listener in listeners:
                await listener.aclose()

    async def _serve_one(self, stream: SocketStream) -> None:
        async with stream:
            try:
                peer_addr = stream.extra(SocketAttribute.remote_address)
                peer = f"{peer_addr[0]}:{peer_addr[1]}" if isinstance(peer_addr, tuple) else "?"
                with anyio.fail_after(READ_TIMEOUT_S):
                    request = await _read_request(stream, peer)
                response = await self.handle(request) if request else Response(400, b"bad request\n")
                await stream.send(_encode(response))
            except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError,
                    anyio.EndOfStream, ConnectionError):
                return

    async def handle(self, req: Request) -> Response:
        routes: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/healthz": self._healthz, "/status": self._status, "/metrics": self._metrics,
            "/": self._page, "/lamp-test": self._lamp_test, "/reload": self._reload,
        }
        path = req.path.split("?", 1)[0]
        handler = routes.get(path)
        if handler is None:
            return Response(404, b"not found; try /, /healthz, /status or /metrics\n")
        mutating = path in ("/lamp-test", "/reload")
        if mutating and req.method != "POST":
            return Response(405, b"use POST\n", extra=(("Allow", "POST"),))
        if not mutating and req.method not in ("GET", "HEAD"):
            return Response(405, b"read-only endpoint: use GET\n", extra=(("Allow", "GET"),))
        if mutating:
            refusal = self._authorize(req, path)
            if refusal is not None:
                return refusal
        return await handler(req)

    # -- authorization -------------------------------------------------------------------------
    def _authorize(self, req: Request, path: str) -> Response | None:
        if self.token_file is None:
            self.refused += 1
            log.warning("%s refused for %s: no token_file configured, actions are disabled",
                        path, req.who)
            return Response(403, b"actions are disabled: set [diagnostics] token_file\n")
        try:
            token_path = resolve_secret_path(str(self.token_file), "token_file")
            token = token_path.read_text(encoding="utf-8").strip()
        except (OSError, ConfigError) as exc:
            self.refused += 1
            log.warning("%s refused for %s: cannot read token file %s: %s",
                        path, req.who, self.token_file, getattr(exc, "strerror", None) or exc)
            return Response(403, b"actions are disabled: the token file cannot be read\n")
        given = req.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if not token or scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()):
            self.refused += 1
            log.warning("%s refused for %s: %s", path, req.who,
                        "wrong token" if given else "no token")
            return Response(401, b"a token is required: Authorization: Bearer <token>\n",
                            extra=(("WWW-Authenticate", 'Bearer realm="linelight"'),))
        return None

    # -- handlers -----------------------------------------------------------------------------
    async def _healthz(self, req: Request) -> Response:
        ok, reasons = self.target.health()
        body = "ok\n" if ok else "degraded\n" + "".join(f"{r}\n" for r in reasons)
        return Response(200 if ok else 503, body.encode())

    async def _status(self, req: Request) -> Response:
        body = json.dumps(self.target.status(), indent=1, default=str).encode() + b"\n"
        return Response(200, body, "application/json")

    async def _metrics(self, req: Request) -> Response:
        return Response(200, self.target.metrics(), METRICS_TYPE)

    async def _page(self, req: Request) -> Response:
        return Response(200, render_page(self.target.status()).encode(), "text/html; charset=utf-8")

    async def _lamp_test(self, req: Request) -> Response:
        log.warning("lamp test requested by %s", req.who)
        return Response(200, (await self.target.lamp_test() + "\n").encode())

    async def _reload(self, req: Request) -> Response:
        log.warning("rule reload requested by %s", req.who)
        return Response(200, (await self.target.reload(req.who) + "\n").encode())


async def _read_request(stream: SocketStream, peer: str) -> Request | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None
        buf += await stream.receive(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "0")
    remaining = min(int(length) if length.isdigit() else 0, MAX_BODY) - len(rest)
    while remaining > 0:  # drain a small body so the client sees our reply, not a reset
        chunk = await stream.receive(4096)
        remaining -= len(chunk)
    return Request(parts[0].upper(), parts[1], headers, peer)


def _encode(r: Response) -> bytes:
    head = [f"HTTP/1.1 {r.code} {HTTPStatus(r.code).phrase}",
            f"Content-Type: {r.content_type}", f"Content-Length: {len(r.body)}",
            "Cache-Control: no-store", "Connection: close"]
    head += [f"{k}: {v}" for k, v in r.extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body


# -- the read-only page -----------------------------------------------------------------------
_LAMP_COLOURS = {"red": "#e53935", "amber": "#ffb300", "green": "#43a047", "blue": "#1e88e5",
                 "white": "#eeeeee", "buzzer": "#8e24aa"}


def render_page(s: Mapping[str, Any]) -> str:
    e = html.escape
    state = s.get("state", {})
    health = s.get("health", {})
    lamps = "".join(
        f'<span class="lamp {e(str(p))}" style="--c:{_LAMP_COLOURS.get(name, "#999")}"'
        f' title="{e(name)}: {e(str(p))}">{e(name)}</span>'
        for name, p in s.get("lamps", {}).items())
    inputs = "".join(
        f"<tr><td>{e(n)}</td><td>{e(str(i.get('value')))}</td><td>{e(str(i.get('quality')))}"
        f"</td><td>{format_age(i.get('age_s'))}</td><td>{e(str(i.get('reason', '')))}</td></tr>"
        for n, i in s.get("inputs", {}).items())
    q = s.get("queue", {})
    b = s.get("broker", {})
    reasons = "".join(f"<li>{e(str(r))}</li>" for r in health.get("reasons", []))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2"><title>linelight {e(str(s.get('agent', '')))}</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5em;background:#111;color:#ddd}}
td,th{{padding:2px 10px;text-align:left}} .lamp{{display:inline-block;padding:6px 10px;
margin:2px;border-radius:6px;background:#333;color:#000}} .lamp.on{{background:var(--c)}}
.lamp.blink_slow{{animation:b 1s steps(1) infinite;background:var(--c)}}
.lamp.blink_fast{{animation:b .25s steps(1) infinite;background:var(--c)}}
@keyframes b{{50%{{background:#333}}}} .bad{{color:#ff8a80}}</style></head><body>
<h1>linelight {e(str(s.get('agent', '')))} <small>{e(str(s.get('version', '')))}</small></h1>
<p>health: <b class="{'' if health.get('status') == 'ok' else 'bad'}">{e(str(health.get('status')))}</b>
<ul>{reasons}</ul></p>
<p>state: <b>{e(str(state.get('name')))}</b> (code {e(str(state.get('code')))}) for
{format_age(state.get('for_s'))}</p><p>{lamps}</p>
<p>queue: {e(str(q.get('depth')))} events, {e(str(q.get('bytes')))} bytes, oldest
{format_age(q.get('oldest_age_s'))}, dropped {e(str(q.get('dropped')))}</p>
<p>broker: {'connected' if b.get('connected') else 'disconnected'}
{e(str(b.get('last_error') or ''))}</p>
<table><tr><th>input</th><th>value</th><th>quality</th><th>age</th><th>reason</th></tr>
{inputs}</table><p><a href="/status">/status</a> · <a href="/metrics">/metrics</a> ·
<a href="/healthz">/healthz</a></p></body></html>
"""

