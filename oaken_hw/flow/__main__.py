"""``python -m oaken_hw.flow synth ...``: the ``synth`` subcommand without the full CLI.

Same options, output and exit status as ``oaken-hw synth`` (errors are one message and
status 2), for use before or without the other command modules.
"""

import argparse
import sys

from oaken_hw.cli import CommandError

from . import commands


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m oaken_hw.flow")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (CommandError, ValueError, OSError, KeyError) as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
