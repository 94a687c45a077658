"""Type-check a condition's syntax tree and compile it to plain Python closures.

A compiled condition reads and writes one flat list of slots owned by the evaluator: slot 0
holds `now`, each input has a value, a usable flag and a sample time, each [define] and
[[signal]] has a value, and each edge function (`rising`, `falling`, `changed`) has an output
slot and a memory slot, each rolling window (`count_of`, `increase`) a slot holding its
`rules.windows.Window`. The machine state (`state`, `state_code`, `state_for`) and counter
totals are written at the end of a scan, so expressions read the previous scan's result, as
in a PLC. Values are three-valued: `None` means unknown and propagates, except
that `false and unknown` is false and `true or unknown` is true (Kleene logic).

No text is ever handed to eval/exec/compile; the only operations reachable are the ones below.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from linelight.rules.expressions import (
    Binary,
    Call,
    ExpressionError,
    Literal,
    Member,
    Name,
    Node,
    Unary,
    chain,
    children,
    unparse,
)
from linelight.rules.fields import MAX_INT, did_you_mean
from linelight.rules.windows import MAX_WIDTH

Slots = list[Any]
Fn = Callable[[Slots], Any]
Update = Callable[[Slots], None]
NOW_SLOT = 0


class Kind(enum.Enum):
    """The static type of an expression."""

    BOOL = "a condition (true or false)"
    NUM = "a number"
    STR = "a text"


@dataclass(frozen=True, slots=True)
class Symbol:
    """A name an expression may read: an input, a [define] or a [[signal]]."""

    name: str
    kind: Kind
    slot: int
    what: str  # "input", "define", "signal", "state" (the machine state), "counter"
    usable_slot: int = -1  # inputs only: True while the input has a good, fresh value
    at_slot: int = -1  # inputs: the sample's `at`; signals: since when on; or None


# What expressions read of the machine state (the previous scan's): its name, code, seconds.
STATE_NAMES = {"state": Kind.STR, "state_code": Kind.NUM, "state_for": Kind.NUM}


class SlotAllocator:
    """Hands out slot numbers (slot 0 is `now`) and the rule set's shared leaf functions.

    A compiled rule set lives as long as the agent runs it, and each of its objects is one
    more for Python's garbage collector to scan once after a reload (agent/heap.py; the
    collection holds the event loop). So the compiled functions take what they use as
    default arguments, not closure cells (one object less per captured name), and the
    leaves are shared: every read of one slot is the same `itemgetter`, every equal literal
    the same function (a 326 KiB rule file: 72,000 tracked objects with a closure per
    node, docs/benchmarks.md "reload stall").
    """

    def __init__(self) -> None:
        self.count = 1
        self._readers: dict[int, Fn] = {}
        self._constants: dict[tuple[type, str], Fn] = {}

    def take(self) -> int:
        self.count += 1
        return self.count - 1

    def reader(self, slot: int) -> Fn:
        """`v[slot]`, one function per slot."""
        fn = self._readers.get(slot)
        if fn is None:
            fn = self._readers[slot] = operator.itemgetter(slot)
        return fn

    def constant(self, value: Any) -> Fn:
        """A function that returns `value`, one per value (keyed by type and repr, so
        1, 1.0 and True, or 0.0 and -0.0, stay apart)."""
        key = (type(value), repr(value))
        fn = self._constants.get(key)
        if fn is None:
            fn = self._constants[key] = _constant(value)
        return fn


@dataclass(frozen=True, slots=True)
class Compiled:
    """A type-checked, compiled expression. `text` is its canonical form (for identity)."""

    source: str
    text: str
    kind: Kind
    reads: frozenset[str]
    fn: Fn = field(compare=False, repr=False)
    updates: tuple[Update, ...] = field(compare=False, repr=False, default=())
    memory: tuple[int, ...] = field(compare=False, repr=False, default=())
    cost: int = field(compare=False, repr=False, default=0)  # operations per evaluation
    # rolling windows: (identity, slot of its Window, width in seconds); the identity is the
    # call's canonical text, so equal calls hold equal data
    windows: tuple[tuple[str, int, float], ...] = field(compare=False, repr=False, default=())
    # `increase` windows: (counter name, slot of its Window), fed by the counter's increments
    feeds: tuple[tuple[str, int], ...] = field(compare=False, repr=False, default=())
    # names whose value it reads: `reads` without those only stale(), age() or known() look at
    values: frozenset[str] = field(compare=False, repr=False, default=frozenset())

    def evaluate(self, v: Slots) -> Any:
        """Run the edge functions' bookkeeping (every scan, never short-circuited), then the value."""
        for update in self.updates:
            update(v)
        return self.fn(v)


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    low: int
    high: int | None
    usage: str
    doc: str


FUNCTIONS: dict[str, FunctionInfo] = {
    "between": FunctionInfo(3, 3, "between(x, low, high)", "true when low <= x <= high"),
    "rising": FunctionInfo(1, 1, "rising(c)", "true for one scan when c turns from false to true"),
    "falling": FunctionInfo(1, 1, "falling(c)", "true for one scan when c turns from true to false"),
    "changed": FunctionInfo(1, 1, "changed(x)", "true for one scan when x differs from its last known value"),
    "stale": FunctionInfo(1, 1, "stale(input)", "true while the input is stale, bad or never received; never unknown"),
    "age": FunctionInfo(1, 1, "age(input)", "seconds since the input's last sample; unknown before the first"),
    "known": FunctionInfo(1, 1, "known(x)", "true when x is not unknown; never unknown"),
    "abs": FunctionInfo(1, 1, "abs(x)", "absolute value"),
    "min": FunctionInfo(2, None, "min(a, b, ...)", "the smallest argument"),
    "max": FunctionInfo(2, None, "max(a, b, ...)", "the largest argument"),
    "bit": FunctionInfo(2, 2, "bit(x, n)", "bit n (0 = least significant) of the integer x, as a condition"),
    "on_for": FunctionInfo(1, 1, "on_for(signal)", "seconds the signal has been on; 0 while off"),
    "count_of": FunctionInfo(2, 2, "count_of(c, 10m)", "rising edges of c within the last 10 minutes"),
    "increase": FunctionInfo(2, 2, "increase(counter, 10m)", "what the counter counted within the last 10 minutes"),
}

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def names_in(node: Node) -> Iterator[Name]:
    """Every Name read by `node`, in source order (function names are not Names)."""
    stack = [node]
    while stack:  # a loop, not recursion: a chain of 2,000 terms is one long left side
        n = stack.pop()
        if isinstance(n, Name):
            yield n
        else:
            stack.extend(reversed(children(n)))


def compile_tree(
    source: str,
    tree: Node,
    symbols: Mapping[str, Symbol],
    slots: SlotAllocator,
    others: Mapping[str, str],
) -> Compiled:
    """Type-check and compile `tree`; raises ExpressionError at the offending node.

    `others` maps names that exist but cannot be read (states, counters) to what they are,
    so the error can say so instead of "unknown".
    """
    c = _Compiler(symbols, slots, others)
    kind, fn = c.node(tree)
    return Compiled(source, unparse(tree), kind, frozenset(c.reads), fn,
                    tuple(c.updates), tuple(c.memory), c.cost, tuple(c.windows), tuple(c.feeds),
                    frozenset(c.values))


class _Compiler:
    def __init__(self, symbols: Mapping[str, Symbol], slots: SlotAllocator,
                 others: Mapping[str, str]) -> None:
        self.symbols = symbols
        self.slots = slots
        self.others = others
        self.reads: set[str] = set()
        self.values: set[str] = set()  # read as a value (not only through stale/age/known)
        self.updates: list[Update] = []
        self.memory: list[int] = []
        self.windows: list[tuple[str, int, float]] = []
        self.feeds: list[tuple[str, int]] = []
        self.cost = 0

    def node(self, n: Node) -> tuple[Kind, Fn]:
        self.cost += 1 + (len(chain(n)) if isinstance(n, Binary) else 0)
        if isinstance(n, Literal):
            return self.literal(n)
        if isinstance(n, Name):
            sym = self.symbol(n)
            self.values.add(n.name)
            return sym.kind, self.slots.reader(sym.slot)
        if isinstance(n, Unary):
            return self.unary(n)
        if isinstance(n, Binary):
            if n.op in ("and", "or"):
                return self.logic(n)
            if n.op in _CMP:
                return self.compare(n)
            return self.arithmetic(n)
        if isinstance(n, Member):
            return self.member(n)
        if isinstance(n, Call):
            return self.call(n)
        raise ExpressionError(n.pos, "this is not an expression")

    # -- leaves ----------------------------------------------------------------------------
    def literal(self, n: Literal) -> tuple[Kind, Fn]:
        value = n.value
        if isinstance(value, bool):
            kind = Kind.BOOL
        elif isinstance(value, str):
            kind = Kind.STR
        else:
            kind = Kind.NUM
        return kind, self.slots.constant(value)

    def symbol(self, n: Name) -> Symbol:
        sym = self.symbols.get(n.name)
        if sym is not None:
            self.reads.add(n.name)
            return sym
        if n.name in FUNCTIONS:
            raise ExpressionError(n.pos, f"'{n.name}' is a function; write "
                                  f"{FUNCTIONS[n.name].usage}")
        what = self.others.get(n.name)
        if what == "state":
            raise ExpressionError(n.pos, f"'{n.name}' is a state; to read the machine state "
                                  f"write state == \"{n.name}\"")
        if what is not None:
            article = "an" if what[0] in "aeiou" else "a"
            raise ExpressionError(n.pos, f"'{n.name}' is {article} {what}; expressions can read "
                                  "inputs, "
                                  "[define] names, signals, counters and the machine state")
        raise ExpressionError(n.pos, f"unknown input '{n.name}'{did_you_mean(n.name, self.symbols)}")

    def input_symbol(self, n: Node, func: str) -> Symbol:
        if not isinstance(n, Name):
            raise ExpressionError(n.pos, f"{func}() needs the plain name of an input, "
                                  f"e.g. {FUNCTIONS[func].usage}")
        sym = self.symbol(n)
        if sym.what != "input":
            raise ExpressionError(n.pos, f"{func}() needs an input, but '{n.name}' is a {sym.what}")
        return sym

    # -- operators -------------------------------------------------------------------------
    def expect(self, n: Node, kind: Kind, context: str) -> Fn:
        got, fn = self.node(n)
        if got is not kind:
            hint = ""
            if kind is Kind.BOOL and got is Kind.NUM:
                text = unparse(n) if not isinstance(n, Name) else n.name
                hint = f"; compare it, e.g. '{text} != 0'"
            raise ExpressionError(n.pos, f"{context} needs {kind.value}, but this is "
                                  f"{got.value}{hint}")
        return fn

    def unary(self, n: Unary) -> tuple[Kind, Fn]:
        if n.op == "not":
            g = self.expect(n.operand, Kind.BOOL, "'not'")

            def not_(v: Slots, g: Fn = g) -> Any:
                x = g(v)
                return None if x is None else not x

            return Kind.BOOL, not_
        g = self.expect(n.operand, Kind.NUM, "'-'")

        def neg(v: Slots, g: Fn = g) -> Any:
            x = g(v)
            return None if x is None else _in_range(-x)

        return Kind.NUM, neg

    def logic(self, n: Binary) -> tuple[Kind, Fn]:
        links = chain(n)  # `a and b and c ...` as one loop: a long chain is not a deep tree
        fns = [self.expect(links[-1].left, Kind.BOOL, f"'{n.op}'")]
        fns += [self.expect(b.right, Kind.BOOL, f"'{n.op}'") for b in reversed(links)]
        operands = tuple(fns)
        # Kleene logic: `false and unknown` is false, `true or unknown` is true
        decisive = n.op == "or"

        def logic(v: Slots, operands: tuple[Fn, ...] = operands,
                  decisive: bool = decisive) -> Any:
            unknown = False
            for f in operands:
                x = f(v)
                if x is decisive:
                    return decisive
                if x is None:
                    unknown = True
            return None if unknown else not decisive

        return Kind.BOOL, logic

    def compare(self, n: Binary) -> tuple[Kind, Fn]:
        lk, a = self.node(n.left)
        rk, b = self.node(n.right)
        if lk is not rk:
            raise ExpressionError(n.pos, f"'{n.op}' cannot compare {lk.value} with {rk.value}")
        if n.op not in ("==", "!=") and lk is not Kind.NUM:
            raise ExpressionError(n.pos, f"'{n.op}' needs numbers on both sides, not {lk.value}")
        op = _CMP[n.op]

        def cmp(v: Slots, a: Fn = a, b: Fn = b, op: Callable[[Any, Any], bool] = op) -> Any:
            x = a(v)
            if x is None:
                return None
            y = b(v)
            if y is None:
                return None
            return op(x, y)

        return Kind.BOOL, cmp

    def arithmetic(self, n: Binary) -> tuple[Kind, Fn]:
        links = chain(n)  # `a + b - c ...` folded left to right in a loop
        first = self.expect(links[-1].left, Kind.NUM, f"'{links[-1].op}'")
        steps = tuple((_ARITH[b.op], b.op in ("/", "%"), self.expect(b.right, Kind.NUM, f"'{b.op}'"))
                      for b in reversed(links))

        def arith(v: Slots, first: Fn = first,
                  steps: tuple[tuple[Callable[[Any, Any], Any], bool, Fn], ...] = steps) -> Any:
            x = first(v)
            for op, divides, g in steps:
                if x is None:
                    return None
                y = g(v)
                if y is None or (divides and y == 0):
                    return None  # division by zero is unknown, never an exception
                x = _bounded(op, x, y)
            return x

        return Kind.NUM, arith

    def member(self, n: Member) -> tuple[Kind, Fn]:
        kind, a = self.node(n.operand)
        choices: list[Fn] = []
        for c in n.choices:
            ck, fn = self.node(c)
            if ck is not kind:
                raise ExpressionError(c.pos, f"this choice is {ck.value} but the value before "
                                      f"'in' is {kind.value}")
            choices.append(fn)
        negated = n.negated
        fns = tuple(choices)

        def member(v: Slots, a: Fn = a, fns: tuple[Fn, ...] = fns,
                   negated: bool = negated) -> Any:
            x = a(v)
            if x is None:
                return None
            unknown = False
            for fn in fns:
                y = fn(v)
                if y is None:
                    unknown = True
                elif x == y:
                    return not negated
            return None if unknown else negated

        return Kind.BOOL, member

    # -- functions -------------------------------------------------------------------------
    def call(self, n: Call) -> tuple[Kind, Fn]:
        info = FUNCTIONS.get(n.func)
        if info is None:
            if n.func in self.symbols:
                raise ExpressionError(n.pos, f"'{n.func}' is not a function; '(' after a name "
                                      "calls a function")
            raise ExpressionError(n.pos, f"unknown function '{n.func}'"
                                  f"{did_you_mean(n.func, FUNCTIONS)}")
        count = len(n.args)
        if count < info.low or (info.high is not None and count > info.high):
            want = (f"{info.low}" if info.high == info.low else
                    f"at least {info.low}" if info.high is None else f"{info.low} to {info.high}")
            plural = "s" if info.low != 1 or info.high != 1 else ""
            raise ExpressionError(n.pos, f"{n.func}() takes {want} argument{plural}, not "
                                  f"{count}: write {info.usage}")
        handler: Callable[[Call], tuple[Kind, Fn]] = getattr(self, f"fn_{n.func}")
        return handler(n)

    def numbers(self, n: Call) -> list[Fn]:
        return [self.expect(a, Kind.NUM, f"{n.func}()") for a in n.args]

    def fn_between(self, n: Call) -> tuple[Kind, Fn]:
        x, lo, hi = self.numbers(n)

        def between(v: Slots, x: Fn = x, lo: Fn = lo, hi: Fn = hi) -> Any:
            a, b, c = x(v), lo(v), hi(v)
            if a is None or b is None or c is None:
                return None
            return bool(b <= a <= c)

        return Kind.BOOL, between

    def fn_abs(self, n: Call) -> tuple[Kind, Fn]:
        (x,) = self.numbers(n)

        def abs_(v: Slots, x: Fn = x) -> Any:
            a = x(v)
            return None if a is None else _in_range(abs(a))

        return Kind.NUM, abs_

    def fn_min(self, n: Call) -> tuple[Kind, Fn]:
        return Kind.NUM, _fold(self.numbers(n), min)

    def fn_max(self, n: Call) -> tuple[Kind, Fn]:
        return Kind.NUM, _fold(self.numbers(n), max)

    def fn_bit(self, n: Call) -> tuple[Kind, Fn]:
        x = self.expect(n.args[0], Kind.NUM, "bit()")
        index = n.args[1]
        if not (isinstance(index, Literal) and type(index.value) is int and 0 <= index.value <= 63):
            raise ExpressionError(index.pos, "bit() needs a bit number from 0 to 63 written "
                                  "as a plain number, e.g. bit(status_word, 3)")
        shift = index.value

        def bit(v: Slots, x: Fn = x, shift: int = shift) -> Any:
            a = x(v)
            if a is None or (isinstance(a, float) and not a.is_integer()):
                return None
            return (int(a) >> shift) & 1 == 1

        return Kind.BOOL, bit

    def fn_known(self, n: Call) -> tuple[Kind, Fn]:
        values = set(self.values)
        _, x = self.node(n.args[0])
        self.values = values  # known(x) reads whether x can be read, not what it is

        def known(v: Slots, x: Fn = x) -> Any:
            return x(v) is not None

        return Kind.BOOL, known

    def fn_stale(self, n: Call) -> tuple[Kind, Fn]:
        slot = self.input_symbol(n.args[0], "stale").usable_slot

        def stale(v: Slots, slot: int = slot) -> Any:
            return not v[slot]

        return Kind.BOOL, stale

    def fn_age(self, n: Call) -> tuple[Kind, Fn]:
        slot = self.input_symbol(n.args[0], "age").at_slot

        def age(v: Slots, slot: int = slot) -> Any:
            at = v[slot]
            return None if at is None else v[NOW_SLOT] - at

        return Kind.NUM, age

    def fn_rising(self, n: Call) -> tuple[Kind, Fn]:
        x = self.expect(n.args[0], Kind.BOOL, "rising()")
        return Kind.BOOL, self.edge(x, _rose)

    def fn_falling(self, n: Call) -> tuple[Kind, Fn]:
        x = self.expect(n.args[0], Kind.BOOL, "falling()")
        return Kind.BOOL, self.edge(x, _fell)

    def fn_changed(self, n: Call) -> tuple[Kind, Fn]:
        _, x = self.node(n.args[0])
        return Kind.BOOL, self.edge(x, _differs)

    def named(self, n: Call, what: str, example: str) -> Symbol:
        """The first argument of `n`, which must be the plain name of a `what`."""
        arg = n.args[0]
        sym = self.symbol(arg) if isinstance(arg, Name) else None
        if sym is None or sym.what != what:
            raise ExpressionError(arg.pos, f"{n.func}() needs the name of a {what}, "
                                  f"e.g. {example}")
        return sym

    def fn_on_for(self, n: Call) -> tuple[Kind, Fn]:
        since = self.named(n, "signal", "on_for(door_open)").at_slot

        def on_for(v: Slots, since: int = since) -> Any:
            at = v[since]
            return 0.0 if at is None else v[NOW_SLOT] - at

        return Kind.NUM, on_for

    def width(self, n: Call) -> float:
        arg = n.args[1]
        if not (isinstance(arg, Literal) and type(arg.value) in (int, float)
                and 0 < float(arg.value) <= MAX_WIDTH):
            raise ExpressionError(arg.pos, f"{n.func}() needs a window written as a duration "
                                  f"longer than zero and at most a day, e.g. "
                                  f"{FUNCTIONS[n.func].usage}")
        return float(arg.value)

    def fn_count_of(self, n: Call) -> tuple[Kind, Fn]:
        x = self.expect(n.args[0], Kind.BOOL, "count_of()")
        width = self.width(n)
        last = self.slots.take()
        slot = self.window(n, width)

        def update(v: Slots, x: Fn = x, last: int = last, slot: int = slot) -> None:
            cur = x(v)
            if cur is None:
                return  # unknown scans are skipped: an edge compares known values
            if cur is True and v[last] is False:
                v[slot].add(v[NOW_SLOT], 1)
            v[last] = cur

        self.updates.append(update)
        self.memory.append(last)
        return Kind.NUM, _window_total(slot)

    def fn_increase(self, n: Call) -> tuple[Kind, Fn]:
        counter = self.named(n, "counter", "increase(parts, 10m)").name
        slot = self.window(n, self.width(n))
        self.feeds.append((counter, slot))  # the evaluator adds each increment as it counts
        return Kind.NUM, _window_total(slot)

    def window(self, n: Call, width: float) -> int:
        """A slot for a Window; it is memory (kept on reload) and persisted by its call text."""
        slot = self.slots.take()
        self.memory.append(slot)
        self.windows.append((unparse(n), slot, width))
        return slot

    def edge(self, x: Fn, fired: Callable[[Any, Any], bool]) -> Fn:
        """An edge compares this scan's value with the last known one (unknown scans skipped)."""
        out = self.slots.take()
        mem = self.slots.take()

        def update(v: Slots, x: Fn = x, out: int = out, mem: int = mem,
                   fired: Callable[[Any, Any], bool] = fired) -> None:
            cur = x(v)
            if cur is None:
                v[out] = None
                return
            last = v[mem]
            v[mem] = cur
            v[out] = False if last is None else fired(last, cur)

        self.updates.append(update)
        self.memory.append(mem)
        return self.slots.reader(out)


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul,
    "/": operator.truediv, "%": operator.mod,
}


def _bounded(op: Callable[[Any, Any], Any], x: Any, y: Any) -> Any:
    """`op(x, y)`, or None (unknown) when the result is out of range: a float overflow, or an
    integer beyond 64 bits. Operands are always in range, so one step costs microseconds."""
    try:
        r = op(x, y)
    except OverflowError:
        return None
    return _in_range(r)


def _in_range(r: Any) -> Any:
    if isinstance(r, float):
        return r if math.isfinite(r) else None
    return r if -MAX_INT - 1 <= r <= MAX_INT else None


def _rose(last: Any, cur: Any) -> bool:
    return last is False and cur is True


def _fell(last: Any, cur: Any) -> bool:
    return last is True and cur is False


def _differs(last: Any, cur: Any) -> bool:
    return bool(last != cur)


def _constant(value: Any) -> Fn:
    def constant(v: Slots, value: Any = value) -> Any:
        return value

    return constant


def _window_total(slot: int) -> Fn:
    def total(v: Slots, slot: int = slot) -> Any:
        return v[slot].total(v[NOW_SLOT])

    return total


def _fold(fns: list[Fn], pick: Callable[[list[Any]], Any]) -> Fn:
    def fold(v: Slots, fns: tuple[Fn, ...] = tuple(fns),
             pick: Callable[[list[Any]], Any] = pick) -> Any:
        values = [f(v) for f in fns]
        return None if any(x is None for x in values) else pick(values)

    return fold
