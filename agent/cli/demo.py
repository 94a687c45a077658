"""`linelight demo`: a line of simulated machines, the example rules, live stack lights, a broker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

NON_TTY_DEFAULT_SECONDS = 60.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None, metavar="N",
                        help="stop after N seconds (default: until q or Ctrl-C in a terminal, "
                             f"{NON_TTY_DEFAULT_SECONDS:g} s otherwise)")
    parser.add_argument("--outage-every", type=float, default=25.0, metavar="S",
                        help="stop the broker every S seconds to show buffering (0: only on "
                             "the o key; default 25; with --seconds, outages are planned to "
                             "fill and drain before the end)")
    parser.add_argument("--outage-length", type=float, default=8.0, metavar="S",
                        help="how long each outage lasts (default 8)")
    parser.add_argument("--no-broker", action="store_true",
                        help="do not start mosquitto: events stay queued on disk")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the demo's queue and config here (default: a temp dir, removed)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--line", action="store_true",
                       help="a line of three machines on one agent (two presses and a capper, "
                            "each with its own rules and stack light), side by side; the "
                            "default")
    shape.add_argument("--single", action="store_true",
                       help="one machine instead of the line (an agent without [machines.*])")
    parser.add_argument("--plain", action="store_true",
                        help="one plain line per second even in a terminal")


def run(args: argparse.Namespace) -> int:
    from linelight.agent.demo import DemoOptions, run_demo

    interactive = sys.stdout.isatty() and sys.stdin.isatty() and not args.plain
    seconds = args.seconds
    if seconds is None and not interactive:
        seconds = NON_TTY_DEFAULT_SECONDS
    if seconds is not None and seconds <= 0:
        print("linelight demo: --seconds must be above 0", file=sys.stderr)
        return 2
    options = DemoOptions(seconds=seconds, outage_every=max(0.0, args.outage_every),
                          outage_length=max(1.0, args.outage_length),
                          use_broker=not args.no_broker, data_dir=args.data_dir,
                          interactive=interactive, line=not args.single)
    return anyio.run(run_demo, options, sys.stdout, backend="asyncio")
