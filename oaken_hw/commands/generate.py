"""``oaken-hw generate``: emit the Verilog of every design and its manifest."""

from __future__ import annotations

from ..config import load_config
from ..generate import generate


def cmd_generate(args):
    cfg = load_config(args.config)
    paths = generate(cfg, args.output)
    print(f"wrote {len(paths)} files to {args.output}: {', '.join(p.name for p in paths)}")


def register(sub):
    p = sub.add_parser("generate", help="emit Verilog of the engine and its components, with manifest.json")
    p.add_argument("--config", help="configuration TOML (default: embedded)")
    p.add_argument("-o", "--output", default="rtl_out", help="output folder (default rtl_out)")
    p.set_defaults(func=cmd_generate)
