"""The INT4 baseline quantizer against its NumPy golden model, with random stalls."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from oaken_hw.rtl.baseline.int4_quantizer import (INF_FIXED, Int4Quantizer, fp16_to_fixed,
                                                  int4_golden)


def test_fp16_to_fixed_is_exact_for_every_pattern():
    bits = np.arange(1 << 16, dtype=np.uint16)
    f = bits.view(np.float16).astype(np.float64)
    want = np.where(np.isnan(f), 0.0, np.clip(f, -65504, 65504)) * 2.0 ** 24
    assert np.array_equal(fp16_to_fixed(bits), want.astype(np.int64))
    assert fp16_to_fixed(np.uint16(0x7C00)) == INF_FIXED


def test_golden_corner_cases():
    f16 = lambda v: np.array(v, dtype=np.float16).view(np.uint16)
    q, lo, span = int4_golden(f16([1.0, 1.0, 1.0, 1.0]), 4)            # flat vector
    assert q.tolist() == [[0, 0, 0, 0]] and span.tolist() == [0]
    q, lo, span = int4_golden(f16([0.0, 1.0, 0.5, 0.9999]), 4)
    assert q.tolist() == [[0, 15, 8, 15]]                               # max clamps to 15
    q, _, _ = int4_golden(f16([-np.inf, np.inf, np.nan, 0.0]), 4)       # inf saturates, NaN=0
    assert q.tolist() == [[0, 15, 8, 8]]


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        Int4Quantizer(lanes=3, vector_len=12)
    with pytest.raises(ValueError, match="multiple of lanes"):
        Int4Quantizer(lanes=4, vector_len=10)


def _stimulus(rng, n_vectors, vector_len):
    """Random vectors mixing ordinary values with FP16 corner cases."""
    vals = rng.standard_normal((n_vectors, vector_len)) * rng.choice([1e-6, 1e-2, 1, 300],
                                                                    size=(n_vectors, 1))
    bits = vals.astype(np.float16).view(np.uint16)
    specials = np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                         0x7E00, 0x3C00], dtype=np.uint16)
    mask = rng.random(bits.shape) < 0.05
    bits[mask] = rng.choice(specials, size=int(mask.sum()))
    bits[0] = 0x3C00                                         # a flat vector (span 0)
    return bits.reshape(-1)


def _run(lanes, vector_len, n_vectors, seed, p_valid, p_ready):
    rng = np.random.default_rng(seed)
    bits = _stimulus(rng, n_vectors, vector_len)
    want_q, want_lo, want_span = int4_golden(bits, vector_len)
    dut = Int4Quantizer(lanes=lanes, vector_len=vector_len)
    beats = bits.reshape(-1, lanes)
    got = []

    async def source(ctx):
        for beat in beats:
            while rng.random() >= p_valid:
                await ctx.tick()
            ctx.set(dut.i.payload, [int(v) for v in beat])
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < len(beats):
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                got.append((list(payload.codes), payload.lo, payload.span, payload.last))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()

    n = vector_len // lanes
    codes = np.array([c for c, *_ in got], dtype=np.uint8).reshape(n_vectors, vector_len)
    assert np.array_equal(codes, want_q)
    for j, (_, lo, span, last) in enumerate(got):
        v = j // n
        assert (lo, span, last) == (want_lo[v], want_span[v], int(j % n == n - 1)), j


@pytest.mark.parametrize("lanes, vector_len, p_valid, p_ready", [
    (2, 16, 0.7, 0.6),
    (4, 8, 1.0, 1.0),      # back-to-back: two beats per vector, shorter than the reduction
    (4, 32, 0.9, 0.4),
    (1, 4, 0.5, 0.9),
])
def test_rtl_matches_golden_with_random_stalls(lanes, vector_len, p_valid, p_ready):
    _run(lanes, vector_len, n_vectors=12, seed=lanes * 1000 + vector_len,
         p_valid=p_valid, p_ready=p_ready)


@pytest.mark.parametrize("lanes, vector_len", [(2, 10), (4, 24), (16, 192)])
def test_full_rate_when_vectors_are_long_enough(lanes, vector_len):
    """With no stalls, vectors of >= reduction_latency - 1 beats stream at one per cycle,
    in and (once the pipeline is full) out."""
    dut = Int4Quantizer(lanes=lanes, vector_len=vector_len)
    assert dut.beats_per_vector >= dut.reduction_latency - 1
    cycles = dut.beats_per_vector * 16
    in_ready, out_valid = [], []

    async def tb(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        for _ in range(cycles):
            _, _, ready, valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            in_ready.append(ready)
            out_valid.append(valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert all(in_ready)
    assert all(out_valid[-3 * dut.beats_per_vector:])
