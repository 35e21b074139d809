"""The attention hook, capture and perplexity loop on a tiny random Llama (needs the eval
extra; skipped without torch/transformers). No model file is read."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from oaken_hw.accuracy import capture, perplexity  # noqa: E402
from oaken_hw.accuracy.capture import KVRead, kv_hook  # noqa: E402

INFO = {"model": "tiny random llama", "architecture": "llama", "layers": 2, "kv_heads": 1,
        "head_dim": 64, "query_heads": 2}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=192,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, head_dim=64,
                                   max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():       # larger weights: peaky attention, so quantization matters
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight.mul_(8)
            layer.self_attn.q_proj.weight.mul_(8)
    return model


def ids(n, seed=1):
    return np.random.default_rng(seed).integers(0, 96, size=n)


def logits(model, x, hook=None):
    t = torch.as_tensor(x)[None]
    with torch.no_grad():
        if hook is None:
            return model(input_ids=t, use_cache=False).logits
        with kv_hook(model, hook):
            return model(input_ids=t, use_cache=False).logits


def test_identity_hook_reproduces_the_model(tiny):
    x = ids(50)
    ref = logits(tiny, x)
    got = logits(tiny, x, lambda l, kp, k, v, c, s: KVRead(k, v))
    assert torch.allclose(ref, got, atol=1e-5)
    # the hook is removed afterwards
    assert torch.equal(logits(tiny, x), ref)


def test_mixed_read_path(tiny):
    x = ids(40)
    ref = logits(tiny, x)
    n = len(x)
    none, every = np.zeros(n, int), np.arange(1, n + 1)
    fresh_only = logits(tiny, x, lambda l, kp, k, v, c, s: KVRead(k * 0, v * 0, k, v, none, none))
    quant_only = logits(tiny, x, lambda l, kp, k, v, c, s: KVRead(k, v, k * 0, v * 0, every, every))
    assert torch.allclose(ref, fresh_only, atol=1e-4)
    assert torch.allclose(ref, quant_only, atol=1e-4)
    # reading the zeroed copy for old tokens only changes the result
    half = np.maximum(0, np.arange(1, n + 1) - 8)
    mixed = logits(tiny, x, lambda l, kp, k, v, c, s: KVRead(k * 0, v * 0, k, v, half, half))
    assert torch.allclose(ref[0, :8], mixed[0, :8], atol=1e-4)
    assert not torch.allclose(ref[0, 9:], mixed[0, 9:], atol=1e-3)


def test_capture(tiny, tmp_path):
    kv = capture.capture_kv(tiny, ids(30))
    assert set(kv) == {"k", "k_pre", "v"}
    for a in kv.values():
        assert a.shape == (2, 1, 30, 64) and a.dtype == np.float16
    assert not np.array_equal(kv["k"], kv["k_pre"])
    assert np.array_equal(kv["k"][:, :, 0], kv["k_pre"][:, :, 0])   # position 0: no rotation
    both = capture.capture_windows(tiny, ids(30), 16)
    assert both["k"].shape == (2, 1, 30, 64)
    assert np.array_equal(both["k"][:, :, :16], capture.capture_kv(tiny, ids(30)[:16])["k"])
    capture.save_capture(tmp_path / "kv.npz", kv, {"tokens": 30})
    z = np.load(tmp_path / "kv.npz")
    assert z["v"].shape == (2, 1, 30, 64) and '"tokens": 30' in str(z["meta"])


def test_run_accuracy_all_methods(tiny):
    methods = list(perplexity.METHODS)
    if any(m.startswith("oaken") for m in methods):
        pytest.importorskip("oaken_hw.model")
    res = perplexity.run_accuracy(tiny, INFO, ids(64), ids(64, seed=2), methods, window=32)
    r = res["methods"]
    assert list(r)[0] == "fp16" and set(r) == set(methods)
    assert r["fp16"]["delta_pct"] == 0 and r["fp16"]["effective_bits"] == 16
    assert r["int4"]["effective_bits"] == 4.5 and r["int8"]["effective_bits"] == 8.5
    # windows of 32 tokens are shorter than KIVI's 128-token residual: nothing quantized
    assert r["kivi2"]["effective_bits"] == 16
    assert math.isclose(r["kivi2"]["ppl"], r["fp16"]["ppl"], rel_tol=1e-4)
    for name, v in r.items():
        assert math.isfinite(v["ppl"]) and v["ppl"] > 1
        assert math.isclose(v["delta_pct"], 100 * (v["ppl"] / r["fp16"]["ppl"] - 1))
    assert r["int8"]["ppl"] == pytest.approx(r["fp16"]["ppl"], rel=2e-3)
    assert abs(r["int4"]["delta_pct"]) > abs(r["int8"]["delta_pct"])
    assert 4.5 < r["oaken"]["effective_bits"] < 6.5
    assert res["meta"]["tokens"] == 64 and res["meta"]["windows"] == 2
    assert res["meta"]["predictions"] == 62


def test_kivi_quantizes_past_the_residual(tiny, monkeypatch):
    monkeypatch.setattr(perplexity, "KIVI_RESIDUAL", 8)
    monkeypatch.setattr(perplexity, "KIVI_GROUP", 8)
    x = ids(48)
    res = perplexity.run_accuracy(tiny, INFO, x, x[:2], ["kivi2"], window=48)
    r = res["methods"]["kivi2"]
    assert r["effective_bits"] < 16 and r["ppl"] != res["methods"]["fp16"]["ppl"]


def dense_mixed_attention(q, r, groups, scale):
    """Reference: full score matrices, per-(query, token) choice of the K and V versions."""
    kq, vq, kf, vf = (x.float().repeat_interleave(groups, dim=1)
                      for x in (r.k, r.v, r.k_fresh, r.v_fresh))
    t = q.shape[2]
    s = torch.arange(t)
    causal = s[None, :] <= s[:, None]
    km = s[None, :] < torch.as_tensor(r.k_upto)[:, None]
    vm = (s[None, :] < torch.as_tensor(r.v_upto)[:, None]).float()
    sc = torch.where(km, q @ kq.transpose(2, 3), q @ kf.transpose(2, 3)) * scale
    p = torch.softmax(sc.masked_fill(~causal, float("-inf")), -1)
    return (p * vm) @ vq + (p * (1 - vm)) @ vf


@pytest.mark.parametrize("t,residual", [(200, 32), (70, 16), (9, 4), (50, 64)])
def test_blocked_mixed_attention_is_exact(t, residual):
    from oaken_hw.accuracy.baselines import kivi_visible
    from oaken_hw.accuracy.capture import _attend
    g = torch.Generator().manual_seed(t)
    q = torch.randn(1, 6, t, 16, generator=g)
    k, v = torch.randn(1, 2, t, 16, generator=g), torch.randn(1, 2, t, 16, generator=g)
    kq, vq = k + 0.3 * torch.randn_like(k), v + 0.3 * torch.randn_like(v)
    ku, vu = kivi_visible(t, residual)
    r = KVRead(kq.half(), vq.half(), k.half(), v.half(), ku, vu)

    class Attn:
        scaling = 0.25
    got = _attend(Attn, q, r, block=16)
    ref = dense_mixed_attention(q, r, 3, 0.25)
    assert torch.allclose(got, ref, atol=1e-5)
