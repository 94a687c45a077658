"""What the demo shows: a full-screen ANSI view for a terminal, one plain line per second else.

Pure functions from a `Frame` (everything the demo knows at one instant) to text, so the
layout is testable without a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ESC = "\x1b["
RESET = ESC + "0m"
BOLD = ESC + "1m"
DIM = ESC + "2m"
HOME_CLEAR = ESC + "H" + ESC + "J"
HIDE_CURSOR = ESC + "?25l"
SHOW_CURSOR = ESC + "?25h"

LAMP_RGB = {"red": (230, 40, 40), "amber": (255, 170, 0), "green": (40, 200, 70),
            "blue": (40, 120, 255), "white": (235, 235, 235), "buzzer": (180, 60, 220)}
STATE_RGB = {"producing": (40, 200, 70), "fault": (230, 40, 40), "microstop": (255, 170, 0),
             "idle": (255, 170, 0), "unknown": (160, 160, 160)}


@dataclass(slots=True)
class MachineFrame:
    """One machine of a line (`linelight demo --line`) at one instant."""

    name: str
    phase: str
    state: str
    code: int
    state_for: float
    lamps: Mapping[str, str]
    levels: Mapping[str, bool]
    counters: Mapping[str, int]


@dataclass(slots=True)
class Frame:
    """One instant of the demo."""

    elapsed: float
    agent_id: str
    phase: str  # the simulated machine's phase
    pinned: bool  # phase chosen by a key instead of the automatic cycle
    state: str
    code: int
    state_for: float
    reason: str
    lamps: Mapping[str, str]  # lamp -> pattern name
    levels: Mapping[str, bool]  # lamp -> lit right now (blink phase)
    signals: Sequence[str]
    counters: Mapping[str, int]
    inputs: Mapping[str, Any]
    queue_depth: int
    queue_oldest: float
    seq_hwm: int
    dropped: int
    broker: str  # "connected", "down", "none"
    broker_url: str
    broker_error: str
    outage: str  # "" or a description of the outage under way / next one
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    missing: int = 0
    last_seq: int = 0
    diagnostics_url: str = ""
    rules_file: str = ""
    rules: Sequence[str] = field(default_factory=list)
    message: str = ""
    log_lines: Sequence[str] = field(default_factory=list)
    machines: Sequence[MachineFrame] = field(default_factory=list)  # a line: every machine
    selected: int = 0  # the line's machine the keys drive, shown in detail (an index)
    machine: str = ""  # its name ("" without a line)


def _rgb(rgb: tuple[int, int, int], *, bg: bool = False) -> str:
    return f"{ESC}{48 if bg else 38};2;{rgb[0]};{rgb[1]};{rgb[2]}m"


def _lamp_row(name: str, pattern: str, lit: bool) -> str:
    rgb = LAMP_RGB.get(name, (200, 200, 200))
    if name == "buzzer":
        glyph = f"{_rgb(rgb)}{BOLD} ♪♪ {RESET}" if lit else f"{DIM} ·· {RESET}"
    elif lit:
        glyph = f"{_rgb(rgb, bg=True)}    {RESET}"
    else:
        dim = tuple(c // 5 for c in rgb)
        glyph = f"{_rgb(dim, bg=True)}    {RESET}"  # type: ignore[arg-type]
    label = f"{BOLD}{pattern}{RESET}" if pattern != "off" else f"{DIM}off{RESET}"
    return f"   │{glyph}│  {name:<7} {label}"


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


KEYS = ("[o] outage", "[f] fault", "[p] producing", "[m] microstop", "[i] idle", "[a] auto",
        "[l] lamp test", "[q] quit")


def keys_for(machines: int) -> tuple[str, ...]:
    """The keys: with a line, first the digits that choose the machine the others drive."""
    return (f"[1-{machines}] machine", *KEYS) if machines else KEYS
SHORT_PATTERN = {"on": "on", "blink_slow": "slow", "blink_fast": "fast", "off": ""}


def _lamp_chip(name: str, pattern: str, lit: bool) -> str:
    """One lamp in the one-line tower of a small terminal: its colour block, name, pattern."""
    rgb = LAMP_RGB.get(name, (200, 200, 200))
    if name == "buzzer":
        glyph = f"{_rgb(rgb)}{BOLD}♪♪{RESET}" if lit else f"{DIM}··{RESET}"
    else:
        shade = rgb if lit else tuple(c // 5 for c in rgb)
        glyph = f"{_rgb(shade, bg=True)}  {RESET}"  # type: ignore[arg-type]
    short = SHORT_PATTERN.get(pattern, pattern)
    return f"{glyph} {name}" + (f" {BOLD}{short}{RESET}" if short else "")


def _key_lines(width: int, keys: Sequence[str] = KEYS) -> list[str]:
    """The keys, wrapped to the terminal's width (never cut)."""
    lines, line = [], f"   {DIM}keys:{RESET}"
    used = len("   keys:")
    for key in keys:
        if used + 2 + len(key) >= width and used > len("   keys:"):
            lines.append(line)
            line, used = "        ", 8
        line += "  " + key
        used += 2 + len(key)
    return [*lines, line]


def render_screen(f: Frame, width: int = 100, height: int = 200) -> str:
    """The full-screen view (ANSI colours), redrawn several times a second. It never scrolls:
    in a small terminal (80x24) the tower becomes one line and the rules panel shows what
    fits, so the state, queue, link, keys and log stay on screen."""
    what = (f"a line of {len(f.machines)} machines on agent" if f.machines
            else "simulated machine")
    head = [f"{BOLD} linelight demo · {what} '{f.agent_id}'{RESET}"
            f"{DIM}   running {f.elapsed:5.0f} s{RESET}"]
    if f.machines:  # one row per machine already: the same in a small terminal
        one_line_tower = _line_rows(f.machines, f.selected)
        tall_tower = [*one_line_tower,
                      f"   {DIM}below: {f.machine or f.machines[0].name}, chosen with the keys "
                      f"1-{len(f.machines)}{RESET}"]
    else:
        tall_tower = ["   ┌────┐   stack light",
                      *(_lamp_row(lamp, p, f.levels.get(lamp, False))
                        for lamp, p in f.lamps.items()),
                      "   └────┘"]
        one_line_tower = ["   tower       " + "  ".join(
            _lamp_chip(lamp, p, f.levels.get(lamp, False)) for lamp, p in f.lamps.items())]
    machine = _machine_lines(f)
    link = _link_lines(f)
    rules = [f"   {BOLD}rules{RESET} {DIM}{f.rules_file}{RESET}",
             *(f"   {line}" for line in f.rules)]
    foot = [*_key_lines(width, keys_for(len(f.machines))),
            *([f"   {BOLD}{f.message}{RESET}"] if f.message else []),
            *(f"   {DIM}log: {line}{RESET}" for line in f.log_lines)]
    budget = max(1, height - 1)
    out = [*head, "", *tall_tower, "", *machine, "", *link, "", *rules, "", *foot]
    if len(out) > budget:
        fixed = [*head, *one_line_tower, *machine, *link]
        room = budget - len(fixed) - len(foot)
        if room < len(rules) and room >= 2:
            shown = room - 1
            rules = [rules[0] + f"{DIM}  ({shown} of {len(f.rules)} shown; a taller terminal "
                                f"shows all){RESET}", *rules[1:1 + shown]]
        out = [*fixed, *(rules if room >= 2 else []), *foot]
        out = out[:max(0, budget - len(foot))] + foot if len(out) > budget else out
    return (HOME_CLEAR + "\n".join(fit(line, width) + RESET + ESC + "K" for line in out[:budget])
            + "\n")


def _machine_lines(f: Frame) -> list[str]:
    state_rgb = STATE_RGB.get(f.state, (220, 220, 220))
    mode = ("pinned by a key; [a] resumes the cycle" if f.pinned else
            "auto cycle: producing → microstop → producing → fault → idle")
    why = f"  {DIM}{f.reason}{RESET}" if f.reason else ""
    named = f"{BOLD}{f.machine}{RESET} " if f.machine else ""
    return [f"   machine     {named}{f.phase:<10} {DIM}({mode}){RESET}",
            f"   state       {_rgb(state_rgb)}{BOLD}{f.state.upper():<10}{RESET} code {f.code:<6}"
            f" for {_age(f.state_for)}{why}",
            f"   signals     {', '.join(f.signals) or DIM + 'none' + RESET}",
            "   counters    " + (", ".join(f"{k} = {v}" for k, v in f.counters.items())
                                 or DIM + "none" + RESET),
            "   inputs      " + "  ".join(f"{k}={_short(v)}" for k, v in f.inputs.items())]


def _link_lines(f: Frame) -> list[str]:
    depth_colour = _rgb((255, 170, 0)) if f.queue_depth > 20 else ""
    out = [f"   queue       {depth_colour}{BOLD}{f.queue_depth:>6}{RESET} events waiting on disk"
           f" · oldest {_age(f.queue_oldest)} · last seq {f.seq_hwm} · dropped {f.dropped}"]
    if f.broker == "connected":
        link = f"{_rgb((40, 200, 70))}● connected{RESET} {f.broker_url}"
    elif f.broker == "down":
        link = f"{_rgb((230, 40, 40))}○ down{RESET} {f.broker_url} {DIM}{f.broker_error[:60]}{RESET}"
    else:
        link = f"{_rgb((255, 170, 0))}○ no broker{RESET} {DIM}events stay queued (buffering){RESET}"
    out.append(f"   broker      {link}")
    if f.outage:
        out.append(f"   outage      {f.outage}")
    if f.broker != "none":
        order = (f"{_rgb((40, 200, 70))}in order ✓{RESET}" if f.out_of_order == 0
                 else f"{_rgb((230, 40, 40))}{f.out_of_order} out of order ✗{RESET}")
        out.append(f"   subscriber  {f.received} events received, {order}, last seq {f.last_seq}"
                   f", {f.duplicates} re-sends removed by seq")
    if f.diagnostics_url:
        out.append(f"   diagnostics {f.diagnostics_url}  {DIM}(/status, /metrics, /healthz){RESET}")
    return out


def _line_rows(machines: Sequence[MachineFrame], selected: int = 0) -> list[str]:
    """Each machine on one row (under 80 columns): its key, its tower as a strip of lamps, its
    state and for how long, the simulated phase, counters; the chosen one marked ▶."""
    rows = []
    for i, m in enumerate(machines):
        strip = "".join(_lamp_cell(lamp, m.levels.get(lamp, False)) for lamp in m.lamps)
        rgb = STATE_RGB.get(m.state, (220, 220, 220))
        counters = ", ".join(f"{k}={v}" for k, v in m.counters.items())
        mark = f"{BOLD}▶{RESET}" if i == selected else " "
        rows.append(f" {mark} {i + 1} {m.name:<8} {strip}  {_rgb(rgb)}{BOLD}{m.state.upper():<9}"
                    f"{RESET} {_age(m.state_for):>7}  {DIM}sim {m.phase:<9} {counters}{RESET}")
    return rows


def _lamp_cell(name: str, lit: bool) -> str:
    rgb = LAMP_RGB.get(name, (200, 200, 200))
    if name == "buzzer":
        return f"{_rgb(rgb)}{BOLD}♪{RESET}" if lit else f"{DIM}·{RESET}"
    shade = rgb if lit else tuple(c // 5 for c in rgb)
    return f"{_rgb(shade, bg=True)}  {RESET}"  # type: ignore[arg-type]


def fit(line: str, width: int) -> str:
    """`line` cut to `width` visible characters (ANSI sequences kept, not counted), so a
    narrow terminal never wraps and scrolls the view."""
    out: list[str] = []
    visible = 0
    i = 0
    while i < len(line):
        if line.startswith(ESC, i):
            end = i + len(ESC)
            while end < len(line) and not line[end].isalpha():
                end += 1
            out.append(line[i:end + 1])
            i = end + 1
            continue
        if visible >= width - 1:
            break
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out)


def render_line(f: Frame) -> str:
    """One plain line (no colours) for logs, pipes and CI."""
    lit = " ".join(f"{k}:{v}" for k, v in f.lamps.items() if v != "off") or "all off"
    counters = " ".join(f"{k}={v}" for k, v in f.counters.items())
    link = {"connected": "up", "down": "DOWN", "none": "none"}.get(f.broker, f.broker)
    line = (f"t={f.elapsed:4.0f}s machine={f.phase:<9} state={f.state:<9} lamps=[{lit}] "
            f"{counters} queue={f.queue_depth} seq={f.seq_hwm} broker={link}")
    if f.machines:  # each machine with its lamps lit: `press-1:fault/red:blink_fast+buzzer:on`
        states = " ".join(f"{m.name}:{m.state}/" + ("+".join(
            f"{k}:{v}" for k, v in m.lamps.items() if v != "off") or "off") for m in f.machines)
        line = line.replace(f"machine={f.phase:<9} ", f"machines=[{states}] ", 1)
    if f.broker != "none":
        line += (f" received={f.received} in_order={'yes' if f.out_of_order == 0 else 'NO'}"
                 f" dup_removed={f.duplicates}")
    if f.outage:
        line += f" outage=({f.outage})"
    return line


def describe_rules(ruleset: Any) -> list[str]:
    """One line per state, signal and counter: kind, name, priority, the condition as written
    in the rule file, then the lamps after one aligned arrow."""
    rows: list[tuple[str, str]] = []
    for kind, rules in (("state ", ruleset.states), ("signal", ruleset.signals)):
        for rule in rules:
            rows.append((f"{kind} {rule.name:<10} {rule.priority:>3}  {rule.when.source}",
                         ", ".join(str(sh) for sh in rule.show)))
    rows.append(("state  unknown    (an input it needs is stale or missing)",
                 ", ".join(str(sh) for sh in ruleset.unknown.show)))
    width = max(len(left) for left, _ in rows)  # the unknown row too: one arrow column
    lines = [f"{left:<{width}}  → {lamps}" for left, lamps in rows]
    lines += [f"count  {c.name:<10}      on the {c.edge} edge of {c.expr.source}"
              for c in ruleset.counters]
    return lines


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.0f}"
    return "-" if value is None else str(value)
