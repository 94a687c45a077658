"""Fixtures for the hardware tests: pymodbus's own server, a gpiozero MockFactory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from gpiozero.pins.mock import MockFactory
from pymodbus.framer import FramerType

from tests.hw.modbus_server import ModbusTestServer


@pytest.fixture
async def modbus_server() -> AsyncIterator[ModbusTestServer]:
    server = ModbusTestServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def modbus_rtu_server() -> AsyncIterator[ModbusTestServer]:
    """The same device speaking RTU framing over TCP, for `socket://` serial URLs."""
    server = ModbusTestServer(framer=FramerType.RTU)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    try:
        yield factory
    finally:
        factory.close()
