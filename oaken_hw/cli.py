"""The ``oaken-hw`` command line.

Each family of subcommands lives beside the code it drives and registers itself here
through a ``register(subparsers)`` function; :func:`main` turns every expected error
(``ValueError``, ``OSError``, ``KeyError``) into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# modules that add subcommands, in the order they appear in --help
COMMAND_MODULES = [
    "oaken_hw.commands.model",
    "oaken_hw.commands.generate",
    "oaken_hw.engine.commands",
    "oaken_hw.flow.commands",
    "oaken_hw.flow.build",
    "oaken_hw.flow.results",
    "oaken_hw.accuracy.commands",
]


class CommandError(Exception):
    """An error the command line reports as one line, without a traceback."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="oaken-hw", description="Oaken KV-cache compression engine: golden model, "
        "calibration, Verilog generation, FPGA flow and accuracy tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (CommandError, ValueError, OSError, KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        print(f"oaken-hw {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
