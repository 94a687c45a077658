"""`linelight rules test FILE...`: run rule unit tests on a virtual clock.

Exit codes: 0 all passed, 1 a test failed or a file has problems, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
import time

from linelight.rules.errors import ConfigProblems


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    test = actions.add_parser("test", help="run rule test files",
                              description="run rule test files (input series on a virtual clock, "
                                          "expected state, lamps, signals and counters)")
    test.add_argument("files", nargs="+", metavar="FILE", help="rule test files (TOML)")
    test.add_argument("--list", action="store_true", help="print every test, not only failures")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) != "test":
        print("linelight rules: say what to do, e.g. `linelight rules test tests/*.toml`",
              file=sys.stderr)
        return 2
    from linelight.agent.rulefiles import load_test_file
    from linelight.rules.testing import run_file

    started = time.perf_counter()
    passed = failed = broken = 0
    for path in args.files:
        try:
            test_file = load_test_file(path)
        except ConfigProblems as exc:
            broken += 1
            for problem in exc.problems:
                print(problem)
            continue
        for result in run_file(test_file):
            if result.passed:
                passed += 1
                if args.list:
                    print(f"PASS {path}: {result.name}")
                continue
            failed += 1
            print(f"FAIL {path}: {result.name}")
            for failure in result.failures:
                print(f"  {failure}")
    ms = (time.perf_counter() - started) * 1000
    total = passed + failed
    tail = f", {broken} file{'s' if broken != 1 else ''} with problems" if broken else ""
    print(f"{total} test{'s' if total != 1 else ''}: {passed} passed, {failed} failed{tail} "
          f"({ms:.0f} ms)")
    return 1 if failed or broken else 0
