"""The systemd unit: settings the design requires, `systemd-analyze verify`, exposure <= 2.5."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from linelight.agent.cli import DEFAULT_CONFIG
from tests.packaging.debs import Deb

UNIT = "/lib/systemd/system/linelight.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def need_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (`make apt` installs systemd)")


def verify_root(deb: Deb, dest: Path) -> Path:
    """The package's files plus what its unit refers to on a Debian system (the standard
    targets, /bin/kill), so `verify --root` checks the unit against the package itself."""
    root = deb.extract(dest / "root")
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", dirs_exist_ok=True,
                    symlinks=True, ignore=lambda d, names: [n for n in names if n == "linelight.service"])
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin/kill")
    return root


def analyze_verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                           "linelight.service"], capture_output=True, text=True, timeout=120)


def test_unit_has_the_settings_the_design_requires(debs: dict[str, Deb]) -> None:
    s = unit_settings(debs["amd64"].files()[UNIT].data.decode())
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == [f"/usr/bin/linelight run --config {DEFAULT_CONFIG}"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["always"] and s["WatchdogSec"]
    assert s["User"] == ["linelight"] and s["StateDirectory"] == ["linelight"]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert s["DevicePolicy"] == ["closed"]
    allowed = " ".join(s["DeviceAllow"])
    assert "char-ttyS rw" in allowed and "char-ttyUSB rw" in allowed
    assert "char-gpiochip rw" in allowed
    assert s["SystemCallFilter"][0] == "@system-service"
    credentials = {v.split(":")[0] for v in s["LoadCredential"]}
    assert credentials == {"mqtt-password", "diagnostics-token"}
    assert s["WantedBy"] == ["multi-user.target"]


def test_unit_passes_systemd_analyze_verify(debs: dict[str, Deb], tmp_path: Path) -> None:
    need_systemd_analyze()
    proc = analyze_verify(verify_root(debs["amd64"], tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_verify_would_catch_a_unit_whose_command_is_missing(debs: dict[str, Deb],
                                                            tmp_path: Path) -> None:
    """The verify above runs against the package's own files: without the launcher it fails."""
    need_systemd_analyze()
    root = verify_root(debs["amd64"], tmp_path)
    (root / "usr/bin/linelight").unlink()
    proc = analyze_verify(root)
    assert proc.returncode != 0
    assert "/usr/bin/linelight is not executable" in proc.stderr


def test_unit_exposure_is_at_most_2_5(debs: dict[str, Deb], tmp_path: Path) -> None:
    need_systemd_analyze()
    unit = tmp_path / "linelight.service"
    unit.write_bytes(debs["amd64"].files()[UNIT].data)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(unit)], capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for linelight\.service: (\d+\.\d+)", proc.stdout)
    assert m is not None, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.5, proc.stdout


def test_sysusers_entry_creates_the_service_user(debs: dict[str, Deb], tmp_path: Path) -> None:
    """The sysusers.d line (used by the postinst where systemd-sysusers exists, and by systemd
    at boot) makes the user the unit runs as, with the state directory as home."""
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed (`make apt` installs systemd)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    conf = root / "usr/lib/sysusers.d/linelight.conf"
    conf.parent.mkdir(parents=True)
    conf.write_bytes(debs["amd64"].files()["/usr/lib/sysusers.d/linelight.conf"].data)
    proc = subprocess.run(["systemd-sysusers", f"--root={root}", "linelight.conf"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    users = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    linelight = next(u for u in users if u[0] == "linelight")
    assert int(linelight[2]) < 1000  # a system user
    assert linelight[5:] == ["/var/lib/linelight", "/usr/sbin/nologin"]
    assert any(line.startswith("linelight:") for line in (root / "etc/group").read_text().splitlines())
