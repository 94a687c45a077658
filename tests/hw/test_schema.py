"""The JSON Schema of [sources.*] and [tower] stays in step with the readers: every key the
schema lists is used by one of the hand-written variants below, and the readers accept every
variant without an 'unknown key' problem."""

from __future__ import annotations

import re

from linelight.hw.schema import sources_schema_part, tower_schema_part
from tests.hw.helpers import config_problems

MODBUS_COMMON = ('unit = 1\npoll = "1s"\ntimeout = "1s"\nstale_after = "3s"\n'
                 'reconnect_min = "1s"\nreconnect_max = "5s"\nmax_gap = 2\nmax_count = 50\n')
REG = 'type = "float32", word_order = "little", byte_order = "big", scale = 2.0, offset = 1.0'
SOURCES = {
    "modbus_tcp": f'type = "modbus_tcp"\nhost = "h"\nport = 502\n{MODBUS_COMMON}'
                  '[sources.s.inputs]\n'
                  f'a = {{ coil = 1, unit = 2 }}\nb = {{ discrete_input = 1 }}\n'
                  f'c = {{ input_register = 1, {REG} }}\nd = {{ holding_register = 9, bit = 3 }}\n',
    "modbus_rtu": f'type = "modbus_rtu"\ndevice = "/dev/ttyS0"\nbaudrate = 9600\n'
                  f'parity = "even"\nstopbits = 2\nbytesize = 8\n{MODBUS_COMMON}',
    "s7": 'type = "s7"\nhost = "h"\nport = 102\nrack = 0\nslot = 2\npoll = "1s"\n'
          'timeout = "1s"\nstale_after = "3s"\nreconnect_min = "1s"\nreconnect_max = "5s"\n'
          'max_gap = 4\nremote_tsap = "03.01"\nlocal_tsap = "01.00"\n[sources.s.inputs]\n'
          'a = { address = "DB10.DBD8", type = "REAL", scale = 2.0, offset = 1.0 }\n',
    "opcua": 'type = "opcua"\nendpoint = "opc.tcp://h:4840"\npublishing_interval = "100ms"\n'
             'sampling_interval = "50ms"\ntimeout = "2s"\nreconnect_min = "1s"\n'
             'reconnect_max = "5s"\nsecurity_policy = "Basic256Sha256"\n'
             'security_mode = "Sign"\ncertificate = "c.der"\nprivate_key = "k.pem"\n'
             'server_certificate = "s.der"\ntrust_any_server = false\nusername = "u"\n'
             'password_file = "p"\n'
             '[sources.s.inputs]\na = { node = "ns=2;i=1042", deadband = 0.5 }\n'
             'b = { path = "Line/Speed" }\n',
    "gpiozero": 'type = "gpiozero"\npin_factory = "mock"\n[sources.s.inputs]\n'
                'a = { pin = 17, pull = "up", active_low = true, debounce = "5ms" }\n',
    "gpiochip": 'type = "gpiochip"\nchip = "/dev/gpiochip1"\n[sources.s.inputs]\n'
                'a = { line = "A", bias = "pull_up", active_low = true, debounce = "5ms" }\n',
    "sim": 'type = "sim"\nperiod = "50ms"\nseed = 3\nmodel = "machine"\n'
           '[sources.s.machine]\ncycle = "1s"\nproducing = "5s"\nmicrostop = "1s"\n'
           'fault = "2s"\nidle = "2s"\nfault_code = 9\nrpm = 100.0\n'
           '[sources.s.inputs]\n'
           'a = { wave = "square", type = "bool", period = "1s", low = 0, high = 1, duty = 0.3 }\n'
           'b = { wave = "random_walk", low = 0, high = 9, step = 0.5, start = 1 }\n'
           'c = { wave = "script", repeat = false, steps = [{ value = 1, hold = "1s" }] }\n'
           'd = { wave = "constant", value = 4 }\n',
}
TOWER = ('[sources.io]\ntype = "modbus_tcp"\nhost = "h"\n'
         '[tower]\nsource = "io"\nchip = "/dev/gpiochip0"\npin_factory = "mock"\n'
         'blink_slow_hz = 1.0\nblink_fast_hz = 3.0\nrefresh = "2s"\nretry = "1s"\n'
         'write_timeout = "1s"\non_exit = { red = "on" }\n'
         '[tower.lamps]\nred = { pin = 17, active_low = true }\n'
         'amber = { line = 3, chip = "/dev/gpiochip1" }\ngreen = { coil = 1, source = "io", unit = 2 }\n'
         'blue = { holding_register = 4, bit = 1 }\nwhite = { virtual = true }\n'
         'buzzer = { s7 = "Q0.1", source = "plc" }\n'
         '[sources.plc]\ntype = "s7"\nhost = "h"\n')
# lamp kinds beyond the five above, each in a tower of its own
MORE_TOWERS = ('[sources.ua]\ntype = "opcua"\nendpoint = "opc.tcp://h:4840"\n'
               '[tower.lamps]\nblue = { opcua = "ns=2;s=Blue", source = "ua" }\n',)


def _keys(text: str) -> set[str]:
    """Keys written as `key =` plus the last part of every table header."""
    return (set(re.findall(r"(?:^|[{,]\s*)([a-z_][a-z0-9_]*)\s*=", text, re.M))
            | set(re.findall(r"^\[[a-z_.]*\.([a-z_]+)\]", text, re.M)))


def _schema_keys(schema: dict) -> set[str]:
    keys: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        keys.add(key)
        keys |= _schema_keys(sub)
        if isinstance(sub.get("additionalProperties"), dict):
            keys |= _schema_keys(sub["additionalProperties"])
        for alt in sub.get("anyOf", []):
            keys |= _schema_keys(alt)
        if sub.get("type") == "array":
            keys |= _schema_keys(sub.get("items", {}))
    return keys


def test_readers_accept_every_variant_without_unknown_keys():
    for name, body in SOURCES.items():
        problems = config_problems(f"[sources.s]\n{body}")
        assert not [p for p in problems if "unknown key" in p], (name, problems)
    assert config_problems(TOWER) == []
    for tower in MORE_TOWERS:
        assert config_problems(tower) == [], tower


def test_every_schema_key_is_used_by_a_variant():
    used = set().union(*(_keys(b) for b in SOURCES.values()))
    for variant in sources_schema_part()["additionalProperties"]["oneOf"]:
        missing = _schema_keys(variant) - used
        assert not missing, f"{variant['description']}: schema keys no variant uses: {missing}"
    lamps = {"red", "amber", "green", "blue", "white", "buzzer"}
    used_by_towers = set().union(_keys(TOWER), *(_keys(t) for t in MORE_TOWERS))
    missing = _schema_keys(tower_schema_part()) - used_by_towers - lamps - {"profile"}
    assert not missing, missing
