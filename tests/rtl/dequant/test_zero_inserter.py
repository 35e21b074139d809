"""The ZeroInserter on its own: rows and run lengths against a model, and verdict timing.

The engine tests reach the inserter only through the SparseFramer and the merge; here it
gets entry beats directly: random beat splits (a row spread over several beats, a beat
spanning many rows), empty beats, vectors without entries or with leading empty rows,
random input and output stalls.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from dequant_harness import SMALL, StalledBeats
from oaken_hw.config import default_config
from oaken_hw.rtl.dequant.sparse import ZeroInserter, row_flags


def model_rows(cfg, positions):
    """The rows the inserter emits for one vector: (outlier, outer, high, empty_after)."""
    lanes, K = cfg.quant.lanes, cfg.beats_per_vector
    by_row = {}
    for p, g, h in positions:
        by_row.setdefault(p // lanes, []).append((p % lanes, g, h))
    rows = sorted(by_row)
    out = []
    if not rows or rows[0] > 0:
        out.append((0, 0, 0, (rows[0] if rows else K) - 1))
    for n, r in enumerate(rows):
        o = g = h = 0
        for lane, gb, hb in by_row[r]:
            o |= 1 << lane
            g |= gb << lane
            h |= hb << lane
        nxt = rows[n + 1] if n + 1 < len(rows) else K
        out.append((o, g, h, nxt - r - 1))
    return out


def random_vector(cfg, rng):
    """Increasing positions with group and high bits, split into beats (n, end)."""
    lanes, V = cfg.quant.lanes, cfg.vector_len
    kind = rng.integers(0, 6)
    if kind == 0:
        count = 0
    elif kind == 1:
        count = V                                          # every element
    else:
        count = int(rng.integers(1, V // 3))
    pos = np.sort(rng.choice(V, count, replace=False))
    if kind == 2:                                          # leading empty rows
        pos = pos[pos >= lanes * int(rng.integers(1, max(2, cfg.beats_per_vector)))]
    ents = [(int(p), int(rng.integers(0, 2)), int(rng.integers(0, 2))) for p in pos]
    beats, i = [], 0
    mode = rng.integers(0, 3)
    while i < len(ents):
        if mode == 0:
            n = lanes                                      # full beats
        elif mode == 1:                                    # one beat per row
            r = ents[i][0] // lanes
            n = sum(1 for e in ents[i:] if e[0] // lanes == r)
        else:
            n = int(rng.integers(0, lanes + 1))            # random, empty ones included
        beats.append(ents[i:i + n])
        i += n
    if not beats or rng.random() < 0.3:
        beats.append([])                                   # an empty final beat
    verdict = int(rng.integers(0, 4))
    return ents, beats, verdict


@pytest.mark.parametrize("cfg", [default_config(), SMALL], ids=["default", "small"])
@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("verdict_mode", ["always", "random", "final_row"])
def test_rows_run_lengths_and_verdict_timing(cfg, stall, verdict_mode):
    """``verdict_mode``: ``verdict.ready`` always high (then the verdict timing is checked);
    random, in stretches of mostly low and mostly high (the verdict FIFO fills, and the row
    stage must wait for room); or, as the engine's merge does, ``o.ready`` only while a
    verdict is valid and ``verdict.ready`` only with the transfer of a vector's final row."""
    rng = np.random.default_rng(7 + int(stall * 10))
    vrng = np.random.default_rng(70 + int(stall * 10))
    dut = ZeroInserter(cfg=cfg, depth=2 * cfg.beats_per_vector + 8, vectors=5)
    vecs = [random_vector(cfg, rng) for _ in range(60)]
    il = dut.i.payload.shape()
    el = il["entry"].shape.elem_shape

    def beat_value(ents, end, verdict):
        v = 0
        for j, (p, g, h) in enumerate(ents):
            e = (p << el["pos"].offset) | (g << el["outer"].offset) | (h << el["high"].offset)
            v |= e << (il["entry"].offset + j * el.size)
        v |= ((1 << len(ents)) - 1) << il["val"].offset
        # the framer's row flags: of the beat's bytes (here its entries; the bytes after
        # them read as position 0)
        rows = [p // cfg.quant.lanes for p, _, _ in ents]
        rows += [0] * (cfg.quant.lanes - len(rows))
        rf = il["rows"].shape
        for name, x in row_flags(rows, max(0, len(ents) - 1)).items():
            v |= x << (il["rows"].offset + rf[name].offset)
        v |= int(end) << il["end"].offset
        v |= (verdict & 1) << il["order"].offset
        v |= (verdict >> 1) << il["sparse"].offset
        return v

    beats = []
    for _, bs, verdict in vecs:
        for k, b in enumerate(bs):
            last = k == len(bs) - 1
            beats.append(beat_value(b, last, verdict if last else 0))
    want = [model_rows(cfg, ents) for ents, _, _ in vecs]
    rl = dut.o.payload.shape()
    got_rows, row_cycles, verdicts, verdict_cycles = [], [], [], []

    # index (in the whole row stream) of every vector's final row
    final_rows = set(np.cumsum([len(w) for w in want]) - 1)
    full_cycles = []                     # cycles in which verdict.valid is high, not ready

    async def tb(ctx):
        i, cycle = 0, 0
        n_rows = sum(len(w) for w in want)
        stalled = StalledBeats()
        drain = 40                            # cycles of ready after the end, valid low
        vlow = False                          # random mode: in a mostly-low stretch
        while len(got_rows) < n_rows or len(verdicts) < len(vecs) or drain > 0:
            draining = len(got_rows) == n_rows and len(verdicts) == len(vecs)
            if i < len(beats) and rng.random() >= stall:
                ctx.set(dut.i.payload.as_value(), beats[i])
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            ready = rng.random() >= stall
            if verdict_mode == "always" or draining:
                vready = True
            elif verdict_mode == "random":
                if vrng.random() < 0.03:
                    vlow = not vlow
                vready = vrng.random() < (0.02 if vlow else 0.8)
            else:
                # the merge: a row only with its vector's verdict, which goes with the
                # vector's final row
                ready = ready and bool(ctx.get(dut.verdict.valid))
                vready = (ready and bool(ctx.get(dut.o.valid))
                          and len(got_rows) in final_rows)
            if draining:
                ready = True
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.verdict.ready, vready)
            _, _, iv, ir, ov, op, vv, vp = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.payload.as_value(),
                dut.verdict.valid, dut.verdict.payload)
            if iv and ir:
                i += 1
            # stream rules: a payload offered without ready is offered again, unchanged
            for name, v, r, pl in (("o", ov, ready, op), ("verdict", vv, vready, vp)):
                stalled.check(name, v, r, pl, f"cycle {cycle}")
            if draining:
                drain -= 1
                assert not ov and not vv, f"extra row or verdict after the end, cycle {cycle}"
            if vv and not vready:
                full_cycles.append(cycle)
            if ov and ready:
                f = lambda name: (op >> rl[name].offset) & ((1 << rl[name].width) - 1)
                got_rows.append((f("outlier"), f("outer"), f("high"), f("empty_after")))
                row_cycles.append(cycle)
            if vv and vready:
                verdicts.append(vp)
                verdict_cycles.append(cycle)
            cycle += 1
            assert cycle < 200 * len(beats) + 1000, "timeout"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()

    k = 0
    for n, w in enumerate(want):
        assert got_rows[k:k + len(w)] == w, n
        assert sum(r[3] + 1 for r in w) == cfg.beats_per_vector
        assert verdicts[n] == vecs[n][2], n
        if stall == 0.0 and verdict_mode == "always":
            # from the verdict on, the vector's rows come at least one per cycle
            for i, c in enumerate(row_cycles[k:k + len(w)]):
                assert c <= verdict_cycles[n] + i, (n, i, c, verdict_cycles[n])
        k += len(w)
    assert len(got_rows) == k and len(verdicts) == len(vecs)
    if verdict_mode != "always":
        assert full_cycles, "verdict.ready was never low with a verdict waiting"
