"""The diagnostics page with 24 h of history, rendered in headless chromium (target: < 1 s).

    python -m bench.page [--quick]

A real agent (subprocess, simulated machine, no broker) serves the page; its history file is
filled beforehand with one day (tests/fixtures/history.py): the shift story (a few dozen state
changes, an outage whose queue grows and drains, 8,640 depth samples), and the worst case, a
state mark every 8 s all day (10,800 marks; about 7,000 bands once repeats merge), and an
agent of four machines ([machines.NAME], each on its own simulator) whose history holds a
change every 30 s for each, one band row each (11,520 marks). Measured
in one chromium per case, each load in a fresh tab (a first, uncounted load warms it up):

- `first_render_ms`: navigation start to the timeline drawn with the history (the page's own
  `performance.now()`), median of the loads;
- `redraw_ms`: one timeline redraw (what every poll costs), median of 30;
- `history_bytes`: the /history answer the page asked for;
- `rows`: band rows drawn (one per machine).

The baseline, measured the same way in the same run, is the page with an empty history;
the ratios say what a day of history costs. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.fixtures import chromium
from tests.fixtures.history import write_day
from tests.integration.agent_proc import AgentProcess, write_config, write_machines_config

TARGET_MS = 1000.0
# case -> None (no history) or (seconds between state changes, 0: the shift story; machines)
CASES: dict[str, tuple[float, int] | None] = {
    "empty (baseline)": None, "24 h shift story": (0.0, 0), "24 h, a change every 8 s": (8.0, 0),
    "24 h, 4 machines, 30 s each": (30.0, 4)}


def measure(case: tuple[float, int] | None, loads: int, root: Path) -> dict[str, Any]:
    names = tuple(f"m{i + 1}" for i in range(case[1])) if case else ()
    config = (write_machines_config(root, names, agent_id="bench-page") if names
              else write_config(root, agent_id="bench-page"))
    (root / "data").mkdir()
    if case is not None:
        write_day(root / "data" / "history.db", int(time.time() * 1000) - 5_000,
                  flap_s=case[0] or None, machines=names or (None,))
    with AgentProcess(config) as agent:
        agent.start()
        url = f"http://127.0.0.1:{agent.port}/"
        with urllib.request.urlopen(url + "history?hours=24&points=1280", timeout=10) as r:
            history_bytes = len(r.read())
        firsts: list[float] = []
        with chromium.browser() as driver:
            for i in range(loads + 1):  # the first load warms the browser and is not counted
                driver.switch_to.new_window("tab")
                driver.get(url)
                deadline = time.monotonic() + 30
                first = 0.0
                while not first and time.monotonic() < deadline:
                    first = float(driver.execute_script(
                        "return window.linelightPage && window.linelightPage.firstFullRender"
                        " || 0;"))
                    time.sleep(0.02)
                if not first:
                    raise SystemExit(f"the page at {url} drew no timeline within 30 s")
                if i:
                    firsts.append(first)
            redraws = driver.execute_script(
                "const out = []; for (let i = 0; i < 30; i++) { const t = performance.now();"
                " window.linelightPage.redraw(); out.push(performance.now() - t); }"
                " return out;")
            bands, rows = driver.execute_script(
                "const d = document.getElementById('timeline').dataset;"
                " return [Number(d.bands), Number(d.rows)];")
            errors = chromium.console_errors(driver)
        agent.stop()
    return {"first_render_ms": round(statistics.median(firsts), 1),
            "first_render_max_ms": round(max(firsts), 1),
            "redraw_ms": round(statistics.median(redraws), 2), "bands": int(bands), "rows": int(rows),
            "history_bytes": history_bytes, "console_errors": len(errors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 loads per case instead of 10")
    args = parser.parse_args(argv)
    reason = chromium.missing()
    if reason is not None:
        print(f"bench.page needs chromium: {reason}", file=sys.stderr)
        return 2
    loads = 3 if args.quick else 10
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="linelight-bench-page-") as tmp:
        for i, (name, case) in enumerate(CASES.items()):
            results[name] = measure(case, loads, Path(tmp) / f"case{i}")
    base = results["empty (baseline)"]
    print(f"{'case':28} {'first render':>13} {'max':>8} {'redraw':>8} {'bands':>6} "
          f"{'rows':>4} {'/history':>10} {'vs empty':>9}")
    for name, r in results.items():
        ratio = r["first_render_ms"] / base["first_render_ms"] if base["first_render_ms"] else 0
        r["first_render_vs_empty"] = round(ratio, 2)
        print(f"{name:28} {r['first_render_ms']:>10.1f} ms {r['first_render_max_ms']:>5.0f} ms "
              f"{r['redraw_ms']:>5.2f} ms {r['bands']:>6} {r['rows']:>4} {r['history_bytes']:>10,} "
              f"{ratio:>8.2f}x")
    worst = max(r["first_render_ms"] for r in results.values())
    print(f"slowest first render {worst:.0f} ms (target < {TARGET_MS:.0f} ms), {loads} loads "
          "per case, headless chromium 1280x900")
    print(json.dumps({"page": results, "worst_first_render_ms": worst,
                      "target_ms": TARGET_MS, "loads": loads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
