"""The agent's side of the forwarder process: start it, serve its journal requests, mirror
its link status, hand it the live lane and the planned stop.

`ForwarderProcess` has the face of `Forwarder` that the agent uses (`run`, `publish_live`,
`stop`, `link`), so the app, /status, /metrics, health and the supervisor see no difference.
A child that dies (kill -9, a crash) ends `run` with ForwarderProcessError; the supervisor
restarts it with backoff, and the new child re-sends from the oldest row still queued.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup, TaskStatus

import linelight.agent
from linelight.agent.journal import Journal, JournalError
from linelight.agent.mqtt import LinkStatus, MqttSettings, TransportError
from linelight.agent.uplink.channel import Channel
from linelight.agent.uplink.child import ChildSpec

log = logging.getLogger(__name__)

FIGURES_HAND_S = 2.5  # half of the forwarder's FIGURES_S (not imported: it would load paho here)
STOP_MARGIN_S = 4.0  # beyond flush_on_stop: the offline message and DISCONNECT (3 s in Forwarder)
_CHILD_MAIN = ("import sys; sys.path[:0] = sys.argv[1:]; "
               "from linelight.agent.uplink.child import main; sys.exit(main())")


def child_command() -> list[str]:
    """The forwarder process's command line: this interpreter, isolated like the .deb's
    launcher (-I), with the directory this `linelight` was imported from put first (the
    launcher adds /usr/lib/linelight to sys.path itself, which a child would not inherit)."""
    package = Path(linelight.agent.__file__).resolve().parent.parent
    paths = [str(package.parent)] if package.name == "linelight" else []  # else: editable
    flags = ["-I", "-B"] if sys.dont_write_bytecode else ["-I"]
    return [sys.executable, *flags, "-c", _CHILD_MAIN, *paths]


class ForwarderProcessError(TransportError):
    """The forwarder process ended without being asked to (the message says how)."""


class ForwarderProcess:
    """Runs the forwarder in a child process; see the module docstring."""

    def __init__(self, journal: Journal, settings: MqttSettings, *, agent_id: str,
                 boot: int, version: str) -> None:
        self.journal = journal
        self.settings = settings
        self._spec = ChildSpec(journal.path, settings, agent_id, boot, version)
        self.link = LinkStatus(broker=settings.broker, protocol=settings.protocol)
        self.pid: int | None = None
        self.starts = 0
        self._live: dict[tuple[str | None, str], Any] = {}
        self._live_dirty: dict[tuple[str | None, str], None] = {}
        self._live_wake = anyio.Event()
        self._channel: Channel | None = None
        self._stopping = False
        self._stopped = anyio.Event()

    # -- the Forwarder's face ----------------------------------------------------------------
    def publish_live(self, key: str, value: Any, machine: str | None = None) -> None:
        """Remember `value` as the latest for `key` (of a named `machine`) and hand it to the
        child soon; never blocks."""
        self._live[(machine, key)] = value
        self._live_dirty[(machine, key)] = None
        self._live_wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the child and serve it until it ends (an error, unless stopping)."""
        process = await anyio.open_process(child_command(), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=None)
        self.pid, self.starts = process.pid, self.starts + 1
        assert process.stdin is not None and process.stdout is not None
        channel = Channel(process.stdout, process.stdin)
        try:
            await channel.send("init", pickle.dumps(self._spec))
            self._live_dirty = dict.fromkeys(self._live)  # a new child knows nothing yet
            self._live_wake.set()
            self._channel = channel
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._announce_new, channel)
                tg.start_soon(self._hand_live, channel)
                if self.settings.topic_mode == "sparkplug":
                    tg.start_soon(self._hand_figures, channel)
                await self._serve(channel, tg)
                tg.cancel_scope.cancel()
        finally:
            self._channel = None
            self.link.connected, self.link.connected_since = False, None
            with anyio.CancelScope(shield=True):
                await _end(process)
        if self._stopping:
            await anyio.sleep_forever()  # a planned stop: no restart
        raise ForwarderProcessError(f"the forwarder process (pid {process.pid}) ended with "
                                    f"exit code {process.returncode}")

    async def stop(self, *, flush_through: int | None = None) -> None:
        """Planned stop: the child sends what the journal holds (up to `flush_through`, for
        `flush_on_stop` at most), then `offline`; returns once it says so, or in time."""
        self._stopping = True
        channel = self._channel
        if channel is None:
            return
        with anyio.move_on_after(self.settings.flush_on_stop + STOP_MARGIN_S):
            try:
                # the stop event was committed just now: the child must know of it before it
                # decides that nothing is left to flush
                await channel.send("new", self.journal.newest_seq)
                await channel.send("stop", flush_through)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            await self._stopped.wait()

    # -- serving the child -------------------------------------------------------------------
    async def _serve(self, channel: Channel, tg: TaskGroup) -> None:
        try:
            while True:
                message = await channel.receive()
                what = message[0]
                if what == "link":
                    self._mirror(message[1])
                elif what == "grant":
                    tg.start_soon(self._answer, channel, message[1], self.journal.hand_out)
                elif what == "ack":
                    tg.start_soon(self._answer, channel, message[1], self.journal.ack,
                                  message[2])
                elif what == "dead":
                    tg.start_soon(self._answer, channel, message[1], self.journal.dead_letter,
                                  message[2], message[3])
                elif what == "meta":
                    tg.start_soon(self._answer, channel, message[1], self.journal.put_meta,
                                  message[2], message[3])
                elif what == "log":
                    # the child's record, through this process's handlers; its text is the
                    # forwarder's own (broker names, reasons), never a secret
                    logging.getLogger(str(message[2])).log(int(message[1]), "%s", message[3])
                elif what == "stopped":
                    self._stopped.set()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return

    async def _answer(self, channel: Channel, call_id: int, call: Any, *args: Any) -> None:
        try:
            result = await call(*args)
        except JournalError as exc:  # closing: the child's request stays unanswered
            log.debug("forwarder request not answered: %s", exc)
            return
        await channel.send("re", call_id, result)

    def _mirror(self, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if hasattr(self.link, name):
                setattr(self.link, name, value)

    async def _announce_new(self, channel: Channel) -> None:
        """Tell the child each time newer rows are committed (it waits on this, not on disk)."""
        sent = -1
        try:
            while True:
                await self.journal.wait_new(max(sent, 0))
                newest = self.journal.newest_seq
                if newest != sent:
                    await channel.send("new", newest)
                    sent = newest
        except JournalError:
            return  # the journal closed: the agent is stopping

    async def _hand_figures(self, channel: Channel) -> None:
        """The journal's depth, oldest row and dropped count, for the Sparkplug node metrics
        (the child cannot count the table cheaply); every FIGURES_HAND_S, when they changed."""
        last: tuple[Any, ...] = ()
        while True:
            s = self.journal.stats()
            now = (s.depth, s.oldest_enq_ns, s.dropped)
            if now != last:
                await channel.send("figures", *now)
                last = now
            await anyio.sleep(FIGURES_HAND_S)

    async def _hand_live(self, channel: Channel) -> None:
        while True:
            await self._live_wake.wait()
            self._live_wake = anyio.Event()
            dirty, self._live_dirty = list(self._live_dirty), {}
            for machine, key in dirty:
                await channel.send("live", key, self._live[(machine, key)], machine)


async def _end(process: Process) -> None:
    """Close the pipe (the child ends on it), give it a moment, then kill it."""
    with anyio.move_on_after(1.0):
        await process.aclose()
    if process.returncode is None:
        process.kill()
        await process.wait()
