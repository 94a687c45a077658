"""The agent's config file: one TOML file naming the agent, its data, rules, I/O and services.

`load_config(path)` reads the file through `rules.fields.Table` (so every mistake is a
`file:line:col: message`), composes the section readers of the other parts (`[journal]`,
`[mqtt]`, `[sources.*]`, `[tower]`), loads the rule files the `rules` globs name, and
cross-checks them: every input a rule reads must be delivered by a source, every lamp a rule
shows must be wired in the tower. With `[machines.NAME]` tables (agent.machines) the same is
done per machine, and every problem names its machine. All problems are raised together as
`ConfigProblems`.
"""

from __future__ import annotations

import glob
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from linelight.agent.diagnostics_config import (
    AGENT_ID_KEY,
    DIAGNOSTICS_KEY,
    DiagnosticsSettings,
    parse_config_file,
    path_value,
    read_agent_id,
    read_diagnostics,
)
from linelight.agent.journal import JOURNAL_KEYS, JournalLimits, read_journal_limits
from linelight.agent.machines import (
    MACHINE_KEYS,
    MACHINE_NAME,
    MACHINE_NAME_TEXT,
    RESERVED_NAMES,
    STATE_OF,
    MachineConfig,
    RuleFiles,
    own_key,
)
from linelight.agent.mqtt import MQTT_KEYS, MqttSettings, read_mqtt
from linelight.agent.rulefiles import load_rule_texts, read_bounded
from linelight.hw.config import (
    OUTPUTS_KEYS,
    TOWER_KEYS,
    LampBinding,
    OutputsSpec,
    SourceSpec,
    TowerSpec,
    input_names,
    place_opcua_files,
    read_outputs,
    read_sources,
    read_tower,
    shared_lines,
)
from linelight.hw.schema import sources_schema_part
from linelight.rules.errors import ConfigProblems, LocatedError, Location
from linelight.rules.fields import Problems, Table, did_you_mean
from linelight.rules.keys import Key, Keys
from linelight.rules.loader import MAX_INPUTS
from linelight.rules.model import RuleSet
from linelight.rules.tomldoc import TomlDoc

DEFAULT_RULES = ("rules.d/*.toml",)
DEFAULT_DATA_DIR = "/var/lib/linelight"


@dataclass(frozen=True, slots=True)
class ScanSettings:
    period: float = 0.02  # seconds between scan ticks
    deadband: float = 0.0  # analog inputs: smallest change that makes a `signal` event
    deadbands: dict[str, float] = field(default_factory=dict)  # per input, overrides deadband
    clock_jump: float = 2.0  # wall-vs-monotonic difference that counts as a clock jump
    on_change: bool = True  # an input change runs a scan at once (agent/scan.py)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: Path
    agent_id: str
    data_dir: Path
    rule_globs: tuple[str, ...]
    rule_files: RuleFiles
    ruleset: RuleSet
    scan: ScanSettings
    diagnostics: DiagnosticsSettings
    journal: JournalLimits
    mqtt: MqttSettings | None  # None: no broker configured, events stay queued on disk
    sources: tuple[SourceSpec, ...]
    tower: TowerSpec | None  # None: no lamps wired, the tower is shown in /status only
    fingerprint: str  # sha256 of the config text and every rule file, for the start event
    warnings: tuple[str, ...] = ()
    # every machine, in file order; without [machines.*] the one unnamed machine, whose
    # rules and tower are also `rule_globs`/`rule_files`/`ruleset`/`tower` above
    machines: tuple[MachineConfig, ...] = ()
    outputs: OutputsSpec | None = None  # the single machine's [outputs] (with machines: each own)

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.db"

    @property
    def base_dir(self) -> Path:
        return self.path.parent


# -- the key tables: the readers below and agent.schema both come from these ----------------------

_SCAN = ScanSettings()
SCAN_KEYS = Keys("the scan loop", (
    Key("period", "duration", "scan period: snapshot, rules, tower; the lamps follow the machine "
        "one period late at most", _SCAN.period, minimum=0.001, maximum=1.0, allow_zero=False),
    Key("deadband", "number", "numeric inputs: smallest change recorded as a signal event",
        _SCAN.deadband, minimum=0.0),
    Key("deadbands", "entries", "per-input deadband, overriding 'deadband'", None,
        values=Key("deadband", "number", "smallest change recorded", minimum=0.0)),
    Key("clock_jump", "duration", "wall-clock step recorded as a clock_jump event",
        _SCAN.clock_jump, allow_zero=False),
    Key("on_change", "boolean", "an input whose value or quality changes runs a scan at once, "
        "between the periodic ones; false: scans only every period", _SCAN.on_change),
))

def top_keys(parts: dict[str, Key]) -> Keys:
    """The top level of the config file; `parts` are the sections other packages declare."""
    return Keys("linelight agent config", (
        AGENT_ID_KEY,
        Key("data_dir", "string", "where the queue lives", DEFAULT_DATA_DIR),
        Key("rules", "strings", "rule files or globs, relative to this file", list(DEFAULT_RULES)),
        Key("scan", "table", SCAN_KEYS.text, None, keys=SCAN_KEYS),
        DIAGNOSTICS_KEY,
        *parts.values(),
    ))


TOP_KEYS = top_keys({
    "journal": Key("journal", "table", JOURNAL_KEYS.text, None, keys=JOURNAL_KEYS),
    "mqtt": Key("mqtt", "table", "the MQTT broker; leave out to only queue", None,
                keys=MQTT_KEYS),
    "sources": Key("sources", "value", "input sources, by name", None,
                   schema=sources_schema_part()),
    "tower": Key("tower", "table", TOWER_KEYS.text, None, keys=TOWER_KEYS),
    "outputs": Key("outputs", "table", OUTPUTS_KEYS.text, None, keys=OUTPUTS_KEYS),
    "machines": Key("machines", "entries", "several machines on one agent, by name (then "
                    "'rules', 'tower' and 'outputs' belong in each machine)", None,
                    keys=MACHINE_KEYS),
})


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the config file and its rules; raise ConfigProblems listing all."""
    path = Path(path)
    text, doc = parse_config_file(path)
    problems = Problems()
    root = TOP_KEYS.bind(Table.root(doc, problems))
    base = path.parent

    agent_id = read_agent_id(root)
    data_dir = path_value(root, TOP_KEYS, "data_dir", base)
    machines_table = TOP_KEYS.read(root, "machines")
    globs = _rule_globs(root) if machines_table is None else _no_top_rules(root)
    scan = _read_scan(TOP_KEYS.read(root, "scan"))
    diagnostics = read_diagnostics(TOP_KEYS.read(root, "diagnostics"), base)
    journal = read_journal_limits(TOP_KEYS.read(root, "journal"))
    mqtt_table = TOP_KEYS.read(root, "mqtt")
    mqtt = read_mqtt(mqtt_table) if mqtt_table is not None else None
    sources = read_sources(root)
    tower = read_tower(root, sources) if machines_table is None else None
    outputs = read_outputs(root, sources) if machines_table is None else None
    drafts = _read_machines(machines_table, sources) if machines_table is not None else []
    root.finish()
    sources = place_opcua_files(sources, base, data_dir)
    for draft in drafts:
        draft.sources = place_opcua_files(draft.sources, base, data_dir)
    _check_shared_lines(root, [(None, tower, outputs)] if machines_table is None else
                        [(d.name, d.tower, d.outputs) for d in drafts],
                        (*sources, *(spec for d in drafts for spec in d.sources)), problems)

    warnings: list[str] = []
    machines: list[MachineConfig] = []
    if machines_table is None:
        single = _load_single(root, agent_id, globs, base, sources, tower, problems, warnings,
                              outputs)
        machines += [single] if single is not None else []
    else:
        if not drafts and not problems:
            problems.add(root.where("machines"), "[machines] names no machine; write "
                                                 "[machines.NAME] with its rules")
        _check_umh_machines(mqtt, drafts, root, problems)
        names = {d.name for d in drafts}
        for draft in drafts:
            machine = _load_machine(draft, base, sources, names, problems, warnings)
            machines += [machine] if machine is not None else []
        if (sentence := inputs_problem(machines)) is not None:
            problems.add(root.where("machines"), sentence)
    mqtt = _sparkplug_devices(mqtt, machines)
    problems.raise_if_any()
    first = machines[0]

    digest = hashlib.sha256(text.encode())
    for machine in machines:
        for file_name, rule_text in machine.rule_files.files:
            digest.update(b"\0" + file_name.encode() + b"\0" + rule_text.encode())
    return AgentConfig(
        path=path, agent_id=agent_id, data_dir=data_dir, rule_globs=first.rule_globs,
        rule_files=first.rule_files, ruleset=first.ruleset, scan=scan, diagnostics=diagnostics,
        journal=journal, mqtt=mqtt, sources=sources, tower=first.tower,
        fingerprint=digest.hexdigest()[:16], warnings=tuple(warnings), machines=tuple(machines),
        outputs=first.outputs,
    )


def _load_single(root: Table, agent_id: str, globs: tuple[str, ...], base: Path,
                 sources: tuple[SourceSpec, ...], tower: TowerSpec | None, problems: Problems,
                 warnings: list[str], outputs: OutputsSpec | None = None
                 ) -> MachineConfig | None:
    """A config without [machines.*]: one machine, named after the agent, unnamed on the wire."""
    before = len(problems.items)
    rule_files = find_rule_files(root, globs, base, problems)
    if not rule_files.files:
        where = root.value_where("rules") if root.has("rules") else root.where()
        if globs and len(problems.items) == before:  # not when a file matched but was refused
            problems.add(where, f"no rule file found: 'rules' ({', '.join(globs)}, relative "
                                f"to {base}) matches no file; the agent needs at least one")
        elif root.has("rules") and not problems:
            problems.add(where, "'rules' names no rule file; the agent needs at least one")
        return None
    try:
        ruleset = load_ruleset(rule_files)
    except ConfigProblems as exc:
        problems.extend(exc.problems)
        return None
    warnings += cross_check(ruleset, sources, tower, root, problems, outputs)
    return MachineConfig(agent_id, globs, rule_files, ruleset, tower, named=False,
                         outputs=outputs)


# -- machines -----------------------------------------------------------------------------------

@dataclass(slots=True)
class _MachineDraft:
    """A [machines.NAME] table read, before its rule files are loaded."""

    name: str
    table: Table
    globs: tuple[str, ...]
    sources: tuple[SourceSpec, ...]
    tower: TowerSpec | None
    wiring: dict[str, str]  # the `inputs` table as written
    outputs: OutputsSpec | None = None


def _no_top_rules(root: Table) -> tuple[str, ...]:
    """With [machines.*], 'rules' and 'tower' at the top are a mistake, not a default."""
    for key in ("rules", "tower", "outputs"):
        if root.has(key):
            root.raw(key)
            root.problem(key, f"with [machines.*] every machine names its own '{key}'; move "
                              f"it into [machines.NAME]")
    return ()


def _read_machines(table: Table, shared: tuple[SourceSpec, ...]) -> list[_MachineDraft]:
    drafts: list[_MachineDraft] = []
    source_names = {s.name: "the shared [sources]" for s in shared}
    pattern = re.compile(MACHINE_NAME)
    problems = table.problems
    for name, mt in table.entries():
        if mt is None:
            continue
        before = len(problems.items)
        MACHINE_KEYS.bind(mt)
        if not pattern.fullmatch(name):
            mt.problem(None, f"machine name '{name}' must be {MACHINE_NAME_TEXT}")
        elif name in RESERVED_NAMES:
            mt.problem(None, f"machine name '{name}' is a topic level of the agent's own "
                             f"({', '.join(RESERVED_NAMES)}); choose another")
        if not mt.has("rules"):
            mt.raw("rules")
            mt.problem(None, "needs 'rules', its rule files, e.g. rules = [\"rules.d/press.toml\"]")
        globs = tuple(MACHINE_KEYS.read(mt, "rules") or ()) if mt.has("rules") else ()
        own = read_sources(mt)
        for spec in own:
            if spec.name in source_names:
                mt.problems.add(spec.location, f"machine '{name}': source '{spec.name}' is "
                                f"already defined by {source_names[spec.name]}; source names "
                                "are the agent's, give it another")
            source_names[spec.name] = f"machine '{name}'"
        tower = read_tower(mt, (*shared, *own))
        outputs = read_outputs(mt, (*shared, *own))
        wiring: dict[str, str] = {}
        entries = MACHINE_KEYS.read(mt, "inputs")
        if entries is not None:
            rule_inputs: list[str] = entries.keys()
            for rule_input in rule_inputs:
                value = entries.string(rule_input)
                if isinstance(value, str):
                    wiring[rule_input] = value
            entries.finish()
        mt.finish()
        problems.items[before:] = for_machine(name, problems.items[before:])
        drafts.append(_MachineDraft(name, mt, globs, own, tower, wiring, outputs))
    return drafts


def _load_machine(draft: _MachineDraft, base: Path, shared: tuple[SourceSpec, ...],
                  names: set[str], problems: Problems, warnings: list[str]
                  ) -> MachineConfig | None:
    found = Problems()
    rule_files = find_rule_files(draft.table, draft.globs, base, found)
    if not rule_files.files and not found and draft.globs:  # no 'rules': reported as missing
        found.add(draft.table.value_where("rules") if draft.table.has("rules")
                  else draft.table.where(), f"no rule file found: 'rules' "
                  f"({', '.join(draft.globs)}, relative to {base}) matches no file")
    machine: MachineConfig | None = None
    if rule_files.files:
        try:
            ruleset = load_ruleset(rule_files)
        except ConfigProblems as exc:
            found.extend(exc.problems)
        else:
            machine = MachineConfig(draft.name, draft.globs, rule_files, ruleset, draft.tower,
                                    draft.sources, wiring=dict(draft.wiring),
                                    location=draft.table.where(), outputs=draft.outputs)
            machine = resolve_machine(machine, shared, names, draft.table, found)
            warnings += [f"machine '{draft.name}': {w}"
                         for w in check_lamps(ruleset, draft.tower, draft.table, found)]
            check_outputs(ruleset, draft.outputs, draft.table, found)
    problems.extend(for_machine(draft.name, found.items))
    return None if found else machine


def inputs_problem(machines: Sequence[MachineConfig]) -> str | None:
    """The sentence when the machines' rules declare more inputs together than one scan
    affords (each rule set alone is bounded by the loader's MAX_INPUTS; one scan reads all)."""
    total = sum(len(m.ruleset.inputs) for m in machines)
    if total <= MAX_INPUTS:
        return None
    return (f"the machines' rules declare {total} inputs together, more than {MAX_INPUTS}: "
            "one scan reads every machine's, so split the machines over more agents or read "
            "fewer signals")


def for_machine(name: str, errors: Sequence[LocatedError]) -> list[LocatedError]:
    """The same problems, each sentence starting with the machine it belongs to."""
    prefix = f"machine '{name}': "
    return [e if e.message.startswith(prefix) else LocatedError(e.location, prefix + e.message)
            for e in errors]


def resolve_machine(machine: MachineConfig, shared: tuple[SourceSpec, ...], names: set[str],
                    where: Table, problems: Problems) -> MachineConfig:
    """`machine` with `inputs` resolved: every input its rules read -> the input-table key
    that delivers it (own source, shared source, its `inputs` table, another machine)."""
    own = {n for spec in machine.sources for n in input_names(spec)}
    delivered = {n for spec in shared for n in input_names(spec)}
    resolved = {n: own_key(machine.name, n) for n in sorted(own)}
    for rule_input, target in machine.wiring.items():
        if target.startswith(STATE_OF):
            other = target[len(STATE_OF):]
            if other not in names or other == machine.name:
                problems.add(where.where("inputs"), f"input '{rule_input}' reads the state of "
                             f"machine '{other}', which is not another machine of this agent "
                             f"(machines: {', '.join(sorted(names))})")
            spec = machine.ruleset.inputs.get(rule_input)
            if spec is not None and spec.type != "int":
                problems.add(spec.location, f"input '{rule_input}' reads machine '{other}''s "
                             f"state code, an integer: declare it type = \"int\"")
        elif target not in delivered:
            problems.add(where.where("inputs"), f"input '{rule_input}' is wired to '{target}', "
                         "which no shared [sources.*] delivers (shared inputs: "
                         f"{', '.join(sorted(delivered)) or 'none'})")
        resolved[rule_input] = target
    for rule_input, spec in machine.ruleset.inputs.items():
        if rule_input in machine.wiring or rule_input in own:
            continue
        if rule_input in delivered:
            resolved[rule_input] = rule_input
            continue
        own_text = ", ".join(sorted(own)) or "none"
        problems.add(_where(spec, where), f"input '{rule_input}' is read by the rules but no "
                     f"source delivers it (the machine's own sources: {own_text}; shared "
                     f"[sources.*]: {', '.join(sorted(delivered)) or 'none'}; or wire it in "
                     "the machine's 'inputs')")
    return replace(machine, inputs=resolved)


def _sparkplug_devices(mqtt: MqttSettings | None, machines: list[MachineConfig]
                       ) -> MqttSettings | None:
    """In the Sparkplug mode each named machine is the device of its name (machine names are
    letters, digits, '-' and '_': valid Sparkplug ids as they are)."""
    if mqtt is None or mqtt.sparkplug is None:
        return mqtt
    names = tuple(m.name for m in machines if m.named)
    return replace(mqtt, sparkplug=replace(mqtt.sparkplug, devices=names))


def _check_umh_machines(mqtt: MqttSettings | None, drafts: list[_MachineDraft], root: Table,
                        problems: Problems) -> None:
    """In the UMH modes a machine is the workcell below the agent's line."""
    if mqtt is None or mqtt.umh is None or mqtt.topic_mode == "linelight" or not drafts:
        return
    if not mqtt.umh.line:
        problems.add(root.where("mqtt"), "[mqtt.umh] needs 'line' (and every level above) "
                     "with [machines.*]: each machine is the workcell below it")


# -- rules --------------------------------------------------------------------------------------

def find_rule_files(root: Table | None, globs: Sequence[str], base: Path,
                    problems: Problems) -> RuleFiles:
    """Expand the `rules` globs (relative to the config file) and read every file once."""
    seen: set[str] = set()
    files: list[tuple[str, str]] = []
    unmatched: list[tuple[int, str]] = []
    for i, pattern in enumerate(globs):
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not matches:
            unmatched.append((i, pattern))
        for match in matches:
            if match in seen:
                continue
            seen.add(match)
            try:
                files.append((match, read_bounded(match)))
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
                loc = (root.doc.value_location((*root.path, "rules", i)) if root is not None
                       else Location(match, 1, 1))
                problems.add(loc, f"cannot read rule file {match}: {reason or exc}")
    # With no file at all the caller reports the whole key. A pattern that matches nothing
    # while others do is a typo or a missing file: `run` would start without those rules,
    # so it is an error (at start and on reload), not a warning.
    for i, pattern in unmatched if files else ():
        loc = (_rules_location(root, i) if root is not None
               else Location(str(base / pattern), 1, 1))
        problems.add(loc, f"rules pattern '{pattern}' (relative to {base}) matches no file")
    return RuleFiles(tuple(files))


def _rules_location(root: Table, index: int) -> Location:
    """Where the index-th rules pattern is written (the key itself for a plain string)."""
    if isinstance(root.data.get("rules"), list):
        return root.doc.value_location((*root.path, "rules", index))
    return root.value_where("rules")


def reread_rule_files(config: AgentConfig, machine: MachineConfig | None = None) -> RuleFiles:
    """The rule files (of `machine`, default the first) as they are on disk now (for reload);
    ConfigProblems if one is unreadable."""
    problems = Problems()
    globs = (machine or config.machines[0]).rule_globs if config.machines else config.rule_globs
    files = find_rule_files(None, globs, config.base_dir, problems)
    problems.raise_if_any()
    return files


def load_ruleset(files: RuleFiles) -> RuleSet:
    return load_rule_texts(list(files.files))


def check_ruleset_against(config: AgentConfig, ruleset: RuleSet,
                          machine: MachineConfig | None = None) -> MachineConfig | None:
    """For reload: the new rules must fit the sources and tower the agent runs with. For a
    named machine, returns it with the new rules and their inputs resolved."""
    problems = Problems()
    doc = TomlDoc(file=str(config.path), text="", data={})
    root = Table.root(doc, Problems())
    if machine is None or not machine.named:
        tower = machine.tower if machine is not None else config.tower
        outputs = machine.outputs if machine is not None else config.outputs
        cross_check(ruleset, config.sources, tower, root, problems, outputs)
        problems.raise_if_any()
        return replace(machine, ruleset=ruleset) if machine is not None else None
    names = {m.name for m in config.machines}
    checked = resolve_machine(replace(machine, ruleset=ruleset), config.sources, names, root,
                              problems)
    check_lamps(ruleset, machine.tower, root, problems)
    check_outputs(ruleset, machine.outputs, root, problems)
    if problems:
        raise ConfigProblems(for_machine(machine.name, problems.items))
    return checked


def cross_check(ruleset: RuleSet, sources: tuple[SourceSpec, ...], tower: TowerSpec | None,
                root: Table, problems: Problems, outputs: OutputsSpec | None = None
                ) -> list[str]:
    """Inputs read by rules vs inputs delivered by sources; lamps shown vs lamps wired;
    [[output]] rules vs outputs wired."""
    check_outputs(ruleset, outputs, root, problems)
    warnings: list[str] = []
    delivered = {n for spec in sources for n in input_names(spec)}
    needed = dict(ruleset.inputs)
    if not sources:
        if needed:
            warnings.append(f"no [sources.*] configured: the {len(needed)} inputs the rules read "
                            "stay uninitialised and the state stays unknown")
    else:
        for input_name, spec in needed.items():
            if input_name not in delivered:
                hint = ", ".join(sorted(delivered)) or "none"
                problems.add(_where(spec, root),
                             f"input '{input_name}' is read by the rules but no source delivers "
                             f"it (inputs delivered by [sources.*]: {hint})")
    return warnings + check_lamps(ruleset, tower, root, problems)


def check_lamps(ruleset: RuleSet, tower: TowerSpec | None, root: Table,
                problems: Problems) -> list[str]:
    """Lamps shown by the rules vs lamps wired in the tower; returns the warnings."""
    warnings: list[str] = []
    shown = lamps_shown(ruleset)
    if tower is None:
        if shown:
            warnings.append("no [tower] configured: lamps are shown in /status only")
    else:
        warnings += tower.warnings
        wired = set(tower.lamps)
        for lamp in sorted(shown - wired):
            problems.add(tower.location or root.where("tower"),
                         f"the rules show lamp '{lamp}' but [tower] does not wire it "
                         f"(wired: {', '.join(sorted(wired)) or 'none'}); add it to "
                         "[tower.lamps], or write virtual = true for a lamp with no hardware")
        for lamp in sorted(wired - shown):
            warnings.append(f"lamp '{lamp}' is wired in [tower] but no rule shows it")
    return warnings


def _check_shared_lines(root: Table, wired: list[tuple[str | None, TowerSpec | None,
                                                      OutputsSpec | None]],
                        sources: tuple[SourceSpec, ...], problems: Problems) -> None:
    """No two lamps or outputs (of any machine) write the same line, coil, bit or node: a
    permit sharing a coil with a blinking lamp would blink with it."""
    bindings: list[tuple[str, LampBinding]] = []
    places: list[tuple[Location, str | None]] = []
    for machine, tower, outputs in wired:
        for lamp, b in (tower.lamps if tower is not None else {}).items():
            bindings.append((f"lamp '{lamp}'", b))
            places.append((tower.location or root.where("tower") if tower else root.where(),
                           machine))
        for name, b in (outputs.wiring if outputs is not None else {}).items():
            bindings.append((f"output '{name}'", b))
            places.append((outputs.where.get(name) or root.where("outputs") if outputs
                           else root.where(), machine))
    for i, j in shared_lines(bindings, sources):
        (what, _), (other, o) = bindings[i], bindings[j]
        (where, machine), (_, other_machine) = places[i], places[j]
        if other_machine is not None and other_machine != machine:
            other = f"machine '{other_machine}' {other}"
        prefix = f"machine '{machine}': " if machine is not None else ""
        at = f" (bound at {o.where})" if o.where else ""
        problems.add(where, f"{prefix}{what} is wired to what {other} already writes{at}: two "
                            "writers would fight over one output; give each its own")


def check_outputs(ruleset: RuleSet, outputs: OutputsSpec | None, root: Table,
                  problems: Problems) -> None:
    """Every [[output]] rule is wired in [outputs], and every wired output is a rule's: an
    interlock that drives nothing, or a line nothing drives, is a mistake, not a warning."""
    wired = outputs.wiring if outputs is not None else {}
    names = [o.name for o in ruleset.outputs]
    for o in ruleset.outputs:
        if o.name in wired:
            continue
        where = o.location if o.location.file else root.where("outputs")
        problems.add(where, f"output '{o.name}' is not wired: add it to [outputs.wiring], "
                            f"e.g. {o.name} = {{ coil = 10, source = \"plc\" }}, or write "
                            f"{o.name} = {{ virtual = true }} for an output with no hardware")
    for name in wired:
        if name in names:
            continue
        assert outputs is not None
        hint = did_you_mean(name, names) or (
            f"; the rules' outputs: {', '.join(names)}" if names else
            "; the rules have no [[output]]")
        problems.add(outputs.where.get(name) or outputs.location or root.where("outputs"),
                     f"[outputs.wiring] wires output '{name}', which no [[output]] rule "
                     f"drives{hint}")


def lamps_shown(ruleset: RuleSet) -> set[str]:
    """Lamps some state, signal or the unknown state actually lights."""
    shown = {s.lamp for rule in (*ruleset.states, *ruleset.signals) for s in rule.show}
    return shown | {s.lamp for s in ruleset.unknown.show}


def _where(spec: Any, root: Table) -> Location:
    loc = getattr(spec, "location", None)
    return loc if isinstance(loc, Location) else root.where()


# -- sections -----------------------------------------------------------------------------------

def _rule_globs(root: Table) -> tuple[str, ...]:
    value = TOP_KEYS.read(root, "rules")
    if value is None:
        return ()
    if not all(value):
        root.problem("rules", "'rules' cannot name an empty file; write e.g. [\"rules.d/*.toml\"]")
        return ()
    return tuple(value)


def _read_scan(t: Table | None) -> ScanSettings:
    d = ScanSettings()
    if t is None:
        return d
    deadbands: dict[str, float] = {}
    per_input = SCAN_KEYS.read(t, "deadbands")
    if per_input is not None:
        names: list[str] = per_input.keys()
        for name in names:
            value = per_input.number(name)
            if isinstance(value, float):
                if value < 0:
                    per_input.problem(name, f"deadband of '{name}' cannot be negative")
                else:
                    deadbands[name] = value
        per_input.finish()
    period = SCAN_KEYS.read(t, "period")
    deadband = SCAN_KEYS.read(t, "deadband")
    jump = SCAN_KEYS.read(t, "clock_jump")
    on_change = SCAN_KEYS.read(t, "on_change")
    t.finish()
    return ScanSettings(period or d.period, d.deadband if deadband is None else deadband,
                        deadbands, jump or d.clock_jump,
                        on_change if isinstance(on_change, bool) else d.on_change)


