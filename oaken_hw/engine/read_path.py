"""The read path: a head's token range, through the MMU and memory, to the dequantizer."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..mmu.layout import Kind, MMULayout, Op, Status
from ..mmu.mmu import cmd_layout, record_layout
from .byte_queue import ByteQueue, beat_take
from .ports import EnginePorts

__all__ = ["ReadPath"]

#: Tokens whose metadata may be read ahead of their data (see ``ReadPath``).
LOOKAHEAD = 16
#: Memory beats read ahead of the dense splitter and of the sparse framing queue (the depth
#: of their FIFOs): a beat holds its credit for about ``Lm + 5`` cycles at a read latency of
#: ``Lm`` cycles, so 16 keep a stream taken at one beat per cycle at full rate up to
#: ``Lm`` = 11 (16 entries cost the block's LUT RAM no more than 8).
DATA_AHEAD = 16


class ReadPath(wiring.Component):
    """Serves read requests (one head's tokens ``[lo, hi)``) and frees.

    Per request the MMU translates three ranges, one command after the other: the metadata
    records ``[0, hi)`` of the group's vector, the head's dense slots ``[lo, hi)``, and the
    head's sparse stream from ``S(lo)`` to its end (``S(lo)``, where token ``lo``'s sparse
    bytes start, is the sum of the head's counts in the records before ``lo``: those are
    read first, for the sum only). The bursts wait in one FIFO per kind while an *issuer*
    turns them into memory reads, one beat per cycle, by priority:

    * the sparse beats of the tokens before ``td``, each taken whole as far as its bytes
      belong to tokens whose count is known: a beat shared by two tokens is read once, and
      no byte beyond ``S(hi)`` is read;
    * metadata of token ``ti`` up to ``LOOKAHEAD`` tokens ahead of the data;
    * the dense beats of token ``td`` once its sparse count is known (its record came back)
      and all sparse bytes of the tokens before it are requested.

    Read data returns in order; a tag per beat says where it goes (the sum, the
    dequantizer's meta, dense or sparse input). The meta record is cut to the head's view
    (its block counts only) and the dequantizer decodes each token as a ``scope = "head"``
    vector. Dense beats queue in a FIFO (``DATA_AHEAD`` deep) in front of the splitter that
    cuts them into dequantizer beats; sparse beats in another in front of the queue that
    re-frames their bytes per token (a :class:`ByteQueue`).

    A beat is read only when its buffer has room for it: a credit counter per buffer (meta
    FIFO and the framer's count FIFO, dense FIFO, sparse FIFO) is taken at the read and
    given back when the buffer's reader takes the entry. So the read data is
    never held up: ``rmem_rdata.ready`` is the tag FIFO's ``r_rdy``, a register, and no
    buffer's ``ready`` reaches the memory port or the wide registers behind it (that chain,
    a count FIFO's level to the tag FIFO's output enable, was the engine's critical path,
    13.8 ns). The buffers are emptied in token order, and a token's reads need no credit held
    by a later token's entries (its meta is read before its dense beats, and those before its
    sparse bytes, which come before the next token's dense beats), so the oldest token's
    beats can always be read: no deadlock for any memory latency or outlier count.

    A free is sent to the MMU only when no request is in flight and every memory read has
    returned, so a page is never reused under a read.

    Parameters
    ----------
    cfg : OakenConfig
    meta_layout, dense_layout, sparse_layout : data.Layout
        The head-view dequantization engine's input payloads.

    Attributes
    ----------
    req : In(stream.Signature(EnginePorts.read))
    free : In(stream.Signature(EnginePorts.free))
    free_done : Out(stream.Signature(EnginePorts.free_done))
    cmd : Out(stream.Signature(cmd_layout))
    records : In(stream.Signature(record_layout))
        The MMU's ``rd_out``.
    rmem_cmd : Out(stream.Signature(EnginePorts.mem_cmd))
    rmem_rdata : In(stream.Signature(EnginePorts.mem_rdata))
    meta, dense, sparse : Out(stream.Signature(...))
        To the dequantization engine.
    vector_done : In(1)
        Strobe: the dequantizer output a token's last beat.
    done : Out(stream.Signature(EnginePorts.read_done))
    """

    def __init__(self, *, cfg, meta_layout, dense_layout, sparse_layout):
        self.cfg = cfg
        self.L = L = MMULayout(cfg)
        self.P = P = EnginePorts(cfg)
        self.meta_layout = data.Layout.cast(meta_layout)
        super().__init__({
            "req": In(stream.Signature(P.read)),
            "free": In(stream.Signature(P.free)),
            "free_done": Out(stream.Signature(P.free_done)),
            "cmd": Out(stream.Signature(cmd_layout(L))),
            "records": In(stream.Signature(record_layout(L))),
            "rmem_cmd": Out(stream.Signature(P.mem_cmd)),
            "rmem_rdata": In(stream.Signature(P.mem_rdata)),
            "meta": Out(stream.Signature(meta_layout)),
            "dense": Out(stream.Signature(dense_layout)),
            "sparse": Out(stream.Signature(sparse_layout)),
            "vector_done": In(1),
            "done": Out(stream.Signature(P.read_done)),
        })

    def elaborate(self, platform):
        cfg, L, P = self.cfg, self.L, self.P
        m = Module()
        N, s = P.beat_bytes, P.beat_shift
        lanes = cfg.quant.lanes
        dbits, ratio = P.dense_bits, P.dense_ratio
        dbeats = L.dense_bytes // N                 # memory beats of one head's dense slot
        per_head = cfg.model.head_dim // cfg.quant.sparse_block
        tok = P.read["hi"].shape
        to_end = L.to_end
        cap_bytes = L.sparse_capacity

        # ---------------------------------------------------------------- the request
        r = data.Signal(P.read)
        m.submodules.meta_rec = meta_rec = SyncFIFOBuffered(
            width=record_layout(L).size, depth=L.meta_entries + 2)
        m.submodules.dense_rec = dense_rec = SyncFIFOBuffered(
            width=record_layout(L).size, depth=L.dense_entries + 2)
        m.submodules.sparse_rec = sparse_rec = SyncFIFOBuffered(
            width=record_layout(L).size, depth=L.sparse_entries + 2)
        mrec = data.View(record_layout(L), meta_rec.r_data)
        drec = data.View(record_layout(L), dense_rec.r_data)
        srec = data.View(record_layout(L), sparse_rec.r_data)
        inrec = self.records.payload

        # completions: one per request, released when its tokens have left the dequantizer
        done_layout = P.read_done
        m.submodules.completions = comp = SyncFIFOBuffered(width=done_layout.size, depth=4)
        comp_in = data.View(done_layout, comp.w_data)

        # state shared with the dispatcher (per request; reset when a request is accepted)
        slo_seen = Signal(tok)                      # sum-only records back
        slo_sum = Signal(range(cap_bytes + 1))      # their head's sparse bytes: S(lo)
        known = Signal(range(cap_bytes + 1))        # sparse bytes of tokens >= lo known so far
        issued = Signal(range(cap_bytes + 1))       # sparse bytes of the request requested
        need_before = Signal(range(cap_bytes + 1))  # sparse bytes of the tokens before `td`
        ti = Signal(tok)                            # next metadata token to request
        td = Signal(tok)                            # next token whose data is requested
        running = Signal()                          # the issuer has a request
        moff = Signal(L.len_bits)                   # bytes of the current bursts consumed
        doff = Signal(L.len_bits)
        # ... and moff + meta_slot, doff + dense_slot, registers: a burst's last slot is an
        # equality with the FIFO's output, not an adder in front of it (that compare ends in
        # the record FIFO's `r_en`)
        moff_end = Signal(L.len_bits + 1, init=L.meta_slot)
        doff_end = Signal(L.len_bits + 1, init=L.dense_slot)
        # The compares the issuer's choice depends on, as registers: `behind` is
        # issued < need_before, `m_room` ti < hi and ti < td + LOOKAHEAD, `d_room` td < hi
        # (valid while `running`: `r` changes only with a request, before it runs).
        # Compared in the same cycle, these and the credit compares ran through the choice
        # into the record FIFOs' `r_en`, their level counters and output registers: the
        # read path's critical paths (12.9 ns, dense_rec's level). Each flag is loaded by
        # the event that changes its operands (a request, its start, a sparse, meta or last
        # dense beat issued), from compares of registers: compared after the choice, a flag
        # was a carry chain behind the issuer's handshake (12.1 ns into `m_room` from the
        # MMU's request, session 20).
        behind = Signal()
        m_room = Signal()
        d_room = Signal()
        # the sparse burst being requested, as a cursor of registers (as the write path's):
        # its next byte address and t1 = min(bytes to the beat's end, bytes left) with
        # whether that is all of them, so that a request's byte count and the FIFO's pop
        # start from registers (from the FIFO's output through an adder and three compares
        # into the pop they were the read path's critical path, 15.9 ns)
        sv = Signal()
        s_addr = Signal(L.addr_bits)
        s_t1 = Signal(range(N + 1))
        s_t1_last = Signal()
        # the bytes after t1 and the next beat's take, min(N, s_rest), with whether it is
        # the last: registers one beat ahead (the write path's `n_take`), so that a whole
        # beat's step is `i_end + n_t1`, an adder of registers. Worked out in that step
        # (bytes left less s_t1, its min with N, then the adder) it was the read path's
        # critical path (10.57 ns, 29 levels, session 24). Every beat after a burst's first
        # is a whole N but its last, so the step after n_t1 is s_rest - N, beside its
        # compare.
        s_rest = Signal(L.len_bits)
        n_t1 = Signal(range(N + 1))
        n_t1_last = Signal()
        # issued + s_t1, a register, so that "the request takes all of t1" is one compare
        # of two registers, `i_end <= known`: as `s_t1 <= known - issued`, its subtractor
        # and compare ran into the cursor's pop and the record FIFO's level, the read
        # path's critical path (10.8 ns at seed 2, 11.1 at seed 1, session 23)
        i_end = Signal(range(cap_bytes + N + 1))
        s_load = Signal()                           # the cursor takes the FIFO's next burst
        sparse_drop = Signal()                      # the bursts left over are dropped
        m.d.comb += s_load.eq(~sv)
        # the cursor's next beat and the FIFO's next burst's first, outside the conditions
        # that use them (assigned under one, they would be zero when it is low, and the
        # handshake would run through these subtractors)
        room0 = Signal(range(N + 1))
        room1 = Signal(range(2 * N + 1))
        m.d.comb += [room0.eq(N - srec.addr[:s]), room1.eq(2 * N - srec.addr[:s])]
        dbeat = Signal(range(max(dbeats, 2)))       # beat of the current token's dense slot
        sparse_ready = Signal()                     # the sparse bursts are in their FIFO

        m.submodules.tags = tags = SyncFIFOBuffered(width=self._tag_layout().size, depth=32)
        a_v = Signal()                              # a read beat waits for the dispatcher

        cmdp = self.cmd.payload
        m.d.comb += [cmdp.seq.eq(r.seq), cmdp.layer.eq(r.layer), cmdp.kv.eq(r.kv),
                     cmdp.head.eq(r.head), cmdp.op.eq(Op.READ)]
        rec_status = self.records.valid & (inrec.kind == Kind.STATUS)
        # bursts go to their kind's FIFO (they have room: each is as deep as a whole range)
        for kind, fifo in ((Kind.META, meta_rec), (Kind.DENSE, dense_rec),
                           (Kind.SPARSE, sparse_rec)):
            m.d.comb += [fifo.w_data.eq(inrec),
                         fifo.w_en.eq(self.records.valid & (inrec.kind == kind))]
        fd = self.free_done
        fd_pend = Signal()
        fd_seq = Signal.like(r.seq)
        m.d.comb += [fd.valid.eq(fd_pend), fd.payload.seq.eq(fd_seq)]
        with m.If(fd.ready):
            m.d.sync += fd_pend.eq(0)

        # the records are taken while a command is out (the W_ states): a register set with
        # the command's handshake and cleared with its status record, so that the MMU's
        # output handshake does not start from this state machine's state decode
        waiting = Signal()
        m.d.comb += self.records.ready.eq(waiting)
        with m.If(rec_status):
            m.d.sync += waiting.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += waiting.eq(1)

        with m.FSM():
            with m.State("IDLE"):
                drained = ~running & (tags.level == 0) & ~a_v & ~fd_pend
                with m.If(self.free.valid & drained):
                    m.d.comb += self.free.ready.eq(1)
                    m.d.sync += [r.seq.eq(self.free.payload.seq),
                                 fd_seq.eq(self.free.payload.seq)]
                    m.next = "FREE"
                with m.Elif(self.req.valid & comp.w_rdy):
                    m.d.comb += self.req.ready.eq(1)
                    m.d.sync += [issued.eq(0), need_before.eq(0), behind.eq(0)]
                    m.d.sync += [r.eq(self.req.payload), slo_seen.eq(0), slo_sum.eq(0),
                                 known.eq(0), moff.eq(0), doff.eq(0), dbeat.eq(0),
                                 moff_end.eq(L.meta_slot), doff_end.eq(L.dense_slot)]
                    with m.If(self.req.payload.lo > self.req.payload.hi):
                        m.d.comb += [comp.w_en.eq(1), comp_in.status.eq(Status.BAD_RANGE)]
                    with m.Else():
                        m.next = "C_META"
            with m.State("FREE"):
                m.d.comb += [self.cmd.valid.eq(1), cmdp.op.eq(Op.FREE)]
                with m.If(self.cmd.ready):
                    m.next = "W_FREE"
            with m.State("W_FREE"):
                with m.If(rec_status):
                    m.d.sync += [fd_pend.eq(1), fd.payload.status.eq(inrec.status)]
                    m.next = "IDLE"
            for kind, lo, hi, name, after in (
                    (Kind.META, 0, r.hi, "META", "C_DENSE"),
                    (Kind.DENSE, r.lo, r.hi, "DENSE", "W_SLO"),
                    (Kind.SPARSE, slo_sum, to_end, "SPARSE", "RUN")):
                with m.State(f"C_{name}"):
                    m.d.comb += [self.cmd.valid.eq(1), cmdp.kind.eq(kind),
                                 cmdp.lo.eq(lo), cmdp.hi.eq(hi)]
                    with m.If(self.cmd.ready):
                        m.next = f"W_{name}"
                with m.State(f"W_{name}"):
                    with m.If(rec_status):
                        with m.If(inrec.status != Status.OK):
                            # only the first command can fail; it sent no bursts
                            m.d.comb += [comp.w_en.eq(1), comp_in.status.eq(inrec.status)]
                            m.next = "IDLE"
                        with m.Else():
                            if kind == Kind.META:
                                m.d.sync += running.eq(1)
                                m.d.sync += [ti.eq(0), td.eq(r.lo),
                                             m_room.eq(r.hi != 0), d_room.eq(r.lo < r.hi)]
                            if kind == Kind.SPARSE:
                                m.d.sync += sparse_ready.eq(1)
                            m.next = after
            with m.State("W_SLO"):
                with m.If(slo_seen == r.lo):
                    m.next = "C_SPARSE"
            with m.State("RUN"):
                with m.If(~running):
                    # the issuer is done: drop the sparse bursts beyond S(hi), the one in
                    # the cursor too
                    m.d.comb += sparse_drop.eq(1)
                    with m.If(~sparse_rec.r_rdy):
                        m.d.comb += [comp.w_en.eq(1), comp_in.status.eq(Status.OK),
                                     comp_in.tokens.eq(r.hi - r.lo)]
                        m.d.sync += sparse_ready.eq(0)
                        m.next = "IDLE"

        # ---------------------------------------------------------------- the issuer
        tag_in = data.View(self._tag_layout(), tags.w_data)
        m.d.comb += [tag_in.seq.eq(r.seq), tag_in.layer.eq(r.layer), tag_in.kv.eq(r.kv),
                     tag_in.head.eq(r.head)]
        c_pend = Signal()
        c_addr = Signal(P.addr_bits)
        m.d.comb += [self.rmem_cmd.valid.eq(c_pend), self.rmem_cmd.payload.we.eq(0),
                     self.rmem_cmd.payload.addr.eq(c_addr)]
        can = Signal()
        m.d.comb += can.eq(running & (~c_pend | self.rmem_cmd.ready) & tags.w_rdy)
        with m.If(self.rmem_cmd.ready):
            m.d.sync += c_pend.eq(0)
        issue = Signal()
        i_addr = Signal(L.addr_bits)                 # byte address of the beat
        with m.If(issue):
            m.d.sync += [c_pend.eq(1), c_addr.eq(i_addr >> s)]
            m.d.comb += tags.w_en.eq(1)

        m.submodules.cnt_issue = cnt_i = SyncFIFOBuffered(
            width=len(Signal(range(cfg.model.head_dim + 1))), depth=2 * LOOKAHEAD)
        s_lane = Signal(max(s, 1))
        s_take = Signal(range(N + 1))
        s_full = Signal()                            # the request takes all of t1
        want = Signal(range(cap_bytes + 1))
        m.d.comb += [want.eq(known - issued), s_full.eq(i_end <= known),
                     s_take.eq(Mux(s_full, s_t1, want))]
        if s:
            m.d.comb += s_lane.eq(s_addr[:s])

        # a token's sparse bytes are requested after its dense beats (never further ahead:
        # the in-order read data would put them in front of the next token's dense beats);
        # a beat is taken whole when the rest of it belongs to tokens already known
        # metadata goes before dense beats: a token's dense beats wait for its count, and a
        # record read only when nothing else can go would come back too late, every token
        # credits: free entries of each buffer, less the beats read for it and not yet in it
        meta_cred = Signal(range(LOOKAHEAD + 1), init=LOOKAHEAD)
        frame_cred = Signal(range(2 * LOOKAHEAD + 1), init=2 * LOOKAHEAD)
        dense_cred = Signal(range(DATA_AHEAD + 1), init=DATA_AHEAD)
        sparse_cred = Signal(range(DATA_AHEAD + 1), init=DATA_AHEAD)
        # whether each is non-zero, registers (chosen by the credits' handshakes, below)
        meta_ok = Signal(init=1)                     # meta and frame credits
        dense_ok = Signal(init=1)
        sparse_ok = Signal(init=1)
        # the choice is from registers only (`behind`, `ti`'s and `td`'s rooms, the credit
        # flags, the FIFOs' `r_rdy`); sparse_go and dense_go exclude each other (`behind`)
        sparse_go = can & sparse_ready & sv & behind & sparse_ok
        meta_go = can & m_room & meta_rec.r_rdy & meta_ok
        dense_go = can & d_room & cnt_i.r_rdy & ~behind & dense_rec.r_rdy & dense_ok
        meta_issue = Signal()                        # a record for the dequantizer is read
        dense_issue = Signal()
        with m.If(sparse_go):
            m.d.comb += [issue.eq(1), i_addr.eq(s_addr), tag_in.kind.eq(Kind.SPARSE),
                         tag_in.lane.eq(s_lane), tag_in.take.eq(s_take)]
            # issued + s_take: i_end, or known (issued + want); a partial take leaves
            # i_end as it is (issued grows by want, s_t1 shrinks by it)
            m.d.sync += [issued.eq(Mux(s_full, i_end, known)),
                         behind.eq(Mux(s_full, i_end < need_before, known < need_before))]
            with m.If(s_full & s_t1_last):
                m.d.comb += s_load.eq(1)
            with m.Elif(s_full):
                # on to the next beat, from its lane 0
                n_last = s_rest <= 2 * N
                m.d.sync += [s_addr.eq(s_addr + s_t1), s_t1.eq(n_t1), s_t1_last.eq(n_t1_last),
                             i_end.eq(i_end + n_t1), s_rest.eq(s_rest - N),
                             n_t1.eq(Mux(n_last, s_rest - N, N)), n_t1_last.eq(n_last)]
            with m.Else():
                # fewer bytes are known than the beat holds: the rest of it waits
                # (s_rest and the next beat stay)
                m.d.sync += [s_addr.eq(s_addr + want), s_t1.eq(s_t1 - want)]
        with m.Elif(meta_go):
            a = mrec.addr + moff
            sum_only = ti < r.lo
            m.d.comb += [issue.eq(1), i_addr.eq(a), tag_in.kind.eq(Kind.META),
                         tag_in.lane.eq(a[:s] if s else 0), tag_in.pos.eq(ti),
                         tag_in.sum_only.eq(sum_only), meta_issue.eq(~sum_only)]
            m.d.sync += [ti.eq(ti + 1),
                         m_room.eq((ti + 1 < r.hi) & (ti + 1 < td + LOOKAHEAD))]
            with m.If(moff_end == mrec.length):
                m.d.comb += meta_rec.r_en.eq(1)
                m.d.sync += [moff.eq(0), moff_end.eq(L.meta_slot)]
            with m.Else():
                m.d.sync += [moff.eq(moff_end), moff_end.eq(moff_end + L.meta_slot)]
        with m.Elif(dense_go):
            last = dbeat == dbeats - 1
            m.d.comb += [issue.eq(1), i_addr.eq(drec.addr + doff + dbeat * N),
                         tag_in.kind.eq(Kind.DENSE), tag_in.last.eq(last), tag_in.pos.eq(td),
                         dense_issue.eq(1)]
            m.d.sync += dbeat.eq(Mux(last, 0, dbeat + 1))
            with m.If(last):
                m.d.comb += cnt_i.r_en.eq(1)
                m.d.sync += [td.eq(td + 1), need_before.eq(need_before + cnt_i.r_data),
                             behind.eq(issued < need_before + cnt_i.r_data),
                             m_room.eq((ti < r.hi) & (ti < td + 1 + LOOKAHEAD)),
                             d_room.eq(td + 1 < r.hi)]
                with m.If(doff_end == drec.length):
                    m.d.comb += dense_rec.r_en.eq(1)
                    m.d.sync += [doff.eq(0), doff_end.eq(L.dense_slot)]
                with m.Else():
                    m.d.sync += [doff.eq(doff_end), doff_end.eq(doff_end + L.dense_slot)]
        with m.If(s_load):
            m.d.comb += sparse_rec.r_en.eq(1)
            t1, t1_last = beat_take(srec.length, room0)
            # from `issued` as it will be: i_end after a whole last beat (sv), else it
            # stays (a request's `issued <= 0` comes while the sparse FIFO is empty); the
            # two sums beside the compare that chooses between them
            base = Mux(sv, i_end, issued)
            n_last = srec.length <= room1
            m.d.sync += [sv.eq(sparse_rec.r_rdy), s_addr.eq(srec.addr),
                         s_t1.eq(t1), s_t1_last.eq(t1_last),
                         i_end.eq(Mux(t1_last, base + srec.length, base + room0)),
                         s_rest.eq(srec.length - room0),
                         n_t1.eq(Mux(n_last, srec.length - room0, N)), n_t1_last.eq(n_last)]
        with m.If(sparse_drop):
            m.d.comb += sparse_rec.r_en.eq(1)
            m.d.sync += sv.eq(0)
        with m.If(running & (td == r.hi) & (ti == r.hi) & ~behind & ~dense_go):
            m.d.sync += running.eq(0)

        # ---------------------------------------------------------------- the dispatcher
        # The read data and its tag are registered first, the data shifted to the beat's
        # byte lane (a record's or a sparse burst's; a dense beat's lane is 0): the shift,
        # the head's block counts and their sum in one stage were the engine's critical
        # path at 79.5 MHz (tags.r_data -> slo_sum). The registered beat goes on to its
        # buffer in the next cycle, always (the credits reserved it room), so the registers
        # load every cycle, without an enable.
        a_tag = Signal(self._tag_layout())
        a_data = Signal(8 * N)
        fifo_tag = data.View(self._tag_layout(), tags.r_data)
        m.d.comb += [self.rmem_rdata.ready.eq(tags.r_rdy),
                     tags.r_en.eq(self.rmem_rdata.valid)]
        m.d.sync += [a_v.eq(self.rmem_rdata.valid & tags.r_rdy), a_tag.eq(fifo_tag),
                     a_data.eq(self.rmem_rdata.payload.data >> (fifo_tag.lane * 8))]
        tag, rd = a_tag, a_data
        m.submodules.meta_out = meta_out = SyncFIFOBuffered(
            width=self.meta_layout.size, depth=LOOKAHEAD)
        m.submodules.cnt_frame = cnt_f = SyncFIFOBuffered(
            width=len(Signal(range(cfg.model.head_dim + 1))), depth=2 * LOOKAHEAD)
        m.submodules.frame_bytes = fb = ByteQueue(in_bytes=N, out_bytes=lanes)

        rec_bytes = Signal(8 * L.meta_bytes)
        m.d.comb += rec_bytes.eq(rd[:8 * L.meta_bytes])
        blocks = [rec_bytes[8 * (9 + b):8 * (10 + b)] for b in range(L.meta_bytes - 9)]
        head_blocks = Array(Cat(*blocks[h * per_head:(h + 1) * per_head])
                            for h in range(cfg.model.kv_heads))[tag.head]
        # A record's sparse count (the sum of its head's block counts) is registered before
        # it is used: the head's mux, the sum and `known`'s adder in one cycle were the read
        # path's late endpoints at 94.7 MHz (`known`, `slo_sum`, 10.1-10.3 ns). The counts
        # and the sums they feed go on a cycle after the record (into `meta_out`, which
        # needs no count, it goes at once).
        count = Signal(range(cfg.model.head_dim + 1))
        c_meta = Signal()                            # a record of a token >= lo
        c_slo = Signal()                             # a sum-only record
        m.d.sync += count.eq(sum(head_blocks[8 * b:8 * (b + 1)] for b in range(per_head)))
        is_meta = a_v & (tag.kind == Kind.META)
        m.d.sync += [c_meta.eq(is_meta & ~tag.sum_only), c_slo.eq(is_meta & tag.sum_only)]
        with m.If(c_slo):
            m.d.sync += [slo_seen.eq(slo_seen + 1), slo_sum.eq(slo_sum + count)]
        with m.If(c_meta):
            m.d.comb += [cnt_i.w_en.eq(1), cnt_f.w_en.eq(1)]
            m.d.sync += known.eq(known + count)
        mo = data.View(self.meta_layout, meta_out.w_data)
        m.d.comb += [mo.data.eq(Cat(rec_bytes[:72], head_blocks)),
                     mo.header.seq.eq(tag.seq), mo.header.layer.eq(tag.layer),
                     mo.header.kv.eq(tag.kv), mo.header.head.eq(tag.head),
                     mo.header.pos.eq(tag.pos),
                     cnt_i.w_data.eq(count), cnt_f.w_data.eq(count)]

        # dense: one memory beat becomes `ratio` dequantizer beats. The beats queue in front
        # of the splitter, `DATA_AHEAD` deep for the round trip of their credits.
        m.submodules.dense_beats = dense_beats = SyncFIFOBuffered(width=8 * N + 1,
                                                                  depth=DATA_AHEAD)
        d_hold = Signal()
        d_data = Signal(8 * N)
        d_last = Signal()
        d_k = Signal(range(max(ratio, 2)))
        d_free = ~d_hold | (self.dense.ready & (d_k == ratio - 1))
        m.d.comb += [self.dense.valid.eq(d_hold),
                     self.dense.payload.data.eq(d_data[:dbits]),
                     self.dense.payload.last.eq(d_last & (d_k == ratio - 1))]
        with m.If(self.dense.valid & self.dense.ready):
            m.d.sync += [d_data.eq(d_data >> dbits), d_k.eq(d_k + 1)]
            with m.If(d_k == ratio - 1):
                m.d.sync += [d_hold.eq(0), d_k.eq(0)]
        with m.If(d_free & dense_beats.r_rdy):
            m.d.comb += dense_beats.r_en.eq(1)
            m.d.sync += [d_hold.eq(1), d_data.eq(dense_beats.r_data[:8 * N]),
                         d_last.eq(dense_beats.r_data[8 * N]), d_k.eq(0)]
        m.d.comb += dense_beats.w_data.eq(Cat(rd, tag.last))

        # sparse read data goes into the framing queue through a FIFO (the lane shift is
        # in front of the dispatcher's register, apart from the queue's own shifters)
        take_bits = len(tag.take)
        m.submodules.sparse_beats = sparse_beats = SyncFIFOBuffered(
            width=8 * N + take_bits, depth=DATA_AHEAD)
        m.d.comb += [sparse_beats.w_data.eq(Cat(rd, tag.take)),
                     fb.i.valid.eq(sparse_beats.r_rdy),
                     fb.i.payload.data.eq(sparse_beats.r_data[:8 * N]),
                     fb.i.payload.count.eq(sparse_beats.r_data[8 * N:]),
                     sparse_beats.r_en.eq(fb.i.ready)]
        with m.If(a_v):
            with m.Switch(tag.kind):
                with m.Case(Kind.META):
                    m.d.comb += meta_out.w_en.eq(~tag.sum_only)
                with m.Case(Kind.DENSE):
                    m.d.comb += dense_beats.w_en.eq(1)
                with m.Case(Kind.SPARSE):
                    m.d.comb += sparse_beats.w_en.eq(1)
        m.d.comb += [self.meta.valid.eq(meta_out.r_rdy), self.meta.payload.eq(meta_out.r_data),
                     meta_out.r_en.eq(self.meta.ready)]

        # sparse: per token, its bytes in beats of up to `lanes` (one empty beat if none).
        # The token being framed is a cursor of registers (bytes left, the next beat's byte
        # count and whether it is the token's last), loaded from the count FIFO, so that the
        # beat's handshake and the queue's take start from registers.
        f_v = Signal()
        f_rem = Signal(range(cfg.model.head_dim + 1))
        f_take = Signal(range(lanes + 1))
        f_last = Signal()
        # (`fb.enough`: the queue registers whether it will hold `f_take`'s next value)
        f_take_next = Signal.like(f_take)
        sp = self.sparse
        fire = Signal()
        m.d.comb += [sp.valid.eq(f_v & fb.enough),               # fill >= f_take
                     sp.payload.data.eq(fb.head), sp.payload.count.eq(f_take),
                     sp.payload.last.eq(f_last), fire.eq(sp.valid & sp.ready),
                     f_take_next.eq(f_take)]
        f_rest = Signal.like(f_rem)
        m.d.comb += f_rest.eq(f_rem - f_take)
        rest_take, rest_last = beat_take(f_rest, lanes)
        cnt = cnt_f.r_data
        load_take, load_last = beat_take(cnt, lanes)
        # the queue's take and `need` (the next take, plus this cycle's take) for either
        # outcome of the beat's handshake, sums of registers; the queue chooses by the
        # handshake last: it meets no adder on its way into the queue's `enough`
        m.d.comb += [fb.sel.eq(fire), fb.take[1].eq(f_take),
                     fb.need[0].eq(Mux(f_v, f_take, load_take)),
                     fb.need[1].eq(Mux(f_last, f_take + load_take, f_take + rest_take))]
        f_load = Signal()
        m.d.comb += f_load.eq(~f_v)
        with m.If(fire):
            with m.If(f_last):
                m.d.comb += f_load.eq(1)
            with m.Else():
                m.d.comb += f_take_next.eq(rest_take)
                m.d.sync += [f_rem.eq(f_rest), f_last.eq(rest_last)]
        with m.If(f_load):
            m.d.comb += [cnt_f.r_en.eq(1), f_take_next.eq(load_take)]
            m.d.sync += [f_v.eq(cnt_f.r_rdy), f_rem.eq(cnt), f_last.eq(load_last)]
        m.d.sync += f_take.eq(f_take_next)

        # ---------------------------------------------------------------- credits
        meta_back = self.meta.valid & self.meta.ready
        frame_back = cnt_f.r_en & cnt_f.r_rdy
        dense_back = dense_beats.r_en
        sparse_back = sparse_beats.r_en & sparse_beats.r_rdy
        creds = ((meta_cred, meta_issue, meta_back), (frame_cred, meta_issue, frame_back),
                 (dense_cred, dense_issue, dense_back), (sparse_cred, sparse_go, sparse_back))
        # The counts and their "non-zero" flags are chosen by the handshakes last, from
        # values of the register alone (cred - 1, cred + 1; cred != 1, cred != 0): summed
        # after the handshakes, the dequantizer's dense `ready` -> the dense FIFO's `r_en`
        # -> the adder -> `dense_ok` was the engine's critical path (13.3 ns, session 20).
        nonzero = []
        for cred, take, back in creds:
            only_take, only_back = take & ~back, back & ~take
            m.d.sync += cred.eq(Mux(only_take, cred - 1, Mux(only_back, cred + 1, cred)))
            nonzero.append(Mux(only_take, cred != 1, only_back | (cred != 0)))
        m.d.sync += [meta_ok.eq(nonzero[0] & nonzero[1]),
                     dense_ok.eq(nonzero[2]), sparse_ok.eq(nonzero[3])]

        # ---------------------------------------------------------------- completions
        vdone = Signal(tok)
        head = data.View(done_layout, comp.r_data)
        out_pend = Signal()
        out = data.Signal(done_layout)
        m.d.comb += [self.done.valid.eq(out_pend), self.done.payload.eq(out)]
        release = comp.r_rdy & (vdone >= head.tokens) & (~out_pend | self.done.ready)
        with m.If(self.done.ready):
            m.d.sync += out_pend.eq(0)
        with m.If(release):
            m.d.comb += comp.r_en.eq(1)
            m.d.sync += [out_pend.eq(1), out.eq(head),
                         vdone.eq(vdone - head.tokens + self.vector_done)]
        with m.Else():
            m.d.sync += vdone.eq(vdone + self.vector_done)
        return m

    def _tag_layout(self):
        L, P = self.L, self.P
        return data.StructLayout({
            "kind": 2, "sum_only": 1, "last": 1,
            "lane": max(1, P.beat_shift),
            "take": range(P.beat_bytes + 1),
            "seq": L.seq_bits, "layer": L.layer_bits, "kv": 1, "head": L.head_bits,
            "pos": P.header["pos"].shape,
        })
