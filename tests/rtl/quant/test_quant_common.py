"""rtl/common: FP16 conversion and the threshold table against the golden model."""

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module, Signal, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from oaken_hw.model.numerics import fp16_bits, fp16_from_bits, fp16_to_units, sanitize
from oaken_hw.model.quantizer import check_thresholds
from oaken_hw.rtl.common import FP16ToUnits, ThresholdTable
from oaken_hw.rtl.common.fp16 import bit_length, smear_down
from oaken_hw.rtl.common.shift import below, rotate_left, rotate_right, shift_right


def _patterns():
    rng = random.Random(3)
    pats = {0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
            0x7C01, 0xFE00, 0x7FFF, 0xFFFF, 0x3C00, 0xBC00}
    for e in range(32):
        for s in (0, 1):
            for man in (0, 1, 0x155, 0x3FF, rng.randrange(1024), rng.randrange(1024)):
                pats.add(s << 15 | e << 10 | man)
    return sorted(pats)


def test_fp16_to_units_matches_model():
    dut = FP16ToUnits()
    pats = _patterns()
    x = fp16_from_bits(np.array(pats, np.uint16))
    clean, bad = sanitize(x)
    want_units = fp16_to_units(clean)
    want_clean = fp16_bits(clean)
    got = []

    async def bench(ctx):
        for p in pats:
            ctx.set(dut.i, p)
            got.append((ctx.get(dut.clean), ctx.get(dut.units), ctx.get(dut.bad)))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    for k, p in enumerate(pats):
        assert got[k] == (int(want_clean[k]), int(want_units[k]), int(bad[k])), hex(p)


class _BitLength(wiring.Component):
    x: In(48)
    n: Out(6)
    mask: Out(48)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.n.eq(bit_length(self.x)), self.mask.eq(smear_down(self.x))]
        return m


def test_bit_length_and_smear_down():
    """The log-depth encoders against Python's int.bit_length on corners and random words."""
    rng = np.random.default_rng(3)
    xs = [0, 1, 2, 3, (1 << 48) - 1, 1 << 47] + [1 << k for k in range(48)] \
        + [(1 << k) - 1 for k in range(1, 48)] \
        + [int(v) >> int(s) for v, s in zip(rng.integers(0, 1 << 48, 200, dtype=np.uint64),
                                             rng.integers(0, 48, 200))]
    dut = _BitLength()

    async def bench(ctx):
        for x in xs:
            ctx.set(dut.x, x)
            n = x.bit_length()
            assert ctx.get(dut.n) == n, hex(x)
            assert ctx.get(dut.mask) == (1 << n) - 1, hex(x)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


class _Shifts(wiring.Component):
    """Every (input width, amount width, result width) the engines use, and odd ones."""
    GEOMETRIES = [(41, 5, 16), (43, 6, 12), (26, 5, 12), (7, 4, 3), (5, 3, 9), (11, 2, 11),
                  (34, 6, 13), (20, 6, 20)]

    def __init__(self):
        ports = {}
        for k, (w, a, r) in enumerate(self.GEOMETRIES):
            ports |= {f"x{k}": In(w), f"a{k}": In(a), f"r{k}": Out(r), f"m{k}": Out(w)}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for k, (w, _, r) in enumerate(self.GEOMETRIES):
            x, a = getattr(self, f"x{k}"), getattr(self, f"a{k}")
            m.d.comb += [getattr(self, f"r{k}").eq(shift_right(x, a, r)),
                         getattr(self, f"m{k}").eq(below(a, w))]
        return m


def test_shift_right_matches_python():
    """`shift_right` (the level-by-level barrel shifter) against Python's
    ``(x >> a) & mask``: every amount, all-ones, single bits and random inputs; and the
    thermometer mask `below` against ``2^min(a, width) - 1``."""
    dut = _Shifts()
    rng = random.Random(5)

    async def bench(ctx):
        for k, (w, aw, r) in enumerate(dut.GEOMETRIES):
            xs = [0, (1 << w) - 1, 1, 1 << (w - 1)] + [rng.randrange(1 << w) for _ in range(12)]
            for x in xs:
                for a in range(1 << aw):
                    ctx.set(getattr(dut, f"x{k}"), x)
                    ctx.set(getattr(dut, f"a{k}"), a)
                    mask = (1 << r) - 1
                    assert ctx.get(getattr(dut, f"r{k}")) == (x >> a) & mask, (k, x, a)
                    assert ctx.get(getattr(dut, f"m{k}")) == (1 << min(a, w)) - 1, (k, a)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


class _Rotations(wiring.Component):
    """8 units of 3 bits (one byte queue's store in miniature) and 2 units of 1 bit."""
    GEOMETRIES = [(8, 3), (2, 1)]

    def __init__(self):
        ports = {}
        for k, (n, u) in enumerate(self.GEOMETRIES):
            ports |= {f"x{k}": In(n * u), f"a{k}": In(n.bit_length() - 1),
                      f"r{k}": Out(n * u), f"l{k}": Out(n * u)}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for k, (_, u) in enumerate(self.GEOMETRIES):
            x, a = getattr(self, f"x{k}"), getattr(self, f"a{k}")
            m.d.comb += [getattr(self, f"r{k}").eq(rotate_right(x, a, u)),
                         getattr(self, f"l{k}").eq(rotate_left(x, a, u))]
        return m


def test_rotations_match_python():
    """`rotate_right` / `rotate_left` against a rotated Python list of units, every amount;
    a width that is not a power of two of units is a ValueError."""
    dut = _Rotations()
    rng = random.Random(6)

    async def bench(ctx):
        for k, (n, u) in enumerate(dut.GEOMETRIES):
            for _ in range(20):
                units = [rng.randrange(1 << u) for _ in range(n)]
                ctx.set(getattr(dut, f"x{k}"), sum(v << (u * i) for i, v in enumerate(units)))
                for a in range(n):
                    ctx.set(getattr(dut, f"a{k}"), a)
                    right = ctx.get(getattr(dut, f"r{k}"))
                    left = ctx.get(getattr(dut, f"l{k}"))
                    mask = (1 << u) - 1
                    for i in range(n):
                        assert (right >> (u * i)) & mask == units[(i + a) % n], (k, a, i)
                        assert (left >> (u * ((i + a) % n))) & mask == units[i], (k, a, i)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match=r"rotate_right needs 2 \*\* 3 units of 8 bits"):
        rotate_right(Signal(7 * 8), Signal(3), 8)


def _write(ctx, dut, layer, kv, bits):
    raw = layer | kv << dut.write.payload.shape()["kv"].offset
    raw |= sum(b << (16 * k) for k, b in enumerate(bits)) << dut.write.payload.shape()["t"].offset
    ctx.set(dut.write.payload.as_value(), raw)
    ctx.set(dut.write.valid, 1)


async def _read_all(ctx, dut, port=0):
    """Every entry through read port ``port``: {(layer, kv): [o_lo, i_lo, i_hi, o_hi]}."""
    got = {}
    for l in range(dut.layers):
        for kv in range(2):
            ctx.set(dut.read[port].en, 1)
            ctx.set(dut.read[port].layer, l)
            ctx.set(dut.read[port].kv, kv)
            await ctx.tick()
            ctx.set(dut.read[port].en, 0)
            d = ctx.get(dut.read[port].data)
            got[(l, kv)] = [d.o_lo, d.i_lo, d.i_hi, d.o_hi]
    return got


async def _initialise(ctx, dut, pending=None):
    """The walk after reset: ``ready`` and ``write.ready`` low for ``init_cycles`` cycles
    (a write offered meanwhile, ``pending``, is not taken and sets no error), reads during
    the walk return zero on every entry; then ``ready`` rises."""
    assert dut.init_cycles == 2 * dut.layers
    for k in range(dut.init_cycles):
        if pending is not None:
            _write(ctx, dut, *pending)
        assert not ctx.get(dut.ready) and not ctx.get(dut.write.ready), k
        # read port 0 walks the entries backwards: ahead of the walk, still zero
        e = 2 * dut.layers - 1 - k
        ctx.set(dut.read[0].en, 1)
        ctx.set(dut.read[0].layer, e // 2)
        ctx.set(dut.read[0].kv, e % 2)
        await ctx.tick()
        d = ctx.get(dut.read[0].data)
        assert [d.o_lo, d.i_lo, d.i_hi, d.o_hi] == [0] * 4, (k, e)
        assert not ctx.get(dut.error)
    ctx.set(dut.read[0].en, 0)
    ctx.set(dut.write.valid, 0)
    assert ctx.get(dut.ready) and ctx.get(dut.write.ready)


def _valid_thresholds(t):
    try:
        check_thresholds(fp16_from_bits(np.array(t, np.uint16)))
        return True
    except ValueError:
        return False


def test_threshold_table_writes_reads_and_rejects():
    layers = 5
    dut = ThresholdTable(layers=layers, read_ports=2)
    rng = np.random.default_rng(7)
    model = {(l, kv): [0, 0, 0, 0] for l in range(layers) for kv in range(2)}
    specials = [0x7C00, 0xFC00, 0x7E00, 0x7C01]            # inf, -inf, nan
    writes = []
    for _ in range(120):
        l, kv = int(rng.integers(0, layers + 2)), int(rng.integers(0, 2))  # some out of range
        t = np.sort(rng.standard_normal(4) * 3).astype(np.float16)
        bits = [int(b) for b in fp16_bits(t)]
        k = rng.integers(0, 6)
        if k == 0:
            bits[rng.integers(0, 4)] = specials[rng.integers(0, 4)]
        elif k == 1:
            bits = bits[::-1]                                   # wrong order
        elif k == 2:
            bits = [0x8000, 0x0000, 0x8000, 0x0000]             # -0 == +0: valid
        writes.append((l, kv, bits))
    errors_seen = []

    async def bench(ctx):
        await _initialise(ctx, dut)
        for l, kv, bits in writes:
            ok = l < layers and _valid_thresholds(bits)
            ctx.set(dut.clear_error, 1)
            await ctx.tick()
            ctx.set(dut.clear_error, 0)
            assert ctx.get(dut.error) == 0
            _write(ctx, dut, l, kv, bits)
            # a read in the write's own cycle returns the entry before the write (it is
            # stored a cycle later; every read after that returns it, below)
            ctx.set(dut.read[1].en, 1)
            ctx.set(dut.read[1].layer, l)
            ctx.set(dut.read[1].kv, kv)
            await ctx.tick()
            ctx.set(dut.write.valid, 0)
            ctx.set(dut.read[1].en, 0)
            d = ctx.get(dut.read[1].data)
            assert [d.o_lo, d.i_lo, d.i_hi, d.o_hi] == model.get((l, kv), [0] * 4), (l, kv)
            assert ctx.get(dut.error) == (not ok)
            errors_seen.append(not ok)
            if ok:
                model[(l, kv)] = bits
            # read every entry on both ports, and layers beyond the table (zeros: the
            # golden model's thresholds for a vector whose append the MMU refuses)
            beyond = {(ml, mkv): [0] * 4 for ml in (layers, (1 << len(dut.read[0].layer)) - 1)
                      for mkv in range(2)}
            for (ml, mkv), want in {**model, **beyond}.items():
                for p in range(2):
                    ctx.set(dut.read[p].en, 1)
                    ctx.set(dut.read[p].layer, ml)
                    ctx.set(dut.read[p].kv, mkv)
                await ctx.tick()
                for p in range(2):
                    d = ctx.get(dut.read[p].data)
                    got = [d.o_lo, d.i_lo, d.i_hi, d.o_hi]
                    assert got == want, (ml, mkv)
                    ctx.set(dut.read[p].en, 0)
            # the error is sticky
            await ctx.tick()
            assert ctx.get(dut.error) == (not ok)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert any(errors_seen) and not all(errors_seen)


def test_threshold_table_reset_mid_run_reads_zeros():
    """A reset after writes (with a write offered at that moment) returns the table to its
    power-up state: the walk zeroes every entry, reads give zeros on both ports, and the
    table then takes writes again."""
    layers = 3
    dut = ThresholdTable(layers=layers, read_ports=2)
    top = Module()
    top.domains.sync = cd_sync = ClockDomain("sync")
    top.submodules.dut = dut
    rng = np.random.default_rng(11)
    tables = [{(l, kv): [int(b) for b in fp16_bits(np.sort(rng.standard_normal(4))
                                                    .astype(np.float16))]
               for l in range(layers) for kv in range(2)} for _ in range(2)]
    zeros = {(l, kv): [0] * 4 for l in range(layers) for kv in range(2)}

    async def bench(ctx):
        await _initialise(ctx, dut)
        assert await _read_all(ctx, dut) == zeros
        for (l, kv), bits in tables[0].items():
            _write(ctx, dut, l, kv, bits)
            await ctx.tick()
        ctx.set(dut.write.valid, 0)
        assert await _read_all(ctx, dut, 1) == tables[0]
        # a rejected write, so that the sticky error is set before the reset
        _write(ctx, dut, 0, 0, [0x3C00, 0, 0, 0])
        await ctx.tick()
        assert ctx.get(dut.error)
        _write(ctx, dut, 1, 1, tables[1][(1, 1)])
        ctx.set(cd_sync.rst, 1)
        await ctx.tick()
        ctx.set(cd_sync.rst, 0)
        assert not ctx.get(dut.error)
        await _initialise(ctx, dut, pending=(1, 1, tables[1][(1, 1)]))
        assert await _read_all(ctx, dut, 0) == zeros
        assert await _read_all(ctx, dut, 1) == zeros
        for (l, kv), bits in tables[1].items():
            _write(ctx, dut, l, kv, bits)
            await ctx.tick()
        ctx.set(dut.write.valid, 0)
        assert await _read_all(ctx, dut, 1) == tables[1]
        assert not ctx.get(dut.error)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("kw, name", [({"layers": 0}, "layers"),
                                      ({"layers": 4, "read_ports": 0}, "read_ports")])
def test_threshold_table_validates(kw, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=name) as info:
            ThresholdTable(**kw)
        del info
        gc.collect()
