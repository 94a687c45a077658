"""Machines: one agent serves several machines, each with its own rules, inputs, tower, state.

A config without `[machines.*]` is one machine with the agent's name that is not *named* on
the wire: its events, topics and live values are exactly those of an agent before machines
existed. With `[machines.NAME]` tables every machine is named: its events carry
`machine = NAME`, its native topics live under `{prefix}/NAME/`, its UMH workcell is NAME.

Inputs: a machine's rules read input names. They are delivered by the machine's own
`[machines.NAME.sources.*]` (whose inputs are kept apart from every other machine's under the
input-table key `NAME/input`), or by the agent's shared `[sources.*]` under the same name, or
under another name given in the machine's `inputs` table (`running = "press2_running"`).
`inputs` may also name another machine's state, `"machine:NAME"`: the rules then read that
machine's state code as an integer, as of the previous scan (a line's upstream blockage).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from linelight.hw.config import OUTPUTS_KEYS, TOWER_KEYS, OutputsSpec, SourceSpec, TowerSpec
from linelight.hw.schema import sources_schema_part
from linelight.rules.errors import Location
from linelight.rules.fields import REQUIRED
from linelight.rules.keys import Key, Keys
from linelight.rules.model import RuleSet

MACHINE_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
MACHINE_NAME_TEXT = ("a letter or digit, then up to 63 letters, digits, '-' or '_' (it is a "
                     "topic level and a UMH workcell)")
RESERVED_NAMES = ("events", "live", "status")  # native topic levels beside the machines'
STATE_OF = "machine:"  # an `inputs` value reading another machine's state code


@dataclass(frozen=True, slots=True)
class RuleFiles:
    """The rule files the `rules` globs matched, with their text, in load order."""

    files: tuple[tuple[str, str], ...]  # (file name, text)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.files)


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """One machine of the agent, as read and cross-checked at load."""

    name: str
    rule_globs: tuple[str, ...]
    rule_files: RuleFiles
    ruleset: RuleSet
    tower: TowerSpec | None
    sources: tuple[SourceSpec, ...] = ()  # its own: inputs kept under `name/input`
    inputs: Mapping[str, str] = field(default_factory=dict)  # rule input -> input-table key
    wiring: Mapping[str, str] = field(default_factory=dict)  # its `inputs` table as written
    named: bool = True  # False: the one machine of a config without [machines.*]
    location: Location | None = None
    outputs: OutputsSpec | None = None  # where its [[output]] rules' lines are wired

    @property
    def wire_name(self) -> str | None:
        """The machine as events carry it; None for the unnamed single machine."""
        return self.name if self.named else None

    def states_read(self) -> dict[str, str]:
        """Rule input -> the machine whose state code it reads."""
        return {rule: key[len(STATE_OF):] for rule, key in self.inputs.items()
                if key.startswith(STATE_OF)}


def own_key(machine: str, input_name: str) -> str:
    """The input-table key of an input of a machine's own source."""
    return f"{machine}/{input_name}"


MACHINE_KEYS = Keys("one machine: its rules, inputs, tower and name on the wire", (
    Key("rules", "strings", "the machine's rule files or globs, relative to the config file",
        REQUIRED),
    Key("inputs", "entries", "rule input -> the input of a shared [sources.*] that delivers it "
        "(when the names differ), or \"machine:NAME\" for another machine's state code", None,
        values=Key("input", "string", "an input of a shared source, or machine:NAME")),
    Key("sources", "value", "the machine's own input sources, by name (their inputs are this "
        "machine's only)", None, schema=sources_schema_part()),
    Key("tower", "table", TOWER_KEYS.text, None, keys=TOWER_KEYS),
    Key("outputs", "table", OUTPUTS_KEYS.text, None, keys=OUTPUTS_KEYS),
))


def rules_fingerprint(machines: Sequence[MachineConfig]) -> str:
    """One fingerprint for the rules of every machine: a single machine's own, as before."""
    if len(machines) == 1:
        return machines[0].ruleset.fingerprint
    digest = hashlib.sha256()
    for m in machines:
        digest.update(f"{m.name}\0{m.ruleset.fingerprint}\0".encode())
    return digest.hexdigest()[:16]
