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
    machines: Sequence[MachineFrame] = field(default_factory=list)  # --line: every machine


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


def render_screen(f: Frame, width: int = 100, height: int = 200) -> str:
    """The full-screen view (ANSI colours), redrawn several times a second; cut to the
    terminal's size so it never scrolls."""
    out: list[str] = []
    what = (f"a line of {len(f.machines)} machines on agent" if f.machines
            else "simulated machine")
    title = f" linelight demo · {what} '{f.agent_id}'"
    out.append(f"{BOLD}{title}{RESET}{DIM}   running {f.elapsed:5.0f} s{RESET}")
    out.append("")
    if f.machines:
        out += _line_rows(f.machines)
        out.append(f"   {DIM}below: the first machine, {f.machines[0].name}{RESET}")
    else:
        out.append("   ┌────┐   stack light")
        for lamp, pattern in f.lamps.items():
            out.append(_lamp_row(lamp, pattern, f.levels.get(lamp, False)))
        out.append("   └────┘")
    out.append("")
    state_rgb = STATE_RGB.get(f.state, (220, 220, 220))
    mode = ("pinned by a key; [a] resumes the cycle" if f.pinned else
            "auto cycle: producing → microstop → producing → fault → idle")
    out.append(f"   machine     {f.phase:<10} {DIM}({mode}){RESET}")
    why = f"  {DIM}{f.reason}{RESET}" if f.reason else ""
    out.append(f"   state       {_rgb(state_rgb)}{BOLD}{f.state.upper():<10}{RESET} code {f.code:<6}"
               f" for {_age(f.state_for)}{why}")
    out.append(f"   signals     {', '.join(f.signals) or DIM + 'none' + RESET}")
    out.append("   counters    " + (", ".join(f"{k} = {v}" for k, v in f.counters.items())
                                    or DIM + "none" + RESET))
    out.append("   inputs      " + "  ".join(f"{k}={_short(v)}" for k, v in f.inputs.items()))
    out.append("")
    depth_colour = _rgb((255, 170, 0)) if f.queue_depth > 20 else ""
    out.append(f"   queue       {depth_colour}{BOLD}{f.queue_depth:>6}{RESET} events waiting on disk"
               f" · oldest {_age(f.queue_oldest)} · last seq {f.seq_hwm} · dropped {f.dropped}")
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
    out.append("")
    out.append(f"   {BOLD}rules{RESET} {DIM}{f.rules_file}{RESET}")
    out += [f"     {line[:width - 6]}" for line in f.rules]
    out.append("")
    out.append(f"   {DIM}keys:{RESET} [o] outage  [f] fault  [p] producing  [m] microstop  "
               "[i] idle  [a] auto  [l] lamp test  [q] quit")
    if f.message:
        out.append(f"   {BOLD}{f.message}{RESET}")
    out += [f"   {DIM}log: {line[:width - 9]}{RESET}" for line in f.log_lines]
    out = out[:max(1, height - 1)]
    return HOME_CLEAR + "\n".join(fit(line, width) + RESET + ESC + "K" for line in out) + "\n"


def _line_rows(machines: Sequence[MachineFrame]) -> list[str]:
    """Each machine on one row: its tower as a strip of lamps, its state, phase, counters."""
    rows = []
    for m in machines:
        strip = "".join(_lamp_cell(lamp, m.levels.get(lamp, False)) for lamp in m.lamps)
        rgb = STATE_RGB.get(m.state, (220, 220, 220))
        counters = ", ".join(f"{k} = {v}" for k, v in m.counters.items())
        rows.append(f"   {m.name:<9} {strip}  {_rgb(rgb)}{BOLD}{m.state.upper():<10}{RESET}"
                    f" code {m.code:<6} for {_age(m.state_for):<8} {DIM}machine {m.phase:<9}"
                    f" {counters}{RESET}")
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
    if f.machines:
        states = " ".join(f"{m.name}:{m.state}" for m in f.machines)
        line = line.replace(f"machine={f.phase:<9} ", f"machines=[{states}] ", 1)
    if f.broker != "none":
        line += (f" received={f.received} in_order={'yes' if f.out_of_order == 0 else 'NO'}"
                 f" dup_removed={f.duplicates}")
    if f.outage:
        line += f" outage=({f.outage})"
    return line


def describe_rules(ruleset: Any) -> list[str]:
    """One line per state, signal and counter: name, priority, condition, lamps."""
    lines: list[str] = []
    for rule in ruleset.states:
        lamps = ", ".join(str(s) for s in rule.show)
        lines.append(f"state  {rule.name:<10} prio {rule.priority:<4} when {rule.when.text:<34}"
                     f" → {lamps}")
    for rule in ruleset.signals:
        lamps = ", ".join(str(s) for s in rule.show)
        lines.append(f"signal {rule.name:<10} prio {rule.priority:<4} when {rule.when.text:<34}"
                     f" → {lamps}")
    for c in ruleset.counters:
        lines.append(f"count  {c.name:<10} on the {c.edge} edge of {c.expr.text}")
    unknown = ", ".join(str(s) for s in ruleset.unknown.show)
    lines.append(f"state  {'unknown':<10} when an input the decision needs is stale or missing"
                 f" → {unknown}")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.0f}"
    return "-" if value is None else str(value)
