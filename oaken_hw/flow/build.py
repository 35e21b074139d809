"""``oaken-hw build``: the main job: Verilog, a self-check of it, place and route, a summary.

Four steps on one configuration (the embedded default unless ``--config``):

1. ``generate``: every design's Verilog and ``manifest.json`` into ``--output``;
2. a self-check of the emitted engine on Verilator against the golden model (``oaken-hw sim``
   on the bundled real KV slices, calibrated on the other one), which also measures the
   sustained beats per cycle of the write and read paths;
3. synthesis and place-and-route of the engine top for ``--target`` (``oaken-hw synth``);
4. the summary: area, Fmax, throughput (elements/s and GB/s of FP16 KV) and effective bits.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np

from .report import block_timing_text

__all__ = ["register", "build"]

#: History length of the sustained-throughput run (``oaken-hw sim --scenario throughput``).
SUSTAINED_TOKENS = 128

def _say(msg):
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def build(cfg, *, target="ecp5-85k", seed=1, output="rtl_out", vectors=600,
          simulator="verilator", workdir=None, pnr=True):
    """Run the four steps; return the JSON-shaped summary (see ``docs/results.md``)."""
    from ..calibrate import load_thresholds
    from ..engine.sim import bundled_kv, simulate
    from ..generate import generate
    from ..model import roundtrip_kv
    from .commands import synth_report

    t0 = time.perf_counter()
    summary = {"config": cfg.to_dict(), "target": target, "seed": seed}
    _say(f"1/4 generate Verilog into {output}/")
    paths = generate(cfg, output)
    summary["files"] = sorted(p.name for p in paths)

    _say(f"2/4 self-check: {vectors} vectors through the emitted engine on {simulator}")
    with tempfile.TemporaryDirectory() as tmp:
        kv_path, th_path = bundled_kv(cfg, tmp)
        th_k, th_v, _ = load_thresholds(th_path)
        kv = dict(np.load(kv_path))
        runs = {name: simulate(cfg, simulator=simulator, vectors=n, seed=seed,
                               kv=str(kv_path), thresholds=str(th_path), scenario=name)
                for name, n in (("default", vectors),
                                ("throughput", min(SUSTAINED_TOKENS, cfg.mmu.max_tokens)))}
    th = {"k": th_k, "v": th_v}
    sim = runs["default"]
    summary["self_check"] = {k: sim[k] for k in (
        "vectors", "reads", "mismatches", "first_mismatch", "cycles", "sim_vectors_per_s")}
    # the rates: one long history, always ready (the short histories of the self-check
    # carry per-request start-up costs)
    summary["sustained"] = {k: runs["throughput"][k] for k in (
        "vectors", "mismatches", "write_beats_per_cycle", "read_beats_per_cycle")}
    for name, res in runs.items():
        if res["mismatches"]:
            from ..cli import CommandError
            from ..engine.sim import describe
            raise CommandError(f"self-check ({name} scenario) failed: {res['mismatches']} "
                               f"mismatches; first: {describe(res['first_mismatch'])}")
    bits = [roundtrip_kv(kv[key], th[key], cfg)[1]["effective_bits"] for key in ("k", "v")]
    summary["effective_bits"] = {"k": bits[0], "v": bits[1]}

    if pnr:
        _say(f"3/4 synthesis and place-and-route of the engine for {target} (long: see "
             f"docs/flow.md)")
        report = synth_report(cfg, target, names=["oaken_engine"], seed=seed,
                              workdir=workdir)
        top = report["components"]["oaken_engine"]
        summary["synth"] = {k: top[k] for k in ("fmax_mhz", "lut", "ff", "dsp", "bram")}
        summary["synth"]["critical_path"] = top["critical_path"]
        summary["synth"]["tools"] = top["tools"]
    else:
        summary["synth"] = None
    _say("4/4 summary")
    lanes = cfg.quant.lanes
    fmax = summary["synth"]["fmax_mhz"] if summary["synth"] else None
    for side in ("write", "read"):
        bpc = summary["sustained"][f"{side}_beats_per_cycle"]
        eps = None if fmax is None or bpc is None else fmax * 1e6 * lanes * bpc
        summary[f"{side}_elements_per_s"] = eps
        summary[f"{side}_fp16_gb_per_s"] = None if eps is None else eps * 2 / 1e9
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def table(s):
    """The summary as text."""
    f = lambda v, spec: "-" if v is None else format(v, spec)
    sc, sy = s["self_check"], s["synth"] or {}
    lines = [
        f"oaken-hw build: target {s['target']}, lanes {s['config']['quant']['lanes']}, "
        f"seed {s['seed']}, {s['seconds']:.0f} s",
        f"  Verilog            {len(s['files'])} files",
        f"  self-check         {sc['vectors']} vectors, {sc['reads']} reads, "
        f"{sc['mismatches']} mismatches",
        f"  area               {f(sy.get('lut'), 'd')} LUT, {f(sy.get('ff'), 'd')} FF, "
        f"{f(sy.get('dsp'), 'd')} DSP, {f(sy.get('bram'), 'd')} BRAM",
        f"  Fmax               {f(sy.get('fmax_mhz'), '.1f')} MHz",
    ]
    for side in ("write", "read"):
        lines.append(
            f"  {side:5} throughput   "
            f"{f(s['sustained'][side + '_beats_per_cycle'], '.3f')} beats/cycle, "
            f"{f(s[side + '_elements_per_s'] and s[side + '_elements_per_s'] / 1e9, '.2f')} "
            f"G elements/s, {f(s[side + '_fp16_gb_per_s'], '.2f')} GB/s of FP16 KV")
    eb = s["effective_bits"]
    lines.append(f"  effective bits     K {eb['k']:.3f}, V {eb['v']:.3f} "
                 f"(bundled real KV, all metadata counted)")
    cp = sy.get("critical_path")
    if cp:
        lines.append(f"  critical path      {cp['start']} -> {cp['end']}, {cp['delay_ns']:.2f} ns, "
                     f"{cp['logic_levels']} logic levels")
    slow = block_timing_text(sy.get("block_timing"))
    if slow:
        lines.append(f"  slow endpoints     {slow}")
    return "\n".join(lines)


def _cmd(args):
    from ..cli import CommandError
    from ..config import load_config
    from .tools import FlowError
    cfg = load_config(args.config)
    try:
        s = build(cfg, target=args.target, seed=args.seed, output=args.output,
                  vectors=args.vectors, simulator=args.simulator, workdir=args.workdir,
                  pnr=not args.no_pnr)
    except FlowError as e:
        raise CommandError(str(e)) from None
    print(json.dumps(s, indent=1) if args.json else table(s))


def register(sub):
    from .targets import TARGETS
    p = sub.add_parser("build", help="the main job: generate, self-check, place and route, "
                                     "summary table")
    p.add_argument("--config", help="configuration TOML (default: embedded)")
    p.add_argument("--target", default="ecp5-85k", choices=list(TARGETS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", default="rtl_out", help="Verilog folder (default rtl_out)")
    p.add_argument("--vectors", type=int, default=600, help="self-check vectors (default 600)")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--workdir", help="keep the flow's intermediate files here")
    p.add_argument("--no-pnr", action="store_true",
                   help="skip synthesis and place-and-route (area and Fmax left empty)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
