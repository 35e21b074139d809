"""The Oaken quantizer and dequantizer, bit-exact (the specification of the RTL).

Vectorized over many quantization vectors at once: ``x`` is ``(N, V)`` FP16 and
``thresholds`` is ``(N, 4)`` FP16 (the thresholds of each vector's layer and K/V, in the
order ``T_o_lo, T_i_lo, T_i_hi, T_o_hi``). ``docs/numerics.md`` explains every step.

The three groups and their codes (``m = middle_bits``, 4 by default):

* **middle** (``T_o_lo < x <= T_i_lo`` or ``T_i_hi <= x < T_o_hi``): shifted by the inner
  threshold of its side, ``2^m`` codes split between the two sides at ``n_lo``: codes below
  ``n_lo`` are the lower side, so the side is recovered from the code alone;
* **outer** (``x <= T_o_lo`` or ``x >= T_o_hi``): shifted by the outer threshold of its side,
  ``m``-bit magnitude code plus the side bit (in the sparse byte);
* **inner** (``T_i_lo < x < T_i_hi``): not shifted, ``m + 1``-bit min/step code.

Every group quantizes a magnitude ``mag >= 0`` with a step ``delta`` (an FP16 value):
``j = min(mag // delta, levels - 1)`` and reconstructs ``(j + 1/2) * delta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .numerics import (fp16_bits, fp16_from_bits, fp16_to_units, half_units_to_fp16,
                       roundup_to_fp16_units, sanitize)

__all__ = ["MIDDLE", "INNER", "OUTER", "RECIP_BITS", "Encoded", "check_thresholds",
           "classify", "reciprocal", "step_for", "middle_split", "quantize", "element_steps",
           "dequantize"]

MIDDLE, INNER, OUTER = 0, 1, 2

#: fraction bits of the reciprocal table ``ceil(2^RECIP_BITS / n)`` that makes steps
RECIP_BITS = 20


@dataclass
class Encoded:
    """Quantized vectors before packing into the memory format.

    Attributes
    ----------
    group : ndarray (N, V) uint8
        ``MIDDLE``, ``INNER`` or ``OUTER`` per element.
    dense : ndarray (N, V) uint8
        The ``middle_bits``-bit dense slot of every element.
    high : ndarray (N, V) uint8
        The outlier's extra code bit (outer: side, 1 = upper; inner: code MSB); 0 for middle.
    delta_mid, delta_inner, delta_outer, inner_min : ndarray (N,) uint16
        FP16 bit patterns of the group steps and of the inner group's minimum.
    n_lo : ndarray (N,) uint8
        Middle codes below ``n_lo`` belong to the lower side.
    bad_inputs : ndarray (N,) int64
        NaN or infinite inputs per vector (they were quantized as 0 and +-65504).
    """

    group: np.ndarray
    dense: np.ndarray
    high: np.ndarray
    delta_mid: np.ndarray
    delta_inner: np.ndarray
    delta_outer: np.ndarray
    inner_min: np.ndarray
    n_lo: np.ndarray
    bad_inputs: np.ndarray

    @property
    def outlier(self):
        return self.group != MIDDLE


def check_thresholds(thresholds):
    """Validate FP16 thresholds ``(..., 4)``: finite and ``T_o_lo <= T_i_lo <= T_i_hi <= T_o_hi``.

    Returns them in units (int64). Raises ``ValueError`` naming the problem.
    """
    th = np.asarray(thresholds)
    if th.shape[-1:] != (4,):
        raise ValueError(f"thresholds must have shape (..., 4), not {th.shape}")
    th = th.astype(np.float16)
    if not np.all(np.isfinite(th)):
        raise ValueError("thresholds must be finite FP16 values")
    tu = fp16_to_units(th)
    if np.any(np.diff(tu, axis=-1) < 0):
        raise ValueError("thresholds must be ordered T_o_lo <= T_i_lo <= T_i_hi <= T_o_hi")
    return tu


def classify(xu, tu):
    """Group and side of each element (values and thresholds in units).

    Returns
    -------
    group : ndarray uint8
    upper : ndarray bool
        The side of middle (``x >= T_i_hi``) and outer (``x >= T_o_hi``) elements;
        always False for inner elements.
    """
    t_olo, t_ilo, t_ihi, t_ohi = (tu[..., k, None] for k in range(4))
    outer = (xu <= t_olo) | (xu >= t_ohi)
    inner = (xu > t_ilo) & (xu < t_ihi)   # disjoint from outer for ordered thresholds
    group = np.where(outer, OUTER, np.where(inner, INNER, MIDDLE)).astype(np.uint8)
    # the side decides the pivot: an outer value is upper only beyond T_o_hi, so that a
    # value at T_o_lo == T_i_hi (degenerate thresholds) is shifted by its own threshold
    upper = np.where(outer, xu >= t_ohi, xu >= t_ihi) & ~inner
    return group, upper


def reciprocal(n):
    """``ceil(2^RECIP_BITS / n)``: the reciprocal table the step computation uses."""
    n = np.asarray(n, dtype=np.int64)
    return -((-(np.int64(1) << RECIP_BITS)) // np.maximum(n, 1))


def step_for(extent, levels):
    """The step (units, an FP16 value) that covers ``extent`` with ``levels`` bins.

    ``roundup_fp16(ceil(extent * ceil(2^20 / levels) / 2^20))``: never smaller than
    ``extent / levels``, so ``levels * step >= extent``, and 0 for an empty extent.
    """
    extent = np.asarray(extent, dtype=np.int64)
    prod = extent * reciprocal(levels)
    return roundup_to_fp16_units(-((-prod) >> RECIP_BITS))


def middle_split(a, b, has_lo, has_hi, codes):
    """Choose how the middle codes are split between the sides.

    ``n_lo`` minimizes the exact step ``max(a / n_lo, b / (codes - n_lo))`` over the splits
    that give every present side at least one code (ties: the smallest ``n_lo``).

    Returns
    -------
    n_lo : ndarray int64
    extent, levels : ndarray int64
        The binding side's extent and code count, from which the step is made.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    has_lo, has_hi = np.asarray(has_lo, dtype=bool), np.asarray(has_hi, dtype=bool)
    n_lo = np.zeros(a.shape, np.int64)
    extent = np.zeros(a.shape, np.int64)
    levels = np.zeros(a.shape, np.int64)      # 0: no candidate taken yet
    for n in range(codes + 1):                # a loop over the splits, vectorized over vectors
        m = codes - n
        # the upper side binds where a/n <= b/m (cross-multiplied, exact)
        hi_binds = (a * m <= b * n) & (m > 0)
        e, l = np.where(hi_binds, b, a), np.where(hi_binds, m, n)
        valid = (n >= has_lo) & (m >= has_hi) & (l > 0)
        # strictly smaller step (e / l < extent / levels) wins, so ties keep the smaller n_lo
        better = valid & ((levels == 0) | (e * levels < extent * l))
        n_lo = np.where(better, n, n_lo)
        extent = np.where(better, e, extent)
        levels = np.where(better, l, levels)
    return n_lo, extent, levels


def _masked_max(v, mask):
    return np.where(mask, v, 0).max(axis=-1)


def quantize(x, thresholds, cfg):
    """Quantize FP16 vectors ``x`` (N, V) with per-vector thresholds (N, 4).

    Parameters
    ----------
    x : array_like of float16, shape (N, V)
    thresholds : array_like of float16, shape (N, 4) or (4,)
    cfg : OakenConfig

    Returns
    -------
    Encoded
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array of vectors, not shape {x.shape}")
    x, bad = sanitize(x)
    tu = np.broadcast_to(check_thresholds(thresholds), (x.shape[0], 4))
    mb = cfg.quant.middle_bits
    codes = 1 << mb

    xu = fp16_to_units(x)
    group, upper = classify(xu, tu)
    is_mid, is_in, is_out = group == MIDDLE, group == INNER, group == OUTER

    # inner group: pivot is the group's minimum, an input value, so exact in FP16
    big = np.int64(1) << 62
    inner_min = np.where(is_in, xu, big).min(axis=-1)
    inner_max = np.where(is_in, xu, -big).max(axis=-1)
    has_in = is_in.any(axis=-1)
    inner_min = np.where(has_in, inner_min, 0)
    inner_ext = np.where(has_in, inner_max - inner_min, 0)

    # group shift: subtract the threshold of the element's side (the pivot)
    pivot = np.select(
        [is_mid & ~upper, is_mid & upper, is_out & ~upper, is_out & upper],
        [tu[:, 1, None], tu[:, 2, None], tu[:, 0, None], tu[:, 3, None]],
        default=inner_min[:, None])
    mag = np.abs(xu - pivot)

    lo_mid, hi_mid = is_mid & ~upper, is_mid & upper
    n_lo, mid_ext, mid_levels = middle_split(
        _masked_max(mag, lo_mid), _masked_max(mag, hi_mid),
        lo_mid.any(axis=-1), hi_mid.any(axis=-1), codes)
    d_mid = step_for(mid_ext, mid_levels)
    d_in = step_for(inner_ext, 2 * codes)
    d_out = step_for(_masked_max(mag, is_out), codes)

    delta = np.select([is_mid, is_in], [d_mid[:, None], d_in[:, None]], default=d_out[:, None])
    side_levels = np.select([lo_mid, hi_mid, is_in],
                            [n_lo[:, None], codes - n_lo[:, None], 2 * codes], default=codes)
    j = np.minimum(mag // np.maximum(delta, 1), side_levels - 1)
    j = np.where(delta == 0, 0, j)

    code = np.select([lo_mid, hi_mid], [n_lo[:, None] - 1 - j, n_lo[:, None] + j], default=j)
    dense = (code & (codes - 1)).astype(np.uint8)
    high = np.select([is_out, is_in], [upper, code >> mb], default=0).astype(np.uint8)

    as_bits = lambda u: fp16_bits(np.ldexp(u.astype(np.float64), -24).astype(np.float16))
    return Encoded(group=group, dense=dense, high=high,
                   delta_mid=as_bits(d_mid), delta_inner=as_bits(d_in),
                   delta_outer=as_bits(d_out), inner_min=as_bits(inner_min),
                   n_lo=n_lo.astype(np.uint8), bad_inputs=bad.sum(axis=-1).astype(np.int64))


def element_steps(enc):
    """The step (units) of every element's group, shape (N, V)."""
    d = [fp16_to_units(fp16_from_bits(b))[:, None]
         for b in (enc.delta_mid, enc.delta_inner, enc.delta_outer)]
    return np.select([enc.group == MIDDLE, enc.group == INNER], d[:2], default=d[2])


def dequantize(enc, thresholds, cfg):
    """Reconstruct FP16 vectors from an :class:`Encoded` (the golden decoder).

    The level ``(j + 1/2) * delta`` is added to (upper side, inner) or subtracted from
    (lower side) the pivot, in half units, and rounded to FP16 once (nearest even,
    saturating at +-65504).
    """
    n = enc.group.shape[0]
    tu = np.broadcast_to(check_thresholds(thresholds), (n, 4))
    mb = cfg.quant.middle_bits
    g, dense, high = enc.group, enc.dense.astype(np.int64), enc.high.astype(np.int64)
    n_lo = enc.n_lo.astype(np.int64)[:, None]
    inner_min = fp16_to_units(fp16_from_bits(enc.inner_min))[:, None]
    delta = element_steps(enc)

    mid_upper = dense >= n_lo
    j = np.select([g == MIDDLE, g == INNER],
                  [np.where(mid_upper, dense - n_lo, n_lo - 1 - dense), (high << mb) | dense],
                  default=dense)
    upper = np.select([g == MIDDLE, g == INNER], [mid_upper, True], default=high.astype(bool))
    pivot = np.select(
        [(g == MIDDLE) & ~upper, (g == MIDDLE) & upper, (g == OUTER) & ~upper, g == OUTER],
        [tu[:, 1, None], tu[:, 2, None], tu[:, 0, None], tu[:, 3, None]], default=inner_min)
    level = (2 * j + 1) * delta
    return half_units_to_fp16(2 * pivot + np.where(upper, level, -level))
