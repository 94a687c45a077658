"""A TCP port nobody listens on right now, on a loopback address."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """The kernel's pick for port 0 on `host` (127.0.0.1 or ::1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
