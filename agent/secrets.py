"""Secret files: paths that may start with systemd's `$CREDENTIALS_DIRECTORY`.

`LoadCredential=` places secrets in a private directory named by that variable; config files
write `password_file = "$CREDENTIALS_DIRECTORY/mqtt-password"`. Contents are never logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from linelight.rules.errors import ConfigError

_CRED_VAR = re.compile(r"^\$(\{CREDENTIALS_DIRECTORY\}|CREDENTIALS_DIRECTORY)(/|$)")


def names_credentials_directory(spec: str) -> bool:
    return _CRED_VAR.match(spec) is not None


def resolve_secret_path(spec: str, key: str, environ: dict[str, str] | None = None) -> Path:
    """`spec` with a leading `$CREDENTIALS_DIRECTORY` expanded. Raises ConfigError naming the
    config key when the variable is not set."""
    env = os.environ if environ is None else environ
    m = _CRED_VAR.match(spec)
    if m is None:
        return Path(spec)
    base = env.get("CREDENTIALS_DIRECTORY")
    if not base:
        raise ConfigError(f"{key} '{spec}' names $CREDENTIALS_DIRECTORY, which is not "
                          f"set (run under systemd with LoadCredential=)")
    return Path(base) / spec[m.end():]
