"""Stimulus, golden expectations and a cycle-driven simulation harness for DequantEngine.

A test builds a list of :class:`Vec` (one quantization vector as the engine's three input
streams carry it, possibly malformed) and the expected FP16 output of each from the golden
model (``dequantize(*unpack(image))``), runs them through the engine with random
valid/ready stalls on every stream, and compares every output bit.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from oaken_hw.config import config_from_dict
from oaken_hw.model.memory_format import MemoryImage, pack, unpack
from oaken_hw.model.numerics import fp16_bits
from oaken_hw.model.quantizer import Encoded, dequantize, quantize
from oaken_hw.rtl.common.header import header_layout
from oaken_hw.rtl.dequant import DequantEngine


#: the small test configuration: 4 lanes, one head of 64 elements, two sparse blocks of 32
SMALL = config_from_dict({"quant": {"lanes": 4, "scope": "head", "sparse_block": 32}})


@dataclass
class Vec:
    """One vector on the engine's input streams.

    ``dense`` and ``sparse`` are lists of beats; ``last`` flags are given explicitly so that
    a test can break the framing. ``expect`` is the FP16 bit patterns the engine must give.
    """

    layer: int
    kv: int
    meta: bytes
    dense: list            # [(int data, bool last)]
    sparse: list           # [(bytes, count, bool last)]
    expect: np.ndarray = None
    malformed: bool = False
    header_extra: dict = field(default_factory=dict)


def thresholds_for(rng, layers):
    """Random ordered FP16 thresholds, shape (layers, 2, 4), some with degenerate bands."""
    out = np.zeros((layers, 2, 4), np.float16)
    for l in range(layers):
        for kv in range(2):
            kind = rng.integers(0, 6)
            if kind == 0:
                t = np.zeros(4)                          # every nonzero value is outer
            elif kind == 1:
                t = np.sort(rng.standard_normal(4)) + rng.normal() * 3  # band off zero
            elif kind == 2:
                a = abs(rng.normal()) * 2
                t = np.array([-3 * a, -0.1 * a, 0.1 * a, 3 * a])
            elif kind == 3:
                t = np.array([-2.0, 0.5, 0.5, 2.0])      # empty inner band
            else:
                t = np.sort(rng.standard_normal(4) * 2)
            t16 = np.sort(t.astype(np.float16).astype(np.float64)).astype(np.float16)
            out[l, kv] = t16
    return out


def dense_beats(cfg, dense_bytes_row):
    """A vector's dense bytes as beats of ``lanes * middle_bits`` bits (LSB first)."""
    q = cfg.quant
    value = int.from_bytes(bytes(dense_bytes_row), "little")
    bits = q.lanes * q.middle_bits
    K = cfg.beats_per_vector
    return [((value >> (k * bits)) & ((1 << bits) - 1), k == K - 1) for k in range(K)]


def sparse_beats(cfg, sp, mode, rng=None, row_of=None):
    """A vector's sparse bytes as beats.

    mode: "full" (``lanes`` bytes per beat), "rows" (one beat per dense beat, as the
    quantization engine writes them; needs ``row_of``, the output row of each byte),
    "random" (random counts, empty beats included).
    """
    lanes = cfg.quant.lanes
    sp = list(bytes(sp))
    beats = []
    if mode == "full":
        for i in range(0, max(len(sp), 1), lanes):
            chunk = sp[i:i + lanes]
            beats.append((bytes(chunk), len(chunk)))
    elif mode == "rows":
        K = cfg.beats_per_vector
        for k in range(K):
            chunk = [b for b, r in zip(sp, row_of) if r == k]
            beats.append((bytes(chunk), len(chunk)))
    else:
        i = 0
        while i < len(sp) or not beats:
            n = int(rng.integers(0, lanes + 1))
            chunk = sp[i:i + n]
            beats.append((bytes(chunk), len(chunk)))
            i += len(chunk)
        if rng.random() < 0.3:
            beats.append((b"", 0))
    return [(d, c, k == len(beats) - 1) for k, (d, c) in enumerate(beats)]


def encode(cfg, x, layers_kv, table, mode="full", rng=None):
    """Quantize + pack FP16 vectors ``x`` (N, V); one Vec each, with golden expectations."""
    th = np.stack([table[l, kv] for l, kv in layers_kv]) if len(layers_kv) else \
        np.zeros((0, 4), np.float16)
    enc = quantize(x, th, cfg)
    img = pack(enc, cfg)
    dec, malformed = unpack(img, cfg)
    assert not malformed.any()
    want = fp16_bits(dequantize(dec, th, cfg))
    out = []
    offs = img.sparse_offsets
    block = cfg.quant.sparse_block
    for i, (l, kv) in enumerate(layers_kv):
        sp = img.sparse[offs[i]:offs[i + 1]]
        # output row of each sparse byte, from the block counts
        counts = img.meta[i, 9:]
        blocks = np.repeat(np.arange(len(counts)), counts)
        idx = np.asarray(sp, np.int64) & (block - 1)
        row_of = (blocks * block + idx) // cfg.quant.lanes
        out.append(Vec(layer=l, kv=kv, meta=bytes(img.meta[i]),
                       dense=dense_beats(cfg, img.dense[i]),
                       sparse=sparse_beats(cfg, sp, mode, rng, row_of),
                       expect=want[i]))
    return out


def golden_vec(cfg, table, v, dense_bytes=None, dense_ok=True):
    """Golden output of a (possibly malformed) Vec built by hand.

    The sparse bytes are what its beats deliver; the dense bytes ``dense_bytes`` (or zeros).
    A broken dense framing (``dense_ok`` False) makes the vector malformed: the engine
    then outputs what ``unpack`` gives a malformed vector.
    """
    sp = b"".join(d[:c] for d, c, _ in v.sparse)
    dense = np.zeros((1, cfg.dense_bytes), np.uint8) if dense_bytes is None \
        else np.asarray(dense_bytes, np.uint8).reshape(1, -1)
    img = MemoryImage(dense=dense, meta=np.frombuffer(v.meta, np.uint8).reshape(1, -1).copy(),
                      sparse=np.frombuffer(sp, np.uint8).copy(),
                      sparse_counts=np.array([len(sp)]))
    dec, malformed = unpack(img, cfg)
    if not dense_ok:
        # what unpack gives a malformed vector: every field zero
        z = lambda shape, dt: np.zeros(shape, dt)
        V = cfg.vector_len
        dec = Encoded(group=z((1, V), np.uint8), dense=z((1, V), np.uint8),
                      high=z((1, V), np.uint8), delta_mid=z(1, np.uint16),
                      delta_inner=z(1, np.uint16), delta_outer=z(1, np.uint16),
                      inner_min=z(1, np.uint16), n_lo=z(1, np.uint8),
                      bad_inputs=z(1, np.int64))
        malformed = np.array([True])
    th = table[v.layer, v.kv][None]
    v.expect = fp16_bits(dequantize(dec, th, cfg))[0]
    v.malformed = bool(malformed[0])
    return v


class Result:
    def __init__(self):
        self.outputs = []          # per vector: (np.uint16 array, malformed, header dict)
        self.cycles = 0
        self.first_out = None
        self.last_out = None
        self.out_beats = 0
        self.first_in = None
        self.status = {}
        self.input_done = {}
        self.out_cycles = []


def _bits_of(layout_field_offset, width, value):
    return (value >> layout_field_offset) & ((1 << width) - 1)


#: status fields of the DequantEngine (``status.*``), as :class:`Result` ``status`` keys
STATUS_FIELDS = ("vectors", "malformed", "count_error", "meta_error", "order_error",
                 "sparse_error", "dense_error", "config_error")


class StalledBeats:
    """The stream rule on outputs: a beat offered (``valid``) without ``ready`` at a clock
    edge is offered again, unchanged, at the next one. Call :meth:`check` once per cycle
    and stream with what was sampled at that edge."""

    def __init__(self):
        self.held = {}

    def check(self, name, valid, ready, payload, where):
        held = self.held.get(name)
        if held is not None:
            assert valid and payload == held, (
                f"{name} dropped valid or changed its payload while stalled: {where}, "
                f"valid {valid}, payload {payload:#x}, was {held:#x}")
        self.held[name] = payload if valid and not ready else None


def run(cfg, table, vecs, *, stall=0.0, out_stall=0.0, seed=0, dut=None, phases=None,
        max_cycles=None, table_writes=None, config_writes=()):
    """Run Vecs through a DequantEngine; returns a :class:`Result` (or a list, per phase).

    ``table_writes``: {cycle of the (first) phase: (layer, kv, 4 FP16 thresholds)}, threshold
    writes made while the vectors stream.

    ``config_writes``: [(layer, kv, 4 FP16 bit patterns)], writes made one by one after
    ``table`` and before the vectors (e.g. bad ones, which must not change the table).
    ``status.config_error`` is sampled after each (in the first Result's ``config_flags``)
    and then cleared by ``status.clear``, except after the last write (so that the first
    phase's status shows whether the flag is sticky); the flag after each clear is in
    ``config_cleared``.

    Stream rules on ``o``: once ``valid`` is high in a cycle without ``ready``, it must stay
    high with the same payload in the next cycle. After a phase's last expected output beat,
    ``o.ready`` stays high for ``2 * dut.latency`` cycles, in which ``o.valid`` must stay low
    (no extra beat), and every input beat must have been taken.

    ``phases``: list of (vecs, stall, out_stall) run one after the other in one simulation
    (the engine is built and compiled once); ``status`` is read and cleared after each.
    """
    if dut is None:
        dut = DequantEngine(cfg=cfg)
    if phases is None:
        phases = [(vecs, stall, out_stall)]
    rng = np.random.default_rng(seed)
    q = cfg.quant
    lanes = q.lanes
    hl = header_layout(cfg)
    results = []

    meta_l = dut.meta.payload.shape()
    dense_l = dut.dense.payload.shape()
    sparse_l = dut.sparse.payload.shape()
    out_l = dut.o.payload.shape()

    def pack_fields(layout, **vals):
        v = 0
        for name, val in vals.items():
            f = layout[name]
            v |= (int(val) & ((1 << f.width) - 1)) << f.offset
        return v

    def header_value(v, n):
        h = {"seq": n % cfg.mmu.sequences, "layer": v.layer, "kv": v.kv,
             "head": n % cfg.model.kv_heads, "pos": n % cfg.mmu.max_tokens}
        h.update(v.header_extra)
        return pack_fields(hl, **h), h

    async def tb(ctx):
        # thresholds
        tw = dut.thresholds
        twl = tw.payload.shape()
        tl = twl["t"].shape
        for l in range(cfg.model.layers):
            for kv in range(2):
                t = fp16_bits(table[l, kv]).astype(np.int64)
                tv = pack_fields(tl, o_lo=t[0], i_lo=t[1], i_hi=t[2], o_hi=t[3])
                ctx.set(tw.payload.as_value(), pack_fields(twl, layer=l, kv=kv, t=tv))
                ctx.set(tw.valid, 1)
                while not ctx.get(tw.ready):    # the table's initialisation walk
                    await ctx.tick()
                await ctx.tick()
        ctx.set(tw.valid, 0)
        await ctx.tick()
        assert not ctx.get(dut.status.config_error)
        config_flags, config_cleared = [], []
        for n, (l, kv, bits) in enumerate(config_writes):
            tv = pack_fields(tl, o_lo=bits[0], i_lo=bits[1], i_hi=bits[2], o_hi=bits[3])
            ctx.set(tw.payload.as_value(), pack_fields(twl, layer=l, kv=kv, t=tv))
            ctx.set(tw.valid, 1)
            while not ctx.get(tw.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(tw.valid, 0)
            await ctx.tick()                    # the flag is set the cycle after the write
            config_flags.append(ctx.get(dut.status.config_error))
            if n < len(config_writes) - 1:
                ctx.set(dut.status.clear, 1)
                await ctx.tick()
                ctx.set(dut.status.clear, 0)
                config_cleared.append(ctx.get(dut.status.config_error))

        cycle = 0
        for vecs_p, stall_p, out_stall_p in phases:
            res = Result()
            metas, denses, sparses = [], [], []
            headers = []
            for n, v in enumerate(vecs_p):
                hv, h = header_value(v, n)
                headers.append(h)
                metas.append(pack_fields(meta_l, data=int.from_bytes(v.meta, "little"),
                                         header=hv))
                for d, last in v.dense:
                    denses.append(pack_fields(dense_l, data=d, last=last))
                for d, c, last in v.sparse:
                    dv = int.from_bytes(bytes(d) + bytes(lanes - len(d)), "little")
                    sparses.append(pack_fields(sparse_l, data=dv, count=c, last=last))
            streams = [(dut.meta, metas), (dut.dense, denses), (dut.sparse, sparses)]
            ptr = [0, 0, 0]
            held = [False, False, False]
            cur = []
            want_beats = len(vecs_p) * cfg.beats_per_vector
            got = 0
            start = cycle
            limit = max_cycles or (50 * want_beats + 500)
            drain = 2 * dut.latency     # cycles of ready after the last beat, o.valid low
            stalled = StalledBeats()
            while got < want_beats or drain > 0:
                draining = got == want_beats
                for s, (port, items) in enumerate(streams):
                    if not held[s]:
                        if ptr[s] < len(items) and rng.random() >= stall_p:
                            ctx.set(port.payload.as_value(), items[ptr[s]])
                            ctx.set(port.valid, 1)
                            held[s] = True
                        else:
                            ctx.set(port.valid, 0)
                ready = True if draining else rng.random() >= out_stall_p
                ctx.set(dut.o.ready, ready)
                w = (table_writes or {}).get(cycle - start) if not results else None
                if w is not None:
                    t = fp16_bits(np.asarray(w[2], np.float16)).astype(np.int64)
                    tv = pack_fields(tl, o_lo=t[0], i_lo=t[1], i_hi=t[2], o_hi=t[3])
                    ctx.set(tw.payload.as_value(), pack_fields(twl, layer=w[0], kv=w[1], t=tv))
                ctx.set(tw.valid, w is not None)
                _, _, mr, dr, sr, ov, op = await ctx.tick().sample(
                    dut.meta.ready, dut.dense.ready, dut.sparse.ready, dut.o.valid,
                    dut.o.payload.as_value())
                cycle += 1
                # stream rules: a beat offered without ready is offered again, unchanged
                stalled.check("o", ov, ready, op, f"phase {len(results)}, cycle "
                              f"{cycle - 1 - start} of the phase")
                if draining:
                    drain -= 1
                    assert not ov, (f"extra output beat after the last expected one: phase "
                                    f"{len(results)}, cycle {cycle - 1 - start} of the phase "
                                    f"(payload {op:#x})")
                for s, r in enumerate((mr, dr, sr)):
                    if held[s] and r:
                        if res.first_in is None:
                            res.first_in = cycle - 1
                        ptr[s] += 1
                        held[s] = False
                        if ptr[s] == len(streams[s][1]):
                            res.input_done[s] = cycle - 1
                if ov and ready:
                    if res.first_out is None:
                        res.first_out = cycle - 1
                    res.last_out = cycle - 1
                    res.out_cycles.append(cycle - 1)
                    got += 1
                    if got == want_beats:
                        res.cycles = cycle - start
                    lanes_v = [_bits_of(out_l["data"].offset + 16 * k, 16, op)
                               for k in range(lanes)]
                    cur.append(lanes_v)
                    last = _bits_of(out_l["last"].offset, 1, op)
                    if last or len(cur) == cfg.beats_per_vector:
                        hdr = _bits_of(out_l["header"].offset, hl.size, op)
                        h = {name: _bits_of(hl[name].offset, hl[name].width, hdr)
                             for name in ("seq", "layer", "kv", "head", "pos")}
                        res.outputs.append((np.array(sum(cur, []), np.uint16),
                                            bool(_bits_of(out_l["malformed"].offset, 1, op)),
                                            h, bool(last), len(cur)))
                        cur = []
                if cycle - start > limit:
                    raise AssertionError(f"timeout: {got} of {want_beats} beats after "
                                         f"{cycle - start} cycles")
            for s in range(3):
                ctx.set(streams[s][0].valid, 0)
                assert ptr[s] == len(streams[s][1]), (
                    f"phase {len(results)}: {['meta', 'dense', 'sparse'][s]} input beats "
                    f"{ptr[s]} of {len(streams[s][1])} taken")
            res.out_beats = got
            res.headers = headers
            if not results:
                res.config_flags, res.config_cleared = config_flags, config_cleared
            await ctx.tick()
            cycle += 1
            st = dut.status
            res.status = {name: ctx.get(getattr(st, name)) for name in STATUS_FIELDS}
            ctx.set(st.clear, 1)
            await ctx.tick()
            ctx.set(st.clear, 0)
            cycle += 1
            results.append(res)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results if len(results) > 1 else results[0]


def check(cfg, vecs, res):
    """Assert every output bit, the malformed flags, the headers and the framing."""
    assert len(res.outputs) == len(vecs), (len(res.outputs), len(vecs))
    mism = 0
    first = None
    for n, (v, (data, malformed, h, last, nbeats)) in enumerate(zip(vecs, res.outputs)):
        assert last and nbeats == cfg.beats_per_vector, (n, last, nbeats)
        bad = np.flatnonzero(data != v.expect)
        if len(bad):
            mism += len(bad)
            if first is None:
                k = bad[0]
                first = (n, int(k), hex(int(v.expect[k])), hex(int(data[k])))
        assert malformed == v.malformed, (n, malformed, v.malformed)
        assert h == res.headers[n], (n, h, res.headers[n])
    assert mism == 0, f"{mism} mismatching elements; first (vector, element, want, got): {first}"


def check_clean_status(vecs, res):
    """The status after a phase of well-formed vectors: every vector counted, none
    malformed, no error flag."""
    st = res.status
    assert st["vectors"] == len(vecs), (st["vectors"], len(vecs))
    assert st["malformed"] == 0, st["malformed"]
    raised = {k for k, v in st.items() if k.endswith("_error") and v}
    assert raised == set(), raised


def expect_value_error(make, match):
    """``make()`` raises a ValueError matching ``match``; the half-built component is
    collected here, so that its UnusedElaboratable warning does not leak into other tests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match) as info:
            make()
        del info
        gc.collect()
