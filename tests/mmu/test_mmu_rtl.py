"""The Amaranth MMU against the golden model: every record of every command, bit for bit."""

import pytest

from oaken_hw.config import config_from_dict, default_config
from oaken_hw.mmu import MMU, Kind, MMUModel, Status

from mmu_harness import (Append, Free, Read, check, head_scope_config, plan, simulate,
                         small_config)
from test_mmu_formal import tiny_config


@pytest.mark.parametrize("seed, p_valid, p_ready", [
    (11, 0.7, 0.7),
    (12, 1.0, 0.3),     # the consumers stall a lot
    (13, 0.3, 1.0),     # sparse commands, no output stalls
])
def test_random_layer_scope(seed, p_valid, p_ready):
    cfg = small_config()
    cmds = plan(cfg, 260, seed=seed)
    run = simulate(cfg, cmds, seed=seed, p_valid=p_valid, p_ready=p_ready)
    _, tally = check(cfg, cmds, run)
    # the run exercised what it claims to
    assert tally["OK"] > 150 and tally["stalls"] > 0
    assert tally.get("BAD_POSITION", 0) and tally.get("UNKNOWN_SEQ", 0)
    assert tally.get("BAD_RANGE", 0)


def test_random_head_scope():
    cfg = head_scope_config()
    cmds = plan(cfg, 200, seed=21, p_free=0.08)
    run = simulate(cfg, cmds, seed=21)
    _, tally = check(cfg, cmds, run)
    assert tally["OK"] > 150


@pytest.mark.parametrize("cfg, n", [
    # one head, one sequence (seq id 1 is unknown), 16-byte pages: a metadata slot per page
    pytest.param(config_from_dict({
        "model": {"layers": 3, "kv_heads": 1, "head_dim": 16},
        "quant": {"sparse_block": 16, "lanes": 16},
        "mmu": {"sequences": 1, "max_tokens": 40, "pages": 16, "page_bytes": 16,
                "sparse_pages": 5}}), 150, id="single"),
    # the configuration of the formal proofs: the pool runs out on every second append
    pytest.param(tiny_config(), 50, id="formal"),
])
def test_random_corner_configs(cfg, n):
    cmds = plan(cfg, n, seed=4)
    run = simulate(cfg, cmds, seed=4, order_slack=40)
    _, tally = check(cfg, cmds, run)
    assert tally["OK"] > n // 2


def test_exhaustion_and_recovery():
    """Fill the pool; the next append stalls with out_of_pages until a free of another
    sequence returns pages, then completes on exactly the pages the model predicts."""
    cfg = small_config()
    model = MMUModel(cfg)
    cmds, t = [], 0
    while True:
        c = Append(1, t % 2, (t // 2) % 2, t // 4, [32, 17])
        if c.apply(model) is None:
            break
        cmds.append(c)
        t += 1
    cmds.append(c)                          # this one waits for pages
    cmds.append(Read(1, 0, 0, 0, Kind.DENSE, 0, 1))
    cmds.append(Free(1))                    # releases everything: the append resumes
    cmds.append(Append(1, 0, 0, 0, [1, 1]))
    cmds.append(Free(1))
    run = simulate(cfg, cmds, seed=5, order_slack=400)
    _, tally = check(cfg, cmds, run)
    assert tally["stalls"] == 1
    stalled = len(cmds) - 5
    assert run.oop_cycles and min(run.oop_cycles) >= run.accepted[stalled]
    assert run.completed[stalled] > run.completed[stalled + 2]      # after the free


def test_invalid_commands_and_capacity():
    cfg = small_config(pages=64)
    L = MMUModel(cfg).layout
    cmds = [Free(0), Append(3, 0, 0, 0, [0, 0]), Append(0, 0, 0, 1, [0, 0]),
            Append(0, 1, 0, 0, [33, 0]), Read(0, 0, 0, 0, Kind.DENSE, 0, 0)]
    cmds += [Append(0, 1, 1, t, [0, 0]) for t in range(L.max_tokens + 1)]     # one too many
    cmds += [Append(2, 0, 0, t, [L.head_dim, 0]) for t in range(9)]           # sparse full
    cmds += [Read(0, 1, 1, 1, Kind.DENSE, 3, L.max_tokens), Read(0, 1, 1, 1, Kind.DENSE, 0, 17),
             Read(0, 1, 1, 1, Kind.STATUS, 0, 1), Read(2, 0, 0, 0, Kind.SPARSE, 5, 256),
             Read(2, 0, 0, 0, Kind.SPARSE, 5, 257), Read(3, 0, 0, 0, Kind.META, 0, 0),
             Free(0), Free(0), Free(2), Read(2, 0, 0, 0, Kind.META, 0, 0)]
    run = simulate(cfg, cmds, seed=3)
    _, tally = check(cfg, cmds, run)
    for st in ("UNKNOWN_SEQ", "BAD_FIELD", "BAD_POSITION", "BAD_RANGE", "CAPACITY"):
        assert tally.get(st, 0) > 0, st


def test_reset_mid_stream_is_power_up():
    """A reset in the middle of activity (after allocations, frees and reads, while a
    command is in flight) returns the MMU to its power-up state: the commands after it give
    exactly the records of a fresh model. The walk is checked too: nothing is accepted and
    ``free_pages`` reads ``pages`` for ``init_cycles`` cycles, then ``ready`` rises."""
    cfg = small_config()
    L = MMUModel(cfg).layout
    before = plan(cfg, 90, seed=31)
    # from power-up: position 0 of groups that held tokens before the reset (stale counters
    # would give BAD_POSITION), pages in the order 0, 1, ... (a stale ring would not), reads
    # of sequences that were live (UNKNOWN_SEQ), then random traffic
    cmds = [Read(s, 0, 0, 0, Kind.DENSE, 0, 0) for s in range(L.sequences)]
    cmds += [Append(s, g // 2, g % 2, 0, [g, 0]) for s in range(2) for g in range(L.groups)]
    cmds += [Read(1, 1, 1, 0, Kind.SPARSE, 0, L.to_end), Free(0), Free(1)]
    cmds += plan(cfg, 120, seed=32)
    run = simulate(cfg, cmds, seed=33, pre_reset=(before, 40), max_cycles=40_000)
    _, tally = check(cfg, cmds, run)
    assert run.pre_reset.count("OK") >= 30
    assert [r[2] >> L.page_shift for r in run.records[L.sequences][:-1]] == [0, 1, 2]
    assert tally["OK"] > 90 and tally["UNKNOWN_SEQ"] >= L.sequences


def test_sparse_read_to_end():
    """``hi`` = ``to_end`` on a SPARSE read reads ``[lo, bytes written)``; ``lo`` beyond the
    written bytes is BAD_RANGE; DENSE and META reads give it no meaning (BAD_RANGE)."""
    cfg = small_config(pages=64)
    L = MMUModel(cfg).layout
    assert L.to_end == (1 << L.range_bits) - 1 > L.sparse_capacity and L.to_end % 2
    counts = [[32, 0], [17, 0], [0, 0], [31, 5], [32, 1]]      # head 0 crosses pages
    cmds = [Append(2, 1, 0, t, c) for t, c in enumerate(counts)]
    s0 = sum(c[0] for c in counts)
    E = L.to_end
    reads = [Read(2, 1, 0, 0, Kind.SPARSE, lo, E) for lo in (0, 1, 63, 64, 100, s0, s0 + 1)]
    reads += [Read(2, 1, 0, 1, Kind.SPARSE, 0, E), Read(2, 1, 0, 1, Kind.SPARSE, 6, E),
              Read(2, 1, 0, 1, Kind.SPARSE, 7, E),
              Read(2, 1, 1, 0, Kind.SPARSE, 0, E),                  # an empty group: OK
              Read(2, 1, 0, 0, Kind.DENSE, 0, E), Read(2, 1, 0, 1, Kind.META, 0, E),
              Read(2, 1, 0, 0, Kind.SPARSE, E, E)]
    cmds += reads + [Free(2), Read(2, 1, 0, 0, Kind.SPARSE, 0, E)]
    run = simulate(cfg, cmds, seed=9)
    check(cfg, cmds, run)
    # each sparse read to the end equals the read with the explicit range on a model that
    # holds the same streams; beyond the end, and for DENSE and META, it is BAD_RANGE
    ref = MMUModel(cfg)
    for c in cmds[:len(counts)]:
        c.apply(ref)
    for k, r in enumerate(reads):
        got = run.records[len(counts) + k]
        written = ref.sbytes[2][2 + r.kv][r.head]
        if r.kind == Kind.SPARSE and r.lo <= written:
            want = ref.read(2, 1, r.kv, r.head, Kind.SPARSE, r.lo, written)
            assert got == [tuple(x) for x in want], r
        else:
            assert got == [(Kind.STATUS, 0, 0, 0, Status.BAD_RANGE)], r
    assert s0 == 112 and len(run.records[len(counts)][:-1]) == 2       # two pages
    assert run.records[len(cmds) - 1][-1][4] == Status.UNKNOWN_SEQ


def _observe_rates(cfg, cmds):
    """Run with no stalls; per command: cycles from acceptance to the status record, and the
    cycles on which the MMU allocated and released pages."""
    dut = MMU(cfg=cfg)
    allocs, releases = [], []

    async def monitor(ctx):
        cyc = 0
        async for _, _, a, r in ctx.tick().sample(dut.obs.alloc, dut.obs.release):
            if a:
                allocs.append(cyc)
            if r:
                releases.append(cyc)
            cyc += 1

    run = simulate(cfg, cmds, seed=0, p_valid=1.0, p_ready=1.0, dut=dut, monitors=[monitor])
    check(cfg, cmds, run)
    run.dut = dut
    return run, allocs, releases


def test_rates_default_config():
    """The rates reported in docs/mmu.md, measured on the default configuration: one
    allocation per cycle, one read burst per cycle, one released page per cycle."""
    cfg = default_config()
    L = MMUModel(cfg).layout
    n = 40
    # every head crosses a sparse page at token 16: a 7-allocation append
    cmds = [Append(0, 0, 0, t, [64, 64, 64]) for t in range(n)]
    cmds += [Read(0, 0, 0, 1, Kind.DENSE, 0, n), Read(0, 0, 0, 2, Kind.SPARSE, 0, 64 * n),
             Read(0, 0, 0, 0, Kind.META, 0, n), Free(0)]
    run, allocs, releases = _observe_rates(cfg, cmds)
    lat = [run.completed[i] - run.accepted[i] + 1 for i in range(len(cmds))]
    # appends take a fixed number of cycles, whatever they allocate
    assert len(set(lat[:n])) == 1
    append_cycles = lat[0]
    # accept, group-word read, check, one cycle per slot + 1 (resolve/emit pipeline), status
    assert append_cycles == run.dut.append_cycles == L.slots + 5
    # the 7 allocations of the first append fall on consecutive cycles
    assert allocs[:7] == list(range(allocs[0], allocs[0] + 7))
    # reads: fixed latency, then one burst per cycle, then the status
    for i in range(n, n + 3):
        bursts = len(run.records[i]) - 1
        assert lat[i] == run.dut.read_latency + bursts + 1
    # free: one page per cycle; two extra cycles per group (its page counts are registered,
    # then its counters are read and zeroed), and one per stream that is empty or follows
    # an empty one (nothing to prefetch during)
    model = MMUModel(cfg)
    for c in cmds[:-1]:
        c.apply(model)
    extra = 0
    for g in range(L.groups):
        per_slot = [len(model.tables[k][0][g][i]) for k, num in
                    (("dense", L.heads), ("sparse", L.heads), ("meta", L.vectors))
                    for i in range(num)]
        extra += 2 + sum(1 for k in range(1, L.slots)
                         if per_slot[k] == 0 or per_slot[k - 1] == 0)
    free_cycles = lat[-1]
    pages = len(releases)
    assert pages == len(model.owned)
    assert free_cycles == pages + extra + 3      # + accept, look-up, status
    gaps = [b - a for a, b in zip(releases, releases[1:])]
    assert gaps.count(1) == pages - 1            # group 0 is the only one with pages
    print(f"\nappend {append_cycles} cycles; read 4 + 1/burst; "
          f"free {free_cycles} cycles for {pages} pages")


def test_free_rate_every_stream_in_use():
    """One token in every group of the default configuration, so every stream holds a page:
    the free returns them at one per cycle with two extra cycles per group."""
    cfg = default_config()
    L = MMUModel(cfg).layout
    cmds = [Append(3, g // 2, g % 2, 0, [1 + g % 64, 64, 5]) for g in range(L.groups)]
    cmds.append(Free(3))
    run, allocs, releases = _observe_rates(cfg, cmds)
    pages = len(releases)
    assert pages == L.groups * L.slots
    assert run.completed[len(cmds) - 1] - run.accepted[len(cmds) - 1] + 1 \
        == pages + 2 * L.groups + 3
    print(f"\nfree of {pages} pages in {pages + 2 * L.groups + 3} cycles")


def test_verilog_emits():
    from amaranth.back import verilog
    text = verilog.convert(MMU(cfg=small_config()), emit_src=False, name="oaken_mmu")
    assert "module oaken_mmu" in text and "append__valid" in text
