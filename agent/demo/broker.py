"""The demo's local MQTT side: a mosquitto it starts and stops (outages), and a subscriber that
checks every event arrives, in order after dedup."""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
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


class LocalBroker:
    """A mosquitto on a free loopback port, in its own directory; `stop()`/`start()` keep the
    port so the agent reconnects to the same address after an outage."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        workdir.mkdir(parents=True, exist_ok=True)
        # `user`: started as root, mosquitto would switch to the `mosquitto` user and then
        # fail to write its persistence file here, losing the subscriber's session in outages.
        # `max_queued_messages 0`: the subscriber's session holds a whole backlog.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            f"max_queued_messages 0\nlog_dest file {self.log}\nuser {getpass.getuser()}\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start (code {self.proc.returncode}); "
                                   f"see {self.log}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} in {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


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
