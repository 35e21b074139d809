"""Exact conversions between FP16 and the integer units of the golden model."""

from fractions import Fraction

import numpy as np

from oaken_hw.model.numerics import (FP16_MAX, fp16_to_units, half_units_to_fp16,
                                     roundup_to_fp16_units, sanitize, units_to_fp16)

ALL_FP16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
FINITE = ALL_FP16[np.isfinite(ALL_FP16)]


def fp16_exact(h):
    """Exact rational value of one FP16 from its bit fields (independent of NumPy casts)."""
    b = int(np.float16(h).view(np.uint16))
    sign, exp, man = b >> 15, (b >> 10) & 31, b & 1023
    mag = Fraction(man, 1 << 24) if exp == 0 else Fraction(1024 + man, 1 << 10) * Fraction(2) ** (exp - 15)
    return -mag if sign else mag


def rne_fp16(value):
    """Nearest FP16 to a Fraction, ties to even, saturating; by search over all FP16."""
    value = max(min(value, Fraction(65504)), Fraction(-65504))
    i = np.searchsorted(SORTED_VALS, value)
    cands = [SORTED[j] for j in (i - 1, i) if 0 <= j < len(SORTED)]
    best = min(cands, key=lambda h: (abs(fp16_exact(h) - value),
                                     int(h.view(np.uint16)) & 1))
    return best


SORTED = np.unique(FINITE[FINITE != 0]).astype(np.float16)
SORTED = np.concatenate([SORTED[SORTED < 0], [np.float16(0)], SORTED[SORTED > 0]])
SORTED_VALS = [fp16_exact(h) for h in SORTED]


def test_units_are_exact_for_every_finite_fp16():
    u = fp16_to_units(FINITE)
    sample = np.random.default_rng(1).choice(len(FINITE), 3000, replace=False)
    for i in sample:
        assert Fraction(int(u[i]), 1 << 24) == fp16_exact(FINITE[i])
    # and the conversion is monotone and back-convertible for all of them
    assert np.all(units_to_fp16(u) == FINITE)


def test_rounding_to_fp16_is_nearest_even_and_saturates():
    rng = np.random.default_rng(2)
    n = np.concatenate([
        rng.integers(-(1 << 42), 1 << 42, 400),
        rng.integers(-4096, 4096, 200),
        # exact ties between neighbouring FP16 values
        (fp16_to_units(FINITE[rng.choice(len(FINITE), 200)]) * 2 + 1) << 3,
        [2 * (65504 << 24) + (16 << 24) * 2, -(1 << 43), 0, 1, -1],
    ]).astype(np.int64)
    got = half_units_to_fp16(n)
    assert np.all(np.isfinite(got))
    for v, g in zip(n, got):
        assert g == rne_fp16(Fraction(int(v), 1 << 25)), v


def test_roundup_gives_the_smallest_fp16_not_below():
    rng = np.random.default_rng(3)
    t = np.concatenate([np.arange(0, 5000), rng.integers(0, 65504 << 24, 3000)]).astype(np.int64)
    r = roundup_to_fp16_units(t)
    assert np.all(r >= t)
    # representable, and the FP16 just below it is below t
    assert np.all(fp16_to_units(units_to_fp16(r)) == r)
    below = np.nextafter(units_to_fp16(r), np.float16(-1))
    assert np.all((r == 0) | (fp16_to_units(below) < t))


def test_sanitize_defines_nan_inf_and_negative_zero():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 6e-8, -1.5], np.float16)
    clean, bad = sanitize(x)
    assert list(bad) == [True, True, True, False, False, False]
    assert list(clean.astype(float)) == [0.0, FP16_MAX, -FP16_MAX, 0.0, float(np.float16(6e-8)), -1.5]
    assert not np.signbit(clean[3])
