"""The diagnostics HTTP endpoint: /healthz, /status, /metrics, /history, the page, two actions.

Binds to 127.0.0.1:9750 unless configured otherwise; remote access goes through
`tailscale serve` in front of that loopback port. Reading needs nothing; the two actions that
change something (`POST /lamp-test`, `POST /reload`) need the token from `token_file`, and every
attempt is logged with who asked (the `Tailscale-User-Login` header `tailscale serve` adds).
A non-loopback bind (allowed only with `allow_remote`, checked at config load) needs the token
for everything but `/healthz`.

A deliberately small HTTP/1.1 server over anyio streams, one request per connection, that
expects hostile clients: a malformed request gets 400 (413 for a large body), a handler that
raises gets 500, and neither ends the server; at most `MAX_CONNECTIONS` connections are served
at once (more get 503 at once) and each must deliver its request within `REQUEST_TIMEOUT_S`.
Only the Hosts the operator configured are served (421 otherwise), against DNS rebinding, and
every client-supplied value is made printable before it reaches the log.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hmac
import html
import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from linelight.agent.addresses import (
    address_of,
    is_loopback,
    parse_host,
    printable,
)
from linelight.agent.health import Verdict
from linelight.agent.history import MAX_HOURS as MAX_HISTORY_HOURS
from linelight.agent.history import MAX_POINTS as MAX_HISTORY_POINTS
from linelight.agent.humanize import describe_error
from linelight.agent.metrics import CONTENT_TYPE as METRICS_TYPE
from linelight.agent.secrets import resolve_secret_path
from linelight.rules.errors import ConfigError, LinelightError

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # request line and headers
MAX_HEADERS = 64
MAX_BODY = 4 * 1024
MAX_CONNECTIONS = 32  # served at once; the next ones get 503 and are closed at once
REQUEST_TIMEOUT_S = 5.0  # to deliver the whole request (head and body) after connecting
WRITE_TIMEOUT_S = 10.0  # to take the whole response
MAX_HOSTS_LOGGED = 16  # distinct refused Hosts logged at warning level; later ones at debug

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() is also true for '²'


def token_file_warning(token_file: Path | None) -> str | None:
    """A sentence when the configured token file does not exist (said by `check` and at start,
    not first on a POST); None when it exists, is not configured, or is not visible here
    (`$CREDENTIALS_DIRECTORY` outside the service, a directory this user cannot read:
    `linelight doctor` reads it as the service does)."""
    if token_file is None:
        return None
    try:
        resolve_secret_path(str(token_file), "token_file").stat()
    except (FileNotFoundError, NotADirectoryError):
        return (f"[diagnostics] token_file {token_file} does not exist: POST /lamp-test and "
                "/reload are refused until it does (create it: openssl rand -hex 24 > FILE, "
                "mode 0600)")
    except (OSError, ConfigError):
        return None
    return None


class DiagnosticsTarget(Protocol):
    """What the endpoint needs from the running agent."""

    def status(self) -> dict[str, Any]: ...

    def health(self) -> Verdict: ...

    def metrics(self) -> bytes: ...

    async def lamp_test(self) -> str: ...

    async def reload(self, requested_by: str) -> str: ...

    async def history_view(self, hours: float, points: int) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    peer: str
    host: tuple[str, int | None] = ("", None)  # the Host header, parsed by `parse_host`
    local: tuple[str, int] = ("", 0)  # the address the client connected to

    @property
    def who(self) -> str:
        """The caller for the log and the journal: printable, never a forged line."""
        user = printable(self.headers.get("tailscale-user-login", "").strip())
        return f"{user} via {self.peer}" if user else f"unidentified caller at {self.peer}"


@dataclass(frozen=True, slots=True)
class Response:
    code: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra: tuple[tuple[str, str], ...] = ()


class DiagnosticsBindError(LinelightError):
    """The endpoint cannot listen on a configured address: the sentence names it."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        why = exc.strerror or str(exc)
        hint = (f"another process (another agent?) holds it; `ss -ltnp 'sport = :{port}'` "
                "names it") if exc.errno == errno.EADDRINUSE else "check [diagnostics] listen"
        super().__init__(f"diagnostics cannot listen on {shown}: {why}; {hint}")
        self.host, self.port = host, port


class BadRequest(Exception):
    """A request the server will not handle: answered with `code` and the sentence."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> Response:
        return Response(self.code, f"{self.message}\n".encode("latin-1", "replace"))


class Diagnostics:
    """Serves the endpoint on every configured address until cancelled."""

    def __init__(self, target: DiagnosticsTarget, listen: list[tuple[str, int]],
                 token_file: Path | None, *, allowed_hosts: Sequence[str] = (),
                 token_for_reads: bool = False, tailnet_machine: str | None = None) -> None:
        self.target = target
        # `tailscale serve` passes the browser's Host on: `<machine>.<tailnet>.ts.net`. Only
        # Tailscale answers for ts.net names, so no page elsewhere can re-point one at this
        # machine (DNS rebinding); the machine label must be this host's.
        self.tailnet = (re.compile(re.escape(tailnet_machine.lower()) + r"\.[a-z0-9-]+\.ts\.net")
                        if tailnet_machine else None)
        self.listen = listen
        self.token_file = token_file
        self.allowed_hosts = [parse_host(h) for h in allowed_hosts]
        self.token_for_reads = token_for_reads  # a non-loopback bind: only /healthz is open
        self.bound: list[tuple[str, int]] = []
        self.refused = 0  # requests refused: no or wrong token, or a Host not configured
        self.active = 0  # connections being served now
        self._busy_logged = False
        self._hosts_logged: set[str] = set()

    async def run(self, *, task_status: TaskStatus[list[tuple[str, int]]] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        listeners = []
        self.bound = []  # a restart binds afresh: the list is this run's, not a history
        try:
            bound: list[tuple[str, int]] = []
            for host, port in self.listen:
                try:
                    listener = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                                               reuse_port=False)
                except OSError as exc:
                    raise DiagnosticsBindError(host, port, exc) from None
                listeners.append(listener)
                for sub in listener.listeners:
                    addr = sub.extra(SocketAttribute.local_address)
                    bound.append((str(addr[0]), int(addr[1])))
            self.bound = bound
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
            if self.active >= MAX_CONNECTIONS:
                await self._refuse_busy(stream)
                return
            self.active += 1
            try:
                await self._exchange(stream)
            except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError,
                    anyio.EndOfStream, OSError):
                return  # the client went away or was too slow: nothing to answer
            finally:
                self.active -= 1
                if self.active < MAX_CONNECTIONS // 2:
                    self._busy_logged = False

    async def _refuse_busy(self, stream: SocketStream) -> None:
        if not self._busy_logged:
            self._busy_logged = True
            log.warning("diagnostics: %d connections open, refusing more until some finish",
                        self.active)
        busy = Response(503, b"busy: too many open connections; retry in a second\n",
                        extra=(("Retry-After", "1"),))
        with anyio.move_on_after(1.0), contextlib.suppress(
                anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.send(_encode(busy))

    async def _exchange(self, stream: SocketStream) -> None:
        peer = _address_text(stream.extra(SocketAttribute.remote_address))
        local_addr = stream.extra(SocketAttribute.local_address)
        local = (str(local_addr[0]), int(local_addr[1])) if isinstance(local_addr, tuple) \
            else ("", 0)
        head_only = False
        try:
            with anyio.fail_after(REQUEST_TIMEOUT_S):
                request = await _read_request(stream, peer, local)
        except BadRequest as exc:
            log.debug("diagnostics: %d for %s: %s", exc.code, peer, printable(exc.message))
            response = exc.response()
        else:
            head_only = request.method == "HEAD"
            response = await self._answer(request)
        with anyio.fail_after(WRITE_TIMEOUT_S):
            await stream.send(_encode(response, head_only=head_only))

    async def _answer(self, req: Request) -> Response:
        try:
            return await self.handle(req)
        except BadRequest as exc:  # a handler refusing its query string
            return exc.response()
        except Exception as exc:  # one failing request must not end the endpoint: log, answer 500
            log.error("diagnostics: %s %s from %s failed: %s", req.method, printable(req.path),
                      req.peer, describe_error(exc), exc_info=log.isEnabledFor(logging.DEBUG))
            return Response(500, b"internal error: the agent's log has the details\n")

    async def handle(self, req: Request) -> Response:
        misdirected = self._check_host(req)
        if misdirected is not None:
            return misdirected
        routes: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/healthz": self._healthz, "/status": self._status, "/metrics": self._metrics,
            "/": self._page, "/history": self._history, "/lamp-test": self._lamp_test, "/reload": self._reload,
        }
        path = req.path.split("?", 1)[0]
        handler = routes.get(path)
        if handler is None:
            return Response(404, b"not found; try /, /healthz, /status, /history or /metrics\n")
        mutating = path in ("/lamp-test", "/reload")
        if mutating and req.method != "POST":
            return Response(405, b"use POST\n", extra=(("Allow", "POST"),))
        if not mutating and req.method not in ("GET", "HEAD"):
            return Response(405, b"read-only endpoint: use GET\n", extra=(("Allow", "GET, HEAD"),))
        if mutating or (self.token_for_reads and path != "/healthz"):
            refusal = self._authorize(req, path)
            if refusal is not None:
                return refusal
        return await handler(req)

    # -- authorization -------------------------------------------------------------------------
    def _check_host(self, req: Request) -> Response | None:
        """DNS rebinding: a page of another site, resolved to this machine, names its own Host."""
        name, port = req.host
        for allowed, allowed_port in self.allowed_hosts:
            if name == allowed and allowed_port in (None, port if port is not None else 80):
                return None
        if self.tailnet is not None and self.tailnet.fullmatch(name) and port in (None, 443):
            return None
        local_host, local_port = req.local
        local = address_of(local_host)
        if (port if port is not None else 80) == local_port and (
                is_loopback(name) or (local is not None and address_of(name) == local)):
            return None
        self.refused += 1
        if name not in self._hosts_logged:
            level = logging.DEBUG
            if len(self._hosts_logged) < MAX_HOSTS_LOGGED:
                self._hosts_logged.add(name)
                level = logging.WARNING
            log.log(level, "diagnostics: refused Host '%s' from %s: not a loopback name or in "
                           "[diagnostics] allowed_hosts", printable(_host_text(req.host)), req.peer)
        return Response(421, (f"this agent does not answer to Host '{_host_text(req.host)}'; "
                              "add the name to [diagnostics] allowed_hosts\n"
                              ).encode("latin-1", "replace"))

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
                value.strip().encode("latin-1"), token.encode()):
            self.refused += 1
            log.warning("%s refused for %s: %s", path, req.who,
                        "wrong token" if given else "no token")
            body = (b"wrong token: the Authorization header does not carry the token in the "
                    b"agent's token_file\n" if given else
                    b"a token is required: Authorization: Bearer <token>\n")
            return Response(401, body,
                            extra=(("WWW-Authenticate", 'Bearer realm="linelight"'),))
        return None

    # -- handlers -----------------------------------------------------------------------------
    async def _healthz(self, req: Request) -> Response:
        verdict = self.target.health()
        lines = [verdict.status, *verdict.reasons, *(f"warning: {w}" for w in verdict.warnings)]
        return Response(200 if verdict.ok else 503, "".join(f"{ln}\n" for ln in lines).encode())

    async def _status(self, req: Request) -> Response:
        body = json.dumps(self.target.status(), indent=1, default=str).encode() + b"\n"
        return Response(200, body, "application/json")

    async def _metrics(self, req: Request) -> Response:
        return Response(200, self.target.metrics(), METRICS_TYPE)

    async def _page(self, req: Request) -> Response:
        return Response(200, render_page(self.target.status()).encode(), "text/html; charset=utf-8")

    async def _history(self, req: Request) -> Response:
        hours, points = parse_history_query(req.path)
        body = json.dumps(await self.target.history_view(hours, points), separators=(",", ":"))
        return Response(200, body.encode() + b"\n", "application/json")

    async def _lamp_test(self, req: Request) -> Response:
        log.warning("lamp test requested by %s", req.who)
        return Response(200, (await self.target.lamp_test() + "\n").encode())

    async def _reload(self, req: Request) -> Response:
        log.warning("rule reload requested by %s", req.who)
        return Response(200, (await self.target.reload(req.who) + "\n").encode())


def _address_text(addr: Any) -> str:
    if not isinstance(addr, tuple):
        return "?"
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def _host_text(host: tuple[str, int | None]) -> str:
    name, port = host
    shown = f"[{name}]" if ":" in name else name
    return shown if port is None else f"{shown}:{port}"


async def _read_request(stream: SocketStream, peer: str, local: tuple[str, int]) -> Request:
    """One request from the stream; BadRequest for anything this server will not handle."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")
        buf += await stream.receive(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")
    method, target, headers = parse_head(head)
    try:
        host = parse_host(headers["host"])
    except ValueError as exc:
        raise BadRequest(400, f"bad Host header: {exc}") from None
    remaining = _content_length(headers) - len(rest)
    while remaining > 0:  # drain a small body so the client sees our reply, not a reset
        chunk = await stream.receive(4096)
        remaining -= len(chunk)
    return Request(method, target, headers, peer, host, local)


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers (without the blank line) -> (method, target, headers).

    Strict where leniency is a risk: one Host, no control characters (a LF inside a value
    could forge a log line), no folded lines, header names that are tokens.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest(400, "the request line is not 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if not version.startswith("HTTP/"):
            raise BadRequest(400, "the request line is not 'METHOD /path HTTP/1.1'")
        raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not _TARGET.fullmatch(target):
        raise BadRequest(400, "the request target must be a path starting with '/'")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "a header line is not 'Name: value' (folded lines are refused)")
        if _CONTROL.search(value):
            raise BadRequest(400, f"header {name} contains a control character")
        key = name.lower()
        value = value.strip(" \t")
        if key in headers and key in ("host", "content-length", "authorization"):
            raise BadRequest(400, f"header {name} is given twice")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "host" not in headers:
        raise BadRequest(400, "a Host header is required")
    if "transfer-encoding" in headers:
        raise BadRequest(501, "Transfer-Encoding is not supported; send Content-Length")
    return method.upper(), target, headers


def _content_length(headers: Mapping[str, str]) -> int:
    text = headers.get("content-length", "0")
    if not _DIGITS.fullmatch(text) or len(text) > 18:  # more digits than any int64 has
        raise BadRequest(400, "Content-Length must be a number of bytes (ASCII digits)")
    if int(text) > MAX_BODY:
        raise BadRequest(413, f"the body is larger than {MAX_BODY} bytes")
    return int(text)


def _encode(r: Response, *, head_only: bool = False) -> bytes:
    """The response bytes; for HEAD the same head (with the GET's Content-Length), no body."""
    head = [f"HTTP/1.1 {r.code} {HTTPStatus(r.code).phrase}",
            f"Content-Type: {r.content_type}", f"Content-Length: {len(r.body)}",
            "Cache-Control: no-store", "Connection: close"]
    head += [f"{k}: {v}" for k, v in r.extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else r.body)


# -- the read-only page -----------------------------------------------------------------------
PAGE = "diagnostics_page.html"  # package data: inline CSS and JS, no external assets
_PLACEHOLDER = re.compile(r"__(TITLE|STATUS)__")


@functools.cache
def _page_template() -> str:
    return (resources.files("linelight.agent") / PAGE).read_text(encoding="utf-8")


def render_page(s: Mapping[str, Any]) -> str:
    """The page with the current status inside, so it shows the state before the first poll.

    The status goes into a `<script type="application/json">` element: every `<`, `>` and `&`
    is written as a JSON escape, so no value can close the element or start markup.
    """
    data = json.dumps(s, default=str, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    fills = {"TITLE": html.escape(f"linelight {s.get('agent', '')}"), "STATUS": data}
    # one pass over the template: a value that looks like a placeholder stays a value
    return _PLACEHOLDER.sub(lambda m: fills[m.group(1)], _page_template())


def parse_history_query(target: str) -> tuple[float, int]:
    """`/history?hours=24&points=800` -> (hours, points); BadRequest with a sentence else."""
    query = target.partition("?")[2]
    try:
        fields = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                                       max_num_fields=4)
    except ValueError:
        raise BadRequest(400, "the query is not name=value pairs: use ?hours=24&points=800"
                         ) from None
    unknown = sorted(set(fields) - {"hours", "points"})
    if unknown:
        raise BadRequest(400, f"unknown query parameter '{printable(unknown[0], 40)}': "
                              "/history takes hours and points")
    hours, points = 24.0, 1000
    with contextlib.suppress(KeyError):
        hours = _bounded(fields["hours"][-1], "hours", float, 0.01, MAX_HISTORY_HOURS)
    with contextlib.suppress(KeyError):
        points = int(_bounded(fields["points"][-1], "points", int, 1, MAX_HISTORY_POINTS))
    return hours, points


def _bounded(text: str, name: str, kind: type[float] | type[int], low: float, high: float
             ) -> float:
    try:
        value = kind(text) if len(text) <= 12 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # also refuses nan and inf
        raise BadRequest(400, f"{name} must be a number from {low:g} to {high:g}, "
                              f"not '{printable(text, 20)}'")
    return float(value)
