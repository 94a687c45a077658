"""The whole agent on a full disk: it starts, drives its lamps, reports degraded, and recovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.agent_proc import AgentProcess, journal_records, write_config
from tests.fixtures.diskfull import fill_disk

pytestmark = pytest.mark.root


def test_the_agent_starts_on_a_full_disk_and_announces_the_drops_when_space_returns(
        tmp_path: Path, tiny_fs: Path) -> None:
    config = write_config(tmp_path / "agent")
    (tmp_path / "agent" / "data").symlink_to(tiny_fs)  # data_dir on the 2 MiB tmpfs
    with AgentProcess(config) as agent:
        agent.start()  # a healthy journal first
        assert agent.stop() == 0
        ballast = fill_disk(tiny_fs)
        agent.start()  # used to exit 1 after taking the full disk for damage
        status = agent.wait_status(
            lambda s: s["state"]["name"] != "unknown" and s["queue"]["dropped"] > 0,
            what="a known state and refused events on the full disk")
        assert status["health"]["status"] == "degraded"
        assert any("journal" in r and "cannot be opened" in r
                   for r in status["health"]["reasons"]), status["health"]
        assert status["tower"]["lamps"], "no lamps driven"
        ballast.unlink()
        agent.wait_status(lambda s: "cannot be opened" not in " ".join(s["health"]["reasons"]),
                          what="the journal open again once space returned")
        assert agent.stop() == 0
    records = journal_records(tmp_path / "agent" / "data")
    gaps = [r for r in records if r.kind == "gap" and r.name == "disk_full"]
    assert gaps and gaps[0].attrs["count"] >= status["queue"]["dropped"]
    assert not list(tiny_fs.glob("journal.db.rebuild*")) and not list(
        tiny_fs.glob("journal.db.corrupt*"))
