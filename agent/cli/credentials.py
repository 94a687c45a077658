"""systemd credentials for the CLI: `$CREDENTIALS_DIRECTORY` as the service gets it.

The unit loads secrets with `LoadCredential=ID:SOURCE` and the config names them as
`$CREDENTIALS_DIRECTORY/ID`. A command run from a shell has no such directory, so `doctor` and
`status` build one: `--credentials-dir DIR` (files named by credential id), or, by default, a
private directory of links to the sources the installed unit names (a relative source is
looked up in systemd's credential stores, as systemd does). The secrets are then read by the
agent's own code (`agent.secrets`), never copied and never printed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

UNITS = (Path("/etc/systemd/system/linelight.service"),
         Path("/lib/systemd/system/linelight.service"),
         Path("/usr/lib/systemd/system/linelight.service"))
CREDSTORES = (Path("/etc/credstore"), Path("/run/credstore"), Path("/usr/lib/credstore"))


def unit_credentials(unit_text: str, stores: tuple[Path, ...] = CREDSTORES) -> dict[str, Path]:
    """`LoadCredential=` lines of a unit file -> credential id: the file systemd reads."""
    found: dict[str, Path] = {}
    for line in unit_text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.strip() != "LoadCredential":
            continue
        ident, _, source = value.strip().partition(":")
        source = source or ident
        path = Path(source)
        if not path.is_absolute():
            path = next((s / source for s in stores if (s / source).exists()), stores[0] / source)
        found[ident] = path
    return found


@contextlib.contextmanager
def credentials_directory(given: Path | None, units: tuple[Path, ...] = UNITS
                          ) -> Iterator[str]:
    """Set `$CREDENTIALS_DIRECTORY` for the duration; yields a sentence saying where from."""
    if os.environ.get("CREDENTIALS_DIRECTORY") and given is None:
        yield f"credentials from $CREDENTIALS_DIRECTORY ({os.environ['CREDENTIALS_DIRECTORY']})"
        return
    if given is not None:
        with _environ(str(given)):
            yield f"credentials from {given} (--credentials-dir)"
        return
    unit = next((u for u in units if u.exists()), None)
    if unit is None:
        yield "no linelight.service installed: $CREDENTIALS_DIRECTORY is not set"
        return
    creds = unit_credentials(unit.read_text(encoding="utf-8", errors="replace"))
    with tempfile.TemporaryDirectory(prefix="linelight-creds-") as tmp:
        for ident, source in creds.items():
            (Path(tmp) / ident).symlink_to(source)
        with _environ(tmp):
            yield (f"credentials as {unit} loads them: "
                   + ", ".join(f"{i} from {s}" for i, s in creds.items()))


@contextlib.contextmanager
def _environ(directory: str) -> Iterator[None]:
    old = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = directory
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CREDENTIALS_DIRECTORY", None)
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = old
