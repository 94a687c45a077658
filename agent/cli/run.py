"""`linelight run --config F`: run the agent until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys

import anyio

from linelight.agent.cli import DEFAULT_CONFIG
from linelight.agent.journal import JournalError
from linelight.hw.errors import DeviceError
from linelight.rules.errors import ConfigProblems, LinelightError

log = logging.getLogger(__name__)



def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                        help=f"the agent's config file (default {DEFAULT_CONFIG})")


def run(args: argparse.Namespace) -> int:
    from linelight.agent.config import load_config
    from linelight.agent.diagnostics import token_file_warning

    try:
        config = load_config(args.config)
    except ConfigProblems as exc:
        print(f"linelight: {args.config} is not valid, not starting:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        log.warning("%s", warning)
    token = token_file_warning(config.diagnostics.token_file)
    if token is not None:
        log.warning("%s", token)
    try:
        anyio.run(_main, config, backend="asyncio")
    except (JournalError, DeviceError, BaseExceptionGroup) as exc:
        errors = _start_errors(exc)
        if not errors:
            raise
        for error in errors:
            print(f"linelight: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _start_errors(exc: BaseException) -> list[LinelightError]:
    """Errors that stop the agent at start (journal locked or unwritable, an output that
    cannot be opened), looking through task-group exception groups; [] for anything else."""
    if isinstance(exc, JournalError | DeviceError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found = [e for sub in exc.exceptions for e in _start_errors(sub)]
        return found if len(found) == len(exc.exceptions) else []
    return []


async def _main(config: object) -> None:
    from linelight.agent.app import Agent
    from linelight.agent.notify import Notifier

    agent = Agent(config, notifier=Notifier.from_environ())  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(agent.stop_on_signals)
        await agent.run()  # returns once stopped
        tg.cancel_scope.cancel()
