"""The chroot helper builds its base from the Debian mirror apt is configured with."""

from __future__ import annotations

from pathlib import Path

from tests.packaging.chroot import cache_key, debian_mirror


def test_mirror_comes_from_deb822_sources_skipping_security(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://security.debian.org/debian-security\n"
                       "Suites: bookworm-security\n\n"
                       "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian_mirror([sources]) == "http://mirror.example/debian"


def test_mirror_comes_from_one_line_sources(tmp_path: Path) -> None:
    other = tmp_path / "vendor.list"
    other.write_text("deb https://packages.vendor.example/apt stable main\n")
    main = tmp_path / "sources.list"
    main.write_text("# comment\ndeb [arch=amd64] http://ftp.example.org/debian bookworm main\n")
    assert debian_mirror([other, main]) == "http://ftp.example.org/debian"


def test_mirror_defaults_to_deb_debian_org(tmp_path: Path) -> None:
    assert debian_mirror([tmp_path / "missing.list"]) == "http://deb.debian.org/debian"


def test_cache_is_rebuilt_when_the_mirror_changes() -> None:
    assert cache_key("http://a.example/debian") != cache_key("http://b.example/debian")
