"""`occupancy`: the count and its registered `count < limit` against a Python count."""

import random

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from oaken_hw.rtl.common.occupancy import occupancy


@pytest.mark.parametrize("depth,limit", [(4, 4), (7, 1), (9, 5)])
def test_occupancy_follows_a_count(depth, limit):
    """Random steps kept within 0..depth: every cycle the count is the Python count and
    `below` is `count < limit`, at both ends of the range as well as inside it."""
    rng = random.Random(depth * 10 + limit)
    m = Module()
    up, down = Signal(), Signal()
    count, below = occupancy(m, depth=depth, limit=limit, up=up, down=down, name="c")
    seen = set()

    async def bench(ctx):
        n = 0
        for _ in range(2000):
            assert ctx.get(count) == n
            assert ctx.get(below) == (n < limit)
            seen.add(n)
            u = rng.random() < 0.5 and n < depth
            d = rng.random() < 0.5 and n > 0
            ctx.set(up, u)
            ctx.set(down, d)
            await ctx.tick()
            n += u - d

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == set(range(depth + 1))


@pytest.mark.parametrize("limit", [0, 6])
def test_occupancy_rejects_a_limit_out_of_range(limit):
    with pytest.raises(ValueError, match="limit"):
        occupancy(Module(), depth=5, limit=limit, up=Signal(), down=Signal(), name="c")
