"""``oaken-hw calibrate`` and ``oaken-hw eval``: the golden model on KV tensors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..calibrate import calibrate_kv, load_thresholds, save_thresholds
from ..config import check_ratios, load_config
from ..model.kv import roundtrip_kv, sqnr_db
from ..model.reference import int4_per_token_head


def _ratios(option, text):
    """``--ratios``-style shares, checked as the configuration checks them."""
    try:
        r = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{option} must be three comma-separated numbers, not {text!r}") from None
    return check_ratios(option, r)


def load_kv(path, key):
    """The K array ``key`` and V of a KV ``.npz``, checked to be 4-D and alike."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for non-npz files
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    arrays = {}
    for name in (key, "v"):
        if name not in data.files:
            raise ValueError(f"{path}: no array '{name}' (has: {', '.join(data.files)})")
        a = data[name]
        if a.ndim != 4 or not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{path}: '{name}' must be a float array shaped "
                             f"(layers, heads, tokens, head_dim), not {a.dtype} {a.shape}")
        arrays[name] = a.astype(np.float16)
    if arrays[key].shape != arrays["v"].shape:
        raise ValueError(f"{path}: '{key}' {arrays[key].shape} and 'v' {arrays['v'].shape} differ")
    return arrays[key], arrays["v"], data.files


def cmd_calibrate(args):
    k, v, _ = load_kv(args.kv, args.key)
    quant = load_config(args.config).quant
    both = _ratios("--ratios", args.ratios) if args.ratios else None
    th_k, th_v, k_ratios, v_ratios = calibrate_kv(
        k, v, quant, chunk_tokens=args.chunk_tokens,
        k_ratios=_ratios("--k-ratios", args.k_ratios) if args.k_ratios else both,
        v_ratios=_ratios("--v-ratios", args.v_ratios) if args.v_ratios else both)
    save_thresholds(args.output, th_k, th_v, k_ratios=k_ratios, v_ratios=v_ratios, key=args.key,
                    source=Path(args.kv).name, chunk_tokens=args.chunk_tokens)
    show = lambda r: ",".join(f"{x:g}" for x in r)
    print(f"wrote {args.output}: {len(th_k)} layers, K ({args.key}) and V thresholds, "
          f"ratios K {show(k_ratios)}, V {show(v_ratios)}")


def cmd_eval(args):
    k, v, files = load_kv(args.kv, args.key)
    th_k, th_v, _ = load_thresholds(args.thresholds)
    cfg = load_config(args.config).with_geometry(k.shape)
    report, dumped = {}, {}
    t0 = time.perf_counter()
    for name, tensor, th in (("k", k, th_k), ("v", v, th_v)):
        xhat, stats = roundtrip_kv(tensor, th, cfg)
        stats["int4_per_token_head_sqnr_db"] = sqnr_db(tensor, int4_per_token_head(tensor))
        report[name] = stats
        dumped[args.key if name == "k" else "v"] = xhat
    seconds = time.perf_counter() - t0
    vectors = report["k"]["vectors"] + report["v"]["vectors"]
    report["vectors_per_s"] = vectors / seconds
    if args.dump:
        np.savez_compressed(args.dump, **dumped)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{'':3}{'eff. bits':>10}{'SQNR dB':>9}{'INT4 dB':>9}{'outer':>8}{'middle':>8}"
          f"{'inner':>8}{'max err':>9}")
    for name in ("k", "v"):
        s = report[name]
        f = s["fractions"]
        print(f"{name.upper():3}{s['effective_bits']:10.3f}{s['sqnr_db']:9.2f}"
              f"{s['int4_per_token_head_sqnr_db']:9.2f}{f['outer']:8.2%}{f['middle']:8.2%}"
              f"{f['inner']:8.2%}{s['max_error_steps']:9.3f}")
    print(f"{vectors} vectors in {seconds:.2f} s ({report['vectors_per_s']:.0f} vectors/s); "
          f"max err in steps of the element's group; INT4 = per-token, per-head 4-bit min/max")


def register(sub):
    p = sub.add_parser("calibrate", help="profile per-layer K and V thresholds from a KV .npz")
    p.add_argument("kv", help="KV tensors (.npz with K and 'v' shaped (layers, heads, tokens, head_dim))")
    p.add_argument("-o", "--output", required=True, help="thresholds JSON to write")
    p.add_argument("--ratios", help="outer,middle,inner shares of K and V (default from the "
                   "configuration's quant.ratios: K 0.08,0.86,0.06 and V 0.02,0.94,0.04)")
    p.add_argument("--k-ratios", help="outer,middle,inner shares of K only (overrides --ratios)")
    p.add_argument("--v-ratios", help="outer,middle,inner shares of V only (overrides --ratios)")
    p.add_argument("--key", default="k", choices=["k", "k_pre"], help="which key array (default k)")
    p.add_argument("--chunk-tokens", type=int, default=64, help="tokens per calibration chunk (default 64)")
    p.add_argument("--config", help="configuration TOML (default: embedded)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("eval", help="quantize and decode a KV .npz with the golden model")
    p.add_argument("kv")
    p.add_argument("--thresholds", required=True, help="thresholds JSON from `calibrate`")
    p.add_argument("--key", default="k", choices=["k", "k_pre"])
    p.add_argument("--config", help="configuration TOML (quantizer parameters; the geometry comes from the data)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--dump", help="write the dequantized tensors (.npz, same names and shapes)")
    p.set_defaults(func=cmd_eval)
