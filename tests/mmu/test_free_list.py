"""`FreeList` alone against a Python deque: random allocations and releases, both in one
cycle too, the ring run empty and full, and a reset in the middle of traffic."""

import random
from collections import deque

import pytest
from amaranth import ResetInserter, Signal
from amaranth.sim import Simulator

from oaken_hw.mmu import FreeList


@pytest.mark.parametrize("pages", [2, 4, 16])
def test_free_list_matches_a_deque(pages):
    """Every cycle after the walk: ``alloc.valid`` iff a page is free, ``alloc.payload`` the
    oldest free page, ``count`` and ``release.ready`` as the deque says. Phases that mostly
    allocate and mostly release alternate, so the ring runs empty and full, and allocations
    and releases meet in one cycle at every fill, the fill of 1 included."""
    rng = random.Random(pages)
    dut = FreeList(pages=pages)
    rst = Signal()
    seen = {"both": 0, "both_at_1": 0, "empty": 0, "full": 0}

    async def bench(ctx):
        for run in range(2):
            # the walk after power-up, and after a reset in the middle of traffic
            if run:
                ctx.set(dut.alloc.ready, 0)
                ctx.set(dut.release.valid, 0)
                ctx.set(rst, 1)
                await ctx.tick()
                ctx.set(rst, 0)
            for _ in range(dut.init_cycles):
                assert not ctx.get(dut.ready) and not ctx.get(dut.alloc.valid)
                assert ctx.get(dut.count) == pages
                await ctx.tick()
            free, held = deque(range(pages)), []
            for cycle in range(1500):
                assert ctx.get(dut.ready)
                assert ctx.get(dut.count) == len(free)
                assert ctx.get(dut.alloc.valid) == bool(free)
                if free:
                    assert ctx.get(dut.alloc.payload) == free[0]
                assert ctx.get(dut.release.ready) == (len(free) < pages)
                p_alloc = 0.8 if (cycle // 40) % 2 else 0.3
                pop = bool(free) and rng.random() < p_alloc
                push = bool(held) and rng.random() < 1.1 - p_alloc
                ctx.set(dut.alloc.ready, pop)
                ctx.set(dut.release.valid, push)
                if push:
                    page = held.pop(rng.randrange(len(held)))
                    ctx.set(dut.release.payload, page)
                seen["both"] += pop and push
                seen["both_at_1"] += pop and push and len(free) == 1
                seen["empty"] += not free
                seen["full"] += len(free) == pages
                await ctx.tick()
                if pop:
                    held.append(free.popleft())
                if push:
                    free.append(page)

    sim = Simulator(ResetInserter({"sync": rst})(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(seen.values()) > 10, seen
