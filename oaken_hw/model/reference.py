"""Comparison quantizers in float64 (not bit-exact specifications).

* :func:`ideal_oaken` -- Oaken's groups and bits with plain min/max grids and exact side
  knowledge: the yardstick of the bit-exact model's SQNR;
* :func:`int4_per_token_head` -- a plain per-token, per-head 4-bit min/max quantizer.
"""

from __future__ import annotations

import numpy as np

from .numerics import fp16_to_units, sanitize
from .quantizer import INNER, MIDDLE, OUTER, check_thresholds, classify

__all__ = ["minmax_quantize", "ideal_oaken", "int4_per_token_head"]


def minmax_quantize(y, mask, levels):
    """Round ``y`` to ``levels`` evenly spaced values from the min to the max of ``y[mask]``
    along the last axis (float64); elements outside ``mask`` are returned unchanged."""
    big = np.inf
    lo = np.where(mask, y, big).min(axis=-1, keepdims=True)
    hi = np.where(mask, y, -big).max(axis=-1, keepdims=True)
    lo, hi = np.where(np.isfinite(lo), lo, 0), np.where(np.isfinite(hi), hi, 0)
    span = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(span > 0, np.round((y - lo) / span * (levels - 1)), 0)
    return np.where(mask, lo + q * span / (levels - 1), y)


def ideal_oaken(x, thresholds, cfg):
    """Float Oaken: groups, group shift, min/max grids per group (middle ``2^m`` levels,
    inner and outer ``2^(m+1)``), every element's side known exactly. Returns float64."""
    x, _ = sanitize(np.asarray(x))
    tu = np.broadcast_to(check_thresholds(thresholds), (x.shape[0], 4))
    group, upper = classify(fp16_to_units(x), tu)
    t = np.ldexp(tu.astype(np.float64), -24)
    pivot = np.select(
        [(group == MIDDLE) & ~upper, group == MIDDLE, (group == OUTER) & ~upper, group == OUTER],
        [t[:, 1, None], t[:, 2, None], t[:, 0, None], t[:, 3, None]], default=0.0)
    y = x.astype(np.float64) - pivot
    mb = cfg.quant.middle_bits
    for g, levels in ((MIDDLE, 1 << mb), (INNER, 2 << mb), (OUTER, 2 << mb)):
        y = minmax_quantize(y, group == g, levels)
    return y + pivot


def int4_per_token_head(tensor):
    """Per-token, per-head asymmetric 4-bit min/max of a ``(layers, heads, tokens, head_dim)``
    tensor (float64 result; 4 + 32/head_dim bits per element with FP16 scale and zero)."""
    x, _ = sanitize(np.asarray(tensor))
    x = x.astype(np.float64)
    return minmax_quantize(x, np.ones(x.shape, bool), 16)
