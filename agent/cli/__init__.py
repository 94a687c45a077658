"""The `linelight` command line: a thin dispatcher to one module per subcommand.

Each subcommand lives in its own module exposing `configure(parser)` and `run(args) -> int`,
imported only when used, so `linelight --version` or `linelight queue` start fast and do not
import the MQTT or Modbus stacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from linelight.agent import __version__

# The config file the .deb installs and its unit runs (packaging/linelight.service, checked by
# tests/packaging/test_unit.py): the default of `run`, `doctor` and `status`.
DEFAULT_CONFIG = "/etc/linelight/agent.toml"

# name -> (module, one-line help). Exit codes everywhere: 0 ok, 1 problem found, 2 usage.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("linelight.agent.cli.run", "run the agent with a config file"),
    "demo": ("linelight.agent.cli.demo", "run a simulated machine with a live view of the stack light"),
    "check": ("linelight.agent.cli.check", "validate a config file and its rules, or rule files alone"),
    "rules": ("linelight.agent.cli.rules", "rule tools: `rules test FILE...` runs rule unit tests"),
    "schema": ("linelight.agent.cli.schema", "print the JSON Schema of rule and config files"),
    "status": ("linelight.agent.cli.status", "print the running agent's status from its diagnostics port"),
    "doctor": ("linelight.agent.cli.doctor", "check config, journal, disk, broker and devices step by step"),
    "queue": ("linelight.agent.cli.queue", "inspect the on-disk queue offline: stats, tail, export"),
    "browse": ("linelight.agent.cli.browse", "print an OPC UA server's address space and a ready inputs snippet"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linelight",
        description="linelight: machine signals -> local rules -> stack light; "
        "every event queued on disk, then forwarded to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"linelight {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.configure(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen subcommand's module: the first word that names a command.
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    module = getattr(args, "_module", None)
    if module is None:  # no command given
        parser.print_help()
        return 2
    try:
        code = int(module.run(args))
        sys.stdout.flush()  # inside the try: a closed pipe must not fail at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`linelight queue export | head`): that is the reader's choice,
        # not a fault, so no traceback. As the Python docs advise (signal, "Note on SIGPIPE"),
        # stdout now points at /dev/null so the final flush at exit cannot raise again. Exit
        # 141 (128 + SIGPIPE) like a tool killed by SIGPIPE, so `set -o pipefail` scripts can
        # still tell the output was cut short.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + int(signal.SIGPIPE)
