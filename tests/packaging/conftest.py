"""Packages built once per test session from one pinned commit (so concurrent commits to the
work tree cannot make two builds differ)."""

from __future__ import annotations

import shutil

import pytest

from tests.packaging.debs import ARCHES, Deb, build, head_commit


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Builds take a few seconds each; keep the one-off build under the per-test timeout's
    # reach but give it room on a loaded machine.
    for item in items:
        if item.nodeid.startswith("tests/packaging/") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def pinned_commit() -> str:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (`make apt` installs dpkg-dev)")
    return head_commit()


@pytest.fixture(scope="session")
def debs(pinned_commit: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Deb]:
    out = tmp_path_factory.mktemp("debs")
    return {arch: Deb(build(arch, out, pinned_commit)) for arch in ARCHES}
