"""The dequantizer's windowed sum ``2 pivot +- (2j + 1) * step`` -> FP16 (``LevelSum``)
against the golden model's exact integer sum and ``half_units_to_fp16``: every pivot
binade against every step binade, both signs, subnormal and zero operands, the jam cases
(one operand shifted wholly or partly out of the window), and cancellations."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from dequant_harness import expect_value_error
from oaken_hw.model.numerics import fp16_bits, fp16_from_bits, fp16_to_units, half_units_to_fp16
from oaken_hw.rtl.dequant.level_sum import LevelSum


def _fp16(sign, exp, man):
    return (sign << 15) | (exp << 10) | man


def _cases(middle_bits, rng):
    """(pivot bits, step bits, 2j + 1, upper) tuples."""
    odd_max = (1 << (middle_bits + 2)) - 1
    cases = []
    for pe in range(31):                       # every pivot binade ...
        for se in range(31):                   # ... against every step binade
            for _ in range(3):
                pivot = _fp16(int(rng.integers(2)), pe, int(rng.integers(1024)))
                step = _fp16(0, se, int(rng.integers(1024)))
                odd = 2 * int(rng.integers((odd_max + 1) // 2)) + 1
                cases.append((pivot, step, odd, int(rng.integers(2))))
    # the window's tight case: a level with a short significand (2j + 1 = 1, a step that is
    # a power of two or just above) minus a pivot whose low bits leave the window
    for pe in range(31):
        for se in range(1, 31):
            for man in (0, int(rng.integers(1, 8))):
                sign = int(rng.integers(2))
                pivot = _fp16(sign, pe, int(rng.integers(1024)))
                cases.append((pivot, _fp16(0, se, man), 1, 1 - sign))
    # cancellation: the level close to the pivot, subtracted
    for _ in range(600):
        step = _fp16(0, int(rng.integers(1, 31)), int(rng.integers(1024)))
        odd = 2 * int(rng.integers((odd_max + 1) // 2)) + 1
        level = float(odd) * float(fp16_from_bits(np.uint16(step))) / 2
        pivot = int(fp16_bits(np.float16(min(level, 65504.0))))
        pivot ^= int(rng.integers(0, 4))                     # a few quanta off
        sign = int(rng.integers(2))
        cases.append((pivot | sign << 15, step, odd, sign))  # upper on a negative pivot
    # zeros, -0, the largest values, the smallest subnormals
    for pivot in (0, 0x8000, 1, 0x8001, 0x7BFF, 0xFBFF, 0x0400, 0x03FF):
        for step in (0, 0x8000, 1, 0x03FF, 0x0400, 0x7BFF):
            for odd in (1, odd_max):
                cases += [(pivot, step, odd, 0), (pivot, step, odd, 1)]
    return cases


def _golden(cases):
    pivot, step, odd, upper = (np.array(c, np.int64) for c in zip(*cases))
    p = fp16_to_units(fp16_from_bits(pivot.astype(np.uint16)))
    d = fp16_to_units(fp16_from_bits((step & 0x7FFF).astype(np.uint16)))
    level = odd * d
    return fp16_bits(half_units_to_fp16(2 * p + np.where(upper == 1, level, -level)))


@pytest.mark.parametrize("middle_bits", [2, 4, 7])
def test_level_sum_matches_model(middle_bits):
    cases = _cases(middle_bits, np.random.default_rng(middle_bits))
    want = _golden(cases)
    dut = LevelSum(middle_bits=middle_bits)
    got = []

    async def bench(ctx):
        for pivot, step, odd, upper in cases:
            ctx.set(dut.pivot, pivot)
            ctx.set(dut.step, step)
            ctx.set(dut.odd, odd)
            ctx.set(dut.upper, upper)
            got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    bad = [(c, hex(int(w)), hex(g)) for c, w, g in zip(cases, want, got) if w != g]
    assert not bad, f"{len(bad)} of {len(cases)} wrong, first (case, want, got): {bad[:3]}"


def test_level_sum_parameters_are_validated():
    expect_value_error(lambda: LevelSum(middle_bits=1), "middle_bits must be an integer")
