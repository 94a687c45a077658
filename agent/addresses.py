"""Listen addresses, Host names and client-supplied text for the log: the pure parsing that
the diagnostics server, the config reader and `linelight status` share (no I/O, no anyio, so
the CLI can import it without the runtime)."""

from __future__ import annotations

import contextlib
import ipaddress
import re

DEFAULT_LISTEN = ("127.0.0.1:9750",)  # loopback only: remote access goes through tailscale serve
LOGGED_CHARS = 120  # a client-supplied value is cut to this length in the log
LOOPBACK_NAMES = ("localhost",)  # and every loopback address literal (127.0.0.0/8, ::1)

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() is also true for '²'
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*")


def parse_listen(text: str) -> tuple[str, int]:
    """`"127.0.0.1:9750"` or `"[::1]:9750"` -> (host, port). Raises ValueError with a sentence."""
    host, sep, port = text.rpartition(":")
    if not sep or not _DIGITS.fullmatch(port) or not host:
        raise ValueError(f"'{text}' is not a listen address; write host:port, "
                         "e.g. '127.0.0.1:9750' or '[::1]:9750'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if len(port) > 5 or int(port) > 65535:
        raise ValueError(f"port {port} in '{text}' is above 65535")
    return host, int(port)


def parse_host(text: str) -> tuple[str, int | None]:
    """A Host header or an `allowed_hosts` entry -> (lower-case name or address, port or None).

    `name`, `name:port`, `1.2.3.4:port`, `[::1]:port`. Raises ValueError with a sentence.
    """
    value = text.strip().lower()
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end], value[end + 1:]
        if end < 0 or not _is_address(name) or ":" not in name:
            raise ValueError(f"'{printable(text)}' is not a host name or address")
    else:
        name, _, rest = value.partition(":")
        rest = ":" + rest if rest or value.endswith(":") else ""
        name = name.removesuffix(".")
        if not (_HOST_NAME.fullmatch(name) and len(name) <= 253):
            raise ValueError(f"'{printable(text)}' is not a host name or address")
    if rest:
        digits = rest[1:]
        if not rest.startswith(":") or not _DIGITS.fullmatch(digits) or len(digits) > 5 \
                or int(digits) > 65535:
            raise ValueError(f"'{printable(text)}' has no valid port (1 to 65535) after the name")
        port = int(digits)
    return name, port


def is_loopback(host: str) -> bool:
    """Whether a listen or Host name is this machine only: `localhost` or a loopback address."""
    if host.lower().removesuffix(".") in LOOPBACK_NAMES:
        return True
    address = address_of(host)
    return address is not None and address.is_loopback


def address_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `text` is (a zone cut off, an IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_address(text: str) -> bool:
    return address_of(text) is not None


def printable(text: str, limit: int = LOGGED_CHARS) -> str:
    """A client-supplied value for the log: UTF-8 shown as text where it is valid, every
    control or line-breaking character escaped (`\\x0a`), at most `limit` characters."""
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("latin-1").decode("utf-8")
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return out + ("..." if len(text) > limit else "")
