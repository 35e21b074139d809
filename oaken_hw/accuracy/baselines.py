"""The KV-cache quantizers Oaken is compared with, and their exact storage cost.

Every quantizer takes one layer's keys or values as an array shaped
``(heads, tokens, head_dim)`` (any float dtype; FP16 in the harness) and returns the
dequantized array in float16, as an attention kernel would read it back. Scales and zero
points are rounded to FP16, as they are stored. Arithmetic is float32, vectorized NumPy.

Storage is counted by :class:`Bits` accumulators: every code, every scale and zero point,
every outlier value and index and every per-token count or pointer, in bits, against the
number of cached elements. A cache whose size per token changes as tokens are written (a
KIVI FP16 residual, per-layer constants) is charged as the mean over the decode steps of a
window: step ``n`` reads ``n`` tokens, and the effective bits are
``sum_n bits(n) / sum_n elements(n)`` -- the average memory traffic per element of
attention. For a method whose cost is the same for every token this is just its bits per
element.

Methods (``b`` code bits, ``D`` head_dim, ``H`` KV heads):

- ``int{b}``: per token, per head, asymmetric min/max (QServe KV4 / Atom style):
  ``b + 32 / D`` bits.
- ``kivi{b}``: KIVI (Liu et al., 2024). Keys per channel in groups of ``G`` tokens, values
  per token in groups of ``G`` channels; the newest tokens stay in FP16: keys are quantized
  ``R`` tokens at a time when the residual is full, values one token at a time once ``R``
  newer tokens exist. ``b + 32/G`` bits for the quantized part, 16 for the residual.
- ``kvquant4``: KVQuant-style (Hooper et al., 2024) dense-and-sparse, uniform 4-bit. Keys
  before RoPE, per channel, with offline per-channel ranges from calibration data taken as
  the ``frac/2`` and ``1 - frac/2`` quantiles (so ``frac`` = 1 % outliers there); values per
  token over the layer's whole token vector, the ``round(frac * H * D)`` largest magnitudes
  being outliers and the rest quantized with an FP16 scale and zero per token. Outliers are
  kept in FP16 with a 16-bit index (as KVQuant counts them: 32 bits each), every element
  keeps its 4-bit dense slot, and each token has an 8-bit outlier count (its CSR row
  length). The per-channel key ranges (FP16 scale + zero per channel) are charged once per
  layer. Simplifications against KVQuant: a uniform grid instead of its non-uniform
  datatype, no FP16 attention-sink token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Bits", "asym_quantize", "per_token_head", "per_token_head_bits",
           "kivi_keys", "kivi_values", "kivi_visible", "kivi_bits",
           "kvquant_calibrate_keys", "kvquant_keys", "kvquant_values",
           "kvquant_outlier_count", "kvquant_bits", "time_averaged_bits", "FP16_BITS"]

FP16_BITS = 16
META_BITS = 32          # one FP16 scale + one FP16 zero point
OUTLIER_BITS = 32       # one FP16 value + a 16-bit index
COUNT_BITS = 8          # a token's outlier count (CSR row length)


@dataclass
class Bits:
    """An accumulator of storage: ``bits`` spent on ``elems`` cached elements."""

    bits: float = 0.0
    elems: float = 0.0

    def add(self, bits, elems):
        self.bits += float(bits)
        self.elems += float(elems)
        return self

    def __iadd__(self, other):
        return self.add(other.bits, other.elems)

    @property
    def per_element(self):
        return self.bits / self.elems if self.elems else float("nan")


def _check(x):
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"expected one layer's cache shaped (heads, tokens, head_dim), "
                         f"not shape {x.shape}")
    return x


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [1, 8], not {bits!r}")


def asym_quantize(x, bits, axis):
    """Asymmetric min/max quantization of ``x`` along ``axis`` (reduced axes share one
    FP16 scale and zero point); returns the dequantized float16 array.

    ``zero = fp16(min)``, ``scale = fp16((max - min) / (2^bits - 1))``,
    ``q = clip(round((x - zero) / scale), 0, 2^bits - 1)``, ``x' = fp16(q * scale + zero)``
    (round half to even). A constant group (``scale == 0``) dequantizes to its zero point.
    """
    _check_bits(bits)
    levels = (1 << bits) - 1
    xf = np.asarray(x, dtype=np.float32)
    mn = xf.min(axis=axis, keepdims=True)
    mx = xf.max(axis=axis, keepdims=True)
    zero = mn.astype(np.float16).astype(np.float32)
    scale = ((mx - mn) / np.float32(levels)).astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint((xf - zero) / safe), 0, levels)
    q = np.where(scale > 0, q, 0)
    return (q * scale + zero).astype(np.float16)


def per_token_head(x, bits):
    """Per-token, per-head ``bits``-bit asymmetric quantization (QServe/Atom style)."""
    return asym_quantize(_check(x), bits, axis=-1)


def per_token_head_bits(heads, tokens, head_dim, bits):
    """Storage of :func:`per_token_head`: codes plus an FP16 scale and zero per head."""
    return Bits(heads * tokens * (head_dim * bits + META_BITS), heads * tokens * head_dim)


def kivi_keys(k, bits, group):
    """KIVI keys: per channel over groups of ``group`` consecutive tokens. Tokens after the
    last complete group are returned unchanged (they are still in the FP16 residual)."""
    k = _check(k)
    h, t, d = k.shape
    full = (t // group) * group
    out = k.astype(np.float16, copy=True)
    if full:
        blocks = k[:, :full].reshape(h, full // group, group, d)
        out[:, :full] = asym_quantize(blocks, bits, axis=2).reshape(h, full, d)
    return out


def kivi_values(v, bits, group):
    """KIVI values: per token over groups of ``group`` consecutive channels."""
    v = _check(v)
    h, t, d = v.shape
    if d % group:
        raise ValueError(f"KIVI value group ({group}) must divide head_dim ({d})")
    return asym_quantize(v.reshape(h, t, d // group, group), bits, axis=-1).reshape(h, t, d)


def kivi_visible(tokens, residual):
    """For each query position ``t`` (after token ``t`` is written), how many leading tokens
    it reads in quantized form: ``(keys, values)``, each an int array of length ``tokens``.

    Keys leave the residual ``residual`` tokens at a time, when it is full; values one token
    at a time once ``residual`` newer tokens exist."""
    n = np.arange(1, tokens + 1)
    return (n // residual) * residual, np.maximum(0, n - residual)


def kivi_bits(heads, tokens, head_dim, bits, group, residual):
    """Storage of KIVI keys and values for one layer over one window of ``tokens`` decode
    steps, charged as the mean over the steps (see the module doc): ``(keys, values)``."""
    if residual % group:
        raise ValueError(f"KIVI residual ({residual}) must be a multiple of the group ({group})")
    if head_dim % group:
        raise ValueError(f"KIVI value group ({group}) must divide head_dim ({head_dim})")
    n = np.arange(1, tokens + 1, dtype=np.float64)
    qk, qv = kivi_visible(tokens, residual)
    elems = float(heads * head_dim * n.sum())
    kbits = heads * head_dim * (qk * bits + (qk / group) * META_BITS + (n - qk) * FP16_BITS)
    vbits = heads * (qv * (head_dim * bits + (head_dim // group) * META_BITS)
                     + (n - qv) * head_dim * FP16_BITS)
    return Bits(float(kbits.sum()), elems), Bits(float(vbits.sum()), elems)


def time_averaged_bits(token_bits, fixed_bits, elems_per_token):
    """Storage of a cache whose token ``s`` (in write order) costs ``token_bits[s]`` and that
    has ``fixed_bits`` of constants, charged as the mean over the decode steps ``n = 1..T``
    (step ``n`` reads tokens ``0..n-1``)."""
    tb = np.asarray(token_bits, dtype=np.float64)
    t = tb.size
    steps_holding = t - np.arange(t)            # token s is read at steps s+1 .. T
    bits = float((tb * steps_holding).sum()) + t * float(fixed_bits)
    return Bits(bits, elems_per_token * t * (t + 1) / 2)


def kvquant_calibrate_keys(k_pre, frac=0.01):
    """Per-(head, channel) key ranges ``(lo, hi)`` in FP16, each shaped ``(heads, head_dim)``:
    the ``frac/2`` (lower) and ``1 - frac/2`` (higher) quantiles over the calibration tokens
    of one layer's pre-RoPE keys ``(heads, tokens, head_dim)``."""
    k_pre = _check(k_pre).astype(np.float32)
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"outlier fraction must be in [0, 1), not {frac!r}")
    lo = np.quantile(k_pre, frac / 2, axis=1, method="lower")
    hi = np.quantile(k_pre, 1 - frac / 2, axis=1, method="higher")
    return lo.astype(np.float16), hi.astype(np.float16)


def kvquant_keys(k_pre, lo, hi, bits=4):
    """KVQuant-style keys: per channel on the fixed grid ``[lo, hi]`` (offline ranges from
    :func:`kvquant_calibrate_keys`); values strictly outside it are FP16 outliers.
    Returns ``(dequantized float16, outliers per token)`` (the count over all heads)."""
    _check_bits(bits)
    k_pre = _check(k_pre)
    levels = (1 << bits) - 1
    xf = k_pre.astype(np.float32)
    lo32 = np.asarray(lo, np.float16).astype(np.float32)[:, None, :]
    hi32 = np.asarray(hi, np.float16).astype(np.float32)[:, None, :]
    zero = lo32
    scale = ((hi32 - lo32) / np.float32(levels)).astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint((xf - zero) / safe), 0, levels)
    q = np.where(scale > 0, q, 0)
    deq = q * scale + zero
    outlier = (xf < lo32) | (xf > hi32)
    out = np.where(outlier, xf, deq).astype(np.float16)
    return out, outlier.sum(axis=(0, 2))


def kvquant_outlier_count(n_elems, frac=0.01):
    """Outliers per token vector of ``n_elems`` elements for the value quantizer."""
    return max(1, int(round(frac * n_elems))) if frac > 0 else 0


def kvquant_values(v, bits=4, frac=0.01):
    """KVQuant-style values: per token over the layer's token vector (all heads); the
    ``round(frac * heads * head_dim)`` largest magnitudes stay FP16, the others are
    quantized between their min and max with an FP16 scale and zero per token.
    Returns ``(dequantized float16, outliers per token)``."""
    _check_bits(bits)
    v = _check(v)
    h, t, d = v.shape
    levels = (1 << bits) - 1
    xf = np.ascontiguousarray(v.astype(np.float32).transpose(1, 0, 2)).reshape(t, h * d)
    k = kvquant_outlier_count(h * d, frac)
    outlier = np.zeros_like(xf, dtype=bool)
    if k:
        # the k largest magnitudes; ties broken towards the lower index (stable sort)
        idx = np.argsort(-np.abs(xf), axis=1, kind="stable")[:, :k]
        np.put_along_axis(outlier, idx, True, axis=1)
    inl = np.where(outlier, np.nan, xf)
    mn = np.nanmin(inl, axis=1, keepdims=True)
    mx = np.nanmax(inl, axis=1, keepdims=True)
    zero = mn.astype(np.float16).astype(np.float32)
    scale = ((mx - mn) / np.float32(levels)).astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint((xf - zero) / safe), 0, levels)
    q = np.where(scale > 0, q, 0)
    out = np.where(outlier, xf, q * scale + zero).astype(np.float16)
    out = out.reshape(t, h, d).transpose(1, 0, 2)
    return np.ascontiguousarray(out), np.full(t, k)


def kvquant_bits(heads, head_dim, outliers_per_token, bits=4, per_token_scale=False,
                 per_channel_scale=False):
    """Storage of one layer's KVQuant-style keys or values over one window whose token ``s``
    has ``outliers_per_token[s]`` outliers (mean over the decode steps)."""
    e = heads * head_dim
    o = np.asarray(outliers_per_token, dtype=np.float64)
    token = e * bits + COUNT_BITS + OUTLIER_BITS * o + (META_BITS if per_token_scale else 0)
    fixed = e * META_BITS if per_channel_scale else 0
    return time_averaged_bits(token, fixed, e)



def describe_bits():
    """A one-paragraph summary of the storage rules (for reports)."""
    return (f"codes + FP16 scale/zero ({META_BITS} bits) per group; FP16 residual tokens at "
            f"{FP16_BITS} bits; outliers {OUTLIER_BITS} bits (FP16 value + 16-bit index) plus a "
            f"{COUNT_BITS}-bit count per token; per-layer constants charged per window; costs "
            f"that change as tokens are written are averaged over the decode steps")

