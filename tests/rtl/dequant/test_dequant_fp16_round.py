"""The FP16 output rounder against the golden model's ``half_units_to_fp16`` /
``units_to_fp16``: every binade, rounding ties, subnormals, carries into the next binade,
saturation and negative values that round to zero."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from dequant_harness import expect_value_error
from oaken_hw.model.numerics import fp16_bits, half_units_to_fp16, units_to_fp16
from oaken_hw.rtl.dequant import FP16Round


@pytest.mark.parametrize("frac_bits,golden,width", [(25, half_units_to_fp16, 48),
                                                    (24, units_to_fp16, 48),
                                                    (25, half_units_to_fp16, 30)])
def test_rounder_matches_the_golden_model(frac_bits, golden, width):
    rng = np.random.default_rng(7)
    s = frac_bits - 24
    vals = []
    for e in range(width - 1):                       # every magnitude range, both signs
        vals += rng.integers(-(1 << e), 1 << e, 40).tolist()
    for sig in (1023, 1024, 2047, 2048, 4095):       # ties and carries around each binade
        for sh in range(0, 32):
            base = sig << sh
            half = 1 << sh >> 1                      # the guard bit alone: a tie
            vals += [base - 1, base, base + 1, base + half, base + half - 1, base + half + 1,
                     -base, -(base + half), -(base + half + 1)]
    sat = 2047 << (29 + s)
    vals += [0, 1, -1, 2, -2, 3, sat - 1, sat, sat + 1, -sat, (4095 << (28 + s)) - 1,
             4095 << (28 + s), (1 << (width - 1)) - 1, -(1 << (width - 1))]
    vals = [int(v) for v in vals if -(1 << (width - 1)) <= v < (1 << (width - 1))]
    want = fp16_bits(golden(np.array(vals, np.int64)))
    dut = FP16Round(width=width, frac_bits=frac_bits)
    got = []

    async def bench(ctx):
        for v in vals:
            ctx.set(dut.i, v)
            got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    bad = [(v, int(w), g) for v, w, g in zip(vals, want, got) if w != g]
    assert not bad, f"{len(bad)} of {len(vals)} wrong, first (value, want, got): {bad[0]}"


def test_rounder_parameters_are_validated():
    expect_value_error(lambda: FP16Round(width=1), "width must be an integer >= 2")
    expect_value_error(lambda: FP16Round(width=48, frac_bits=23),
                       "frac_bits must be an integer >= 24")
