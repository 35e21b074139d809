"""KV-cache tensors through the golden model: vector layout, round trip and statistics."""

from __future__ import annotations

import numpy as np

from .memory_format import effective_bits, pack, unpack
from .numerics import fp16_to_units, sanitize
from .quantizer import INNER, MIDDLE, OUTER, dequantize, element_steps, quantize

__all__ = ["to_vectors", "from_vectors", "layer_thresholds", "roundtrip_kv", "sqnr_db"]


def _check_tensor(tensor, cfg):
    t = np.asarray(tensor)
    g = cfg.model
    if t.ndim != 4 or t.shape[1] != g.kv_heads or t.shape[3] != g.head_dim:
        raise ValueError(f"KV tensor must be shaped (layers, {g.kv_heads}, tokens, {g.head_dim}) "
                         f"for this configuration, not {t.shape}")
    return t.astype(np.float16)


def to_vectors(tensor, cfg):
    """Quantization vectors of a ``(layers, heads, tokens, head_dim)`` tensor.

    Returns ``(N, vector_len)`` and the layer of every vector. Scope "layer": one vector per
    (layer, token), heads concatenated in order; scope "head": one per (layer, head, token).
    """
    t = _check_tensor(tensor, cfg)
    nl, nh, nt, hd = t.shape
    if cfg.quant.scope == "layer":
        vec = t.transpose(0, 2, 1, 3).reshape(nl * nt, nh * hd)
        layer = np.repeat(np.arange(nl), nt)
    else:
        vec = t.reshape(nl * nh * nt, hd)
        layer = np.repeat(np.arange(nl), nh * nt)
    return vec, layer


def from_vectors(vec, shape, cfg):
    """Inverse of :func:`to_vectors`."""
    nl, nh, nt, hd = shape
    if cfg.quant.scope == "layer":
        return vec.reshape(nl, nt, nh, hd).transpose(0, 2, 1, 3)
    return vec.reshape(shape)


def layer_thresholds(thresholds, layers):
    """Check per-layer thresholds ``(layers, 4)`` against the tensor's layer count."""
    th = np.asarray(thresholds)
    if th.ndim != 2 or th.shape[1] != 4:
        raise ValueError(f"thresholds must be shaped (layers, 4), not {th.shape}")
    if th.shape[0] != layers:
        raise ValueError(f"thresholds are for {th.shape[0]} layers, the tensor has {layers}")
    return th.astype(np.float16)


def sqnr_db(x, xhat):
    """Signal-to-quantization-noise ratio in dB over all elements."""
    x = np.asarray(x, np.float64)
    err = np.sum((x - np.asarray(xhat, np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(x ** 2) / err))


def roundtrip_kv(tensor, thresholds, cfg):
    """Quantize, pack, unpack and dequantize a KV tensor with the golden model.

    Parameters
    ----------
    tensor : array_like, (layers, kv_heads, tokens, head_dim)
    thresholds : array_like, (layers, 4)
    cfg : OakenConfig

    Returns
    -------
    xhat : ndarray of float16, the tensor's shape
    stats : dict
        ``fractions`` (outer, middle, inner), ``effective_bits`` (from the bytes of the
        memory image), ``sqnr_db``, ``max_error_steps`` (largest ``|xhat - x| / step`` of the
        element's group, against the sanitized input), ``bad_inputs`` and ``vectors``.
    """
    t = _check_tensor(tensor, cfg)
    th = layer_thresholds(thresholds, t.shape[0])
    vec, layer = to_vectors(t, cfg)
    vth = th[layer]
    enc = quantize(vec, vth, cfg)
    image = pack(enc, cfg)
    dec, malformed = unpack(image, cfg)
    assert not malformed.any(), "the golden encoder wrote a malformed image"
    out = dequantize(dec, vth, cfg)

    clean, _ = sanitize(vec)
    err = np.abs(fp16_to_units(out) - fp16_to_units(clean)).astype(np.float64)
    steps = element_steps(enc).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(steps > 0, err / steps, np.where(err > 0, np.inf, 0.0))
    n = enc.group.size
    stats = {
        "vectors": int(vec.shape[0]),
        "fractions": {"outer": float(np.sum(enc.group == OUTER) / n),
                      "middle": float(np.sum(enc.group == MIDDLE) / n),
                      "inner": float(np.sum(enc.group == INNER) / n)},
        "effective_bits": image.total_bits / n,
        "sqnr_db": sqnr_db(clean, out),
        "max_error_steps": float(ratio.max()),
        "bad_inputs": int(enc.bad_inputs.sum()),
    }
    assert abs(stats["effective_bits"]
               - effective_bits(1 - stats["fractions"]["middle"], cfg)) < 1e-9
    return from_vectors(out, t.shape, cfg), stats
