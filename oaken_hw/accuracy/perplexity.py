"""Teacher-forced perplexity with the KV cache fake-quantized as it is written.

Every attention layer of the model is hooked (:func:`.capture.kv_hook`): the new keys (after
RoPE, as the cache stores them, or before RoPE for a method that quantizes those) and values
go through the method's quantizer and attention reads the dequantized FP16 cache back,
including for the current token, exactly as a decoder that writes a token's K/V and then
attends over the cache. Quantizers that treat each token on its own (Oaken, INT-b, KVQuant)
are therefore applied to the whole window at once; KIVI, whose newest tokens stay in an FP16
residual, is evaluated with a per-query choice between the quantized and the FP16 copy of
every token (:class:`.capture.KVRead`).

The evaluation text's first ``tokens`` tokens are cut into consecutive windows of
``window`` tokens; each window starts with an empty cache and every token but its first is
predicted. Perplexity is ``exp`` of the mean negative log-likelihood over all predictions.
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import baselines as bl
from .capture import KVRead, capture_windows, kv_hook, require_eval, rope

__all__ = ["METHODS", "DEFAULT_METHODS", "make_method", "window_spans", "evaluate",
           "perplexity", "run_accuracy"]

#: method name -> (label, description)
METHODS = {
    "fp16": ("FP16", "the FP16 cache (reference)"),
    "oaken": ("Oaken", "Oaken through the bit-exact golden model, thresholds calibrated on "
                       "the calibration text"),
    "oaken_ideal": ("Oaken (float)", "Oaken's groups and bits with float min/max grids and "
                                     "exact sides (oaken_hw.model.reference.ideal_oaken): the "
                                     "yardstick of the golden model's numerics, not a format"),
    "int8": ("INT8 per-token", "per-token per-head asymmetric 8-bit, FP16 scale + zero"),
    "int4": ("INT4 per-token", "per-token per-head asymmetric 4-bit, FP16 scale + zero "
                               "(QServe KV4 / Atom)"),
    "kivi4": ("KIVI-4", "KIVI 4-bit: per-channel keys / per-token values, groups of 32, "
                        "FP16 residual of 128 tokens"),
    "kivi2": ("KIVI-2", "KIVI 2-bit: per-channel keys / per-token values, groups of 32, "
                        "FP16 residual of 128 tokens"),
    "kvquant4": ("KVQuant-4 1%", "KVQuant-style 4-bit: pre-RoPE per-channel keys with "
                                 "calibrated ranges, per-token values, 1 % FP16 outliers"),
}
DEFAULT_METHODS = tuple(m for m in METHODS if m != "oaken_ideal")

KIVI_GROUP = 32
KIVI_RESIDUAL = 128
KVQUANT_FRAC = 0.01


def _np16(x):
    """(1, heads, tokens, dim) torch tensor -> (heads, tokens, dim) float16 NumPy."""
    import torch
    return x[0].detach().to(torch.float16).numpy()


def _t16(a):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float16))[None]


class Method:
    """A KV-cache quantizer in the harness. ``kv(layer, k_pre, k, v, cos, sin)`` returns the
    :class:`KVRead` attention uses and charges the storage to ``self.kbits``/``self.vbits``."""

    name = "?"
    needs_calibration = False

    def __init__(self, name):
        self.name = name
        self.label, self.description = METHODS[name]
        self.reset_bits()

    def reset_bits(self):
        self.kbits, self.vbits = bl.Bits(), bl.Bits()

    def calibrate(self, kv, info):
        pass

    @property
    def effective_bits(self):
        return (self.kbits.bits + self.vbits.bits) / (self.kbits.elems + self.vbits.elems)

    def kv(self, layer, k_pre, k, v, cos, sin):
        raise NotImplementedError


class FP16(Method):
    def kv(self, layer, k_pre, k, v, cos, sin):
        import torch
        n = k.numel()
        self.kbits.add(16 * n, n)
        self.vbits.add(16 * n, n)
        return KVRead(k.to(torch.float16), v.to(torch.float16))


class PerTokenHead(Method):
    def __init__(self, name, bits):
        super().__init__(name)
        self.bits = bits

    def kv(self, layer, k_pre, k, v, cos, sin):
        _, h, t, d = k.shape
        self.kbits += bl.per_token_head_bits(h, t, d, self.bits)
        self.vbits += bl.per_token_head_bits(h, t, d, self.bits)
        return KVRead(_t16(bl.per_token_head(_np16(k), self.bits)),
                      _t16(bl.per_token_head(_np16(v), self.bits)))


class Kivi(Method):
    def __init__(self, name, bits, group=None, residual=None):
        super().__init__(name)
        self.bits = bits
        self.group = KIVI_GROUP if group is None else group
        self.residual = KIVI_RESIDUAL if residual is None else residual

    def kv(self, layer, k_pre, k, v, cos, sin):
        _, h, t, d = k.shape
        kb, vb = bl.kivi_bits(h, t, d, self.bits, self.group, self.residual)
        self.kbits += kb
        self.vbits += vb
        k16, v16 = _np16(k), _np16(v)
        ku, vu = bl.kivi_visible(t, self.residual)
        return KVRead(_t16(bl.kivi_keys(k16, self.bits, self.group)),
                      _t16(bl.kivi_values(v16, self.bits, self.group)),
                      _t16(k16), _t16(v16), ku, vu)


class KVQuant(Method):
    needs_calibration = True

    def __init__(self, name, bits=4, frac=KVQUANT_FRAC):
        super().__init__(name)
        self.bits, self.frac, self.ranges = bits, frac, None

    def calibrate(self, kv, info):
        self.ranges = [bl.kvquant_calibrate_keys(kv["k_pre"][i], self.frac)
                       for i in range(kv["k_pre"].shape[0])]

    def kv(self, layer, k_pre, k, v, cos, sin):
        import torch
        _, h, t, d = k.shape
        lo, hi = self.ranges[layer]
        kq, kout = bl.kvquant_keys(_np16(k_pre), lo, hi, self.bits)
        vq, vout = bl.kvquant_values(_np16(v), self.bits, self.frac)
        self.kbits += bl.kvquant_bits(h, d, kout, self.bits, per_channel_scale=True)
        self.vbits += bl.kvquant_bits(h, d, vout, self.bits, per_token_scale=True)
        # RoPE is applied to the dequantized pre-RoPE keys, as KVQuant does
        k_read = rope(_t16(kq).to(k.dtype), cos, sin).to(torch.float16)
        return KVRead(k_read, _t16(vq))


class Oaken(Method):
    needs_calibration = True

    def __init__(self, name, chunk_tokens=64, ideal=False):
        super().__init__(name)
        self.chunk_tokens, self.ideal = chunk_tokens, ideal
        self.cfg = self.th_k = self.th_v = None
        self.fractions = {"k": [], "v": []}

    def calibrate(self, kv, info):
        from ..calibrate import calibrate_kv
        from ..config import load_config
        self.cfg = load_config().with_geometry(kv["k"].shape)
        self.th_k, self.th_v, _, _ = calibrate_kv(kv["k"], kv["v"], self.cfg.quant,
                                                  chunk_tokens=self.chunk_tokens)

    def _rt(self, x, th, layer, acc, which):
        from ..model import roundtrip_kv
        x16 = _np16(x)
        out, stats = roundtrip_kv(x16[None], th[layer:layer + 1], self.cfg)
        if self.ideal:      # same groups and bits, float grids: replace the output only
            from ..model.kv import from_vectors, to_vectors
            from ..model.reference import ideal_oaken
            vec, _ = to_vectors(x16[None], self.cfg)
            out = from_vectors(ideal_oaken(vec, th[layer], self.cfg), out.shape,
                               self.cfg).astype(np.float16)
        acc.add(stats["effective_bits"] * x16.size, x16.size)
        f = stats["fractions"]
        self.fractions[which].append((x16.size, f["outer"], f["inner"]))
        return _t16(out[0])

    def kv(self, layer, k_pre, k, v, cos, sin):
        return KVRead(self._rt(k, self.th_k, layer, self.kbits, "k"),
                      self._rt(v, self.th_v, layer, self.vbits, "v"))

    def outlier_shares(self):
        """Measured (outer, inner) shares on the evaluation text, K and V together."""
        rows = np.array(self.fractions["k"] + self.fractions["v"], dtype=np.float64)
        if not len(rows):
            return None
        w = rows[:, 0] / rows[:, 0].sum()
        return float((w * rows[:, 1]).sum()), float((w * rows[:, 2]).sum())


def make_method(name):
    """The :class:`Method` called ``name`` (one of :data:`METHODS`)."""
    if name == "fp16":
        return FP16(name)
    if name in ("oaken", "oaken_ideal"):
        return Oaken(name, ideal=name == "oaken_ideal")
    if name in ("int8", "int4"):
        return PerTokenHead(name, int(name[3:]))
    if name in ("kivi4", "kivi2"):
        return Kivi(name, int(name[4:]))
    if name == "kvquant4":
        return KVQuant(name, 4)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def window_spans(tokens, window):
    """``[(start, stop), ...]`` of consecutive windows over ``tokens`` tokens; a final window
    shorter than 2 tokens (nothing to predict) is dropped."""
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, not {window}")
    if tokens < 2:
        raise ValueError(f"need at least 2 tokens, not {tokens}")
    return [(s, min(s + window, tokens)) for s in range(0, tokens, window)
            if min(s + window, tokens) - s >= 2]


def perplexity(nll_sum, count):
    """``exp(nll_sum / count)``."""
    return math.exp(nll_sum / count)


def evaluate(model, ids, method, window, progress=None):
    """Sum of negative log-likelihoods and number of predictions of ``ids`` (1-D) with the
    cache quantized by ``method``, over consecutive windows."""
    torch, _ = require_eval()
    nll, count = 0.0, 0
    method.reset_bits()
    spans = window_spans(len(ids), window)
    with torch.no_grad(), kv_hook(model, method.kv):
        for i, (a, b) in enumerate(spans):
            x = torch.as_tensor(ids[a:b], dtype=torch.long)[None]
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            count += b - a - 1
            if progress:
                progress(f"{method.name}: window {i + 1}/{len(spans)}")
    return nll, count


def _golden_digest():
    """First 12 hex digits of the SHA-256 of the golden model's sources (provenance)."""
    import hashlib
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "model").glob("*.py")) + [root / "calibrate.py"]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def run_accuracy(model, info, eval_ids, calib_ids, methods=DEFAULT_METHODS, window=1024,
                 progress=None, partial=None):
    """Perplexity and effective bits of every method, in the order given (FP16 first).
    Returns a JSON-ready dict ``{"meta": {...}, "methods": {name: {"ppl",
    "effective_bits", "delta_pct", ...}}}``; ``partial``, if given, is called with that dict
    after every method (for long runs)."""
    methods = [make_method(m) for m in methods]
    methods.sort(key=lambda m: m.name != "fp16")
    if methods[0].name != "fp16":
        methods.insert(0, make_method("fp16"))
    t0 = time.time()
    spans = window_spans(len(eval_ids), window)
    meta = {**info, "tokens": int(len(eval_ids)), "window": int(window), "windows": len(spans),
            "predictions": int(sum(b - a - 1 for a, b in spans)), "calib_tokens": 0,
            "seconds": None, "bits_rule": bl.describe_bits(),
            "golden_model_sha256": _golden_digest()}
    if any(m.needs_calibration for m in methods):
        calib = capture_windows(model, calib_ids, window)
        meta["calib_tokens"] = int(len(calib_ids))
        for m in methods:
            if m.needs_calibration:
                m.calibrate(calib, info)
    out = {"meta": meta, "methods": {}}
    results = out["methods"]
    for m in methods:
        t1 = time.time()
        nll, count = evaluate(model, eval_ids, m, window, progress)
        r = {"label": m.label, "ppl": perplexity(nll, count),
             "effective_bits": m.effective_bits,
             "k_bits": m.kbits.per_element, "v_bits": m.vbits.per_element,
             "seconds": round(time.time() - t1, 1)}
        if isinstance(m, Oaken):
            r["outer_share"], r["inner_share"] = m.outlier_shares()
            r["calib_ratios"] = {kind: list(m.cfg.quant.ratios_for(kind)) for kind in "kv"}
        ref = results["fp16"]["ppl"] if results else r["ppl"]
        r["delta_pct"] = 100.0 * (r["ppl"] / ref - 1.0)
        results[m.name] = r
        meta["seconds"] = round(time.time() - t0, 1)
        if progress:
            progress(f"{m.name}: ppl {r['ppl']:.4f} at {r['effective_bits']:.3f} bits "
                     f"({r['delta_pct']:+.2f} %)")
        if partial:
            partial(out)
    return out
