"""The agent as a real subprocess for integration tests: config writing, start, kill, /status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = ROOT / "examples" / "rules.d" / "machine.toml"

# A fast machine: a whole producing/microstop/producing/fault/idle cycle in about 8 s.
FAST_MACHINE = """\
[sources.machine]
type = "sim"
model = "machine"
period = "20ms"

[sources.machine.machine]
producing = "2s"
microstop = "1s"
fault = "1500ms"
idle = "1500ms"
cycle = "400ms"
"""

VIRTUAL_TOWER = """\
[tower.lamps]
red = { virtual = true }
amber = { virtual = true }
green = { virtual = true }
blue = { virtual = true }
buzzer = { virtual = true }
"""


def write_config(directory: Path, *, mqtt_port: int | None = None, diag_port: int | None = None,
                 rules: str | None = None, sources: str = FAST_MACHINE,
                 tower: str = VIRTUAL_TOWER, extra: str = "",
                 agent_id: str = "it-press") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.d").mkdir(exist_ok=True)
    rule_text = rules if rules is not None else EXAMPLE_RULES.read_text()
    (directory / "rules.d" / "machine.toml").write_text(rule_text)
    diag_port = diag_port or free_port()
    text = f"""\
agent_id = "{agent_id}"
data_dir = "data"
rules = ["rules.d/*.toml"]

[scan]
period = "20ms"

[diagnostics]
listen = ["127.0.0.1:{diag_port}"]
{extra}
"""
    if mqtt_port is not None:
        text += f"""
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive = "5s"
backoff = {{ initial = "200ms", max = "1s" }}
"""
    text += "\n" + sources + "\n" + tower
    path = directory / "agent.toml"
    path.write_text(text)
    return path


def write_machines_config(directory: Path, names: tuple[str, ...], *,
                          mqtt_port: int | None = None, rules: str | None = None,
                          source: str = FAST_MACHINE, agent_id: str = "it-line") -> Path:
    """An agent for several machines ([machines.NAME]): each its own copy of `rules` (the
    example's by default) in rules/NAME.toml, its own source (`source`, written with
    `[sources.machine]` headers, becomes `[machines.NAME.sources.NAME-sim]`) and its own
    virtual tower."""
    (directory / "rules").mkdir(parents=True, exist_ok=True)
    rule_text = rules if rules is not None else EXAMPLE_RULES.read_text()
    parts = [f'agent_id = "{agent_id}"\ndata_dir = "data"\n\n[scan]\nperiod = "20ms"\n\n'
             f'[diagnostics]\nlisten = ["127.0.0.1:{free_port()}"]\n']
    if mqtt_port is not None:
        parts.append(f'\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nkeepalive = "5s"\n'
                     'backoff = { initial = "200ms", max = "1s" }\n')
    for name in names:
        (directory / "rules" / f"{name}.toml").write_text(rule_text)
        parts.append(f'\n[machines.{name}]\nrules = ["rules/{name}.toml"]\n\n'
                     + source.replace("[sources.machine", f"[machines.{name}.sources.{name}-sim")
                     + "\n" + VIRTUAL_TOWER.replace("[tower.lamps]",
                                                     f"[machines.{name}.tower.lamps]"))
    path = directory / "agent.toml"
    path.write_text("".join(parts))
    return path


class AgentProcess:
    """`python -m agent run --config F` with stderr captured to a file."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.log_path = config.parent / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = _diag_port(config)

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "linelight.agent", "run", "--config", str(self.config)],
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()
        if wait_ready:
            self.wait_status(lambda s: s.get("ready") is True, timeout, "agent ready")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
            raise AssertionError(f"agent did not stop within {timeout}s on SIGTERM:\n"
                                 + self.log()) from None
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        self.proc = None

    def forwarder_pid(self) -> int | None:
        """The agent's forwarder process (agent/uplink), found among its children in /proc."""
        assert self.proc is not None
        return forwarder_child(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP -----------------------------------------------------------------------------
    def http(self, method: str, path: str, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     headers=headers or {}, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            exc.close()
            return exc.code, body

    def status(self) -> dict[str, Any]:
        code, body = self.http("GET", "/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
                    what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode} while waiting "
                                     f"for {what}:\n{self.log()}")
            try:
                last = self.status()
            except (OSError, AssertionError):
                time.sleep(0.1)
                continue
            if predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached within {timeout}s; last status: "
                             f"{json.dumps(last)[:2000]}\nagent log:\n{self.log()[-4000:]}")

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _diag_port(config: Path) -> int:
    import tomllib

    listen = tomllib.loads(config.read_text())["diagnostics"]["listen"][0]
    return int(listen.rsplit(":", 1)[1])


def journal_records(data_dir: Path) -> list[Any]:
    """Every record still queued in a stopped agent's journal, oldest first."""
    import anyio

    from linelight.agent.journal import Journal

    async def read() -> list[Any]:
        journal = Journal.open(str(data_dir / "journal.db"))
        try:
            return await _peek_all(journal)
        finally:
            journal.close()

    return anyio.run(read)


async def _peek_all(journal: Any) -> list[Any]:
    import anyio

    out: list[Any] = []
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        after = 0
        while True:
            batch = await journal.peek(1000, after)
            if not batch:
                break
            out += batch
            after = batch[-1].seq
        tg.cancel_scope.cancel()
    return out


def journal_newest_seq(data_dir: Path) -> int:
    """The highest seq a stopped agent's journal ever issued, also when no row is left (a
    clean stop that sent everything)."""
    from linelight.agent.journal import Journal

    journal = Journal.open(str(data_dir / "journal.db"))
    try:
        return journal.stats().seq_hwm
    finally:
        journal.close()


def delivered_in_order(sub: Any, data_dir: Path, topic_prefix: str,
                       timeout: float = 60.0) -> tuple[list[int], list[Any]]:
    """The event seqs `sub` received from a stopped agent, deduplicated in arrival order,
    once every seq its journal no longer holds has arrived; and the rows still queued.

    Asserts the forwarding promise: seqs 1..N in order with none missing, N at least every
    deleted row and at most the journal's newest seq. A row still queued may have been
    delivered too (its PUBACK came after the stop's flush gave up): a duplicate at the next
    start, removed by `(agent, seq)`, so it is no loss and no error."""
    from tests.fixtures.subscriber import dedup_in_order

    left = journal_records(data_dir)
    newest = journal_newest_seq(data_dir)
    sent = left[0].seq - 1 if left else newest
    sub.wait_for_seqs(set(range(1, sent + 1)), topic_prefix, timeout=timeout)
    seqs = dedup_in_order(sub.seqs(topic_prefix))
    missing = sorted(set(range(1, sent + 1)) - set(seqs))
    assert not missing, f"events lost: seqs {missing[:20]} never arrived"
    assert seqs == list(range(1, len(seqs) + 1)), "events out of the agent's seq order"
    assert sent <= len(seqs) <= newest, (sent, len(seqs), newest)
    assert [r.seq for r in left] == list(range(sent + 1, newest + 1)), "a hole in the journal"
    return seqs, left


def forwarder_child(agent_pid: int) -> int | None:
    """The pid of `agent_pid`'s forwarder process, or None while it has none."""
    for task in Path(f"/proc/{agent_pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"linelight.agent.uplink.child" in arg for arg in cmdline):
                return int(child)
    return None


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts as gone: it runs no code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"
