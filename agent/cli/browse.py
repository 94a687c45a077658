"""`linelight browse opcua://host:4840`: an OPC UA server's address space as a tree, and a ready
`[sources.NAME]` snippet with its variables as inputs. `linelight browse --source NAME` browses
the server of an `opcua` source of the agent's config with its security settings (policy,
trusted server certificate, user).

Exit codes: 0 browsed, 1 the server could not be reached or browsed, 2 usage or config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import anyio

from linelight.hw.config import OpcUaSourceSpec
from linelight.hw.errors import DeviceError
from linelight.rules.errors import Location


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", default=None,
                        help="opcua://host:4840 (or opc.tcp://host:4840/path); unsecured")
    parser.add_argument("--source", metavar="NAME", default=None,
                        help="instead of a URL: the opcua source NAME of --config, browsed with "
                        "its endpoint and security settings")
    parser.add_argument("--config", "-c", metavar="FILE", default=DEFAULT_CONFIG,
                        help=f"the agent's config file, for --source (default {DEFAULT_CONFIG})")
    parser.add_argument("--path", default="", help="start below this browse path under "
                        "Objects, e.g. Line/Press (names in any namespace unless written 3:Name)")
    parser.add_argument("--depth", type=int, default=3, choices=range(1, 11), metavar="1-10",
                        help="levels of objects to descend (default 3)")
    parser.add_argument("--snippet", metavar="SOURCE", default=None,
                        help="also print a [sources.SOURCE] table with every variable found")
    parser.add_argument("--only", metavar="NAME", action="append", default=[],
                        help="with --snippet: only this variable (its browse name or node id); "
                        "repeat for more")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")


DEFAULT_CONFIG = "/etc/linelight/agent.toml"


def _configured(name: str, config_path: str) -> OpcUaSourceSpec | str:
    """The opcua source `name` of the config file, or the sentence why there is none."""
    from linelight.agent.config import load_config
    from linelight.rules.errors import ConfigProblems

    try:
        config = load_config(config_path)
    except ConfigProblems as exc:
        return f"{config_path} has problems (linelight check --config {config_path}):\n" + \
            "\n".join(str(p) for p in exc.problems)
    specs = [*config.sources, *(s for m in config.machines for s in m.sources)]
    found = [s for s in specs if s.name == name]
    if not found or not isinstance(found[0], OpcUaSourceSpec):
        opcua = sorted(s.name for s in specs if isinstance(s, OpcUaSourceSpec))
        return (f"{config_path} has no opcua source '{name}' (its opcua sources: "
                f"{', '.join(opcua) or 'none'})")
    return found[0]


def run(args: argparse.Namespace) -> int:
    from linelight.hw.opcua import browse, inputs_snippet  # asyncua only for this command

    if not getattr(args, "verbose", False):  # asyncua narrates every step, even its cleanup
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        logging.getLogger("linelight.hw.opcua").setLevel(logging.WARNING)  # "connected"
    if (args.url is None) == (args.source is None):
        print("linelight browse: give a server URL (opcua://host:4840) or --source NAME, "
              "not both", file=sys.stderr)
        return 2
    if args.source is not None:
        found = _configured(args.source, args.config)
        if isinstance(found, str):
            print(f"linelight browse: {found}", file=sys.stderr)
            return 2
        spec = replace(found, timeout=args.timeout)
        url = spec.endpoint
    else:
        url = str(args.url)
        if url.startswith("opcua://"):
            url = "opc.tcp://" + url.removeprefix("opcua://")
        if not url.startswith("opc.tcp://"):
            print(f"linelight browse: '{args.url}' is not an opcua:// or opc.tcp:// URL",
                  file=sys.stderr)
            return 2
        spec = OpcUaSourceSpec("browse", url, 1.0, 1.0, args.timeout, 0.5, 0.5, (),
                               Location("<command line>", 1, 1))
    try:
        nodes = anyio.run(lambda: browse(spec, path=args.path, depth=args.depth))
    except DeviceError as exc:
        print(f"linelight browse: {exc}", file=sys.stderr)
        return 1
    for node in nodes:
        kind = f"{node.data_type} = {node.value!r}" if node.node_class == "Variable" \
            else node.node_class
        print(f"{'  ' * node.depth}{node.name}  [{node.node_id}]  {kind}")
    if args.snippet:
        chosen = nodes
        if args.only:
            wanted = set(args.only)
            chosen = [n for n in nodes if n.node_class == "Variable"
                      and (n.name in wanted or n.node_id in wanted)]
            missing = wanted - {n.name for n in chosen} - {n.node_id for n in chosen}
            if missing:
                print(f"linelight browse: no variable named {', '.join(sorted(missing))} in the "
                      "tree above (--only takes browse names or node ids)", file=sys.stderr)
                return 1
        print()
        print(inputs_snippet(args.snippet, url, chosen), end="")
    return 0
