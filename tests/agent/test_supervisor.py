"""The supervisor restarts a failing component with backoff and never swallows cancellation."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus

from linelight.agent.supervisor import Supervisor
from linelight.hw.backoff import Backoff


@pytest.mark.anyio
async def test_failing_component_is_restarted_and_its_error_recorded() -> None:
    sup = Supervisor(Backoff(initial=0.001, maximum=0.01))
    calls = 0
    third = anyio.Event()

    async def flaky(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            third.set()
            task_status.started()
            await anyio.sleep_forever()
        raise ConnectionRefusedError("broker said no")

    async with anyio.create_task_group() as tg:
        await tg.start(sup.run, "forwarder", flaky)
        with anyio.fail_after(30):
            await third.wait()
        health = sup.components["forwarder"]
        assert health.restarts == 2 and health.running
        assert health.last_error == "ConnectionRefusedError: broker said no"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_other_tasks_keep_running_while_a_component_fails() -> None:
    sup = Supervisor(Backoff(initial=0.001, maximum=0.002))
    ticks = 0
    failures = 0
    enough = anyio.Event()

    async def always_fails(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal failures
        failures += 1
        if failures >= 5 and ticks >= 5:
            enough.set()
        raise RuntimeError("boom")

    async def scan() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(scan)
        await tg.start(sup.run, "source plc", always_fails)
        with anyio.fail_after(30):
            await enough.wait()
        tg.cancel_scope.cancel()
    assert sup.components["source plc"].restarts >= 4 and ticks >= 5


@pytest.mark.anyio
async def test_cancellation_stops_the_component_without_restart() -> None:
    sup = Supervisor(Backoff(initial=0.001))
    started = anyio.Event()

    async def long_running(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started.set()
        task_status.started()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        await tg.start(sup.run, "x", long_running)
        with anyio.fail_after(30):
            await started.wait()
        tg.cancel_scope.cancel()
    assert sup.components["x"].restarts == 0


@pytest.mark.anyio
async def test_a_component_that_returns_is_restarted_with_the_policy_waits() -> None:
    sup = Supervisor(Backoff(initial=0.001, maximum=0.004))
    runs = 0
    enough = anyio.Event()

    async def returns(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 5:
            enough.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        await tg.start(sup.run, "scanner", returns)
        with anyio.fail_after(30):
            await enough.wait()
        tg.cancel_scope.cancel()
    health = sup.components["scanner"]
    assert health.restarts == 4 and health.last_error == "stopped unexpectedly"


@pytest.mark.anyio
async def test_start_returns_only_once_the_component_reports_started() -> None:
    sup = Supervisor(Backoff(initial=0.001))
    bound = False

    async def listener(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal bound
        await anyio.sleep(0.05)  # e.g. binding a port
        bound = True
        task_status.started()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        await tg.start(sup.run, "diagnostics", listener)
        assert bound
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_component_failing_before_it_starts_does_not_block_start_up() -> None:
    sup = Supervisor(Backoff(initial=0.001, maximum=0.002))

    async def cannot_bind(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        raise OSError("address already in use")

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            await tg.start(sup.run, "diagnostics", cannot_bind)
        tg.cancel_scope.cancel()
    assert sup.components["diagnostics"].last_error == "OSError: address already in use"


@pytest.mark.anyio
async def test_a_failure_inside_a_task_group_is_recorded_by_its_own_sentence() -> None:
    sup = Supervisor(Backoff(initial=0.001, maximum=0.002, jitter=0.0))
    failed = anyio.Event()
    runs = 0

    async def bad_row() -> None:
        raise ValueError("row seq 9 cannot be encoded: expected a map, got a list")

    async def forwarder(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            failed.set()
            await anyio.sleep_forever()
        async with anyio.create_task_group() as outer:
            async with anyio.create_task_group() as inner:  # nested, as the forwarder's are
                inner.start_soon(bad_row)
            outer.start_soon(anyio.sleep_forever)

    async with anyio.create_task_group() as tg:
        await tg.start(sup.run, "forwarder", forwarder)
        with anyio.fail_after(30):
            await failed.wait()
        tg.cancel_scope.cancel()
    assert sup.components["forwarder"].last_error == (
        "ValueError: row seq 9 cannot be encoded: expected a map, got a list")


def test_several_failures_show_the_first_and_how_many_more() -> None:
    from linelight.agent.humanize import describe_error

    group = ExceptionGroup("x", [OSError("disk full"), ExceptionGroup("y", [KeyError("a"),
                                                                             TimeoutError()])])
    assert describe_error(group) == "OSError: disk full (and 2 more)"
    assert describe_error(TimeoutError()) == "TimeoutError"
