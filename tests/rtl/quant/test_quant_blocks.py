"""The quantization engine's sub-blocks against the golden model's functions."""

import gc
import itertools
import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.sim import Simulator

from oaken_hw.model.memory_format import pack
from oaken_hw.model.numerics import fp16_bits, fp16_to_units
from oaken_hw.model.quantizer import (INNER, MIDDLE, OUTER, Encoded, classify, middle_split,
                                      step_for)
from oaken_hw.rtl.quant import Classifier, Encoder, Extents, GroupShift, Packer, Scale
from oaken_hw.rtl.quant.scale import split_reference

BIG = (1 << 41) - 1


def _bits(units):
    return int(fp16_bits(np.ldexp(np.float64(units), -24).astype(np.float16)))


@pytest.mark.parametrize("codes", [4, 8, 16, 32])
def test_split_reference_exhaustive_small(codes):
    """The two-candidate split equals the model's argmin for every small extent pair."""
    a, b, lo, hi = [], [], [], []
    for x, y, hl, hh in itertools.product(range(40), range(40), (0, 1), (0, 1)):
        if (x and not hl) or (y and not hh):
            continue
        a.append(x); b.append(y); lo.append(hl); hi.append(hh)
    n, e, l = middle_split(a, b, lo, hi, codes)
    for k in range(len(a)):
        assert split_reference(a[k], b[k], lo[k], hi[k], codes) == (n[k], e[k], l[k])


def test_split_reference_random_large():
    rng = np.random.default_rng(11)
    N = 50000
    a = rng.integers(0, 1 << 41, N)
    b = np.where(rng.random(N) < 0.5, rng.integers(0, 1 << 41, N),
                 a * rng.integers(1, 64, N) // rng.integers(1, 64, N))
    b = np.minimum(b, BIG)
    lo, hi = rng.random(N) < 0.9, rng.random(N) < 0.9
    a, b = np.where(lo, a, 0), np.where(hi, b, 0)
    for codes in (16, 128):
        n, e, l = middle_split(a, b, lo, hi, codes)
        for k in range(0, N, 7):
            assert split_reference(int(a[k]), int(b[k]), bool(lo[k]), bool(hi[k]), codes) \
                == (n[k], e[k], l[k])


def _scale_cases(rng, n):
    pick = lambda: rng.choice([rng.randrange(1 << 41), rng.randrange(4), rng.randrange(1 << 20),
                               BIG, 1 << rng.randrange(41), rng.randrange(2048)])
    cases = [(0, 0, 0, 0, 0, 0), (0, 0, 1, 1, 0, 0), (BIG, BIG, 1, 1, BIG, BIG),
             (BIG, 0, 1, 0, 0, 1), (0, BIG, 0, 1, 1, 0), (1, 0, 1, 1, 0, 0), (0, 1, 1, 1, 0, 0)]
    # ceilings with 11 leading ones and more bits: the round-up carries into a new top bit
    # (the inner and outer reciprocals for 16 codes are exact: 2^20 / 32 and 2^20 / 16)
    for k in (1, 7, 20):
        c = (2047 << k) + 1
        cases.append((c * 16, c * 8, 1, 1, c * 16, c * 32))
    for _ in range(n):
        hl, hh = rng.random() < 0.85, rng.random() < 0.85
        a = pick() if hl else 0
        b = pick() if hh else 0
        if rng.random() < 0.3 and hl and hh:
            b = a * rng.randrange(1, 40) // rng.randrange(1, 40)   # near a crossover
        cases.append((a, min(b, BIG), int(hl), int(hh), pick(), pick()))
    return cases


@pytest.mark.parametrize("middle_bits", [4, 3])
def test_scale_matches_model(middle_bits):
    codes = 1 << middle_bits
    dut = Scale(middle_bits=middle_bits, tag_width=12)
    cases = _scale_cases(random.Random(middle_bits), 400)
    want = []
    for a, b, hl, hh, o, i in cases:
        n, e, l = middle_split(a, b, bool(hl), bool(hh), codes)
        want.append((int(n), _bits(step_for(e, l)), _bits(step_for(i, 2 * codes)),
                     _bits(step_for(o, codes))))
    got, tags = [], []

    async def bench(ctx):
        sent_at = []
        cycle = 0
        queue = list(range(len(cases)))
        while len(got) < len(cases):
            send = bool(queue) and cycle % 4 != 3
            if send:
                a, b, hl, hh, o, i = cases[queue[0]]
                for port, v in ((dut.a, a), (dut.b, b), (dut.has_lo, hl), (dut.has_hi, hh),
                                (dut.outer_max, o), (dut.inner_ext, i), (dut.tag, queue[0])):
                    ctx.set(port, v)
                sent_at.append(cycle)
                queue.pop(0)
            ctx.set(dut.valid, send)
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.o_valid):
                got.append((ctx.get(dut.n_lo), ctx.get(dut.delta_mid),
                            ctx.get(dut.delta_inner), ctx.get(dut.delta_outer)))
                tags.append(ctx.get(dut.o_tag))
                assert cycle - sent_at[len(got) - 1] == dut.latency
            assert cycle < 3 * len(cases) + 20

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert tags == list(range(len(cases)))
    for k, c in enumerate(cases):
        assert got[k] == want[k], c


def _key(bits):
    """The order key of an FP16 bit pattern (as ``fp16_key``)."""
    bits = int(bits)
    mag = bits & 0x7FFF
    return (~mag) & 0x7FFF if bits >> 15 and mag else 0x8000 | mag


def test_classifier_and_group_shift_match_model():
    lanes = 8
    cls = Classifier(lanes=lanes)
    gs = GroupShift(lanes=lanes)
    m = Module()
    m.submodules.cls, m.submodules.gs = cls, gs
    rng = np.random.default_rng(5)
    sets = [[-2, -0.1, 0.1, 2], [0, 0, 0, 0], [-1, 0.25, 0.25, 1], [0.5, 1, 1.5, 3],
            [-65504, -65504, 65504, 65504], [0, 0, 0, 2], [-2, 0.5, 0.5, 0.5],
            [-0.0, -0.0, 0, 1], [-1, -0.0, -0.0, -0.0]]
    vals = np.concatenate([rng.standard_normal(200) * 2, [0, -65504, 65504, 0.1, -0.1, 2, -2,
                                                          0.25, 1, 3, 0.5, 1.5, 6e-8, -6e-8]])
    trials = []
    for t in sets:
        th = np.array(t, np.float16)
        tu = fp16_to_units(th)
        xs16 = vals.astype(np.float16)
        for k in range(0, len(xs16), lanes):
            chunk16 = np.resize(xs16[k:k + lanes], lanes)
            chunk = fp16_to_units(chunk16)
            g, u = classify(chunk[None, :], tu[None, :])
            inner = chunk[g[0] == INNER]
            imin = int(inner.min()) if len(inner) else 0
            pivot = np.select([(g == MIDDLE) & ~u, (g == MIDDLE) & u, (g == OUTER) & ~u,
                               g == OUTER], [tu[1], tu[2], tu[0], tu[3]], default=imin)
            trials.append((th, tu, chunk16, chunk, imin, g[0], u[0],
                           np.abs(chunk - pivot)[0]))

    async def bench(ctx):
        for th, tu, chunk16, chunk, imin, g, u, mag in trials:
            for k in range(4):
                ctx.set(cls.t[k], _key(th.view(np.uint16)[k]))
            for i in range(lanes):
                ctx.set(cls.x[i], _key(chunk16.view(np.uint16)[i]))
                ctx.set(gs.x_mag[i], abs(int(chunk[i])))
                ctx.set(gs.x_neg[i], int(chunk[i] < 0))
                ctx.set(gs.group[i], int(g[i]))
                ctx.set(gs.upper[i], int(u[i]))
            for k, v in enumerate([tu[0], tu[1], -tu[2], -tu[3], -imin]):
                ctx.set(gs.p[k], int(v))
            for i in range(lanes):
                assert ctx.get(cls.group[i]) == g[i]
                assert ctx.get(cls.upper[i]) == u[i]
                assert ctx.get(gs.mag[i]) == mag[i]

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def _levels(group, upper, n_lo, codes):
    return (2 * codes if group == INNER else codes if group == OUTER
            else (codes - n_lo if upper else n_lo))


def _model_codes(mag, group, upper, n_lo, deltas, mb):
    codes = 1 << mb
    d = deltas[0] if group == MIDDLE else deltas[1] if group == INNER else deltas[2]
    levels = _levels(group, upper, n_lo, codes)
    j = 0 if d == 0 else min(mag // d, levels - 1)
    code = (n_lo + j if upper else n_lo - 1 - j) if group == MIDDLE else j
    high = int(upper) if group == OUTER else (code >> mb if group == INNER else 0)
    return code & (codes - 1), high


@pytest.mark.parametrize("mb", [2, 4, 7])
def test_encoder_matches_model(mb):
    """Magnitudes up to the precondition ``levels * step`` (the engine's steps cover their
    extents), around every quotient, including ``levels`` itself (clamped)."""
    lanes = 4
    dut = Encoder(lanes=lanes, middle_bits=mb)
    rng = random.Random(9)
    step_pool = [0, 1, 2, 3, 1023, 1024, 2047, 3 << 20, 2047 << 29, 5 << 12, 1 << 35]
    trials = []
    for _ in range(300):
        deltas = [rng.choice(step_pool) for _ in range(3)]
        n_lo = rng.randrange(1, 1 << mb)
        lanes_in = []
        for _ in range(lanes):
            g = rng.choice([MIDDLE, INNER, OUTER])
            u = rng.random() < 0.5 if g != INNER else False
            d = deltas[0] if g == MIDDLE else deltas[1] if g == INNER else deltas[2]
            levels = _levels(g, u, n_lo, 1 << mb)
            top = min(levels * d, (1 << 41) - 1)        # |x - pivot| < 2^41
            q = rng.randrange(0, levels + 1)
            mag = rng.choice([rng.randrange(top + 1), d * q, d * q - 1, d * q + 1, 0, top])
            mag = min(max(mag, 0), top)
            lanes_in.append((g, u, mag))
        trials.append((deltas, n_lo, lanes_in))

    async def bench(ctx):
        for k in range(len(trials) + dut.latency):
            if k < len(trials):
                deltas, n_lo, lanes_in = trials[k]
                ctx.set(dut.delta_mid, _bits(deltas[0]))
                ctx.set(dut.delta_inner, _bits(deltas[1]))
                ctx.set(dut.delta_outer, _bits(deltas[2]))
                ctx.set(dut.n_lo, n_lo)
                for i, (g, u, mag) in enumerate(lanes_in):
                    ctx.set(dut.group[i], g); ctx.set(dut.upper[i], u); ctx.set(dut.mag[i], mag)
            ctx.set(dut.en, 1)
            await ctx.tick()
            # a stall cycle: outputs must hold
            ctx.set(dut.en, 0)
            before = [ctx.get(dut.dense[i]) for i in range(lanes)]
            await ctx.tick()
            assert before == [ctx.get(dut.dense[i]) for i in range(lanes)]
            if k >= dut.latency - 1 and k - (dut.latency - 1) < len(trials):
                deltas, n_lo, lanes_in = trials[k - (dut.latency - 1)]
                for i, (g, u, mag) in enumerate(lanes_in):
                    dense, high = _model_codes(mag, g, u, n_lo, deltas, mb)
                    assert ctx.get(dut.dense[i]) == dense, (deltas, n_lo, g, u, mag)
                    assert ctx.get(dut.high[i]) == high
                    assert ctx.get(dut.outlier[i]) == (g != MIDDLE)
                    assert ctx.get(dut.outer[i]) == (g == OUTER)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


#: the Packer's register stages (its documented ``latency``): the outputs after the n-th
#: enabled clock edge are those of the beat presented at the (n - 2)-th
PACKER_DEPTH = 2


def _packer_reference(trials, lanes, mb, block):
    """What the golden model's :func:`pack` makes of each beat: the beat placed at its
    position in a one-block vector (the other elements middle), its sparse bytes and its
    slice of the dense string."""
    n = len(trials)
    group = np.full((n, block), MIDDLE, np.uint8)
    high = np.zeros((n, block), np.uint8)
    dense = np.zeros((n, block), np.uint8)
    for t, (bib, out, outer, hi, d) in enumerate(trials):
        sl = slice(bib * lanes, (bib + 1) * lanes)
        out = np.array(out, bool)
        group[t, sl] = np.where(out, np.where(outer, OUTER, INNER), MIDDLE)
        high[t, sl] = out & np.array(hi, bool)          # the model's high is 0 for middle
        dense[t, sl] = d
    z16, z8 = np.zeros(n, np.uint16), np.zeros(n, np.uint8)
    enc = Encoded(group=group, dense=dense, high=high, delta_mid=z16, delta_inner=z16,
                  delta_outer=z16, inner_min=z16, n_lo=z8, bad_inputs=np.zeros(n, np.int64))
    q = SimpleNamespace(middle_bits=mb, sparse_block=block,
                        index_bits=block.bit_length() - 1)
    image = pack(enc, SimpleNamespace(quant=q))
    want = []
    for t, (bib, *_rest) in enumerate(trials):
        sp = [int(b) for b in image.vector_sparse(t)]
        word = int.from_bytes(image.dense[t].tobytes(), "little")
        want.append((len(sp), sp + [0] * (lanes - len(sp)),
                     (word >> (bib * lanes * mb)) & ((1 << (lanes * mb)) - 1)))
    return want


@pytest.mark.parametrize("lanes, block, mb", [(8, 64, 4), (4, 4, 3), (16, 16, 5), (2, 16, 3)])
def test_packer_compacts_in_index_order(lanes, block, mb):
    """A different random beat on the inputs every cycle and a random ``en``: after each
    edge the outputs are the golden packing of the beat presented PACKER_DEPTH enabled
    edges before (zeros until then); an ``en=0`` edge changes no output, and the beats
    presented on it are never taken."""
    dut = Packer(lanes=lanes, middle_bits=mb, sparse_block=block)
    assert dut.latency == PACKER_DEPTH
    rng = random.Random(lanes * 100 + mb)
    bpb = block // lanes
    trials, ens = [], []
    for _ in range(400):
        p = rng.choice([0.0, 0.1, 0.5, 1.0])
        trials.append((rng.randrange(bpb), [rng.random() < p for _ in range(lanes)],
                       [rng.random() < 0.5 for _ in range(lanes)],
                       [rng.random() < 0.5 for _ in range(lanes)],
                       [rng.randrange(1 << mb) for _ in range(lanes)]))
        ens.append(rng.random() < rng.choice([0.3, 0.7, 1.0]))
    ref = _packer_reference(trials, lanes, mb, block)
    idle = (0, [0] * lanes, 0)

    def outputs(ctx):
        return (ctx.get(dut.count), [ctx.get(dut.sparse[k]) for k in range(lanes)],
                ctx.get(dut.dense_word))

    async def bench(ctx):
        taken = []                    # trials presented on enabled edges
        before = outputs(ctx)
        assert before == idle
        for c, ((bib, out, outer, high, dense), en) in enumerate(zip(trials, ens)):
            ctx.set(dut.beat_in_block, bib)
            for i in range(lanes):
                ctx.set(dut.outlier[i], out[i]); ctx.set(dut.outer[i], outer[i])
                ctx.set(dut.high[i], high[i]); ctx.set(dut.dense[i], dense[i])
            ctx.set(dut.en, en)
            await ctx.tick()
            if en:
                taken.append(c)
            got = outputs(ctx)
            if not en:
                assert got == before, f"cycle {c}: outputs changed on an en=0 edge"
            e = len(taken)
            want = ref[taken[e - PACKER_DEPTH]] if e >= PACKER_DEPTH else idle
            assert got == want, f"cycle {c}, enabled edge {e}"
            before = got
        assert len(taken) > 100 and ens.count(False) > 50

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cls, kw, name", [
    (Scale, {"middle_bits": 9}, "middle_bits"),
    (Scale, {"middle_bits": 4, "tag_width": 0}, "tag_width"),
    (Encoder, {"lanes": 0, "middle_bits": 4}, "lanes"),
    (Packer, {"lanes": 8, "middle_bits": 4, "sparse_block": 12}, "sparse_block"),
    (Extents, {"lanes": 16, "beats": 12, "sparse_block": 8}, "sparse_block"),
    (Classifier, {"lanes": -1}, "lanes"),
])
def test_blocks_validate_parameters(cls, kw, name):
    expect_value_error(lambda: cls(**kw), name)


def expect_value_error(make, name):
    """``make()`` raises a ValueError naming ``name`` (and the half-built component is
    collected here, so its UnusedElaboratable warning does not leak into other tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=name) as info:
            make()
        del info
        gc.collect()
