"""The one place that builds the agent's object graph and runs it under one root task group.

Start-up order is explicit (`await tg.start(...)`): journal, tower, scan loop, sources,
diagnostics, then READY=1 to systemd, then the forwarder, which never delays READY. Shutdown
(SIGTERM, SIGINT, or `Agent.stop()`): STOPPING=1, tower `on_exit`, a `stop` event, what
the journal holds sent to the broker (up to `mqtt.flush_on_stop`), `offline`, cancel every
task, flush and close the journal, within a few seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus

from linelight.agent import __version__, health, heap
from linelight.agent import events as ev
from linelight.agent.clock import ClockWatch
from linelight.agent.config import AgentConfig
from linelight.agent.diagnostics import Diagnostics
from linelight.agent.health import Verdict
from linelight.agent.history import History, Probe, Recorded
from linelight.agent.journal import Journal, JournalError
from linelight.agent.machines import STATE_OF, MachineConfig, own_key, rules_fingerprint
from linelight.agent.memory import RuleMemory
from linelight.agent.metrics import Metrics
from linelight.agent.notify import Notifier
from linelight.agent.reload import Reloader
from linelight.agent.scan import MachineLane, ScanLoop, inputs_status
from linelight.agent.supervisor import Backoff, Supervisor
from linelight.hw.build import Hardware, build_hardware
from linelight.hw.inputs import InputTable
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.model import RuleSet
from linelight.rules.values import Pattern

if TYPE_CHECKING:  # the forwarder module imports paho: loaded only with an [mqtt] section
    from linelight.agent.mqtt import Forwarder
    from linelight.agent.uplink import ForwarderProcess

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 5.0


class _NoTower:
    """Used when no [tower] is configured: lamps exist only in /status and the live lane."""

    def show(self, command: dict[str, Pattern]) -> None:
        return None


def make_evaluator(ruleset: RuleSet) -> Evaluator:
    return Evaluator(ruleset)


class Agent:
    """A running agent. Build with a validated config, then `await tg.start(agent.run)`."""

    def __init__(self, config: AgentConfig, *, notifier: Notifier | None = None,
                 pin_factory: Any = None, line_backend: Any = None,
                 backoff: Backoff | None = None, watch_files: bool = True,
                 handle_signals: bool = True, forwarder_process: bool = True,
                 freeze_heap: bool = True) -> None:
        # handle_signals: reload the rules on SIGHUP (SIGTERM/SIGINT: see stop_on_signals)
        # freeze_heap: the built heap is frozen, reloads allocate with the collector off and
        # switch the GIL faster (agent.heap, agent.reload); False: as Python sets both
        # (bench/rules.py's baseline)
        # forwarder_process: the forwarder runs in its own process (agent/uplink), so publish
        # and PUBACK work never hold the GIL the scan loop needs; False: in this event loop
        self.config = config
        self.version = __version__
        self.notifier = notifier or Notifier(None)
        self._pin_factory = pin_factory
        self._line_backend = line_backend
        self._watch_files = watch_files
        self._handle_signals = handle_signals
        self._forwarder_process = forwarder_process
        self._freeze_heap = freeze_heap
        self._frozen = False
        self.supervisor = Supervisor(backoff)
        self.clock = ClockWatch(threshold_s=config.scan.clock_jump)
        self.started_mono = time.monotonic()
        self.started_ns = time.time_ns()
        self.inputs = InputTable()
        self.metrics_registry = Metrics(self.status)
        self.journal: Journal | None = None
        self.history: History | None = None
        self.hardware: Hardware | None = None
        self.scan: ScanLoop | None = None
        self.forwarder: Forwarder | ForwarderProcess | None = None
        self.reloader: Reloader | None = None
        self.diagnostics: Diagnostics | None = None
        self.ready = False
        self.memory: RuleMemory | None = None  # the first machine's
        self.memories: list[RuleMemory] = []  # one per machine
        self.restored_latches: tuple[str, ...] = ()
        self._tg: TaskGroup | None = None
        self._stopping = False
        self._hardware_closed = False
        self._source_of: dict[str, str] = {}  # input name -> the source that delivers it

    # -- life cycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[Agent] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create data_dir {cfg.data_dir}: "
                               f"{exc.strerror or exc}") from None
        journal = await anyio.to_thread.run_sync(Journal.open, str(cfg.journal_path), cfg.journal)
        self.journal = journal
        self.history = await anyio.to_thread.run_sync(self._open_history, journal.boot)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self._stopping:  # asked to stop while the journal was being opened
                    tg.cancel_scope.cancel()
                await tg.start(journal.run)
                self._build(journal)
                for memory in self.memories:  # before the first scan: a lamp hold waits on it
                    tg.start_soon(memory.run)
                if self._freeze_heap:  # before the scan loop: its ticks never wait for it
                    heap.settle()
                    self._frozen = True
                await self._start_parts(tg)
                self.ready = True
                self.notifier.ready(self.status_line())
                log.info("ready: agent %s, boot %d, %d rules files, %s, diagnostics %s",
                         cfg.agent_id, journal.boot,
                         sum(len(m.rule_files.files) for m in cfg.machines),
                         self.states_text(), self._diagnostics_where())
                if self.forwarder is not None:  # after READY: the broker never delays it
                    await tg.start(self.supervisor.run, "forwarder", self.forwarder.run)
                    self._publish_initial_live()
                tg.start_soon(self._keep_notifying)
                await tg.start(self.supervisor.run, "history",
                               partial(self.history.run, self._probe))
                task_status.started(self)
        finally:
            with anyio.CancelScope(shield=True):
                await self._final_close()

    def _build(self, journal: Journal) -> None:
        cfg = self.config
        named = [m for m in cfg.machines if m.named]
        own = tuple(spec for m in named for spec in m.sources)
        towers = {m.name: m.tower for m in named if m.tower is not None}
        outputs = {m.name: m.outputs for m in named if m.outputs is not None}
        self.hardware = build_hardware((*cfg.sources, *own), None if named else cfg.tower,
                                       pin_factory=self._pin_factory,
                                       line_backend=self._line_backend, towers=towers,
                                       outputs=None if named else cfg.outputs,
                                       machine_outputs=outputs)
        owner = {spec.name: m.name for m in cfg.machines if m.named for spec in m.sources}
        self._source_of = {  # a machine's own source delivers `machine/input`
            (own_key(owner[s.name], n) if s.name in owner else n): s.name
            for s in self.hardware.sources for n in s.input_names()}
        lanes = [self._lane(m, journal) for m in cfg.machines]
        self.memory = self.memories[0]
        assert self.history is not None
        sink = Recorded(journal, self.history)  # the page's timeline sees what the journal gets
        self.scan = ScanLoop(
            inputs=self.inputs, sink=sink, clock=self.clock, period=cfg.scan.period,
            deadband=cfg.scan.deadband, deadbands=cfg.scan.deadbands,
            observe=self.metrics_registry.observe_scan, machines=lanes,
            on_change=cfg.scan.on_change)
        for lane in lanes:
            # the first tick compares with this: a restored latch is no change to store again
            lane.view.latched = tuple(f"{lt.kind}:{lt.name}" for lt in lane.evaluator.latches())
        self.reloader = Reloader(cfg, self.scan, sink, self.clock, make_evaluator,
                                 quiet_heap=self._freeze_heap)
        if cfg.mqtt is not None and self._forwarder_process:
            from linelight.agent.uplink import ForwarderProcess

            self.forwarder = ForwarderProcess(journal, cfg.mqtt, agent_id=cfg.agent_id,
                                              boot=journal.boot, version=self.version)
        elif cfg.mqtt is not None:
            from linelight.agent.mqtt import Forwarder

            self.forwarder = Forwarder(journal, cfg.mqtt, agent_id=cfg.agent_id,
                                       boot=journal.boot, version=self.version)
        extra: dict[str, Any] = {"machines": [m.name for m in named]} if named else {}
        journal.submit(ev.agent_event(
            "start", self.version, self.clock.now_ns(), unsynced=not self.clock.synchronized,
            config=cfg.fingerprint, rules=rules_fingerprint(cfg.machines), boot=journal.boot,
            pid=os.getpid(), latched=list(self.restored_latches), **extra))

    def _lane(self, machine: MachineConfig, journal: Journal) -> MachineLane:
        """One machine in the scan loop: its evaluator seeded with what it remembers."""
        assert self.hardware is not None
        evaluator = make_evaluator(machine.ruleset)
        memory = RuleMemory(journal, now_ns=self.clock.now_ns, machine=machine.wire_name)
        self.memories.append(memory)
        restored = memory.restore(evaluator)
        self.restored_latches += tuple(f"machine '{machine.name}' {r}" if machine.named else r
                                       for r in restored)
        tower = (self.hardware.towers.get(machine.name) if machine.named
                 else self.hardware.stacklight)
        lines = (self.hardware.machine_outputs.get(machine.name) if machine.named
                 else self.hardware.outputs)
        return MachineLane(
            evaluator, tower or _NoTower(), name=machine.wire_name,
            inputs=dict(machine.inputs) if machine.named else None,
            states=machine.states_read(), on_live=partial(self._on_live, machine=machine.wire_name),
            on_counters=memory.counters_changed, on_latches=memory.latches_changed,
            on_windows=memory.windows_changed, latches_saved=memory.latches_saved,
            label=machine.name, outputs=lines)

    async def _start_parts(self, tg: TaskGroup) -> None:
        assert self.hardware is not None and self.scan is not None and self.reloader is not None
        hw = self.hardware
        if hw.stacklight is not None and not hw.towers:
            await tg.start(self.supervisor.run, "tower", hw.stacklight.run)
        for machine, tower in hw.towers.items():
            await tg.start(self.supervisor.run, f"tower {machine}", tower.run)
        if hw.outputs is not None:
            await tg.start(self.supervisor.run, "outputs", hw.outputs.run)
        for machine, bank in hw.machine_outputs.items():
            await tg.start(self.supervisor.run, f"outputs {machine}", bank.run)
        await tg.start(self.scan.run)
        owner = {spec.name: m.name for m in self.config.machines if m.named
                 for spec in m.sources}
        for source in hw.sources:
            # a machine's own source writes its inputs under `machine/input`; the table
            # adapter has the writing interface sources use (cast: they are typed InputTable)
            table = (self.inputs if source.name not in owner
                     else cast(InputTable, self.inputs.scoped(own_key(owner[source.name], ""))))
            await tg.start(self.supervisor.run, f"source {source.name}",
                           partial(source.run, table))
        if self.config.diagnostics.enabled:
            d = self.config.diagnostics
            self.diagnostics = Diagnostics(self, list(d.listen), d.token_file,
                                           allowed_hosts=d.allowed_hosts,
                                           token_for_reads=d.token_for_reads,
                                           tailnet_machine=socket.gethostname().split(".")[0]
                                           if d.tailnet else None)
            await tg.start(self.supervisor.run, "diagnostics", self.diagnostics.run)
        # supervised like every other part: a reload that fails is a rejection (Reloader), and
        # should a trigger itself ever fail, it is restarted instead of ending the agent
        if self._handle_signals:
            await tg.start(self.supervisor.run, "reload on SIGHUP", self.reloader.on_sighup)
        if self._watch_files:
            await tg.start(self.supervisor.run, "rule file watcher", self.reloader.watch_files)

    async def stop_on_signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                              ) -> None:
        """SIGTERM / SIGINT -> `stop()`. Run it in a task group that outlives `run()`, so a
        second signal during shutdown is logged instead of killing the process."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping:
                    log.info("%s received: already stopping", name)
                    continue
                log.info("%s received: stopping", name)
                await self.stop()

    async def stop(self) -> None:
        """Planned shutdown: lamps to on_exit, a stop event, offline to the broker, cancel."""
        if self._stopping:
            return
        self._stopping = True
        self.supervisor.stopping = True
        self.notifier.stopping(self.status_line())
        mqtt = self.config.mqtt
        budget = SHUTDOWN_BUDGET_S + (mqtt.flush_on_stop if mqtt is not None else 0.0)
        with anyio.CancelScope(shield=True), anyio.move_on_after(budget):
            if self.scan is not None:
                self.scan.halt()
            await self._close_hardware()
            stop_seq: int | None = None
            if self.history is not None:
                self.history.stopped()
            if self.journal is not None:
                stop_seq = await self._record_stop(self.journal)
                for memory in self.memories:
                    await memory.flush()
            if self.forwarder is not None:
                await self.forwarder.stop(flush_through=stop_seq)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _record_stop(self, journal: Journal) -> int | None:
        """The `stop` event, committed before the forwarder's flush so the flush can wait for
        its seq; None (the event is only handed over) if the journal writer is not running."""
        event = ev.agent_event("stop", self.version, self.clock.now_ns(),
                               unsynced=not self.clock.synchronized)
        if not journal.running:
            journal.submit(event)
            return None
        try:
            with anyio.move_on_after(SHUTDOWN_BUDGET_S / 2):
                return await journal.append(event)
        except JournalError as exc:
            log.warning("the stop event could not be recorded: %s", exc)
        return None

    async def _close_hardware(self) -> None:
        """Tower to `on_exit`, then close devices; once, whichever shutdown path gets here."""
        if self.hardware is not None and not self._hardware_closed:
            self._hardware_closed = True
            with anyio.move_on_after(SHUTDOWN_BUDGET_S):
                await self.hardware.close()

    async def _final_close(self) -> None:
        self.supervisor.stopping = True
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping()
        await self._close_hardware()
        if self.history is not None:
            await anyio.to_thread.run_sync(self.history.close)
        if self.journal is not None:
            await anyio.to_thread.run_sync(self.journal.close)
        self.notifier.close()
        if self._frozen:  # a process that outlives its agent (tests, the bench) collects it
            heap.thaw()
            self._frozen = False
        log.info("stopped")

    # -- periodic chores ----------------------------------------------------------------------
    async def _keep_notifying(self) -> None:
        """WATCHDOG=1 only while the scan loop ticks and the journal writer runs; STATUS= too.

        Pings come every half watchdog period (at most 2 s apart) and only while the last
        tick ended, and took, less than the stall limit, itself at most half the watchdog
        period: so a frozen or crawling scan loop stops the pings within one watchdog period
        and systemd restarts the agent, whose first scan shows `unknown`. A loop frozen inside
        a tick holds the event loop, so this task cannot ping at all then.
        """
        interval = self.notifier.watchdog_interval
        period = min(interval, 2.0) if interval else 2.0
        while True:
            await anyio.sleep(period)
            if self.healthy_enough_for_watchdog():
                self.notifier.watchdog()
            else:
                log.error("watchdog withheld: the scan loop is stalled or the journal writer "
                          "is not running")
            self.notifier.status(self.status_line())

    def healthy_enough_for_watchdog(self) -> bool:
        if self.scan is None or self.journal is None or not self.journal.running:
            return False
        interval = self.notifier.watchdog_interval
        limit = self.scan.stall_limit()
        return self.scan.healthy(limit=min(limit, interval) if interval else limit)

    def _diagnostics_where(self) -> str:
        if self.diagnostics is None:
            return "disabled"
        if not self.diagnostics.bound:  # the bind failed: the supervisor logged why
            wanted = ", ".join(f"{h}:{p}" for h, p in self.diagnostics.listen)
            return f"NOT listening (wanted {wanted})"
        return "on " + ", ".join(f"{h}:{p}" for h, p in self.diagnostics.bound)

    def _open_history(self, boot: int) -> History:
        history = History.open(self.config.data_dir / "history.db")
        history.started(boot)
        return history

    def _probe(self) -> Probe:
        """What the history samples once a second: queue depth, link, restarts."""
        q = self.journal.stats() if self.journal is not None else None
        link = self.forwarder.link if self.forwarder is not None else None
        restarts = {name: (c["restarts"], str(c["last_error"] or ""))
                    for name, c in self.supervisor.status().items()}
        return Probe(depth=q.depth + q.pending if q is not None else 0,
                     link=link.connected if link is not None else None,
                     link_error=link.last_error if link is not None else None, restarts=restarts)

    async def history_view(self, hours: float, points: int) -> dict[str, Any]:
        if self.history is None:
            return {"available": False, "states": [], "marks": [], "depth": []}
        return await anyio.to_thread.run_sync(self.history.query, hours, points)

    def _on_live(self, key: str, value: Any, machine: str | None = None) -> None:
        if self.forwarder is not None:
            if machine is None:
                self.forwarder.publish_live(key, value)
            else:
                self.forwarder.publish_live(key, value, machine)

    def _publish_initial_live(self) -> None:
        if self.scan is None:
            return
        for lane in self.scan.machines:
            v, m = lane.view, lane.name
            self._on_live("state", {"name": v.state, "code": v.code,
                                    "since_ns": v.state_since_ns}, m)
            self._on_live("lamps", {lamp: p.value for lamp, p in v.lamps.items()}, m)
            self._on_live("signals", list(v.signals), m)
            self._on_live("counters", dict(v.counters), m)

    # -- what diagnostics, the demo and status show --------------------------------------------
    def scan_state(self) -> str:
        return self.scan.view.state if self.scan is not None else "starting"

    def status_line(self) -> str:
        q = self.journal.stats() if self.journal is not None else None
        depth = q.depth + q.pending if q is not None else 0
        link = ("connected" if self.forwarder.link.connected else "disconnected"
                ) if self.forwarder is not None else "no broker configured"
        return f"{self.states_text()}, queue {depth}, broker {link}"

    def states_text(self) -> str:
        """`state producing`, or with machines `states press-1 producing, press-2 fault`."""
        if self.scan is not None and self.scan.machines[0].name is not None:
            return "states " + ", ".join(f"{lane.label} {lane.view.state}"
                                         for lane in self.scan.machines)
        return f"state {self.scan_state()}"

    def machines_status(self, now: float) -> dict[str, Any]:
        """Each machine side by side: state, lamps, signals, counters, its inputs (by the
        names its rules read), its tower and rules."""
        assert self.scan is not None
        out: dict[str, Any] = {}
        rules = {m.name: m for m in self.reloader.machines} if self.reloader else {}
        for lane in self.scan.machines:
            entry = self.scan.view_status(now, lane)
            tower: StackLight | None = None
            if self.hardware is not None:
                tower = (self.hardware.towers.get(lane.label) if lane.name is not None
                         else self.hardware.stacklight)
            entry["tower"] = tower.status() if tower is not None else None
            lines = None
            if self.hardware is not None:
                lines = (self.hardware.machine_outputs.get(lane.label) if lane.name is not None
                         else self.hardware.outputs)
            entry["output_lines"] = lines.status() if lines is not None else None
            m = rules.get(lane.label)
            last = self.reloader.last if self.reloader is not None else None
            entry["rules"] = {"fingerprint": m.ruleset.fingerprint if m else "",
                              "files": list(m.rule_files.names) if m else [],
                              # its files were rejected by the last reload: old rules run
                              "kept": last is not None and lane.label in last.rejected}
            wired = dict(m.inputs) if m is not None else {}  # rule input -> table key
            entry["inputs"] = {name: {**i, "source": self._input_source(wired.get(name, name))}
                               for name, i in entry.get("inputs", {}).items()}
            entry["named"] = lane.name is not None
            out[lane.label] = entry
        return out

    def parts(self) -> dict[str, Any]:
        """Each part's own status section, for `agent.health` to compose."""
        now = time.monotonic()
        parts: dict[str, Any] = {"components": self.supervisor.status(),
                                 "clock": self.clock.status()}
        if self.scan is not None:
            parts.update(self.scan.view_status(now))
            parts["machines"] = self.machines_status(now)
            if self.scan.machines[0].name is not None:
                # several machines: every input of the table, a machine's own as `machine/x`
                parts["inputs"] = inputs_status(self.inputs.snapshot(), now)
            parts["inputs"] = self._inputs_with_sources(parts["inputs"])
            parts["scan"] = self.scan.status(now)
            parts["events"] = {"submitted": parts["scan"]["events_submitted"]}
        if self.hardware is not None:
            hw = self.hardware.status()
            parts["sources"], parts["tower"] = hw["sources"], hw["tower"]
            parts["output_lines"] = hw["output_lines"]
        if self.journal is not None:
            parts["queue"] = self.journal.status()
        if self.forwarder is not None:
            parts["broker"] = self.forwarder.link.status(now)
        if self.reloader is not None:
            parts["rules"] = self.reloader.status()
        if self.diagnostics is not None:
            parts["diagnostics"] = {"listen": [f"{h}:{p}" for h, p in self.diagnostics.bound],
                                    "refused": self.diagnostics.refused}
        return parts

    def _input_source(self, key: str) -> str | None:
        """The source delivering an input-table key; `machine:NAME` for another machine's
        state code (the scan delivers it)."""
        return key if key.startswith(STATE_OF) else self._source_of.get(key)

    def _inputs_with_sources(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Each input with the source delivering it; inputs the rules read that no source
        delivers are listed too, with quality `missing` (never an empty table that hides them)."""
        out = {name: {**i, "source": self._source_of.get(name)} for name, i in inputs.items()}
        if self.scan is not None and self.scan.machines[0].name is None:  # one machine
            for name in self.scan.machines[0].evaluator.ruleset.inputs:
                if name not in out and name not in self._source_of:
                    out[name] = {"value": None, "quality": health.MISSING, "age_s": None,
                                 "reason": "read by the rules, delivered by no source",
                                 "source": None}
        return dict(sorted(out.items()))

    def health(self) -> Verdict:
        return health.assess(self.parts(), self.config.diagnostics.degraded_on)

    def status(self) -> dict[str, Any]:
        cfg = self.config
        identity = {"agent": cfg.agent_id, "version": self.version, "pid": os.getpid(),
                    "config": str(cfg.path), "config_fingerprint": cfg.fingerprint,
                    "started_ns": self.started_ns,
                    "uptime_s": round(time.monotonic() - self.started_mono, 3),
                    "ready": self.ready}
        return health.compose(identity, self.parts(), cfg.diagnostics.degraded_on)

    def metrics(self) -> bytes:
        return self.metrics_registry.render()

    async def lamp_test(self) -> str:
        towers = self.hardware.all_towers() if self.hardware is not None else []
        if not towers or self._tg is None:
            return "no tower configured: nothing to test"
        for tower in towers:
            self._tg.start_soon(tower.lamp_test)
        lamps = sum(len(t.outputs) for t in towers)
        where = f" of {len(towers)} towers" if len(towers) > 1 else ""
        return f"lamp test started on {lamps} lamps{where}"

    async def reload(self, requested_by: str) -> str:
        if self.reloader is None:
            return "not running yet"
        return (await self.reloader.reload(requested_by)).describe()
