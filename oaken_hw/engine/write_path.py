"""The write path: the quantizer's three streams, the MMU append, and the memory writes."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..mmu.layout import Kind, MMULayout, Status
from ..mmu.mmu import append_layout, record_layout
from .byte_queue import ByteQueue, beat_take
from .ports import EnginePorts

__all__ = ["WritePath"]


def head_counts(cfg, meta_data):
    """Sparse bytes of every head: the sum of its blocks' counts in a meta record (Values)."""
    q = cfg.quant
    per_head = cfg.model.head_dim // q.sparse_block
    first = 9                                          # the counts follow 4 FP16 and n_lo
    out = []
    for h in range(cfg.model.kv_heads):
        total = Const(0, 1)
        for b in range(h * per_head, (h + 1) * per_head):
            total = total + meta_data[8 * (first + b):8 * (first + b + 1)]
        out.append(total)
    return out


class WritePath(wiring.Component):
    """Writes each quantized vector where the MMU puts it.

    The meta record (which leaves the quantizer with the vector's first beats) starts the
    MMU append at once; its burst records then arrive in the canonical order (dense of every
    head, sparse of every head, meta, status) and each is turned into memory beats from the
    matching buffer: dense beats regrouped to the memory width, sparse bytes through a
    :class:`ByteQueue` and rotated to the burst's byte offset (byte enables on the bytes
    written only), the meta record in its slot's lanes. A failed append writes nothing: its
    vector's buffered data is dropped. ``done`` carries one status per vector after its last
    memory beat was accepted.

    Parameters
    ----------
    cfg : OakenConfig
    dense_layout, sparse_layout, meta_layout : data.Layout
        The quantization engine's output payloads.

    Attributes
    ----------
    dense, sparse, meta : In(stream.Signature(...))
        From the quantization engine.
    append : Out(stream.Signature(append_layout))
    records : In(stream.Signature(record_layout))
        The MMU's ``wr_out``.
    wmem_cmd, wmem_wdata : Out(stream.Signature(...))
        The memory write port (:class:`EnginePorts`).
    done : Out(stream.Signature(EnginePorts.write_done))
    """

    def __init__(self, *, cfg, dense_layout, sparse_layout, meta_layout):
        self.cfg = cfg
        self.L = L = MMULayout(cfg)
        self.P = P = EnginePorts(cfg)
        self.dense_layout = dense_layout
        super().__init__({
            "dense": In(stream.Signature(dense_layout)),
            "sparse": In(stream.Signature(sparse_layout)),
            "meta": In(stream.Signature(meta_layout)),
            "append": Out(stream.Signature(append_layout(L))),
            "records": In(stream.Signature(record_layout(L))),
            "wmem_cmd": Out(stream.Signature(P.mem_cmd)),
            "wmem_wdata": Out(stream.Signature(P.mem_wdata)),
            "done": Out(stream.Signature(P.write_done)),
        })

    def elaborate(self, platform):
        cfg, L, P = self.cfg, self.L, self.P
        m = Module()
        N, s = P.beat_bytes, P.beat_shift
        lanes = cfg.quant.lanes
        dbits, ratio = P.dense_bits, P.dense_ratio
        vec_dense_beats = L.heads * L.dense_bytes // N
        bpv = cfg.beats_per_vector

        # ---------------------------------------------------------------- meta: start the append
        info_layout = data.StructLayout({
            "seq": L.seq_bits, "layer": L.layer_bits, "kv": 1, "pos": P.write_done["pos"].shape,
            "sparse": range(cfg.vector_len + 1)})
        m.submodules.meta_fifo = meta_fifo = SyncFIFOBuffered(width=L.meta_bytes * 8, depth=4)
        m.submodules.info_fifo = info_fifo = SyncFIFOBuffered(width=info_layout.size, depth=4)
        hdr = self.meta.payload.header
        counts = head_counts(cfg, self.meta.payload.data)
        room = meta_fifo.w_rdy & info_fifo.w_rdy
        info_in = data.View(info_layout, info_fifo.w_data)
        # The append waits in a register: taking the meta record depends on registers only.
        # Passing the MMU's `append.ready` through to the quantizer's meta FIFO was the
        # engine's critical path at 68.1 MHz (the read path's command -> the MMU -> here ->
        # the quantizer, 14.7 ns, 12.5 of it routing). A record is taken only while the
        # register is empty, one every other cycle at most: an append takes the MMU longer.
        staged = Signal()
        take_meta = self.meta.valid & self.meta.ready
        with m.If(self.append.ready):
            m.d.sync += staged.eq(0)
        with m.If(take_meta):
            m.d.sync += [staged.eq(1), self.append.payload.seq.eq(hdr.seq),
                         self.append.payload.layer.eq(hdr.layer),
                         self.append.payload.kv.eq(hdr.kv), self.append.payload.pos.eq(hdr.pos)]
            m.d.sync += [self.append.payload.counts[h].eq(c) for h, c in enumerate(counts)]
        m.d.comb += [
            self.append.valid.eq(staged),
            self.meta.ready.eq(~staged & room),
            meta_fifo.w_data.eq(self.meta.payload.data),
            info_in.seq.eq(hdr.seq), info_in.layer.eq(hdr.layer), info_in.kv.eq(hdr.kv),
            info_in.pos.eq(hdr.pos),
            info_in.sparse.eq(sum(counts)),
            meta_fifo.w_en.eq(take_meta),
            info_fifo.w_en.eq(take_meta),
        ]

        # ---------------------------------------------------------------- dense: regroup to N bytes
        m.submodules.dense_fifo = dense_fifo = SyncFIFOBuffered(
            width=8 * N, depth=2 * vec_dense_beats + 4)
        if ratio == 1:
            m.d.comb += [dense_fifo.w_data.eq(self.dense.payload.data),
                         dense_fifo.w_en.eq(self.dense.valid),
                         self.dense.ready.eq(dense_fifo.w_rdy)]
        else:
            part = Signal(dbits * (ratio - 1))
            k = Signal(range(ratio))
            full = k == ratio - 1
            m.d.comb += [self.dense.ready.eq(~full | dense_fifo.w_rdy),
                         dense_fifo.w_data.eq(Cat(part, self.dense.payload.data)),
                         dense_fifo.w_en.eq(self.dense.valid & full)]
            with m.If(self.dense.valid & self.dense.ready):
                m.d.sync += [part.eq(Cat(part[dbits:], self.dense.payload.data)),
                             k.eq(Mux(full, 0, k + 1))]

        # ---------------------------------------------------------------- sparse: bytes queue
        sw = lanes * 8 + len(Signal(range(lanes + 1)))
        m.submodules.sparse_fifo = sparse_fifo = SyncFIFOBuffered(width=sw, depth=2 * bpv + 8)
        m.submodules.bytes = bq = ByteQueue(in_bytes=lanes, out_bytes=N)
        m.d.comb += [
            sparse_fifo.w_data.eq(Cat(self.sparse.payload.data, self.sparse.payload.count)),
            sparse_fifo.w_en.eq(self.sparse.valid),
            self.sparse.ready.eq(sparse_fifo.w_rdy),
        ]
        # a register between the FIFO's block RAM read data (5.8 ns clock-to-output on an
        # ECP5 DP16KD) and the queue's shifters, which otherwise were the engine's critical path
        staged_v = Signal()
        staged = Signal(sw)
        m.d.comb += [sparse_fifo.r_en.eq(~staged_v | bq.i.ready),
                     bq.i.valid.eq(staged_v), bq.i.payload.eq(staged)]
        with m.If(sparse_fifo.r_en):
            m.d.sync += [staged_v.eq(sparse_fifo.r_rdy), staged.eq(sparse_fifo.r_data)]

        # ---------------------------------------------------------------- records -> beats
        # The OK status of an append is folded into its last record (`end`), so it costs the
        # writer no cycle: a record is held until the next one shows whether it was the last.
        # A failed append sends its status alone; it goes through as it is.
        # each entry carries its record's first beat as well: the bytes it takes
        # (`min(N - lane, length)`) and whether that is all of them, worked out as the record
        # is pushed, not behind the FIFO's output (there, the subtraction and the compare
        # came before the byte queue's `need` and its compare: the FIFO's output -> `enough`
        # was the engine's critical path at seed 2 in session 22, 12.4 ns, 22 levels)
        entry = data.StructLayout({"rec": record_layout(L), "end": 1,
                                   "take": range(N + 1), "last": 1})
        m.submodules.rec_fifo = rec_fifo = SyncFIFOBuffered(width=entry.size, depth=8)
        incoming = self.records.payload
        held = data.Signal(record_layout(L))
        held_v = Signal()
        is_status = incoming.kind == Kind.STATUS
        push = data.View(entry, rec_fifo.w_data)
        first_take, first_last = beat_take(push.rec.length, N - push.rec.addr[:s])
        m.d.comb += [
            self.records.ready.eq(rec_fifo.w_rdy),
            rec_fifo.w_en.eq(self.records.valid & (held_v | is_status)),
            push.rec.eq(Mux(held_v, held, incoming)),
            push.end.eq(~held_v | is_status),
            push.take.eq(first_take), push.last.eq(first_last),
        ]
        with m.If(self.records.valid & self.records.ready):
            m.d.sync += [held.eq(incoming), held_v.eq(~is_status)]
        ent = data.View(entry, rec_fifo.r_data)
        rec = ent.rec

        # The record being written, as a cursor of registers: its next beat's address and
        # byte lane, the bytes that beat takes (`c_take`) and whether it is the record's last.
        # A record is loaded from the FIFO's output with its first beat worked out, and each
        # beat taken steps the cursor, so that the beat's handshake (`fire`, and the queue's
        # `take` behind it) starts from registers: computed from the FIFO's output through
        # an adder, a subtractor and two compares, it was the 4-lane engine's critical path
        # (16.7 ns, 26 levels on ECP5).
        c_v = Signal()                           # a record is loaded
        c_kind = Signal(2)
        c_status = Signal(3)
        c_end = Signal()
        c_beat = Signal(P.addr_bits)             # beat address of the next beat
        c_lane = Signal(max(s, 1))
        c_take = Signal(range(N + 1))            # bytes the next beat takes: min(N - lane, left)
        c_last = Signal()                        # ... and it is the record's last
        c_rest = Signal(L.len_bits)              # bytes of the record after that beat
        n_take = Signal(range(N + 1))            # the beat after it: min(N, rest) ...
        n_last = Signal()                        # ... and whether it is the last

        # the output beat register, forked into the command and data streams
        cmd_pend, data_pend = Signal(), Signal()
        o_addr = Signal(P.addr_bits)
        o_data = Signal(8 * N)
        o_be = Signal(N)
        out_free = Signal()
        m.d.comb += [
            out_free.eq((~cmd_pend | self.wmem_cmd.ready) & (~data_pend | self.wmem_wdata.ready)),
            self.wmem_cmd.valid.eq(cmd_pend),
            self.wmem_cmd.payload.we.eq(1),
            self.wmem_cmd.payload.addr.eq(o_addr),
            self.wmem_wdata.valid.eq(data_pend),
            self.wmem_wdata.payload.data.eq(o_data),
            self.wmem_wdata.payload.we.eq(o_be),
        ]
        with m.If(self.wmem_cmd.ready):
            m.d.sync += cmd_pend.eq(0)
        with m.If(self.wmem_wdata.ready):
            m.d.sync += data_pend.eq(0)
        fire = Signal()
        b_addr = Signal(P.addr_bits)
        b_data = Signal(8 * N)
        b_be = Signal(N)
        b_end = Signal()
        o_end = Signal()                 # the beat is its vector's last
        with m.If(fire):
            m.d.sync += [cmd_pend.eq(1), data_pend.eq(1), o_end.eq(b_end), o_addr.eq(b_addr)]
        # the wide data and byte enables load whenever the register is free, not with `fire`
        # (a beat not taken leaves them unused: `data_pend` is low): their enable is then
        # registers and the port's `ready`, not the beat's handshake, which with the source
        # mux behind the byte queue's rotation made them the write path's latest endpoints
        with m.If(out_free):
            m.d.sync += [o_data.eq(b_data), o_be.eq(b_be)]
        # the vector is written when both halves of its last beat have been taken
        written = Signal()
        m.d.comb += written.eq(o_end & (cmd_pend | data_pend) & out_free)

        # the status of each vector, in order
        m.submodules.done_fifo = done_fifo = SyncFIFOBuffered(width=P.write_done.size, depth=4)
        m.d.comb += [self.done.valid.eq(done_fifo.r_rdy),
                     self.done.payload.eq(done_fifo.r_data),
                     done_fifo.r_en.eq(self.done.ready)]
        info = data.View(info_layout, info_fifo.r_data)
        done_in = data.View(P.write_done, done_fifo.w_data)
        m.d.comb += [done_in.seq.eq(info.seq), done_in.layer.eq(info.layer),
                     done_in.kv.eq(info.kv), done_in.pos.eq(info.pos),
                     done_in.status.eq(Mux(written, Status.OK, c_status))]
        with m.If(written):
            m.d.comb += [done_fifo.w_en.eq(1), info_fifo.r_en.eq(1)]

        load = Signal()
        m.d.comb += rec_fifo.r_en.eq(load)
        done_rec = Signal()                      # a status record is consumed
        # `c_take`'s next value: the next record's first take when one is loaded, else the
        # next beat's when the beat fires, else the same. Both come from registers (`n_take`,
        # and the record FIFO's entry), never from an adder: the beat's handshake chooses
        # between them and the byte queue's `need` below adds them beside it.
        lane0 = rec.addr[:s]
        load_rest = Signal(L.len_bits)
        m.d.comb += load_rest.eq(rec.length - ent.take)
        step_rest = Signal(L.len_bits)
        m.d.comb += step_rest.eq(c_rest - n_take)
        load_early = Signal()                    # a load that does not wait for `fire`
        m.d.comb += load_early.eq(~c_v | done_rec)
        take_fired = Mux(c_last, ent.take, n_take)
        take_held = Mux(load_early, ent.take, c_take)
        m.d.comb += load.eq(load_early | (fire & c_last))

        def after_beat(rest):
            # the bytes after the beat being loaded, and the beat they start with
            take, last = beat_take(rest, N)
            return [c_rest.eq(rest), n_take.eq(take), n_last.eq(last)]

        with m.If(fire):
            # every beat after a record's first starts at lane 0
            m.d.sync += [c_beat.eq(c_beat + 1), c_lane.eq(0), c_last.eq(n_last),
                         *after_beat(step_rest)]
        with m.If(load):
            m.d.sync += [c_v.eq(rec_fifo.r_rdy), c_kind.eq(rec.kind), c_status.eq(rec.status),
                         c_end.eq(ent.end), c_beat.eq(rec.addr >> s), c_lane.eq(lane0),
                         c_last.eq(ent.last), *after_beat(load_rest)]
        m.d.sync += c_take.eq(Mux(fire, take_fired, take_held))
        # The byte queue registers whether it will hold the next take (`bq.enough`, which
        # the sparse beat's handshake waits for); its `need` is that take plus this cycle's.
        # Both sums are formed beside the handshake, and the queue chooses by `fire` (its
        # `sel`) after its own sums and compares (a fired beat takes `c_take` from the queue
        # if it is sparse; otherwise only DROP takes, `drop_now`). With the sum behind
        # `fire`'s muxes, c_take -> `fire` -> the adder -> `enough` was the engine's
        # critical path at 84.9 MHz (11.8 ns, 4.8 of them logic in 18 levels; session 22). So were the takes themselves while they were worked out here: a
        # record's first from the record FIFO's output (12.4 ns, 22 levels; now in `entry`)
        # and the next beat's from the record's bytes left less `c_take` (11.3 ns, 21 levels
        # at 88.6 MHz; now the register `n_take`, one beat ahead: 92.3 MHz at the same seed)
        drop_now = Signal(range(N + 1))
        fired_take = Mux(c_kind == Kind.SPARSE, c_take, 0)
        m.d.comb += [b_addr.eq(c_beat), bq.lane.eq(c_lane), bq.sel.eq(fire),
                     bq.take[0].eq(drop_now), bq.take[1].eq(fired_take),
                     bq.need[0].eq(take_held + drop_now),
                     bq.need[1].eq(take_fired + fired_take)]
        ones = Signal(N + 1)                     # `take` ones: the byte enables before the shift
        m.d.comb += ones.eq((Const(1, N + 1) << c_take) - 1)

        # the beat's data and byte enables by the record's kind, outside the state machine
        # (under it, they would be zero outside RECORD and the mux would take its state too)
        with m.Switch(c_kind):
            with m.Case(Kind.DENSE):
                m.d.comb += [b_data.eq(dense_fifo.r_data), b_be.eq((1 << N) - 1)]
            with m.Case(Kind.SPARSE):
                m.d.comb += [b_data.eq(bq.head), b_be.eq((ones << c_lane)[:N])]
            with m.Default():
                m.d.comb += [b_data.eq((meta_fifo.r_data << (c_lane * 8))[:8 * N]),
                             b_be.eq(Const((1 << L.meta_bytes) - 1, N) << c_lane)]

        drop_dense = Signal(range(vec_dense_beats + 1))
        drop_sparse = Signal(range(cfg.vector_len + 1))
        # the bytes the drop takes next, min(drop_sparse, N), a register for the same
        # reason as c_take (drop_sparse -> this compare -> the queue was the next path)
        drop_take = Signal(range(N + 1))
        drop_meta = Signal()

        def set_drop_sparse(v):
            m.d.sync += [drop_sparse.eq(v), drop_take.eq(beat_take(v, N)[0])]

        with m.FSM():
            with m.State("RECORD"):
                with m.If(c_v):
                    with m.Switch(c_kind):
                        with m.Case(Kind.DENSE):
                            m.d.comb += fire.eq(out_free & dense_fifo.r_rdy)
                            m.d.comb += dense_fifo.r_en.eq(fire)
                        with m.Case(Kind.SPARSE):
                            m.d.comb += fire.eq(out_free & bq.enough)    # fill >= c_take
                        with m.Case(Kind.META):
                            m.d.comb += [
                                # room for the status pushed when the beat is taken
                                fire.eq(out_free & meta_fifo.r_rdy & done_fifo.w_rdy),
                                meta_fifo.r_en.eq(fire),
                                b_end.eq(c_end),
                            ]
                        with m.Case(Kind.STATUS):
                            # only failed appends get here; none of their beats is pending,
                            # so the status FIFO has one writer at a time
                            go = info_fifo.r_rdy & done_fifo.w_rdy & ~cmd_pend & ~data_pend
                            with m.If(go):
                                m.d.comb += [done_fifo.w_en.eq(1), info_fifo.r_en.eq(1),
                                             done_rec.eq(1)]
                            with m.If(go & (c_status != Status.OK)):
                                m.d.sync += [drop_dense.eq(vec_dense_beats), drop_meta.eq(1)]
                                set_drop_sparse(info.sparse)
                                m.next = "DROP"
            with m.State("DROP"):
                # a failed append: its vector's data was buffered but has nowhere to go
                with m.If((drop_dense != 0) & dense_fifo.r_rdy):
                    m.d.comb += dense_fifo.r_en.eq(1)
                    m.d.sync += drop_dense.eq(drop_dense - 1)
                with m.If(bq.fill >= drop_take):
                    m.d.comb += drop_now.eq(drop_take)
                    set_drop_sparse(drop_sparse - drop_take)
                with m.If(drop_meta & meta_fifo.r_rdy):
                    m.d.comb += meta_fifo.r_en.eq(1)
                    m.d.sync += drop_meta.eq(0)
                with m.If((drop_dense == 0) & (drop_sparse == 0) & ~drop_meta):
                    m.next = "RECORD"
        return m
