"""Round trip through both RTL engines: QuantEngine's three output streams fed straight into
DequantEngine must give the golden round trip ``dequantize(unpack(pack(quantize(x))))`` bit
for bit, with random stalls on the input and on the output."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from oaken_hw.calibrate import calibrate
from dequant_harness import SMALL, StalledBeats
from oaken_hw.config import default_config
from oaken_hw.model.kv import to_vectors
from oaken_hw.model.memory_format import pack, unpack
from oaken_hw.model.numerics import fp16_bits
from oaken_hw.model.quantizer import dequantize, quantize

from oaken_hw.rtl import quant
from oaken_hw.rtl.dequant import DequantEngine



def _fields(layout):
    return {name: (f.offset, f.width) for name, f in layout}


def run_roundtrip(cfg, x, where, table, *, stall_in, stall_out, seed):
    """x (N, V) FP16, where [(layer, kv)], table (layers, 2, 4) -> (N, V) uint16 outputs."""
    qe = quant.QuantEngine(cfg=cfg)
    de = DequantEngine(cfg=cfg)
    top = Module()
    top.submodules.q = qe
    top.submodules.d = de
    # the quantization engine's streams carry `first` (and `bad_inputs` on the meta); the
    # dequantization engine frames by `last` only
    for src, dst, names in ((qe.dense, de.dense, ("data", "last")),
                            (qe.sparse, de.sparse, ("data", "count", "last")),
                            (qe.meta, de.meta, ("data", "header"))):
        top.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
        top.d.comb += [getattr(dst.payload, n).eq(getattr(src.payload, n)) for n in names]

    rng = np.random.default_rng(seed)
    lanes, K = cfg.quant.lanes, cfg.beats_per_vector
    bits = fp16_bits(x).astype(np.int64)
    inf, hf = _fields(qe.in_layout), _fields(qe.header_layout)
    beats = []
    for n, (l, kv) in enumerate(where):
        h = (l << hf["layer"][0]) | (kv << hf["kv"][0]) | ((n % cfg.mmu.sequences) << hf["seq"][0])
        for b in range(K):
            d = sum(int(bits[n, b * lanes + k]) << (16 * k) for k in range(lanes))
            beats.append((h << inf["header"][0]) | (d << inf["data"][0]))
    ol = de.o.payload.shape()
    out = []

    async def bench(ctx):
        for eng in (qe, de):
            wl = _fields(eng.thresholds.payload.shape())
            for l in range(cfg.model.layers):
                for kv in range(2):
                    t = sum(int(w) << (16 * k) for k, w in enumerate(fp16_bits(table[l, kv])))
                    ctx.set(eng.thresholds.payload.as_value(),
                            (l << wl["layer"][0]) | (kv << wl["kv"][0]) | (t << wl["t"][0]))
                    ctx.set(eng.thresholds.valid, 1)
                    while not ctx.get(eng.thresholds.ready):    # table initialisation
                        await ctx.tick()
                    await ctx.tick()
            ctx.set(eng.thresholds.valid, 0)
        idx, cycles = 0, 0
        held = False
        stalled = StalledBeats()
        drain = 2 * de.latency          # cycles of ready after the last beat, valid low
        while len(out) < len(beats) or drain > 0:
            draining = len(out) == len(beats)
            if not held and idx < len(beats) and rng.random() >= stall_in:
                ctx.set(qe.i.payload.as_value(), beats[idx])
                ctx.set(qe.i.valid, 1)
                held = True
            elif not held:
                ctx.set(qe.i.valid, 0)
            rdy = True if draining else rng.random() >= stall_out
            ctx.set(de.o.ready, rdy)
            _, _, ir, ov, op = await ctx.tick().sample(qe.i.ready, de.o.valid,
                                                       de.o.payload.as_value())
            if held and ir:
                idx += 1
                held = False
            # stream rules: a beat offered without ready is offered again, unchanged
            stalled.check("o", ov, rdy, op, f"cycle {cycles}")
            if draining:
                drain -= 1
                assert not ov, f"extra output beat after the last one, cycle {cycles}"
            if ov and rdy:
                out.append(op)
            cycles += 1
            assert cycles < 200 * len(beats) + 1000, f"stalled at {len(out)} beats"
        ctx.set(qe.i.valid, 0)
        assert not ctx.get(de.status.malformed)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    d_off = ol["data"].offset
    res = np.array([[(op >> (d_off + 16 * k)) & 0xFFFF for k in range(lanes)] for op in out],
                   np.uint16)
    lasts = [(op >> ol["last"].offset) & 1 for op in out]
    assert lasts == [int(b % K == K - 1) for b in range(len(out))]
    return res.reshape(len(where), cfg.vector_len)


def golden_roundtrip(cfg, x, where, table):
    th = np.stack([table[l, kv] for l, kv in where])
    dec, malformed = unpack(pack(quantize(x, th, cfg), cfg), cfg)
    assert not malformed.any()
    return fp16_bits(dequantize(dec, th, cfg))


@pytest.mark.parametrize("cfg", [default_config(), SMALL], ids=["default", "small"])
def test_quant_engine_into_dequant_engine_equals_the_golden_round_trip(cfg, kv_topics,
                                                                       kv_tutorial):
    rng = np.random.default_rng(31)
    table = np.stack([calibrate(kv_topics["k"]), calibrate(kv_topics["v"])], axis=1)
    xs, where = [], []
    for kv, name in ((0, "k"), (1, "v")):
        x, layer = to_vectors(kv_tutorial[name], cfg)
        pick = rng.choice(len(x), 6, replace=False)
        xs.append(x[pick])
        where += [(int(layer[i]), kv) for i in pick]
    V = cfg.vector_len
    special = rng.standard_normal((2, V)) * 4
    special[0, :6] = [np.nan, np.inf, -np.inf, 65504, -65504, 6e-8]
    special[1] = 0.0                                    # all zero: steps 0
    xs.append(special)
    where += [(0, 0), (1, 1)]
    x = np.concatenate(xs).astype(np.float16)
    want = golden_roundtrip(cfg, x, where, table)
    got = run_roundtrip(cfg, x, where, table, stall_in=0.2, stall_out=0.3, seed=32)
    bad = np.argwhere(got != want)
    assert len(bad) == 0, f"{len(bad)} mismatches, first {bad[0]}: want " \
                          f"{want[tuple(bad[0])]:#06x}, got {got[tuple(bad[0])]:#06x}"
