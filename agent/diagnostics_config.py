"""The `[diagnostics]` table, and what a client of a running agent reads from its config.

Kept apart from agent.config (which imports every reader, the rules and the hardware) so that
`linelight status` reads the address, the token file and the agent id with the agent's own
readers (the same defaults, the same relative paths, the same $CREDENTIALS_DIRECTORY rule),
without importing the runtime."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linelight.agent.addresses import DEFAULT_LISTEN, is_loopback, parse_host, parse_listen
from linelight.agent.health import WARNINGS
from linelight.agent.rulefiles import read_bounded
from linelight.agent.secrets import names_credentials_directory
from linelight.rules.errors import ConfigProblems, LocatedError, Location
from linelight.rules.fields import Problems, Table
from linelight.rules.keys import Key, Keys
from linelight.rules.tomldoc import TomlDoc

_AGENT_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class DiagnosticsSettings:
    enabled: bool = True
    listen: tuple[tuple[str, int], ...] = tuple(parse_listen(a) for a in DEFAULT_LISTEN)
    token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback (the tailnet name)
    allow_remote: bool = False  # opt-in to a non-loopback listen address
    degraded_on: tuple[str, ...] = ()  # health warnings that count as degraded (agent.health)
    tailnet: bool = True  # serve <this host>.<tailnet>.ts.net, the Host tailscale serve passes

    @property
    def token_for_reads(self) -> bool:
        """A non-loopback bind: every endpoint but /healthz needs the token."""
        return not all(is_loopback(host) for host, _ in self.listen)


_DIAGNOSTICS = DiagnosticsSettings()
DIAGNOSTICS_KEYS = Keys("the HTTP diagnostics endpoint", (
    Key("enabled", "boolean", "serve HTTP diagnostics", _DIAGNOSTICS.enabled),
    Key("listen", "strings", "host:port to bind; an address other than loopback needs "
        "allow_remote",
        list(DEFAULT_LISTEN), pattern=r".+:\d+"),
    Key("token_file", "string", "file with the token for POST /lamp-test and /reload", None),
    Key("allowed_hosts", "strings", "Host names served besides loopback, e.g. the tailnet name "
        "that tailscale serve passes on (name, or name:port; no wildcards); others get 421",
        list(_DIAGNOSTICS.allowed_hosts)),
    Key("allow_remote", "boolean", "allow a listen address that is not loopback; needs "
        "token_file, and then every endpoint but /healthz needs the token",
        _DIAGNOSTICS.allow_remote),
    Key("tailnet", "boolean", "serve the Host name `tailscale serve` passes on, "
        "<this host name>.<tailnet>.ts.net, without listing it in allowed_hosts",
        _DIAGNOSTICS.tailnet),
    Key("degraded_on", "strings", "health warnings that make /healthz answer 503 (degraded) "
        "instead of ok: " + ", ".join(f"'{k}' ({v})" for k, v in WARNINGS.items()),
        list(_DIAGNOSTICS.degraded_on), choices=tuple(WARNINGS)),
))


def path_value(t: Table, keys: Keys, key: str, base: Path) -> Any:
    """A path key's value: relative to `base` (the config's folder) unless absolute or
    naming $CREDENTIALS_DIRECTORY (resolved when read); None when not given."""
    value = keys.read(t, key)
    if value is None:
        return None
    if not value:
        t.problem(key, f"'{key}' cannot be empty")
        return base
    p = Path(value)
    return p if p.is_absolute() or names_credentials_directory(value) else base / p


def read_diagnostics(t: Table | None, base: Path) -> DiagnosticsSettings:
    d = DiagnosticsSettings()
    if t is None:
        return d
    enabled = DIAGNOSTICS_KEYS.read(t, "enabled")
    allow_remote = bool(DIAGNOSTICS_KEYS.read(t, "allow_remote"))
    listen = _listen_addresses(t, allow_remote)
    hosts = _allowed_hosts(t)
    token_file = path_value(t, DIAGNOSTICS_KEYS, "token_file", base)
    degraded_on = _degraded_on(t)
    tailnet = DIAGNOSTICS_KEYS.read(t, "tailnet")
    if allow_remote and token_file is None:
        t.problem("allow_remote", "'allow_remote' needs 'token_file': every endpoint except "
                                  "/healthz then asks for the token")
    t.finish()
    return DiagnosticsSettings(d.enabled if enabled is None else bool(enabled),
                               tuple(listen) or d.listen, token_file, hosts, allow_remote,
                               degraded_on, d.tailnet if tailnet is None else bool(tailnet))


def _degraded_on(t: Table) -> tuple[str, ...]:
    names: list[str] = []
    for i, item in enumerate(DIAGNOSTICS_KEYS.read(t, "degraded_on") or ()):
        if item in WARNINGS:
            names.append(item)
        else:
            t.problems.add(t.doc.value_location((*t.path, "degraded_on", i)),
                           f"'{item}' is not a health warning; degraded_on takes "
                           + ", ".join(f"'{k}'" for k in WARNINGS))
    return tuple(names)


def _listen_addresses(t: Table, allow_remote: bool) -> list[tuple[str, int]]:
    listen: list[tuple[str, int]] = []
    for i, item in enumerate(DIAGNOSTICS_KEYS.read(t, "listen") or ()):
        where = t.doc.value_location((*t.path, "listen", i))
        try:
            host, port = parse_listen(item)
        except ValueError as exc:
            t.problems.add(where, str(exc))
            continue
        if not allow_remote and not is_loopback(host):
            t.problems.add(where, f"'{item}' is not a loopback address: anyone on that network "
                                  "could read /status; keep 127.0.0.1 and use tailscale serve "
                                  "(docs/operations.md), or set allow_remote = true and a "
                                  "token_file (then every endpoint but /healthz needs the token)")
        listen.append((host, port))
    return listen


def _allowed_hosts(t: Table) -> tuple[str, ...]:
    hosts: list[str] = []
    for i, item in enumerate(DIAGNOSTICS_KEYS.read(t, "allowed_hosts") or ()):
        try:
            parse_host(item)
            hosts.append(item)
        except ValueError as exc:
            t.problems.add(t.doc.value_location((*t.path, "allowed_hosts", i)),
                           f"{exc}; write a name such as \"press-07.tail1234.ts.net\", "
                           "optionally with :port (no wildcards)")
    return tuple(hosts)


AGENT_ID_KEY = Key("agent_id", "string", "names the agent on the wire", None,
                   default_text="the host name", pattern=r"[A-Za-z0-9_.-]{1,64}",
                   pattern_text="1 to 64 letters, digits, '-', '_' or '.' (it is part of MQTT "
                   "topics)")
DIAGNOSTICS_KEY = Key("diagnostics", "table", DIAGNOSTICS_KEYS.text, None, keys=DIAGNOSTICS_KEYS)
_IDENTITY_KEYS = Keys("linelight agent config", (AGENT_ID_KEY, DIAGNOSTICS_KEY))


def read_agent_id(root: Table) -> str:
    value = AGENT_ID_KEY.read(root)
    if value is None:
        if root.has("agent_id"):
            return "invalid"  # the problem is reported
        return default_agent_id()
    return str(value)


def default_agent_id() -> str:
    """The agent_id of a config that names none: the host name, made fit for a client id."""
    host = socket.gethostname().split(".")[0] or "linelight"
    return "".join(c if c in _AGENT_ID_CHARS else "-" for c in host)


def parse_config_file(path: Path) -> tuple[str, TomlDoc]:
    """The config file's text and TOML document (bounded read); ConfigProblems with its
    location."""
    name = str(path)
    try:
        text = read_bounded(path)
    except OSError as exc:
        raise ConfigProblems([LocatedError(Location(name, 1, 1),
                                           f"cannot read the config file: {exc.strerror or exc}")]
                             ) from None
    except UnicodeDecodeError as exc:
        raise ConfigProblems([LocatedError(Location(name, 1, 1),
                                           f"the config file is not UTF-8 text ({exc.reason})")]
                             ) from None
    try:
        return text, TomlDoc.parse(text, name)
    except LocatedError as exc:
        raise ConfigProblems([exc]) from None


@dataclass(frozen=True, slots=True)
class Identity:
    """What a client of the agent needs from its config: its id and its diagnostics."""

    agent_id: str
    diagnostics: DiagnosticsSettings


def read_identity(path: Path) -> Identity:
    """`agent_id` and `[diagnostics]` of the config at `path`, read as the agent reads them but
    without the rest (`linelight status` must work while the rules or sources are broken);
    ConfigProblems for problems in these two only."""
    problems = Problems()
    root = Table.root(parse_config_file(path)[1], problems)
    identity = Identity(read_agent_id(root),
                        read_diagnostics(_IDENTITY_KEYS.read(root, "diagnostics"), path.parent))
    problems.raise_if_any()
    return identity
