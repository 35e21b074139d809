"""DequantEngine against the golden decoder, bit for bit, on golden-encoder memory images.

Two configurations: the default (16 lanes, 192-element vectors, 3 sparse blocks) and a
small one (4 lanes, one head of 64 elements, 2 blocks of 32). Each simulation runs several
phases (the engine is compiled once per test): corner cases, random and heavy-tailed data,
real KV, every way of cutting the sparse list into beats, random stalls on every stream.
"""

import numpy as np

from amaranth.hdl import Fragment

from dequant_harness import (SMALL, Vec, check, check_clean_status, encode, expect_value_error,
                             golden_vec, run, thresholds_for)
from oaken_hw.calibrate import calibrate
from oaken_hw.model.kv import to_vectors
from oaken_hw.rtl.common.header import field_width
from oaken_hw.rtl.dequant import DequantEngine



def _layers_kv(rng, cfg, n):
    return [(int(rng.integers(0, cfg.model.layers)), int(rng.integers(0, 2)))
            for _ in range(n)]


def corner_vectors(cfg, rng):
    """(x, thresholds) pairs that reach every corner of the format and the numerics."""
    V = cfg.vector_len

    def f16(a):
        with np.errstate(over="ignore"):             # beyond 65504 is meant to become Inf
            return np.asarray(a, np.float64).astype(np.float16)

    cases = []
    wide = f16([-1000, 0, 0, 1000])
    cases.append((f16(rng.uniform(-50, 50, V)), wide))                    # all middle
    cases.append((f16(rng.uniform(0.5, 50, V)), wide))                    # middle, upper only
    cases.append((f16(rng.uniform(-50, -0.5, V)), wide))                  # middle, lower only
    cases.append((f16(rng.standard_normal(V)), f16([0, 0, 0, 0])))         # all outer
    cases.append((f16(rng.uniform(-1, 1, V)), f16([-100, -50, 50, 100])))  # all inner
    mix = f16([-0.5, -0.5, 0.5, 0.5])                                     # inner + outer only
    cases.append((f16(rng.standard_normal(V)), mix))
    cases.append((f16(np.full(V, 3.0)), f16([-1, 0, 1, 2])))              # one value: steps 0
    cases.append((f16(np.zeros(V)), f16([-1, 0, 1, 2])))                  # zeros, inner
    bad = rng.standard_normal(V) * 4
    bad[rng.choice(V, 8, replace=False)] = [np.nan, np.inf, -np.inf, np.nan, np.inf,
                                            -np.inf, 65504, -65504]
    cases.append((f16(bad), f16([-2, -0.25, 0.25, 2])))                   # NaN/Inf derived
    cases.append((f16(rng.standard_normal(V) * 1e-6), f16([-1e-6, -1e-7, 1e-7, 1e-6])))
    cases.append((f16(rng.standard_normal(V) * 30000), f16([-20000, -1, 1, 20000])))
    big = f16(rng.uniform(-65504, 65504, V))
    cases.append((big, f16([-60000, -100, 100, 60000])))                 # saturation range
    cases.append((f16(rng.standard_normal(V)), f16([-3, -3, 3, 3])))      # no middle band
    cases.append((f16(rng.standard_normal(V) + 5), f16([-3, -0.1, 0.2, 3])))  # band off data
    return cases


def corner_set(cfg, rng, modes):
    """Vecs of the corner cases (one list per sparse beat mode), each case with its own
    layer/kv thresholds; the rest of the table is random."""
    cases = corner_vectors(cfg, rng)
    table = thresholds_for(rng, cfg.model.layers)
    where = [(k % cfg.model.layers, k % 2) for k in range(len(cases))]
    for (l, kv), (x, t) in zip(where, cases):
        table[l, kv] = t
    x = np.stack([c[0] for c in cases])
    return table, [encode(cfg, x, where, table, mode, rng) for mode in modes]


def random_set(cfg, rng, table, n, mode):
    """Gaussian, heavy-tailed (Student t, df 1.5..4) and mixed-scale vectors."""
    V = cfg.vector_len
    xs = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            x = rng.standard_normal(V) * 10 ** rng.uniform(-3, 2)
        elif kind == 1:
            x = rng.standard_t(rng.uniform(1.5, 4), V) * 10 ** rng.uniform(-1, 1)
        else:
            x = rng.standard_normal(V) * np.where(rng.random(V) < 0.1, 50, 1)
        xs.append(np.clip(x, -65504, 65504))
    x = np.asarray(xs).astype(np.float16)
    return encode(cfg, x, _layers_kv(rng, cfg, n), table, mode, rng)


def test_parameters_are_validated(cfg):
    expect_value_error(lambda: DequantEngine(cfg={"quant": {}}), "cfg must be an OakenConfig")
    expect_value_error(lambda: DequantEngine(cfg=cfg, buffer_beats=10),
                       "buffer_beats must be an integer >= 32")
    expect_value_error(lambda: DequantEngine(cfg=cfg, vectors=2),
                       "vectors must be an integer >= 3")
    expect_value_error(lambda: DequantEngine(cfg=cfg, table="shared"),
                       "table must be 'internal' or 'external'")
    dut = DequantEngine(cfg=cfg, table="external")
    assert dut.beats_per_vector == 12 and dut.latency == 30 and dut.min_latency == 25
    assert "table" in dut.signature.members and "thresholds" not in dut.signature.members
    Fragment.get(dut, None)       # elaborates (and so is used)


def test_default_config_corner_random_and_stalls(cfg):
    rng = np.random.default_rng(1)
    table, (corners_full, corners_rand) = corner_set(cfg, rng, ("full", "random"))
    phases = [
        (corners_full, 0.0, 0.0),
        (corners_rand + random_set(cfg, rng, table, 10, "rows"), 0.3, 0.3),
        (random_set(cfg, rng, table, 10, "random") + random_set(cfg, rng, table, 8, "full"),
         0.5, 0.2),
    ]
    results = run(cfg, table, None, phases=phases, seed=3)
    for (vecs, _, _), res in zip(phases, results):
        check(cfg, vecs, res)
        check_clean_status(vecs, res)


def test_default_config_real_kv(cfg, kv_topics, kv_tutorial):
    """Thresholds calibrated on one text, vectors of the other (K and V, all layers)."""
    rng = np.random.default_rng(2)
    table = np.stack([calibrate(kv_topics["k"]), calibrate(kv_topics["v"])], axis=1)
    vecs = []
    for kv, name in ((0, "k"), (1, "v")):
        x, layer = to_vectors(kv_tutorial[name], cfg)
        pick = rng.choice(len(x), 14, replace=False)
        vecs += encode(cfg, x[pick], [(int(layer[i]), kv) for i in pick], table,
                       mode=["rows", "full"][kv], rng=rng)
    res = run(cfg, table, vecs, stall=0.25, out_stall=0.25, seed=4)
    check(cfg, vecs, res)
    check_clean_status(vecs, res)


def test_small_config_corner_random_and_stalls():
    cfg = SMALL
    rng = np.random.default_rng(5)
    table, (corners, corners_r) = corner_set(cfg, rng, ("rows", "random"))
    phases = [
        (corners, 0.0, 0.0),
        (corners_r + random_set(cfg, rng, table, 12, "random"), 0.4, 0.4),
        (random_set(cfg, rng, table, 12, "full") + random_set(cfg, rng, table, 6, "rows"),
         0.1, 0.6),
    ]
    results = run(cfg, table, None, phases=phases, seed=6)
    for (vecs, _, _), res in zip(phases, results):
        check(cfg, vecs, res)
        check_clean_status(vecs, res)


def test_threshold_writes_while_streaming_never_split_a_vector():
    """Rewriting a layer's thresholds while its vectors stream: each vector is decoded
    whole with either the old or the new thresholds (they are read with its first beat),
    and the vectors after the write use the new ones."""
    cfg = SMALL
    rng = np.random.default_rng(9)
    table = thresholds_for(rng, cfg.model.layers)
    old = np.array([-4, -0.25, 0.25, 4], np.float16)
    new = np.array([-2, -0.5, 0.125, 3], np.float16)
    table[1, 0] = old
    x = (rng.standard_normal((16, cfg.vector_len)) * 2).astype(np.float16)
    vecs = encode(cfg, x, [(1, 0)] * 16, table, "full")
    table_new = table.copy()
    table_new[1, 0] = new
    # the same memory image decoded with the new thresholds
    want_new = [golden_vec(cfg, table_new, Vec(v.layer, v.kv, v.meta, v.dense, v.sparse),
                           dense_bytes=_dense_bytes(cfg, v)) for v in vecs]
    writes = {c: (1, 0, new) for c in (60, 61, 150)}  # mid-stream, twice, and once more
    res = run(cfg, table, vecs, stall=0.2, out_stall=0.2, seed=10, table_writes=writes)
    kinds = []
    for n, (data, *_rest) in enumerate(res.outputs):
        if np.array_equal(data, vecs[n].expect):
            kinds.append("old")
        elif np.array_equal(data, want_new[n].expect):
            kinds.append("new")
        else:
            raise AssertionError(f"vector {n} mixes thresholds or is wrong")
    assert kinds[0] == "old" and kinds[-1] == "new"
    assert kinds == sorted(kinds, key=lambda k: k == "new")   # old ones, then new ones
    check_clean_status(vecs, res)


def test_rejected_threshold_writes_keep_the_table():
    """NaN/Inf, misordered and out-of-range threshold writes are rejected, each with the
    sticky ``config_error`` (until ``status.clear``), and never stored: the vectors are
    decoded with the thresholds written before (the golden model with the old table). A
    good write among them (-0 ordered as +0) is taken and does not raise the flag."""
    cfg = SMALL
    L = cfg.model.layers
    rng = np.random.default_rng(33)
    table = thresholds_for(rng, L)
    table[1, 0] = np.array([-2, -0.1, 0.1, 2], np.float16)
    table[1, 1] = np.array([-1, 0, 0.5, 4], np.float16)
    table[2, 0] = np.array([-3, -0.5, 0.25, 1], np.float16)
    # (layer, kv, bits o_lo, i_lo, i_hi, o_hi, rejected)
    writes = [
        (1, 0, [0x7E00, 0xAE66, 0x2E66, 0x4000], True),     # NaN
        (1, 0, [0xFC00, 0xAE66, 0x2E66, 0x4000], True),     # -Inf
        (1, 1, [0xBC00, 0x0000, 0x3800, 0x7C00], True),     # +Inf
        (1, 1, [0xBC00, 0x0000, 0x7D00, 0x4400], True),     # NaN (signalling) in i_hi
        (1, 1, [0x4000, 0x2E66, 0xAE66, 0xC000], True),     # descending
        (1, 0, [0xC000, 0x2E66, 0xAE66, 0x4000], True),     # inner pair swapped
        (1, 0, [0xC000, 0xAE66, 0x4400, 0x4000], True),     # i_hi above o_hi
        (2, 0, [0x3C00, 0xAE66, 0x2E66, 0x4000], True),     # o_lo above i_lo
        (2, 0, [0x8000, 0x8000, 0x0000, 0x0000], False),    # good: -0 == +0 (stored)
        (L, 0, [0xC000, 0xAE66, 0x2E66, 0x4000], True),     # layer out of range
        ((1 << field_width(L)) - 1, 1, [0, 0, 0, 0], True),  # the largest layer field
        (1, 0, [0x7C00, 0x7C00, 0x7C00, 0x7C00], True),     # all +Inf (ordered)
    ]
    new = table.copy()
    new[2, 0] = np.array([-0.0, -0.0, 0, 0], np.float16)
    where = [(1, 0), (1, 1), (2, 0), (0, 0), (L - 1, 1)] * 3
    x = (rng.standard_normal((len(where), cfg.vector_len))
         * np.where(rng.random((len(where), cfg.vector_len)) < 0.2, 6, 1)).astype(np.float16)
    vecs = encode(cfg, x, where, table, "full")
    # the same memory images, decoded with the table after the writes
    vecs = [golden_vec(cfg, new, Vec(v.layer, v.kv, v.meta, v.dense, v.sparse),
                       dense_bytes=_dense_bytes(cfg, v)) for v in vecs]
    half = len(vecs) // 2
    phases = [(vecs[:half], 0.2, 0.2), (vecs[half:], 0.2, 0.2)]
    results = run(cfg, table, None, phases=phases, seed=34,
                  config_writes=[(l, kv, bits) for l, kv, bits, _ in writes])
    flags = [int(bad) for *_, bad in writes]
    assert results[0].config_flags == flags, (results[0].config_flags, flags)
    assert results[0].config_cleared == [0] * (len(writes) - 1), results[0].config_cleared
    for (vs, _, _), res in zip(phases, results):
        check(cfg, vs, res)
        assert res.status["vectors"] == len(vs) and res.status["malformed"] == 0
        assert not any(v for k, v in res.status.items()
                       if k.endswith("_error") and k != "config_error"), res.status
    # sticky over the first phase (the last write was bad), cleared after it
    assert results[0].status["config_error"] == 1
    assert results[1].status["config_error"] == 0


def _dense_bytes(cfg, v):
    bits = cfg.quant.lanes * cfg.quant.middle_bits
    value = sum(d << (k * bits) for k, (d, _) in enumerate(v.dense))
    return np.frombuffer(value.to_bytes(cfg.dense_bytes, "little"), np.uint8)
