"""The agent config's `[mqtt]` table: broker, TLS, credentials, wire layout, window, limits.

`read_mqtt(table)` reads it through `rules.fields.Table`, so every mistake is reported as
`file:line:col: message`. Secrets are never held here: the settings keep the password
*file*, which the link reads at each connect (a rotated credential is picked up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from linelight.agent.mqtt.wire import (
    CODECS,
    DEFAULT_DATA_CONTRACT,
    TOPIC_MODES,
    UMH_LEVELS,
    UMH_MODES,
    UmhPath,
)
from linelight.agent.secrets import names_credentials_directory, resolve_secret_path
from linelight.rules.errors import ConfigError
from linelight.rules.fields import REQUIRED, Table
from linelight.rules.keys import Key, Keys

PROTOCOLS = ("5", "3.1.1")
# packaging/linelight.service: TimeoutStopSec leaves room for this plus on_exit and the journal.
MAX_FLUSH_ON_STOP = 20.0
_CLIENT_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_hostname: bool = False


@dataclass(frozen=True, slots=True)
class SparkplugSettings:
    """`[mqtt.sparkplug]`: the Sparkplug B edge node this agent is (topic_mode = sparkplug)."""

    group_id: str
    edge_node_id: str | None = None  # None: the agent id
    device_id: str | None = None  # the unnamed single machine's device; None: the agent id
    primary_host_id: str | None = None  # births only while this host's STATE says online
    # the named machines ([machines.NAME]), each a device; filled in by the agent's config
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Everything the forwarder needs to reach the broker and lay out messages."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"
    # False: the config leaves `protocol` out, so a broker refusing MQTT 5 as an unsupported
    # protocol version gets 3.1.1 on the next attempt; True: the config names the protocol.
    protocol_pinned: bool = False
    keepalive: float = 30.0
    connect_timeout: float = 10.0
    puback_timeout: float = 30.0  # messages in flight and no PUBACK for this long: link dropped
    client_id: str | None = None  # None: "linelight-{agent_id}"
    username: str | None = None
    password_file: str | None = None  # may start with $CREDENTIALS_DIRECTORY
    tls: TlsSettings | None = None
    topic_prefix: str = "linelight/{agent}"
    codec: str = CODECS[0]
    topic_mode: str = "linelight"
    umh: UmhPath | None = None
    sparkplug: SparkplugSettings | None = None
    inflight: int = 4096  # bench/replay.py: smaller windows idle the link during journal commits
    msgs_per_s: float = 0.0  # replay rate limits, 0 = off
    bytes_per_s: float = 0.0
    historical_after: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    batch: int = field(default=1024)  # rows read from the journal per peek
    flush_on_stop: float = 2.0  # a clean stop sends what the journal holds for this long at most

    @property
    def broker(self) -> str:
        """`mqtts://host:port` or `mqtt://host:port`, for log lines and status."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


# -- the key tables: agent.schema builds the `[mqtt]` schema from these, and read_mqtt binds
# each table to them, so a key it reads that is not declared here fails its tests loudly.
_D = MqttSettings()
_TLS = TlsSettings()
TLS_KEYS = Keys("TLS to the broker", (
    Key("ca_file", "string", "CA bundle that signs the broker's certificate", None,
        default_text="the system's CAs"),
    Key("cert_file", "string", "client certificate (needs key_file)", None),
    Key("key_file", "string", "client key (needs cert_file)", None),
    Key("insecure_skip_hostname", "boolean", "do not check the broker's host name",
        _TLS.insecure_skip_hostname),
))
UMH_KEYS = Keys("ISA-95 path for topic_mode = umh or umh-core", (*(
    Key(level, "string", f"the {level} topic level", REQUIRED if level == "enterprise" else None)
    for level in UMH_LEVELS),
    Key("data_contract", "string", "UMH Core data contract, starts with '_'",
        DEFAULT_DATA_CONTRACT),
))
SPARKPLUG_KEYS = Keys("Sparkplug B edge node for topic_mode = sparkplug", (
    Key("group_id", "string", "the Sparkplug group (first topic level after spBv1.0)",
        REQUIRED),
    Key("edge_node_id", "string", "this edge node's id", None, default_text="the agent_id"),
    Key("device_id", "string", "the device of a config without [machines.*] (with them, "
        "each machine is the device of its name)", None, default_text="the agent_id"),
    Key("primary_host_id", "string", "send births only while this host application's STATE "
        "says online", None),
))
REPLAY_KEYS = Keys("replay rate limits (0: off)", (
    Key("msgs_per_s", "number", "replayed messages per second", _D.msgs_per_s, minimum=0.0),
    Key("bytes_per_s", "size", "replayed bytes per second", int(_D.bytes_per_s)),
))
BACKOFF_KEYS = Keys("reconnect backoff", (
    Key("initial", "duration", "first reconnect delay", _D.backoff_initial, allow_zero=False),
    Key("max", "duration", "longest reconnect delay", _D.backoff_max, allow_zero=False),
))
MQTT_KEYS = Keys("the MQTT broker; leave out to only queue", (
    Key("host", "string", "broker name or address", _D.host),
    Key("port", "integer", "broker port", None, default_text="1883, or 8883 with [mqtt.tls]",
        minimum=1, maximum=65535),
    Key("protocol", "choice", "MQTT protocol version", _D.protocol, choices=PROTOCOLS),
    Key("keepalive", "duration", "MQTT keepalive", _D.keepalive, allow_zero=False),
    Key("connect_timeout", "duration", "deadline of one connect", _D.connect_timeout,
        allow_zero=False),
    Key("puback_timeout", "duration", "messages in flight and no PUBACK for this long: the "
        "link is dropped and reconnected", _D.puback_timeout, allow_zero=False),
    Key("client_id", "string", "MQTT client id", None, default_text="linelight-{agent_id}",
        pattern=_CLIENT_ID.pattern[1:-1]),
    Key("username", "string", "user name", None),
    Key("password_file", "string", "first line is the password; may start with "
        "$CREDENTIALS_DIRECTORY", None),
    Key("topic_prefix", "string", "topic prefix; {agent} is the agent_id", _D.topic_prefix),
    Key("codec", "choice", "payload encoding", _D.codec, choices=CODECS),
    Key("topic_mode", "choice", "topic layout", _D.topic_mode, choices=TOPIC_MODES),
    Key("dialect", "choice", "another name for topic_mode", None,
        default_text="topic_mode", choices=TOPIC_MODES),
    Key("inflight", "integer", "messages sent and not yet acknowledged at most", _D.inflight,
        minimum=1, maximum=65000),
    Key("historical_after", "duration", "older events are sent with historical = true",
        _D.historical_after),
    Key("flush_on_stop", "duration", "a clean stop sends the queued events for this long at "
        "most (0 to 20s)", _D.flush_on_stop),
    Key("tls", "table", TLS_KEYS.text, None, keys=TLS_KEYS),
    Key("umh", "table", UMH_KEYS.text, None, keys=UMH_KEYS),
    Key("sparkplug", "table", SPARKPLUG_KEYS.text, None, keys=SPARKPLUG_KEYS),
    Key("replay", "table", REPLAY_KEYS.text, None, keys=REPLAY_KEYS),
    Key("backoff", "table", BACKOFF_KEYS.text, None, keys=BACKOFF_KEYS),
))


def resolve_password_file(spec: str, environ: dict[str, str] | None = None) -> Path:
    """The password file's path; see `agent.secrets.resolve_secret_path`."""
    return resolve_secret_path(spec, "password_file", environ)


def read_password(settings: MqttSettings) -> str | None:
    """The password from `password_file` (first line, no trailing newline), or None.

    Raises ConfigError with the path (never the content) when it cannot be read.
    """
    if settings.password_file is None:
        return None
    path = resolve_password_file(settings.password_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the MQTT password file {path}: "
                          f"{exc.strerror or exc}") from None
    return text.splitlines()[0] if text else ""


def _path(table: Table, key: str, base: Path) -> Path | None:
    value = table.string(key, None)
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def read_mqtt(table: Table) -> MqttSettings:
    """Read the `[mqtt]` table; problems are collected in `table.problems`.

    Relative file paths are taken from the config file's directory.
    """
    base = Path(table.doc.file).parent
    MQTT_KEYS.bind(table)
    d = MqttSettings()
    host = table.string("host", d.host)
    if isinstance(host, str) and not host.strip():
        table.problem("host", "'host' cannot be empty; write the broker's name or address")
    pinned = table.has("protocol")
    protocol = table.choice("protocol", PROTOCOLS, d.protocol)
    keepalive = table.duration("keepalive", d.keepalive, allow_zero=False)
    if keepalive is not None and not 1 <= keepalive <= 65535:
        table.problem("keepalive", "'keepalive' must be between 1s and 65535s")
        keepalive = d.keepalive
    connect_timeout = table.duration("connect_timeout", d.connect_timeout, allow_zero=False)
    puback_timeout = table.duration("puback_timeout", d.puback_timeout, allow_zero=False)
    client_id = table.string("client_id", None)
    if isinstance(client_id, str) and not _CLIENT_ID.match(client_id):
        table.problem("client_id", f"'client_id' '{client_id}' must be 1-128 letters, digits "
                                   f"or '_.:-'")
        client_id = None
    username = table.string("username", None)
    password_file = table.string("password_file", None)
    if password_file is not None and not names_credentials_directory(password_file):
        p = Path(password_file)
        password_file = str(p if p.is_absolute() else base / p)
    if password_file is not None and username is None:
        table.problem("password_file", "'password_file' needs 'username' too")
    tls = _read_tls(table, base)
    port = table.integer("port", 8883 if tls is not None else 1883, minimum=1)
    if isinstance(port, int) and port > 65535:
        table.problem("port", f"'port' must be at most 65535, not {port}")
    prefix = table.string("topic_prefix", d.topic_prefix)
    if isinstance(prefix, str) and (not prefix.strip("/") or re.search(r"[#+\x00]", prefix)):
        table.problem("topic_prefix", f"'topic_prefix' '{prefix}' must be a non-empty topic "
                                      f"without '+' or '#'")
    codec = table.choice("codec", CODECS, d.codec)
    mode = table.choice("topic_mode", TOPIC_MODES, d.topic_mode)
    dialect = table.choice("dialect", TOPIC_MODES, None)
    if dialect is not None and table.has("topic_mode") and dialect != mode:
        table.problem("dialect", f"'dialect' \"{dialect}\" and 'topic_mode' \"{mode}\" say two "
                                 f"things; they are one setting, keep one")
    elif dialect is not None:
        mode = dialect
    umh = _read_umh(table, mode=mode)
    sparkplug = _read_sparkplug(table, mode=mode)
    inflight = table.integer("inflight", d.inflight, minimum=1)
    if isinstance(inflight, int) and inflight > 65000:
        table.problem("inflight", "'inflight' must be at most 65000 (MQTT packet ids)")
    msgs, bytes_ = _read_replay(table)
    historical_after = table.duration("historical_after", d.historical_after)
    flush_on_stop = table.duration("flush_on_stop", d.flush_on_stop)
    if flush_on_stop is not None and flush_on_stop > MAX_FLUSH_ON_STOP:
        table.problem("flush_on_stop", f"'flush_on_stop' must be at most "
                                       f"{MAX_FLUSH_ON_STOP:g}s, within systemd's stop timeout")
        flush_on_stop = d.flush_on_stop
    initial, maximum = _read_backoff(table, d)
    table.finish()
    return MqttSettings(
        host=host if isinstance(host, str) else d.host,
        port=port if isinstance(port, int) else d.port,
        protocol=protocol or d.protocol,
        protocol_pinned=pinned,
        keepalive=keepalive or d.keepalive,
        connect_timeout=connect_timeout or d.connect_timeout,
        puback_timeout=puback_timeout or d.puback_timeout,
        client_id=client_id,
        username=username,
        password_file=password_file,
        tls=tls,
        topic_prefix=prefix if isinstance(prefix, str) else d.topic_prefix,
        codec=codec or d.codec,
        topic_mode=mode or d.topic_mode,
        umh=umh,
        sparkplug=sparkplug,
        inflight=inflight if isinstance(inflight, int) else d.inflight,
        msgs_per_s=msgs,
        bytes_per_s=bytes_,
        historical_after=historical_after if historical_after is not None
        else d.historical_after,
        backoff_initial=initial,
        backoff_max=maximum,
        flush_on_stop=flush_on_stop if flush_on_stop is not None else d.flush_on_stop,
    )


def _read_tls(table: Table, base: Path) -> TlsSettings | None:
    sub = MQTT_KEYS.read(table, "tls")
    if sub is None:
        return None
    tls = TlsSettings(
        ca_file=_path(sub, "ca_file", base),
        cert_file=_path(sub, "cert_file", base),
        key_file=_path(sub, "key_file", base),
        insecure_skip_hostname=bool(sub.boolean("insecure_skip_hostname", False)),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        sub.problem(None, "tls needs both 'cert_file' and 'key_file' for a client certificate")
    sub.finish()
    return tls


# UMH Core's topic rule (benthos-umh pkg/umh/topic/uns_topic.go): the whole topic matches
# ^[a-zA-Z0-9._-]+$, no empty level, no location level starting with '_'. A location level is
# one topic level, so a '.' in it would add a level: it is not allowed either. UMH Classic's
# bridge maps '/' to '.' and any other character to '_' (deployment/.../mqtt-to-kafka/
# historian/configmap.yaml), so the same rule keeps its hierarchy as written.
_CORE_LEVEL = re.compile(r"^[A-Za-z0-9_-]+$")
_CORE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _core_level_problem(what: str, value: str, *, contract: bool = False) -> str | None:
    """Why `value` cannot be one level of a UMH Core topic, with a hint; None if it can."""
    hint = _CORE_UNSAFE.sub("-", value).strip("-_") or "line-1"
    if not _CORE_LEVEL.match(value):
        return (f"'{what}' '{value}' cannot be a UMH topic level: only letters A-Z a-z, "
                f"digits, '-' and '_' (a '.' would add a level); write e.g. '{hint}'")
    if contract and (not value.startswith("_") or len(value) < 2):
        return (f"'{what}' '{value}' must start with '_' and name the contract, "
                f"e.g. '_raw' or '_historian'")
    if not contract and value.startswith("_"):
        return (f"'{what}' '{value}' cannot start with '_' (UMH reads it as the data "
                f"contract); write e.g. '{hint}'")
    return None


def _read_umh(table: Table, *, mode: str | None) -> UmhPath | None:
    sub = table.table("umh", required=mode in UMH_MODES)
    if sub is None:
        return None
    UMH_KEYS.bind(sub)
    # Both UMH modes: Classic's historian matches levels with [\w-_]+ (ASCII) after mapping
    # '/' to '.', Core's topic rule is the same character set; neither may be rewritten.
    core = mode in UMH_MODES
    parts: dict[str, str] = {}
    for level in UMH_LEVELS:
        # enterprise is required: Table reports "umh needs the key 'enterprise'".
        value = sub.string(level) if level == "enterprise" else sub.string(level, None)
        if isinstance(value, str):
            problem = _core_level_problem(level, value) if core else None
            if not value or re.search(r"[/#+\x00]", value):
                sub.problem(level, f"'{level}' must be one non-empty topic level without "
                                   f"'/', '+' or '#'")
            elif problem is not None:
                sub.problem(level, problem)
            else:
                parts[level] = value
    contract = sub.string("data_contract", DEFAULT_DATA_CONTRACT)
    if isinstance(contract, str):
        problem = _core_level_problem("data_contract", contract, contract=True)
        if problem is not None:
            sub.problem("data_contract", problem)
            contract = DEFAULT_DATA_CONTRACT
    missing_middle = [lv for i, lv in enumerate(UMH_LEVELS[1:])
                      if lv not in parts and any(x in parts for x in UMH_LEVELS[i + 2:])]
    if missing_middle:
        sub.problem(None, f"umh levels cannot skip '{missing_middle[0]}': the ISA-95 path "
                          f"is enterprise/site/area/line/workcell")
    sub.finish()
    if "enterprise" not in parts:
        return None
    return UmhPath(**parts, data_contract=contract if isinstance(contract, str)
                   else DEFAULT_DATA_CONTRACT)


def sparkplug_id_problem(what: str, value: str) -> str | None:
    """Why `value` cannot be a Sparkplug group, edge node or device id, or None.

    Sparkplug 3.0 section 4.1.1 (tck-id-topic-structure-namespace-valid-group-id,
    -valid-edge-node-id, -valid-device-id): UTF-8 without the MQTT reserved '+', '/' and '#'.
    NUL is refused too (MQTT forbids it in topic names).
    """
    if not value:
        return f"'{what}' cannot be empty"
    bad = sorted({c for c in value if c in "+/#\x00"})
    if bad:
        shown = " ".join("NUL" if c == "\x00" else f"'{c}'" for c in bad)
        return (f"'{what}' '{value}' cannot be a Sparkplug id: it contains {shown} "
                f"(Sparkplug ids are one topic level without '+', '/' or '#')")
    return None


def _read_sparkplug(table: Table, *, mode: str | None) -> SparkplugSettings | None:
    sub = table.table("sparkplug", required=mode == "sparkplug")
    if sub is None:
        return None
    SPARKPLUG_KEYS.bind(sub)
    ids: dict[str, str | None] = {}
    for key in SPARKPLUG_KEYS.names:
        value = sub.string(key) if key == "group_id" else sub.string(key, None)
        ids[key] = value if isinstance(value, str) else None
        if isinstance(value, str):
            problem = sparkplug_id_problem(key, value)
            if problem is not None:
                sub.problem(key, problem)
                ids[key] = None
    sub.finish()
    group = ids.pop("group_id")
    if group is None:
        return None
    return SparkplugSettings(group_id=group, edge_node_id=ids["edge_node_id"],
                             device_id=ids["device_id"], primary_host_id=ids["primary_host_id"])


def _read_replay(table: Table) -> tuple[float, float]:
    sub = MQTT_KEYS.read(table, "replay")
    if sub is None:
        return 0.0, 0.0
    msgs = sub.number("msgs_per_s", 0.0)
    if msgs is not None and msgs < 0:
        sub.problem("msgs_per_s", "'msgs_per_s' cannot be negative (0 turns the limit off)")
        msgs = 0.0
    raw = sub.raw("bytes_per_s", 0)
    bytes_ = 0.0
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw >= 0:
        bytes_ = float(raw)
    elif isinstance(raw, str):
        bytes_ = float(sub.size("bytes_per_s", 0) or 0)
    else:
        sub.problem("bytes_per_s", "'bytes_per_s' must be a size such as '64kB' or a number "
                                   "of bytes (0 turns the limit off)")
    sub.finish()
    return float(msgs or 0.0), bytes_


def _read_backoff(table: Table, d: MqttSettings) -> tuple[float, float]:
    sub = MQTT_KEYS.read(table, "backoff")
    if sub is None:
        return d.backoff_initial, d.backoff_max
    initial = sub.duration("initial", d.backoff_initial, allow_zero=False)
    maximum = sub.duration("max", d.backoff_max, allow_zero=False)
    initial = initial or d.backoff_initial
    maximum = maximum or d.backoff_max
    if maximum < initial:
        sub.problem("max", "backoff 'max' must not be shorter than 'initial'")
        maximum = initial
    sub.finish()
    return initial, maximum
