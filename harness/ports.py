"""A TCP port nobody listens on right now, on a loopback address: the demo's own function
(agent/demo/broker.py), so the product, the tests and the benches pick ports one way."""

from __future__ import annotations

from linelight.agent.demo.broker import free_port

__all__ = ["free_port"]
