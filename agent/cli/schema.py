"""`linelight schema`: print the JSON Schema of rule files, rule test files or the config."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="rules", choices=("rules", "rule-tests", "config"),
                        help="which file's schema (default: rules)")


def run(args: argparse.Namespace) -> int:
    make: Callable[[], dict[str, Any]]
    if args.kind == "rules":
        from linelight.rules.schema import rules_schema as make
    elif args.kind == "rule-tests":
        from linelight.rules.schema import rule_tests_schema as make
    else:
        from linelight.agent.schema import config_schema as make
    print(json.dumps(make(), indent=2, sort_keys=False))
    return 0
