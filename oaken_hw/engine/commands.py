"""``oaken-hw sim``: the engine's emitted Verilog against its golden model."""

from __future__ import annotations

import json

from ..config import load_config


def cmd_sim(args):
    from ..cli import CommandError
    from .sim import describe, simulate
    cfg = load_config(args.config)
    res = simulate(cfg, simulator=args.simulator, vectors=args.vectors, seed=args.seed,
                   kv=args.kv, thresholds=args.thresholds, workdir=args.workdir,
                   scenario=args.scenario)
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        print(f"{res['simulator']}: {res['vectors']} vectors, {res['reads']} reads, "
              f"{res['cycles']} cycles, {res['mismatches']} mismatches; "
              f"write {fmt(res['write_beats_per_cycle'])} beats/cycle, "
              f"read {fmt(res['read_beats_per_cycle'])} beats/cycle; "
              f"{res['sim_vectors_per_s']:.0f} vectors/s simulated")
    if res["mismatches"]:
        raise CommandError(f"{res['mismatches']} mismatches; first: "
                           f"{describe(res['first_mismatch'])}")


def register(sub):
    p = sub.add_parser("sim", help="run the engine's emitted Verilog against the golden model")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--config", help="configuration TOML (default: embedded)")
    p.add_argument("--kv", help="KV .npz with 'k' and 'v' shaped (layers, heads, tokens, "
                   "head_dim) (default: random heavy-tailed vectors)")
    p.add_argument("--thresholds", help="thresholds JSON from `oaken-hw calibrate` (with --kv)")
    p.add_argument("--scenario", default="default", choices=["default", "throughput"],
                   help="default: every feature with random stalls (and short always-ready "
                   "measure phases); throughput: one long history, always ready")
    p.add_argument("--vectors", type=int, default=2000,
                   help="vectors to write (default 2000); with --scenario throughput, the "
                   "history length in tokens")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", help="keep the plan, result and simulator log here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_sim)
