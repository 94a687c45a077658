"""The JSON Schema of the agent config file (`linelight schema config`), for editors.

Composes the parts the other readers publish (`hw.schema` for sources and tower) with the
agent's own keys, `[journal]` and `[mqtt]`. The readers stay the authority: the schema helps
editors complete and flag keys, `linelight check` gives the located, exact verdict.
"""

from __future__ import annotations

from typing import Any

from linelight.hw.schema import sources_schema_part, tower_schema_part

DRAFT = "http://json-schema.org/draft-07/schema#"
_DURATION = r"^\s*\d+(\.\d+)?\s*(us|ms|s|m|min|h)\s*$"
_SIZE = r"^\s*\d+(\.\d+)?\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?\s*$"


def _obj(props: dict[str, Any], required: list[str] | None = None, text: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    if text:
        out["description"] = text
    return out


def _duration(text: str) -> dict[str, Any]:
    return {"type": "string", "pattern": _DURATION, "description": text}


def _size(text: str) -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "pattern": _SIZE}, {"type": "integer", "minimum": 0}],
            "description": text}


def _file(text: str) -> dict[str, Any]:
    return {"type": "string", "description": text}


def _scan() -> dict[str, Any]:
    return _obj({
        "period": _duration("scan period: snapshot, rules, tower (default 20ms; 1ms to 1s)"),
        "deadband": {"type": "number", "minimum": 0,
                     "description": "numeric inputs: smallest change recorded (default 0)"},
        "deadbands": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                      "description": "per-input deadband"},
        "clock_jump": _duration("wall-clock step recorded as a clock_jump event (default 2s)"),
    }, text="the scan loop")


def _diagnostics() -> dict[str, Any]:
    return _obj({
        "enabled": {"type": "boolean", "description": "serve HTTP diagnostics (default true)"},
        "listen": {"type": "array", "items": {"type": "string", "pattern": r"^.+:\d+$"},
                   "description": "host:port to bind (default [\"127.0.0.1:9750\"])"},
        "token_file": _file("file with the token for POST /lamp-test and /reload"),
    }, text="the HTTP diagnostics endpoint")


def _journal() -> dict[str, Any]:
    return _obj({
        "max_bytes": _size("queued data kept (default 256MiB)"),
        "max_age": {"type": "string", "description": "oldest event kept, e.g. '7d' or '48h'"},
        "min_free_disk": _size("stop growing below this much free disk (default 64MiB)"),
        "commit_window": _duration("group commit window (default 5ms)"),
        "max_group": {"type": "integer", "minimum": 1},
        "max_pending": {"type": "integer", "minimum": 1},
    }, text="the on-disk queue")


def _mqtt() -> dict[str, Any]:
    tls = _obj({"ca_file": _file("CA bundle"), "cert_file": _file("client certificate"),
                "key_file": _file("client key"),
                "insecure_skip_hostname": {"type": "boolean"}}, text="TLS to the broker")
    umh = _obj({level: {"type": "string"} for level in
                ("enterprise", "site", "area", "line", "workcell")}, ["enterprise"],
               "ISA-95 path for topic_mode = umh")
    return _obj({
        "host": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"enum": ["5", "3.1.1"]},
        "keepalive": _duration("MQTT keepalive (default 30s)"),
        "connect_timeout": _duration("default 10s"),
        "client_id": {"type": "string", "pattern": r"^[0-9A-Za-z_.:-]{1,128}$"},
        "username": {"type": "string"},
        "password_file": _file("first line is the password; may start with "
                               "$CREDENTIALS_DIRECTORY"),
        "topic_prefix": {"type": "string", "description": "default linelight/{agent}"},
        "codec": {"enum": ["msgpack", "json"]},
        "topic_mode": {"enum": ["linelight", "umh"]},
        "inflight": {"type": "integer", "minimum": 1, "maximum": 65000},
        "historical_after": _duration("older events are sent with historical = true"),
        "tls": tls,
        "umh": umh,
        "replay": _obj({"msgs_per_s": {"type": "number", "minimum": 0},
                        "bytes_per_s": _size("replay byte rate limit (0: off)")}),
        "backoff": _obj({"initial": _duration("first reconnect delay"),
                         "max": _duration("longest reconnect delay")}),
    }, text="the MQTT broker; leave out to only queue")


def config_schema() -> dict[str, Any]:
    """A complete JSON Schema document for /etc/linelight/agent.toml."""
    root = _obj({
        "agent_id": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$",
                     "description": "names the agent on the wire (default: host name)"},
        "data_dir": _file("where the queue lives (default /var/lib/linelight)"),
        "rules": {"type": "array", "items": {"type": "string"},
                  "description": "rule files or globs, relative to this file"},
        "scan": _scan(),
        "diagnostics": _diagnostics(),
        "journal": _journal(),
        "mqtt": _mqtt(),
        "sources": sources_schema_part(),
        "tower": tower_schema_part(),
    }, text="linelight agent config")
    return {"$schema": DRAFT, "title": "linelight agent config", **root}
