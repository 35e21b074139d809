"""The golden quantizer: error bound, side recovery, split and step rules, edge cases."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from oaken_hw.model import INNER, MIDDLE, OUTER, dequantize, quantize
from oaken_hw.model.numerics import fp16_to_units, sanitize
from oaken_hw.model.quantizer import (check_thresholds, classify, element_steps, middle_split,
                                      step_for)


def half_ulp_units(y):
    """Half the FP16 spacing at ``y`` (units of 2^-24, as float): the output rounding bound."""
    y = np.abs(y.astype(np.float64))
    exp = np.maximum(np.floor(np.log2(np.maximum(y, 2.0 ** -14))), -14)
    return np.ldexp(1.0, (exp - 10 + 24).astype(int)) / 2


def check_bound(x, th, cfg):
    """Every element within step/2 + half an FP16 ulp, on its own side; no NaN/Inf out."""
    enc = quantize(x, th, cfg)
    out = dequantize(enc, th, cfg)
    assert np.all(np.isfinite(out))
    clean, _ = sanitize(x)
    xu, ou = fp16_to_units(clean), fp16_to_units(out)
    step = element_steps(enc)
    err = np.abs(ou - xu).astype(np.float64)
    assert np.all(err <= step / 2 + half_ulp_units(out)), np.max(err - step / 2)
    # the side of every shifted value is recovered: middle and outer stay beyond their threshold
    tu = np.broadcast_to(check_thresholds(th), (x.shape[0], 4))
    group, upper = classify(xu, tu)
    assert np.array_equal(group, enc.group)
    lo_side = (group != INNER) & ~upper
    assert np.all(ou[lo_side & (group == MIDDLE)] <= np.broadcast_to(tu[:, 1:2], xu.shape)[lo_side & (group == MIDDLE)])
    assert np.all(ou[upper & (group == MIDDLE)] >= np.broadcast_to(tu[:, 2:3], xu.shape)[upper & (group == MIDDLE)])
    assert np.all(ou[lo_side & (group == OUTER)] <= np.broadcast_to(tu[:, 0:1], xu.shape)[lo_side & (group == OUTER)])
    assert np.all(ou[upper & (group == OUTER)] >= np.broadcast_to(tu[:, 3:4], xu.shape)[upper & (group == OUTER)])
    return enc, out


finite16 = st.floats(width=16, allow_nan=False, allow_infinity=False)
any16 = st.floats(width=16)


@st.composite
def vectors_and_thresholds(draw, cfg, finite=True):
    v = cfg.vector_len
    scale = draw(st.sampled_from([1e-6, 1e-3, 0.1, 1.0, 30.0, 3000.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    noise = np.clip(rng.standard_t(3, (2, v)) * scale, -65504, 65504).astype(np.float16)
    # a few drawn values (extremes, subnormals, NaN/Inf when allowed) at random places
    special = draw(st.lists(finite16 if finite else any16, max_size=24))
    x = noise.reshape(-1).copy()
    x[rng.choice(x.size, len(special), replace=False)] = special
    x = x.reshape(2, v)
    th = np.sort(draw(hnp.arrays(np.float16, 4, elements=finite16)).astype(np.float64))
    if draw(st.booleans()):   # thresholds at realistic positions of this data
        th = np.quantile(noise.astype(np.float64), [0.02, 0.47, 0.53, 0.98])
    return x, np.sort(th.astype(np.float16))


SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
             HealthCheck.filter_too_much]


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW_DATA)
@given(data=st.data())
def test_error_bound_and_sides_on_random_vectors(cfg, data):
    x, th = data.draw(vectors_and_thresholds(cfg))
    check_bound(x, th, cfg)


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_DATA)
@given(data=st.data())
def test_nan_inf_input_is_defined(cfg, data):
    x, th = data.draw(vectors_and_thresholds(cfg, finite=False))
    enc = quantize(x, th, cfg)
    assert np.array_equal(enc.bad_inputs, (~np.isfinite(x)).sum(axis=1))
    check_bound(x, th, cfg)   # against the sanitized values


def test_real_kv_bound_and_sqnr_close_to_ideal(cfg, kv_topics, kv_tutorial):
    from oaken_hw.calibrate import calibrate
    from oaken_hw.model import sqnr_db, to_vectors
    from oaken_hw.model.reference import ideal_oaken, int4_per_token_head
    for key in ("k", "v"):
        th = calibrate(kv_topics[key])
        vec, layer = to_vectors(kv_tutorial[key], cfg)
        _, out = check_bound(vec, th[layer], cfg)
        ours, ideal = sqnr_db(vec, out), sqnr_db(vec, ideal_oaken(vec, th[layer], cfg))
        assert ours >= ideal - 0.3, (key, ours, ideal)
        assert ours > sqnr_db(kv_tutorial[key], int4_per_token_head(kv_tutorial[key])) + 2


def brute_split(a, b, has_lo, has_hi, codes):
    best = None
    for n in range(codes + 1):
        m = codes - n
        if n < has_lo or m < has_hi:
            continue
        if (a and not n) or (b and not m):
            continue
        cost = max(Fraction(a, n) if n else Fraction(0), Fraction(b, m) if m else Fraction(0))
        if best is None or cost < best[1]:
            best = (n, cost)
    return best


def test_middle_split_is_the_exact_argmin():
    rng = np.random.default_rng(4)
    a = np.concatenate([rng.integers(0, 1 << 40, 300), rng.integers(0, 20, 300), [0, 0, 5, 0]])
    b = np.concatenate([rng.integers(0, 1 << 40, 300), rng.integers(0, 20, 300), [0, 7, 0, 0]])
    has_lo = (a > 0) | (rng.random(a.size) < 0.5)
    has_hi = (b > 0) | (rng.random(b.size) < 0.5)
    n_lo, ext, lev = middle_split(a, b, has_lo, has_hi, 16)
    for i in range(a.size):
        n, cost = brute_split(int(a[i]), int(b[i]), int(has_lo[i]), int(has_hi[i]), 16)
        assert n_lo[i] == n and Fraction(int(ext[i]), int(lev[i])) == cost, i


def test_step_covers_the_extent_and_is_tight():
    rng = np.random.default_rng(5)
    for levels in (1, 3, 7, 15, 16, 32):
        # extents up to the largest a step can cover (steps are FP16: < 2^40 units)
        ext = np.concatenate([rng.integers(0, levels << 39, 2000), np.arange(0, 100)])
        s = step_for(ext, levels)
        assert np.all(s * levels >= ext)
        # at most the reciprocal's rounding (< levels / 2^20) and FP16's (2^-10) above exact
        assert np.all(s <= np.ceil(ext / levels * (1 + levels * 2.0 ** -20)) * (1 + 2 ** -10) + 1)
    assert step_for(np.array([0]), 16)[0] == 0


@pytest.mark.parametrize("name,x,th", [
    ("all equal", np.full(192, 1.25), [-1, -0.5, 0.5, 1]),
    ("all inner", np.linspace(-0.4, 0.4, 192), [-1, -0.5, 0.5, 1]),
    ("all outer", np.concatenate([np.linspace(-9, -1, 96), np.linspace(1, 9, 96)]), [-1, -0.5, 0.5, 1]),
    ("all middle lower", np.linspace(-0.9, -0.5, 192), [-1, -0.5, 0.5, 1]),
    ("thresholds at zero", np.linspace(-3, 3, 192), [0, 0, 0, 0]),
    ("subnormals", np.arange(-96, 96) * 2.0 ** -24, [-2 ** -20, -2 ** -23, 2 ** -23, 2 ** -20]),
    ("extremes", np.concatenate([np.full(96, -65504), np.full(96, 65504)]), [-65504, -1, 1, 65504]),
    ("extremes unbalanced", np.concatenate([[-65504], np.full(191, 65504)]), [-65504, 0, 0, 65504]),
    ("empty inner band", np.linspace(-2, 2, 192), [-1, 0.25, 0.25, 1]),
])
def test_edge_cases(cfg, name, x, th):
    x = np.asarray(x, np.float16)[None]
    check_bound(x, np.asarray(th, np.float16), cfg)


def test_zero_extents_decode_exactly(cfg):
    # an inner group whose min equals its max, and middle/outer values on their thresholds:
    # every extent is 0, so are the steps, and every element comes back exactly
    x = np.array([[-1.0] * 64 + [-0.5] * 64 + [0.125] * 32 + [1.0] * 32], np.float16)
    th = np.array([-1, -0.5, 0.5, 1], np.float16)
    enc = quantize(x, th, cfg)
    assert enc.delta_mid[0] == enc.delta_inner[0] == enc.delta_outer[0] == 0
    assert np.array_equal(dequantize(enc, th, cfg), x)


def test_unordered_or_nonfinite_thresholds_are_rejected(cfg):
    x = np.zeros((1, cfg.vector_len), np.float16)
    for th in ([1, 0, 2, 3], [0, 1, 2, np.inf], [np.nan, 0, 1, 2]):
        with pytest.raises(ValueError, match="thresholds"):
            quantize(x, np.array(th, np.float16), cfg)


def test_classification_matches_the_paper(cfg):
    th = np.array([-2, -0.5, 0.5, 2], np.float16)
    x = np.array([[-3, -2, -1.9, -0.5, -0.4, 0, 0.4, 0.5, 1.9, 2, 3] + [0] * 181], np.float16)
    enc = quantize(x, th, cfg)
    assert list(enc.group[0, :11]) == [OUTER, OUTER, MIDDLE, MIDDLE, INNER, INNER, INNER,
                                       MIDDLE, MIDDLE, OUTER, OUTER]
