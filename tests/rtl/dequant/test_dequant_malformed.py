"""Malformed input: error status, the golden malformed-vector output, and the next vector.

Every broken vector is followed by a well-formed one; both must decode bit-exactly (the
broken one as ``unpack`` defines a malformed vector: all fields zero, i.e. every element
is the vector's ``T_i_hi``), the status flags must name the fault, and the stream never
hangs.
"""

import numpy as np
import pytest

from dequant_harness import (SMALL, Vec, check, check_clean_status, encode, golden_vec, run,
                             thresholds_for)
from oaken_hw.config import default_config



def _sparse_list(v):
    return b"".join(d[:c] for d, c, _ in v.sparse)


def _beats(cfg, sp):
    lanes = cfg.quant.lanes
    out = [sp[i:i + lanes] for i in range(0, max(len(sp), 1), lanes)]
    return [(b, len(b), k == len(out) - 1) for k, b in enumerate(out)]


def _dense_bytes(cfg, v):
    bits = cfg.quant.lanes * cfg.quant.middle_bits
    value = sum(d << (k * bits) for k, (d, _) in enumerate(v.dense))
    return np.frombuffer(value.to_bytes(cfg.dense_bytes, "little"), np.uint8)


def breakers(cfg):
    """(name, status flags, function Vec -> broken Vec or None when not applicable).

    The flags are exactly the ones the rules of docs/dequant_engine.md (*Malformed input*)
    name for the fault, applied to a source vector with entries in every block: a block
    count above the block size is ``count_error``, and it also changes the sum of the
    counts, so that the bytes delivered no longer match it (``sparse_error``; never
    ``order_error`` with ``count_error``); a list cut short or extended leaves its
    entries in order (surplus bytes lie beyond the counts, in no block); an order fault
    keeps the byte count; a meta word fault and the dense framing touch nothing else.
    """
    q = cfg.quant
    block, K = q.sparse_block, cfg.beats_per_vector
    nblk = cfg.blocks_per_vector

    def with_meta(v, **changes):
        meta = bytearray(v.meta)
        for off, val in changes.items():
            meta[int(off[1:])] = val
        return Vec(v.layer, v.kv, bytes(meta), v.dense, v.sparse)

    def count_over(v):                       # a block count above the block size
        meta = bytearray(v.meta)
        meta[9] = block + 1
        return Vec(v.layer, v.kv, bytes(meta), v.dense, v.sparse)

    def count_255(v):                        # the largest count byte, 40 more bytes delivered
        meta = bytearray(v.meta)
        meta[9 + nblk - 1] = 255
        sp = _sparse_list(v) + bytes(range(40))
        return Vec(v.layer, v.kv, bytes(meta), v.dense, _beats(cfg, sp))

    def truncated(v):                        # one sparse byte missing
        sp = _sparse_list(v)
        if not sp:
            return None
        return Vec(v.layer, v.kv, v.meta, v.dense, _beats(cfg, sp[:-1]))

    def overlong(v):                         # bytes beyond the counts' sum
        sp = _sparse_list(v) + bytes([0, 1, 2])
        return Vec(v.layer, v.kv, v.meta, v.dense, _beats(cfg, sp))

    def way_overlong(v):                     # more bytes than the vector has elements
        sp = _sparse_list(v) + bytes(range(cfg.vector_len + 7))
        return Vec(v.layer, v.kv, v.meta, v.dense, _beats(cfg, sp))

    def no_sparse_bytes(v):                  # counts say entries, the list is empty
        if not _sparse_list(v):
            return None
        return Vec(v.layer, v.kv, v.meta, v.dense, [(b"", 0, True)])

    def swapped(v):                          # two entries of one block out of order
        sp = bytearray(_sparse_list(v))
        counts = v.meta[9:9 + nblk]
        start = 0
        for c in counts:
            if c >= 2:
                sp[start], sp[start + 1] = sp[start + 1], sp[start]
                return Vec(v.layer, v.kv, v.meta, v.dense, _beats(cfg, bytes(sp)))
            start += c
        return None

    def duplicate(v):                        # the same index twice in a block
        sp = bytearray(_sparse_list(v))
        counts = v.meta[9:9 + nblk]
        start = 0
        for c in counts:
            if c >= 2:
                sp[start + 1] = (sp[start + 1] & ~(block - 1)) | (sp[start] & (block - 1))
                return Vec(v.layer, v.kv, v.meta, v.dense, _beats(cfg, bytes(sp)))
            start += c
        return None

    def last_entry_bad(v):                   # the very last entry breaks the order
        sp = bytearray(_sparse_list(v))
        counts = list(v.meta[9:9 + nblk])
        if counts[-1] < 2:
            return None
        sp[-1] = (sp[-1] & ~(block - 1)) | 0
        return Vec(v.layer, v.kv, v.meta, v.dense, _beats(cfg, bytes(sp)))

    def dense_short(v):
        d = v.dense[:K - 2] + [(v.dense[K - 2][0], True)] if K > 2 else [(v.dense[0][0], True)]
        return Vec(v.layer, v.kv, v.meta, d, v.sparse)

    def dense_long(v):
        d = [(x, False) for x, _ in v.dense] + [(1, False), (2, False), (3, True)]
        return Vec(v.layer, v.kv, v.meta, d, v.sparse)

    count, meta, order = {"count_error"}, {"meta_error"}, {"order_error"}
    sparse, dense = {"sparse_error"}, {"dense_error"}
    return [
        ("count_over", count | sparse, count_over),
        ("count_255", count | sparse, count_255),
        ("truncated", sparse, truncated),
        ("overlong", sparse, overlong),
        ("way_overlong", sparse, way_overlong),
        ("no_sparse_bytes", sparse, no_sparse_bytes),
        ("swapped", order, swapped),
        ("duplicate", order, duplicate),
        ("last_entry_bad", order, last_entry_bad),
        ("n_lo", meta, lambda v: with_meta(v, b8=(1 << q.middle_bits) + 1)),
        ("delta_mid_inf", meta, lambda v: with_meta(v, b0=0x00, b1=0x7C)),
        ("inner_min_nan", meta, lambda v: with_meta(v, b4=0x01, b5=0x7E)),
        ("delta_outer_negative", meta, lambda v: with_meta(v, b6=0x01, b7=0x80)),
        ("dense_short", dense, dense_short),
        ("dense_long", dense, dense_long),
    ]


def _sources(cfg, rng, table, n):
    """Well-formed vectors with outliers in every block (so that every breaker applies)."""
    V = cfg.vector_len
    x = (rng.standard_normal((n, V)) * np.where(rng.random((n, V)) < 0.3, 8, 1))
    lk = [(int(rng.integers(0, cfg.model.layers)), int(rng.integers(0, 2))) for _ in range(n)]
    for l, kv in lk:
        table[l, kv] = np.array([-4, -0.2, 0.2, 4], np.float16)
    return encode(cfg, x.astype(np.float16), lk, table, "full")


@pytest.mark.parametrize("cfg", [default_config(), SMALL], ids=["default", "small"])
def test_malformed_vectors_are_flagged_and_the_next_one_decodes(cfg):
    rng = np.random.default_rng(11)
    table = thresholds_for(rng, cfg.model.layers)
    kinds = breakers(cfg)
    src = _sources(cfg, rng, table, 2 * len(kinds) + 2)
    phases, flags = [], []
    for k, (name, flag, brk) in enumerate(kinds):
        good_a, good_b = src[2 * k], src[2 * k + 1]
        bad = brk(good_a)
        assert bad is not None, name
        golden_vec(cfg, table, bad, dense_bytes=_dense_bytes(cfg, good_a),
                   dense_ok="dense_error" not in flag)
        assert bad.malformed, name
        # malformed output: every element is the vector's T_i_hi (as +0 if it is -0)
        t_ihi = table[bad.layer, bad.kv, 2].view(np.uint16)
        assert np.all(bad.expect == (0 if t_ihi == 0x8000 else t_ihi)), name
        phases.append(([bad, good_b], 0.3 if k % 2 else 0.0, 0.3 if k % 3 == 0 else 0.0))
        flags.append((name, flag))
    # and a burst: broken vectors back to back, then good ones, with stalls
    burst, burst_flags = [], set()
    for k, (name, flag, brk) in enumerate(kinds):
        v = brk(src[(2 * k + 3) % len(src)])
        if v is not None:
            burst.append(golden_vec(cfg, table, v, dense_bytes=_dense_bytes(cfg, src[0]),
                                    dense_ok="dense_error" not in flag))
            burst_flags |= flag
    burst += [src[-1], src[-2]]
    phases.append((burst, 0.4, 0.4))
    flags.append(("burst", burst_flags))

    results = run(cfg, table, None, phases=phases, seed=12)
    for (vecs, _, _), (name, flag), res in zip(phases, flags, results):
        check(cfg, vecs, res)
        st = res.status
        assert st["vectors"] == len(vecs), name
        assert st["malformed"] == sum(v.malformed for v in vecs), name
        raised = {k for k, v in st.items() if k.endswith("_error") and v}
        assert raised == flag, (name, raised, flag)


def test_negative_zero_step_is_not_malformed():
    """``unpack`` accepts -0 as a step (it is not negative); so does the engine."""
    cfg = SMALL
    rng = np.random.default_rng(13)
    table = thresholds_for(rng, cfg.model.layers)
    src = _sources(cfg, rng, table, 2)
    v = src[0]
    meta = bytearray(v.meta)
    meta[0], meta[1] = 0x00, 0x80                 # delta_mid = -0
    bad = golden_vec(cfg, table, Vec(v.layer, v.kv, bytes(meta), v.dense, v.sparse),
                     dense_bytes=_dense_bytes(cfg, v))
    assert not bad.malformed
    res = run(cfg, table, [bad, src[1]], stall=0.2, out_stall=0.2, seed=14)
    check(cfg, [bad, src[1]], res)
    check_clean_status([bad, src[1]], res)
