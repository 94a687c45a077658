"""The shared test harness: the real components and helpers that tests/ and bench/ both use.

A mosquitto broker (`mosquitto`), a TCP proxy that stalls and cuts (`proxy`), an independent
MQTT 5 subscriber (`subscriber`), the agent as a subprocess (`agent_proc`), a headless
Chromium (`chromium`), a synthetic history day (`history`), a free loopback port (`ports`)
and polling with a deadline (`waiting`). It imports the product and nothing of tests/ or
bench/; bench/ imports it and never tests/; tests/ import it and, to test them, bench/'s
modules (tests/test_layout.py keeps these directions). Not part of the .deb.
"""
