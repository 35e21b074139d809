"""The report parsers on samples stored from real runs (tests/flow/data/, see README.md)."""

import gzip
import json
from pathlib import Path

import pytest

from oaken_hw.flow import FlowError
from oaken_hw.flow.report import (block_timing, block_timing_text, count_cells,
                                    parse_nextpnr_report, parse_yosys_stat)
from oaken_hw.flow.run import TOP_NAME

DATA = Path(__file__).parent / "data"
DUT = f"{TOP_NAME}.dut"

# figures printed by make_samples.py when the samples were made (see data/README.md)
SAMPLE_ICE40 = dict(lut=2174, ff=2186, dsp=0, bram=8, lutram=0, fmax_mhz=30.77,
                    constraint_mhz=24.0)
SAMPLE_ECP5 = dict(lut=1496, ff=1712, dsp=0, bram=1, lutram=22, fmax_mhz=135.3,
                   constraint_mhz=150.01)
# synth_xilinx keeps the output FIFO a module of its own: its cells count (they did not
# before 2026-11-26, when this sample read 915 LUT, 1265 FF, 46 LUTRAM)
SAMPLE_XC7 = dict(lut=932, ff=1365, dsp=0, bram=1, lutram=61)

SAMPLES = {
    "ice40-up5k": ("ice40", "ice40-up5k_int4_l2v8", SAMPLE_ICE40),
    "ecp5-85k": ("ecp5", "ecp5-85k_int4_l1v4", SAMPLE_ECP5),
    "xc7": ("xc7", "xc7_int4_l1v4", SAMPLE_XC7),
}


@pytest.mark.parametrize("target", list(SAMPLES))
def test_yosys_stat_sample(target):
    family, stem, want = SAMPLES[target]
    comp, own = parse_yosys_stat(DATA / f"{stem}_stat.json", family, top=TOP_NAME, dut=DUT)
    got = {k: getattr(comp, k) for k in ("lut", "ff", "dsp", "bram", "lutram")}
    assert got == {k: want[k] for k in got}
    # the harness is counted apart: FFs for the scan chain and the XOR tree, no RAM
    assert own.ff > 0 and own.bram == 0 and own.dsp == 0
    assert DUT not in own.cells                    # a submodule instance is not a cell


def _report_sample(stem, tmp_path):
    """A stored nextpnr report (gzipped in data/), unpacked where the parser can read it."""
    path = tmp_path / f"{stem}_report.json"
    path.write_bytes(gzip.decompress((DATA / f"{stem}_report.json.gz").read_bytes()))
    return path


@pytest.mark.parametrize("target", ["ice40-up5k", "ecp5-85k"])
def test_nextpnr_report_sample(target, tmp_path):
    family, stem, want = SAMPLES[target]
    path = _report_sample(stem, tmp_path)
    rep = parse_nextpnr_report(path)
    assert rep["fmax_mhz"] == want["fmax_mhz"]
    assert rep["constraint_mhz"] == want["constraint_mhz"]
    assert len(rep["clocks"]) == 1
    logic = {"ice40": "ICESTORM_LC", "ecp5": "TRELLIS_COMB"}[family]
    assert 0 < rep["utilization"][logic]["used"] <= rep["utilization"][logic]["available"]
    assert all(u["used"] > 0 for u in rep["utilization"].values())   # unused ones dropped
    cp = rep["critical_path"]
    assert cp.delay_ns == pytest.approx(1000 / rep["fmax_mhz"], rel=0.05)
    assert cp.delay_ns == pytest.approx(cp.logic_ns + cp.routing_ns, abs=0.01)
    assert cp.logic_levels >= 1 and cp.start and cp.end
    # the per-block endpoint timing, counted against the constraint when no goal is given
    timing = rep["block_timing"]
    assert timing["goal_mhz"] == want["constraint_mhz"]
    blocks = timing["blocks"]
    # without the submodule names, a struct field's dot in a register's name (ECP5:
    # `o__payload.last`) looks like a block; with them, the Int4Quantizer's own registers
    # are `(top)`
    assert set(blocks) - {"o__payload"} == {"(top)", "buf", "out_fifo"}
    blocks = parse_nextpnr_report(path, blocks={"buf", "out_fifo"})["block_timing"]["blocks"]
    assert set(blocks) == {"(top)", "buf", "out_fifo"}
    raw = json.loads(path.read_text())
    # counted again here from the raw lists: the flip-flops, RAM and LUT RAM inputs of the
    # component reached only by clocked logic, and those on a net marked <async> twice
    entries = {}
    for n in raw["detailed_net_timings"]:
        for e in n["endpoints"]:
            if e["cell"].startswith("dut.") and e["event"] != "<async>":
                entries.setdefault((e["cell"], e["port"]), []).append(
                    (n["event"] == "<async>", e["delay"][1]))
    timed = [v[0][1] for v in entries.values() if len(v) == 1 and not v[0][0]]
    assert sum(b["endpoints"] for b in blocks.values()) == len(timed) > want["ff"] / 2
    assert sum(b["mixed"] for b in blocks.values()) == sum(len(v) > 1 for v in entries.values())
    # a goal between the arrivals counts exactly those later than its period
    cut = sorted(timed)[len(timed) * 9 // 10]
    again = parse_nextpnr_report(path, goal_mhz=1000 / cut, blocks={"buf", "out_fifo"})
    over = sum(b["over_goal"] for b in again["block_timing"]["blocks"].values())
    assert over == sum(t > cut for t in timed) > 0
    # the Fmax path's endpoint arrives when the critical path says (its delay without the
    # setup segment), plus the launching clock's delay through the clock network where the
    # device's timing model has one (iCE40: about 0.9 ns; ECP5: none)
    segs = next(c["path"] for c in raw["critical_paths"]
                if c["from"] == c["to"] and "<async>" not in c["from"])
    arrival = sum(s["delay"] for s in segs if s["type"] != "setup")
    ends = [e["delay"][1] for n in raw["detailed_net_timings"] for e in n["endpoints"]
            if e["cell"] == segs[-1]["to"]["cell"] and e["port"] == segs[-1]["to"]["port"]]
    clock = {"ecp5": 0.0, "ice40": 0.927}[family]
    assert max(ends) == pytest.approx(arrival + clock, abs=1e-3)
    assert max(b["latest_ns"] for b in blocks.values()) >= arrival - 1e-3


def test_block_timing_counts_per_block_and_leaves_out_the_reset_pin():
    clk = "posedge $glbnet$clk"

    def ep(cell, delay, port="DI", event=clk):
        return {"cell": cell, "port": port, "event": event, "delay": [delay / 2, delay]}
    report = {"detailed_net_timings": [
        {"net": "a", "event": clk, "endpoints": [
            ep("dut.quant.scale.s4_TRELLIS_FF_Q", 12.5), ep("dut.quant.x_TRELLIS_FF_Q", 9.0),
            ep("dut.mmu.ring.0.1", 10.5, "ADB3"), ep("dut.status_TRELLIS_FF_Q", 10.1),
            ep("dut.o__payload.last_TRELLIS_FF_Q", 10.2),     # a struct field: (top)
            ep("harness_chain_TRELLIS_FF_Q", 20.0),              # the harness: not counted
            ep("dut.mmu.io", 30.0, "I", "<async>")]},            # ends at a pin: not timed
        # a net reached from the reset pin alone: not timed
        {"net": "rst", "event": "<async>", "endpoints": [ep("dut.quant.x_TRELLIS_FF_Q", 13.0,
                                                            "LSR")]},
        # set/reset inputs reached from the reset pin and clocked logic are listed twice,
        # under the net's first event, whichever that is: not timed either way
        {"net": "clr", "event": clk, "endpoints": [
            ep("dut.mmu.cnt_TRELLIS_FF_Q", 12.9, "LSR"), ep("dut.mmu.cnt_TRELLIS_FF_Q", 4.0, "LSR"),
            ep("dut.mmu.j_TRELLIS_FF_Q", 9.9, "LSR")]},
        {"net": "clr2", "event": "<async>", "endpoints": [
            ep("dut.quant.y_TRELLIS_FF_Q", 3.0, "LSR"), ep("dut.quant.y_TRELLIS_FF_Q", 11.0, "LSR")]},
    ]}
    got = block_timing(report, 100.0, blocks={"quant", "mmu"})
    assert got == {"goal_mhz": 100.0, "blocks": {
        "(top)": {"endpoints": 2, "over_goal": 2, "latest_ns": 10.2, "mixed": 0},
        "mmu": {"endpoints": 2, "over_goal": 1, "latest_ns": 10.5, "mixed": 1},
        "quant": {"endpoints": 2, "over_goal": 1, "latest_ns": 12.5, "mixed": 1}}}
    assert list(got["blocks"]) == ["(top)", "mmu", "quant"]   # by count, equal ones by name
    # without the submodule names, a struct field's name looks like a block
    assert "o__payload" in block_timing(report, 100.0)["blocks"]
    assert block_timing({"fmax": {}}, 100.0) is None
    with pytest.raises(FlowError, match="detailed timing"):
        block_timing({"detailed_net_timings": [{"net": "a"}]}, 100.0)
    line = block_timing_text(got)
    assert line.startswith("4 timing endpoints arrive later than 10.00 ns (100 MHz): ")
    assert "quant 1 of 2 (latest 12.50 ns)" in line and line.endswith(
        "; 2 endpoints reached from both the reset pin and clocked logic not timed")


def test_cell_counting_rules():
    ecp5 = count_cells({"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 2,
                        "ALU54B": 1, "DP16KD": 4, "TRELLIS_DPR16X4": 5, "PFUMX": 9}, "ecp5")
    assert (ecp5.lut, ecp5.ff, ecp5.dsp, ecp5.bram, ecp5.lutram) == (16, 7, 3, 4, 5)
    ice = count_cells({"SB_LUT4": 10, "SB_CARRY": 4, "SB_DFF": 1, "SB_DFFESR": 2,
                       "SB_MAC16": 1, "SB_RAM40_4K": 3}, "ice40")
    assert (ice.lut, ice.ff, ice.dsp, ice.bram) == (10, 3, 1, 3)
    xc7 = count_cells({"LUT1": 1, "LUT6": 2, "CARRY4": 5, "FDRE": 3, "FDSE": 1,
                       "DSP48E1": 2, "RAMB18E1": 1, "RAMB36E1": 2, "RAM32M": 4,
                       "SRL16E": 1}, "xc7")
    assert (xc7.lut, xc7.ff, xc7.dsp, xc7.bram, xc7.lutram) == (3, 4, 2, 5, 5)
    with pytest.raises(ValueError, match="unknown FPGA family"):
        count_cells({}, "gowin")


def test_unreadable_or_incomplete_reports_are_errors(tmp_path):
    with pytest.raises(FlowError, match="cannot read the nextpnr report"):
        parse_nextpnr_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FlowError, match="cannot read the Yosys statistics"):
        parse_yosys_stat(bad, "ecp5", top=TOP_NAME, dut=DUT)
    no_fmax = tmp_path / "nofmax.json"
    no_fmax.write_text(json.dumps({"utilization": {}, "fmax": {}}))
    with pytest.raises(FlowError, match="no 'fmax' entry"):
        parse_nextpnr_report(no_fmax)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"fmax": {"clk": {"achieved": 100.0}}}))
    with pytest.raises(FlowError, match="unexpected nextpnr report layout"):
        parse_nextpnr_report(broken)
    stat = json.loads((DATA / "ice40-up5k_int4_l2v8_stat.json").read_text())
    del stat["modules"]["\\" + DUT]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(stat))
    with pytest.raises(FlowError, match=f"no cell counts for module '{DUT}'"):
        parse_yosys_stat(partial, "ice40", top=TOP_NAME, dut=DUT)


def test_split_component_counts_its_kept_blocks(tmp_path):
    """A component synthesized with its blocks kept (``split``) counts every block's cells,
    as often as the block is instantiated; the harness still counts only its own."""
    mod = lambda cells: {"num_cells_by_type": cells}
    stat = {"modules": {
        "\\" + TOP_NAME: mod({"TRELLIS_FF": 5, "LUT4": 2, "\\" + DUT: 1}),
        "\\" + DUT: mod({"LUT4": 10, "TRELLIS_FF": 1, f"\\{DUT}.a": 1, f"\\{DUT}.b": 2}),
        f"\\{DUT}.a": mod({"LUT4": 100, "DP16KD": 3}),
        f"\\{DUT}.b": mod({"CCU2C": 4, "TRELLIS_FF": 7}),
    }}
    path = tmp_path / "stat.json"
    path.write_text(json.dumps(stat))
    comp, own = parse_yosys_stat(path, "ecp5", top=TOP_NAME, dut=DUT)
    assert (comp.lut, comp.ff, comp.bram) == (10 + 100 + 2 * 2 * 4, 1 + 2 * 7, 3)
    assert (own.lut, own.ff) == (2, 5)


def test_child_modules_lists_one_level_below_the_component():
    from oaken_hw.flow.run import child_modules
    text = "\n".join(f"module \\{n}" for n in
                     (TOP_NAME, DUT, f"{DUT}.quant", f"{DUT}.quant.scale", f"{DUT}.mmu"))
    assert child_modules(text) == [f"{DUT}.quant", f"{DUT}.mmu"]


def test_critical_path_is_the_worst_clocks_own(tmp_path):
    """An ``<async>`` path (the harness's reset pin) may be longer; it does not set Fmax."""
    seg = lambda delay: {"type": "logic", "delay": delay, "from": {"cell": "a"}, "to": {"cell": "b"}}
    clk = "posedge $glbnet$clk"
    rep = {"fmax": {"$glbnet$clk": {"achieved": 100.0, "constraint": 150.0}},
           "utilization": {"TRELLIS_COMB": {"used": 1, "available": 2}},
           "critical_paths": [{"from": "<async>", "to": clk, "path": [seg(12.9)]},
                              {"from": clk, "to": clk, "path": [seg(10.0)]},
                              {"from": clk, "to": "<async>", "path": [seg(1.0)]}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    assert parse_nextpnr_report(path)["critical_path"].delay_ns == 10.0
