"""Stimulus for the QuantEngine tests: corner-case vectors, random heavy-tailed vectors,
threshold sets."""

from __future__ import annotations

import numpy as np

F16MAX = 65504.0

#: named threshold sets (T_o_lo, T_i_lo, T_i_hi, T_o_hi)
THRESHOLDS = {
    "typical": [-2.0, -0.1, 0.1, 2.0],
    "zero": [0.0, 0.0, 0.0, 0.0],                 # every value is outer
    "empty_inner": [-1.0, 0.25, 0.25, 1.0],       # inner band empty
    "off_zero": [0.5, 1.0, 1.5, 3.0],             # inner band does not contain 0
    "wide_inner": [-F16MAX, -F16MAX, F16MAX, F16MAX],
    "narrow": [-6e-8, -6e-8, 6e-8, 6e-8],         # subnormal thresholds
    "neg_zero": [-0.0, 0.0, -0.0, 0.0],
    "asym": [-8.0, -3.0, 0.0, 0.5],
    "degenerate_lo": [0.0, 0.0, 0.0, 2.0],         # T_o_lo == T_i_lo == T_i_hi
    "degenerate_hi": [-2.0, 0.5, 0.5, 0.5],        # T_i_lo == T_i_hi == T_o_hi
    "all_equal": [0.5, 0.5, 0.5, 0.5],              # outer sides meet at 0.5 (upper there)
}


def corner_vectors(V, rng):
    """List of (name, threshold set name, vector) corner cases."""
    out = []
    r = lambda scale=1.0: (rng.standard_normal(V) * scale)
    out.append(("all_inner", "typical", r(0.03)))
    out.append(("all_outer", "typical", np.where(rng.random(V) < 0.5, -1, 1) * (2 + rng.random(V) * 50)))
    out.append(("all_outer_zero_thr", "zero", r(3)))
    out.append(("zeros_zero_thr", "zero", np.zeros(V)))
    out.append(("all_equal", "typical", np.full(V, 0.75)))
    out.append(("all_equal_inner", "typical", np.full(V, 0.05)))
    out.append(("all_zero", "typical", np.zeros(V)))
    alt = np.where(np.arange(V) % 2, 0.02 * rng.standard_normal(V),
                   np.sign(rng.standard_normal(V)) * (3 + rng.random(V) * 100))
    out.append(("every_outlier", "typical", alt))
    x = r(1.0)
    x[rng.integers(0, V, 6)] = np.nan
    x[rng.integers(0, V, 3)] = np.inf
    x[rng.integers(0, V, 3)] = -np.inf
    out.append(("nan_inf", "typical", x))
    out.append(("all_nan", "typical", np.full(V, np.nan)))
    out.append(("inf_only", "typical", np.where(np.arange(V) % 2, np.inf, -np.inf)))
    out.append(("empty_inner", "empty_inner", r(1.0)))
    out.append(("off_zero", "off_zero", r(2.0)))
    out.append(("lower_middle_only", "typical", -0.2 - rng.random(V)))
    out.append(("upper_middle_only", "typical", 0.2 + rng.random(V)))
    out.append(("middle_one_side_zero", "typical", np.full(V, -0.1)))
    out.append(("wide_inner", "wide_inner", r(1000.0)))
    ext = np.where(rng.random(V) < 0.5, -F16MAX, F16MAX) * (rng.random(V) < 0.5)
    out.append(("extremes_wide", "wide_inner", ext))
    out.append(("extremes_zero_thr", "zero", ext))
    out.append(("subnormals", "narrow", rng.integers(-40, 40, V) * 2.0 ** -24))
    out.append(("neg_zero", "neg_zero", np.where(np.arange(V) % 3 == 0, -0.0, r(1e-3))))
    out.append(("asym", "asym", r(4.0)))
    on_thr = lambda t: np.where(rng.random(V) < 0.3, t, r(2.0))
    out.append(("degenerate_lo", "degenerate_lo", on_thr(0.0)))
    out.append(("degenerate_hi", "degenerate_hi", on_thr(0.5)))
    out.append(("equal_thresholds", "all_equal", on_thr(0.5)))
    out.append(("on_thresholds", "typical",
                rng.choice(np.array([-2.0, -0.1, 0.1, 2.0, 0.0]), V)))
    out.append(("huge_spread", "typical", rng.standard_normal(V) * 10.0 ** rng.integers(-6, 5, V)))
    return [(name, th, np.asarray(x, np.float16)) for name, th, x in out]


def heavy_tailed(n, V, rng):
    """Student-t (3 dof) vectors with per-vector scale, as KV caches look."""
    scale = 10.0 ** rng.uniform(-2, 1, (n, 1))
    return (rng.standard_t(3, (n, V)) * scale).astype(np.float16)


def random_thresholds(rng, x):
    """Thresholds from the quantiles of ``x`` (outer 4 %, inner 6 %), FP16, ordered."""
    q = np.quantile(x.astype(np.float64), [0.02, 0.47, 0.53, 0.98])
    t = np.sort(q.astype(np.float16).astype(np.float64)).astype(np.float16)
    return t
