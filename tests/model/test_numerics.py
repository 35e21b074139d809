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
SORTED_VALS = np.array([fp16_exact(h) for h in SORTED], dtype=object)  # searched per call


def test_units_are_exact_for_every_finite_fp16():
    u = fp16_to_units(FINITE)
    sample = np.random.default_rng(1).choice(len(FINITE), 3000, replace=False)
    for i in sample:
        assert Fraction(int(u[i]), 1 << 24) == fp16_exact(FINITE[i])
    # and the conversion is monotone and back-convertible for all of them
    assert np.all(units_to_fp16(u) == FINITE)


def fp16_ties():
    """Exact ties between neighbouring non-negative FP16 values ``lo < hi``.

    Returns ``(tie, lo, hi)``: the midpoint in half units (2^-25), which is
    ``units(lo) + units(hi)``, and the neighbours in units. Every pair from (+0, 2^-24) up:
    all binades, the subnormal/normal boundary, each binade's last value and the next
    binade's first, up to (65472, 65504), then the overflow tie 65520 between 65504 and
    65536 (the next value, were the exponent unbounded). Built from the bit fields
    (:func:`fp16_exact`), not from the functions under test.
    """
    bits = np.arange(0x7C00, dtype=np.uint16)           # +0 .. 65504, increasing
    units = [int(fp16_exact(h) * (1 << 24)) for h in bits.view(np.float16)]
    units.append(65536 << 24)
    lo, hi = np.array(units[:-1], np.int64), np.array(units[1:], np.int64)
    return lo + hi, lo, hi


def test_ties_are_midpoints_of_neighbouring_fp16_values():
    t, lo, hi = fp16_ties()
    assert len(t) == 0x7C00 and np.all(lo < hi) and np.all(np.diff(t) > 0)
    assert np.all(t - 2 * lo == 2 * hi - t)               # the midpoint, in half units
    assert np.all(hi[:-1] == lo[1:])                      # neighbours: no FP16 value skipped
    assert t[0] == 1 and t[0x3FF] == 1023 + 1024          # +0|2^-24 and subnormal|normal
    assert t[0x3C00] == 2 * (1 << 24) + (1 << 14)         # 1 | 1 + 2^-10
    assert t[-2] == (65472 + 65504) << 24 and t[-1] == (65504 + 65536) << 24


def test_rounding_to_fp16_is_nearest_even_and_saturates():
    rng = np.random.default_rng(2)
    n = np.concatenate([
        rng.integers(-(1 << 42), 1 << 42, 400),
        rng.integers(-4096, 4096, 200),
        [2 * (65504 << 24) + (16 << 24) * 2, -(1 << 43), 0, 1, -1],
    ]).astype(np.int64)
    got = half_units_to_fp16(n)
    assert np.all(np.isfinite(got))
    for v, g in zip(n, got):
        assert g == rne_fp16(Fraction(int(v), 1 << 25)), v


def test_exact_ties_round_to_even_in_every_binade():
    ties, lo, hi = fp16_ties()
    n = np.concatenate([ties, -ties])
    got = half_units_to_fp16(n)
    assert np.all(np.isfinite(got))
    for v, g in zip(n, got):
        assert g == rne_fp16(Fraction(int(v), 1 << 25)), v
    # and directly: the neighbour with an even significand (bit 0 clear), the sign kept
    # (+0 for the tie below 2^-24), 65504 for the overflow tie
    mag = fp16_to_units(np.abs(got))
    lo2, hi2 = np.concatenate([lo, lo]), np.concatenate([hi, hi])
    top = hi2 == 65536 << 24
    assert np.all(mag[top] == 65504 << 24)
    assert np.all((mag[~top] == lo2[~top]) | (mag[~top] == hi2[~top]))
    assert np.all(np.abs(got[~top]).view(np.uint16) & 1 == 0)
    assert np.all(np.signbit(got) == ((n < 0) & (got != 0)))


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
