"""The golden MMU model against properties derived from the spec, not from its own code."""

import copy
import gc
import random
import warnings

import pytest

from oaken_hw.config import config_from_dict, default_config
from oaken_hw.mmu import STALL, FreeList, Kind, MMU, MMULayout, MMUModel, PageTable, Status

from mmu_harness import Append, Free, Read, head_scope_config, plan, small_config


def _state(model):
    return copy.deepcopy((list(model.free), model.live, model.tokens, model.sbytes,
                          model.tables))


def _covered(bursts, page_bytes):
    """Byte addresses covered by a list of burst records, in order."""
    out = []
    for r in bursts:
        assert r.length > 0
        assert r.addr // page_bytes == (r.addr + r.length - 1) // page_bytes, "crosses a page"
        out.extend(range(r.addr, r.addr + r.length))
    return out


@pytest.mark.parametrize("cfg", [small_config(), head_scope_config()], ids=["layer", "head"])
@pytest.mark.parametrize("seed", range(4))
def test_reads_return_what_appends_placed(cfg, seed):
    """Every byte an append placed is found again, at the same address and in token order,
    by a read of the same stream; nothing of another stream is ever returned."""
    model = MMUModel(cfg)
    L = model.layout
    placed = {}          # (seq, group, kind, idx) -> list of addresses, in stream order
    rng = random.Random(seed)
    for cmd in plan(cfg, 400, seed=seed):
        res = cmd.apply(model)
        model.check_invariants()
        if res is STALL:
            continue
        if isinstance(cmd, Free) and res[-1].status == Status.OK:
            placed = {k: v for k, v in placed.items() if k[0] != cmd.seq}
        if isinstance(cmd, Append) and res[-1].status == Status.OK:
            g = 2 * cmd.layer + cmd.kv
            for r in res[:-1]:
                key = (cmd.seq, g, r.kind, r.head)
                slot = {Kind.DENSE: L.dense_slot, Kind.META: L.meta_slot}.get(r.kind)
                addrs = list(range(r.addr, r.addr + (slot or r.length)))
                placed.setdefault(key, []).extend(addrs)
        # read back a random stream in full and compare
        live = [s for s in range(L.sequences) if model.live[s]]
        if live:
            s = rng.choice(live)
            layer, kv, h = rng.randrange(L.layers), rng.randrange(2), rng.randrange(L.heads)
            g = 2 * layer + kv
            for kind in (Kind.DENSE, Kind.SPARSE, Kind.META):
                hi = model.sbytes[s][g][h] if kind == Kind.SPARSE else model.tokens[s][g]
                got = model.read(s, layer, kv, h, kind, 0, hi)
                assert got[-1].status == Status.OK
                idx = L.meta_vector(h) if kind == Kind.META else h
                assert _covered(got[:-1], L.page_bytes) == placed.get((s, g, kind, idx), [])


def test_windows_are_slices_of_the_whole():
    cfg = small_config(max_tokens=16, pages=64, sparse_pages=8)
    model = MMUModel(cfg)
    L = model.layout
    for t in range(12):
        assert model.append(1, 1, 0, t, [t * 3 % 33, 32 - t])[-1].status == Status.OK
    for kind, unit, hi in ((Kind.DENSE, L.dense_slot, 12), (Kind.META, L.meta_slot, 12),
                           (Kind.SPARSE, 1, model.sbytes[1][2][1])):
        whole = _covered(model.read(1, 1, 0, 1, kind, 0, hi)[:-1], L.page_bytes)
        for lo in range(0, hi, 3):
            for h2 in range(lo, hi + 1, 5):
                part = _covered(model.read(1, 1, 0, 1, kind, lo, h2)[:-1], L.page_bytes)
                assert part == whole[lo * unit:h2 * unit]


@pytest.mark.parametrize("cfg", [small_config(), head_scope_config(), default_config()],
                         ids=["layer", "head", "default"])
def test_sparse_read_to_end(cfg):
    """A SPARSE read with hi = to_end is the read up to the bytes written so far; lo beyond
    them is BAD_RANGE; the value means nothing to DENSE and META reads."""
    model = MMUModel(cfg)
    L = model.layout
    assert L.to_end == (1 << L.range_bits) - 1
    assert L.to_end % 2 == 1 and L.sparse_capacity % 2 == 0 and L.to_end > L.sparse_capacity
    rng = random.Random(5)
    for t in range(10):
        counts = [rng.choice([0, 1, L.head_dim, rng.randrange(L.head_dim + 1)])
                  for _ in range(L.heads)]
        assert model.append(1, 0, 1, t, counts)[-1].status == Status.OK
    for h in range(L.heads):
        sb = model.sbytes[1][1][h]
        for lo in sorted({0, 1, sb // 2, max(0, sb - 1), sb}):
            before = _state(model)
            assert model.read(1, 0, 1, h, Kind.SPARSE, lo, L.to_end) == \
                model.read(1, 0, 1, h, Kind.SPARSE, lo, sb)
            assert _state(model) == before
        for lo in (sb + 1, L.to_end):
            assert model.read(1, 0, 1, h, Kind.SPARSE, lo, L.to_end)[-1].status == \
                Status.BAD_RANGE
        for kind in (Kind.DENSE, Kind.META):
            assert model.read(1, 0, 1, h, kind, 0, L.to_end)[-1].status == Status.BAD_RANGE
    # an empty stream of a live sequence: an empty read; an unknown sequence: UNKNOWN_SEQ
    assert [tuple(r) for r in model.read(1, 0, 0, 0, Kind.SPARSE, 0, L.to_end)] == \
        [(Kind.STATUS, 0, 0, 0, Status.OK)]
    assert model.read(0, 0, 1, 0, Kind.SPARSE, 0, L.to_end)[-1].status == Status.UNKNOWN_SEQ


def test_exhaustion_stalls_without_change_and_free_recovers():
    cfg = small_config()
    model = MMUModel(cfg)
    t, stalled = 0, None
    while stalled is None:
        for layer, kv in ((0, 0), (0, 1), (1, 0), (1, 1)):
            before = _state(model)
            res = model.append(0, layer, kv, t, [32, 32])
            if res is STALL:
                assert _state(model) == before
                stalled = (layer, kv)
                break
            assert res[-1].status == Status.OK
        t += 1
    assert model.pages_needed(0, *stalled, [32, 32]) > len(model.free)
    # a free returns exactly the sequence's pages, at the tail of the free list
    model2 = MMUModel(cfg)
    for k in range(3):
        model2.append(2, 0, 1, k, [5, 0])
    freed = set(model2.owned)
    model2.free_sequence(2)
    assert set(list(model2.free)[-len(freed):]) == freed
    # fill, free, and re-append: the pool is whole again
    model.free_sequence(0)
    assert len(model.free) == cfg.mmu.pages and not model.owned
    assert model.append(0, 0, 0, 0, [32, 32])[-1].status == Status.OK


def test_invalid_commands_change_nothing():
    cfg = small_config()
    model = MMUModel(cfg)
    for t in range(3):
        model.append(0, 0, 1, t, [4, 40 % 33])
    cases = [
        (Append(3, 0, 0, 0, [0, 0]), Status.UNKNOWN_SEQ),
        (Append(0, 0, 1, 5, [0, 0]), Status.BAD_POSITION),       # skips ahead
        (Append(0, 0, 1, 1, [0, 0]), Status.BAD_POSITION),       # rewrites
        (Append(1, 0, 0, 1, [0, 0]), Status.BAD_POSITION),       # position 1 of a new group
        (Append(0, 0, 1, 3, [33, 0]), Status.BAD_FIELD),         # more outliers than elements
        (Read(1, 0, 0, 0, Kind.DENSE, 0, 0), Status.UNKNOWN_SEQ),
        (Read(3, 0, 0, 0, Kind.DENSE, 0, 0), Status.UNKNOWN_SEQ),
        (Read(0, 0, 1, 0, Kind.STATUS, 0, 0), Status.BAD_FIELD),
        (Read(0, 0, 1, 0, Kind.DENSE, 0, 4), Status.BAD_RANGE),  # beyond what was written
        (Read(0, 0, 1, 0, Kind.SPARSE, 0, 13), Status.BAD_RANGE),
        (Read(0, 0, 1, 0, Kind.META, 2, 1), Status.BAD_RANGE),
        (Free(1), Status.UNKNOWN_SEQ),
        (Free(3), Status.UNKNOWN_SEQ),
    ]
    for cmd, want in cases:
        before = _state(model)
        res = cmd.apply(model)
        assert [tuple(r) for r in res] == [(Kind.STATUS, 0, 0, 0, want)], cmd
        assert _state(model) == before, cmd
    assert Free(0).apply(model)[-1].status == Status.OK
    assert Free(0).apply(model)[-1].status == Status.UNKNOWN_SEQ       # double free


def test_capacity():
    cfg = small_config(pages=64)
    model = MMUModel(cfg)
    L = model.layout
    for t in range(L.max_tokens):
        assert model.append(0, 1, 1, t, [0, 0])[-1].status == Status.OK
    before = _state(model)
    assert model.append(0, 1, 1, L.max_tokens, [0, 0])[-1].status == Status.CAPACITY
    assert _state(model) == before
    # the sparse table of one head holds sparse_pages pages
    for t in range(L.sparse_capacity // L.head_dim):
        assert model.append(1, 0, 0, t, [L.head_dim, 0])[-1].status == Status.OK
    t = L.sparse_capacity // L.head_dim
    assert model.append(1, 0, 0, t, [1, 0])[-1].status == Status.CAPACITY
    assert model.append(1, 0, 0, t, [0, 7])[-1].status == Status.OK


def test_default_geometry_and_storage():
    cfg = default_config()
    L = MMULayout(cfg)
    g, m = cfg.model, cfg.mmu
    # one head's token of dense data is 32 bytes, a metadata record fits a 16-byte port beat
    assert L.dense_bytes == g.head_dim * cfg.quant.middle_bits // 8 == L.dense_slot == 32
    assert L.meta_slot == cfg.memory.data_bytes == 16 >= cfg.meta_bytes
    # each sequence owns 64 group rows (30 layers x K, V padded to a power of two), and
    # per group the 3 KV heads' streams take 4 rows of each table (a power-of-two stride)
    assert g.layers == 30 and g.kv_heads == 3
    rows = m.sequences * 64
    assert L.group_rows == rows
    entries = rows * (4 * (m.max_tokens * 32 // m.page_bytes + m.sparse_pages)
                      + m.max_tokens * 16 // m.page_bytes)
    bits = L.storage_bits
    assert bits["dense_table"] + bits["sparse_table"] + bits["meta_table"] == entries * 14
    assert bits["free_list"] == m.pages * 14
    # the pool holds the default sequences at full length with 10 % outliers
    per_seq = g.layers * 2 * (g.kv_heads * (16 + 4) + 8)
    assert m.sequences * per_seq <= m.pages


@pytest.mark.parametrize("bad, match", [
    ({"mmu": {"sparse_pages": 0}}, "mmu.sparse_pages"),
    ({"mmu": {"page_bytes": 16}, "model": {"head_dim": 64}}, "mmu.page_bytes"),
    ({"mmu": {"page_bytes": 32}, "model": {"head_dim": 64},
      "quant": {"middle_bits": 2, "outlier_bits": 3}}, "model.head_dim"),
    ({"model": {"head_dim": 2, "kv_heads": 4},
      "quant": {"sparse_block": 2, "lanes": 2, "middle_bits": 3, "outlier_bits": 4}},
     "whole bytes"),
])
def test_configuration_checks(bad, match):
    with pytest.raises(ValueError, match=match):
        MMULayout(config_from_dict(bad))


def test_parameter_checks():
    with warnings.catch_warnings():
        # a component whose __init__ raises was still constructed; Amaranth reports it as
        # unused when the traceback that holds it is collected
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="pages must be a power of two"):
            FreeList(pages=12)
        with pytest.raises(ValueError, match="entries must be a positive integer"):
            PageTable(streams=2, entries=0, page_bits=3)
        with pytest.raises(ValueError, match="free_list must be a FreeList subclass"):
            MMU(cfg=small_config(), free_list=int)
        gc.collect()
    with pytest.raises(ValueError, match="cfg must be an OakenConfig"):
        MMULayout({"mmu": {}})
    model = MMUModel(small_config())
    with pytest.raises(ValueError, match="pos must be an integer"):
        model.append(0, 0, 0, 1 << 10, [0, 0])
    with pytest.raises(ValueError, match="counts must have one entry per head"):
        model.append(0, 0, 0, 0, [0])
