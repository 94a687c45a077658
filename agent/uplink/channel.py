"""The pipe between the agent and its forwarder process: msgpack arrays, one after another."""

from __future__ import annotations

import os
from typing import Any, Protocol

import anyio
import msgpack

MAX_BUFFER = 64 * 1024 * 1024  # one message at most (an ack list of 65000 seqs is ~600 kB)


class ByteReceiver(Protocol):
    async def receive(self) -> bytes: ...  # raises anyio.EndOfStream at the end


class ByteSender(Protocol):
    async def send(self, data: bytes) -> None: ...


class Channel:
    """Sends and receives whole messages (lists) over two byte streams; sends are serialized."""

    def __init__(self, receiver: ByteReceiver, sender: ByteSender) -> None:
        self._receiver = receiver
        self._sender = sender
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_BUFFER,
                                          strict_map_key=False)
        self._lock = anyio.Lock()

    async def send(self, *message: Any) -> None:
        data = msgpack.packb(list(message), use_bin_type=True)
        async with self._lock:
            await self._sender.send(data)

    async def receive(self) -> list[Any]:
        """The next message; raises anyio.EndOfStream once the other side has gone."""
        while True:
            try:
                message = next(self._unpacker)
            except StopIteration:
                self._unpacker.feed(await self._receiver.receive())
                continue
            if not isinstance(message, list) or not message or not isinstance(message[0], str):
                raise ValueError(f"malformed message on the forwarder pipe: {message!r:.80}")
            return message


class FdReceiver:
    """A pipe's read end as a byte stream (the child's stdin)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    async def receive(self) -> bytes:
        while True:
            await anyio.wait_readable(self._fd)
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                raise anyio.EndOfStream
            return data


class FdSender:
    """A pipe's write end as a byte stream (a copy of the child's stdout)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await anyio.wait_writable(self._fd)
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                continue
