"""The config schema and the config reader give one verdict: both come from the same key tables.

Each case is a config snippet that the reader (`load_config`) and the JSON Schema must both
accept or both reject; the first cases are the drifts found in review (the integer 0 for a
duration, `max_age` in days, a plain string where an array is usual).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from linelight.agent.config import SCAN_KEYS, TOP_KEYS, load_config
from linelight.agent.diagnostics_config import DIAGNOSTICS_KEYS
from linelight.agent.journal import JOURNAL_KEYS
from linelight.agent.mqtt import MQTT_KEYS
from linelight.agent.schema import config_schema
from linelight.rules.errors import ConfigProblems
from linelight.rules.fields import Problems, Table
from linelight.rules.keys import Key, Keys
from linelight.rules.tomldoc import TomlDoc

ROOT = Path(__file__).resolve().parents[2]
RULES = '[[state]]\nname = "running"\ncode = 1\npriority = 1\nwhen = true\n'
SIM = '[sources.s]\ntype = "sim"\n'

CASES = [
    # (snippet, accepted by both)
    ('[journal]\nmax_age = 0\n', True),
    ('[journal]\nmax_age = "7d"\n', True),
    ('[journal]\nmax_age = "a week"\n', False),
    ('[journal]\ncommit_window = 0\n', True),
    ('[journal]\nmax_bytes = 1000\n', False),
    ('[journal]\nmax_bytes = "1GiB"\n', True),
    ('[journal]\nmax_group = 0\n', False),
    ('rules = "rules.d/*.toml"\n', True),
    ('rules = ["rules.d/*.toml"]\n', True),
    ('rules = 5\n', False),
    ('[diagnostics]\nlisten = "127.0.0.1:9751"\n', True),
    ('[diagnostics]\nlisten = 9750\n', False),
    ('[diagnostics]\nlisten = ["localhost"]\n', False),
    ('agent_id = "press 7"\n', False),
    ('agent_id = "press-7"\n', True),
    ('[scan]\nperiod = 0\n', False),
    ('[scan]\nperiod = "5ms"\n', True),
    ('[scan]\ndeadband = -1.0\n', False),
    ('[scan.deadbands]\ntemperature = 0.5\n', True),
    ('[mqtt]\nport = 70000\n', False),
    ('[mqtt]\nprotocol = "4"\n', False),
    ('[mqtt]\nkeepalive = "30s"\ninflight = 64\n[mqtt.backoff]\ninitial = "1s"\n', True),
    ('[mqtt]\nclient_id = "has space"\n', False),
    ('[tower]\nblink_fast_hz = 0\n[tower.lamps]\nred = { virtual = true }\namber = { virtual = true }\n', False),
    ('[tower]\nblink_fast_hz = 50\n[tower.lamps]\nred = { virtual = true }\namber = { virtual = true }\n', True),
    ('[tower]\nrefresh = "2s"\n[tower.lamps]\nred = { virtual = true }\namber = { virtual = true }\n', True),
    ('[sources.m]\ntype = "modbus_tcp"\nhost = "h"\nunit = 300\n', False),
    ('[sources.m]\ntype = "modbus_tcp"\nhost = "h"\nstale_after = "7d"\n', True),
    ('[sources.s]\ntype = "sim"\n[sources.s.inputs]\nx = { wave = "square", duty = 1.0 }\n',
     False),
    ('[sources.s]\ntype = "sim"\n[sources.s.machine]\nfault_code = 0\n', False),
    ('[outputs]\nretry = 0\n[outputs.wiring]\n', False),
    ('[outputs]\nrefresh = "2s"\non_exit = "on"\n[outputs.wiring]\n', True),
    ('[outputs.wiring]\nmay_start = { coils = 1 }\n', False),
    ('[outputs]\non_exit = "blink_fast"\n[outputs.wiring]\n', False),
]


def _schema_ok(text: str) -> bool:
    schema = config_schema()
    return jsonschema.Draft7Validator(schema).is_valid(tomllib.loads(text))


def _reader_ok(tmp_path: Path, text: str) -> bool:
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    (tmp_path / "rules.d" / "r.toml").write_text(RULES)
    path = tmp_path / "agent.toml"
    path.write_text(text if "[sources." in text else text + SIM)
    try:
        load_config(path)
    except ConfigProblems:
        return False
    return True


@pytest.mark.parametrize(("text", "accepted"), CASES, ids=[c[0].strip() for c in CASES])
def test_the_schema_and_the_reader_agree(tmp_path: Path, text: str, accepted: bool) -> None:
    assert (_reader_ok(tmp_path, text), _schema_ok(text)) == (accepted, accepted)


def test_the_committed_config_schema_is_current() -> None:
    committed = json.loads((ROOT / "docs/schema/config.schema.json").read_text())
    assert committed == config_schema(), \
        "run: linelight schema config > docs/schema/config.schema.json"


def test_the_schema_lists_exactly_the_declared_keys() -> None:
    props = config_schema()["properties"]
    assert tuple(props) == TOP_KEYS.names
    for name, keys in (("scan", SCAN_KEYS), ("diagnostics", DIAGNOSTICS_KEYS),
                       ("journal", JOURNAL_KEYS), ("mqtt", MQTT_KEYS)):
        assert tuple(props[name]["properties"]) == keys.names


def test_defaults_in_the_schema_are_the_readers_defaults() -> None:
    props = config_schema()["properties"]
    assert "(default 20ms" in props["scan"]["properties"]["period"]["description"]
    assert "(default 7d" in props["journal"]["properties"]["max_age"]["description"]
    assert "(default 256MiB" in props["journal"]["properties"]["max_bytes"]["description"]


def test_a_reader_that_reads_an_undeclared_key_fails_loudly() -> None:
    keys = Keys("a section", (Key("known", "integer", "a known key", 1),))
    table = keys.bind(Table.root(TomlDoc.parse("known = 2\n", "x.toml"), Problems()))
    assert keys.read(table, "known") == 2
    with pytest.raises(KeyError, match="reads 'other', which its key table does not declare"):
        table.integer("other", 0)


def test_every_declared_mqtt_key_is_one_the_reader_accepts(tmp_path: Path) -> None:
    text = ('[mqtt]\nhost = "b"\nport = 8883\nprotocol = "5"\nkeepalive = "20s"\n'
            'connect_timeout = "5s"\npuback_timeout = "20s"\nclient_id = "c"\nusername = "u"\npassword_file = "p"\n'
            'topic_prefix = "x/{agent}"\ncodec = "json"\ntopic_mode = "umh"\ndialect = "umh"\n'
            'inflight = 10\n'
            'historical_after = "1m"\nflush_on_stop = "3s"\n'
            '[mqtt.tls]\nca_file = "ca"\ncert_file = "c"\nkey_file = "k"\n'
            'insecure_skip_hostname = false\n'
            '[mqtt.umh]\nenterprise = "e"\nsite = "s"\narea = "a"\nline = "l"\nworkcell = "w"\n'
            'data_contract = "_raw"\n'
            '[mqtt.sparkplug]\ngroup_id = "g"\nedge_node_id = "n"\ndevice_id = "d"\n'
            'primary_host_id = "h"\n'
            '[mqtt.replay]\nmsgs_per_s = 10.0\nbytes_per_s = "1MB"\n'
            '[mqtt.backoff]\ninitial = "1s"\nmax = "30s"\n')
    written = {k for k in tomllib.loads(text)["mqtt"]}
    assert written == set(MQTT_KEYS.names)
    assert _reader_ok(tmp_path, text) and _schema_ok(text)
