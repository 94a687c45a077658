"""The architecture's promises that a file listing can check: dependency direction, entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import agent

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_RULES = {
    "agent", "hw", "anyio", "asyncio", "paho", "sqlite3", "sqlite_utils", "pymodbus",
    "gpiozero", "gpiod", "socket", "time", "threading", "os", "subprocess",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_rules_core_imports_no_io_clock_or_outer_package() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN_IN_RULES)
        for p in sorted((ROOT / "rules").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_hw_never_imports_agent() -> None:
    offenders = [str(p) for p in (ROOT / "hw").rglob("*.py") if "agent" in _imports(p)]
    assert offenders == []


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"linelight {agent.__version__}"
