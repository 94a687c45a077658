"""The MQTT side of the agent: one link, the forwarder, the wire format, settings, rate limit.

Other packages import these names from here, never from the modules below. Names load on first
use (PEP 562 module `__getattr__`), so reading a config (which needs `MqttSettings`) does not
import paho: the lamps' start-up path stays short.

- `config`: `[mqtt]` settings (`read_mqtt`, `MqttSettings`, `TlsSettings`, `read_password`);
- `wire`: topics and payloads (`Wire`, `Message`, codecs, the UMH path);
- `link`: one paho connection driven in the event loop (`MqttLink`, `LinkError`);
- `forwarder`: journal rows to the broker in seq order, the live lane (`Forwarder`, `LinkStatus`);
- `ratelimit`: the replay limit (`RateLimit`); `errors`: `TransportError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linelight.agent.mqtt.config import (
        MQTT_KEYS,
        PROTOCOLS,
        MqttSettings,
        SparkplugSettings,
        TlsSettings,
        read_mqtt,
        read_password,
        resolve_password_file,
        sparkplug_id_problem,
    )
    from linelight.agent.mqtt.errors import TransportError
    from linelight.agent.mqtt.forwarder import Forwarder, LinkStatus
    from linelight.agent.mqtt.link import LinkError, MqttLink
    from linelight.agent.mqtt.ratelimit import RateLimit
    from linelight.agent.mqtt.wire import (
        CODECS,
        TOPIC_MODES,
        UMH_LEVELS,
        Message,
        UmhPath,
        Wire,
        pack_user_properties,
        topic_part,
    )

_HOME = {
    "MQTT_KEYS": "config", "PROTOCOLS": "config", "MqttSettings": "config", "TlsSettings": "config",
    "SparkplugSettings": "config", "sparkplug_id_problem": "config",
    "read_mqtt": "config", "read_password": "config", "resolve_password_file": "config",
    "Forwarder": "forwarder", "LinkStatus": "forwarder",
    "LinkError": "link", "MqttLink": "link",
    "RateLimit": "ratelimit", "TransportError": "errors",
    "CODECS": "wire", "TOPIC_MODES": "wire", "UMH_LEVELS": "wire", "Message": "wire",
    "UmhPath": "wire", "Wire": "wire", "pack_user_properties": "wire", "topic_part": "wire",
}

__all__ = [
    "CODECS", "MQTT_KEYS", "PROTOCOLS", "TOPIC_MODES", "UMH_LEVELS", "Forwarder", "LinkError", "LinkStatus",
    "Message", "MqttLink", "MqttSettings", "RateLimit", "SparkplugSettings", "TlsSettings", "TransportError", "UmhPath", "Wire",
    "pack_user_properties", "read_mqtt", "read_password", "resolve_password_file", "sparkplug_id_problem", "topic_part",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
