"""The error hardware adapters raise: a device failed or answered with an error."""

from __future__ import annotations

from linelight.rules.errors import LinelightError


class DeviceError(LinelightError):
    """An I/O device (Modbus, GPIO) failed or answered with an error."""
