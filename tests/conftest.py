"""Session-wide test settings: anyio on asyncio, shared fixtures from tests/fixtures."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.plugin"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
