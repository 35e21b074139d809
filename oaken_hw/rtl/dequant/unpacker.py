"""The unpacker: the dense, sparse and meta streams back to per-element fields.

The hardware form of :func:`oaken_hw.model.memory_format.unpack`: for every output beat of
``lanes`` elements it gives each element's dense slot, whether it is an outlier (and then its
group bit and high bit), and the vector's meta fields, with every field forced to zero for
a malformed vector. Block diagram::

    meta ──► check (MetaCheck) ──┬─► frame FIFO ──► SparseFramer ◄── sparse
                                 │                     │ (block of every entry, order
                                 │                     ▼  and count checks)
                                 │                  ZeroInserter ──► row FIFO, verdict FIFO
                                 │                                           │
                                 └─► vector FIFO ──────────────────────────┐ │
    dense ──► DenseFramer ──► dense FIFO, verdict FIFO ───────────────────►merge ──► o

**Store and forward.** A vector is malformed if anything in its sparse list is wrong, and
the last entry can be the wrong one; the golden model then decodes the *whole* vector as
zero fields. So the merge starts a vector only when both framers have seen all of it
(their verdicts are in the verdict FIFOs): the dense and row FIFOs hold one vector while
the next one arrives, which is the dense path's buffer that keeps it aligned with the
sparse path. Throughput stays one beat per cycle; latency grows by one vector.

**Framing.** Each input stream marks a vector's final beat with ``last``; vectors pair up by
order. The dense stream must have exactly ``beats_per_vector`` beats per vector; the sparse
stream any number of beats (at least one; a beat may hold 0..lanes bytes). The meta
record's block counts say which block each sparse byte belongs to; the delivered byte count
must equal their sum. A framing error never shifts the pairing of later vectors: a short
dense vector is padded, a long one cut at its ``last``; the sparse path always consumes up
to ``last``.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..common.header import header_layout

__all__ = ["dense_layout", "sparse_layout", "meta_layout", "beat_layout", "errors_layout",
           "DenseFramer", "SparseFramer", "ZeroInserter", "Unpacker"]


def _bits(n):
    """Bits of an unsigned value ``0 .. n`` (at least 1)."""
    return max(1, int(n).bit_length())


def dense_layout(cfg):
    """Dense beat: lane ``i``'s slot at bits ``[i*m, (i+1)*m)`` of ``data``; ``last``."""
    return data.StructLayout({"data": cfg.quant.lanes * cfg.quant.middle_bits, "last": 1})


def sparse_layout(cfg):
    """Sparse beat: bytes ``0 .. count-1`` of ``data`` are sparse bytes in list order."""
    lanes = cfg.quant.lanes
    return data.StructLayout({"data": data.ArrayLayout(8, lanes), "count": range(lanes + 1),
                              "last": 1})


def meta_layout(cfg):
    """One per vector: the meta record (``data``, byte 0 at the LSB) and the header."""
    return data.StructLayout({"data": cfg.meta_bytes * 8, "header": header_layout(cfg)})


def errors_layout():
    """Why a vector is malformed (several bits may be set).

    ``count``: a block count above the block size; ``meta``: ``n_lo > 2^middle_bits``, a
    non-finite FP16 word or a negative step; ``order``: indices not strictly increasing in
    a block; ``sparse``: delivered sparse bytes differ from the sum of the block counts;
    ``dense``: the dense vector had too few or too many beats.
    """
    return data.StructLayout({"count": 1, "meta": 1, "order": 1, "sparse": 1, "dense": 1})


def beat_layout(cfg):
    """The unpacker's output beat: one beat of :class:`~oaken_hw.model.quantizer.Encoded`.

    ``code`` (dense slot), ``outlier``, ``outer``, ``high`` per lane, the vector's
    ``delta_mid``, ``delta_inner``, ``inner_min``, ``delta_outer`` (FP16 bit patterns) and
    ``n_lo``, all zero when ``malformed``; ``header``, ``last``, ``errors``.
    """
    q = cfg.quant
    lanes = q.lanes
    return data.StructLayout({
        "code": data.ArrayLayout(q.middle_bits, lanes),
        "outlier": lanes, "outer": lanes, "high": lanes,
        "delta_mid": 16, "delta_inner": 16, "inner_min": 16, "delta_outer": 16,
        "n_lo": range((1 << q.middle_bits) + 1),
        "header": header_layout(cfg),
        "malformed": 1, "errors": errors_layout(), "last": 1,
    })


def _frame_layout(cfg):
    nblk = cfg.blocks_per_vector
    w = _bits(255 * nblk)
    return data.StructLayout({"prefix": data.ArrayLayout(w, max(1, nblk - 1)),
                              "total": w})


def _entry_layout(cfg):
    return data.StructLayout({"pos": _bits(cfg.vector_len - 1), "outer": 1, "high": 1})


def _entries_layout(cfg):
    lanes = cfg.quant.lanes
    return data.StructLayout({"entry": data.ArrayLayout(_entry_layout(cfg), lanes),
                              "n": range(lanes + 1), "end": 1, "order": 1, "sparse": 1})


def _row_layout(cfg):
    lanes = cfg.quant.lanes
    return data.StructLayout({"outlier": lanes, "outer": lanes, "high": lanes,
                              "empty_after": range(max(2, cfg.beats_per_vector))})


class DenseFramer(wiring.Component):
    """Dense beats into a FIFO, exactly ``beats`` per vector, and a verdict per vector.

    A vector whose ``last`` comes early is padded with zero beats (the input waits); beats
    after the ``beats``-th one are dropped up to ``last``. Either sets the vector's verdict.

    Parameters
    ----------
    width : int
        Dense data bits per beat.
    beats : int
        Beats per vector.
    depth : int
        Dense FIFO depth in beats.
    vectors : int
        Verdict FIFO depth.

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"data": width, "last": 1})))
    o : Out(stream.Signature(width))
    verdict : Out(stream.Signature(1))
        One per vector, in vector order; 1: the vector was short or long. It is pushed when
        the vector's last dense beat is in the FIFO.
    """

    def __init__(self, *, width, beats, depth, vectors):
        self.width, self.beats, self.depth, self.vectors = width, beats, depth, vectors
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"data": width, "last": 1}))),
            "o": Out(stream.Signature(width)),
            "verdict": Out(stream.Signature(1)),
        })

    def elaborate(self, platform):
        m = Module()
        K = self.beats
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.width, depth=self.depth)
        m.submodules.vfifo = vfifo = SyncFIFOBuffered(width=1, depth=self.vectors)
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready),
                     self.verdict.valid.eq(vfifo.r_rdy), self.verdict.payload.eq(vfifo.r_data),
                     vfifo.r_en.eq(self.verdict.ready)]

        cnt = Signal(range(K))
        room = fifo.w_rdy & vfifo.w_rdy
        fire = self.i.valid & self.i.ready
        final = cnt == K - 1
        with m.FSM():
            with m.State("PASS"):
                m.d.comb += [self.i.ready.eq(room), fifo.w_data.eq(self.i.payload.data),
                             fifo.w_en.eq(fire)]
                with m.If(fire):
                    with m.If(final):
                        m.d.sync += cnt.eq(0)
                        with m.If(self.i.payload.last):
                            m.d.comb += [vfifo.w_en.eq(1), vfifo.w_data.eq(0)]
                        with m.Else():
                            m.next = "DROP"
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
                        with m.If(self.i.payload.last):
                            m.next = "PAD"
            with m.State("PAD"):            # short vector: fill it up with zero beats
                m.d.comb += [fifo.w_data.eq(0), fifo.w_en.eq(room)]
                with m.If(room):
                    with m.If(final):
                        m.d.sync += cnt.eq(0)
                        m.d.comb += [vfifo.w_en.eq(1), vfifo.w_data.eq(1)]
                        m.next = "PASS"
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
            with m.State("DROP"):           # long vector: discard up to its last beat
                m.d.comb += self.i.ready.eq(vfifo.w_rdy)
                with m.If(fire & self.i.payload.last):
                    m.d.comb += [vfifo.w_en.eq(1), vfifo.w_data.eq(1)]
                    m.next = "PASS"
        return m


class SparseFramer(wiring.Component):
    """Gives every sparse byte its element position and checks the sparse list.

    The ``o``-th byte of a vector belongs to block ``b`` where
    ``prefix[b-1] <= o < prefix[b]`` (``prefix`` = running sums of the block counts) and
    sits at element ``b * sparse_block + index``. Only a strictly increasing run of
    positions is forwarded: once an entry is out of order, or beyond the sum of the counts,
    no further entry of the vector goes on, so that the :class:`ZeroInserter` always sees
    increasing positions inside the vector. One register stage; one beat per cycle.

    Attributes
    ----------
    i : In(stream.Signature(sparse_layout(cfg)))
    frame : In(stream.Signature(frame layout))
        One per vector: the running sums of the block counts and their total; taken at the
        vector's ``last`` sparse beat.
    o : Out(stream.Signature(entries layout))
        ``entry[0 .. n-1]``: position, group bit, high bit; ``end`` on the vector's final
        beat, with ``order`` (indices not increasing) and ``sparse`` (byte count differs
        from the counts' sum).
    """

    def __init__(self, *, cfg):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(sparse_layout(cfg))),
            "frame": In(stream.Signature(_frame_layout(cfg))),
            "o": Out(stream.Signature(_entries_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, q = self.cfg, self.cfg.quant
        lanes, ib, nblk = q.lanes, q.index_bits, cfg.blocks_per_vector
        pw = _bits(cfg.vector_len - 1)
        fw = len(self.frame.payload.total)
        bw = fw + 1                       # delivered-byte counter, saturating
        sat = (1 << bw) - 1
        frame = self.frame.payload

        base = Signal(bw)                 # bytes of this vector before the current beat
        prev = Signal(pw)                 # position of the last forwarded entry
        have_prev = Signal()
        order = Signal()                  # sticky: an entry was out of order

        adv = ~self.o.valid | self.o.ready
        fire = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(adv & self.frame.valid),
                     self.frame.ready.eq(fire & self.i.payload.last)]

        count = Mux(self.i.payload.count > lanes, lanes, self.i.payload.count)
        pos, ok, bad = [], [], []
        for j in range(lanes):
            byte = self.i.payload.data[j]
            o = base + j
            valid = j < count
            within = o < frame.total
            p = Signal(pw, name=f"pos{j}")
            if nblk > 1:
                blk = sum((o >= frame.prefix[b - 1]) for b in range(1, nblk))
                m.d.comb += p.eq(Cat(byte[:ib], blk))
            else:
                m.d.comb += p.eq(byte[:ib])
            inc = (~have_prev | (p > prev)) if j == 0 else (p > pos[j - 1])
            pos.append(p)
            ok.append(valid & within & inc)
            bad.append(valid & within & ~inc)
        fwd, run = [], ~order
        for j in range(lanes):
            run = run & ok[j]
            f = Signal(name=f"fwd{j}")
            m.d.comb += f.eq(run)
            fwd.append(f)
        n_fwd = sum(fwd)
        beat_bad = Cat(*bad).any()
        total = base + count
        delivered = Mux(total > sat, sat, total)[:bw]
        last_pos = Array(pos)[(count - 1)[:max(1, (lanes - 1).bit_length())]]

        with m.If(adv):
            m.d.sync += self.o.valid.eq(fire)
        with m.If(fire):
            p = self.o.payload
            for j in range(lanes):
                byte = self.i.payload.data[j]
                m.d.sync += [p.entry[j].pos.eq(pos[j]), p.entry[j].outer.eq(byte[ib]),
                             p.entry[j].high.eq(byte[ib + 1])]
            m.d.sync += [p.n.eq(n_fwd), p.end.eq(self.i.payload.last),
                         p.order.eq(order | beat_bad),
                         p.sparse.eq(delivered != frame.total)]
            with m.If(self.i.payload.last):
                m.d.sync += [base.eq(0), have_prev.eq(0), order.eq(0)]
            with m.Else():
                m.d.sync += [base.eq(delivered), order.eq(order | beat_bad)]
                with m.If(count != 0):
                    m.d.sync += [prev.eq(last_pos), have_prev.eq(1)]
        return m


class ZeroInserter(wiring.Component):
    """The zero-inserting shifter: increasing sparse positions to one row per output beat.

    A window of ``3 * lanes`` entries holds the entries of the current vector (and of the
    next one behind them). Row ``k`` takes the leading entries whose position is below
    ``(k + 1) * lanes`` and puts each at lane ``position % lanes`` (the other lanes get a
    zero: not an outlier). The row can be emitted once no later entry can still belong to
    it: the vector's end was seen, or a later entry is already in the window, or the row is
    full. The final row waits for the vector's end.

    The rows between row ``k`` and the next entry's row are empty: they leave with row
    ``k`` as a run length (``empty_after``) and the merge expands them. So the inserter
    spends one cycle per *non-empty* row, and a stretch of empty rows never makes it fall
    behind the input (which it otherwise would with one sparse beat per dense beat, where
    an empty row is only known empty when a later entry arrives).

    Attributes
    ----------
    i : In(stream.Signature(entries layout))
    o : Out(stream.Signature(row layout))
        Per vector, rows with ``empty_after`` empty rows after each, ``beats`` rows in all,
        from a FIFO of ``depth`` entries.
    verdict : Out(stream.Signature(2))
        ``order``, ``sparse`` of each vector, pushed the cycle after its end is absorbed
        (from then on its remaining rows leave one per cycle).
    """

    def __init__(self, *, cfg, depth, vectors):
        self.cfg, self.depth, self.vectors = cfg, depth, vectors
        super().__init__({
            "i": In(stream.Signature(_entries_layout(cfg))),
            "o": Out(stream.Signature(_row_layout(cfg))),
            "verdict": Out(stream.Signature(2)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes, K = cfg.quant.lanes, cfg.beats_per_vector
        ll = lanes.bit_length() - 1
        C = 3 * lanes
        el = _entry_layout(cfg)

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=_row_layout(cfg).size,
                                                    depth=self.depth)
        m.submodules.vfifo = vfifo = SyncFIFOBuffered(width=2, depth=self.vectors)
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready),
                     self.verdict.valid.eq(vfifo.r_rdy), self.verdict.payload.eq(vfifo.r_data),
                     vfifo.r_en.eq(self.verdict.ready)]

        win = [Signal(el, name=f"win{s}") for s in range(C)]
        cur_n = Signal(range(C + 1))      # leading window entries of the current vector
        nxt_n = Signal(range(C + 1))      # entries of the next vector behind them
        cur_end, nxt_end = Signal(), Signal()
        row = Signal(range(max(2, K)))

        # the row: leading current entries with position < (row + 1) * lanes (a prefix,
        # as positions increase); "<=" rather than "==" on the row number so that nothing
        # can ever get stuck in the window
        cand = []
        for s in range(lanes):
            c = Signal(name=f"cand{s}")
            m.d.comb += c.eq((s < cur_n) & ((win[s].pos >> ll) <= row))
            cand.append(c)
        # their number, from the prefix's end (one-hot to binary, no adder)
        c = Signal(range(lanes + 1))
        ends = [(cand[k - 1] if k else 1) & (~cand[k] if k < lanes else 1)
                for k in range(lanes + 1)]
        m.d.comb += c.eq(Cat(*[Cat(*[ends[k] for k in range(lanes + 1) if k >> b & 1]).any()
                               for b in range(len(c))]))
        outlier, outer, high = [], [], []
        for lane in range(lanes):
            hits = [cand[s] & (win[s].pos[:ll] == lane) if ll else cand[s]
                    for s in range(lanes)]
            outlier.append(Cat(*hits).any())
            outer.append(Cat(*[h & win[s].outer for s, h in enumerate(hits)]).any())
            high.append(Cat(*[h & win[s].high for s, h in enumerate(hits)]).any())

        # Row `row` is complete when the vector's end is in, or a later entry is (entries
        # after the candidates are in later rows), or it is full (not the final row: that
        # one waits for the end). The rows up to the next entry's row are empty; they go
        # out with this one as a run length, so that an empty stretch costs no cycles.
        # (the candidates are a prefix of the window, so these tests need no count)
        more = Signal()
        m.d.comb += more.eq(Cat(*[(s < cur_n) & ~cand[s] for s in range(lanes)],
                                (cur_n > lanes) & cand[lanes - 1]).any())
        decide = cur_end | more | (cand[lanes - 1] & (row != K - 1))
        next_pos = Array([w.pos for w in win[:lanes + 1]])[c]
        next_row = Signal(range(K + 1))
        m.d.comb += next_row.eq(Mux(more, next_pos >> ll, Mux(cur_end, K, row + 1)))
        emit = Signal()
        m.d.comb += emit.eq(decide & fifo.w_rdy)
        emit_final = emit & (next_row == K)
        take = Signal(range(lanes + 1))
        m.d.comb += take.eq(Mux(emit, c, 0))
        wcnt = cur_n + nxt_n
        # The verdict goes out one cycle after the vector's end is absorbed (when every
        # remaining row of the vector can be emitted, one per cycle), not with the final
        # row: the merge may start the vector then and finds each row in time, however
        # long the rows had to wait for later entries before the end was known.
        inp = self.i.payload
        fire = self.i.valid & self.i.ready
        pend = Signal()
        pend_v = Signal(2)
        m.d.sync += [pend.eq(fire & inp.end), pend_v.eq(Cat(inp.order, inp.sparse))]
        m.d.comb += [
            fifo.w_en.eq(emit),
            fifo.w_data.eq(Cat(Cat(*outlier), Cat(*outer), Cat(*high),
                               (next_row - row - 1)[:len(next_row)])),
            vfifo.w_en.eq(pend), vfifo.w_data.eq(pend_v),
            self.i.ready.eq((wcnt - take <= C - lanes) & ~nxt_end
                            & (vfifo.level + pend < self.vectors)),
        ]
        with m.If(emit):
            m.d.sync += row.eq(Mux(emit_final, 0, next_row))

        to_cur = fire & ~cur_end
        to_nxt = fire & cur_end
        # The next window: the incoming entries appended behind the current fill (which
        # does not depend on this cycle's row), then everything shifted down by `take`,
        # selected one-hot from the candidate prefix: the window's one-cycle recurrence
        # (window -> row compare -> shift -> window) carries no counter or adder.
        ext = []
        for x in range(C + lanes):
            j = (x - wcnt).as_signed()
            incoming = Array([inp.entry[k] for k in range(lanes)])[j[:max(1, ll)] if lanes > 1
                                                                     else 0]
            e = Signal(el, name=f"ext{x}")
            if x < C:
                m.d.comb += e.eq(Mux((x < wcnt) | ~fire, win[x], incoming))
            else:
                m.d.comb += e.eq(incoming)
            ext.append(e)
        # take >= k  <=>  emit and candidate k-1 (a prefix)
        ge = [emit] + [emit & cand[k - 1] for k in range(1, lanes + 1)] + [Const(0, 1)]
        sel = [ge[k] & ~ge[k + 1] if k else ~ge[1] for k in range(lanes + 1)]
        for s in range(C):
            acc = 0
            for k in range(lanes + 1):
                acc = acc | Mux(sel[k], ext[s + k].as_value(), 0)
            m.d.sync += win[s].eq(acc)

        cur_n_mid = cur_n - take + Mux(to_cur, inp.n, 0)
        cur_end_mid = cur_end | (to_cur & inp.end)
        nxt_n_mid = nxt_n + Mux(to_nxt, inp.n, 0)
        nxt_end_mid = nxt_end | (to_nxt & inp.end)
        with m.If(emit_final):
            m.d.sync += [cur_n.eq(nxt_n_mid), cur_end.eq(nxt_end_mid),
                         nxt_n.eq(0), nxt_end.eq(0)]
        with m.Else():
            m.d.sync += [cur_n.eq(cur_n_mid), cur_end.eq(cur_end_mid),
                         nxt_n.eq(nxt_n_mid), nxt_end.eq(nxt_end_mid)]
        return m


class Unpacker(wiring.Component):
    """Meta, dense and sparse streams to :func:`beat_layout` beats (see the module text).

    Parameters
    ----------
    cfg : OakenConfig
    buffer_beats : int
        Depth of the dense and row FIFOs (``DequantEngine`` checks the minimum).
    vectors : int
        Depth of the per-vector FIFOs.

    Attributes
    ----------
    meta : In(stream.Signature(meta_layout(cfg)))
    dense : In(stream.Signature(dense_layout(cfg)))
    sparse : In(stream.Signature(sparse_layout(cfg)))
    o : Out(stream.Signature(beat_layout(cfg)))
        ``beats_per_vector`` beats per vector, ``last`` on the final one; a vector's first
        beat is offered only when the whole vector has been received and checked.
    """

    def __init__(self, *, cfg, buffer_beats, vectors):
        self.cfg, self.buffer_beats, self.vectors = cfg, buffer_beats, vectors
        super().__init__({
            "meta": In(stream.Signature(meta_layout(cfg))),
            "dense": In(stream.Signature(dense_layout(cfg))),
            "sparse": In(stream.Signature(sparse_layout(cfg))),
            "o": Out(stream.Signature(beat_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, q = self.cfg, self.cfg.quant
        lanes, mb, block, K = q.lanes, q.middle_bits, q.sparse_block, cfg.beats_per_vector
        nblk = cfg.blocks_per_vector

        # --- meta record: checks and the sparse framing --------------------------------
        rec = self.meta.payload.data
        byte = [rec[8 * i:8 * i + 8] for i in range(cfg.meta_bytes)]
        words = [Cat(byte[2 * w], byte[2 * w + 1]) for w in range(4)]
        n_lo = byte[8]
        counts = byte[9:9 + nblk]
        nonfinite = Cat(*[w[10:15].all() for w in words]).any()
        negative = Cat(*[w[15] & w[:15].any() for w in (words[0], words[1], words[3])]).any()
        meta_bad = nonfinite | negative | (n_lo > (1 << mb))
        count_bad = Cat(*[c > block for c in counts]).any()

        vec_layout = data.StructLayout({
            "header": header_layout(cfg), "words": data.ArrayLayout(16, 4),
            "n_lo": range((1 << mb) + 1), "meta_bad": 1, "count_bad": 1})
        fl = _frame_layout(cfg)
        m.submodules.vec_fifo = vec_fifo = SyncFIFOBuffered(width=vec_layout.size,
                                                            depth=self.vectors)
        m.submodules.frame_fifo = frame_fifo = SyncFIFOBuffered(width=fl.size, depth=self.vectors)
        vw = Signal(vec_layout)
        fw = Signal(fl)
        run = 0
        for b in range(nblk):
            run = run + counts[b]
            if b < nblk - 1:
                m.d.comb += fw.prefix[b].eq(run)
        m.d.comb += [
            fw.total.eq(run),
            vw.header.eq(self.meta.payload.header), vw.n_lo.eq(n_lo),
            vw.meta_bad.eq(meta_bad), vw.count_bad.eq(count_bad),
            *[vw.words[w].eq(words[w]) for w in range(4)],
            self.meta.ready.eq(vec_fifo.w_rdy & frame_fifo.w_rdy),
            vec_fifo.w_en.eq(self.meta.valid & self.meta.ready), vec_fifo.w_data.eq(vw),
            frame_fifo.w_en.eq(self.meta.valid & self.meta.ready), frame_fifo.w_data.eq(fw),
        ]

        # --- sparse path ---------------------------------------------------------------
        m.submodules.framer = framer = SparseFramer(cfg=cfg)
        m.submodules.inserter = ins = ZeroInserter(cfg=cfg, depth=self.buffer_beats,
                                                   vectors=self.vectors)
        wiring.connect(m, wiring.flipped(self.sparse), framer.i)
        m.d.comb += [framer.frame.valid.eq(frame_fifo.r_rdy),
                     framer.frame.payload.eq(frame_fifo.r_data),
                     frame_fifo.r_en.eq(framer.frame.ready)]
        wiring.connect(m, framer.o, ins.i)

        # --- dense path ----------------------------------------------------------------
        m.submodules.dense = dense = DenseFramer(width=lanes * mb, beats=K,
                                                 depth=self.buffer_beats,
                                                 vectors=self.vectors)
        wiring.connect(m, wiring.flipped(self.dense), dense.i)

        # --- merge ---------------------------------------------------------------------
        vec = data.View(vec_layout, vec_fifo.r_data)
        row = data.View(_row_layout(cfg), ins.o.payload)
        beat = Signal(range(max(2, K)))
        final = beat == K - 1
        rep = Signal(range(max(2, K)))      # empty rows of the row FIFO's head already out
        row_done = rep == row.empty_after
        valid = (vec_fifo.r_rdy & dense.o.valid & dense.verdict.valid & ins.o.valid
                 & ins.verdict.valid)
        fire = valid & self.o.ready
        m.d.comb += [
            self.o.valid.eq(valid),
            dense.o.ready.eq(fire), ins.o.ready.eq(fire & row_done),
            vec_fifo.r_en.eq(fire & final), dense.verdict.ready.eq(fire & final),
            ins.verdict.ready.eq(fire & final),
        ]
        with m.If(fire):
            m.d.sync += [beat.eq(Mux(final, 0, beat + 1)), rep.eq(Mux(row_done, 0, rep + 1))]

        o = self.o.payload
        err = o.errors
        m.d.comb += [
            err.count.eq(vec.count_bad), err.meta.eq(vec.meta_bad),
            err.order.eq(ins.verdict.payload[0] & ~vec.count_bad),
            err.sparse.eq(ins.verdict.payload[1]), err.dense.eq(dense.verdict.payload),
        ]
        bad = Signal()
        m.d.comb += bad.eq(vec.count_bad | vec.meta_bad | ins.verdict.payload.any()
                           | dense.verdict.payload)
        first = rep == 0                    # the head row itself, else one of its empties
        m.d.comb += [
            o.code.eq(Mux(bad, 0, dense.o.payload)),
            o.outlier.eq(Mux(bad | ~first, 0, row.outlier)),
            o.outer.eq(Mux(bad | ~first, 0, row.outer)),
            o.high.eq(Mux(bad | ~first, 0, row.high)),
            o.delta_mid.eq(Mux(bad, 0, vec.words[0])),
            o.delta_inner.eq(Mux(bad, 0, vec.words[1])),
            o.inner_min.eq(Mux(bad, 0, vec.words[2])),
            o.delta_outer.eq(Mux(bad, 0, vec.words[3])),
            o.n_lo.eq(Mux(bad, 0, vec.n_lo)),
            o.header.eq(vec.header), o.malformed.eq(bad), o.last.eq(final),
        ]
        return m
