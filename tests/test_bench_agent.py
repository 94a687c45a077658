"""bench/agent.py measures the agent as shipped: its MQTT inflight window is the agent's default."""

from __future__ import annotations

from pathlib import Path

from bench.agent import CONDITIONS, build_parser, verdict, write_setup
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


def _figures(*p99s: float) -> dict[str, dict[str, float]]:
    return {name: {"command_p99_ms": p99} for name, p99 in zip(CONDITIONS, p99s, strict=True)}


def test_the_verdict_compares_each_p99_with_the_period_not_their_spread() -> None:
    # three equal p99s of 30 ms have no spread, and are still half a period late
    assert verdict(_figures(30.0, 30.0, 30.0), 20.0) == {
        "within_one_period": False, "late_conditions": list(CONDITIONS)}
    assert verdict(_figures(18.0, 19.0, 32.8), 20.0) == {
        "within_one_period": False, "late_conditions": ["backlog_drain"]}
    assert verdict(_figures(1.0, 20.0, 2.0), 20.0) == {
        "within_one_period": True, "late_conditions": []}


def test_the_latch_lane_is_its_own_run_and_off_by_default() -> None:
    assert build_parser().parse_args([]).latch is False
    assert build_parser().parse_args(["--latch", "--quick"]).latch is True
