"""`StreamRegister` (the slice between the MMU and the write and read paths)."""

import random

from amaranth.sim import Simulator

from oaken_hw.engine.stream_register import StreamRegister


def test_stream_register_passes_every_item_in_order():
    """Random valid and random ready: the items come out in order, none lost or doubled;
    an offered item is held until taken; `i.ready` does not follow `o.ready` within a
    cycle (it is a register); with `ready` always high it moves one item per cycle."""
    rng = random.Random(7)
    dut = StreamRegister(16)
    sent, got = [], []
    stats = {"full_rate": 0, "stalled_in": 0}

    async def bench(ctx):
        nxt = 0
        offered = None                      # the item `o` showed and was not yet taken
        for cycle in range(3000):
            free_run = cycle >= 2500        # the last cycles: no stalls at all
            valid = free_run or rng.random() < 0.6
            ready = free_run or rng.random() < 0.6
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, nxt)
            ctx.set(dut.o.ready, not ready)
            in_ready = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, ready)
            assert ctx.get(dut.i.ready) == in_ready
            stats["stalled_in"] += not in_ready
            o_valid, o_data = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            if offered is not None:
                assert o_valid and o_data == offered
            await ctx.tick()
            if o_valid and ready:
                got.append(o_data)
                offered = None
                stats["full_rate"] += free_run
            elif o_valid:
                offered = o_data
            if valid and in_ready:
                sent.append(nxt)
                nxt = (nxt + 1) & 0xFFFF

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == sent[:len(got)] and len(sent) - len(got) <= 2
    assert stats["stalled_in"] > 100        # the skid register filled
    assert stats["full_rate"] >= 498        # one per cycle once nothing stalls
