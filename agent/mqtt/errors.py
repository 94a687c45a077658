"""The error the MQTT side raises (no paho import: callers may catch it cheaply)."""

from __future__ import annotations

from linelight.rules.errors import LinelightError


class TransportError(LinelightError):
    """The link to the broker failed."""
