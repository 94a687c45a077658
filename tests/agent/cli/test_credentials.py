"""The CLI's `$CREDENTIALS_DIRECTORY`, built the way systemd builds it for the service."""

from __future__ import annotations

import os
from pathlib import Path

from linelight.agent.cli.credentials import credentials_directory, unit_credentials
from linelight.agent.mqtt.config import resolve_password_file

ROOT = Path(__file__).resolve().parents[3]


def test_the_packaged_unit_names_its_credentials_in_the_credential_store(tmp_path: Path) -> None:
    store = tmp_path / "credstore"
    store.mkdir()
    (store / "linelight.mqtt-password").write_text("pw\n")
    found = unit_credentials((ROOT / "packaging/linelight.service").read_text(), (store,))
    assert found == {"mqtt-password": store / "linelight.mqtt-password",
                     "diagnostics-token": store / "linelight.diagnostics-token"}


def test_the_installed_units_sources_are_read_through_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    unit = tmp_path / "linelight.service"
    unit.write_text(f"[Service]\nLoadCredential=mqtt-password:{secret}\n")
    os.environ.pop("CREDENTIALS_DIRECTORY", None)
    with credentials_directory(None, (unit,)) as where:
        path = resolve_password_file("$CREDENTIALS_DIRECTORY/mqtt-password")
        assert path.read_text() == "pw\n"
        assert f"mqtt-password from {secret}" in where
    assert "CREDENTIALS_DIRECTORY" not in os.environ
