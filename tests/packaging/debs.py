"""Building linelight's .deb with packaging/build_deb.py and reading one back (members, control)."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "packaging" / "build_deb.py"
ARCHES = ("amd64", "arm64")


def build_module() -> ModuleType:
    """packaging/build_deb.py as a module (packaging/ is not an import package)."""
    spec = importlib.util.spec_from_file_location("linelight_build_deb", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def head_commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def commit_time(commit: str) -> int:
    return int(subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct", commit],
                              capture_output=True, text=True, check=True).stdout)


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the build script (same interpreter as the tests) and return the finished process."""
    return subprocess.run([sys.executable, str(BUILD_SCRIPT), *args], capture_output=True,
                          text=True, timeout=600)


def build(arch: str, out: Path, commit: str, version: str | None = None) -> Path:
    args = ["--arch", arch, "--out", str(out), "--commit", commit]
    if version is not None:
        args += ["--version", version]
    proc = run_build(*args)
    if proc.returncode != 0:
        raise AssertionError(f"build of {arch} failed:\n{proc.stderr}{proc.stdout}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


@dataclass(frozen=True)
class Member:
    path: str  # "/usr/bin/linelight", "/etc/linelight/" for directories
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: int
    kind: str  # "file", "dir", "symlink", "other"
    data: bytes


class Deb:
    """One .deb file, read with dpkg-deb."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _dpkg_deb(self, *args: str) -> bytes:
        return subprocess.run(["dpkg-deb", *args, str(self.path)], capture_output=True,
                              check=True).stdout

    @cached_property
    def members(self) -> dict[str, Member]:
        tar_bytes = self._dpkg_deb("--fsys-tarfile")
        out: dict[str, Member] = {}
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            for info in tar.getmembers():
                name = "/" + info.name.removeprefix("./").rstrip("/")
                kind = ("dir" if info.isdir() else "file" if info.isfile()
                        else "symlink" if info.issym() else "other")
                data = b""
                if info.isfile():
                    f = tar.extractfile(info)
                    assert f is not None
                    data = f.read()
                out[name] = Member(name, info.mode, info.uid, info.gid, info.uname, info.gname,
                                   int(info.mtime), kind, data)
        return out

    def files(self) -> dict[str, Member]:
        return {p: m for p, m in self.members.items() if m.kind == "file"}

    @cached_property
    def control(self) -> dict[str, str]:
        text = self._dpkg_deb("--field").decode()
        fields: dict[str, str] = {}
        key = ""
        for line in text.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        return fields

    def control_file(self, name: str) -> str:
        """A control member's text (conffiles, postinst, md5sums...)."""
        return subprocess.run(["dpkg-deb", "--info", str(self.path), name], capture_output=True,
                              check=True).stdout.decode()

    def extract(self, dest: Path) -> Path:
        subprocess.run(["dpkg-deb", "--extract", str(self.path), str(dest)], check=True)
        return dest
