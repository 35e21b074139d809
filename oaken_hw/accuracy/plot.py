"""The rate-distortion picture: perplexity against effective bits per element (PNG)."""

from __future__ import annotations

import importlib.util

from . import EVAL_INSTALL

__all__ = ["plot_results"]

# (color, marker) per method; unknown methods get gray circles
_STYLE = {"fp16": ("black", "s"), "oaken": ("tab:red", "*"), "oaken_ideal": ("tab:orange", "*"),
          "int8": ("tab:cyan", "o"), "int4": ("tab:blue", "o"), "kivi4": ("tab:olive", "^"),
          "kivi2": ("tab:green", "^"), "kvquant4": ("tab:purple", "D")}


def plot_results(results, path, title=None):
    """Draw ``results`` (the dict of :func:`.perplexity.run_accuracy`) to the PNG ``path``:
    one point per method (named in the legend with its bits and perplexity change), the FP16
    perplexity and the FP16 + 1.5 % band."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError(f"matplotlib not installed; the plot needs the eval extra: "
                         f"{EVAL_INSTALL}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    meta = results.get("meta", {})
    fig, ax = plt.subplots(figsize=(8.0, 4.8), dpi=130)
    ref = methods.get("fp16", {}).get("ppl")
    if ref is not None:
        ax.axhline(ref, color="black", lw=0.8, ls="--")
        ax.axhspan(ref, ref * 1.015, color="tab:red", alpha=0.10, label="FP16 + 1.5 % (goal)")
    for name, r in methods.items():
        color, marker = _STYLE.get(name, ("tab:gray", "o"))
        delta = r.get("delta_pct")
        label = f"{r.get('label', name)}: {r['effective_bits']:.2f} bits, ppl {r['ppl']:.3f}"
        if delta is not None and name != "fp16":
            label += f" ({delta:+.2f} %)"
        ax.scatter(r["effective_bits"], r["ppl"], s=170 if marker == "*" else 50, color=color,
                   marker=marker, zorder=3, label=label, edgecolors="white", linewidths=0.5)
    ppls = [r["ppl"] for r in methods.values()]
    if max(ppls) / min(ppls) > 3:
        ax.set_yscale("log")
    ax.set_xlabel("effective bits per cached element (all metadata counted)")
    ax.set_ylabel("perplexity (lower is better)")
    if title is None:
        model = meta.get("model", "model").split(" (")[0]
        title = (f"{model}: KV-cache quantization, {meta.get('tokens', '?')} tokens, "
                 f"windows of {meta.get('window', '?')}")
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.05, y=0.1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
