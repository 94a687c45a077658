"""Rule unit tests (`linelight rules test`): input series on a virtual clock, expected outputs.

A test file names the rule files it tests and holds `[[test]]` cases. Each case gives every
input a series such as `"1x40 0x20 _x20"` (one entry per scan; `_` = no new sample, so the
last one ages and may go stale), and `[[test.expect]]` entries: the state, lamps, signals and
counters expected at a given time. A case can restart the agent (`[[test.restart]]`: what the
agent persists is kept, timers and samples are not) and reload rule files (`[[test.reload]]`)
at given times. Everything runs on a virtual clock, so a hundred cases take
milliseconds. Failures say expected vs actual at that time, at the expectation's line.
Pure like all of rules/: it parses texts; `agent.rulefiles` reads the files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from linelight.rules.errors import ConfigProblems, LocatedError, Location
from linelight.rules.evaluator import Evaluator, RuleEvent, Step
from linelight.rules.fields import Problems, Table, did_you_mean
from linelight.rules.model import UNKNOWN_STATE, RuleSet
from linelight.rules.tomldoc import TomlDoc
from linelight.rules.values import Pattern, Quality, Sample, Value

FILE_KEYS = ("rules", "step", "test")
TEST_KEYS = ("name", "step", "inputs", "counters_start", "restart", "reload", "expect")
EXPECT_KEYS = ("at", "state", "code", "lamps", "signals", "counters", "outputs", "events")
RESTART_KEYS = ("at", "down")
RELOAD_KEYS = ("at", "rules")
DEFAULT_STEP = 0.1
MAX_SCANS = 1_000_000
_EPS = 1e-9
NO_SAMPLE = "_"

_ENTRY = re.compile(
    r"^(?P<value>_|bad|stale|true|false|'[^'\s]*'|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"(?:(?P<sign>[-+])(?P<inc>\d+(?:\.\d*)?|\.\d+))?"
    r"(?:x(?P<count>\d+))?$"
)


# -- series --------------------------------------------------------------------------------


def parse_series(text: str) -> list[Any]:
    """`"1x3 0 _x2"` -> [1, 1, 1, 0, _, _]; `"0+5x3"` -> [0, 5, 10]. Raises SeriesError."""
    out: list[Any] = []
    for m in re.finditer(r"\S+", text):
        entry = _ENTRY.match(m.group(0))
        if entry is None:
            raise SeriesError(m.start(), f"'{m.group(0)}' is not a series entry; write a value "
                              "(1, 0, 2.5, true, bad, stale, _), optionally 'xN' to repeat it "
                              "N scans, or 'a+bxN' for a ramp")
        raw = entry.group("value")
        count = int(entry.group("count")) if entry.group("count") else 1
        if count == 0:
            raise SeriesError(m.start(), f"'{m.group(0)}' repeats zero times")
        if len(out) + count > MAX_SCANS:
            raise SeriesError(m.start(), f"the series is longer than {MAX_SCANS} scans")
        value = _series_value(raw)
        if entry.group("inc"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SeriesError(m.start(), f"only numbers can ramp, not '{raw}'")
            inc = float(entry.group("inc")) if "." in entry.group("inc") else int(entry.group("inc"))
            step = -inc if entry.group("sign") == "-" else inc
            out.extend(value + step * i for i in range(count))
        else:
            out.extend([value] * count)
    return out


def _series_value(raw: str) -> Any:
    if raw in (NO_SAMPLE, "bad", "stale"):
        return raw
    if raw in ("true", "false"):
        return raw == "true"
    if raw.startswith("'"):
        return raw[1:-1]
    if any(c in raw for c in ".eE"):
        return float(raw)
    return int(raw)


class SeriesError(Exception):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


# -- model ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    location: Location
    at_text: str
    scan: int
    state: str | None = None
    code: int | None = None
    lamps: tuple[tuple[str, Pattern], ...] = ()
    signals: tuple[str, ...] | None = None
    counters: tuple[tuple[str, int], ...] = ()
    events: tuple[str, ...] | None = None
    outputs: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class Restart:
    """The agent stops before scan `scan` and starts again `down` scans later."""

    scan: int
    down: int = 0


@dataclass(frozen=True, slots=True)
class Reload:
    """Before scan `scan`, the rule files are replaced by `ruleset` (a hot reload)."""

    scan: int
    ruleset: RuleSet


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    location: Location
    step: float
    inputs: tuple[tuple[str, tuple[Any, ...]], ...]
    expects: tuple[Expectation, ...]
    counters_start: tuple[tuple[str, int], ...] = ()
    restarts: tuple[Restart, ...] = ()
    reloads: tuple[Reload, ...] = ()

    @property
    def scans(self) -> int:
        longest = max((len(s) for _, s in self.inputs), default=0)
        last = max((e.scan + 1 for e in self.expects), default=0)
        return max(longest, last)


@dataclass(frozen=True, slots=True)
class Failure:
    """One expectation that did not hold."""

    location: Location
    test: str
    at_text: str
    what: str
    expected: str
    actual: str
    note: str = ""

    def __str__(self) -> str:
        tail = f" ({self.note})" if self.note else ""
        return (f"{self.location}: test '{self.test}' at {self.at_text}: {self.what}: "
                f"expected {self.expected}, got {self.actual}{tail}")


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    location: Location
    scans: int
    failures: tuple[Failure, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class TestFile:
    path: str
    ruleset: RuleSet
    cases: tuple[Case, ...]


# -- reading -------------------------------------------------------------------------------


def load_test_text(file: str, text: str,
                   load: Callable[[Sequence[str]], RuleSet]) -> TestFile:
    """Parse the text of the test file `file`; raises ConfigProblems listing every problem.

    `load(rule file names as written in 'rules')` gives the rules under test; the caller
    resolves the names and reads the files (`agent.rulefiles.load_test_file` does, relative to
    the test file), so this module reads no file. ConfigProblems raised by `load` are listed
    with the test file's own problems.
    """
    problems = Problems()
    try:
        doc = TomlDoc.parse(text, file)
    except LocatedError as exc:
        raise ConfigProblems([exc]) from None
    root = Table.root(doc, problems)
    rule_files = root.take("rules", list)
    step = root.duration("step", DEFAULT_STEP, allow_zero=False)
    tests = root.tables("test")
    ruleset: RuleSet | None = None
    if isinstance(rule_files, list):
        bad = [f for f in rule_files if not isinstance(f, str)]
        if bad or not rule_files:
            root.problem("rules", "'rules' must list the rule files to test, e.g. "
                                  "rules = [\"press.toml\"]")
        else:
            try:
                ruleset = load(rule_files)
            except ConfigProblems as exc:
                problems.extend(exc.problems)
    if not tests and "test" not in root.data:
        problems.add(root.where(), "the file has no [[test]] cases")
    cases = [c for c in (_read_case(t, step or DEFAULT_STEP, ruleset, load, problems)
                         for t in tests) if c]
    root.finish()
    names: dict[str, Location] = {}
    for c in cases:
        if c.name in names:
            problems.add(c.location, f"another test is already named '{c.name}' "
                                     f"(at {names[c.name]})")
        names.setdefault(c.name, c.location)
    problems.raise_if_any()
    assert ruleset is not None
    return TestFile(file, ruleset, tuple(cases))


def _read_case(t: Table, default_step: float, rs: RuleSet | None,
               load: Callable[[Sequence[str]], RuleSet], problems: Problems) -> Case | None:
    name = t.string("name")
    step = t.duration("step", default_step, allow_zero=False) or default_step
    restarts = [r for r in (_read_restart(x, step) for x in t.tables("restart")) if r]
    reloads = [r for r in (_read_reload(x, step, load, problems) for x in t.tables("reload"))
               if r]
    inputs: list[tuple[str, tuple[Any, ...]]] = []
    table = t.table("inputs")
    if table is not None:
        for key in list(table.data):
            series = table.string(key)
            if rs is not None and key not in rs.inputs:
                table.problems.add(table.where(key), f"the rules have no input '{key}'"
                                   f"{did_you_mean(key, rs.inputs)}")
                continue
            if not isinstance(series, str):
                continue
            try:
                inputs.append((key, tuple(parse_series(series))))
            except SeriesError as exc:
                path = (*table.path, key)
                table.problems.add(t.doc.string_offset(path, exc.offset), exc.message)
        table.finish()
    starts = _counter_map(t, "counters_start", rs)
    reloads.sort(key=lambda r: r.scan)

    def rules_at(scan: int) -> RuleSet | None:  # expectations are checked against the rules
        current = rs                             # that run at their time
        for r in reloads:
            if r.scan <= scan:
                current = r.ruleset
        return current

    expects = [e for e in (_read_expect(x, step, rules_at) for x in t.tables("expect")) if e]
    if not t.has("expect"):
        t.problems.add(t.where(), f"{t.name} has no [[test.expect]] entries, so it checks nothing")
    t.finish()
    if not isinstance(name, str):
        return None
    return Case(name, t.where(), step, tuple(inputs), tuple(expects), starts,
                tuple(sorted(restarts, key=lambda r: r.scan)), tuple(reloads))


def _scan_of(t: Table, key: str, step: float) -> tuple[str, int | None]:
    """The `at`-style key `key` as a scan number (None when missing or between scans)."""
    at = t.take(key, (str, int))
    at_text = str(at) if at is not None else ""
    seconds = t.duration(key) if at is not None else None
    if seconds is None:
        return at_text, None
    scan = round(seconds / step)
    if abs(scan * step - seconds) > _EPS or scan > MAX_SCANS:
        t.problem(key, f"'{at_text}' falls between scans; with a step of {step:g}s "
                       "times must be at whole scans")
        return at_text, None
    return at_text, scan


def _read_restart(t: Table, step: float) -> Restart | None:
    _, scan = _scan_of(t, "at", step)
    down = 0
    if t.has("down"):
        _, down_scans = _scan_of(t, "down", step)
        down = down_scans or 0
    t.finish()
    return None if scan is None else Restart(scan, down)


def _read_reload(t: Table, step: float, load: Callable[[Sequence[str]], RuleSet],
                 problems: Problems) -> Reload | None:
    _, scan = _scan_of(t, "at", step)
    files = t.take("rules", list)
    t.finish()
    if files is None:
        return None
    if not files or not all(isinstance(f, str) for f in files):
        t.problem("rules", "'rules' must list the rule files to load, e.g. "
                           "rules = [\"press-v2.toml\"]")
        return None
    try:
        ruleset = load(files)
    except ConfigProblems as exc:
        problems.extend(exc.problems)
        return None
    return None if scan is None else Reload(scan, ruleset)


def _read_expect(t: Table, step: float,
                 rules_at: Callable[[int], RuleSet | None]) -> Expectation | None:
    at_text, at_scan = _scan_of(t, "at", step)
    seconds = None if at_scan is None else at_scan * step
    scan = at_scan or 0
    rs = rules_at(scan)
    state = t.string("state", None)
    code = t.integer("code", None)
    if rs is not None and state is not None and rs.state(state) is None \
            and state != UNKNOWN_STATE:
        t.problem("state", f"the rules have no state '{state}'"
                           f"{did_you_mean(state, [s.name for s in rs.states] + [UNKNOWN_STATE])}")
    lamps: list[tuple[str, Pattern]] = []
    lamp_table = t.table("lamps")
    if lamp_table is not None:
        for lamp in list(lamp_table.data):
            choices = [p.value for p in Pattern]
            value = lamp_table.choice(lamp, choices)
            if rs is not None and lamp not in rs.tower_lamps:
                lamp_table.problems.add(lamp_table.where(lamp), f"the tower has no '{lamp}' lamp"
                                        f"{did_you_mean(lamp, rs.tower_lamps)}")
            elif value is not None:
                lamps.append((lamp, Pattern(value)))
        lamp_table.finish()
    signals = _signal_list(t, rs)
    counters = _counter_map(t, "counters", rs)
    outputs = _output_map(t, rs)
    events = t.take("events", list, None)
    if events is not None and not all(isinstance(e, str) for e in events):
        t.problem("events", "'events' must list events as text, e.g. [\"state fault 180000\", "
                            "\"alarm microstop true\", \"count parts 3\"]")
        events = None
    t.finish()
    if seconds is None:
        return None
    return Expectation(t.where(), at_text, scan, state, code, tuple(lamps), signals, counters,
                       tuple(" ".join(e.split()) for e in events) if events is not None else None,
                       outputs)


def _output_map(t: Table, rs: RuleSet | None) -> tuple[tuple[str, bool], ...]:
    known = [o.name for o in rs.outputs] if rs is not None else None
    return _named_values(t, "outputs", "output", known, lambda table, name: table.boolean(name))


def _signal_list(t: Table, rs: RuleSet | None) -> tuple[str, ...] | None:
    raw = t.take("signals", list, None)
    if raw is None:
        return None
    names = [s for s in raw if isinstance(s, str)]
    if len(names) != len(raw):
        t.problem("signals", "'signals' must list signal names, e.g. [\"microstop\"]")
    if rs is not None:
        known = [s.name for s in rs.signals]
        for n in names:
            if n not in known:
                t.problem("signals", f"the rules have no signal '{n}'{did_you_mean(n, known)}")
    return tuple(sorted(names))


def _counter_map(t: Table, key: str, rs: RuleSet | None) -> tuple[tuple[str, int], ...]:
    known = [c.name for c in rs.counters] if rs is not None else None
    return _named_values(t, key, "counter", known,
                         lambda table, name: table.integer(name, minimum=0))


def _named_values(t: Table, key: str, what: str, known: list[str] | None,
                  read: Callable[[Table, str], Any]) -> tuple[tuple[str, Any], ...]:
    """The table `key` of `t` as (name, value) pairs; a name the rules lack is a problem."""
    table = t.table(key)
    if table is None:
        return ()
    out: list[tuple[str, Any]] = []
    for name in list(table.data):
        value = read(table, name)
        if known is not None and name not in known:
            table.problems.add(table.where(name), f"the rules have no {what} '{name}'"
                               f"{did_you_mean(name, known)}")
        elif value is not None:
            out.append((name, value))
    table.finish()
    return tuple(out)


# -- running -------------------------------------------------------------------------------


def run_case(ruleset: RuleSet, case: Case) -> CaseResult:
    """Run one case on a virtual clock: scan k happens at k x step seconds."""
    ev = Evaluator(ruleset)
    if case.counters_start:
        ev.restore_counters(dict(case.counters_start))
    table: dict[str, Sample] = {}
    due: dict[int, list[Expectation]] = {}
    for e in case.expects:
        due.setdefault(e.scan, []).append(e)
    restarts = {r.scan: r for r in case.restarts}
    reloads = {r.scan: r.ruleset for r in case.reloads}
    failures: list[Failure] = []
    down_until = -1
    for k in range(case.scans):
        now = k * case.step
        if k in reloads:
            ev = reload(ev, reloads[k])
        if k in restarts:
            ev = restart(ev)
            table.clear()  # the sources start again: no sample until one arrives
            down_until = k + restarts[k].down
        if k < down_until:  # the agent is down: no scan, and the samples of that time are lost
            failures.extend(Failure(e.location, case.name, e.at_text, "scan", "a scan",
                                    "none", "the agent is down then (a [[test.restart]] "
                                    "with 'down')") for e in due.get(k, ()))
            continue
        for name, series in case.inputs:
            if k < len(series):
                _feed(table, name, series[k], now)
        step = ev.step(table, now)
        for e in due.get(k, ()):
            failures.extend(_check(case.name, e, step))
    return CaseResult(case.name, case.location, case.scans, tuple(failures))


def restart(ev: Evaluator) -> Evaluator:
    """What the agent's next start gets: a fresh evaluator seeded with what it persists
    (counter totals, latches, rolling windows; see agent.memory). Timers, debounce, edge
    memory and the state are not kept."""
    fresh = Evaluator(ev.ruleset)
    fresh.restore_counters(ev.counters)
    fresh.restore_latches(ev.latches())
    fresh.restore_windows(ev.windows())
    return fresh


def reload(ev: Evaluator, ruleset: RuleSet) -> Evaluator:
    """A hot reload to `ruleset`, as the agent does it (`Evaluator.carry_over`)."""
    fresh = Evaluator(ruleset)
    fresh.carry_over(ev)
    return fresh


def run_file(test_file: TestFile) -> list[CaseResult]:
    return [run_case(test_file.ruleset, c) for c in test_file.cases]


def _feed(table: dict[str, Sample], name: str, value: Any, now: float) -> None:
    if value == NO_SAMPLE:
        return
    if value == "bad":
        table[name] = Sample(None, Quality.BAD, now, reason="bad in the test series")
    elif value == "stale":
        prev = table.get(name)
        table[name] = Sample(prev.value if prev else None, Quality.STALE, now,
                             reason="stale in the test series")
    else:
        table[name] = Sample(value, Quality.GOOD, now)


def _check(test: str, e: Expectation, step: Step) -> Iterable[Failure]:
    def fail(what: str, expected: Value, actual: Value, note: str = "") -> Failure:
        return Failure(e.location, test, e.at_text, what, _show(expected), _show(actual), note)

    note = step.reason if step.state.name == UNKNOWN_STATE else ""
    if e.state is not None and step.state.name != e.state:
        yield fail("state", e.state, step.state.name, note)
    if e.code is not None and step.state.code != e.code:
        yield fail("code", e.code, step.state.code, note)
    for lamp, pattern in e.lamps:
        actual = step.lamps.get(lamp, Pattern.OFF)
        if actual is not pattern:
            yield fail(f"lamp {lamp}", pattern.value, actual.value,
                       f"state {step.state.name}" + (f", signals {', '.join(step.signals)}"
                                                     if step.signals else ""))
    if e.signals is not None and tuple(sorted(step.signals)) != e.signals:
        yield fail("signals", "[" + ", ".join(e.signals) + "]",
                   "[" + ", ".join(sorted(step.signals)) + "]")
    for name, total in e.counters:
        if step.counters.get(name) != total:
            yield fail(f"counter {name}", total, step.counters.get(name))
    for name, on in e.outputs:
        if step.outputs.get(name) != on:
            yield fail(f"output {name}", on, step.outputs.get(name))
    if e.events is not None:
        happened = tuple(event_text(ev) for ev in step.events)
        if happened != e.events:
            yield fail("events", "[" + ", ".join(e.events) + "]",
                       "[" + ", ".join(happened) + "]")


def event_text(event: RuleEvent) -> str:
    """`state fault 180000`, `alarm microstop true`, `count parts 3`: how tests name events."""
    value = str(event.value).lower() if isinstance(event.value, bool) else str(event.value)
    return f"{event.kind} {event.name} {value}"


def _show(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"'{value}'" if isinstance(value, str) and not value.startswith("[") else str(value)
