"""Offline threshold calibration (profiling), and the thresholds file.

For every layer, separately for K and V, the four thresholds are quantiles of the whole
layer's tensor (all heads, tokens and channels), taken per chunk of tokens and averaged
over the chunks, as Oaken's released code does: the two low quantiles with the "lower"
method, the two high ones with the "higher" method.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import check_ratios
from .model.quantizer import check_thresholds
from .model.numerics import sanitize

__all__ = ["quantile_levels", "calibrate", "calibrate_kv", "save_thresholds", "load_thresholds",
           "THRESHOLDS_FORMAT"]

THRESHOLDS_FORMAT = "oaken-thresholds/1"


def quantile_levels(ratios):
    """Quantile levels of ``T_o_lo, T_i_lo, T_i_hi, T_o_hi`` for (outer, middle, inner) shares."""
    outer, _, inner = ratios
    return np.array([outer / 2, 0.5 - inner / 2, 0.5 + inner / 2, 1 - outer / 2])


def calibrate(tensor, ratios=(0.04, 0.90, 0.06), chunk_tokens=64):
    """Per-layer thresholds of a ``(layers, heads, tokens, head_dim)`` tensor.

    Parameters
    ----------
    tensor : array_like of float16
        Sanitized first, as the quantizer sanitizes its input: NaN counts as 0 and +-Inf as
        +-65504 (so enough infinities pull the outer thresholds to +-65504).
    ratios : (outer, middle, inner) shares
        Three numbers in [0, 1] summing to 1, the middle one positive
        (:func:`~oaken_hw.config.check_ratios`; ``ValueError`` naming ``ratios`` otherwise).
    chunk_tokens : int
        Tokens per calibration chunk; the quantiles of every chunk are averaged (a final
        shorter chunk counts too).

    Returns
    -------
    ndarray of float16, shape (layers, 4)
        Rounded to FP16 (nearest), ordered ``T_o_lo <= T_i_lo <= T_i_hi <= T_o_hi``.
    """
    ratios = check_ratios("ratios", ratios)
    t = np.asarray(tensor)
    if t.ndim != 4:
        raise ValueError(f"KV tensor must be shaped (layers, heads, tokens, head_dim), "
                         f"not {t.shape}")
    if not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be a positive integer, not {chunk_tokens!r}")
    if t.shape[2] == 0:
        raise ValueError("the KV tensor has no tokens")
    x, _ = sanitize(t)
    x = x.astype(np.float64)
    levels = quantile_levels(ratios)
    per_chunk = []
    for start in range(0, x.shape[2], chunk_tokens):   # a loop over chunks, vectorized inside
        c = x[:, :, start:start + chunk_tokens].reshape(x.shape[0], -1)
        lo = np.quantile(c, levels[:2], axis=1, method="lower")
        hi = np.quantile(c, levels[2:], axis=1, method="higher")
        per_chunk.append(np.concatenate([lo, hi]).T)
    th = np.mean(per_chunk, axis=0).astype(np.float16)
    check_thresholds(th)
    return th


def calibrate_kv(k, v, quant, *, k_ratios=None, v_ratios=None, chunk_tokens=64):
    """K and V thresholds, each profiled for its own shares.

    Parameters
    ----------
    k, v : array_like of float16, shape (layers, heads, tokens, head_dim)
    quant : QuantConfig
        Gives the shares not overridden (:meth:`~oaken_hw.config.QuantConfig.ratios_for`).
    k_ratios, v_ratios : (outer, middle, inner) shares or None

    Returns
    -------
    th_k, th_v, k_ratios, v_ratios
        The thresholds ``(layers, 4)`` and the shares they were profiled for.
    """
    k_ratios = quant.ratios_for("k") if k_ratios is None else tuple(k_ratios)
    v_ratios = quant.ratios_for("v") if v_ratios is None else tuple(v_ratios)
    return (calibrate(k, k_ratios, chunk_tokens), calibrate(v, v_ratios, chunk_tokens),
            k_ratios, v_ratios)


def save_thresholds(path, k, v, *, k_ratios, v_ratios, key="k", source=None, chunk_tokens=None):
    """Write K and V thresholds ``(layers, 4)`` as JSON, with the shares they were profiled for."""
    data = {"format": THRESHOLDS_FORMAT,
            "ratios": {"k": list(k_ratios), "v": list(v_ratios)}, "key": key,
            "source": source, "chunk_tokens": chunk_tokens, "layers": int(len(k)),
            "order": ["T_o_lo", "T_i_lo", "T_i_hi", "T_o_hi"],
            "k": np.asarray(k, np.float16).astype(float).tolist(),
            "v": np.asarray(v, np.float16).astype(float).tolist()}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_thresholds(path):
    """Read a thresholds JSON file; returns ``(k, v, data)`` with ``(layers, 4)`` FP16 arrays.

    Values are rounded to the nearest FP16; ``ValueError`` if the file is not a thresholds
    file, the arrays are not ``(layers, 4)``, or any layer's thresholds are unordered.
    """
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != THRESHOLDS_FORMAT:
        raise ValueError(f"{path}: not an {THRESHOLDS_FORMAT} thresholds file")
    out = []
    for name in ("k", "v"):
        try:
            a = np.array(data[name], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: '{name}' must be a list of [T_o_lo, T_i_lo, T_i_hi, "
                             f"T_o_hi] per layer") from None
        if a.ndim != 2 or a.shape[1] != 4:
            raise ValueError(f"{path}: '{name}' must be shaped (layers, 4), not {a.shape}")
        with np.errstate(over="ignore"):
            a16 = a.astype(np.float16)
        try:
            check_thresholds(a16)
        except ValueError as e:
            bad = [i for i in range(len(a16)) if not (np.all(np.isfinite(a16[i]))
                                                       and np.all(np.diff(a16[i]) >= 0))]
            raise ValueError(f"{path}: '{name}' thresholds of layer {bad[0] if bad else '?'}: "
                             f"{e}") from None
        out.append(a16)
    if out[0].shape != out[1].shape:
        raise ValueError(f"{path}: 'k' and 'v' have different layer counts")
    return out[0], out[1], data
