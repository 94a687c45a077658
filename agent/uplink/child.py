"""The forwarder process: the ordinary Forwarder, reading the journal through its own
read-only SQLite connection and asking the agent to delete what the broker acknowledged.

Started by `ForwarderProcess` (`host.child_command()`: isolated, with the agent's import
path); stdin and a copy of stdout are the channel (stdout itself is pointed at stderr so
nothing else can write into the channel). It never writes the journal: the agent's writer stays the only writer, so seqs, gaps
and retention keep one owner. It ends when the agent's end of the pipe closes (the agent
stopped or died), so a forwarder never outlives its agent.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import signal
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import msgpack

from linelight.agent.journal import JournalStats, Record, connect_readonly, read_records
from linelight.agent.mqtt import Forwarder, MqttSettings, TransportError
from linelight.agent.uplink.channel import Channel, FdReceiver, FdSender

log = logging.getLogger(__name__)

LINK_REPORT_S = 0.05  # how often a changed link status (and new log records) go to the agent
MAX_LOG_BACKLOG = 1000  # log records waiting for the pipe; older ones are dropped beyond it


class ChannelLogHandler(logging.Handler):
    """Keeps this process's log records for the agent, which logs them through its own
    handlers (journald, or the demo's screen, which a second stderr writer would garble)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: collections.deque[tuple[int, str, str]] = collections.deque(
            maxlen=MAX_LOG_BACKLOG)  # appended from any thread, taken on the event loop

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelno, record.name, record.getMessage()))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What the agent hands its forwarder process at start (pickled: parent to own child)."""

    journal_path: str
    settings: MqttSettings
    agent_id: str
    boot: int
    version: str


class JournalReader:
    """The journal as the Forwarder sees it (`JournalLike`), from another process.

    Rows are read directly from the file, but only up to the seq the agent last handed out
    (`grant`): the agent then extends no retention gap at or below it, so a gap row this
    process may have sent never changes. Acks and dead letters go to the agent's writer."""

    def __init__(self, path: str, channel: Channel) -> None:
        self.path = path
        self._channel = channel
        self._conn: sqlite3.Connection | None = None
        self._read_lock = anyio.Lock()
        self.newest = 0  # the newest committed seq the agent announced
        self._newest_changed = anyio.Event()
        self._granted = 0
        self._empty_through = 0  # nothing left at or below this seq
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[anyio.Event, list[Any]]] = {}
        self._stats: JournalStats | None = None  # the agent's last word on the journal

    # -- from the agent ----------------------------------------------------------------------
    def announce(self, newest: int) -> None:
        if newest > self.newest:
            self.newest = newest
            self._newest_changed.set()
            self._newest_changed = anyio.Event()

    def figures(self, depth: int, oldest_enq_ns: int | None, dropped: int) -> None:
        self._stats = JournalStats(depth=depth, oldest_enq_ns=oldest_enq_ns, dropped=dropped)

    def stats(self) -> JournalStats | None:
        """What the agent last said of its journal (depth, oldest, dropped), or None."""
        return self._stats

    def answer(self, call_id: int, result: Any) -> None:
        waiter = self._calls.pop(call_id, None)
        if waiter is not None:
            waiter[1].append(result)
            waiter[0].set()

    async def _call(self, what: str, *args: Any) -> Any:
        call_id = next(self._ids)
        done: tuple[anyio.Event, list[Any]] = (anyio.Event(), [])
        self._calls[call_id] = done
        await self._channel.send(what, call_id, *args)
        await done[0].wait()
        return done[1][0]

    # -- JournalLike -------------------------------------------------------------------------
    async def peek(self, limit: int, after_seq: int = 0) -> Sequence[Record]:
        if self.newest > self._granted or self._granted <= after_seq:
            await self._grant()
        records, bad, last = await self._read_granted(limit, after_seq)
        if not last and await self._grant():
            # nothing up to the old grant, and newer rows the agent has not announced yet:
            # an empty answer must mean an empty journal (a planned stop's flush relies on it)
            records, bad, last = await self._read_granted(limit, after_seq)
        for seq in bad:
            await self.dead_letter(seq, "the journal row cannot be decoded")
        if not last:
            self._empty_through = max(self._empty_through, self._granted)
        return records

    async def _grant(self) -> bool:
        """Ask the agent for a new grant; True if it reaches further than the last one."""
        granted = int(await self._call("grant"))
        self.announce(granted)
        if granted <= self._granted:
            return False
        self._granted = granted
        return True

    async def _read_granted(self, limit: int, after_seq: int
                            ) -> tuple[list[Record], list[int], int]:
        if self._granted <= after_seq:
            return [], [], 0
        async with self._read_lock:
            return await anyio.to_thread.run_sync(self._read, limit, after_seq, self._granted)

    def _read(self, limit: int, after_seq: int, through: int) -> tuple[list[Record], list[int],
                                                                        int]:
        if self._conn is None:
            try:
                self._conn = connect_readonly(self.path, immutable=False,
                                              check_same_thread=False)
            except sqlite3.Error as exc:
                raise TransportError(f"the forwarder cannot read the journal {self.path}: "
                                     f"{exc}") from None
        try:
            return read_records(self._conn, self.path, limit, after_seq, through)
        except sqlite3.Error as exc:
            self._conn.close()
            self._conn = None
            raise TransportError(f"the forwarder cannot read the journal {self.path}: "
                                 f"{exc}") from None

    async def ack(self, seqs: Sequence[int]) -> int:
        return int(await self._call("ack", [int(s) for s in seqs]))

    async def dead_letter(self, seq: int, reason: str) -> bool:
        return bool(await self._call("dead", int(seq), str(reason)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value the agent last stored under `key` in the journal's meta, or `default`
        (read from the file: a few microseconds, once per connection)."""
        try:
            conn = connect_readonly(self.path, immutable=False)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise TransportError(f"the forwarder cannot read the journal {self.path}: "
                                 f"{exc}") from None
        if row is None:
            return default
        try:
            return msgpack.unpackb(row[0], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return default

    async def put_meta(self, key: str, value: Any) -> None:
        """Stored by the agent's writer (this process never writes the journal)."""
        await self._call("meta", str(key), value)

    async def wait_new(self, after_seq: int) -> None:
        while self.newest <= max(after_seq, self._empty_through):
            await self._newest_changed.wait()


async def serve(channel: Channel, logs: ChannelLogHandler | None = None) -> None:
    """Run the forwarder until the agent's end of the pipe closes or a stop has been served."""
    message = await channel.receive()
    if message[0] != "init":
        raise ValueError(f"the forwarder process expected 'init', got {message[0]!r}")
    spec: ChildSpec = pickle.loads(message[1])  # noqa: S301 - our own parent, a private pipe
    reader = JournalReader(spec.journal_path, channel)
    forwarder = Forwarder(reader, spec.settings, agent_id=spec.agent_id, boot=spec.boot,
                          version=spec.version)
    async with anyio.create_task_group() as tg:
        await tg.start(forwarder.run)
        tg.start_soon(_report_link, forwarder, channel, logs)
        try:
            while True:
                message = await channel.receive()
                what = message[0]
                if what == "new":
                    reader.announce(int(message[1]))
                elif what == "re":
                    reader.answer(int(message[1]), message[2])
                elif what == "figures":
                    reader.figures(int(message[1]), message[2], int(message[3]))
                elif what == "live":
                    forwarder.publish_live(str(message[1]), message[2], message[3])
                elif what == "stop":
                    tg.start_soon(_stop, forwarder, channel, message[1], logs)
        except anyio.EndOfStream:
            log.debug("the agent closed the forwarder pipe: the forwarder process ends")
        tg.cancel_scope.cancel()


async def _stop(forwarder: Forwarder, channel: Channel, through: int | None,
                logs: ChannelLogHandler | None) -> None:
    await forwarder.stop(flush_through=through)
    await _send_logs(channel, logs)
    await channel.send("link", asdict(forwarder.link))
    await channel.send("stopped")


async def _send_logs(channel: Channel, logs: ChannelLogHandler | None) -> None:
    while logs is not None and logs.records:
        await channel.send("log", *logs.records.popleft())


async def _report_link(forwarder: Forwarder, channel: Channel,
                       logs: ChannelLogHandler | None) -> None:
    last: dict[str, Any] = {}
    while True:
        await _send_logs(channel, logs)
        now = asdict(forwarder.link)
        if now != last:
            await channel.send("link", now)
            last = now
        await anyio.sleep(LINK_REPORT_S)


def main() -> int:
    # systemd's stop and a terminal's Ctrl-C signal the whole group: the agent decides when
    # this process stops (a planned stop flushes first), and its pipe closing ends it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel_out = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to the log, never into the channel
    logs = ChannelLogHandler()
    logging.basicConfig(level=logging.INFO, handlers=[logs])
    channel = Channel(FdReceiver(0), FdSender(channel_out))
    try:
        anyio.run(serve, channel, logs, backend="asyncio")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
