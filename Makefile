# linelight developer entry points. `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
APT_PACKAGES := mosquitto mosquitto-clients openssl lintian debootstrap dpkg-dev fakeroot systemd binutils-aarch64-linux-gnu chromium chromium-driver
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv demo test lint typecheck unit bench bench-quick deb clean proto

setup: apt venv

# System packages the tests need (a real mosquitto broker, openssl for test CAs, the .deb tools).
# node and npm (the aedes and Node-RED tests) are looked for as commands: a machine may have
# another vendor's nodejs, which bundles npm and conflicts with Debian's npm package.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV) || { $(SUDO) apt-get install -y -q python3-venv && $(PY) -m venv $(VENV); }

venv: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]'
	@$(BIN)/python -c 'import linelight.agent, linelight.rules, linelight.hw, paho.mqtt, pymodbus, anyio'

# The demo: a line of three simulated machines, the example rules, stack lights, the queue, a broker.
demo: setup
	$(BIN)/linelight demo

# agent/mqtt/sparkplug_b_pb2.py from our Sparkplug B schema (committed; regenerate after
# editing the .proto: tests/agent/mqtt/test_sparkplug_proto.py fails until you do)
PROTOC := $(BIN)/python -m grpc_tools.protoc
proto:
	$(PROTOC) -Iagent/mqtt --python_out=agent/mqtt agent/mqtt/sparkplug_b.proto

lint:
	$(BIN)/ruff check agent rules hw tests bench harness packaging

# mypy cannot follow setuptools' editable finder: it reads the packages through a link tree
# laid out as installed (linelight/agent -> agent/, ...).
typecheck:
	@mkdir -p build/typecheck/linelight
	@for p in agent rules hw; do ln -sfn ../../../$$p build/typecheck/linelight/$$p; done
	$(BIN)/mypy

unit:
	$(BIN)/pytest -q -p no:cacheprovider

# The whole test suite: lint, types, then every test.
test: setup lint typecheck unit

bench: setup
	$(BIN)/python -m bench.all

bench-quick: setup
	$(BIN)/python -m bench.all --quick

deb: setup
	bash packaging/build.sh

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
