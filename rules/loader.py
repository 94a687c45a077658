"""Turn rule texts into a validated, compiled RuleSet; every problem is `file:line:col: sentence`.

Pure: `load_rules` takes `(file name, text)` pairs and reads no file (`agent.rulefiles`
reads them). Several files merge into one set (inputs in one, states in another is fine); a
name defined twice is an error. Reading goes through `TomlDoc` and `Table`, so unknown keys,
wrong types and bad durations are reported the same way as in every other config file. All
problems of all files are collected and raised together as one `ConfigProblems`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from linelight.rules.compiler import (
    FUNCTIONS,
    STATE_NAMES,
    Compiled,
    Kind,
    SlotAllocator,
    Symbol,
    compile_tree,
    names_in,
)
from linelight.rules.errors import LocatedError, Location
from linelight.rules.expressions import KEYWORDS, ExpressionError, Node, parse
from linelight.rules.fields import REQUIRED, Problems, Table, did_you_mean, parse_duration
from linelight.rules.model import (
    INPUT_TYPES,
    UNKNOWN_STATE,
    Counter,
    Define,
    InputSlots,
    InputSpec,
    LampShow,
    Output,
    Rule,
    RuleSet,
    UnknownState,
)
from linelight.rules.tomldoc import PathKey, TomlDoc
from linelight.rules.values import LAMPS, Pattern

# The keys each table accepts; rules.schema builds the JSON Schema from the same lists.
TOP_KEYS = ("inputs", "define", "state", "signal", "counter", "output", "tower", "unknown")
INPUT_KEYS = ("type", "scale", "debounce", "stale_after", "on_stale", "description")
STATE_KEYS = ("name", "code", "priority", "when", "clear_when", "hold_on_stale", "on_delay",
              "off_delay", "show", "description")
SIGNAL_KEYS = ("name", "priority", "when", "clear_when", "hold_on_stale", "on_delay",
               "off_delay", "show", "description")
COUNTER_KEYS = ("name", "rising", "falling", "increment", "reset", "description")
OUTPUT_KEYS = ("name", "when", "on_delay", "off_delay", "description")
TOWER_KEYS = ("lamps",)
UNKNOWN_KEYS = ("code", "priority", "show")
PATTERNS = tuple(p.value for p in Pattern)
MAX_DELAY = 86400.0
# Bounds on what a rule file may ask for, so that every set `check` accepts also runs:
MAX_CODE = 2**31 - 1  # a state code fits a 32-bit integer in every consumer
MAX_PRIORITY = 10**9  # priorities are compared as floats: exact far beyond this
MAX_INCREMENT = 10**9  # a counter's total stays within 64 bits for centuries of edges
MAX_COST = 20_000  # operations per scan over all conditions: milliseconds, never seconds
# inputs per rule set: each costs every scan its coercion, debounce and staleness (about 1 us)
# and a reload its objects (agent/heap.py), and none is an operation of MAX_COST; 30,000 in a
# 780 KiB file took 33 ms a scan, more than a 20 ms period, so 5,000: about 5 ms
MAX_INPUTS = 5_000
# rolling windows per rule set: each holds up to rules.windows.MAX_ENTRIES edges (about 140
# bytes each), so 200 windows stay below 30 MB however busy the machine is
MAX_WINDOWS = 200
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_rules(sources: Sequence[tuple[str, str]]) -> RuleSet:
    """Load `(file name, text)` pairs into one RuleSet, or raise ConfigProblems listing all."""
    problems = Problems()
    draft = _Draft()
    for file, text in sources:
        try:
            doc = TomlDoc.parse(text, file)
        except LocatedError as exc:
            problems.extend([exc])
            continue
        _read_file(doc, draft, problems)
    if not sources:
        problems.add(Location("<rules>", 1, 1), "no rule files were given")
    ruleset = _Builder(draft, problems, tuple(f for f, _ in sources)).build()
    problems.raise_if_any()
    assert ruleset is not None
    return ruleset


# -- reading (per file) --------------------------------------------------------------------


@dataclass(slots=True)
class _Expr:
    """An expression's text and where it stands, for errors inside it."""

    text: str
    doc: TomlDoc
    path: PathKey

    def location(self, offset: int) -> Location:
        return _offset_location(self.doc, self.path, self.text, offset)


@dataclass(slots=True)
class _RuleDraft:
    kind: str  # "state" or "signal"
    name: str
    where: Location
    priority: int | None
    when: _Expr | None
    clear_when: _Expr | None
    on_delay: float
    off_delay: float
    show: list[_ShowDraft]
    code: int = 0
    description: str = ""
    hold_on_stale: bool = False


@dataclass(slots=True)
class _ShowDraft:
    lamp: str
    pattern: Pattern
    seconds: float | None
    where: Location


@dataclass(slots=True)
class _CounterDraft:
    name: str
    where: Location
    edge: str
    expr: _Expr | None
    increment: int
    description: str
    reset: _Expr | None = None


@dataclass(slots=True)
class _Draft:
    names: dict[tuple[str, str], tuple[str, Location]] = field(default_factory=dict)
    inputs: list[InputSpec] = field(default_factory=list)
    defines: list[tuple[str, Location, _Expr]] = field(default_factory=list)
    states: list[_RuleDraft] = field(default_factory=list)
    signals: list[_RuleDraft] = field(default_factory=list)
    counters: list[_CounterDraft] = field(default_factory=list)
    outputs: list[_RuleDraft] = field(default_factory=list)
    tower: tuple[tuple[str, ...], Location] | None = None
    unknown: tuple[int, int | None, list[_ShowDraft] | None, Location] | None = None
    broken: set[str] = field(default_factory=set)  # names whose definition has errors


def _read_file(doc: TomlDoc, draft: _Draft, problems: Problems) -> None:
    root = Table.root(doc, problems)
    inputs = root.table("inputs")
    if inputs is not None:
        for name, table in inputs.entries():
            if table is None:
                draft.broken.add(name)
            elif _claim(draft, problems, name, "input", inputs.where(name)):
                spec = _read_input(name, table)
                if spec is not None:
                    draft.inputs.append(spec)
                else:
                    draft.broken.add(name)
        inputs.finish()
    defines = root.table("define")
    if defines is not None:
        for name in list(defines.data):
            where = defines.where(name)
            expr = _expression(defines, name, required=True)
            if expr is None:
                draft.broken.add(name)
            elif _claim(draft, problems, name, "define", where):
                draft.defines.append((name, where, expr))
        defines.finish()
    for t in root.tables("state"):
        _read_rule(t, "state", draft, problems)
    for t in root.tables("signal"):
        _read_rule(t, "signal", draft, problems)
    for t in root.tables("counter"):
        _read_counter(t, draft, problems)
    for t in root.tables("output"):
        _read_output(t, draft, problems)
    tower = root.table("tower")
    if tower is not None:
        _read_tower(tower, draft, problems)
    unknown = root.table("unknown")
    if unknown is not None:
        _read_unknown(unknown, draft, problems)
    root.finish()


def _claim(draft: _Draft, problems: Problems, name: str, what: str, where: Location) -> bool:
    """Reserve `name`. Inputs, defines, signals and counters share one namespace
    (expressions read them); states and outputs each have their own."""
    if not _IDENT.match(name):
        problems.add(where, f"'{name}' cannot be a name; use letters, digits and '_' and "
                            "start with a letter, e.g. 'spindle_running'")
        return False
    if name in KEYWORDS or name in FUNCTIONS or name in STATE_NAMES or name == UNKNOWN_STATE:
        problems.add(where, f"'{name}' is a reserved word and cannot name a {what}")
        return False
    space = "expression" if what in ("input", "define", "signal", "counter") else what
    if (space, name) in draft.names:
        other, at = draft.names[(space, name)]
        problems.add(where, f"the name '{name}' is already used by the {other} at {at}")
        return False
    draft.names[(space, name)] = (what, where)
    return True


def _read_input(name: str, t: Table) -> InputSpec | None:
    type_ = t.choice("type", INPUT_TYPES)
    scale = t.number("scale", None)
    if scale is not None and type_ not in ("int", "float"):
        t.problem("scale", f"'scale' only applies to int and float inputs, not to {type_}")
        scale = None
    if scale == 0:
        t.problem("scale", "'scale' cannot be 0; every value would read as 0")
    debounce = t.duration("debounce", 0.0)
    stale_after = t.duration("stale_after", None, allow_zero=False)
    on_stale, hold_for = _on_stale(t, type_)
    description = t.string("description", "")
    t.finish()
    if type_ is None or debounce is None:
        return None
    return InputSpec(name, type_, scale, debounce, stale_after, on_stale, hold_for,
                     description or "", t.where())


def _on_stale(t: Table, type_: str | None) -> tuple[str, float]:
    value = t.take("on_stale", (str, bool), "unknown")
    if isinstance(value, bool):
        value = "true" if value else "false"
    if value is None:
        return "unknown", 0.0
    if value.startswith("hold"):
        _, _, rest = value.partition(":")
        try:
            seconds = parse_duration(rest)
        except ValueError:
            t.problem("on_stale", f"'{value}' needs a time to hold the last good value, "
                                  "e.g. 'hold:5s'")
            return "unknown", 0.0
        if seconds <= 0:
            t.problem("on_stale", "'hold' needs a time longer than zero, e.g. 'hold:5s'")
            return "unknown", 0.0
        return "hold", seconds
    if value in ("false", "true"):
        if type_ not in (None, "bool"):
            t.problem("on_stale", f"on_stale = {value} only fits a bool input, not {type_}; "
                                  "use 'unknown' or 'hold:5s'")
            return "unknown", 0.0
        return value, 0.0
    if value != "unknown":
        hint = did_you_mean(value, ("unknown", "false", "true", "hold:5s"))
        t.problem("on_stale", f"'on_stale' cannot be '{value}'"
                              f"{hint or '; use unknown, false, true or hold:5s'}")
    return "unknown", 0.0


def _expression(t: Table, key: str, *, required: bool) -> _Expr | None:
    """An expression string (a TOML boolean counts as the literal true/false)."""
    value = t.take(key, (str, bool), REQUIRED if required else None)
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    return _Expr(value, t.doc, (*t.path, key))


def _delay(t: Table, key: str) -> float:
    seconds = t.duration(key, 0.0)
    if seconds is None:
        return 0.0
    if seconds > MAX_DELAY:
        t.problem(key, f"'{key}' is longer than a day; a lamp timer that long cannot be meant")
        return 0.0
    return float(seconds)


def _read_rule(t: Table, kind: str, draft: _Draft, problems: Problems) -> None:
    name = t.string("name")
    code = t.integer("code", minimum=0, maximum=MAX_CODE) if kind == "state" else 0
    priority = t.integer("priority", minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY)
    when = _expression(t, "when", required=True)
    clear_when = _expression(t, "clear_when", required=False)
    hold_on_stale = t.boolean("hold_on_stale", False)
    if hold_on_stale and clear_when is None and t.has("when"):
        t.problem("hold_on_stale", "'hold_on_stale' keeps a rule latched by 'clear_when' while "
                                   "'when' cannot be read; without 'clear_when' it has no effect")
    on_delay = _delay(t, "on_delay")
    off_delay = _delay(t, "off_delay")
    show = _read_show(t)
    description = t.string("description", "")
    t.finish()
    if not isinstance(name, str):
        return
    where = t.value_where("name")
    if not _claim(draft, problems, name, kind, where):
        return
    rule = _RuleDraft(kind, name, where, priority, when, clear_when, on_delay, off_delay,
                      show, code if isinstance(code, int) else 0, description or "",
                      hold_on_stale is True)
    (draft.states if kind == "state" else draft.signals).append(rule)


def _read_show(t: Table) -> list[_ShowDraft]:
    show = t.table("show")
    out: list[_ShowDraft] = []
    if show is None:
        return out
    for lamp in list(show.data):
        text = show.string(lamp)
        if not isinstance(text, str):
            continue
        where = show.value_where(lamp)
        if lamp not in LAMPS:
            show.problems.add(show.where(lamp), f"there is no lamp '{lamp}'"
                              f"{did_you_mean(lamp, LAMPS) or '; lamps are ' + ', '.join(LAMPS)}")
            continue
        parsed = _pattern(text, show, lamp)
        if parsed is not None:
            out.append(_ShowDraft(lamp, parsed[0], parsed[1], where))
    show.finish()
    return out


def _pattern(text: str, t: Table, lamp: str) -> tuple[Pattern, float | None] | None:
    name, colon, rest = text.partition(":")
    name = name.strip()
    if name not in PATTERNS:
        hint = did_you_mean(name, PATTERNS) or f"; use one of {', '.join(PATTERNS)}"
        t.problem(lamp, f"'{name}' is not a lamp pattern{hint}")
        return None
    pattern = Pattern(name)
    if not colon:
        return pattern, None
    if pattern is Pattern.OFF:
        t.problem(lamp, "'off' cannot be timed; a timed pattern lights the lamp for a while, "
                        "e.g. 'on:5s'")
        return None
    try:
        seconds = parse_duration(rest)
    except ValueError as exc:
        t.problem(lamp, f"after '{name}:' {exc}")
        return None
    if seconds <= 0:
        t.problem(lamp, f"'{text}' lasts no time at all; give a duration longer than zero")
        return None
    return pattern, seconds


def _read_counter(t: Table, draft: _Draft, problems: Problems) -> None:
    name = t.string("name")
    rising = _expression(t, "rising", required=False)
    falling = _expression(t, "falling", required=False)
    increment = t.integer("increment", 1, minimum=1, maximum=MAX_INCREMENT)
    reset = _expression(t, "reset", required=False)
    description = t.string("description", "")
    t.finish()
    if rising is not None and falling is not None:
        problems.add(t.value_where("falling"), "a counter counts either 'rising' or 'falling' "
                                               "edges, not both; make two counters")
    elif rising is None and falling is None:
        problems.add(t.where(), f"{t.name} needs 'rising' (or 'falling'): the condition whose "
                                "edges it counts, e.g. rising = \"part_seen\"")
    if not isinstance(name, str):
        return
    where = t.value_where("name")
    if not _claim(draft, problems, name, "counter", where):
        return
    edge = "rising" if rising is not None else "falling"
    draft.counters.append(_CounterDraft(name, where, edge, rising or falling,
                                        increment if isinstance(increment, int) else 1,
                                        description or "", reset))


def _read_output(t: Table, draft: _Draft, problems: Problems) -> None:
    name = t.string("name")
    when = _expression(t, "when", required=True)
    on_delay = _delay(t, "on_delay")
    off_delay = _delay(t, "off_delay")
    description = t.string("description", "")
    t.finish()
    if not isinstance(name, str):
        return
    where = t.value_where("name")
    if _claim(draft, problems, name, "output", where):
        draft.outputs.append(_RuleDraft("output", name, where, 0, when, None, on_delay,
                                        off_delay, [], description=description or ""))


def _read_tower(t: Table, draft: _Draft, problems: Problems) -> None:
    lamps = t.take("lamps", list)
    t.finish()
    if lamps is None:
        return
    where = t.value_where("lamps")
    if draft.tower is not None:
        problems.add(where, f"the tower's lamps are already listed at {draft.tower[1]}")
        return
    seen: list[str] = []
    for i, lamp in enumerate(lamps):
        at = t.doc.value_location((*t.path, "lamps", i))
        if not isinstance(lamp, str) or lamp not in LAMPS:
            shown = lamp if isinstance(lamp, str) else repr(lamp)
            hint = did_you_mean(shown, LAMPS) or f"; lamps are {', '.join(LAMPS)}"
            problems.add(at, f"there is no lamp '{shown}'{hint}")
        elif lamp in seen:
            problems.add(at, f"the lamp '{lamp}' is listed twice")
        else:
            seen.append(lamp)
    if not seen and not lamps:
        problems.add(where, "the tower needs at least one lamp")
    draft.tower = (tuple(seen), where)


def _read_unknown(t: Table, draft: _Draft, problems: Problems) -> None:
    code = t.integer("code", 30000, minimum=0, maximum=MAX_CODE)
    priority = t.integer("priority", None, minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY)
    show = _read_show(t)
    t.finish()
    if draft.unknown is not None:
        problems.add(t.where(), f"[unknown] is already defined at {draft.unknown[3]}")
        return
    draft.unknown = (code if isinstance(code, int) else 30000, priority,
                     show if t.has("show") else None, t.where())


# -- building (all files merged) ------------------------------------------------------------


class _Builder:
    def __init__(self, draft: _Draft, problems: Problems, files: tuple[str, ...]) -> None:
        self.draft = draft
        self.problems = problems
        self.files = files
        self.slots = SlotAllocator()
        self.symbols: dict[str, Symbol] = {}
        self.others: dict[str, str] = {}
        for (_, name), (what, _) in draft.names.items():
            if what == "state" or (what == "output" and name not in self.others):
                self.others[name] = what
        self.input_slots: list[InputSlots] = []
        self.tower = draft.tower[0] if draft.tower else LAMPS
        # inputs and defines with errors: expressions reading them are not checked further
        self.broken: set[str] = set(draft.broken)
        self.cost = 0  # operations per scan so far, bounded by MAX_COST
        self.over_budget = False
        self.windows = 0  # rolling windows so far, bounded by MAX_WINDOWS

    def build(self) -> RuleSet | None:
        if len(self.draft.inputs) > MAX_INPUTS:
            self.problems.add(self.draft.inputs[MAX_INPUTS].location,
                              f"the rules declare {len(self.draft.inputs)} inputs, more than "
                              f"{MAX_INPUTS}: each one is work in every scan, so split the "
                              "machine's rules or read fewer signals")
            return None
        for spec in self.draft.inputs:
            slots = InputSlots(spec, self.slots.take(), self.slots.take(), self.slots.take())
            self.input_slots.append(slots)
            self.symbols[spec.name] = Symbol(spec.name, spec.kind, slots.value, "input",
                                             slots.usable, slots.at)
        for sig in self.draft.signals:
            self.symbols[sig.name] = Symbol(sig.name, Kind.BOOL, self.slots.take(), "signal",
                                            at_slot=self.slots.take())
        for cd in self.draft.counters:
            self.symbols[cd.name] = Symbol(cd.name, Kind.NUM, self.slots.take(), "counter")
        state_slots = (self.slots.take(), self.slots.take(), self.slots.take())
        for (name, kind), slot in zip(STATE_NAMES.items(), state_slots, strict=True):
            self.symbols[name] = Symbol(name, kind, slot, "state")
        derived = self.derived_in_order()
        states = [r for r in (self.rule(d) for d in self.draft.states) if r is not None]
        self.check_state_cycles(derived, states)
        counters = [c for c in (self.counter(d) for d in self.draft.counters) if c is not None]
        outputs = [o for o in (self.output(d, derived) for d in self.draft.outputs)
                   if o is not None]
        self.check_priorities()
        if not self.draft.states and not self.problems:
            first = self.files[0] if self.files else "<rules>"
            self.problems.add(Location(first, 1, 1), "the rules define no [[state]]; the "
                              "machine state would always be unknown")
        unknown = self.unknown()
        if self.problems:
            return None
        states.sort(key=lambda s: -s.priority)
        defines = tuple(d for d in derived if isinstance(d, Define))
        signals = tuple(d for d in derived if isinstance(d, Rule))
        inputs = {s.name: s for s in self.draft.inputs}
        return RuleSet(
            inputs=inputs, defines=defines, states=tuple(states), signals=signals,
            counters=tuple(counters), tower_lamps=self.tower, unknown=unknown,
            fingerprint=_fingerprint(inputs.values(), defines, states, signals, counters,
                                     self.tower, unknown, outputs),
            files=self.files, outputs=tuple(outputs), input_slots=tuple(self.input_slots),
            derived=tuple(derived), slot_count=self.slots.count, state_slots=state_slots,
        )

    # -- expressions -----------------------------------------------------------------------
    def parse(self, expr: _Expr) -> Node | None:
        try:
            return parse(expr.text)
        except ExpressionError as exc:
            self.problems.add(expr.location(exc.offset), exc.message)
            return None

    def compile(self, expr: _Expr, tree: Node | None, want: Kind | None, role: str) -> Compiled | None:
        if tree is None or any(n.name in self.broken for n in names_in(tree)):
            return None
        try:
            compiled = compile_tree(expr.text, tree, self.symbols, self.slots, self.others)
        except ExpressionError as exc:
            self.problems.add(expr.location(exc.offset), exc.message)
            return None
        self.cost += compiled.cost
        if self.cost > MAX_COST:
            if not self.over_budget:
                self.over_budget = True
                self.problems.add(expr.location(0), f"the rules need more than {MAX_COST} "
                                  "operations per scan with this expression; a scan must stay "
                                  "short, so simplify or split the rule files")
            return None
        self.windows += len(compiled.windows)
        if compiled.windows and self.windows > MAX_WINDOWS:
            if self.windows - len(compiled.windows) <= MAX_WINDOWS:  # say it once, where
                self.problems.add(expr.location(0), f"the rules hold more than {MAX_WINDOWS} "
                                  "rolling windows (count_of, increase) with this expression; "
                                  "each keeps up to 1000 edges in memory, so share windows "
                                  "between rules through a [define]")
            return None
        if want is not None and compiled.kind is not want:
            hint = "; compare it, e.g. 'x != 0'" if compiled.kind is Kind.NUM else ""
            self.problems.add(expr.location(0), f"{role} must be {want.value}, but this is "
                                                f"{compiled.kind.value}{hint}")
            return None
        return compiled

    def derived_in_order(self) -> list[Define | Rule]:
        """Compile [define]s and signals so that each comes after the names it reads."""
        trees: dict[str, list[tuple[_Expr, Node | None]]] = {}
        where: dict[str, Location] = {}
        for name, at, expr in self.draft.defines:
            trees[name] = [(expr, self.parse(expr))]
            where[name] = at
        for sig in self.draft.signals:
            trees[sig.name] = [(e, self.parse(e)) for e in (sig.when, sig.clear_when) if e]
            where[sig.name] = sig.where
        deps = {name: [n.name for _, t in items if t is not None for n in names_in(t)
                       if n.name in trees]
                for name, items in trees.items()}
        order = self.topological(deps, where)
        defined = {name: (at, expr) for name, at, expr in self.draft.defines}
        signals = {s.name: s for s in self.draft.signals}
        out: list[Define | Rule] = []
        for name in order:
            if name in defined:
                at, expr = defined[name]
                compiled = self.compile(expr, trees[name][0][1], None, "")
                if compiled is None:
                    self.broken.add(name)
                    continue
                slot = self.slots.take()
                self.symbols[name] = Symbol(name, compiled.kind, slot, "define")
                out.append(Define(name, compiled, slot, at))
            else:
                parsed = {id(e): t for e, t in trees[name]}
                rule = self.rule(signals[name], parsed)
                if rule is not None:
                    out.append(rule)
        return out

    def topological(self, deps: dict[str, list[str]], where: dict[str, Location]) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done
        for start in deps:
            if state.get(start):
                continue
            stack: list[tuple[str, int]] = [(start, 0)]
            path: list[str] = [start]
            state[start] = 1
            while stack:
                name, i = stack[-1]
                if i < len(deps[name]):
                    stack[-1] = (name, i + 1)
                    nxt = deps[name][i]
                    if state.get(nxt) == 1:
                        cycle = path[path.index(nxt):] + [nxt]
                        self.broken.update(cycle)
                        self.problems.add(where[nxt], f"'{nxt}' depends on itself: "
                                                      f"{' -> '.join(cycle)}")
                        continue
                    if not state.get(nxt):
                        state[nxt] = 1
                        stack.append((nxt, 0))
                        path.append(nxt)
                    continue
                stack.pop()
                path.pop()
                state[name] = 2
                order.append(name)
        return order

    # -- rules -----------------------------------------------------------------------------
    def rule(self, d: _RuleDraft, parsed: dict[int, Node | None] | None = None) -> Rule | None:
        def tree(e: _Expr) -> Node | None:
            return parsed[id(e)] if parsed is not None else self.parse(e)

        when = self.compile(d.when, tree(d.when), Kind.BOOL, "'when'") if d.when else None
        clear = (self.compile(d.clear_when, tree(d.clear_when), Kind.BOOL, "'clear_when'")
                 if d.clear_when else None)
        show = self.show(d.show)
        if when is None or d.priority is None or (d.clear_when and clear is None):
            return None
        sym = self.symbols[d.name] if d.kind == "signal" else None
        return Rule(d.name, d.priority, when, clear, d.on_delay, d.off_delay, show, d.code,
                    d.description, sym.slot if sym else -1, d.where, d.hold_on_stale,
                    sym.at_slot if sym else -1)

    def show(self, items: list[_ShowDraft]) -> tuple[LampShow, ...]:
        out: list[LampShow] = []
        for s in items:
            if s.lamp not in self.tower:
                at = self.draft.tower[1] if self.draft.tower else None
                self.problems.add(s.where, f"the tower has no '{s.lamp}' lamp; its lamps are "
                                           f"{', '.join(self.tower)}" + (f" (see {at})" if at else ""))
                continue
            out.append(LampShow(s.lamp, s.pattern, s.seconds))
        return tuple(out)

    def counter(self, d: _CounterDraft) -> Counter | None:
        if d.expr is None:
            return None
        compiled = self.compile(d.expr, self.parse(d.expr), Kind.BOOL, f"'{d.edge}'")
        if compiled is None:
            return None
        if not compiled.reads:
            self.problems.add(d.expr.location(0), f"'{d.expr.text}' reads no input, so it never "
                                                  "changes and the counter would never count")
            return None
        reset = None
        if d.reset is not None:
            reset = self.compile(d.reset, self.parse(d.reset), Kind.BOOL, "'reset'")
            if reset is None:
                return None
        return Counter(d.name, d.edge, compiled, d.increment, d.description, d.where, reset,
                       self.symbols[d.name].slot)

    def output(self, d: _RuleDraft, derived: list[Define | Rule]) -> Output | None:
        if d.when is None:
            return None
        when = self.compile(d.when, self.parse(d.when), Kind.BOOL, "'when'")
        if when is None:
            return None
        return Output(d.name, when, d.on_delay, d.off_delay, d.description, d.where,
                      self.input_guards(when, derived))

    def input_guards(self, expr: Compiled, derived: list[Define | Rule]) -> tuple[int, ...]:
        """The usable slots of every input whose value `expr` reads, directly or through
        [define]s and signals (not through counters or the state: those are no input's value)."""
        by_name = {item.name: item for item in derived}
        todo, seen, slots = list(expr.values), set(), set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            sym = self.symbols.get(name)
            if sym is not None and sym.what == "input":
                slots.add(sym.usable_slot)
            item = by_name.get(name)
            if isinstance(item, Define):
                todo += item.expr.values
            elif isinstance(item, Rule):
                todo += item.when.values | (item.clear_when.values if item.clear_when
                                            else frozenset())
        return tuple(sorted(slots))

    def check_state_cycles(self, derived: list[Define | Rule], states: list[Rule]) -> None:
        """A state decides the machine state, so its conditions cannot read it, not even
        through [define]s and signals: that loop would make the state hold itself on."""
        via: dict[str, list[str]] = {}
        for item in derived:  # in dependency order: what an item reads is already known
            for name in sorted(_reads(item)):
                if name in STATE_NAMES:
                    via[item.name] = [item.name, name]
                elif name in via:
                    via[item.name] = [item.name, *via[name]]
                if item.name in via:
                    break
        for rule in states:
            for expr, text in ((rule.when, "when"), (rule.clear_when, "clear_when")):
                if expr is None:
                    continue
                hit = next((n for n in sorted(expr.reads) if n in STATE_NAMES or n in via), None)
                if hit is None:
                    continue
                path = [hit] if hit in STATE_NAMES else via[hit]
                draft = next(d for d in self.draft.states if d.name == rule.name)
                source = draft.when if text == "when" else draft.clear_when
                assert source is not None
                where = source.location(_name_offset(source.text, hit))
                self.problems.add(where, f"state '{rule.name}' reads the machine state it "
                                  f"decides: state '{rule.name}' -> {' -> '.join(path)}; a state's "
                                  "conditions cannot depend on the state (signals, outputs and "
                                  "counters can)")
                break

    def check_priorities(self) -> None:
        """States need distinct priorities; on one lamp no two entries may tie."""
        def order(r: _RuleDraft) -> tuple[str, int, int]:
            return (r.where.file, r.where.line, r.where.col)

        by_priority: dict[int, _RuleDraft] = {}
        lamp_owner: dict[tuple[str, int], _RuleDraft] = {}
        for s in sorted(self.draft.states, key=order):
            if s.priority is None:
                continue
            other = by_priority.get(s.priority)
            if other is not None:
                self.problems.add(s.where, f"state '{s.name}' has the same priority "
                                  f"{s.priority} as state '{other.name}' at {other.where}; "
                                  "exactly one state must win, so give each its own priority")
            else:
                by_priority[s.priority] = s
            for show in s.show:
                lamp_owner.setdefault((show.lamp, s.priority), s)
        for sig in sorted(self.draft.signals, key=order):
            if sig.priority is None:
                continue
            for show in sig.show:
                other = lamp_owner.setdefault((show.lamp, sig.priority), sig)
                if other is not sig:
                    self.problems.add(show.where, f"signal '{sig.name}' and {other.kind} "
                                      f"'{other.name}' (at {other.where}) both show the "
                                      f"{show.lamp} lamp at priority {sig.priority}; give one "
                                      "a different priority")

    def unknown(self) -> UnknownState:
        if self.draft.unknown is None:
            if "amber" in self.tower:
                return UnknownState()
            return UnknownState(show=())
        code, priority, show, _ = self.draft.unknown
        if show is None:
            return UnknownState(code, UnknownState().show if "amber" in self.tower else (),
                                priority)
        return UnknownState(code, self.show(show), priority)


def _reads(item: Define | Rule) -> frozenset[str]:
    if isinstance(item, Define):
        return item.expr.reads
    return item.when.reads | (item.clear_when.reads if item.clear_when else frozenset())


def _name_offset(text: str, name: str) -> int:
    try:
        return next((n.pos for n in names_in(parse(text)) if n.name == name), 0)
    except ExpressionError:
        return 0


def _offset_location(doc: TomlDoc, path: PathKey, text: str, offset: int) -> Location:
    """The file position of character `offset` of the expression string at `path`.

    Counts escapes in basic strings ("a \\"b\\"") and lines in multi-line strings, so the
    column is the one an editor shows.
    """
    offset = max(0, min(offset, len(text)))
    start = doc.value_location(path)
    lines = doc.text.split("\n")  # the positions count "\n" only, as TOML does
    if not 0 < start.line <= len(lines):
        return start
    line_text = lines[start.line - 1]
    i = start.col - 1
    if line_text[i : i + 3] in ('"""', "'''"):
        before = text[:offset]
        down = before.count("\n")
        if line_text[i + 3 :].strip() == "":
            down += 1  # TOML drops a newline right after the opening quotes
        if down == 0:
            return Location(doc.file, start.line, start.col + 3 + offset)
        col = offset - before.rfind("\n") if "\n" in before else offset + 1
        return Location(doc.file, start.line + down, col)
    quote = line_text[i : i + 1]
    if quote == "'":
        return Location(doc.file, start.line, start.col + 1 + offset)
    if quote != '"':
        return start
    raw, n = i + 1, 0
    while n < offset and raw < len(line_text):
        if line_text[raw] == "\\":
            raw += {"u": 6, "U": 10}.get(line_text[raw + 1 : raw + 2], 2)
        else:
            raw += 1
        n += 1
    return Location(doc.file, start.line, raw + 1)


def _fingerprint(inputs: Iterable[InputSpec], defines: Iterable[Define], states: Iterable[Rule],
                 signals: Iterable[Rule], counters: Iterable[Counter], tower: tuple[str, ...],
                 unknown: UnknownState, outputs: Iterable[Output] = ()) -> str:
    parts: list[Any] = [i.key for i in sorted(inputs, key=lambda i: i.name)]
    parts += sorted(d.key for d in defines)
    parts += sorted("state " + s.key for s in states)
    parts += sorted("signal " + s.key for s in signals)
    parts += sorted(c.key for c in counters)
    parts += sorted(o.key for o in outputs)
    parts.append("tower " + " ".join(tower))
    parts.append(f"unknown {unknown.code} {unknown.priority} "
                 + " ".join(str(s) for s in unknown.show))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
