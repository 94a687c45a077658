"""The forwarder in its own process, so publish and PUBACK work never share the lamps' GIL.

Other packages import `ForwarderProcess` from here. Design: docs/architecture.md, "The
forwarder process".

- `host`: `ForwarderProcess`, the agent's side: starts the child, answers its journal
  requests, mirrors its link status, hands it the live lane and the planned stop;
- `child`: the forwarder process itself (`host.child_command()`): the
  ordinary `Forwarder` over `JournalReader`, a read-only connection to the journal;
- `channel`: the pipe between them (msgpack messages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linelight.agent.uplink.host import ForwarderProcess, ForwarderProcessError

__all__ = ["ForwarderProcess", "ForwarderProcessError"]


def __getattr__(name: str) -> Any:
    # loaded on first use, like linelight.agent.mqtt: the lamps' start-up path stays short
    if name in __all__:
        from linelight.agent.uplink import host

        return getattr(host, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
