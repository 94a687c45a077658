"""Hot reload of the rule files, on SIGHUP, on a change of the files, or asked over HTTP.

The new files are read, parsed and checked against the running sources and tower in a worker
thread; only a valid set replaces the running one, in one step between two scan ticks, with
the timers and counters of unchanged rules carried over. A broken file is rejected: its
errors are logged and recorded as an `agent` event, and the old rules keep running.

With several machines each machine's files are loaded and checked on their own: a machine
whose file is broken keeps its old rules (its `rules_rejected` event names the machine and
every file:line:col), the others switch.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from linelight.agent import events as ev
from linelight.agent import heap
from linelight.agent.clock import ClockWatch
from linelight.agent.config import (
    AgentConfig,
    check_ruleset_against,
    for_machine,
    inputs_problem,
    load_ruleset,
    reread_rule_files,
)
from linelight.agent.machines import MachineConfig, RuleFiles, rules_fingerprint
from linelight.agent.rulefiles import unforeseen
from linelight.agent.scan import EventSink, ScanLoop
from linelight.rules.errors import ConfigError, ConfigProblems, LocatedError, Location

log = logging.getLogger(__name__)

MAX_ERRORS_IN_EVENT = 20
# While a reload's worker thread parses, the event loop thread waits for the GIL each time it
# wakes (a tick, a socket): up to the interpreter's switch interval, 5 ms. For the reload's
# duration it is this instead, so the scan loop gets the GIL back sooner (docs/benchmarks.md).
RELOAD_SWITCH_INTERVAL = 0.0005


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    changed: bool
    fingerprint: str
    requested_by: str
    at_ns: int
    errors: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()  # with machines: those whose files were rejected

    def describe(self) -> str:
        if not self.ok and self.rejected:
            return (f"rules of machine {', '.join(self.rejected)} rejected ({len(self.errors)} "
                    "problems), its old rules kept, the other machines reloaded:\n"
                    + "\n".join(self.errors))
        if not self.ok:
            return f"rules rejected ({len(self.errors)} problems), old rules kept:\n" + \
                "\n".join(self.errors)
        if not self.changed:
            return f"rules unchanged ({self.fingerprint})"
        return f"rules reloaded ({self.fingerprint}) from {len(self.files)} files"


@dataclass(slots=True)
class _Loaded:
    files: RuleFiles
    ruleset: Any = None
    evaluator: Any = None  # built in the worker thread too: a big rule set costs time
    problems: list[str] = field(default_factory=list)
    machine: MachineConfig | None = None  # the machine with the new rules, checked
    plan: Any = None  # Evaluator.plan_carry_over against the running evaluator


@contextlib.contextmanager
def _switching_every(seconds: float | None) -> Iterator[None]:
    """sys.setswitchinterval(seconds) inside (None: unchanged), the previous one after."""
    before = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _combined(results: list[ReloadResult], fingerprint: str) -> ReloadResult:
    """One result for a reload of several machines: ok only if every machine's was."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    return ReloadResult(all(r.ok for r in results), any(r.changed for r in results),
                        fingerprint, first.requested_by, first.at_ns,
                        tuple(e for r in results for e in r.errors),
                        tuple(f for r in results for f in r.files),
                        tuple(m for r in results for m in r.rejected))


class Reloader:
    """Owns the running rule set; `reload()` may be called from any task."""

    def __init__(self, config: AgentConfig, scan: ScanLoop, sink: EventSink, clock: ClockWatch,
                 make_evaluator: Callable[[Any], Any], *, quiet_heap: bool = True) -> None:
        self.config = config
        self.scan = scan
        self.sink = sink
        self.clock = clock
        self.make_evaluator = make_evaluator
        # the collector off from the load to the swap, one collection after it (agent.heap),
        # and the GIL switch interval at RELOAD_SWITCH_INTERVAL meanwhile
        self.quiet_heap = quiet_heap
        # the rules each machine runs now, in file order
        self.machines: list[MachineConfig] = list(config.machines)
        self.last: ReloadResult | None = None
        self.reloads = 0
        self.rejections = 0
        self._lock = anyio.Lock()

    @property
    def ruleset(self) -> Any:
        """The first machine's rules (the only machine's, without [machines.*])."""
        return self.machines[0].ruleset if self.machines else self.config.ruleset

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f for m in self.machines for f in m.rule_files.names)

    @property
    def fingerprint(self) -> str:
        return rules_fingerprint(self.machines) if self.machines else self.ruleset.fingerprint

    async def reload(self, requested_by: str) -> ReloadResult:
        """Load, check and swap in the rule files as they are now; never raises but for
        cancellation: whatever goes wrong is a rejected reload and the old rules keep running
        (per machine: a machine's broken file never holds back another machine's reload)."""
        async with self._lock:
            with contextlib.ExitStack() as stack:
                if self.quiet_heap:
                    stack.enter_context(heap.paused())
                    stack.enter_context(_switching_every(RELOAD_SWITCH_INTERVAL))
                result = await self._reload(requested_by)
                if self.quiet_heap:
                    # after the swap and once _reload's frame is gone: the old rules are
                    # freed by then, so it scans only the new ones; a worker thread, so
                    # the loop gets a tick in between (the collection itself holds the GIL)
                    await anyio.to_thread.run_sync(heap.collect)
            self.last = result
            return result

    async def _reload(self, requested_by: str) -> ReloadResult:
        results: list[ReloadResult] = []
        for i, machine in enumerate(self.machines):
            loaded = await anyio.to_thread.run_sync(self._load, machine)
            lane = self.scan.machine(machine.wire_name)
            if loaded.plan is not None:
                try:  # the copy itself: between two ticks of the running evaluator
                    if loaded.plan.old is lane.evaluator:
                        loaded.evaluator.apply_carry_over(loaded.plan)
                    else:  # swapped since the plan was made (not by a reload: they queue)
                        loaded.evaluator.carry_over(lane.evaluator)
                except Exception as exc:  # noqa: BLE001 -- a defect must not stop the agent
                    loaded.problems = [self._unforeseen(exc, "carrying the timers over",
                                                        machine)]
            results.append(self._finish(i, loaded, requested_by))
        return _combined(results, self.fingerprint)

    def _finish(self, index: int, loaded: _Loaded, requested_by: str) -> ReloadResult:
        machine = self.machines[index]
        name = machine.wire_name
        now_ns = self.clock.now_ns()
        unsynced = not self.clock.synchronized
        kept = machine.ruleset.fingerprint
        if loaded.problems:
            self.rejections += 1
            log.error("rules %srejected (asked by %s); the old rules keep running:\n%s",
                      f"of machine '{name}' " if name else "", requested_by,
                      "\n".join(loaded.problems))
            self.sink.submit(ev.agent_event(
                "rules_rejected", len(loaded.problems), now_ns, unsynced=unsynced, machine=name,
                errors=list(loaded.problems[:MAX_ERRORS_IN_EVENT]),
                requested_by=requested_by, kept=kept))
            return ReloadResult(False, False, kept, requested_by, now_ns,
                                tuple(loaded.problems), loaded.files.names,
                                (name,) if name else ())
        if loaded.ruleset.fingerprint == kept:
            log.info("rules %sunchanged (asked by %s)", f"of machine '{name}' " if name else "",
                     requested_by)
            return ReloadResult(True, False, kept, requested_by, now_ns, (), loaded.files.names)
        assert loaded.machine is not None
        # between two ticks: this task holds the event loop
        self.scan.swap(loaded.evaluator, name, loaded.machine.inputs if name else None)
        self.machines[index] = loaded.machine
        self.reloads += 1
        log.warning("rules %sreloaded (asked by %s): %s -> %s, %d files",
                    f"of machine '{name}' " if name else "", requested_by,
                    kept, loaded.ruleset.fingerprint, len(loaded.files.files))
        self.sink.submit(ev.agent_event(
            "rules_reloaded", loaded.ruleset.fingerprint, now_ns, unsynced=unsynced,
            machine=name, previous=kept, files=list(loaded.files.names),
            requested_by=requested_by))
        return ReloadResult(True, True, loaded.ruleset.fingerprint, requested_by,
                            now_ns, (), loaded.files.names)

    def _load(self, machine: MachineConfig) -> _Loaded:
        """Worker thread: read, parse, cross-check, build the evaluator and plan what it
        carries over. Never changes the running one. Any exception is a problem of the reload, never the agent's end."""
        loaded = _Loaded(RuleFiles(()))
        try:
            loaded.files = reread_rule_files(self.config, machine)
            try:
                loaded.ruleset = load_ruleset(loaded.files)
            except ConfigProblems as exc:
                if machine.named:
                    raise ConfigProblems(for_machine(machine.name, exc.problems)) from None
                raise
            loaded.machine = check_ruleset_against(self.config, loaded.ruleset, machine)
            if loaded.machine is not None:  # one machine: the loader's own bound
                others = [m for m in self.machines if m is not machine]
                if (sentence := inputs_problem([*others, loaded.machine])) is not None:
                    where = machine.location or Location(str(self.config.path), 1, 1)
                    raise ConfigProblems(for_machine(machine.name, [LocatedError(where,
                                                                                 sentence)]))
            loaded.evaluator = self.make_evaluator(loaded.ruleset)
        except ConfigProblems as exc:
            loaded.problems = [str(p) for p in exc.problems]
        except ConfigError as exc:
            loaded.problems = [str(exc)]
        except Exception as exc:  # noqa: BLE001 -- see _unforeseen
            loaded.problems = [self._unforeseen(exc, "reloading the rules", machine)]
        if loaded.problems or loaded.ruleset.fingerprint == machine.ruleset.fingerprint:
            return loaded
        try:  # matching old and new rules needs no tick to wait (it reads no scan's values)
            running = self.scan.machine(machine.wire_name).evaluator
            loaded.plan = loaded.evaluator.plan_carry_over(running)
        except Exception as exc:  # noqa: BLE001 -- see _unforeseen
            loaded.problems = [self._unforeseen(exc, "carrying the timers over", machine)]
        return loaded

    def _unforeseen(self, exc: Exception, doing: str, machine: MachineConfig) -> str:
        """A rejection sentence for an error no check foresaw, logged with its traceback."""
        log.error("unforeseen error while reloading the rules", exc_info=exc)
        files = machine.rule_files.names
        first = files[0] if files else str(self.config.path)
        problem = unforeseen(first, doing, exc)
        if machine.named:
            problem = for_machine(machine.name, [problem])[0]
        return str(problem)

    # -- triggers ---------------------------------------------------------------------------
    async def on_sighup(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                        ) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                await self.reload("SIGHUP")  # never raises: a bad file is a rejection

    async def watch_files(self, interval: float = 1.0, settle: float = 0.3, *,
                          task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll the rule globs: a file added, removed or rewritten triggers a reload once it
        has been stable for `settle` seconds (editors write in several steps)."""
        seen = self._signature()
        task_status.started()
        while True:
            await anyio.sleep(interval)
            now = self._signature()
            if now == seen:
                continue
            await anyio.sleep(settle)
            if self._signature() != now:
                continue  # still being written; look again next round
            seen = now
            await self.reload("rule file change")

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        out: list[tuple[str, int, int]] = []
        base = self.config.base_dir
        globs = [g for m in self.machines for g in m.rule_globs] or self.config.rule_globs
        for pattern in dict.fromkeys(globs):
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            for name in sorted(glob.glob(full)) if glob.has_magic(full) else [full]:
                try:
                    st = Path(name).stat()
                except OSError:
                    continue
                out.append((name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "fingerprint": self.fingerprint,
            "files": list(self.files),
            "reloads": self.reloads,
            "rejections": self.rejections,
            "last_reload": None if last is None else {
                "ok": last.ok, "changed": last.changed, "at_ns": last.at_ns,
                "requested_by": last.requested_by, "errors": list(last.errors),
                "rejected_machines": list(last.rejected)},
        }
