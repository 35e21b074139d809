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

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .sparse import SparseFramer, ZeroInserter, frame_layout, row_layout
from ..common.header import header_layout
from .streams import beat_layout, dense_layout, meta_layout, sparse_layout

__all__ = ["DenseFramer", "Unpacker"]


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
        fl = frame_layout(cfg)
        # An unbuffered FIFO (LUT RAM read at the read pointer): the merge's handshake, which
        # joins this FIFO, the dense path and the zero inserter and so runs across the
        # placement, then moves only the read pointer and the level. With the buffered FIFO
        # it also loaded the ~100-bit output register: the whole engine's critical path in
        # three place-and-route runs (`r_rdy` -> the handshake -> the level and the output
        # register's enables, 11.9-12.4 ns of which 10-10.5 routing; docs/flow.md, session 23)
        m.submodules.vec_fifo = vec_fifo = SyncFIFO(width=vec_layout.size, depth=self.vectors)
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
        row = data.View(row_layout(cfg), ins.o.payload)
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
