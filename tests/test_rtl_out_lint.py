"""Every Verilog file in rtl_out/ passes ``verilator --lint-only -Wall`` apart from the waivers.

Each waiver is a property of Amaranth's Verilog backend, not of a design
(:data:`oaken_hw.verilog.LINT_WAIVERS` says why, one by one).
"""

from pathlib import Path

import pytest

from oaken_hw.verilog import LINT_WAIVERS, verilator_env, verilator_lint

RTL_OUT = Path(__file__).parent.parent / "rtl_out"
FILES = sorted(RTL_OUT.glob("*.v"))


def test_rtl_out_has_the_engine_and_its_components():
    assert {p.stem for p in FILES} >= {"oaken_engine", "quant_engine", "dequant_engine", "mmu"}


@pytest.mark.skipif(not verilator_env()["PATH"], reason="verilator not installed")
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_lint_clean_apart_from_waivers(path):
    problems = verilator_lint(path.read_text(), path.stem, waivers=LINT_WAIVERS)
    assert problems == [], "\n".join(problems[:20])
