"""Numerics and storage accounting of the baseline quantizers, against independent
element-by-element reference computations (pure Python loops, no vectorization)."""

import math

import numpy as np
import pytest

from oaken_hw.accuracy import baselines as bl


def kv(shape, seed=0, outliers=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=shape) * 0.7
    if outliers:
        x[..., 3] *= 12          # an outlier channel, as real keys have
    return x.astype(np.float16)


def ref_minmax(values, bits):
    """One group, element by element, as the docstrings specify."""
    vals = [float(v) for v in values]
    levels = 2 ** bits - 1
    mn, mx = min(vals), max(vals)
    zero = float(np.float16(mn))
    scale = float(np.float16(np.float32(mx - mn) / np.float32(levels)))
    out = []
    for v in vals:
        if scale == 0:
            out.append(np.float16(zero))
            continue
        q = min(max(round((np.float32(v) - np.float32(zero)) / np.float32(scale)), 0), levels)
        out.append(np.float16(np.float32(q) * np.float32(scale) + np.float32(zero)))
    return out


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_token_head_matches_reference(bits):
    x = kv((2, 5, 16))
    got = bl.per_token_head(x, bits)
    assert got.dtype == np.float16 and got.shape == x.shape
    for h in range(2):
        for t in range(5):
            assert list(got[h, t]) == ref_minmax(x[h, t], bits)


def test_per_token_head_error_bound_and_extremes():
    x = kv((3, 40, 64), seed=1)
    got = bl.per_token_head(x, 4).astype(np.float64)
    xf = x.astype(np.float64)
    scale = (xf.max(-1) - xf.min(-1)) / 15
    # half a step, plus FP16 rounding of scale, zero and result
    assert np.all(np.abs(got - xf) <= scale[..., None] * 0.5 + 1e-2 * np.abs(xf).max())
    # the minimum of every vector is (the FP16 of) itself: zero point = min
    idx = xf.argmin(-1)
    assert np.allclose(np.take_along_axis(got, idx[..., None], -1)[..., 0],
                       np.take_along_axis(xf, idx[..., None], -1)[..., 0])


def test_constant_vectors_dequantize_exactly():
    x = np.full((1, 3, 8), 1.5, np.float16)
    for f in (lambda a: bl.per_token_head(a, 4), lambda a: bl.kivi_keys(a, 2, 2),
              lambda a: bl.kivi_values(a, 2, 4), lambda a: bl.kvquant_values(a, 4, 0.1)[0]):
        out = f(x)
        assert np.all(out == x) and np.all(np.isfinite(out))


def test_per_token_head_bits():
    b = bl.per_token_head_bits(3, 100, 64, 4)
    assert b.per_element == 4 + 32 / 64 == 4.5
    assert bl.per_token_head_bits(3, 7, 64, 8).per_element == 8.5
    assert bl.per_token_head_bits(8, 7, 128, 4).per_element == 4.25   # QServe's figure


def test_kivi_keys_matches_reference():
    x = kv((2, 11, 6), seed=2)
    g = 4
    got = bl.kivi_keys(x, 2, g)
    for h in range(2):
        for c in range(6):
            for start in (0, 4):               # two complete groups of 4 tokens
                ref = ref_minmax(x[h, start:start + g, c], 2)
                assert list(got[h, start:start + g, c]) == ref
    assert np.array_equal(got[:, 8:], x[:, 8:])  # the 3 tokens left are the FP16 residual


def test_kivi_values_matches_reference():
    x = kv((2, 5, 8), seed=3)
    got = bl.kivi_values(x, 4, 4)
    for h in range(2):
        for t in range(5):
            for c0 in (0, 4):
                assert list(got[h, t, c0:c0 + 4]) == ref_minmax(x[h, t, c0:c0 + 4], 4)
    with pytest.raises(ValueError, match="divide"):
        bl.kivi_values(x, 4, 3)


def test_kivi_visible():
    k, v = bl.kivi_visible(10, 4)
    # after writing token t (n = t + 1 tokens): keys flushed 4 at a time, values one at a time
    assert list(k) == [0, 0, 0, 4, 4, 4, 4, 8, 8, 8]
    assert list(v) == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]


def simulate_kivi_storage(heads, tokens, d, bits, group, residual):
    """Decode step by step with an explicit cache; count bits and elements read per step."""
    kq = vq = 0                  # quantized tokens
    kres, vres = [], []          # FP16 residual tokens
    total_k = total_v = elems = 0
    for t in range(tokens):
        kres.append(t)
        vres.append(t)
        if len(kres) == residual:          # keys: flush the full residual
            kq += residual
            kres = []
        if len(vres) > residual:           # values: the oldest leaves the residual
            vq += 1
            vres.pop(0)
        k_bits = kq * d * bits + (kq // group) * d * 32 + len(kres) * d * 16
        v_bits = vq * (d * bits + (d // group) * 32) + len(vres) * d * 16
        total_k += heads * k_bits
        total_v += heads * v_bits
        elems += heads * (t + 1) * d
    return total_k / elems, total_v / elems


@pytest.mark.parametrize("tokens", [1, 7, 64, 300])
def test_kivi_bits_matches_simulation(tokens):
    kb, vb = bl.kivi_bits(3, tokens, 64, 2, 32, 128)
    sk, sv = simulate_kivi_storage(3, tokens, 64, 2, 32, 128)
    assert math.isclose(kb.per_element, sk) and math.isclose(vb.per_element, sv)


def test_kivi_bits_limits():
    # a very long window: the residual is amortized away -> b + 32/G
    kb, vb = bl.kivi_bits(1, 200_000, 64, 4, 32, 128)
    assert abs(kb.per_element - 5.0) < 0.02 and abs(vb.per_element - 5.0) < 0.03
    # shorter than the residual: all FP16
    kb, vb = bl.kivi_bits(1, 100, 64, 4, 32, 128)
    assert kb.per_element == vb.per_element == 16.0
    with pytest.raises(ValueError):
        bl.kivi_bits(1, 10, 64, 4, 32, 100)


def test_time_averaged_bits_matches_brute_force():
    rng = np.random.default_rng(4)
    tb = rng.integers(100, 200, size=9)
    got = bl.time_averaged_bits(tb, 50, 10)
    bits = sum(sum(tb[:n]) + 50 for n in range(1, 10))
    elems = sum(10 * n for n in range(1, 10))
    assert math.isclose(got.per_element, bits / elems)
    assert bl.time_averaged_bits(np.full(5, 80), 0, 10).per_element == 8.0


def test_kvquant_keys_matches_reference():
    cal = kv((2, 400, 8), seed=5)
    lo, hi = bl.kvquant_calibrate_keys(cal, 0.01)
    assert lo.shape == hi.shape == (2, 8) and lo.dtype == np.float16
    for h in range(2):
        for c in range(8):
            col = np.sort(cal[h, :, c].astype(np.float64))
            assert lo[h, c] == np.float16(col[int(math.floor(0.005 * 399))])
            assert hi[h, c] == np.float16(col[int(math.ceil(0.995 * 399))])
    x = kv((2, 30, 8), seed=6)
    got, per_token = bl.kvquant_keys(x, lo, hi, 4)
    n_out = 0
    for h in range(2):
        for c in range(8):
            l, u = float(lo[h, c]), float(hi[h, c])
            scale = float(np.float16(np.float32(u - l) / np.float32(15)))
            for t in range(30):
                v = float(x[h, t, c])
                if v < l or v > u:
                    n_out += 1
                    assert got[h, t, c] == x[h, t, c]         # FP16 outlier kept exactly
                else:
                    q = min(max(round((np.float32(v) - np.float32(l)) / np.float32(scale)), 0), 15)
                    assert got[h, t, c] == np.float16(np.float32(q) * np.float32(scale) + np.float32(l))
    assert per_token.sum() == n_out and per_token.shape == (30,)


def test_kvquant_calibration_gives_about_one_percent():
    cal = kv((3, 2000, 64), seed=7)
    lo, hi = bl.kvquant_calibrate_keys(cal, 0.01)
    _, per_token = bl.kvquant_keys(cal, lo, hi, 4)
    assert 0.005 < per_token.sum() / cal.size <= 0.011


def test_kvquant_values():
    x = kv((3, 20, 64), seed=8)
    got, per_token = bl.kvquant_values(x, 4, 0.01)
    k = bl.kvquant_outlier_count(192, 0.01)
    assert k == 2 and list(per_token) == [2] * 20
    for t in range(20):
        vec = x[:, t, :].reshape(-1).astype(np.float64)
        out = got[:, t, :].reshape(-1)
        order = sorted(range(vec.size), key=lambda i: (-abs(vec[i]), i))
        outl = set(order[:k])
        inl = [vec[i] for i in range(vec.size) if i not in outl]
        ref = ref_minmax(np.array(inl, np.float16), 4)
        it = iter(ref)
        for i in range(vec.size):
            if i in outl:
                assert out[i] == np.float16(vec[i])
            else:
                assert out[i] == next(it)


def test_kvquant_bits():
    # keys: 4-bit slots + 8-bit count per token + 32 bits per outlier + per-channel
    # FP16 scale/zero once per layer (charged per window)
    outl = np.array([0, 3, 1, 2])
    b = bl.kvquant_bits(3, 64, outl, 4, per_channel_scale=True)
    e = 192
    tok = [e * 4 + 8 + 32 * o for o in outl]
    bits = sum(sum(tok[:n]) + e * 32 for n in range(1, 5))
    assert math.isclose(b.per_element, bits / sum(e * n for n in range(1, 5)))
    # values: no per-layer constant, an FP16 scale + zero per token
    b = bl.kvquant_bits(3, 64, np.full(10, 2), 4, per_token_scale=True)
    assert math.isclose(b.per_element, 4 + (8 + 32 * 2 + 32) / 192)


def test_bad_arguments():
    x = kv((2, 4, 8))
    with pytest.raises(ValueError, match="bits"):
        bl.per_token_head(x, 0)
    with pytest.raises(ValueError, match="shaped"):
        bl.per_token_head(x[0], 4)
    with pytest.raises(ValueError):
        bl.kvquant_calibrate_keys(x, 1.5)


def test_bits_accumulator():
    acc = bl.Bits()
    assert math.isnan(acc.per_element)
    acc += bl.Bits(10, 4)
    acc.add(6, 4)
    assert acc.per_element == 2.0
