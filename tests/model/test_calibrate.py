"""Offline calibration: quantiles, chunk averaging, ordering, the thresholds file."""

import json

import numpy as np
import pytest

from oaken_hw.calibrate import (calibrate, calibrate_kv, load_thresholds, quantile_levels,
                                save_thresholds)
from oaken_hw.config import default_config
from oaken_hw.model import roundtrip_kv


def test_quantiles_split_gaussian_data_by_the_ratios():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((2, 3, 256, 64)).astype(np.float16)
    th = calibrate(t, (0.04, 0.90, 0.06), chunk_tokens=64).astype(np.float64)
    x = t.astype(np.float64).reshape(2, -1)
    outer = ((x <= th[:, :1]) | (x >= th[:, 3:])).mean(axis=1)
    inner = ((x > th[:, 1:2]) & (x < th[:, 2:3])).mean(axis=1)
    assert np.allclose(outer, 0.04, atol=0.004) and np.allclose(inner, 0.06, atol=0.004)


def test_calibrate_kv_profiles_k_and_v_for_their_own_shares():
    rng = np.random.default_rng(2)
    k, v = rng.standard_normal((2, 2, 1, 64, 32)).astype(np.float16)
    quant = default_config().quant
    assert quant.ratios_for("k") != quant.ratios_for("v")          # the default differs
    th_k, th_v, rk, rv = calibrate_kv(k, v, quant, chunk_tokens=16)
    assert (rk, rv) == (quant.ratios_for("k"), quant.ratios_for("v"))
    assert np.array_equal(th_k, calibrate(k, rk, 16)) and np.array_equal(th_v, calibrate(v, rv, 16))
    th_k, th_v, rk, rv = calibrate_kv(k, v, quant, k_ratios=(0.2, 0.6, 0.2), chunk_tokens=16)
    assert rk == (0.2, 0.6, 0.2) and rv == quant.ratios_for("v")
    assert np.array_equal(th_k, calibrate(k, rk, 16))


def test_chunks_are_averaged_with_lower_and_higher_quantiles():
    rng = np.random.default_rng(1)
    t = rng.standard_normal((1, 1, 10, 8)).astype(np.float16)
    got = calibrate(t, (0.2, 0.6, 0.2), chunk_tokens=4)
    levels = quantile_levels((0.2, 0.6, 0.2))
    per = []
    for s in (0, 4, 8):
        c = np.sort(t[0, 0, s:s + 4].astype(np.float64).reshape(-1))
        # "lower" / "higher" quantile: the order statistic below / above the exact position
        pos = levels * (c.size - 1)
        per.append([c[int(np.floor(pos[0]))], c[int(np.floor(pos[1]))],
                    c[int(np.ceil(pos[2]))], c[int(np.ceil(pos[3]))]])
    assert np.array_equal(got[0], np.mean(per, axis=0).astype(np.float16))


def test_thresholds_from_one_text_hold_on_the_other(cfg, kv_topics, kv_tutorial):
    for key in ("k", "v"):
        th = calibrate(kv_topics[key])
        assert np.all(np.diff(th.astype(np.float64), axis=1) >= 0)
        _, stats = roundtrip_kv(kv_tutorial[key], th, cfg)
        assert abs(stats["fractions"]["outer"] - 0.04) <= 0.01, stats
        assert abs(stats["fractions"]["inner"] - 0.06) <= 0.01, stats


def test_file_round_trip_and_errors(tmp_path):
    k = np.array([[-2, -0.1, 0.1, 2], [-3, 0, 0.5, 4]], np.float16)
    v = k / 2
    p = tmp_path / "th.json"
    save_thresholds(p, k, v, k_ratios=(0.04, 0.9, 0.06), v_ratios=(0.04, 0.9, 0.06), source="x.npz", chunk_tokens=64)
    k2, v2, meta = load_thresholds(p)
    assert np.array_equal(k2, k) and np.array_equal(v2, v) and meta["layers"] == 2

    data = json.loads(p.read_text())
    data["k"][1] = [1, 0, 2, 3]
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="layer 1.*ordered"):
        load_thresholds(p)
    data["k"] = [[1, 2, 3]]
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"\(layers, 4\)"):
        load_thresholds(p)
    p.write_text("{}")
    with pytest.raises(ValueError, match="not an oaken-thresholds"):
        load_thresholds(p)
