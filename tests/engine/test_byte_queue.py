"""`ByteQueue` (the write and read paths' byte packer) against a Python list of bytes."""

import random

import pytest
from amaranth.sim import Simulator

from oaken_hw.engine.byte_queue import ByteQueue


@pytest.mark.parametrize("in_bytes,out_bytes", [(4, 16), (16, 16), (3, 5)])
def test_byte_queue_matches_a_list(in_bytes, out_bytes):
    """Random beats of 0..in_bytes bytes (random valid), random takes up to the fill, the
    head shown from a random lane, a random `want` (passed as `need = want + take`), both
    given as the outcome `sel` chooses, beside junk for the other one: the
    head's valid bytes, the fill, ready and `enough` (the fill against the cycle before's
    `want`) follow the list every cycle."""
    rng = random.Random(in_bytes * 100 + out_bytes)
    dut = ByteQueue(in_bytes=in_bytes, out_bytes=out_bytes)
    queue, seen = [], {"takes": 0, "full": 0, "enough": 0, "short": 0}
    wanted = 0                                              # `want` of the cycle before

    async def bench(ctx):
        nonlocal wanted
        for cycle in range(3000):
            count = rng.choice([0, in_bytes, rng.randint(0, in_bytes)])
            data = [rng.randrange(256) for _ in range(in_bytes)]  # bytes >= count: junk
            valid = rng.random() < 0.7
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload.data, data)
            ctx.set(dut.i.payload.count, count)
            fill = ctx.get(dut.fill)
            assert fill == len(queue)
            lane = rng.choice([0, rng.randrange(out_bytes)])
            ctx.set(dut.lane, lane)
            head = ctx.get(dut.head)
            shown = min(len(queue), out_bytes - lane)
            assert [head[lane + i] for i in range(shown)] == queue[:shown]
            ready = ctx.get(dut.i.ready)
            assert ready == (len(queue) <= out_bytes)
            enough = ctx.get(dut.enough)
            assert enough == (len(queue) >= wanted)
            seen["enough" if enough else "short"] += 1
            wanted = rng.randint(0, out_bytes)
            # alternate a draining and a filling reader, so the queue also runs full
            p_take = 0.8 if (cycle // 200) % 2 else 0.1
            take = rng.randint(0, min(fill, out_bytes)) if rng.random() < p_take else 0
            # the take and need of the handshake's other outcome are junk the queue must
            # not use
            sel = rng.random() < 0.5
            junk = rng.randint(0, min(fill, out_bytes))
            ctx.set(dut.sel, sel)
            ctx.set(dut.take, [junk, take] if sel else [take, junk])
            ctx.set(dut.need, [junk, wanted + take] if sel else [wanted + take, junk])
            await ctx.tick()
            del queue[:take]
            seen["takes"] += take > 0
            seen["full"] += not ready
            if valid and ready:
                queue.extend(data[:count])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["takes"] > 500 and seen["full"] > 100      # both ends and backpressure ran
    assert seen["enough"] > 500 and seen["short"] > 100
