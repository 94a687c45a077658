"""A Debian 12 chroot for install tests: built once with debootstrap, cached as a tar file.

The cached base holds everything the package depends on (python3, adduser, ...), so installing
the .deb inside needs no network: only building the cache reaches the Debian mirror configured
in /etc/apt/sources.list*. Every command in the chroot runs in its own mount and network
namespaces (loopback only), so nothing in there can reach the network, and /proc is mounted
privately and goes away with the command.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

CACHE_DIR = Path(os.environ.get("LINELIGHT_CHROOT_CACHE", "/var/cache/linelight-test"))
SUITE = "bookworm"
# What the package needs from Debian, preinstalled so `apt-get install ./linelight.deb` works
# offline; iproute2 brings the chroot's loopback interface up.
BASE_PACKAGES = ("python3", "adduser", "passwd", "init-system-helpers", "iproute2")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def debian_mirror(sources: Sequence[Path] | None = None) -> str:
    """The first Debian archive URI configured for apt (deb822 or one-line format)."""
    if sources is None:
        sources = [Path("/etc/apt/sources.list"),
                   *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if re.search(r"/debian/?$", uri) and "security" not in uri:
                return str(uri).rstrip("/")
    return "http://deb.debian.org/debian"


def cache_key(mirror: str) -> str:
    return hashlib.sha256(f"{SUITE} {mirror} {' '.join(BASE_PACKAGES)} minbase v1".encode()
                          ).hexdigest()[:16]


def ensure_base(log: Path) -> Path:
    """The cached base tar, built by debootstrap if missing or made for other packages."""
    mirror = debian_mirror()
    key = cache_key(mirror)
    tar = CACHE_DIR / f"chroot-{SUITE}.tar"
    stamp = CACHE_DIR / f"chroot-{SUITE}.key"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
        if tar.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
            return tar
        work = CACHE_DIR / f"build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            with log.open("ab") as out:
                subprocess.run(["debootstrap", "--variant=minbase",
                                f"--include={','.join(BASE_PACKAGES)}", SUITE, str(work), mirror],
                               stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1500)
            # Package lists and downloaded archives are not needed in the cached base.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (work / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = tar.with_suffix(".tar.partial")
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(work), "-cf",
                            str(partial), "."], check=True, timeout=600)
            partial.replace(tar)
            stamp.write_text(key + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return tar


class Chroot:
    """An extracted copy of the cached base."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    @contextmanager
    def extracted(cls, tar: Path, where: Path) -> Iterator[Chroot]:
        root = where / "root"
        root.mkdir()
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(tar)],
                       check=True, timeout=600)
        try:
            yield cls(root)
        finally:
            # Nothing is mounted here (mounts live in each command's namespace).
            shutil.rmtree(root, ignore_errors=True)

    def command(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """argv as run inside the chroot: private mounts, private network with only loopback,
        a clean environment. The process keeps the pid of the returned command's first exec."""
        env_args = [f"{k}={v}" for k, v in {"PATH": PATH, "LANG": "C.UTF-8", **(env or {})}.items()]
        script = ('mount -t proc proc "$0/proc" && chroot "$0" ip link set lo up '
                  '&& exec chroot "$0" env -i "$@"')
        return ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script,
                str(self.root), *env_args, *argv]

    def run(self, *argv: str, env: Mapping[str, str] | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.command(argv, env), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"in the chroot, {' '.join(argv)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def install(self, deb: Path) -> subprocess.CompletedProcess[str]:
        """`apt-get install ./x.deb`, as an admin would, with no network."""
        target = self.path(f"/tmp/{deb.name}")
        shutil.copyfile(deb, target)
        return self.run("apt-get", "install", "-y", "--no-install-recommends",
                        "-o", "Acquire::Languages=none", f"/tmp/{deb.name}",
                        env={"DEBIAN_FRONTEND": "noninteractive"})

    def passwd_entry(self, user: str) -> list[str] | None:
        for line in self.path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return fields
        return None

    def group_members(self, group: str) -> list[str] | None:
        for line in self.path("/etc/group").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == group:
                return [m for m in fields[3].split(",") if m]
        return None


def wait_for(condition: object, deadline: float, what: str) -> None:
    """Poll `condition()` until true; fail naming `what` after `deadline` seconds."""
    assert callable(condition)
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(0.1)
