"""bench/agent.py measures the agent as shipped: its MQTT inflight window is the agent's default."""

from __future__ import annotations

from pathlib import Path

from bench.agent import build_parser, write_setup
from linelight.agent.config import load_config
from linelight.agent.mqtt.config import MqttSettings
from tests.fixtures.mosquitto import free_port


def test_the_benchmark_window_defaults_to_the_agents_shipped_default(tmp_path: Path) -> None:
    shipped = MqttSettings().inflight
    assert build_parser().parse_args([]).inflight == shipped
    assert build_parser().parse_args(["--inflight", "64"]).inflight == 64
    path, _ = write_setup(tmp_path, "20ms", free_port())
    config = load_config(path)
    assert config.mqtt is not None and config.mqtt.inflight == shipped
    path, _ = write_setup(tmp_path / "small", "20ms", free_port(), 64)
    small = load_config(path)
    assert small.mqtt is not None and small.mqtt.inflight == 64
