"""sd_notify against a real unix datagram socket in a temp dir."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from linelight.agent.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield path, sock
    sock.close()


def _agent_with_watchdog(tmp_path: Path, path: str, usec: str) -> object:
    from harness.agent_proc import write_config
    from linelight.agent.app import Agent
    from linelight.agent.config import load_config

    return Agent(load_config(write_config(tmp_path / "agent")), handle_signals=False,
                 watch_files=False,
                 notifier=Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec}))


async def _received(sock: socket.socket, count: int) -> list[str]:
    import anyio

    got: list[str] = []
    with anyio.fail_after(30):
        while len(got) < count:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                await anyio.sleep(0.02)
    return got


def _drop_pending(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return


def test_messages_arrive_in_the_order_sent(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.watchdog_interval == 2.0
    assert n.ready("state unknown")
    assert n.watchdog()
    assert n.status("state producing,\nqueue 3")
    assert n.stopping()
    got = [sock.recv(4096).decode() for _ in range(4)]
    assert got == [
        "READY=1\nSTATUS=state unknown",
        "WATCHDOG=1",
        "STATUS=state producing, queue 3",
        "STOPPING=1",
    ]
    n.close()


def test_abstract_namespace_socket_is_supported() -> None:
    name = f"linelight-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(100) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.ready() is False


def test_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "1000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_interval is None


def test_missing_socket_returns_false_and_does_not_raise(tmp_path: Path) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    assert n.watchdog() is False
    n.close()


@pytest.mark.anyio
async def test_watchdog_is_withheld_while_the_journal_writer_is_not_running(
        tmp_path: Path, notify_socket: tuple[str, socket.socket]) -> None:
    import anyio

    path, sock = notify_socket
    sock.settimeout(0)
    agent: Any = _agent_with_watchdog(tmp_path, path, "200000")
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        healthy = await _received(sock, 6)
        agent.journal._running = False  # what the writer task's exit leaves behind
        _drop_pending(sock)  # what was sent before the flag changed
        unhealthy = await _received(sock, 6)
        await agent.stop()
    assert healthy[0].startswith("READY=1")
    assert "WATCHDOG=1" in healthy
    assert "WATCHDOG=1" not in unhealthy
    assert any(m.startswith("STATUS=") for m in unhealthy)


@pytest.mark.anyio
async def test_watchdog_is_withheld_while_scans_crawl_though_ticks_still_end(
        tmp_path: Path, notify_socket: tuple[str, socket.socket]) -> None:
    """A rule set that makes each scan take longer than half the watchdog period still ends
    a tick now and then; the old check saw a recent tick and kept pinging forever."""
    import time

    import anyio

    path, sock = notify_socket
    sock.settimeout(0)
    agent: Any = _agent_with_watchdog(tmp_path, path, "400000")

    class Crawling:  # the real evaluator, 0.3 s per scan: the stall limit here is 0.2 s
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def step(self, snapshot: object, now: float) -> object:
            time.sleep(0.3)
            return self.inner.step(snapshot, now)

    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        healthy = await _received(sock, 6)
        agent.scan.swap(Crawling(agent.scan.evaluator))
        await anyio.sleep(0.7)  # two crawling ticks
        _drop_pending(sock)
        crawling = await _received(sock, 4)
        assert agent.scan.stats.ticks > 0
        await agent.stop()
    assert "WATCHDOG=1" in healthy
    assert "WATCHDOG=1" not in crawling
    assert any(m.startswith("STATUS=") for m in crawling)


def test_scan_loop_counts_as_healthy_only_while_it_ticks() -> None:
    from linelight.agent.clock import ClockWatch
    from linelight.agent.scan import ScanLoop
    from linelight.hw.inputs import InputTable
    from linelight.rules.evaluator import Evaluator
    from linelight.rules.loader import load_rules

    rules = '[inputs]\nx = { type = "bool" }\n[[state]]\nname = "on"\ncode = 1\n' \
            'priority = 1\nwhen = "x"\nshow = { green = "on" }\n'
    now = [100.0]

    class Sink:
        def submit(self, event: object) -> None:
            pass

    class Tower:
        def show(self, command: object) -> None:
            pass

    scan = ScanLoop(inputs=InputTable(), evaluator=Evaluator(load_rules([("r", rules)])),
                    tower=Tower(), sink=Sink(), clock=ClockWatch(), period=0.02,  # type: ignore[arg-type]
                    monotonic=lambda: now[0])
    assert not scan.healthy()
    scan.tick()
    assert scan.healthy()
    now[0] += 5.0
    assert not scan.healthy()
    scan.tick()
    assert scan.healthy() and not scan.healthy(limit=0.0)  # the watchdog's tighter limit
