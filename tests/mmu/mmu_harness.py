"""Shared helpers of the MMU tests: configurations, a random command planner, and a
cycle-accurate simulation driver that checks the RTL against the golden model."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from oaken_hw.config import config_from_dict
from oaken_hw.mmu import MMU, STALL, Kind, MMUModel, Op, Status


def small_config(**mmu):
    """Two layers x 2 heads x head_dim 32, 64-byte pages: exhaustion and page crossings are
    frequent. ``sequences = 3`` leaves an unused sequence id for ``UNKNOWN_SEQ``."""
    base = {"sequences": 3, "max_tokens": 16, "pages": 32, "page_bytes": 64, "sparse_pages": 4}
    base.update(mmu)
    return config_from_dict({
        "model": {"layers": 2, "kv_heads": 2, "head_dim": 32},
        "quant": {"sparse_block": 32, "lanes": 16},
        "mmu": base,
    })


def head_scope_config():
    """Scope "head": one metadata stream per head, 3 heads, odd counts of everything."""
    return config_from_dict({
        "model": {"layers": 1, "kv_heads": 3, "head_dim": 16},
        "quant": {"scope": "head", "sparse_block": 16, "lanes": 16},
        "mmu": {"sequences": 2, "max_tokens": 24, "pages": 64, "page_bytes": 32,
                "sparse_pages": 3},
    })


# -- commands ------------------------------------------------------------------------------

@dataclass
class Append:
    seq: int
    layer: int
    kv: int
    pos: int
    counts: list

    def payload(self):
        return {"seq": self.seq, "layer": self.layer, "kv": self.kv, "pos": self.pos,
                "counts": list(self.counts)}

    def apply(self, model):
        return model.append(self.seq, self.layer, self.kv, self.pos, self.counts)


@dataclass
class Read:
    seq: int
    layer: int
    kv: int
    head: int
    kind: int
    lo: int
    hi: int

    def payload(self):
        return {"op": Op.READ, "kind": self.kind, "seq": self.seq, "layer": self.layer,
                "kv": self.kv, "head": self.head, "lo": self.lo, "hi": self.hi}

    def apply(self, model):
        return model.read(self.seq, self.layer, self.kv, self.head, self.kind, self.lo, self.hi)


@dataclass
class Free:
    seq: int

    def payload(self):
        return {"op": Op.FREE, "kind": 0, "seq": self.seq, "layer": 0, "kv": 0, "head": 0,
                "lo": 0, "hi": 0}

    def apply(self, model):
        return model.free_sequence(self.seq)


def plan(cfg, n, *, seed, p_free=0.04, p_read=0.3, p_bad=0.08, burst_bias=0.5,
         p_to_end=0.15):
    """A random command sequence, mostly valid against a planning model.

    Appends get random outlier counts (mostly few, sometimes ``head_dim``); reads ask for
    random in-range windows of random streams (``p_to_end`` of the sparse ones with the
    all-ones ``hi``, "to the end of the stream"); frees release a random live sequence, and
    more often when the planning model runs out of pages. ``p_bad`` of the commands are invalid
    (unknown sequence, skipped position, out-of-range fields and windows, double free).
    """
    rng = random.Random(seed)
    pm = MMUModel(cfg)
    L = pm.layout
    cmds = []

    def live():
        return [s for s in range(L.sequences) if pm.live[s]]

    def counts():
        return [rng.choice([0, 0, 1, 2, 3, rng.randrange(L.head_dim + 1), L.head_dim])
                for _ in range(L.heads)]

    while len(cmds) < n:
        r = rng.random()
        if r < p_bad:
            k = rng.randrange(7)
            seq_any = rng.randrange(1 << L.seq_bits)
            layer_any = rng.randrange(1 << L.layer_bits)
            if k == 0:      # skip ahead / rewrite
                s, layer, kv = rng.randrange(L.sequences), rng.randrange(L.layers), rng.randrange(2)
                n_tok = pm.tokens[s][2 * layer + kv]
                pos = rng.choice([n_tok + 1, n_tok + 2, max(0, n_tok - 1)]) % (1 << L.token_bits)
                c = Append(s, layer, kv, pos, counts())
            elif k == 1:    # too many sparse bytes, or unknown ids
                c = Append(seq_any, layer_any, rng.randrange(2), 0,
                           [rng.randrange(1 << L.count_bits) for _ in range(L.heads)])
            elif k == 2:
                c = Free(seq_any)               # often a double free
            elif k == 3:    # beyond what was written
                c = Read(rng.randrange(L.sequences), rng.randrange(L.layers), rng.randrange(2),
                         rng.randrange(L.heads), rng.randrange(3),
                         rng.randrange(4), rng.randrange(1 << L.range_bits))
            elif k == 4:    # lo > hi
                c = Read(rng.randrange(L.sequences), rng.randrange(L.layers), rng.randrange(2),
                         rng.randrange(L.heads), rng.randrange(3), 2, 1)
            elif k == 5:    # bad fields
                c = Read(seq_any, layer_any, rng.randrange(2), rng.randrange(1 << L.head_bits),
                         rng.randrange(4), 0, 0)
            else:           # capacity: the group is full
                s, layer, kv = rng.randrange(L.sequences), rng.randrange(L.layers), rng.randrange(2)
                c = Append(s, layer, kv, pm.tokens[s][2 * layer + kv], [L.head_dim] * L.heads)
        elif r < p_bad + p_free and live():
            c = Free(rng.choice(live()))
        elif r < p_bad + p_free + p_read and live():
            s = rng.choice(live())
            layer, kv, h = rng.randrange(L.layers), rng.randrange(2), rng.randrange(L.heads)
            kind = rng.choice([Kind.DENSE, Kind.SPARSE, Kind.META])
            lim = pm.sbytes[s][2 * layer + kv][h] if kind == Kind.SPARSE else \
                pm.tokens[s][2 * layer + kv]
            lo = rng.randrange(lim + 1)
            hi = rng.choice([lim, rng.randrange(lo, lim + 1)])
            if kind == Kind.SPARSE and rng.random() < p_to_end:
                # "to the end of the stream"; now and then from beyond it (BAD_RANGE)
                hi = L.to_end
                lo = lim + 1 if rng.random() < 0.2 else lo
            c = Read(s, layer, kv, h, kind, lo, hi)
        else:
            # bias towards continuing a few groups so that streams grow long
            s = rng.randrange(L.sequences)
            layer, kv = rng.randrange(L.layers), rng.randrange(2)
            c = Append(s, layer, kv, pm.tokens[s][2 * layer + kv], counts())
        res = c.apply(pm)
        cmds.append(c)
        if res is STALL:
            if live() and rng.random() < 0.9:
                v = rng.choice(live())
                pm.free_sequence(v)
                cmds.append(Free(v))
            else:
                # nothing can free pages for this append in the plan: drop it
                cmds.pop()
    return cmds


# -- simulation ------------------------------------------------------------------------------

@dataclass
class Run:
    """What the simulation observed."""

    accepted: dict = field(default_factory=dict)     # command index -> accept cycle
    completed: dict = field(default_factory=dict)    # command index -> completion cycle
    records: dict = field(default_factory=dict)      # command index -> list of records
    oop_cycles: list = field(default_factory=list)   # cycles with out_of_pages high
    cycles: int = 0
    pre_reset: list = field(default_factory=list)    # statuses seen before a reset


def _rec(v):
    return (int(v.kind), int(v.head), int(v.addr), int(v.length), int(v.status))


async def _initialise(ctx, dut, first):
    """Wait out the initialisation walk after reset, with the first command of each port
    offered (``first``: {port: payload or None}): nothing may be accepted, ``free_pages``
    reads ``pages`` throughout, and ``ready`` rises after exactly ``dut.init_cycles``."""
    pages = dut.layout.pages
    for k in range(dut.init_cycles + 1):
        for port, pl in ((dut.append, first.get("a")), (dut.cmd, first.get("c"))):
            ctx.set(port.valid, pl is not None and k < dut.init_cycles)
            if pl is not None:
                ctx.set(port.payload, pl)
        rdy, ar, cr, fp = ctx.get(dut.ready), ctx.get(dut.append.ready), \
            ctx.get(dut.cmd.ready), ctx.get(dut.free_pages)
        assert rdy == (k == dut.init_cycles), f"ready {rdy} at init cycle {k}"
        assert fp == pages, f"free_pages {fp} at init cycle {k}"
        if k < dut.init_cycles:
            assert not ar and not cr, f"a command accepted at init cycle {k}"
            await ctx.tick()
    for port in (dut.append, dut.cmd):
        ctx.set(port.valid, 0)


async def _play_then_reset(ctx, dut, rst, cmds, *, rng, min_done):
    """Play ``cmds`` (ignoring the responses) until ``min_done`` commands have completed and
    at least one free released pages, then assert ``rst`` for one cycle while a command is
    in flight. Returns the statuses seen before the reset."""
    queues = {"a": [i for i, c in enumerate(cmds) if isinstance(c, Append)],
              "c": [i for i, c in enumerate(cmds) if not isinstance(c, Append)]}
    nxt = {"a": 0, "c": 0}
    offered = {"a": False, "c": False}
    accepted = done = freed = 0
    seen = []
    for _ in range(200_000):
        for p, port in (("a", dut.append), ("c", dut.cmd)):
            q, o = queues[p], "c" if p == "a" else "a"
            # in plan order across the ports (a held append is accepted already)
            in_order = nxt[p] < len(q) and (nxt[o] == len(queues[o])
                                            or queues[o][nxt[o]] > q[nxt[p]])
            if offered[p] or (in_order and rng.random() < 0.8):
                offered[p] = True
                ctx.set(port.valid, 1)
                ctx.set(port.payload, cmds[q[nxt[p]]].payload())
            else:
                ctx.set(port.valid, 0)
        ctx.set(dut.wr_out.ready, rng.random() < 0.7)
        ctx.set(dut.rd_out.ready, rng.random() < 0.7)
        in_flight = accepted > done
        if in_flight and done >= min_done and freed and rng.random() < 0.3:
            for port in (dut.append, dut.cmd):
                ctx.set(port.valid, 0)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            return seen
        (_, _, av, ar, cv, cr, wv, wr, wp, rv, rr, rp, rel) = await ctx.tick().sample(
            dut.append.valid, dut.append.ready, dut.cmd.valid, dut.cmd.ready,
            dut.wr_out.valid, dut.wr_out.ready, dut.wr_out.payload,
            dut.rd_out.valid, dut.rd_out.ready, dut.rd_out.payload, dut.obs.release)
        freed += rel
        for p, v, r in (("a", av, ar), ("c", cv, cr)):
            if v and r:
                nxt[p] += 1
                offered[p] = False
                accepted += 1
        for v, r, pl in ((wv, wr, wp), (rv, rr, rp)):
            if v and r and pl.kind == Kind.STATUS:
                done += 1
                seen.append(Status(int(pl.status)).name)
    raise AssertionError(f"the commands before the reset never reached a reset point "
                         f"(accepted {accepted}, done {done}, pages freed {freed})")


def simulate(cfg, cmds, *, seed=0, p_valid=0.7, p_ready=0.7, max_cycles=400_000,
             dut=None, order_slack=150, monitors=(), pre_reset=None):
    """Run ``cmds`` through the RTL with random valid gaps and random ready on both outputs.

    Appends go to the ``append`` port and reads/frees to ``cmd``, each port in plan order. A
    command is presented only when every earlier command of the other port has been accepted
    (or after ``order_slack`` cycles without progress, so a stalled append cannot deadlock
    the free it waits for); the real interleaving is recorded, not assumed. ``monitors``
    are extra simulator processes (``async def f(ctx)``) that observe ``dut``.

    The run starts with the initialisation walk after power-up (checked by
    :func:`_initialise`; cycle 0 of the run is the first cycle ``ready`` is high).
    ``pre_reset`` = ``(commands, min_done)``: first play those commands until ``min_done``
    completed and a free released pages, reset in the middle of a command, and wait out the
    walk again; ``cmds`` then run on the reset MMU (the statuses seen before the reset are
    ``run.pre_reset``).
    """
    rng = random.Random(seed)
    dut = dut or MMU(cfg=cfg)
    ports = {"a": [i for i, c in enumerate(cmds) if isinstance(c, Append)],
             "c": [i for i, c in enumerate(cmds) if not isinstance(c, Append)]}
    run = Run()
    # an explicit clock domain, so that the bench can drive its reset
    top = Module()
    top.domains.sync = cd_sync = ClockDomain("sync")
    top.submodules.dut = dut

    async def tb(ctx):
        first = {p: cmds[q[0]].payload() for p, q in ports.items() if q}
        if pre_reset is not None:
            await _initialise(ctx, dut, {})
            pre_cmds, min_done = pre_reset
            run.pre_reset = await _play_then_reset(ctx, dut, cd_sync.rst, pre_cmds,
                                                   rng=rng, min_done=min_done)
        await _initialise(ctx, dut, first)
        nxt = {"a": 0, "c": 0}
        done_out = {"w": 0, "r": 0}
        bufs = {"w": [], "r": []}
        outs = {"w": ports["a"], "r": ports["c"]}
        stuck = 0
        cycle = 0
        extra_frees = 0
        held = {"w": None, "r": None}
        offered = {"a": False, "c": False}
        while done_out["w"] < len(ports["a"]) or done_out["r"] < len(ports["c"]):
            for p, port in (("a", dut.append), ("c", dut.cmd)):
                q = ports[p]
                if nxt[p] < len(q):
                    idx = q[nxt[p]]
                    other = ports["c" if p == "a" else "a"]
                    o_next = other[nxt["c" if p == "a" else "a"]] \
                        if nxt["c" if p == "a" else "a"] < len(other) else len(cmds)
                    in_order = o_next > idx or stuck > order_slack
                    if offered[p] or (in_order and rng.random() < p_valid):
                        offered[p] = True     # valid, once raised, holds until the transfer
                        ctx.set(port.valid, 1)
                        ctx.set(port.payload, cmds[idx].payload())
                    else:
                        ctx.set(port.valid, 0)
                else:
                    ctx.set(port.valid, 0)
            ctx.set(dut.wr_out.ready, rng.random() < p_ready)
            ctx.set(dut.rd_out.ready, rng.random() < p_ready)
            (_, _, av, ar, cv, cr, wv, wr, wp, rv, rr, rp, oop) = await ctx.tick().sample(
                dut.append.valid, dut.append.ready, dut.cmd.valid, dut.cmd.ready,
                dut.wr_out.valid, dut.wr_out.ready, dut.wr_out.payload,
                dut.rd_out.valid, dut.rd_out.ready, dut.rd_out.payload, dut.out_of_pages)
            progress = False
            for p, v, r in (("a", av, ar), ("c", cv, cr)):
                if v and r:
                    run.accepted[ports[p][nxt[p]]] = cycle
                    nxt[p] += 1
                    offered[p] = False
                    progress = True
            for o, v, r, pl in (("w", wv, wr, wp), ("r", rv, rr, rp)):
                # stream rules: once valid, a record holds until it is taken
                if held[o] is not None:
                    assert v and _rec(pl) == held[o], f"{o}_out dropped or changed a record"
                held[o] = _rec(pl) if v and not r else None
                if v and r:
                    rec = _rec(pl)
                    bufs[o].append(rec)
                    if rec[0] == Kind.STATUS:
                        idx = outs[o][done_out[o]]
                        run.records[idx] = bufs[o]
                        run.completed[idx] = cycle
                        bufs[o] = []
                        done_out[o] += 1
                        progress = True
            if oop:
                run.oop_cycles.append(cycle)
            stuck = 0 if progress else stuck + 1
            if (oop and stuck > 2 * order_slack and nxt["c"] == len(ports["c"])
                    and done_out["r"] == len(ports["c"])):
                # the plan ran out of frees while an append waits: release a sequence
                cmds.append(Free(extra_frees % cfg.mmu.sequences))
                ports["c"].append(len(cmds) - 1)
                extra_frees += 1
                stuck = 0
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"simulation did not finish in {max_cycles} cycles "
                                     f"(accepted {nxt}, completed {done_out})")
        run.cycles = cycle

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    for mon in monitors:
        sim.add_process(mon)
    sim.run()
    return run


def check(cfg, cmds, run):
    """Replay the commands in the order the RTL executed them; compare every record.

    Returns the golden model after the replay and a tally of statuses.
    """
    model = MMUModel(cfg)
    events = sorted([(run.completed[i], 1, i) for i in range(len(cmds))]
                    + [(run.accepted[i], 0, i) for i in range(len(cmds))
                       if isinstance(cmds[i], Append)])
    order = [i for _, kind, i in events if kind == 1]
    pos = {i: k for k, i in enumerate(order)}
    tally = {}
    stalls = 0
    done = set()
    for cyc, kind, i in events:
        c = cmds[i]
        if kind == 0:
            # accepted; if a cmd-port command completed before it, it must have stalled
            later_first = [j for j in order[len(done):pos[i]]]
            if later_first:
                assert c.apply(model) is STALL, \
                    f"command {i} {c} waited for pages although the model had enough"
                assert any(run.accepted[i] <= t <= run.completed[i] for t in run.oop_cycles), \
                    f"command {i} stalled without out_of_pages"
                stalls += 1
            continue
        done.add(i)
        want = c.apply(model)
        assert want is not STALL, f"command {i} {c}: RTL executed it, the model would stall"
        got = run.records[i]
        assert got == [tuple(int(x) for x in r) for r in want], \
            f"command {i} {c}:\n  rtl   {got}\n  model {[tuple(r) for r in want]}"
        st = Status(want[-1].status).name
        tally[st] = tally.get(st, 0) + 1
        model.check_invariants()
    # out_of_pages only while an append is held
    held = [(run.accepted[i], run.completed[i]) for i in range(len(cmds))
            if isinstance(cmds[i], Append)]
    for t in run.oop_cycles:
        assert any(a <= t <= b for a, b in held), f"out_of_pages high at cycle {t} with no append"
    tally["stalls"] = stalls
    return model, tally
