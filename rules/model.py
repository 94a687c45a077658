"""The validated rule set: frozen dataclasses the loader builds and the evaluator runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from linelight.rules.compiler import Compiled, Kind
from linelight.rules.errors import Location
from linelight.rules.values import Pattern

INPUT_TYPES = ("bool", "int", "float", "string")
ON_STALE = ("unknown", "false", "true", "hold")
UNKNOWN_STATE = "unknown"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input the rules read. `on_stale` is unknown | false | true | hold (`hold_for` seconds)."""

    name: str
    type: str
    scale: float | None = None
    debounce: float = 0.0
    stale_after: float | None = None
    on_stale: str = "unknown"
    hold_for: float = 0.0
    description: str = ""
    location: Location = field(default=Location("", 0, 0), compare=False)

    @property
    def kind(self) -> Kind:
        if self.type == "bool":
            return Kind.BOOL
        return Kind.STR if self.type == "string" else Kind.NUM

    @property
    def key(self) -> str:
        return (f"input {self.name} {self.type} {self.scale} {self.debounce} {self.stale_after} "
                f"{self.on_stale} {self.hold_for}")


@dataclass(frozen=True, slots=True)
class LampShow:
    """One lamp's pattern for a state or signal; `seconds` limits a timed pattern (`on:5s`)."""

    lamp: str
    pattern: Pattern
    seconds: float | None = None

    def __str__(self) -> str:
        tail = f":{self.seconds:g}s" if self.seconds is not None else ""
        return f"{self.lamp}={self.pattern.value}{tail}"


@dataclass(frozen=True, slots=True)
class Define:
    """A named expression (`[define]`) other expressions can read."""

    name: str
    expr: Compiled
    slot: int = field(compare=False)
    location: Location = field(compare=False)

    @property
    def key(self) -> str:
        return f"define {self.name} {self.expr.text}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A `[[state]]` or `[[signal]]`: a condition with timers, hysteresis and lamps."""

    name: str
    priority: int
    when: Compiled
    clear_when: Compiled | None
    on_delay: float
    off_delay: float
    show: tuple[LampShow, ...]
    code: int = 0  # states only
    description: str = ""
    slot: int = field(default=-1, compare=False)  # signals only: where expressions read it
    location: Location = field(default=Location("", 0, 0), compare=False)
    hold_on_stale: bool = False  # stay latched while `when` cannot be read (opt-in)
    since_slot: int = field(default=-1, compare=False)  # signals: since when on (on_for)

    @property
    def key(self) -> str:
        clear = self.clear_when.text if self.clear_when else "-"
        lamps = " ".join(str(s) for s in self.show)
        hold = " hold_on_stale" if self.hold_on_stale else ""
        return (f"{self.name} {self.code} {self.priority} {self.when.text} {clear}{hold} "
                f"{self.on_delay} {self.off_delay} {lamps}")


@dataclass(frozen=True, slots=True)
class Counter:
    """A `[[counter]]`: adds `increment` on each rising (or falling) edge of `expr`."""

    name: str
    edge: str  # "rising" or "falling"
    expr: Compiled
    increment: int = 1
    description: str = ""
    location: Location = field(default=Location("", 0, 0), compare=False)
    reset: Compiled | None = None  # its rising edge sets the total to 0
    slot: int = field(default=-1, compare=False)  # where expressions read the total

    @property
    def key(self) -> str:
        reset = self.reset.text if self.reset else "-"
        return f"counter {self.name} {self.edge} {self.expr.text} {self.increment} {reset}"


@dataclass(frozen=True, slots=True)
class Output:
    """An `[[output]]`: a named digital output, on while `when` is true (after its delays).

    Fails safe: while `when` is unknown, or any input whose value it reads (directly or
    through defines and signals) is stale, bad or missing whatever its `on_stale`, the output
    is off. `guards` are those inputs' usable slots."""

    name: str
    when: Compiled
    on_delay: float = 0.0
    off_delay: float = 0.0
    description: str = ""
    location: Location = field(default=Location("", 0, 0), compare=False)
    guards: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"output {self.name} {self.when.text} {self.on_delay} {self.off_delay}"


@dataclass(frozen=True, slots=True)
class UnknownState:
    """What the tower shows when the machine state cannot be known (`[unknown]`)."""

    code: int = 30000
    show: tuple[LampShow, ...] = (LampShow("amber", Pattern.BLINK_SLOW),)
    priority: int | None = None  # None: the unknown state's lamps outrank every signal


@dataclass(frozen=True, slots=True)
class InputSlots:
    """Where one input's value, usable flag and sample time live in the evaluator's slots."""

    spec: InputSpec
    value: int
    usable: int
    at: int


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A validated, compiled rule set. `states` are sorted by priority, highest first."""

    inputs: Mapping[str, InputSpec]
    defines: tuple[Define, ...]
    states: tuple[Rule, ...]
    signals: tuple[Rule, ...]
    counters: tuple[Counter, ...]
    tower_lamps: tuple[str, ...]
    unknown: UnknownState
    fingerprint: str
    files: tuple[str, ...] = ()
    outputs: tuple[Output, ...] = ()
    # evaluation plan: slot layout and the order derived values are computed in
    input_slots: tuple[InputSlots, ...] = field(default=(), compare=False, repr=False)
    derived: tuple[Define | Rule, ...] = field(default=(), compare=False, repr=False)
    slot_count: int = field(default=1, compare=False, repr=False)
    # where expressions read the previous scan's state name, code and seconds in state
    state_slots: tuple[int, int, int] = field(default=(-1, -1, -1), compare=False, repr=False)

    def state(self, name: str) -> Rule | None:
        return next((s for s in self.states if s.name == name), None)
