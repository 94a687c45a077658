"""Build linelight's .deb packages (amd64, arm64) reproducibly from the files of one git commit.

The package holds linelight's own import packages (`linelight.agent`, `.rules`, `.hw`) and its runtime
dependencies, installed from PyPI wheels for the *target* platform (pinned with hashes in
packaging/requirements.txt), under /usr/lib/linelight; a launcher /usr/bin/linelight that runs
them with Debian's python3; the systemd unit, a sysusers.d entry, the default config as
conffiles, the maintainer scripts, docs and a man page. The archive is written by dpkg-deb.

Reproducible: everything comes from one commit (`git archive`), every mtime is clamped to
SOURCE_DATE_EPOCH (the commit's time unless set), owners are root, modes are normalized, no
bytecode is shipped (postinst compiles it on the target), and xz runs single-threaded, so two
builds of the same commit are byte-identical.

Usage: python3 packaging/build_deb.py [--arch amd64|arm64 ...] [--out DIR] [--commit REV]
       [--version VERSION] [--wheel-cache DIR]
"""

from __future__ import annotations

import argparse
import base64
import csv
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"  # Debian 12's python3; compiled wheels are cp311
PACKAGE = "linelight"
LIB_DIR = "usr/lib/linelight"
# linelight's own import packages and the file types setuptools ships from them (pyproject.toml).
OWN_PACKAGES = ("agent", "rules", "hw")
OWN_SUFFIXES = (".py", ".toml", ".json", ".html")


@dataclass(frozen=True, slots=True)
class Target:
    deb_arch: str  # Debian's name
    elf_machine: int  # e_machine in the ELF header of its compiled modules
    wheel_arch: str  # the suffix of manylinux platform tags
    gnu_triplet: str  # prefix of the binutils that can strip its ELF files

    def platforms(self) -> list[str]:
        """Every manylinux tag a Debian 12 (glibc 2.36) machine of this architecture accepts."""
        tags = [f"manylinux2014_{self.wheel_arch}"]
        tags += [f"manylinux_2_{minor}_{self.wheel_arch}" for minor in range(17, 37)]
        return tags


TARGETS = {
    "amd64": Target("amd64", 0x3E, "x86_64", "x86_64-linux-gnu"),
    "arm64": Target("arm64", 0xB7, "aarch64", "aarch64-linux-gnu"),
}

# Shared libraries the vendored extension modules may link, and the Debian package providing them.
SONAME_PACKAGES = {
    "libc.so.6": "libc6",
    "libpthread.so.0": "libc6",
    "libm.so.6": "libc6",
    "libdl.so.2": "libc6",
    "librt.so.1": "libc6",
    # the dynamic loader, which cffi's _cffi_backend (asyncua -> cryptography) names directly
    "ld-linux-x86-64.so.2": "libc6",
    "ld-linux-aarch64.so.1": "libc6",
    "libgcc_s.so.1": "libgcc-s1",
    "libstdc++.so.6": "libstdc++6",
}


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="packaging/build.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", choices=sorted(TARGETS),
                        help="architecture to build (repeatable; default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output directory")
    parser.add_argument("--commit", default="HEAD", help="git revision to package (default HEAD)")
    parser.add_argument("--version", dest="deb_version",
                        help="package version (default: agent.__version__ of the commit)")
    parser.add_argument("--wheel-cache", type=Path, default=default_wheel_cache(),
                        help="where downloaded wheels are kept between builds")
    args = parser.parse_args(argv)
    try:
        for arch in args.arch or sorted(TARGETS):
            path = build(TARGETS[arch], out=args.out, commit=args.commit,
                         deb_version=args.deb_version, wheel_cache=args.wheel_cache)
            print(path)
    except BuildError as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 1
    return 0


def default_wheel_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "linelight" / "wheels"


def build(target: Target, *, out: Path, commit: str, deb_version: str | None,
          wheel_cache: Path) -> Path:
    """Build one .deb and return its path."""
    rev = resolve_commit(commit)
    epoch_text = os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct", rev)
    if not epoch_text.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH must be seconds since 1970, not '{epoch_text}'")
    epoch = int(epoch_text)
    with tempfile.TemporaryDirectory(prefix="linelight-deb-") as tmp:
        src = Path(tmp) / "src"
        root = Path(tmp) / "root"
        export_commit(rev, src)
        if not (src / "packaging" / "requirements.txt").is_file():
            raise BuildError(f"commit {rev[:12]} has no packaging/requirements.txt: it predates "
                             "the .deb build")
        upstream = read_version(src)
        version = deb_version or upstream
        if not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*", version):
            raise BuildError(f"version '{version}' is not a valid native Debian version")
        changelog = changelog_text(src, version, given=deb_version is not None, epoch=epoch)
        stage_own_code(src, root / LIB_DIR)
        stage_wheels(target, src / "packaging" / "requirements.txt", root / LIB_DIR, wheel_cache)
        stage_files(src / "packaging", root, changelog)
        stage_docs(src, root / "usr/share/doc/linelight")
        depends = shlib_depends(target, root)
        strip_elf_files(target, root)
        normalize_modes(root)
        write_control(src / "packaging", root, target, version, depends)
        clamp_mtimes(root, epoch)
        out.mkdir(parents=True, exist_ok=True)
        deb = out / f"{PACKAGE}_{version}_{target.deb_arch}.deb"
        run_dpkg_deb(root, deb, epoch)
    return deb


# -- source ------------------------------------------------------------------------------------

def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve_commit(commit: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except BuildError:
        raise BuildError(f"'{commit}' does not name a commit in {REPO}") from None


def export_commit(rev: str, dest: Path) -> None:
    """The tracked files of `rev` (never the work tree's untracked or uncommitted files)."""
    present = set(git("ls-tree", "--name-only", rev).splitlines())
    paths = [p for p in (*OWN_PACKAGES, "packaging", "docs", "examples") if p in present]
    proc = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, *paths],
                          capture_output=True)
    if proc.returncode != 0:
        raise BuildError(f"git archive {rev} failed: {proc.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        # The "data" filter (refuse links out of the tree) exists from Python 3.11.4 on.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def read_version(src: Path) -> str:
    init = src / "agent" / "__init__.py"
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', init.read_text(encoding="utf-8"), re.M)
    if m is None:
        raise BuildError(f"{init}: no __version__ = \"...\" line")
    return m.group(1)


def changelog_text(src: Path, version: str, *, given: bool, epoch: int) -> str:
    """packaging/debian/changelog; its first entry must be this version unless --version was
    given, in which case an entry for that build is put on top."""
    path = src / "packaging" / "debian" / "changelog"
    text = path.read_text(encoding="utf-8")
    m = re.match(r"linelight \(([^)]+)\)", text)
    if m is None:
        raise BuildError("packaging/debian/changelog:1: the first line must read "
                         "'linelight (VERSION) DIST; urgency=...'")
    if m.group(1) == version:
        return text
    if not given:
        raise BuildError(f"packaging/debian/changelog:1: the newest entry is {m.group(1)} but "
                         f"agent/__init__.py says {version}: add a changelog entry for {version}")
    date = subprocess.run(["date", "-u", "-R", "-d", f"@{epoch}"], capture_output=True,
                          text=True, check=True).stdout.strip()
    entry = (f"linelight ({version}) unstable; urgency=medium\n\n"
             f"  * Build of {m.group(1)} with the version set at build time.\n\n"
             f" -- linelight maintainers <linelight@example.org>  {date}\n\n")
    return entry + text


# -- staging -----------------------------------------------------------------------------------

def stage_own_code(src: Path, lib: Path) -> None:
    for package in OWN_PACKAGES:
        for path in sorted((src / package).rglob("*")):
            if path.is_file() and path.suffix in OWN_SUFFIXES:
                dest = lib / "linelight" / path.relative_to(src)  # the installed namespace
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BuildError(f"pip {args[0]} failed:\n{tail}")


def stage_wheels(target: Target, requirements: Path, lib: Path, cache: Path) -> None:
    """Download (once, into the cache) and install the target's wheels with --no-deps."""
    platform_args = [a for tag in target.platforms() for a in ("--platform", tag)]
    common = ["--only-binary=:all:", *platform_args, "--python-version", PYTHON_VERSION,
              "--implementation", "cp", "--abi", f"cp{PYTHON_VERSION.replace('.', '')}",
              "--no-deps", "--require-hashes", "-r", str(requirements)]
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builds share the cache
        pip("download", "--dest", str(cache), "--find-links", str(cache), *common)
        pip("install", "--no-index", "--find-links", str(cache), "--no-compile",
            "--no-cache-dir", "--no-warn-script-location", "--target", str(lib), *common)
    # Console scripts of dependencies carry the build machine's interpreter path; linelight's
    # only entry point is /usr/bin/linelight.
    shutil.rmtree(lib / "bin", ignore_errors=True)
    # Some wheels ship their own test suite (aiosqlite/tests); it is never imported at run time.
    for tests in sorted(lib.glob("*/test*"), reverse=True):
        if tests.is_dir() and tests.name in ("test", "tests") and tests.parent.name != "linelight":
            shutil.rmtree(tests)
    for cache_dir in sorted(lib.rglob("__pycache__")):
        shutil.rmtree(cache_dir)


def stage_files(pkg: Path, root: Path, changelog: str) -> None:
    deb = pkg / "debian"
    put(root / "usr/bin/linelight", (pkg / "linelight").read_bytes(), 0o755)
    put(root / "lib/systemd/system/linelight.service", (pkg / "linelight.service").read_bytes())
    put(root / "usr/lib/sysusers.d/linelight.conf", (pkg / "linelight.sysusers").read_bytes())
    put(root / "etc/linelight/agent.toml", (pkg / "etc" / "agent.toml").read_bytes())
    for rule_file in sorted((pkg / "etc" / "rules.d").glob("*.toml")):
        put(root / "etc/linelight/rules.d" / rule_file.name, rule_file.read_bytes())
    doc = root / "usr/share/doc/linelight"
    put(doc / "copyright", (deb / "copyright").read_bytes())
    put(doc / "changelog.gz", gzip_bytes(changelog.encode()))
    put(root / "usr/share/man/man1/linelight.1.gz", gzip_bytes((pkg / "linelight.1").read_bytes()))
    put(root / "usr/share/lintian/overrides/linelight", (deb / "lintian-overrides").read_bytes())


def stage_docs(src: Path, doc: Path) -> None:
    """The user docs (docs/*.md), the JSON Schemas for editors, and the example configs and
    rules, for admins on the machine."""
    for page in sorted((src / "docs").glob("*.md")):
        put(doc / page.name, page.read_bytes())
    for schema in sorted((src / "docs").glob("schema/*.json")):
        put(doc / "schema" / schema.name, schema.read_bytes())
    examples = src / "examples"
    for path in sorted(examples.rglob("*")) if examples.is_dir() else []:
        if path.is_file() and path.suffix in (".toml", ".md", ".json"):
            put(doc / "examples" / path.relative_to(examples), path.read_bytes())


def put(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def gzip_bytes(data: bytes) -> bytes:
    """gzip -9n: no name, no timestamp, so the bytes depend only on the content."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def normalize_modes(root: Path) -> None:
    """Directories 0755, files 0644, except the launcher (0755)."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)
    (root / "usr/bin/linelight").chmod(0o755)


# -- ELF checks and dependencies ------------------------------------------------------------

def elf_machine(data: bytes) -> int | None:
    """e_machine of an ELF file (None if not ELF)."""
    if data[:4] != b"\x7fELF" or len(data) < 20:
        return None
    return int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")


def shlib_depends(target: Target, root: Path) -> list[str]:
    """Check every ELF file is for the target and return the Depends its libraries need."""
    packages: dict[str, str] = {}
    glibc = (2, 17)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as f:
            head = f.read(64)
        machine = elf_machine(head)
        if machine is None:
            continue
        rel = path.relative_to(root)
        if machine != target.elf_machine:
            raise BuildError(f"/{rel} is built for ELF machine {machine:#x}, not "
                             f"{target.deb_arch} ({target.elf_machine:#x}): wrong wheel platform")
        dyn = readelf("-d", path)
        for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn):
            if soname not in SONAME_PACKAGES:
                raise BuildError(f"/{rel} needs {soname}, which no Debian package is mapped to "
                                 f"in build_deb.py SONAME_PACKAGES")
            packages[SONAME_PACKAGES[soname]] = soname
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", readelf("-V", path)):
            glibc = max(glibc, (int(major), int(minor)))
    depends = []
    for name in sorted(packages):
        depends.append(f"libc6 (>= {glibc[0]}.{glibc[1]})" if name == "libc6" else name)
    return depends


def strip_elf_files(target: Target, root: Path) -> None:
    """Strip symbols and debug info from the wheels' extension modules, as dh_strip does, and
    update their wheel RECORD so `pip check`-style verification still holds."""
    tool = f"{target.gnu_triplet}-strip"
    if shutil.which(tool) is None:
        raise BuildError(f"{tool} is missing: apt-get install binutils-{target.gnu_triplet} "
                         f"(it strips the {target.deb_arch} extension modules)")
    lib = root / LIB_DIR
    for path in sorted(lib.rglob("*.so*")):
        with path.open("rb") as f:
            if elf_machine(f.read(64)) is None:
                continue
        proc = subprocess.run([tool, "--remove-section=.comment", "--remove-section=.note",
                               "--strip-unneeded", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"{tool} {path.name} failed: {proc.stderr.strip()}")
        rewrite_record(lib, path)


def rewrite_record(lib: Path, changed: Path) -> None:
    """Update the hash and size of `changed` in the RECORD of the distribution that owns it."""
    rel = str(changed.relative_to(lib))
    data = changed.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    for record in sorted(lib.glob("*.dist-info/RECORD")):
        rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
        if not any(row and row[0] == rel for row in rows):
            continue
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            writer.writerow([rel, f"sha256={digest}", str(len(data))] if row and row[0] == rel
                            else row)
        record.write_text(out.getvalue(), encoding="utf-8")
        return
    raise BuildError(f"no wheel RECORD lists {rel}")


def readelf(flag: str, path: Path) -> str:
    proc = subprocess.run(["readelf", "--wide", flag, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"readelf {flag} {path.name} failed: {proc.stderr.strip()}")
    return proc.stdout


# -- control -----------------------------------------------------------------------------------

def write_control(pkg: Path, root: Path, target: Target, version: str, libs: list[str]) -> None:
    control_dir = root / "DEBIAN"
    control_dir.mkdir()
    conffiles = sorted("/" + str(p.relative_to(root)) for p in (root / "etc").rglob("*")
                       if p.is_file())
    files = sorted(p for p in root.rglob("*") if p.is_file() and "DEBIAN" not in p.parts)
    md5 = "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n"
                  for p in files if "/" + str(p.relative_to(root)) not in conffiles)
    installed_kib = sum((p.stat().st_size + 1023) // 1024 for p in files)
    installed_kib += sum(1 for p in root.rglob("*") if p.is_dir())
    template = (pkg / "debian" / "control.in").read_text(encoding="utf-8")
    control = template.format(version=version, arch=target.deb_arch,
                              installed_size=installed_kib,
                              shlibs="".join(f", {d}" for d in libs))
    put(control_dir / "control", control.encode())
    put(control_dir / "conffiles", "".join(f"{c}\n" for c in conffiles).encode())
    put(control_dir / "md5sums", md5.encode())
    for script in ("postinst", "prerm", "postrm"):
        put(control_dir / script, (pkg / "debian" / script).read_bytes(), 0o755)


def clamp_mtimes(root: Path, epoch: int) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def run_dpkg_deb(root: Path, deb: Path, epoch: int) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    root.chmod(0o755)
    cmd = ["dpkg-deb", "--root-owner-group", "--threads-max=1", "-Zxz", "-z6",
           "--build", str(root), str(deb)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BuildError(f"dpkg-deb failed: {(proc.stderr or proc.stdout).strip()}")


if __name__ == "__main__":
    sys.exit(main())
