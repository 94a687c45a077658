"""A real agent-shaped process for crash tests: the journal plus the forwarder, nothing else.

Run as `python tests/agent/mqtt/forwarder_proc.py --db J --host H --port P [--inflight N]`. It
opens the journal, forwards it, prints `connected` on stdout once the broker accepted it and
`drained` whenever the journal is empty, and runs until killed. Tests `kill -9` it at random
moments and start it again on the same journal.

The helpers below (`settings`, `fill_journal`) are shared by the forwarder tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import anyio

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from linelight.agent.journal import Event, Journal  # noqa: E402
from linelight.agent.mqtt.config import MqttSettings  # noqa: E402
from linelight.agent.mqtt.forwarder import Forwarder  # noqa: E402

AGENT = "cell-7"


def settings(host: str, port: int, **kw: Any) -> MqttSettings:
    """Settings for tests: quick backoff and a short keepalive unless told otherwise."""
    base: dict[str, Any] = {"host": host, "port": port, "backoff_initial": 0.1,
                            "backoff_max": 0.5, "keepalive": 5.0, "connect_timeout": 3.0}
    base.update(kw)
    return MqttSettings(**base)


async def fill_journal(journal: Journal, count: int, *, name: str = "spindle") -> int:
    """Commit `count` signal events (values 0..count-1); returns the newest seq.

    Submitted without waiting, with an `append` every 20,000 (and for the last): groups
    commit in order, so once an append returns, everything submitted before it is durable.
    """
    seq = journal.newest_seq
    for i in range(count):
        event = Event("signal", name, i, time.time_ns(), {"unit": "rpm"})
        if i % 20_000 == 19_999 or i == count - 1:
            seq = await journal.append(event) or seq
        else:
            journal.submit(event)
    return seq


async def _main(args: argparse.Namespace) -> None:
    journal = Journal.open(args.db)
    forwarder = Forwarder(journal, settings(args.host, args.port, inflight=args.inflight,
                                            keepalive=args.keepalive),
                          agent_id=AGENT, boot=journal.boot, version="test")
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        await tg.start(forwarder.run)
        said_connected = said_drained = False
        while True:
            if forwarder.link.connected and not said_connected:
                print("connected", flush=True)
                said_connected = True
            drained = journal.stats().depth == 0 and journal.stats().pending == 0
            if drained and not said_drained:
                print("drained", flush=True)
            said_drained = drained
            await anyio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--keepalive", type=float, default=5.0)
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
