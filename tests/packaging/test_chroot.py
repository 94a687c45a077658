"""The .deb in a Debian 12 chroot: install, run as the unit runs it, upgrade, remove, purge.

systemd is not running here, so the agent is started the way linelight.service starts it: the
unit's own ExecStart command line, as its User/Group with their supplementary groups, in its
WorkingDirectory with its UMask, no capabilities and no new privileges, with NOTIFY_SOCKET and
WATCHDOG_USEC pointing at a socket this test reads. The agent runs in a network namespace that
has only loopback.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.packaging.chroot import Chroot, ensure_base, wait_for
from tests.packaging.debs import Deb, build

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1800)]

UNIT = "/lib/systemd/system/linelight.service"
NOTIFY_DIR = "/run/linelight-test"
# Generous: two cores shared with other test sessions; Python imports everything cold.
READY_DEADLINE = 120.0


@pytest.fixture(scope="module")
def host_arch() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root for debootstrap, chroot and namespaces (CI runs as root)")
    for tool in ("debootstrap", "unshare", "chroot", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make apt` installs debootstrap)")
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def base_tar(host_arch: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("debootstrap") / "debootstrap.log"
    try:
        return ensure_base(log)
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise AssertionError(f"building the Debian 12 base failed ({exc}):\n{tail}") from None


@pytest.fixture
def chroot(base_tar: Path, tmp_path: Path) -> Iterator[Chroot]:
    with Chroot.extracted(base_tar, tmp_path) as c:
        yield c


@pytest.fixture
def deb(debs: dict[str, Deb], host_arch: str) -> Deb:
    if host_arch not in debs:
        pytest.skip(f"no package is built for this machine's architecture {host_arch}")
    return debs[host_arch]


def unit_settings(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), value.strip())
    return settings


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "").isdigit():
            return float(value[: -len(suffix)]) * factor
    return float(value)


@dataclass
class RunningAgent:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    log: Path
    messages: list[str] = field(default_factory=list)

    def receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            self.messages.extend(data.decode(errors="replace").splitlines())

    def wait_message(self, prefix: str, deadline: float) -> str:
        def seen() -> bool:
            self.receive()
            assert self.proc.poll() is None, \
                f"the agent exited with {self.proc.returncode}:\n{self.log.read_text()}"
            return any(m.startswith(prefix) for m in self.messages)

        wait_for(seen, deadline, f"{prefix} from the agent (log: {self.log})")
        return next(m for m in self.messages if m.startswith(prefix))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the agent ignored SIGTERM:\n{self.log.read_text()}") \
                    from None
        self.receive()
        self.sock.close()
        return self.proc.returncode


def start_like_the_unit(chroot: Chroot, log: Path) -> RunningAgent:
    """Start the installed unit's ExecStart the way systemd would (see the module doc)."""
    unit = unit_settings(chroot.path(UNIT).read_text())
    execstart = shlex.split(unit["ExecStart"])
    notify_dir = chroot.path(NOTIFY_DIR)
    notify_dir.mkdir(parents=True, exist_ok=True)
    notify_dir.chmod(0o755)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_dir / "notify"))
    (notify_dir / "notify").chmod(0o777)  # the service user must be able to send to it
    sock.setblocking(False)
    env = {
        "NOTIFY_SOCKET": f"{NOTIFY_DIR}/notify",
        "WATCHDOG_USEC": str(int(seconds(unit["WatchdogSec"]) * 1_000_000)),
        "HOME": "/var/lib/linelight", "USER": unit["User"], "LOGNAME": unit["User"],
        "SHELL": "/usr/sbin/nologin",
        "STATE_DIRECTORY": f"/var/lib/{unit['StateDirectory']}",
    }
    launcher = ('umask "$1"; cd "$2" || exit 1; u="$3"; g="$4"; shift 4; '
                'exec setpriv --reuid="$u" --regid="$g" --init-groups --no-new-privs '
                '--inh-caps=-all --bounding-set=-all -- "$@"')
    argv = ["sh", "-c", launcher, "sh", unit["UMask"], unit["WorkingDirectory"], unit["User"],
            unit["Group"], *execstart]
    out = log.open("wb")
    proc = subprocess.Popen(chroot.command(argv, env), stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return RunningAgent(proc, sock, log)


def listening(pid: int) -> set[tuple[str, int]]:
    """TCP listening sockets of the network namespace the process is in."""
    found: set[tuple[str, int]] = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


def get_in_netns(pid: int, url: str) -> str:
    """GET a URL from inside the agent's network namespace (it has only loopback)."""
    code = ("import sys, urllib.request\n"
            "print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())")
    proc = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", code,
                           url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_installed_agent_starts_as_the_unit_says_and_reports_ready(
        chroot: Chroot, deb: Deb, tmp_path: Path) -> None:
    chroot.install(deb.path)
    version = chroot.run("linelight", "--version").stdout.strip()
    assert version == f"linelight {deb.control['Version'].split('+')[0]}"

    agent = start_like_the_unit(chroot, tmp_path / "agent.log")
    try:
        agent.wait_message("READY=1", READY_DEADLINE)
        pid = agent.proc.pid
        # Who it runs as: the linelight user with its groups, no privileges.
        entry = chroot.passwd_entry("linelight")
        assert entry is not None
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1:]
        assert set(uids) == {entry[2]}
        groups = next(ln for ln in status.splitlines() if ln.startswith("Groups:")).split()[1:]
        dialout_gid = next(ln.split(":")[2] for ln in chroot.path("/etc/group").read_text()
                           .splitlines() if ln.startswith("dialout:"))
        assert dialout_gid in groups
        assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status
        # Diagnostics on loopback, and nothing listening anywhere else.
        wait_for(lambda: ("127.0.0.1", 9750) in listening(pid), 60, "diagnostics on :9750")
        assert all(addr in ("127.0.0.1", "::1") for addr, _ in listening(pid)), listening(pid)
        doc = json.loads(get_in_netns(pid, "http://127.0.0.1:9750/status"))
        assert doc["state"]["name"] == "unknown"  # no I/O configured: never a guessed state
        # A fresh install is ok with warnings (no broker, no sources, maybe the clock), not a
        # 503 that would page for every new IPC; the inputs the rules read are listed missing.
        assert (doc["health"]["status"], doc["health"]["reasons"]) == ("ok", []), doc["health"]
        assert any(w.startswith("broker: none configured") for w in doc["health"]["warnings"])
        assert {i["quality"] for i in doc["inputs"].values()} == {"missing"}, doc["inputs"]
        assert get_in_netns(pid, "http://127.0.0.1:9750/healthz").startswith("ok\n")
        # The watchdog is fed while it is healthy.
        agent.wait_message("WATCHDOG=1", seconds("30s") + 60)
        # `systemctl reload` runs the unit's ExecReload: the agent reloads and keeps running.
        unit = unit_settings(chroot.path(UNIT).read_text())
        reload_cmd = shlex.split(unit["ExecReload"].replace("$MAINPID", str(pid)))
        subprocess.run(reload_cmd, check=True, timeout=30)
        wait_for(lambda: "SIGHUP" in agent.log.read_text(), 60, "the SIGHUP reload in the log")
        assert agent.proc.poll() is None, agent.log.read_text()
        assert json.loads(get_in_netns(pid, "http://127.0.0.1:9750/status"))["ready"] is True
        # It keeps its queue where the unit's StateDirectory= is.
        journal = chroot.path("/var/lib/linelight/journal.db")
        assert journal.is_file() and str(journal.stat().st_uid) == entry[2]
    finally:
        code = agent.stop()
    assert code == 0, agent.log.read_text()
    assert "STOPPING=1" in agent.messages
    assert "Traceback" not in agent.log.read_text()


def test_upgrade_keeps_edited_config_and_purge_removes_state(
        chroot: Chroot, deb: Deb, pinned_commit: str, tmp_path: Path) -> None:
    chroot.install(deb.path)
    # postinst: user, groups, state directory, service enabled, bytecode compiled.
    entry = chroot.passwd_entry("linelight")
    assert entry is not None and entry[5:] == ["/var/lib/linelight", "/usr/sbin/nologin"]
    assert "linelight" in (chroot.group_members("dialout") or [])
    state = chroot.path("/var/lib/linelight")
    assert str(state.stat().st_uid) == entry[2] and state.stat().st_mode & 0o777 == 0o750
    wants = chroot.path("/etc/systemd/system/multi-user.target.wants/linelight.service")
    assert wants.is_symlink() and os.readlink(wants) == UNIT
    assert list(chroot.path("/usr/lib/linelight/linelight/agent").glob("__pycache__/*.pyc"))

    agent = start_like_the_unit(chroot, tmp_path / "agent.log")
    try:
        agent.wait_message("READY=1", READY_DEADLINE)
    finally:
        assert agent.stop() == 0, agent.log.read_text()
    assert chroot.path("/var/lib/linelight/journal.db").is_file()

    config = chroot.path("/etc/linelight/agent.toml")
    shipped = config.read_text()
    edited = shipped.replace('# agent_id = "press-07"', 'agent_id = "press-07"', 1)
    assert edited != shipped
    config.write_text(edited)
    newer_version = f"{deb.control['Version']}+upgrade1"
    newer = build(deb.control["Architecture"], tmp_path / "newer", pinned_commit, newer_version)
    chroot.install(newer)
    installed = chroot.run("dpkg-query", "-W", "-f=${Version} ${db:Status-Abbrev}",
                           "linelight").stdout
    assert installed.split() == [newer_version, "ii"]
    assert config.read_text() == edited
    assert not list(chroot.path("/etc/linelight").glob("*.dpkg-*"))
    check = chroot.run("linelight", "check", "--config", "/etc/linelight/agent.toml")
    assert "ok:" in check.stdout

    chroot.run("apt-get", "remove", "-y", "linelight", env={"DEBIAN_FRONTEND": "noninteractive"})
    assert not chroot.path("/usr/bin/linelight").exists()
    assert not chroot.path("/usr/lib/linelight").exists()  # prerm took the bytecode along
    assert config.read_text() == edited  # remove keeps the config...
    assert chroot.path("/var/lib/linelight/journal.db").is_file()  # ...and the queue

    chroot.run("apt-get", "purge", "-y", "linelight", env={"DEBIAN_FRONTEND": "noninteractive"})
    assert not chroot.path("/etc/linelight").exists()
    assert not chroot.path("/var/lib/linelight").exists()
    leftovers = [str(p) for p in chroot.path("/etc/systemd").rglob("*linelight*")]
    assert leftovers == []
    status = chroot.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "linelight", check=False)
    assert status.returncode != 0 or status.stdout.strip() in ("", "un", "pn")
