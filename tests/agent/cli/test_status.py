"""`linelight status` against a diagnostics endpoint that asks for the token on every read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
import pytest

from linelight.agent.cli.status import check_identity, normalize_url, read_config
from linelight.agent.diagnostics import Diagnostics
from tests.agent.test_diagnostics import Target, serving

ROOT = Path(__file__).resolve().parents[3]


async def status_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await anyio.run_process([sys.executable, "-m", "linelight.agent", "status", *args],
                                   cwd=ROOT, check=False, env=env)
    return proc.returncode or 0, proc.stdout.decode(), proc.stderr.decode()


def test_the_default_url_is_the_agents_default_listen_address() -> None:
    from linelight.agent.addresses import DEFAULT_LISTEN
    from linelight.agent.cli.status import DEFAULT_URL
    from linelight.agent.diagnostics_config import DiagnosticsSettings

    assert f"http://{DEFAULT_LISTEN[0]}" == DEFAULT_URL
    assert DiagnosticsSettings().listen == (("127.0.0.1", 9750),)


@pytest.mark.parametrize(("given", "url"), [
    ("127.0.0.1:9750", "http://127.0.0.1:9750"), ("[::1]:9750/", "http://[::1]:9750"),
    ("http://press:9750/", "http://press:9750"), ("::1:9750", "http://[::1]:9750")])
def test_url_takes_host_port_or_a_url(given: str, url: str) -> None:
    assert normalize_url(given) == url


@pytest.mark.anyio
async def test_url_takes_an_ipv6_host_port_with_or_without_brackets() -> None:
    async with serving(Diagnostics(Target(), [("::1", 0)], None)) as port:
        answers = [await status_cli("--url", url) for url in (f"::1:{port}", f"[::1]:{port}")]
    for code, out, err in answers:
        assert code == 1 and "agent press-7 · up" in out, err  # answered; the Target degraded


@pytest.mark.parametrize("host", ["ipc_7+cell.plant.local", ""])
def test_without_agent_id_the_identity_check_expects_the_id_the_agent_gives_itself(
        host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from linelight.agent.cli.status import StatusError
    from linelight.agent.config import load_config

    monkeypatch.setattr(socket, "gethostname", lambda: host)  # a name a client id cannot be
    (tmp_path / "m.toml").write_text('[inputs]\nrunning = { type = "bool" }\n[[state]]\n'
                                     'name = "on"\ncode = 1\npriority = 1\nwhen = "running"\n')
    path = tmp_path / "agent.toml"
    path.write_text('rules = ["m.toml"]\n')
    config = load_config(path)
    assert config.agent_id == ("ipc_7-cell" if host else "linelight")
    answered = {"agent": config.agent_id, "config": str(path)}
    identity = read_config(path)
    check_identity(answered, identity, path, "http://127.0.0.1:9750")  # itself
    with pytest.raises(StatusError, match="another agent holds that diagnostics port"):
        check_identity({**answered, "agent": "other"}, identity, path, "http://127.0.0.1:9750")
    # --url with --config: the agent may be another machine's, its config file elsewhere
    remote = {**answered, "config": "/etc/linelight/agent.toml"}
    check_identity(remote, identity, path, "http://press:9750", here=False)
    with pytest.raises(StatusError, match="another agent holds that diagnostics port"):
        check_identity(remote, identity, path, "http://127.0.0.1:9750")


def test_status_reads_the_config_with_the_agents_own_readers(tmp_path: Path) -> None:
    """The id, the listen address and the token file status uses are the ones the agent's
    config reader gives (relative paths from the config's folder), even while the rules are
    broken; a broken [diagnostics] is said with its location."""
    from linelight.agent.cli.status import StatusError, endpoint, read_token
    from linelight.agent.config import load_config

    (tmp_path / "m.toml").write_text('[inputs]\nrunning = { type = "bool" }\n[[state]]\n'
                                     'name = "on"\ncode = 1\npriority = 1\nwhen = "running"\n')
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text("t0ken\n")
    path = tmp_path / "agent.toml"
    path.write_text('agent_id = "press-7"\nrules = ["m.toml"]\n[diagnostics]\n'
                    'listen = ["[::1]:9761"]\ntoken_file = "secret/token"\n')
    agent = load_config(path)
    identity = read_config(path)
    assert (identity.agent_id, identity.diagnostics) == (agent.agent_id, agent.diagnostics)
    args = argparse.Namespace(url=None, config=path)
    assert endpoint(args, identity) == "http://[::1]:9761"
    assert read_token(identity) == ("t0ken", str(tmp_path / "secret" / "token"))

    (tmp_path / "m.toml").write_text("[[state]]\nname = \"on\"\ncode = oops\n")  # bad rules
    assert read_config(path) == identity
    path.write_text('[diagnostics]\nlisten = ["0.0.0.0:9750"]\n')
    with pytest.raises(StatusError, match=r"agent.toml:2:.*not a loopback address"):
        read_config(path)


@pytest.mark.anyio
async def test_status_sends_the_config_token_and_says_wrong_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'agent_id = "press-7"\n[diagnostics]\ntoken_file = "{token}"\n')
    target = Target()
    async with serving(Diagnostics(target, [("127.0.0.1", 0)], token,
                                   token_for_reads=True)) as port:
        url = f"127.0.0.1:{port}"
        without = await status_cli("--url", url)
        code, out, _ = await status_cli("--url", url, "--config", str(config))
        token.write_text("changed\n")
        config.write_text(f'agent_id = "press-7"\n[diagnostics]\n'
                          f'token_file = "{tmp_path / "old"}"\n')
        (tmp_path / "old").write_text("s3cret-old\n")
        wrong = await status_cli("--url", url, "--config", str(config))
    assert without[0] == 1 and "a token is required" in without[2]
    assert code == 1 and "agent press-7" in out  # answered; the Target is degraded
    assert wrong[0] == 1 and "refused /status: wrong token" in wrong[2]
    assert f"sent the token from {tmp_path / 'old'}" in wrong[2]
    assert "s3cret" not in wrong[2] + without[2]


@pytest.mark.anyio
async def test_status_reads_a_credentials_directory_token(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "diagnostics-token").write_text("s3cret\n")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = tmp_path / "agent.toml"
    config.write_text('agent_id = "press-7"\n[diagnostics]\n'
                      'token_file = "$CREDENTIALS_DIRECTORY/diagnostics-token"\n')
    async with serving(Diagnostics(Target(), [("127.0.0.1", 0)], token,
                                   token_for_reads=True)) as port:
        code, out, err = await status_cli("--url", f"127.0.0.1:{port}", "--config", str(config),
                                          "--credentials-dir", str(creds))
    assert "agent press-7" in out, err


@pytest.mark.anyio
async def test_the_inputs_are_aligned_rows_with_source_and_never_read_ones_say_init(
        tmp_path: Path) -> None:
    from linelight.agent.cli.status import summary
    from tests.agent.test_health import agent_with_sources
    from tests.hw.helpers import wait_until

    async with agent_with_sources(tmp_path) as agent:
        await wait_until(lambda: agent.status()["inputs"]["a"]["quality"] == "good"
                         and bool(agent.status()["inputs"]["b"].get("reason")),
                         what="a read, b refused")
        text = summary(agent.status(), "http://127.0.0.1:9750")
    rows = text.split("\ninputs\n", 1)[1].splitlines()[:3]
    cells = {row.split()[0]: row.split(None, 5) for row in rows}
    assert cells["b"][1:5] == ["-", "init", "-", "gone"], rows  # never read: not `None`
    assert "connection refused by 127.0.0.1:" in cells["b"][5], rows
    assert (cells["a"][2], cells["a"][-1], cells["c"][-1]) == ("good", "plc", "demo"), rows
    assert len({row.index(cells[row.split()[0]][2]) for row in rows}) == 1, rows  # aligned


def test_the_summary_lists_the_outputs_and_says_which_cannot_be_written() -> None:
    from linelight.agent.cli.status import summary

    status = {"state": {"name": "stopped", "code": 40000, "for_s": 2}, "lamps": {},
              "outputs": {"may_start": True, "horn": False},
              "output_lines": {"outputs": {"may_start": {"failing": False},
                                           "horn": {"failing": True}}}}
    assert "outputs    may_start on, horn off (CANNOT WRITE)" in summary(
        status, "http://x").splitlines()
