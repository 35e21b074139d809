"""The golden engine model against spec-level properties (``docs/engine.md``), independent of
the RTL: what is written is read back as the golden quantizer's round trip, byte enables stay
inside the written streams, every status, exhaustion and recovery, reset, bad configuration
writes and bad inputs."""

import gc
import warnings

import numpy as np
import pytest

from oaken_hw.config import config_from_dict, default_config
from oaken_hw.engine.model import STALL, EngineModel, EncodedVector
from oaken_hw.mmu import Status
from oaken_hw.model import dequantize, pack, quantize, roundtrip_kv, unpack

TH = np.array([-2.0, -0.125, 0.125, 2.0], np.float16)


def small_config(**mmu):
    """3 layers x 2 heads x head_dim 32 and 64-byte pages: the pool (32 pages) runs out after
    a few tokens, pages are crossed often; 3 layers and 3 sequences leave field values that
    are representable but out of range."""
    base = {"sequences": 3, "max_tokens": 16, "pages": 32, "page_bytes": 64, "sparse_pages": 4}
    base.update(mmu)
    return config_from_dict({"model": {"layers": 3, "kv_heads": 2, "head_dim": 32},
                             "quant": {"sparse_block": 32, "lanes": 16},
                             "mmu": base, "memory": {"data_bytes": 16}})


def vectors(cfg, n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    s = rng.choice([1e-3, 0.1, 1, 10], (n, 1)) * scale
    return (rng.standard_t(2, (n, cfg.vector_len)) * s).astype(np.float16)


def loaded_model(cfg, th=TH):
    m = EngineModel(cfg)
    for layer in range(cfg.model.layers):
        for kv in range(2):
            assert m.write_thresholds(layer, kv, np.asarray(th, np.float16).view(np.uint16))
    return m


def golden_heads(x, th, cfg):
    """Round trip of whole vectors by the golden quantizer, split per head."""
    th = np.asarray(th, np.float16)
    out = dequantize(unpack(pack(quantize(x, th, cfg), cfg), cfg)[0], th, cfg)
    return out.view(np.uint16).reshape(len(x), cfg.model.kv_heads, cfg.model.head_dim)


class Tracker:
    """Byte addresses owned by live sequences; checks every write's byte enables."""

    def __init__(self, model):
        self.m = model
        self.owner = {}

    def check(self, res, vec):
        n = self.m.beat_bytes
        addrs = [beat * n + lane for beat, data, we in res.mem_writes
                 for lane in range(n) if we >> lane & 1]
        # exactly the stream bytes of the vector, each once, none already owned
        L = self.m.layout
        assert len(addrs) == L.heads * L.dense_bytes + sum(vec.counts) + L.meta_bytes
        assert len(set(addrs)) == len(addrs)
        clash = [a for a in addrs if a in self.owner]
        assert not clash, f"write of seq {res.seq} overwrites bytes of seq {self.owner[clash[0]]}"
        for beat, data, we in res.mem_writes:
            for lane in range(n):
                if not we >> lane & 1:
                    assert data[lane] == 0
        for a in addrs:
            self.owner[a] = res.seq

    def freed(self, seq):
        self.owner = {a: s for a, s in self.owner.items() if s != seq}


@pytest.mark.parametrize("which", ["small", "default"])
def test_every_write_is_read_back_as_the_golden_round_trip(which):
    cfg = small_config(pages=1024, sparse_pages=16) if which == "small" else default_config()
    m = loaded_model(cfg)
    tr = Tracker(m)
    g = cfg.model
    tokens = 12
    rng = np.random.default_rng(3)
    written = {}                                  # (seq, layer, kv) -> list of x
    order = [(s, l, k, t) for t in range(tokens) for s in (0, 2) for l in range(g.layers)
             for k in (0, 1)]
    x = vectors(cfg, len(order), seed=1)
    x[5, :7] = [np.nan, np.inf, -np.inf, -0.0, 6e-8, 65504, -65504]
    enc = m.encode(x, [o[1] for o in order], [o[2] for o in order])
    for (s, l, k, t), xi, e in zip(order, x, enc):
        done = m.submit({"seq": s, "layer": l, "kv": k, "pos": t, "head": 1}, e)
        assert [r.status for r in done] == [Status.OK]
        tr.check(done[0], e)
        written.setdefault((s, l, k), []).append(xi)
    for (s, l, k), xs in written.items():
        want = golden_heads(np.array(xs), TH, cfg)
        for h in range(g.kv_heads):
            lo, hi = sorted(rng.integers(0, tokens + 1, 2))
            for a, b in ((0, tokens), (lo, hi)):
                r = m.read(s, l, k, h, a, b)
                assert r.status == Status.OK and list(r.pos) == list(range(a, b))
                assert not r.malformed.any()
                np.testing.assert_array_equal(r.values, want[a:b, h])
    st = m.status()
    assert st["vectors_written"] == len(order) and st["write_errors"] == 0
    assert st["bad_inputs"] == 3 and st["malformed"] == 0


def test_real_kv_matches_roundtrip_kv(kv_topics):
    cfg = default_config()
    k = kv_topics["k"][:, :, :20]
    th = np.stack([np.linspace(-3, -0.5, 30), np.linspace(-0.2, -0.01, 30),
                   np.linspace(0.01, 0.2, 30), np.linspace(0.5, 3, 30)], 1).astype(np.float16)
    m = EngineModel(cfg)
    for layer in range(30):
        assert m.write_thresholds(layer, 0, th[layer].view(np.uint16))
    want, _ = roundtrip_kv(k, th, cfg)
    for t in range(k.shape[2]):
        x = k[:, :, t].reshape(30, -1)
        for layer, e in enumerate(m.encode(x, np.arange(30), 0)):
            assert m.submit((1, layer, 0, t), e)[0].status == Status.OK
    for layer in range(30):
        for h in range(3):
            r = m.read(1, layer, 0, h, 0, k.shape[2])
            np.testing.assert_array_equal(r.values, want[layer, h].view(np.uint16))


def test_memory_write_order_and_byte_enables():
    cfg = default_config()
    m = loaded_model(cfg)
    x = vectors(cfg, 1, seed=2)
    e = m.encode(x, 0, 0)[0]
    res = m.write((0, 0, 0, 0), e)
    L = m.layout
    n = 16
    dense_beats = L.heads * L.dense_bytes // n
    # dense heads first (full beats), then sparse, then the meta record (lanes 0..11 only)
    assert all(we == 0xFFFF for _, _, we in res.mem_writes[:dense_beats])
    assert b"".join(d for _, d, _ in res.mem_writes[:dense_beats]) == b"".join(e.dense)
    beat, data, we = res.mem_writes[-1]
    assert we == (1 << L.meta_bytes) - 1 and data[:L.meta_bytes] == e.meta
    sparse = b"".join(bytes(d[i] for i in range(n) if we >> i & 1)
                      for _, d, we in res.mem_writes[dense_beats:-1])
    assert sparse == b"".join(e.sparse)


def test_statuses():
    cfg = small_config(pages=1024, max_tokens=4)
    m = loaded_model(cfg)
    x = vectors(cfg, 8, seed=4)
    w = lambda h, i=0: m.submit(h, x[i])[0].status
    assert w((3, 0, 0, 0)) == Status.UNKNOWN_SEQ            # seq >= sequences
    assert w((0, 3, 0, 0)) == Status.BAD_FIELD              # layer >= layers
    assert w((0, 0, 0, 1)) == Status.BAD_POSITION           # skips ahead
    for t in range(4):
        assert w((0, 0, 0, t), t) == Status.OK
    assert w((0, 0, 0, 3)) == Status.BAD_POSITION           # rewrites
    assert w((0, 0, 0, 4)) == Status.CAPACITY               # beyond max_tokens
    r = lambda *a: m.read(*a).status
    assert r(0, 0, 0, 0, 3, 2) == Status.BAD_RANGE
    assert r(3, 0, 0, 0, 3, 2) == Status.BAD_RANGE         # lo > hi is checked first
    assert r(0, 0, 0, 0, 0, 5) == Status.BAD_RANGE          # beyond what was written
    assert r(1, 0, 0, 0, 0, 0) == Status.UNKNOWN_SEQ        # not live
    assert r(3, 0, 0, 0, 0, 0) == Status.UNKNOWN_SEQ
    assert r(0, 3, 0, 0, 0, 1) == Status.BAD_FIELD
    assert r(0, 0, 1, 0, 0, 1) == Status.BAD_RANGE          # V of layer 0 is empty
    ok = m.read(0, 0, 0, 1, 1, 1)
    assert ok.status == Status.OK and len(ok.pos) == 0
    assert m.free(1).status == Status.UNKNOWN_SEQ
    assert m.free(0).status == Status.OK
    assert m.free(0).status == Status.UNKNOWN_SEQ           # double free
    assert r(0, 0, 0, 0, 0, 1) == Status.UNKNOWN_SEQ
    st = m.status()
    assert st["vectors_written"] == 4 and st["write_errors"] == 5
    assert st["read_errors"] == 8 and st["tokens_read"] == 0
    assert st["free_pages"] == 1024
    d = loaded_model(default_config())                      # 3 heads: head 3 is representable
    d.submit((0, 0, 0, 0), vectors(d.cfg, 1, seed=4)[0])
    assert d.read(0, 0, 0, 3, 0, 1).status == Status.BAD_FIELD


def test_sparse_capacity():
    cfg = small_config(pages=1024, sparse_pages=1)          # 64 sparse bytes per head stream
    m = loaded_model(cfg, th=[-1, -1, 1, 1])                # |x| >= 1: every element outer
    x = np.full((4, cfg.vector_len), 5.0, np.float16)
    assert m.submit((0, 0, 0, 0), x[0])[0].status == Status.OK     # 32 bytes per head
    assert m.submit((0, 0, 0, 1), x[1])[0].status == Status.OK     # 64
    assert m.submit((0, 0, 0, 2), x[2])[0].status == Status.CAPACITY
    r = m.read(0, 0, 0, 1, 0, 2)
    np.testing.assert_array_equal(r.values, golden_heads(x[:2], [-1, -1, 1, 1], cfg)[:, 1])


def test_out_of_pages_stalls_in_order_and_recovers_after_free():
    cfg = small_config()                                    # 32 pages
    m = loaded_model(cfg)
    tr = Tracker(m)
    x = vectors(cfg, 64, seed=5)

    def submit(h, xi):
        e = m.encode(xi, h[1], h[2])[0]
        out = m.submit(h, e)
        return e, out

    for t in range(4):                                      # seq 1: some pages
        e, out = submit((1, 0, 0, t), x[t])
        tr.check(out[0], e)
    t = 0
    while not m.out_of_pages:                               # seq 0 until the pool runs dry
        e, out = submit((0, t % 3, 0, t // 3), x[t])
        for r in out:
            assert r.status == Status.OK
            tr.check(r, e)
        t += 1
    assert m.status()["out_of_pages"] == 1
    free_before = list(m.mmu.free)
    stalled = m.waiting[0]
    assert m.write(*stalled) is STALL                        # changes nothing
    assert list(m.mmu.free) == free_before
    # later writes queue behind the held one, even one that would fit
    e2, out = submit((2, 0, 0, 0), x[40])
    assert out == [] and len(m.waiting) == 2
    assert m.read(1, 0, 0, 0, 0, 4).status == Status.OK      # reads go on
    res = m.free(1)
    tr.freed(1)
    assert res.status == Status.OK
    assert [(r.seq, r.status) for r in res.writes] == [(0, Status.OK), (2, Status.OK)]
    assert not m.out_of_pages
    for w, vec in zip(res.writes, [stalled[1], e2]):
        tr.check(w, vec)                                    # no live byte overwritten
    n = (t + 2) // 3                                        # layer-0 tokens of seq 0
    r = m.read(0, 0, 0, 0, 0, n)
    np.testing.assert_array_equal(r.values, golden_heads(x[0:t:3][:n], TH, cfg)[:, 0])


def test_waiting_write_fails_when_its_sequence_is_freed():
    cfg = small_config()
    m = loaded_model(cfg)
    x = vectors(cfg, 64, seed=6)
    t = 0
    while not m.out_of_pages:
        m.submit((0, t % 3, 0, t // 3), x[t])
        t += 1
    assert t > 3                                            # the held write has pos > 0
    res = m.free(0)
    assert [(r.status, r.mem_writes) for r in res.writes] == [(Status.BAD_POSITION, [])]
    assert not m.out_of_pages and m.status()["free_pages"] == 32


def test_reset_returns_to_power_up_but_keeps_memory():
    cfg = small_config(pages=64)
    m = loaded_model(cfg)
    x = vectors(cfg, 4, seed=7)
    for t in range(4):
        m.submit((0, 0, 0, t), x[t])
    m.write_thresholds(5, 0, [0, 0, 0, 0])
    image = {k: bytes(v) for k, v in m.memory.items()}
    m.reset()
    fresh = EngineModel(cfg)
    assert m.status() == fresh.status()
    assert list(m.mmu.free) == list(range(64))
    assert not m.thresholds.any() and not m.mmu.live[0]
    assert {k: bytes(v) for k, v in m.memory.items()} == image
    # the first write after reset lands where it does from power-up
    a = m.submit((0, 0, 0, 0), x[0])[0]
    b = fresh.submit((0, 0, 0, 0), x[0])[0]
    assert a == b


@pytest.mark.parametrize("layer,t,why", [
    (0, [1, -1, 0.5, 2], "unordered"),
    (0, [-2, -1, 1, np.nan], "NaN"),
    (1, [-np.inf, -1, 1, 2], "Inf"),
    (3, [-2, -1, 1, 2], "layer >= layers"),
])
def test_bad_threshold_writes_are_dropped(layer, t, why):
    cfg = small_config()
    m = loaded_model(cfg)
    table = m.thresholds.copy()
    assert not m.write_thresholds(layer, 0, np.asarray(t, np.float16).view(np.uint16)), why
    assert (m.thresholds == table).all() and m.status()["config_error"] == 1
    assert m.write_thresholds(0, 1, np.asarray([-3, -1, 1, 3], np.float16).view(np.uint16))
    assert m.status()["config_error"] == 1                  # sticky
    m.clear_status()
    assert m.status()["config_error"] == 0


def test_equal_and_negative_zero_thresholds_are_accepted():
    m = EngineModel(small_config())
    assert m.write_thresholds(0, 0, np.asarray([-0.0, 0, 0, 0], np.float16).view(np.uint16))
    assert m.status()["config_error"] == 0


def test_nan_inf_inputs_count_and_decode_as_sanitized():
    cfg = small_config(pages=64)
    m = loaded_model(cfg)
    x = vectors(cfg, 2, seed=8)
    x[0, [0, 5, 40]] = [np.nan, np.inf, -np.inf]
    x[1, 3] = np.nan
    for t in range(2):
        assert m.submit((0, 1, 1, t), x[t])[0].status == Status.OK
    assert m.submit((3, 0, 0, 0), x[1])[0].status == Status.UNKNOWN_SEQ
    assert m.status()["bad_inputs"] == 5                    # every vector taken counts
    clean = x.copy()
    clean[0, [0, 5, 40]] = [0, 65504, -65504]
    clean[1, 3] = 0
    want = golden_heads(clean, TH, cfg)
    for h in range(2):
        np.testing.assert_array_equal(m.read(0, 1, 1, h, 0, 2).values, want[:, h])


def test_corrupt_meta_record_decodes_malformed():
    cfg = small_config(pages=64)
    m = loaded_model(cfg)
    x = vectors(cfg, 3, seed=9)
    for t in range(3):
        m.submit((0, 0, 0, t), x[t])
    res = m.read(0, 0, 0, 0, 0, 3)
    assert not res.malformed.any()
    # n_lo of token 1 above 2^middle_bits: its record is malformed, the others decode
    meta_addr = m.mmu.tables["meta"][0][0][0][0] * 64 + 1 * 16
    m.memory[meta_addr // 16][8] = 17
    res2 = m.read(0, 0, 0, 0, 0, 3)
    assert list(res2.malformed) == [False, True, False]
    # decoded with every field zero: all middle, code 0 >= n_lo 0, so the upper pivot T_i_hi
    assert (res2.values[1] == TH.view(np.uint16)[2]).all()
    np.testing.assert_array_equal(res2.values[[0, 2]], res.values[[0, 2]])
    assert m.status()["malformed"] == 1


def test_scope_head_is_refused():
    cfg = config_from_dict({"quant": {"scope": "head"}})
    with pytest.raises(ValueError, match="quant.scope"):
        EngineModel(cfg)


def _data_bytes(n):
    return config_from_dict({"memory": {"data_bytes": n}})


# the default geometry: a dense beat of 16 lanes x 4 bits = 8 bytes, a head's dense bytes
# 64 x 4 / 8 = 32, a metadata record 9 + 3 = 12 bytes in a 16-byte slot; each message is
# matched whole, since a value refused by one check may also fail a later one
BAD_ENGINE_CONFIGS = [
    pytest.param(None, r"^cfg must be an OakenConfig, not NoneType", id="none"),
    pytest.param({"memory": {"data_bytes": 16}}, r"^cfg must be an OakenConfig, not dict",
                 id="dict"),
    pytest.param(default_config().memory, r"^cfg must be an OakenConfig, not MemoryConfig",
                 id="section"),
    pytest.param(config_from_dict({"quant": {"scope": "head"}}), r"^quant\.scope must be 'layer'",
                 id="scope-head"),
    pytest.param(_data_bytes(4), r"^memory\.data_bytes \(4\) must hold a dense beat of "
                 r"quant\.lanes x quant\.middle_bits = 64 bits", id="data_bytes-4-dense-beat"),
    pytest.param(_data_bytes(1), r"^memory\.data_bytes \(1\) must hold a dense beat",
                 id="data_bytes-1-dense-beat"),
    pytest.param(_data_bytes(64), r"^memory\.data_bytes \(64\) must divide a head's dense "
                 r"bytes \(32\)", id="data_bytes-64-divide"),
    pytest.param(_data_bytes(128), r"^memory\.data_bytes \(128\) must divide",
                 id="data_bytes-128-divide"),
    pytest.param(_data_bytes(8), r"^memory\.data_bytes \(8\) must hold a metadata slot "
                 r"\(16 bytes\)", id="data_bytes-8-meta-slot"),
]


@pytest.mark.parametrize("cfg,message", BAD_ENGINE_CONFIGS)
def test_engine_model_refuses_bad_configs(cfg, message):
    with pytest.raises(ValueError, match=message):
        EngineModel(cfg)
    with pytest.raises(ValueError, match=message):
        EngineModel(cfg=cfg)


@pytest.mark.parametrize("cfg,message", BAD_ENGINE_CONFIGS)
def test_engine_top_refuses_bad_configs(cfg, message):
    from oaken_hw.engine.top import OakenEngine
    with pytest.raises(ValueError, match=message):
        OakenEngine(cfg=cfg)


@pytest.mark.parametrize("n", [16, 32])
def test_engine_takes_data_bytes_that_fit(n):
    from amaranth.hdl import UnusedElaboratable
    from oaken_hw.engine.top import OakenEngine
    assert EngineModel(_data_bytes(n)).cfg.memory.data_bytes == n
    # built and never elaborated: its blocks are collected here, without their warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        assert OakenEngine(cfg=_data_bytes(n)).cfg.memory.data_bytes == n
        gc.collect()


def test_encoded_vector_split():
    cfg = default_config()
    m = loaded_model(cfg)
    e = m.encode(vectors(cfg, 1, seed=10), 0, 0)[0]
    assert isinstance(e, EncodedVector)
    assert [len(s) for s in e.sparse] == list(e.counts)
    assert all(len(d) == 32 for d in e.dense) and len(e.meta) == 12
