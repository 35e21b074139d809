"""Exact number formats of the golden model (see ``docs/numerics.md``).

All arithmetic of the quantizer is on integers. An FP16 value is held exactly as a signed
integer count of 2^-24 ("units"): every finite FP16 number, subnormals included, is an
integer multiple of 2^-24 and at most 65504 * 2^24 < 2^40 in magnitude, so 41 bits hold
it and NumPy's int64 holds every intermediate. Reconstructed values carry one more
fractional bit (2^-25, "half units") because levels sit at the centre of a step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FRAC_BITS", "FP16_MAX", "MAX_UNITS", "sanitize", "fp16_to_units", "units_to_fp16",
           "half_units_to_fp16", "roundup_to_fp16_units", "fp16_bits", "fp16_from_bits"]

#: fractional bits of the fixed-point "units" (LSB = 2^-24 = the smallest FP16 subnormal)
FRAC_BITS = 24
#: largest finite FP16
FP16_MAX = 65504.0
#: FP16_MAX in units
MAX_UNITS = 65504 << FRAC_BITS


def sanitize(x):
    """Map FP16 input to the values the quantizer works on.

    NaN becomes +0, +Inf and -Inf become +65504 and -65504 (the largest finite FP16),
    -0 becomes +0. Finite values, subnormals included, are kept exactly.

    Returns
    -------
    clean : ndarray of float16
    bad : ndarray of bool
        True where the input was NaN or infinite.
    """
    x = np.asarray(x, dtype=np.float16)
    nan, inf = np.isnan(x), np.isinf(x)
    clean = np.where(nan, np.float16(0), x)
    clean = np.where(inf, np.copysign(np.float16(FP16_MAX), x), clean).astype(np.float16)
    clean = clean + np.float16(0)  # -0 + 0 = +0
    return clean, nan | inf


def fp16_to_units(x):
    """Exact signed integer value of finite FP16 ``x`` in units of 2^-24 (int64)."""
    x = np.asarray(x, dtype=np.float16)
    if not np.all(np.isfinite(x)):
        raise ValueError("fp16_to_units takes finite values only; sanitize() them first")
    return np.ldexp(x.astype(np.float64), FRAC_BITS).astype(np.int64)


def _int_to_fp16(n, frac_bits):
    """Round integer ``n * 2^-frac_bits`` to FP16, nearest-even, saturating at +-65504."""
    n = np.asarray(n, dtype=np.int64)
    # |n| < 2^53 so the float64 value is exact; NumPy's float64 -> float16 cast rounds to
    # nearest even (checked against an integer implementation in the tests). Saturating
    # before the cast keeps finite results finite.
    v = np.ldexp(n.astype(np.float64), -frac_bits)
    v = np.clip(v, -FP16_MAX, FP16_MAX)
    return (v.astype(np.float16) + np.float16(0)).astype(np.float16)


def units_to_fp16(n):
    """FP16 nearest (ties to even, saturating) to ``n`` units of 2^-24."""
    return _int_to_fp16(n, FRAC_BITS)


def half_units_to_fp16(n):
    """FP16 nearest (ties to even, saturating) to ``n`` half units of 2^-25."""
    return _int_to_fp16(n, FRAC_BITS + 1)


def roundup_to_fp16_units(t):
    """Smallest non-negative FP16 value >= ``t`` units, returned in units (int64).

    FP16 values are integers in units; below 2048 units every integer is one (subnormals
    and the first binade), above it an FP16 value keeps its 11 leading bits.
    """
    t = np.asarray(t, dtype=np.int64)
    if np.any(t < 0):
        raise ValueError("roundup_to_fp16_units takes non-negative values")
    # bit length of t, exact from the float64 exponent (t < 2^53)
    _, bitlen = np.frexp(t.astype(np.float64))
    shift = np.maximum(bitlen.astype(np.int64) - 11, 0)
    out = ((t + (np.int64(1) << shift) - 1) >> shift) << shift
    if np.any(out > MAX_UNITS):
        raise ValueError("step exceeds the FP16 range")
    return out


def fp16_bits(x):
    """IEEE binary16 bit patterns of ``x`` (uint16)."""
    return np.asarray(x, dtype=np.float16).view(np.uint16)


def fp16_from_bits(b):
    """FP16 values of bit patterns ``b``."""
    return np.asarray(b, dtype=np.uint16).view(np.float16)
