"""calibrate()'s argument checks, and its answer on NaN/Inf calibration data."""

import numpy as np
import pytest

from oaken_hw.calibrate import calibrate
from oaken_hw.model.numerics import sanitize


def _tensor(shape=(2, 2, 8, 16), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float16)


@pytest.mark.parametrize("ratios", [
    (0.5, 0.6, 0.1),            # sums to 1.2
    (0.1, 0.8, 0.05),           # sums to 0.95
    (0.5, 0.0, 0.5),            # no middle share
    (-0.1, 1.0, 0.1),           # a negative share
    (1.5, -1.0, 0.5),           # a share above 1
    (0.04, 0.9),                # two shares
    (0.04, 0.9, 0.06, 0.0),     # four shares
    (0.04, float("nan"), 0.06),
    ("0.04", 0.9, 0.06),
    (True, 0.0, 0.0),
    0.5,
    None,
])
def test_bad_ratios_raise_naming_ratios(ratios):
    with pytest.raises(ValueError, match=r"^ratios must be"):
        calibrate(_tensor(), ratios)


def test_good_ratios_as_a_list_are_taken():
    t = _tensor()
    assert np.array_equal(calibrate(t, [0.2, 0.6, 0.2], 4), calibrate(t, (0.2, 0.6, 0.2), 4))


@pytest.mark.parametrize("chunk_tokens", [0, -1, 2.0, "4", None])
def test_bad_chunk_tokens_raise(chunk_tokens):
    with pytest.raises(ValueError, match="chunk_tokens must be a positive integer"):
        calibrate(_tensor(), chunk_tokens=chunk_tokens)


@pytest.mark.parametrize("shape", [(8, 16), (2, 8, 16), (1, 2, 2, 8, 16), ()])
def test_a_tensor_not_4d_raises(shape):
    t = np.zeros(shape, np.float16)
    with pytest.raises(ValueError, match=r"must be shaped \(layers, heads, tokens, head_dim\)"):
        calibrate(t)


def test_no_tokens_raises():
    with pytest.raises(ValueError, match="no tokens"):
        calibrate(np.zeros((2, 2, 0, 16), np.float16))


def test_nan_and_inf_are_calibrated_as_the_quantizer_sees_them():
    # the defined answer: calibrate() profiles sanitize()'d data (NaN -> +0,
    # +-Inf -> +-65504), the values the quantizer works on
    t = _tensor((2, 3, 20, 16), seed=3)
    rng = np.random.default_rng(4)
    flat = t.reshape(-1)
    idx = rng.choice(flat.size, 60, replace=False)
    flat[idx[:20]] = np.nan
    flat[idx[20:40]] = np.inf
    flat[idx[40:]] = -np.inf
    th = calibrate(t, (0.2, 0.6, 0.2), chunk_tokens=8)
    assert np.all(np.isfinite(th))
    assert np.array_equal(th, calibrate(sanitize(t)[0], (0.2, 0.6, 0.2), chunk_tokens=8))


def test_inf_dominated_outer_quantiles_saturate_at_fp16_max():
    # one layer, one chunk of 10 values: 3 x -Inf, 3 x NaN (-> 0), 1, 2, 3 x +Inf
    t = np.array([-np.inf] * 3 + [np.nan] * 3 + [1, 2] + [np.inf] * 2,
                 np.float16).reshape(1, 1, 1, 10)
    th = calibrate(t, (0.2, 0.6, 0.2), chunk_tokens=1)
    # levels 0.1, 0.4, 0.6, 0.9 of [-M, -M, -M, 0, 0, 0, 1, 2, M, M] (M = 65504),
    # positions 0.9, 3.6, 5.4, 8.1: lower, lower, higher, higher
    assert th.astype(np.float64).tolist() == [[-65504.0, 0.0, 1.0, 65504.0]]
