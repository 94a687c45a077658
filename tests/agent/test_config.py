"""The agent config: one file, every problem located, rules cross-checked against sources and tower."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from linelight.agent.config import AgentConfig, load_config
from linelight.rules.errors import ConfigProblems

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

RULES = """\
[inputs]
running = { type = "bool" }
fault_code = { type = "int" }

[[state]]
name = "fault"
code = 180000
priority = 100
when = "fault_code != 0"
show = { red = "on" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }
"""

SIM = """\
[sources.machine]
type = "sim"
model = "machine"
"""

TOWER = """\
[tower.lamps]
red = { virtual = true }
green = { virtual = true }
amber = { virtual = true }
"""


def write(tmp_path: Path, config: str, rules: str | None = RULES) -> Path:
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    if rules is not None:
        (tmp_path / "rules.d" / "machine.toml").write_text(rules)
    path = tmp_path / "agent.toml"
    path.write_text(config)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_example_config_loads_with_sim_source_and_rules(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "rules.d", tmp_path / "rules.d")
    shutil.copy(EXAMPLES / "agent.toml", tmp_path / "agent.toml")
    config = load_config(tmp_path / "agent.toml")
    assert isinstance(config, AgentConfig)
    assert config.agent_id == "demo-press-1"
    assert [s.name for s in config.sources] == ["machine"]
    assert config.rule_files.names == (str(tmp_path / "rules.d" / "machine.toml"),)
    assert config.diagnostics.listen == (("127.0.0.1", 9750),)
    assert config.mqtt is not None and config.mqtt.port == 1883
    assert config.warnings == ()


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'agent_id = "press-7"\n' + SIM + TOWER))
    assert config.scan.period == 0.02
    assert config.diagnostics.listen == (("127.0.0.1", 9750),)
    assert config.diagnostics.token_file is None
    assert config.mqtt is None
    assert config.data_dir == Path("/var/lib/linelight")
    assert config.journal_path == Path("/var/lib/linelight/journal.db")


def test_config_without_sources_starts_with_a_warning(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'data_dir = "data"\n'))
    assert config.sources == () and config.tower is None
    assert config.data_dir == tmp_path / "data"
    assert any("no [sources.*] configured" in w for w in config.warnings)
    assert any("no [tower] configured" in w for w in config.warnings)


def test_every_problem_is_listed_with_its_location(tmp_path: Path) -> None:
    path = write(tmp_path, """\
agent_id = "press 7"
colour = "red"

[scan]
period = "5 parsecs"

[diagnostics]
listen = ["127.0.0.1"]

[journal]
max_bytes = "lots"
""")
    got = problems_of(path)
    name = str(path)
    assert f"{name}:1:12: 'agent_id' must be 1 to 64 letters" in got[0]
    assert got[1].startswith(f"{name}:2:1: unknown key 'colour' in top level")
    assert got[2].startswith(f"{name}:5:10: '5 parsecs' is not a duration")
    assert got[3].startswith(f"{name}:8:11: '127.0.0.1' is not a listen address")
    assert got[4].startswith(f"{name}:11:13: 'lots' is not a size")
    assert len(got) == 5


def test_toml_syntax_error_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "[scan\nperiod = 1\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:1:")
    assert "TOML syntax error" in problem


def test_missing_config_file_is_one_clear_problem(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "nope.toml")
    assert problem == f"{tmp_path / 'nope.toml'}:1:1: cannot read the config file: " \
                      "No such file or directory"


def test_rule_file_errors_are_reported_with_the_rule_files_location(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER, RULES.replace('when = "running"', 'when = "runing"'))
    [problem] = problems_of(path)
    assert problem.startswith(f"{tmp_path / 'rules.d' / 'machine.toml'}:16:")
    assert "runing" in problem


def test_input_read_by_rules_but_delivered_by_no_source_is_an_error(tmp_path: Path) -> None:
    rules = RULES.replace('fault_code = { type = "int" }',
                          'fault_code = { type = "int" }\npressure = { type = "float" }')
    path = write(tmp_path, SIM + TOWER, rules)
    [problem] = problems_of(path)
    assert problem.startswith(f"{tmp_path / 'rules.d' / 'machine.toml'}:4:")
    assert "input 'pressure' is read by the rules but no source delivers it" in problem


def test_lamp_shown_by_rules_but_not_wired_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + "[tower.lamps]\ngreen = { virtual = true }\n")
    got = problems_of(path)
    assert [p.split(": ", 1)[1][:44] for p in got] == [
        "the rules show lamp 'amber' but [tower] does",  # the unknown state's default lamp
        "the rules show lamp 'red' but [tower] does n"]
    assert all(p.startswith(f"{path}:") for p in got)


def test_rules_glob_matching_nothing_is_an_error_at_the_rules_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'rules = ["nowhere/*.toml"]\n' + SIM + TOWER)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:1:9: no rule file found")


def test_a_second_rules_pattern_matching_nothing_is_an_error_at_that_pattern(
        tmp_path: Path) -> None:
    """check said ok (a warning) and run started without those rules: a silent typo."""
    path = write(tmp_path, 'rules = ["rules.d/*.toml", "rules.x/*.toml"]\n' + SIM + TOWER)
    assert problems_of(path) == [
        f"{path}:1:28: rules pattern 'rules.x/*.toml' (relative to {tmp_path}) matches no file"]


def test_named_rule_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'rules = ["rules.d/machine.toml", "extra.toml"]\n' + SIM + TOWER)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:1:")
    assert "cannot read rule file" in problem and "extra.toml" in problem


def test_an_empty_rules_list_is_an_error_at_the_rules_key(tmp_path: Path) -> None:
    path = write(tmp_path, "rules = []\n" + SIM + TOWER)
    assert problems_of(path) == [f"{path}:1:9: 'rules' names no rule file; the agent needs at "
                                 "least one"]


def test_a_single_rules_pattern_may_be_a_plain_string(tmp_path: Path) -> None:
    path = write(tmp_path, 'rules = "rules.d/*.toml"\n' + SIM + TOWER)
    assert load_config(path).rule_globs == ("rules.d/*.toml",)


def test_sections_of_other_parts_report_their_problems_too(tmp_path: Path) -> None:
    path = write(tmp_path, SIM.replace('model = "machine"', 'model = "machine"\nspeed = 3')
                 + TOWER + '[mqtt]\nhots = "broker"\n')
    got = problems_of(path)
    assert any("unknown key 'speed'" in p for p in got)
    assert any("unknown key 'hots'" in p and "did you mean 'host'" in p for p in got)


def test_fingerprint_changes_when_a_rule_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER)
    before = load_config(path).fingerprint
    (tmp_path / "rules.d" / "machine.toml").write_text(RULES.replace("180000", "180001"))
    assert load_config(path).fingerprint != before


def test_diagnostics_listen_and_token_file(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + '[diagnostics]\nlisten = ["127.0.0.1:9800", "[::1]:9800"]\n'
                 'token_file = "secret/token"\n')
    d = load_config(path).diagnostics
    assert d.listen == (("127.0.0.1", 9800), ("::1", 9800))
    assert d.token_file == tmp_path / "secret" / "token"


def _keys_missing_from_schema(data: dict[str, object], schema: dict[str, object], path: str = ""
                              ) -> list[str]:
    """Keys of `data` the schema does not describe (following properties and additionalProperties)."""
    missing: list[str] = []
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, value in data.items():
        sub = props.get(key) if isinstance(props, dict) else None  # type: ignore[union-attr]
        if sub is None and isinstance(extra, dict):
            sub = extra
        if sub is None:
            missing.append(path + key)
            continue
        if isinstance(value, dict) and isinstance(sub, dict):
            options = sub.get("oneOf") or sub.get("anyOf") or [sub]
            found = [_keys_missing_from_schema(value, o, f"{path}{key}.") for o in options
                     if isinstance(o, dict) and o.get("type") == "object"]
            if found and all(found):
                missing += min(found, key=len)
    return missing


@pytest.mark.parametrize("config", [EXAMPLES / "agent.toml",
                                    EXAMPLES.parent / "packaging" / "etc" / "agent.toml"])
def test_config_schema_describes_every_key_of_the_shipped_configs(config: Path) -> None:
    import tomllib

    from linelight.agent.schema import config_schema

    if not config.exists():
        pytest.skip(f"{config} is not in this checkout")
    data = tomllib.loads(config.read_text())
    assert _keys_missing_from_schema(data, config_schema()) == []


def test_config_schema_rejects_what_the_reader_rejects() -> None:
    from linelight.agent.schema import config_schema

    schema = config_schema()
    assert _keys_missing_from_schema({"colour": "red"}, schema) == ["colour"]
    assert _keys_missing_from_schema({"scan": {"speed": 1}}, schema) == ["scan.speed"]


# -- diagnostics exposure (issue 12, group 5) -----------------------------------------------------

@pytest.mark.parametrize("address", ["0.0.0.0:9750", "[::]:9750", "192.168.10.5:9750",
                                     "press-07.plant.example:9750"])
def test_a_non_loopback_listen_address_needs_allow_remote(tmp_path: Path, address: str) -> None:
    path = write(tmp_path, SIM + TOWER + f'[diagnostics]\nlisten = ["{address}"]\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:{SIM.count(chr(10)) + TOWER.count(chr(10)) + 2}:11: "
                              f"'{address}' is not a loopback address")
    assert "allow_remote = true" in problem and "tailscale serve" in problem


def test_allow_remote_needs_a_token_file(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + '[diagnostics]\nlisten = ["0.0.0.0:9750"]\n'
                 'allow_remote = true\n')
    [problem] = problems_of(path)
    assert "'allow_remote' needs 'token_file'" in problem and ":3:" not in problem


def test_allow_remote_with_a_token_file_requires_the_token_for_reads(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + '[diagnostics]\nlisten = ["127.0.0.1:9750", "0.0.0.0:9750"]\n'
                 'allow_remote = true\ntoken_file = "token"\n')
    d = load_config(path).diagnostics
    assert d.allow_remote and d.token_for_reads and d.listen[1] == ("0.0.0.0", 9750)
    loopback = write(tmp_path, SIM + TOWER + '[diagnostics]\nlisten = ["localhost:9750", "[::1]:9750"]\n')
    assert not load_config(loopback).diagnostics.token_for_reads


def test_allowed_hosts_are_read_and_bad_ones_located(tmp_path: Path) -> None:
    good = write(tmp_path, SIM + TOWER + '[diagnostics]\n'
                 'allowed_hosts = ["press-07.tail1234.ts.net", "grafana.plant.example:8443"]\n')
    assert load_config(good).diagnostics.allowed_hosts == ("press-07.tail1234.ts.net",
                                                           "grafana.plant.example:8443")
    bad = write(tmp_path, SIM + TOWER + '[diagnostics]\nallowed_hosts = ["ok.example", "*.ts.net", '
                '"x.example:70000"]\n')
    problems = problems_of(bad)
    assert len(problems) == 2
    assert "'*.ts.net' is not a host name or address" in problems[0] and "no wildcards" in problems[0]
    assert "'x.example:70000' has no valid port" in problems[1]


def test_on_exit_that_lights_green_is_a_warning(tmp_path: Path) -> None:
    for on_exit, col in (('"on"', 11), ('{ red = "on", green = "on" }', 33)):
        path = write(tmp_path, SIM + f"[tower]\non_exit = {on_exit}\n" + TOWER)
        warnings = [w for w in load_config(path).warnings if "on_exit" in w]
        assert warnings == [f"{path}:{SIM.count(chr(10)) + 2}:{col}: on_exit lights green after "
                            "the agent stops: a machine nobody watches would look like it is "
                            "producing; light red or amber instead, or \"off\""]
    path = write(tmp_path, SIM + '[tower]\non_exit = { red = "on" }\n' + TOWER)
    assert not [w for w in load_config(path).warnings if "on_exit" in w]


def test_a_config_or_rule_path_that_is_a_device_is_refused_not_read_forever(
        tmp_path: Path) -> None:
    assert problems_of(Path("/dev/zero")) == [
        "/dev/zero:1:1: cannot read the config file: it is a character device, not a regular file"]
    path = write(tmp_path, 'rules = ["/dev/zero"]\n' + SIM + TOWER)
    [problem] = problems_of(path)
    assert problem == (f"{path}:1:10: cannot read rule file /dev/zero: it is a character "
                       "device, not a regular file")


def test_agent_toml_nested_2000_deep_is_a_located_error(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + "x = " + "[" * 2000 + "]" * 2000 + "\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:8:37:") and "nest deeper than 32 levels" in problem


def test_a_sim_constant_beyond_64_bits_is_a_located_error(tmp_path: Path) -> None:
    sim = ('[sources.machine]\ntype = "sim"\n[sources.machine.inputs]\n'
           'fault_code = { wave = "constant", value = 99999999999999999999999 }\n'
           'running = { wave = "constant", value = true }\n')
    [problem] = problems_of(write(tmp_path, sim + TOWER))
    assert problem.startswith(f"{tmp_path / 'agent.toml'}:4:") and "is too large" in problem


def test_a_lamp_on_a_modbus_source_with_no_sources_configured_is_refused_by_check_too(
        tmp_path: Path) -> None:
    """It used to pass check (sources were only compared when there were some) and then
    stop `run` when the tower was built."""
    path = write(tmp_path, '[tower]\nsource = "io"\n[tower.lamps]\nred = { coil = 0 }\n'
                 'green = { coil = 1 }\namber = { virtual = true }\n')
    problems = problems_of(path)
    assert [p.split(": ", 1)[1].split(" (bound at")[0] for p in problems] == [
        "lamp 'red' names source 'io'", "lamp 'green' names source 'io'"]
    assert all("which is not a Modbus source (Modbus sources: none)" in p for p in problems)
