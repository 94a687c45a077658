"""`linelight check`: validate rule files, or a config file with its rules; list every problem.

Exit codes: 0 valid, 1 problems found (all listed, one `file:line:col: message` per line),
2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from linelight.rules.errors import ConfigProblems


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", nargs="+", metavar="FILE", default=[],
                        help="rule files to validate together (they merge into one rule set)")
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="an agent config file; its rules, sources and tower are checked too")


def run(args: argparse.Namespace) -> int:
    if not args.rules and not args.config:
        print("linelight check: give --rules FILE... or --config FILE", file=sys.stderr)
        return 2
    failed = False
    if args.rules:
        failed |= not _check_rules(args.rules)
    if args.config:
        result = _check_config(args.config)
        if result == 2:
            return 2
        failed |= result == 1
    return 1 if failed else 0


def _check_rules(paths: list[str]) -> bool:
    from linelight.agent.rulefiles import load_rule_files

    try:
        ruleset = load_rule_files(paths)
    except ConfigProblems as exc:
        _print_problems(exc)
        return False
    print(f"ok: {', '.join(paths)}: {_summary(ruleset)}")
    return True


def _check_config(path: str) -> int:
    from linelight.agent.config import load_config
    from linelight.agent.diagnostics import token_file_warning

    try:
        config = load_config(path)
    except ConfigProblems as exc:
        _print_problems(exc)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}")
    token = token_file_warning(config.diagnostics.token_file)
    if token is not None:
        print(f"warning: {token}")
    named = [m for m in config.machines if m.named]
    if not named:
        print(f"ok: {path}: {_summary(config.ruleset)}")
        return 0
    print(f"ok: {path}: {len(named)} machines")
    for m in named:
        print(f"  machine {m.name}: {_summary(m.ruleset)}, from {', '.join(m.rule_files.names)}")
    return 0


def _print_problems(exc: ConfigProblems) -> None:
    for problem in exc.problems:
        print(problem)
    count = len(exc.problems)
    files = len({p.location.file for p in exc.problems})
    print(f"{count} problem{'s' if count != 1 else ''} in {files} file{'s' if files != 1 else ''}",
          file=sys.stderr)


def _summary(ruleset: Any) -> str:
    def n(items: Any, word: str) -> str:
        count = len(items)
        return f"{count} {word}{'s' if count != 1 else ''}"

    parts = [n(ruleset.inputs, "input"), n(ruleset.states, "state"),
             n(ruleset.signals, "signal"), n(ruleset.counters, "counter")]
    if getattr(ruleset, "outputs", ()):
        parts.append(n(ruleset.outputs, "output"))
    return ", ".join(parts)
