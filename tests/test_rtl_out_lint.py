"""Every Verilog file in rtl_out/ passes ``verilator --lint-only -Wall`` apart from the waivers.

Each waiver is a property of Amaranth's Verilog backend, not of a design:
"""

from pathlib import Path

import pytest

from oaken_hw.verilog import verilator_env, verilator_lint

RTL_OUT = Path(__file__).parent.parent / "rtl_out"

WAIVERS = (
    # Amaranth gives every register its reset value as a declaration initializer.
    "PROCASSINIT",
    # Amaranth emits a named wire for every struct field / array element of a port or
    # signal (for readable waveforms) and for the bits it drops when slicing an adder's
    # carry or a comparison operand; logic reads the flat vectors, so these look unused.
    "UNUSEDSIGNAL",
    # Yosys' write_verilog emits each cell's operands at their natural widths (e.g.
    # `cnt > 1'h0`, `!sel[3:0]` for a reduce-not); Verilog's extension rules give exactly
    # Amaranth's semantics, which the simulation tests check bit for bit.
    "WIDTHEXPAND", "WIDTHTRUNC",
    # Amaranth switches (FSM states, Array indexing) become `case` statements without a
    # `default` for the unreachable encodings; every signal is assigned before the case,
    # so no latch and no X results.
    "CASEINCOMPLETE",
    # One Verilog file holds all submodules; only the top is named like the file.
    "DECLFILENAME",
)

FILES = sorted(RTL_OUT.glob("*.v"))


def test_rtl_out_has_the_engine_and_its_components():
    assert {p.stem for p in FILES} >= {"oaken_engine", "quant_engine", "dequant_engine", "mmu"}


@pytest.mark.skipif(not verilator_env()["PATH"], reason="verilator not installed")
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_lint_clean_apart_from_waivers(path):
    problems = verilator_lint(path.read_text(), path.stem, waivers=WAIVERS)
    assert problems == [], "\n".join(problems[:20])
