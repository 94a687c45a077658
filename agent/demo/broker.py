"""The demo's local MQTT side: a mosquitto it starts and stops (outages), and a subscriber that
checks every event arrives, in order after dedup."""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_HINT = "sudo apt install mosquitto   (Debian/Ubuntu; the demo runs without it too)"


def find_mosquitto() -> str | None:
    for path in MOSQUITTO_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now: the kernel's pick for port 0 on `host`
    (127.0.0.1 or ::1). The demo's, and through harness/ports.py the tests' and benches'."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BrokerError(RuntimeError):
    """The broker did not start or stop as asked; the message quotes its log."""


class LocalBroker:
    """One mosquitto process on a loopback port, in its own directory: its config, its
    persistence and its log live in `workdir`. `start()`, `stop()` (SIGTERM, persistence
    saved), `kill()` (SIGKILL) and `restart()` keep the port and the persistence, so the agent
    reconnects to the same address after an outage and a subscriber with a persistent session
    finds it again. The demo's broker, and (harness/mosquitto.py) the tests' and benches'.

    `extra` is appended to the config after the `listener` line, so listener options such as
    `cafile`/`certfile`/`keyfile`/`require_certificate` apply to it, and global options
    (`acl_file`, `password_file`, `allow_anonymous false`) work too (mosquitto 2 reads them
    per listener unless `per_listener_settings` is set, which is never set here).
    """

    def __init__(self, binary: str, workdir: Path, *, port: int | None = None,
                 host: str = "127.0.0.1", extra: str = "", autosave: int = 1) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.extra = extra
        # Seconds between persistence writes, so sessions survive `kill()`; 0 writes only at
        # a clean stop (benchmarks use 0: a full write every second loads the disk).
        self.autosave = autosave
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"autosave_interval {self.autosave}",
            # A subscriber's session holds a whole backlog, not mosquitto's default 1000.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Started as root, mosquitto would drop to the `mosquitto` user and then fail to
            # write its persistence here, losing the subscriber's session in outages.
            f"user {getpass.getuser()}",
        ]
        if "allow_anonymous" not in self.extra and "password_file" not in self.extra:
            lines.append("allow_anonymous true")
        self.conf_path.write_text("\n".join(lines) + "\n" + self.extra.strip() + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start the broker and return once it accepts TCP connections on its port."""
        if self.running:
            return
        self.write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrokerError(f"mosquitto exited with {self.proc.returncode} at start on "
                                  f"port {self.port}: {err.strip()} {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), timeout=0.5):
                return
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within "
                          f"{timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: a clean shutdown that saves persistent sessions and retained messages."""
        if not self.running:
            self._close_pipes()
            self.proc = None
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        self._close_pipes()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes; only what autosave already wrote survives."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(20)
            self._close_pipes()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


MAX_MACHINES = 64  # machine names counted at most (bounds what a stray publisher can add)


class DemoSubscriber:
    """An independent consumer: counts events, dedups by seq, notes any out-of-order arrival."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = topic
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0  # arrived after a higher seq
        self.missing = 0  # seqs skipped (still queued, or dropped by the queue's limits)
        self._seen: set[int] = set()
        self.last_seq = 0
        self.by_machine: dict[str, int] = {}  # events received per machine (a line's)
        self.connected = False
        self._seen_max = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"linelight-demo-viewer-{port}",
                                   protocol=mqtt.MQTTv311, clean_session=False)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._port = port

    def start(self) -> None:
        self._client.connect_async("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            self.connected = True
            client.subscribe(self.topic, qos=1)

    def _on_disconnect(self, *args: Any) -> None:
        self.connected = False

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            # JSON is the agent's default codec; a config may choose msgpack.
            body = (json.loads(msg.payload) if msg.payload[:1] == b"{"
                    else msgpack.unpackb(msg.payload, raw=False))
            seq = int(body["seq"])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            return
        with self._lock:
            if seq in self._seen:
                self.duplicates += 1  # a re-send after a reconnect: dedup by seq drops it
                return
            self._seen.add(seq)
            if seq < self._seen_max:
                self.out_of_order += 1
                self.missing = max(0, self.missing - 1)
            elif self._seen_max and seq > self._seen_max + 1:
                self.missing += seq - self._seen_max - 1
            self._seen_max = max(self._seen_max, seq)
            machine = body.get("machine") if isinstance(body, dict) else None
            if isinstance(machine, str) and (machine in self.by_machine
                                             or len(self.by_machine) < MAX_MACHINES):
                self.by_machine[machine] = self.by_machine.get(machine, 0) + 1
            self.received += 1
            self.last_seq = seq
