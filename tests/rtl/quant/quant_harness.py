"""Simulation harness of the QuantEngine: drive vectors with random stalls on every stream,
collect the three output streams, rebuild the memory image and compare it with the golden
model (``quantize`` + ``pack``) bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from oaken_hw.model.memory_format import pack
from oaken_hw.model.numerics import fp16_bits
from oaken_hw.model.quantizer import quantize
from oaken_hw.rtl.quant import QuantEngine


def _fields(layout):
    return {name: (f.offset, f.width) for name, f in layout}


def _get(raw, fld):
    off, w = fld
    return (raw >> off) & ((1 << w) - 1)


@dataclass
class Run:
    """What the engine produced."""

    dense: np.ndarray                   # (N, dense_bytes) uint8
    sparse: list                        # per vector: bytes
    meta: np.ndarray                    # (N, meta_bytes) uint8
    headers: list                       # per vector: dict
    bad_inputs: list
    in_cycles: list                     # cycle of every input transfer
    dense_cycles: list                  # cycle of every dense transfer
    meta_cycles: list
    status: dict
    first_beats: list = field(default_factory=list)


def header_dict(engine, i, layer, kv):
    g = engine.cfg.model
    return {"seq": i % engine.cfg.mmu.sequences, "layer": layer, "kv": kv,
            "head": i % g.kv_heads, "pos": i % engine.cfg.mmu.max_tokens}


def run_engine(cfg, x, layers, kvs, table, *, stall_in=0.0, stall_out=0.0, seed=0,
               config_writes=(), engine=None, max_cycles=None, clear_at_end=False,
               order=None, pre_reset_cycles=0):
    """Simulate ``x`` (N, V) FP16 through a QuantEngine.

    ``table`` maps (layer, kv) -> four FP16 thresholds written before the vectors;
    ``config_writes`` are extra (layer, kv, 4 x uint16 bits) writes done after the table
    (e.g. bad ones). ``stall_*`` are the probabilities that valid (input) or ready (outputs,
    a float or a dict per stream) is low in a cycle. ``order``: ``"meta_first"`` takes a
    vector's dense and sparse beats only after its meta record, ``"meta_last"`` takes the
    meta record only after all its dense and sparse beats. ``pre_reset_cycles``: random
    traffic for that many cycles, then a reset, before the vectors.
    """
    eng = engine or QuantEngine(cfg=cfg)
    x = np.asarray(x, np.float16)
    n_vec, V = x.shape
    lanes, B = cfg.quant.lanes, cfg.beats_per_vector
    bits = fp16_bits(x).astype(np.int64)
    rng = random.Random(seed)
    hdr_l, in_l = eng.header_layout, eng.in_layout
    hdr_f = _fields(hdr_l)
    in_f = _fields(in_l)

    def pack_header(h):
        return sum(h[k] << hdr_f[k][0] for k in hdr_f)

    beats = []
    headers = []
    for v in range(n_vec):
        h = header_dict(eng, v, int(layers[v]), int(kvs[v]))
        headers.append(h)
        for b in range(B):
            d = 0
            for k in range(lanes):
                d |= int(bits[v, b * lanes + k]) << (16 * k)
            beats.append((pack_header(h) << in_f["header"][0]) | (d << in_f["data"][0]))

    wl = _fields(eng.thresholds.payload.shape())
    # the table first, then the extra writes (a rejected write must not change an entry)
    writes = [(l, kv, [int(b) for b in fp16_bits(np.asarray(t, np.float16))])
              for (l, kv), t in table.items()] + list(config_writes)

    res = {"in": [], "dense": [], "sparse": [], "meta": [], "status": None}
    limit = max_cycles or (400 + 40 * len(beats))

    # an explicit clock domain, so that the bench can drive its reset
    top = Module()
    top.domains.sync = cd_sync = ClockDomain("sync")
    top.submodules.dut = eng

    outs = [(eng.dense, "dense", n_vec * B), (eng.sparse, "sparse", n_vec * B),
            (eng.meta, "meta", n_vec)]
    orngs = {key: random.Random(f"{seed}-{key}") for _, key, _ in outs}

    # stream rules on the outputs: a beat offered (valid) and not taken (ready low) at a
    # clock edge is offered again, unchanged, in the next cycle
    held = {key: None for _, key, _ in outs}

    def stream_rules(ctx, rdy, cycle):
        for port, key, _ in outs:
            v = ctx.get(port.valid)
            pl = ctx.get(port.payload.as_value())
            if held[key] is not None:
                assert v and pl == held[key], (
                    f"cycle {cycle}: {key} " + ("dropped valid" if not v else
                    f"changed its payload {held[key]:#x} -> {pl:#x}") + " while stalled")
            held[key] = pl if v and not rdy[key] else None

    # one process drives every stream: one settle per cycle keeps amaranth.sim fast
    async def write_table(ctx):
        # the table takes no write during its initialisation walk after reset (ready low)
        ticks = 0
        for (l, kv, tb) in writes:
            t = sum(w << (16 * k) for k, w in enumerate(tb))
            raw = (l << wl["layer"][0]) | (kv << wl["kv"][0]) | (t << wl["t"][0])
            ctx.set(eng.thresholds.payload.as_value(), raw)
            ctx.set(eng.thresholds.valid, 1)
            while not ctx.get(eng.thresholds.ready):
                await ctx.tick()
                ticks += 1
            await ctx.tick()
            ticks += 1
        ctx.set(eng.thresholds.valid, 0)
        return ticks

    async def bench(ctx):
        cycle = await write_table(ctx)
        if pre_reset_cycles:
            # garbage traffic, then a reset in the middle of it: the engine must start clean,
            # and the threshold table is back to zeros, so it is written again
            for k in range(pre_reset_cycles):
                ctx.set(eng.i.valid, rng.random() < 0.8)
                ctx.set(eng.i.payload.as_value(), rng.getrandbits(len(eng.i.payload.as_value())))
                rdy = {}
                for port, key, _ in outs:
                    rdy[key] = rng.random() < 0.5
                    ctx.set(port.ready, rdy[key])
                stream_rules(ctx, rdy, cycle + k)
                await ctx.tick()
            ctx.set(eng.i.valid, 0)
            for port, _, _ in outs:
                ctx.set(port.ready, 0)
            ctx.set(cd_sync.rst, 1)
            await ctx.tick()
            ctx.set(cd_sync.rst, 0)
            held.update(dict.fromkeys(held))       # the reset withdraws any offered beat
            cycle += pre_reset_cycles + 1
            cycle += await write_table(ctx)
        idx = 0
        while idx < len(beats) or any(len(res[k]) < c for _, k, c in outs):
            want = idx < len(beats) and rng.random() >= stall_in
            ctx.set(eng.i.valid, want)
            if want:
                ctx.set(eng.i.payload.as_value(), beats[idx])
            rdy = {}
            for port, key, count in outs:
                p = stall_out.get(key, 0.0) if isinstance(stall_out, dict) else stall_out
                rdy[key] = len(res[key]) < count and orngs[key].random() >= p
                # consumers that insist on an order between the streams
                if order == "meta_first" and key != "meta":
                    rdy[key] &= len(res[key]) < B * len(res["meta"])
                if order == "meta_last" and key == "meta":
                    rdy[key] &= B * (len(res["meta"]) + 1) <= min(len(res["dense"]),
                                                                 len(res["sparse"]))
                ctx.set(port.ready, rdy[key])
            fire = want and ctx.get(eng.i.ready)
            stream_rules(ctx, rdy, cycle)
            for port, key, count in outs:
                if rdy[key] and ctx.get(port.valid):
                    res[key].append((ctx.get(port.payload.as_value()), cycle))
            await ctx.tick()
            if fire:
                res["in"].append(cycle)
                idx += 1
            cycle += 1
            assert cycle < limit, f"stalled: {idx} beats in, " + ", ".join(
                f"{k} {len(res[k])}/{c}" for _, k, c in outs)
        ctx.set(eng.i.valid, 0)
        for port, _, _ in outs:
            ctx.set(port.ready, 0)
        # no beat beyond the expected ones: any late one would reach an output within the
        # engine's latency and wait there, ready being low
        for _ in range(2 * eng.latency):
            await ctx.tick()
            assert not any(ctx.get(port.valid) for port, _, _ in outs), "extra output"
        res["status"] = {
            "bad_input": ctx.get(eng.status.bad_input),
            "bad_count": ctx.get(eng.status.bad_count),
            "config_error": ctx.get(eng.status.config_error),
        }
        if clear_at_end:
            ctx.set(eng.status.clear, 1)
            await ctx.tick()
            ctx.set(eng.status.clear, 0)
            res["status_cleared"] = {
                "bad_input": ctx.get(eng.status.bad_input),
                "bad_count": ctx.get(eng.status.bad_count),
                "config_error": ctx.get(eng.status.config_error),
            }

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    # rebuild the memory image
    mb = cfg.quant.middle_bits
    df, sf, mf = _fields(eng.dense_layout), _fields(eng.sparse_layout), _fields(eng.meta_layout)
    dense = np.zeros((n_vec, cfg.dense_bytes), np.uint8)
    sparse = []
    for v in range(n_vec):
        word = 0
        sp = bytearray()
        for b in range(B):
            draw, _ = res["dense"][v * B + b]
            word |= _get(draw, df["data"]) << (b * lanes * mb)
            assert _get(draw, df["first"]) == (b == 0) and _get(draw, df["last"]) == (b == B - 1)
            sraw, _ = res["sparse"][v * B + b]
            cnt = _get(sraw, sf["count"])
            data = _get(sraw, sf["data"])
            assert _get(sraw, sf["first"]) == (b == 0) and _get(sraw, sf["last"]) == (b == B - 1)
            for k in range(lanes):
                byte = (data >> (8 * k)) & 0xFF
                if k < cnt:
                    sp.append(byte)
                else:
                    assert byte == 0, "sparse byte beyond count is not zero"
        dense[v] = np.frombuffer(word.to_bytes(cfg.dense_bytes, "little"), np.uint8)
        sparse.append(bytes(sp))
    meta = np.zeros((n_vec, cfg.meta_bytes), np.uint8)
    mheaders, mbad = [], []
    hl = _fields(hdr_l)
    for v in range(n_vec):
        mraw, _ = res["meta"][v]
        meta[v] = np.frombuffer(_get(mraw, mf["data"]).to_bytes(cfg.meta_bytes, "little"),
                                np.uint8)
        h = _get(mraw, mf["header"])
        mheaders.append({k: _get(h, hl[k]) for k in hl})
        mbad.append(_get(mraw, mf["bad_inputs"]))
    assert mheaders == headers, "headers not passed through"
    run = Run(dense=dense, sparse=sparse, meta=meta, headers=mheaders, bad_inputs=mbad,
              in_cycles=res["in"], dense_cycles=[c for _, c in res["dense"]],
              meta_cycles=[c for _, c in res["meta"]], status=res["status"])
    run.status_cleared = res.get("status_cleared")
    return run


def golden(cfg, x, layers, kvs, table):
    th = np.stack([np.asarray(table[(int(l), int(k))], np.float16)
                   for l, k in zip(layers, kvs)])
    enc = quantize(np.asarray(x, np.float16), th, cfg)
    return enc, pack(enc, cfg)


def check(cfg, x, layers, kvs, table, **kw):
    """Run the engine and assert every output bit equals the golden model; returns the run."""
    run = run_engine(cfg, x, layers, kvs, table, **kw)
    enc, image = golden(cfg, x, layers, kvs, table)
    for v in range(len(x)):
        assert np.array_equal(run.meta[v], image.meta[v]), \
            f"vector {v}: meta {run.meta[v].tolist()} != {image.meta[v].tolist()}"
        assert np.array_equal(run.dense[v], image.dense[v]), \
            f"vector {v}: dense {run.dense[v].tolist()} != {image.dense[v].tolist()}"
        assert run.sparse[v] == bytes(image.vector_sparse(v)), \
            f"vector {v}: sparse {list(run.sparse[v])} != {image.vector_sparse(v).tolist()}"
        assert run.bad_inputs[v] == enc.bad_inputs[v], f"vector {v}: bad_inputs"
    return run
