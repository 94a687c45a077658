"""What the .deb holds: architecture, files, modes, conffiles, vendored wheels for the target."""

from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.debs import (
    ARCHES,
    BUILD_SCRIPT,
    REPO,
    Deb,
    build,
    build_module,
    commit_time,
    run_build,
)

ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
LIB = "/usr/lib/linelight"


def elf_machine(data: bytes) -> int | None:
    if data[:4] != b"\x7fELF":
        return None
    return int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")


@pytest.mark.parametrize("arch", ARCHES)
def test_control_names_the_target_architecture_and_debian12_python(
        debs: dict[str, Deb], arch: str) -> None:
    control = debs[arch].control
    assert control["Package"] == "linelight"
    assert control["Architecture"] == arch
    assert debs[arch].path.name == f"linelight_{control['Version']}_{arch}.deb"
    depends = [d.strip() for d in control["Depends"].split(",")]
    # Compiled modules are cp311: the package must not install on another python3.
    assert "python3 (>= 3.11)" in depends and "python3 (<< 3.12)" in depends
    assert "adduser" in depends
    assert any(d.startswith("libc6 (>= 2.") for d in depends)


@pytest.mark.parametrize("arch", ARCHES)
def test_ships_launcher_unit_user_config_and_docs(debs: dict[str, Deb], arch: str) -> None:
    members = debs[arch].members
    for path in ("/usr/bin/linelight", "/lib/systemd/system/linelight.service",
                 "/usr/lib/sysusers.d/linelight.conf", "/etc/linelight/agent.toml",
                 "/usr/share/doc/linelight/copyright", "/usr/share/doc/linelight/changelog.gz",
                 "/usr/share/man/man1/linelight.1.gz", "/usr/share/lintian/overrides/linelight",
                 f"{LIB}/linelight/agent/cli/__init__.py", f"{LIB}/linelight/rules/fields.py",
                 f"{LIB}/linelight/hw/__init__.py",
                 f"{LIB}/paho/mqtt/client.py", f"{LIB}/pymodbus/__init__.py",
                 f"{LIB}/msgpack/__init__.py", f"{LIB}/gpiod/__init__.py"):
        assert path in members, f"{path} is missing from {debs[arch].path.name}"
    rule_files = [p for p in members if fnmatch.fnmatch(p, "/etc/linelight/rules.d/*.toml")]
    assert rule_files, "no default rule file in /etc/linelight/rules.d"
    launcher = members["/usr/bin/linelight"].data.decode()
    assert launcher.startswith("#!/usr/bin/python3 -I\n")
    assert 'sys.path.insert(0, "/usr/lib/linelight")' in launcher
    sysusers = members["/usr/lib/sysusers.d/linelight.conf"].data.decode()
    assert re.search(r"^u linelight - .* /var/lib/linelight /usr/sbin/nologin$", sysusers, re.M)


def test_docs_the_default_config_points_to_are_shipped(debs: dict[str, Deb]) -> None:
    members = debs["amd64"].members
    config = members["/etc/linelight/agent.toml"].data.decode()
    named = set(re.findall(r"/usr/share/doc/linelight/[\w./-]*\w", config))
    assert "/usr/share/doc/linelight/operations.md" in named
    for path in sorted(named):
        assert path in members, f"agent.toml points to {path}, which the package lacks"


@pytest.mark.parametrize("arch", ARCHES)
def test_modes_owners_and_times_are_normalized(debs: dict[str, Deb], arch: str,
                                               pinned_commit: str) -> None:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or commit_time(pinned_commit))
    for path, m in debs[arch].members.items():
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root"), path
        assert m.mtime == epoch, f"{path}: mtime {m.mtime} is not the commit's {epoch}"
        assert m.kind in ("file", "dir"), f"{path} is a {m.kind}"
        expected = 0o755 if m.kind == "dir" or path == "/usr/bin/linelight" else 0o644
        assert m.mode == expected, f"{path} has mode {m.mode:o}, expected {expected:o}"


@pytest.mark.parametrize("arch", ARCHES)
def test_conffiles_are_exactly_the_config_files(debs: dict[str, Deb], arch: str) -> None:
    deb = debs[arch]
    conffiles = deb.control_file("conffiles").split()
    etc_files = sorted(p for p in deb.files() if p.startswith("/etc/"))
    assert conffiles == etc_files
    assert "/etc/linelight/agent.toml" in conffiles
    # md5sums covers every other file (dpkg --verify uses it).
    listed = {"/" + line.split("  ", 1)[1] for line in deb.control_file("md5sums").splitlines()}
    assert listed == set(deb.files()) - set(conffiles)


@pytest.mark.parametrize("arch", ARCHES)
def test_no_stray_build_files(debs: dict[str, Deb], arch: str) -> None:
    stray = re.compile(r"(__pycache__|\.pyc$|\.pyo$|\.egg-info|/\.git|~$|\.orig$|"
                       r"^/usr/lib/linelight/(.*/)?tests?/|^/usr/lib/linelight/bin(/|$)|"
                       r"direct_url\.json$)")
    build_paths = [str(REPO).encode(), b"linelight-deb-", sys.prefix.encode(),
                   sys.base_prefix.encode()]
    for path, m in debs[arch].members.items():
        assert not stray.search(path), f"stray build file in the package: {path}"
        for needle in build_paths:
            assert needle not in m.data, f"{path} mentions the build machine's {needle!r}"
    # Every module of ours in the package is tracked in git (nothing untracked slipped in).
    ours = [p for p in debs[arch].files() if re.match(rf"{LIB}/linelight/(agent|rules|hw)/", p)]
    assert ours


@pytest.mark.parametrize("arch", ARCHES)
def test_compiled_modules_and_wheel_tags_are_for_the_target(debs: dict[str, Deb],
                                                             arch: str) -> None:
    files = debs[arch].files()
    elf = {p: elf_machine(m.data) for p, m in files.items() if elf_machine(m.data) is not None}
    # msgpack and gpiod have C extensions: a package without them is broken, not "pure";
    # protobuf without its upb module would fall back to the slow pure-Python backend.
    assert any("/msgpack/" in p for p in elf) and any("/gpiod/" in p for p in elf), elf
    assert any("/google/_upb/" in p for p in elf), "protobuf ships without its upb backend"
    for path, machine in elf.items():
        assert machine == ELF_MACHINE[arch], f"{path} is for ELF machine {machine:#x}"
        # CPython's own tag, or the stable ABI (cryptography's Rust module, checked above
        # for the ELF machine like the rest)
        assert path.endswith((f"-{WHEEL_ARCH[arch]}-linux-gnu.so", ".abi3.so")), path
    tags: dict[str, list[str]] = {}
    for path, m in files.items():
        if path.endswith(".dist-info/WHEEL"):
            tags[path] = re.findall(r"^Tag: (.+)$", m.data.decode(), re.M)
    assert tags
    for path, wheel_tags in tags.items():
        for tag in wheel_tags:
            py, abi, plat = tag.split("-")
            if plat == "any":
                assert abi == "none", f"{path}: {tag}"
            else:
                # the stable ABI of an older CPython (protobuf: cp310-abi3) runs on 3.11 too
                stable = abi == "abi3" and py.startswith("cp3") and int(py[3:]) <= 11
                assert (py, abi) == ("cp311", "cp311") or stable, f"{path}: {tag}"
                assert plat.startswith("manylinux") and plat.endswith(WHEEL_ARCH[arch]), \
                    f"{path}: {tag} is not a {arch} wheel"


@pytest.mark.parametrize("arch", ARCHES)
def test_wheel_records_match_the_shipped_files(debs: dict[str, Deb], arch: str) -> None:
    """The stripped extension modules got their RECORD updated; nothing else was altered."""
    files = debs[arch].files()
    checked = 0
    for path, m in files.items():
        if not path.endswith(".dist-info/RECORD"):
            continue
        for row in csv.reader(io.StringIO(m.data.decode())):
            name, digest = row[0], row[1]
            full = f"{LIB}/{name}"
            if not digest or full not in files:
                continue  # RECORD itself; console scripts (not shipped)
            algo, _, want = digest.partition("=")
            got = base64.urlsafe_b64encode(hashlib.new(algo, files[full].data).digest())
            assert got.rstrip(b"=").decode() == want, f"{full} does not match its RECORD"
            checked += 1
    assert checked > 100


def test_lock_file_covers_every_runtime_dependency(debs: dict[str, Deb]) -> None:
    """pyproject's dependencies and everything they require are vendored (the build installs
    with --no-deps, so a dependency missing from packaging/requirements.txt would only show
    as an ImportError on the machine)."""
    files = debs["amd64"].files()
    shipped: dict[str, str] = {}
    requires: list[tuple[str, Requirement]] = []
    for path, m in files.items():
        if path.endswith(".dist-info/METADATA"):
            text = m.data.decode().replace("\r\n", "\n")
            name = canonicalize_name(re.search(r"^Name: (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
            shipped[name] = re.search(r"^Version: (.+)$", text, re.M).group(1)  # type: ignore[union-attr]
            requires += [(name, Requirement(r)) for r in
                         re.findall(r"^Requires-Dist: (.+)$", text, re.M)]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requires += [("linelight", Requirement(r)) for r in pyproject["project"]["dependencies"]]
    target = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
              "platform_system": "Linux", "implementation_name": "cpython", "extra": ""}
    not_vendored = {"pip", "setuptools"}  # see packaging/requirements.txt
    for who, req in requires:
        if req.marker is not None and not req.marker.evaluate(target):
            continue
        name = canonicalize_name(req.name)
        if name in not_vendored:
            continue
        assert name in shipped, f"{who} requires {req}, which is not vendored"
        assert req.specifier.contains(shipped[name], prereleases=True), \
            f"{who} requires {req}, but {name} {shipped[name]} is vendored"


def test_copyright_covers_every_vendored_package(debs: dict[str, Deb]) -> None:
    files = debs["amd64"].files()
    text = files["/usr/share/doc/linelight/copyright"].data.decode()
    patterns: list[str] = []
    for stanza in re.findall(r"^Files: (.+(?:\n .+)*)", text, re.M):
        patterns += stanza.split()
    tops = {p[len(LIB) + 1:].split("/")[0] for p in files if p.startswith(LIB + "/")}
    for top in sorted(t for t in tops if not t.endswith(".dist-info")):
        probe = f"usr/lib/linelight/{top}/x.py" if not top.endswith(".py") else \
            f"usr/lib/linelight/{top}"
        assert any(fnmatch.fnmatch(probe, p) for p in patterns), \
            f"/usr/lib/linelight/{top} has no Files: stanza in debian/copyright"


def test_maintainer_scripts_are_posix_shell(debs: dict[str, Deb]) -> None:
    for script in ("postinst", "prerm", "postrm"):
        text = debs["amd64"].control_file(script)
        assert text.startswith("#!/bin/sh\n")
        subprocess.run(["sh", "-n"], input=text.encode(), check=True)
        assert "set -e" in text


def test_man_page_renders_without_warnings(debs: dict[str, Deb], tmp_path: Path) -> None:
    if subprocess.run(["sh", "-c", "command -v man"], capture_output=True).returncode != 0:
        pytest.skip("man is not installed")
    page = tmp_path / "linelight.1.gz"
    page.write_bytes(debs["amd64"].files()["/usr/share/man/man1/linelight.1.gz"].data)
    proc = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", str(page)],
                          capture_output=True, text=True, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    plain = re.sub(r".\x08", "", proc.stdout)  # drop the overstrike bold
    assert "linelight" in plain and "/etc/linelight/agent.toml" in plain


def test_two_builds_of_one_commit_are_byte_identical(debs: dict[str, Deb], pinned_commit: str,
                                                     tmp_path: Path) -> None:
    for arch in ARCHES:
        again = build(arch, tmp_path, pinned_commit)
        assert again.read_bytes() == debs[arch].path.read_bytes(), \
            f"the {arch} package differs between two builds of {pinned_commit}"


# -- faults of the build itself --------------------------------------------------------------

def test_build_names_a_revision_that_is_not_a_commit(tmp_path: Path) -> None:
    proc = run_build("--arch", "amd64", "--out", str(tmp_path), "--commit", "no-such-rev")
    assert proc.returncode == 1
    assert "'no-such-rev' does not name a commit" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_build_refuses_a_version_dpkg_would_reject(tmp_path: Path, pinned_commit: str) -> None:
    proc = run_build("--arch", "amd64", "--out", str(tmp_path), "--commit", pinned_commit,
                     "--version", "v1 beta")
    assert proc.returncode == 1
    assert "version 'v1 beta' is not a valid native Debian version" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_build_refuses_a_source_date_epoch_that_is_not_a_time(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--arch", "amd64", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "yesterday"})
    assert proc.returncode == 1
    assert "SOURCE_DATE_EPOCH must be seconds since 1970, not 'yesterday'" in proc.stderr


def test_build_refuses_a_changelog_that_lags_the_version(tmp_path: Path) -> None:
    mod = build_module()
    (tmp_path / "packaging" / "debian").mkdir(parents=True)
    (tmp_path / "packaging" / "debian" / "changelog").write_text(
        "linelight (0.1.0) unstable; urgency=medium\n\n  * x\n\n -- a <a@b.c>  date\n")
    with pytest.raises(mod.BuildError, match=r"changelog:1: the newest entry is 0\.1\.0 but "
                                             r"agent/__init__.py says 0\.2\.0"):
        mod.changelog_text(tmp_path, "0.2.0", given=False, epoch=0)
    # With an explicit --version the build adds its own entry on top.
    text = mod.changelog_text(tmp_path, "0.2.0~rc1", given=True, epoch=0)
    assert text.startswith("linelight (0.2.0~rc1) unstable; urgency=medium\n")


def test_build_refuses_a_compiled_module_for_another_architecture(tmp_path: Path) -> None:
    mod = build_module()
    so = tmp_path / "usr/lib/linelight/x/_ext.cpython-311-x86_64-linux-gnu.so"
    so.parent.mkdir(parents=True)
    so.write_bytes(Path(sys.executable).resolve().read_bytes())  # an x86-64 ELF file
    if elf_machine(so.read_bytes()) != ELF_MACHINE["amd64"]:
        pytest.skip("this test needs an x86-64 interpreter as a sample ELF file")
    with pytest.raises(mod.BuildError, match=r"_ext\.cpython-311-x86_64-linux-gnu\.so is built "
                                             r"for ELF machine 0x3e, not arm64"):
        mod.shlib_depends(mod.TARGETS["arm64"], tmp_path)
