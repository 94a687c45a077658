"""The diagnostics page in a real headless chromium, against the agent as a subprocess.

The agent runs a simulated input and a real mosquitto; the test changes the state by editing
the rule file (the agent reloads it by itself) and watches the page follow without a reload.
The screenshots in docs/operations.md are written here, with a day of synthetic history
(harness/history.py) before the agent's own minutes, so the timeline shows a shift.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import chromium
from harness.agent_proc import (
    ROOT,
    VIRTUAL_TOWER,
    AgentProcess,
    write_config,
    write_machines_config,
)
from harness.history import write_day
from harness.mosquitto import Mosquitto

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium.missing() is not None,
                                 reason=chromium.missing() or "chromium is installed")]

DOCS = ROOT / "docs" / "img"
TOKEN = "page-test-token"

RULES = """\
[inputs]
level = { type = "int", stale_after = "2s" }

[[state]]
name = "fault"
code = 180000
priority = 100
when = "level > 5"
show = { red = "blink_fast", buzzer = "on" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "level > 0"
show = { green = "on" }

[[state]]
name = "idle"
code = 40000
priority = 30
when = "level <= 0"
show = { amber = "on" }

[[signal]]
name = "level_present"
priority = 10
when = "level > 0"
show = { blue = "blink_slow" }

[unknown]
code = 30000
show = { amber = "blink_fast" }
"""
# the single machine's start permit, so the page shows an [[output]] too
PERMIT = """
[[output]]
name = "may_start"
when = "state == 'producing'"
"""
OUTPUTS = "\n[outputs.wiring]\nmay_start = { virtual = true }\n"

SOURCES = """\
[sources.line]
type = "sim"
period = "50ms"

[sources.line.inputs]
level = { wave = "constant", type = "int", value = 1 }

[sources.plc]
type = "modbus_tcp"
host = "127.0.0.1"
port = 9
timeout = "200ms"

[sources.plc.inputs]
spare = { coil = 0 }
"""


@pytest.fixture
def agent(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[AgentProcess]:
    """A running agent whose history already holds a synthetic day up to a minute ago."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port, rules=RULES + PERMIT,
                          sources=SOURCES, tower=VIRTUAL_TOWER + OUTPUTS, agent_id="press-07",
                          extra=f'token_file = "{token}"')
    (config.parent / "data").mkdir()
    write_day(config.parent / "data" / "history.db", int(time.time() * 1000) - 60_000)
    with AgentProcess(config) as proc:
        proc.start()
        proc.wait_status(lambda s: s["state"]["name"] == "producing"
                         and s["broker"]["connected"], what="producing and connected")
        yield proc
        assert proc.stop() == 0


def wait_for(driver: Any, script: str, what: str, timeout: float = 30.0) -> Any:
    """Poll a JS expression in the page until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"the page did not show {what} within {timeout:.0f} s "
                         f"(last: {value!r}); console: {chromium.console_errors(driver)}")


def open_page(driver: Any, agent: AgentProcess) -> None:
    driver.get(f"http://127.0.0.1:{agent.port}/")
    wait_for(driver, "document.getElementById('timeline').dataset.bands", "the timeline")


def test_page_shows_the_state_and_follows_a_change_live_with_a_new_band(
        agent: AgentProcess) -> None:
    with chromium.browser() as driver:
        open_page(driver, agent)
        assert driver.find_element("id", "state-name").text == "producing"
        lamps = driver.find_element("id", "lamptext").text
        assert "green on" in lamps and "blue blinking slowly" in lamps and "red off" in lamps
        assert driver.find_elements("css selector", "#tower .lamp.blink_slow")
        wait_for(driver, "document.getElementById('outputs').textContent === 'may_start output on'",
                 "the start permit on")
        driver.execute_script("window.notReloaded = true;")
        changed_ms = time.time() * 1000

        rules = agent.config.parent / "rules.d" / "machine.toml"
        rules.write_text((RULES + PERMIT).replace('when = "level > 5"', 'when = "level > 0"'))

        wait_for(driver, "document.getElementById('state-name').textContent === 'fault'",
                 "the state fault")
        assert driver.execute_script("return window.notReloaded === true;"), "the page reloaded"
        timeline = driver.find_element("id", "timeline")
        assert timeline.get_attribute("data-last-band") == "fault"
        last_two = driver.execute_script(
            "return window.linelightPage.view().bands.slice(-2).map(b => [b.name, b.start]);")
        assert [name for name, _ in last_two] == ["producing", "fault"]
        assert last_two[1][1] >= changed_ms - 1000  # the band starts at the change the test made
        assert "red blinking fast" in driver.find_element("id", "lamptext").text
        assert driver.find_elements("css selector", "#tower .lamp.blink_fast")
        wait_for(driver, "document.getElementById('outputs').textContent === 'may_start output off'",
                 "the start permit off in the fault")
        # the history catches up: the reload and the fault are listed with their times
        wait_for(driver, "document.querySelector('#events [data-kind=reload]') && "
                         "[...document.querySelectorAll('#events [data-kind=state]')]"
                         ".some(e => e.textContent.includes('fault'))",
                 "the reload and the fault in the list of what happened")
        assert chromium.console_errors(driver) == []


def test_inputs_and_sources_show_quality_age_source_and_link(agent: AgentProcess) -> None:
    with chromium.browser() as driver:
        open_page(driver, agent)
        row = driver.find_element("css selector", "#inputs tr[data-input=level]")
        cells = [c.text for c in row.find_elements("tag name", "td")]
        assert cells[1:3] == ["1", "good"] and cells[4] == "line"
        assert cells[3].endswith("ms") or cells[3].endswith(" s")
        spare = [c.text for c in driver.find_elements(
            "css selector", "#inputs tr[data-input=spare] td")]
        assert spare[2] in ("init", "bad", "stale") and spare[4] == "plc", spare
        plc = wait_for(driver, "(e => e && e.textContent.includes('failures') && "
                               "e.textContent)(document.querySelector('[data-source=plc]'))",
                       "the Modbus source's failures")
        assert "not connected" in plc and "next attempt in" in plc and "refused" in plc, plc
        link = driver.find_element("id", "link").text
        assert "connected" in link and "mqtt://127.0.0.1" in link
        hover = driver.execute_script(
            "const c = document.getElementById('timeline'); const r = c.getBoundingClientRect();"
            "c.dispatchEvent(new PointerEvent('pointermove', {clientX: r.left + r.width * 0.5,"
            " clientY: r.top + 40, bubbles: true}));"
            "return document.getElementById('tip').textContent;")
        assert any(s in hover for s in ("producing", "idle", "microstop", "fault")), hover
        assert chromium.console_errors(driver) == []


def test_actions_from_the_page_need_the_token(agent: AgentProcess) -> None:
    with chromium.browser() as driver:
        open_page(driver, agent)
        out = driver.find_element("id", "action-out")
        driver.find_element("id", "lamp-test").click()
        assert out.text.startswith("enter the token first")
        driver.find_element("id", "token").send_keys("wrong")
        driver.find_element("id", "lamp-test").click()
        wait_for(driver, "document.getElementById('action-out').textContent.startsWith('401')",
                 "the refusal")
        driver.find_element("id", "token").clear()
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("id", "lamp-test").click()
        wait_for(driver, "document.getElementById('action-out').textContent"
                         ".startsWith('200: lamp test started')", "the lamp test answer")
        errors = chromium.console_errors(driver)
        assert errors and all("401" in e for e in errors), errors  # the wrong token's answer
    assert "lamp test requested by unidentified caller" in agent.log()


def test_page_follows_the_device_light_or_dark_setting(agent: AgentProcess) -> None:
    background = "return getComputedStyle(document.body).backgroundColor"
    shown: dict[str, str] = {}
    with chromium.browser() as driver:
        open_page(driver, agent)
        for scheme in ("light", "dark"):
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]})
            shown[scheme] = driver.execute_script(background)
        assert chromium.console_errors(driver) == []
    assert shown["light"] == "rgb(244, 245, 247)" and shown["dark"] == "rgb(15, 17, 21)"


def test_phone_and_panel_widths_have_no_horizontal_scroll_and_screenshots_are_written(
        agent: AgentProcess) -> None:
    with chromium.browser(chromium.PHONE, mobile=True) as driver:
        open_page(driver, agent)
        assert driver.execute_script("return window.innerWidth") == chromium.PHONE[0]
        assert chromium.horizontal_overflow(driver) == 0
        assert driver.find_element("id", "state-name").text == "producing"
        chromium.screenshot(driver, DOCS / "diagnostics-phone.png")
        assert chromium.console_errors(driver) == []
    with chromium.browser() as driver:
        open_page(driver, agent)
        assert chromium.horizontal_overflow(driver) == 0
        chromium.screenshot(driver, DOCS / "diagnostics-desktop.png")
        assert chromium.console_errors(driver) == []
    with chromium.browser(chromium.PANEL) as driver:  # a small panel PC
        open_page(driver, agent)
        assert chromium.horizontal_overflow(driver) == 0
        assert chromium.console_errors(driver) == []


def test_when_the_agent_stops_answering_the_page_says_since_when_and_keeps_the_values(
        agent: AgentProcess) -> None:
    with chromium.browser() as driver:
        open_page(driver, agent)
        assert agent.stop() == 0
        banner = wait_for(driver, "document.getElementById('stale').className === 'on' && "
                                  "document.getElementById('stale').textContent",
                          "the not-answering banner")
        assert banner.startswith("the agent is not answering since ")
        assert driver.find_element("id", "state-name").text == "producing"
        errors = chromium.console_errors(driver)
        assert errors and all("ERR_CONNECTION_REFUSED" in e for e in errors), errors


def test_a_broker_outage_shows_its_error_once_and_on_the_timeline(
        agent: AgentProcess, mosquitto: Mosquitto) -> None:
    with chromium.browser() as driver:
        open_page(driver, agent)
        mosquitto.stop()
        wait_for(driver, "document.getElementById('link').textContent.includes('disconnected')",
                 "the link down")
        # the error and the whole page's text read in one go, so a newer error cannot slip in
        error, body = wait_for(
            driver, "(dd => dd && [dd.textContent, document.body.innerText])([...document"
                    ".querySelectorAll('#link dt')].find(dt => dt.textContent === 'because')"
                    "?.nextElementSibling)", "the broker's error")
        assert error and body.count(error) == 1, body
        assert "broker: not connected (see queue and broker)" in body
        wait_for(driver, "(v => v && v.links.length && !v.links[v.links.length - 1].up)"
                         "(window.linelightPage.view())", "the link down on the timeline")
        mosquitto.start()
        wait_for(driver, "document.getElementById('link').textContent.includes('connected for')",
                 "the link back")
        assert chromium.console_errors(driver) == []


LINE = ("press-1", "press-2")


# each machine's own simulator: the single agent's `line` source
LINE_SOURCE = SOURCES[:SOURCES.index("[sources.plc]")].replace("[sources.line", "[sources.machine")


@pytest.fixture
def line_agent(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[AgentProcess]:
    """Two machines producing, with a synthetic day of both in the history."""
    config = write_machines_config(tmp_path / "line", LINE, mqtt_port=mosquitto.port,
                                   rules=RULES, source=LINE_SOURCE, agent_id="line-07")
    (config.parent / "data").mkdir()
    write_day(config.parent / "data" / "history.db", int(time.time() * 1000) - 60_000,
              machines=LINE)
    with AgentProcess(config) as proc:
        proc.start()
        proc.wait_status(lambda s: all(s["machines"][m]["state"]["name"] == "producing"
                                       for m in LINE), what="both machines producing")
        yield proc
        assert proc.stop() == 0


CARD_STATES = ("Object.fromEntries([...document.querySelectorAll('#machines [data-machine]')]"
               ".map(c => [c.dataset.machine, c.querySelector('.state').dataset.state]))")
ROW_LAST = ("Object.fromEntries(window.linelightPage.view().rows.map(r => [r.machine, "
            "r.bands.length ? [r.bands[r.bands.length - 1].name, "
            "r.bands[r.bands.length - 1].start] : null]))")


def test_a_machine_whose_file_a_reload_rejected_says_so_on_its_card_only(
        line_agent: AgentProcess) -> None:
    rules = line_agent.config.parent / "rules"
    with chromium.browser() as driver:
        open_page(driver, line_agent)
        wait_for(driver, CARD_STATES, "the machines' cards")
        assert not driver.find_elements("css selector", "#machines .kept")
        (rules / "press-2.toml").write_text(RULES.replace('when = "level > 0"',
                                                          'when = "levl > 0"', 1))
        kept = wait_for(driver, "[...document.querySelectorAll('#machines .kept')]"
                                ".map(e => e.closest('[data-machine]').dataset.machine)"
                                ".join(',')", "the rejected machine's card")
        assert kept == "press-2"
        assert "last reload rejected: its old rules run" in driver.find_element(
            "css selector", "#machines [data-machine=press-2]").text
        assert "for machine press-2" in driver.find_element("id", "reasons").text
        assert chromium.console_errors(driver) == []
    status = line_agent.status()
    assert [m["rules"]["kept"] for m in status["machines"].values()] == [False, True]


def test_several_machines_side_by_side_each_with_its_own_band_row(
        line_agent: AgentProcess) -> None:
    rules = line_agent.config.parent / "rules"
    with chromium.browser() as driver:
        open_page(driver, line_agent)
        assert wait_for(driver, CARD_STATES, "the machines' cards") == {
            "press-1": "producing", "press-2": "producing"}
        assert not driver.find_element("id", "single").is_displayed()
        card = driver.find_element("css selector", "#machines [data-machine=press-2]")
        assert "green on" in card.text and "level_present" in card.text
        assert card.find_elements("css selector", ".tower .lamp.blink_slow")
        assert driver.find_element("id", "timeline").get_attribute("data-rows") == "2"
        level = driver.find_elements("css selector", "#inputs tr[data-input='press-2/level'] td")
        assert [c.text for c in level][2::2] == ["good", "press-2-sim"]  # its own source

        changed_ms = time.time() * 1000  # press-1 faults; then press-2 goes idle
        (rules / "press-1.toml").write_text(RULES.replace('when = "level > 5"',
                                                          'when = "level > 0"'))
        wait_for(driver, f"(s => s['press-1'] === 'fault' && s['press-2'] === 'producing')"
                         f"({CARD_STATES})", "press-1 fault, press-2 still producing")
        (rules / "press-2.toml").write_text(RULES.replace("priority = 30", "priority = 60")
                                            .replace('when = "level <= 0"', 'when = "level > 0"'))
        wait_for(driver, f"(s => s['press-1'] === 'fault' && s['press-2'] === 'idle')"
                         f"({CARD_STATES})", "press-2 idle")
        last = wait_for(driver, f"(r => r['press-2'] && r['press-2'][0] === 'idle' && r)"
                                f"({ROW_LAST})", "press-2's idle band")
        assert set(last) == set(LINE) and last["press-1"][0] == "fault"
        assert all(start >= changed_ms - 1000 for _, start in last.values()), last
        card = driver.find_element("css selector", "#machines [data-machine=press-1]")
        assert "red blinking fast" in card.text and "buzzer on" in card.text
        # the history records whose state each change is (written once a second)
        wait_for(driver, "(e => e.includes('press-1: fault') && e.includes('press-2: idle'))"
                         "(document.getElementById('events').textContent)",
                 "both machines' changes in the list of what happened")
        wanted, recorded = {("fault", "press-1"), ("idle", "press-2")}, set()
        deadline = time.monotonic() + 30
        while not recorded >= wanted and time.monotonic() < deadline:
            time.sleep(0.3)
            code, body = line_agent.http("GET", "/history?hours=0.1")
            assert code == 200, body
            recorded = {(s[1], s[3]) for s in json.loads(body)["states"]}
        assert recorded >= wanted, recorded
        summary = driver.find_element("id", "summary").text
        assert "press-1" in summary and "press-2" in summary
        assert chromium.horizontal_overflow(driver) == 0
        chromium.screenshot(driver, DOCS / "diagnostics-machines.png")
        assert chromium.console_errors(driver) == []
    with chromium.browser(chromium.PHONE, mobile=True) as driver:
        open_page(driver, line_agent)
        wait_for(driver, f"Object.keys({CARD_STATES}).length === 2", "the machines' cards")
        assert chromium.horizontal_overflow(driver) == 0
        assert chromium.console_errors(driver) == []


def test_a_fresh_agent_without_sources_lists_each_input_missing_and_is_ok_with_warnings(
        tmp_path: Path) -> None:
    """The packaged default's shape (rules, no sources, no broker): the inputs table is not
    empty, every input the rules read is a `missing` row saying why; health `ok`, warnings."""
    config = write_config(tmp_path / "agent", rules=RULES, sources="", tower="")
    with AgentProcess(config) as agent, chromium.browser() as driver:
        agent.start()
        open_page(driver, agent)
        row = wait_for(driver, "(r => r && [...r.cells].map(c => c.textContent))("
                               "document.querySelector('#inputs tr[data-input=level]'))",
                       "the level input's row")
        assert row[2] == "missing" and "delivered by no source" in row[0], row
        assert driver.find_element("id", "health").text.startswith("ok"), \
            driver.find_element("id", "health").text
        warnings = driver.find_element("id", "reasons").text
        assert "warning: input: level read by the rules but no" in warnings, warnings
        assert "warning: broker: none configured" in warnings, warnings
        assert chromium.console_errors(driver) == []
        assert agent.stop() == 0
