"""Fixtures of the flow tests: a tiny configuration and a CLI runner for `synth`."""

import argparse
import pytest

from oaken_hw.flow import commands

SMALL_TOML = """\
# the smallest configuration: 1 lane, 4-element vectors
[model]
kv_heads = 1
head_dim = 4

[quant]
lanes = 1
sparse_block = 4
"""


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL_TOML)
    return path


@pytest.fixture
def run_synth(capsys):
    """``run_synth(argv)`` runs ``oaken-hw synth ARGV`` in-process: (status, stdout).

    The parser is built from ``commands.register`` alone, as the CLI does, so the test
    does not depend on which other command modules exist.
    """
    def run(argv):
        parser = argparse.ArgumentParser(prog="oaken-hw")
        commands.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["synth", *argv])
        status = args.func(args)
        return status, capsys.readouterr().out
    return run
