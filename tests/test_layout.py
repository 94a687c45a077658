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
    "pathlib", "io", "glob", "shutil", "tempfile",
}
FILE_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _file_calls(source: str) -> list[str]:
    """Calls that read or write files: the builtin `open(...)`, `x.read_text(...)` and kin."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "open":
            found.append((node.lineno, "open("))
        elif isinstance(node.func, ast.Attribute) and node.func.attr in FILE_METHODS:
            found.append((node.lineno, f".{node.func.attr}("))
    return [f"line {line}: {call}" for line, call in sorted(found)]


def test_rules_core_imports_no_io_clock_or_outer_package() -> None:
    """DESIGN.md: rules/ imports no I/O library and reads no clock; agent.rulefiles reads."""
    offenders = {}
    for p in sorted((ROOT / "rules").rglob("*.py")):
        bad = sorted(_imports(p) & FORBIDDEN_IN_RULES) + _file_calls(p.read_text())
        if bad:
            offenders[str(p.relative_to(ROOT))] = bad
    assert offenders == {}


def test_the_file_call_check_finds_open_and_path_methods() -> None:
    source = ("text = open('x').read()\nPath('y').read_text()\np.write_bytes(b'')\n"
              "doc.open_table()\nreader.read(3)\n")
    assert _file_calls(source) == ["line 1: open(", "line 2: .read_text(", "line 3: .write_bytes("]


def test_hw_never_imports_agent() -> None:
    offenders = [str(p) for p in (ROOT / "hw").rglob("*.py") if "agent" in _imports(p)]
    assert offenders == []


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"linelight {agent.__version__}"
