"""The architecture's promises that a file listing can check: rooms, dependency direction, the
single `linelight` namespace, entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import linelight.agent

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = {"agent": "linelight.agent", "rules": "linelight.rules", "hw": "linelight.hw"}
FORBIDDEN_IN_RULES = {
    "linelight.agent", "linelight.hw", "anyio", "asyncio", "paho", "sqlite3", "sqlite_utils",
    "pymodbus", "gpiozero", "gpiod", "socket", "time", "threading", "os", "subprocess",
    "pathlib", "io", "glob", "shutil", "tempfile",
}
FILE_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes"}
# agent/ subsystems: other code imports each one's facade (its __init__), never its modules.
SUBSYSTEMS = ("linelight.agent.journal", "linelight.agent.mqtt", "linelight.agent.demo")


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement names (`from a.b import c` gives a.b and
    a.b.c: c may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _reaches(imported: set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in imported)


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGE_FOLDERS.get(rel.parts[0], rel.parts[0]), *rel.parts[1:]]
    return ".".join(parts).removesuffix(".__init__")


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
    for p in _python_files("rules"):
        imported = _imported_modules(p)
        bad = sorted(f for f in FORBIDDEN_IN_RULES if _reaches(imported, f))
        bad += _file_calls(p.read_text())
        if bad:
            offenders[str(p.relative_to(ROOT))] = bad
    assert offenders == {}


def test_the_file_call_check_finds_open_and_path_methods() -> None:
    source = ("text = open('x').read()\nPath('y').read_text()\np.write_bytes(b'')\n"
              "doc.open_table()\nreader.read(3)\n")
    assert _file_calls(source) == ["line 1: open(", "line 2: .read_text(", "line 3: .write_bytes("]


def test_hw_never_imports_agent() -> None:
    offenders = [str(p) for p in _python_files("hw")
                 if _reaches(_imported_modules(p), "linelight.agent")]
    assert offenders == []


def test_one_namespace_no_bare_agent_rules_or_hw_imports() -> None:
    """`linelight` is the only top-level name: `import agent` would work from the repo root
    (it is on sys.path there) yet fail once installed, and load a second copy of the code."""
    offenders = {}
    for p in _python_files("agent", "rules", "hw", "tests", "bench", "packaging"):
        bare = sorted(m for m in _imported_modules(p) if m.split(".")[0] in PACKAGE_FOLDERS)
        if bare:
            offenders[str(p.relative_to(ROOT))] = bare
    assert offenders == {}


def test_subsystems_are_entered_through_their_facade() -> None:
    """agent/journal, agent/mqtt, agent/demo: other product code imports the package, not
    its modules (tests and bench may look inside)."""
    offenders = {}
    for p in _python_files("agent", "hw", "rules"):
        own = _module_of(p)
        inside = [m for m in _imported_modules(p)
                  for s in SUBSYSTEMS if m.startswith(s + ".") and not own.startswith(s)]
        # `from linelight.agent.journal import Journal` also lists ...journal.Journal: a name,
        # not a module. Only real modules of the subsystem count.
        modules = sorted(m for m in inside if (ROOT / _folder_of(m)).with_suffix(".py").exists()
                         or (ROOT / _folder_of(m)).is_dir())
        if modules:
            offenders[str(p.relative_to(ROOT))] = modules
    assert offenders == {}


def test_the_harness_is_shared_and_bench_never_imports_tests() -> None:
    """harness/ is what tests/ and bench/ share: it imports neither; bench/ never imports
    tests/ (tests/ may import bench/ to test it), so there is no circle."""
    offenders = {}
    for folder, forbidden in (("harness", ("tests", "bench")), ("bench", ("tests",))):
        for p in _python_files(folder):
            bad = sorted(m for m in _imported_modules(p) for f in forbidden if _reaches({m}, f))
            if bad:
                offenders[str(p.relative_to(ROOT))] = bad
    assert offenders == {}


def test_the_journal_file_is_opened_read_only_in_one_place() -> None:
    """agent/journal/readonly.py is the one read-only open (its URI quoted) and the only user
    of sqlite-utils, the offline inspection side; the hot path stays on raw sqlite3."""
    readers = {}
    for p in _python_files("agent", "hw", "rules"):
        text = p.read_text()
        if "mode=ro" in text or _reaches(_imported_modules(p), "sqlite_utils"):
            readers[str(p.relative_to(ROOT))] = True
    assert readers == {"agent/journal/readonly.py": True}


def test_the_agent_and_its_forwarder_process_do_not_load_the_inspection_side() -> None:
    """sqlite-utils is for the offline tools (queue, doctor); the agent and its forwarder
    process import the read-only module but must not load it (it cost both processes about
    5 MB of RSS, bench.agent's memory line), and the agent never loads protobuf."""
    code = ("import sys, linelight.agent.app, linelight.agent.uplink.child; "
            "print(sorted(m for m in ('sqlite_utils', 'google.protobuf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_the_forwarder_process_does_not_load_the_journal_writer() -> None:
    """The forwarder process reads the journal through the read-only connection and the
    record decoder; the writer (`queue`) and the `[journal]` table's reader (`config`) are
    the agent's, and loading them cost the forwarder 1.3 MB of RSS (docs/benchmarks.md,
    "Memory")."""
    code = ("import sys, linelight.agent.uplink.child; "
            "print(sorted(m for m in ('linelight.agent.journal.queue', "
            "'linelight.agent.journal.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def _folder_of(module: str) -> Path:
    parts = module.split(".")[1:]  # drop "linelight"
    return Path(*parts)


def test_errors_live_with_the_layer_that_raises_them() -> None:
    """rules/errors.py holds the root error and the located config errors every layer uses;
    errors only I/O raises live with that I/O (hw: DeviceError; agent: TransportError,
    JournalError)."""
    defined = {}
    for p in _python_files("agent", "rules", "hw"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined.setdefault(node.name, str(p.relative_to(ROOT)))
    assert defined["LinelightError"] == "rules/errors.py"
    assert defined["ConfigError"] == "rules/errors.py"
    assert defined["DeviceError"].startswith("hw/")
    assert defined["TransportError"].startswith("agent/mqtt/")
    assert defined["JournalError"].startswith("agent/journal/")


def test_pyproject_lists_every_package_folder() -> None:
    """setuptools maps the folders to linelight.*; a package folder missing from the list would
    be absent from an installed agent although every test here passes."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {v: k for k, v in PACKAGE_FOLDERS.items()}
    folders = sorted(_module_of(init) for folder in PACKAGE_FOLDERS
                     for init in (ROOT / folder).rglob("__init__.py"))
    assert sorted(config["packages"]) == folders


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "linelight.agent", "--version"], capture_output=True, text=True,
        check=True,
    )
    assert out.stdout.strip() == f"linelight {linelight.agent.__version__}"
