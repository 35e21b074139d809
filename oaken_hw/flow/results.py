"""``oaken-hw results``: regenerate ``docs/results.md`` from real tool runs.

Each *point* (a configuration and a target) is run through the simulation self-check on
Verilator (the default scenario on random vectors, then ``--scenario throughput`` on the
bundled real keys for the sustained beats per cycle of the write and read paths) and through
``oaken-hw synth`` for every registered design. Its report is saved as
``docs/results/<point>.json``; the Markdown is rendered from all saved reports, so a point
can be re-run alone (``--points``), some designs of a point can be re-run into its saved
report (``--designs``: after a change to one block, or to run a point's designs in parallel
processes), and ``--render-only`` rebuilds the page without tools.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from .designs import DESIGNS, get_design
from .report import block_timing_text, logic_use, synth_options_note

__all__ = ["POINTS", "run_point", "render", "register", "revision"]

REPO = Path(__file__).resolve().parent.parent.parent

#: name -> (configuration file relative to the repository or None for the default, target)
POINTS = {
    "default": (None, "ecp5-85k"),
    "lanes4": ("configs/lanes4.toml", "ecp5-85k"),
    "ice40-2lane": ("configs/ice40-2lane.toml", "ice40-up5k"),
}


def run_point(name, *, seed=1, vectors=2000, out_dir, designs=None):
    """Run one point; write and return its JSON report.

    Parameters
    ----------
    designs : list of str or None
        Run only these designs and merge them into the point's saved report, which keeps
        its other designs and its simulation section when that was measured at the same
        ``revision`` (the simulation does not depend on which designs are synthesized, but
        it does on the RTL: otherwise it is run again). ``None`` runs everything and
        replaces the saved report. The saved report is re-read just before the merge, so
        several processes can run different designs of one point.
    """
    from ..config import load_config
    from .commands import synth_report
    cfg_file, target = POINTS[name]
    cfg = load_config(None if cfg_file is None else REPO / cfg_file)
    out = Path(out_dir) / f"{name}.json"
    head = {"point": name, "config_file": cfg_file, "target": target, "seed": seed,
            "config": {"lanes": cfg.quant.lanes, "vector_len": cfg.vector_len}}
    saved = _saved(out, head) if designs else None
    rev = revision()        # now: the checkout may move while the tools run for hours
    if not (saved and saved.get("sim") and saved["sim"].get("revision") == rev):
        # saved at once: a long synthesis that follows must not lose it
        sim = {**_self_check(name, cfg, seed, vectors), "revision": rev}
        saved = _write(out, {**head, "components": {}, **(saved or {}), "sim": sim},
                       merge=bool(designs))
    print(f"[results] {name}: synthesis and place-and-route for {target}", file=sys.stderr)
    report = synth_report(cfg, target, names=designs, seed=seed, keep_going=True)
    for comp in report["components"].values():
        comp["revision"] = rev
    return _write(out, {**report, **head, "sim": saved["sim"]}, merge=bool(designs))


def revision():
    """``git`` revision of the generator (``-dirty`` with local changes under ``oaken_hw/``),
    or ``None`` outside a git checkout: each design's report says what it measured."""
    import subprocess
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "oaken_hw"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def _saved(out, head):
    """The saved report of a point, if any; ``ValueError`` if it is of another setup."""
    if not out.is_file():
        return None
    saved = json.loads(out.read_text())
    if any(saved.get(k) != v for k, v in head.items() if k != "config_file"):
        raise ValueError(f"point {head['point']}: the saved report {out} has another "
                         f"configuration, target or seed; re-run the whole point")
    return saved


def _write(out, report, *, merge):
    """Write a point's report; with ``merge``, over the components saved there now."""
    from .commands import REPORT_KEYS
    saved = _saved(out, {k: report[k] for k in ("point", "target", "seed", "config")}) \
        if merge else None
    if saved:
        comps = {**saved["components"], **report["components"]}
        report["components"] = {d: comps[d] for d in DESIGNS if d in comps}
    top = next((d for d, c in report["components"].items() if c["role"] == "top"), None)
    report["top"] = top
    for key in REPORT_KEYS[1:]:
        report[key] = report["components"][top][key] if top else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _self_check(name, cfg, seed, vectors):
    """The Verilator self-check and the sustained rates of a point (its ``sim`` section)."""
    from ..engine.sim import bundled_kv, simulate
    from .build import SUSTAINED_TOKENS
    print(f"[results] {name}: self-check and throughput on Verilator", file=sys.stderr)
    check = simulate(cfg, simulator="verilator", vectors=vectors, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        kv, th = bundled_kv(cfg, tmp)
        sim = simulate(cfg, simulator="verilator", seed=seed, kv=str(kv), thresholds=str(th),
                       vectors=min(SUSTAINED_TOKENS, cfg.mmu.max_tokens), scenario="throughput")
    for run in (check, sim):
        if run["mismatches"]:
            raise ValueError(f"point {name}: {run['mismatches']} mismatches in the self-check")
    return {"vectors": check["vectors"], "mismatches": check["mismatches"],
            "write_beats_per_cycle": sim["write_beats_per_cycle"],
            "read_beats_per_cycle": sim["read_beats_per_cycle"]}


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def _fill(c):
    """The routed chip's logic-cell use (harness included), e.g. ``"84 %"``, or ``"-"``."""
    use = logic_use(c.get("pnr"))
    return f"{100 * use[1] / use[2]:.0f} %" if use else "-"


def _over_full(line):
    """Whether a nextpnr utilisation line says a resource is used beyond 100 %."""
    m = re.search(r"(\d+)/\s*(\d+)\s+\d+%", line)
    return bool(m) and int(m.group(1)) > int(m.group(2))


def _minutes(c):
    sec = c.get("seconds") or {}
    total = sum(sec.get(k, 0) for k in ("elaborate", "synth", "pnr"))
    return f"{total / 60:.0f}" if total else "-"


def render(reports):
    """The Markdown page for a list of point reports."""
    lines = ["# Results: area, Fmax and throughput from real tool runs", "",
             "Regenerate with `oaken-hw results` (every point; `--points NAME` for one, "
             "`--render-only` to rebuild this page from `docs/results/*.json`). Each point is "
             "a configuration and a target; every design runs through the flow of "
             "`docs/flow.md` (Yosys synthesis, nextpnr place-and-route inside the I/O "
             "harness) and the engine through a Verilator self-check against the golden "
             "model; the beats per cycle are sustained rates (`oaken-hw sim --scenario "
             "throughput`: a 128-token history of the bundled real keys, always-ready "
             "memory).",
             "",
             "LUT, FF, DSP and BRAM are the design's own (harness excluded); *chip logic* is "
             "the routed chip's share of logic cells, harness included; *flow* is the wall "
             "time of synthesis plus place-and-route on the machine that ran it; *revision* "
             "is the generator's git revision the design was measured at (a point's designs "
             "can be re-run one by one: `--designs`).",
             ""]
    for r in reports:
        cfg, sim, comps = r["config"], r["sim"], r["components"]
        lines += [f"## {r['point']}: {cfg['lanes']} lanes, {r['target']}",
                  "", f"Configuration: {r['config_file'] or 'the embedded default'}; "
                  f"vector length {cfg['vector_len']}; seed {r['seed']}.", "",
                  "| design | role | LUT | FF | DSP | BRAM | Fmax (MHz) | chip logic | "
                  "flow (min) | revision |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, c in comps.items():
            lines.append(f"| {name} | {c['role']} | {_f(c['lut'], 'd')} | {_f(c['ff'], 'd')} "
                         f"| {_f(c['dsp'], 'd')} | {_f(c['bram'], 'd')} "
                         f"| {_f(c['fmax_mhz'], '.1f')} | {_fill(c)} | {_minutes(c)} "
                         f"| {c.get('revision') or '-'} |")
        lines.append("")
        missing = [d for d in DESIGNS if d not in comps]
        if missing:
            lines += [f"Not in this point's report: {', '.join(missing)} (not run, or its run "
                      f"did not finish; `docs/flow.md` says which).", ""]
        for name, c in comps.items():
            if c.get("error"):
                tail = [l.strip() for l in c["error"].splitlines()[1:]]
                said = [l for l in tail if "ERROR" in l or _over_full(l)][-6:] or tail[-3:]
                lines += [f"{name} did not complete: {c['error'].splitlines()[0]}", "",
                          "```", *said, "```", ""]
        q, b = comps.get("quant_engine"), comps.get("int4_baseline")
        if q and b and q["lut"] and b["lut"]:
            lines.append(f"Quantization engine / plain INT4 quantizer area: "
                         f"{q['lut'] / b['lut']:.2f}x LUT, Fmax {_f(q['fmax_mhz'], '.1f')} vs "
                         f"{_f(b['fmax_mhz'], '.1f')} MHz.")
        top = comps.get("oaken_engine")
        if top and top["fmax_mhz"]:
            for side in ("write", "read"):
                bpc = sim[f"{side}_beats_per_cycle"]
                if bpc:
                    eps = top["fmax_mhz"] * 1e6 * cfg["lanes"] * bpc
                    lines.append(f"Engine {side} path: {bpc:.3f} beats/cycle, "
                                 f"{eps / 1e9:.2f} G elements/s, {2 * eps / 1e9:.2f} GB/s of "
                                 f"FP16 KV at {top['fmax_mhz']:.1f} MHz.")
        for name, c in comps.items():
            if c.get("synth_options"):
                note = synth_options_note(name, c["synth_options"], c.get("abc9_crash", ""))
                lines.append(f"- {note}.")
            cp = c.get("critical_path")
            if cp:
                lines.append(f"- {name}: critical path {cp['start']} -> {cp['end']}, "
                             f"{cp['delay_ns']:.2f} ns, {cp['logic_levels']} logic levels.")
            slow = block_timing_text(c.get("block_timing"))
            if slow:
                lines.append(f"- {name}: {slow}.")
        tools = next((c["tools"] for c in comps.values() if c.get("tools")), {})
        lines += ["", "Tools: " + "; ".join(f"{k} {v}" for k, v in tools.items()), ""]
    return "\n".join(lines)


def _cmd(args):
    out_dir = Path(args.json_dir)
    names = args.points.split(",") if args.points else list(POINTS)
    for n in names:
        if n not in POINTS:
            raise ValueError(f"unknown point {n!r}; choose from {', '.join(POINTS)}")
    designs = args.designs.split(",") if args.designs else None
    if designs:
        for d in designs:
            get_design(d)                                   # ValueError on an unknown name
    if not args.render_only:
        for n in names:
            run_point(n, seed=args.seed, vectors=args.vectors, out_dir=out_dir,
                      designs=designs)
    reports = [json.loads((out_dir / f"{n}.json").read_text())
               for n in POINTS if (out_dir / f"{n}.json").is_file()]
    if not reports:
        raise ValueError(f"no point reports in {out_dir}")
    Path(args.output).write_text(render(reports))
    print(f"wrote {args.output} from {len(reports)} point(s)")


def register(sub):
    p = sub.add_parser("results", help="regenerate docs/results.md from real tool runs "
                                       "(long: every point is placed and routed)")
    p.add_argument("--points", help=f"comma-separated points (default all: {', '.join(POINTS)})")
    p.add_argument("--designs", help="comma-separated designs to re-run, merged into each "
                                     "point's saved report (default: every design)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vectors", type=int, default=2000, help="self-check vectors per point")
    p.add_argument("--json-dir", default="docs/results", help="per-point JSON reports")
    p.add_argument("-o", "--output", default="docs/results.md")
    p.add_argument("--render-only", action="store_true",
                   help="rebuild the page from the saved reports, run no tool")
    p.set_defaults(func=_cmd)
