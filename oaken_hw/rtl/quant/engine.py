"""The quantization engine: FP16 KV vectors in, the fused dense-and-sparse format out.

Block diagram (see ``docs/quant_engine.md``)::

    i ──► P1: sanitize, FP16 -> units ◄── threshold table (read at a vector's first beat)
          │
          ▼
          P2: Classifier (comparators + group shift)
          │
          ▼
          P3 register ──────────────────────────────► ring buffer (sanitized FP16,
          │                                            group, side per lane)
          ▼                                                   │
          Extents (per-vector min/max, block counts)          │
          │                                                   │
          ├──► side FIFO ─────────────────────┐               │
          ▼                                    ▼               │
          Scale (middle split, steps) ──► info FIFO ──┐        │
                                                      ▼        ▼
                                 pass 2: GroupShift (inner minimum now known), register
                                          ▼
                                         Encoder (codes) ──► Packer (dense word,
                                          zero-removing shifter) ──► dense / sparse / meta
                                                                     FIFOs ──► outputs

The first pass sees every element to find the per-vector extents; the steps are known only
after the vector's last beat, so the vector waits in a ring buffer and the second pass
replays it. The first pass never stalls (the input's ``ready`` reserves ring space at
acceptance); the second pass is one pipeline that stalls as a whole when an output FIFO
that its last stage must write is full.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...config import OakenConfig
from ..common.fp16 import (MAG_WIDTH, UNITS_SHAPE, fp16_key, fp16_key_to_bits,
                           fp16_magnitude_units, fp16_sanitize, signed_units)
from ..common.header import header_layout
from ..common.occupancy import occupancy
from ..common.threshold_table import (ThresholdReadSignature, ThresholdTable,
                                      threshold_write_layout, thresholds_layout)
from .classifier import GROUP_SHAPE, PIVOT_SHAPE, Classifier, GroupShift, fold_pivots
from .encoder import Encoder
from .extents import Extents, popcount
from .packer import Packer, meta_record
from .scale import Scale

__all__ = ["QuantEngine", "StatusSignature"]


class StatusSignature(wiring.Signature):
    """Status port, from the engine's side.

    Members: ``bad_input`` (Out, sticky: a NaN or infinite input was seen), ``bad_count``
    (Out(32), saturating count of NaN/Inf input elements), ``config_error`` (Out, sticky: a
    threshold write was rejected), ``clear`` (In: clears all three; an event in the
    clearing cycle itself is not counted for ``bad_*`` and does set ``config_error``).
    """

    def __init__(self):
        super().__init__({"bad_input": Out(1), "bad_count": Out(32), "config_error": Out(1),
                          "clear": In(1)})


def _check_cfg(cfg):
    if not isinstance(cfg, OakenConfig):
        raise ValueError(f"cfg must be an OakenConfig, not {type(cfg).__name__}")
    q = cfg.quant
    if cfg.vector_len % q.lanes:
        raise ValueError(f"quant.lanes must divide the vector length ({cfg.vector_len}), "
                         f"not {q.lanes}")
    if q.sparse_block % q.lanes:
        raise ValueError(f"quant.lanes must divide quant.sparse_block ({q.sparse_block}), "
                         f"not {q.lanes}")
    if cfg.blocks_per_vector * q.sparse_block != cfg.vector_len:
        raise ValueError(f"quant.sparse_block must divide the vector length "
                         f"({cfg.vector_len}), not {q.sparse_block}")


class QuantEngine(wiring.Component):
    """The Oaken quantization engine, bit-exact with :func:`oaken_hw.model.quantize` and
    :func:`oaken_hw.model.pack`.

    Parameters
    ----------
    cfg : OakenConfig
        Lanes, vector length, bits, sparse block and layer count come from here.
    table : {"internal", "external"}
        ``"internal"``: the engine owns a threshold table written through ``thresholds``.
        ``"external"``: it reads a shared table (e.g. one with a read port for this engine
        and one for the dequantization engine) through ``table``.
    buffer_beats : int or None
        Depth of the ring buffer in beats: a power of two ``>= beats_per_vector``. From
        ``beats_per_vector + fill_latency + 2`` on, the input never waits while the outputs
        are ready (smaller buffers work at a lower rate); ``None`` picks the smallest such
        power of two.

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"header": header_layout(cfg),
                                          "data": ArrayLayout(16, lanes)})))
        Input beats, ``beats_per_vector`` per vector, elements in order. The header is
        carried on every beat; the engine uses the header of a vector's first beat (it
        counts the beats itself).
    dense : Out(stream.Signature(StructLayout({"data": lanes * middle_bits, "first": 1,
                                              "last": 1})))
        One beat per input beat; lane ``i``'s slot at bits ``[i*m, (i+1)*m)``.
    sparse : Out(stream.Signature(StructLayout({"data": ArrayLayout(8, lanes),
                                               "count": range(lanes + 1), "first": 1,
                                               "last": 1})))
        One beat per input beat, possibly with ``count == 0``; bytes ``0 .. count-1`` are
        the beat's outliers' sparse bytes in index order, the rest are 0.
    meta : Out(stream.Signature(StructLayout({"data": meta_bytes * 8,
                                             "header": header_layout(cfg),
                                             "bad_inputs": range(vector_len + 1)})))
        One record per vector (byte 0 at the LSB), with the vector's header and its count of
        NaN/Inf elements. It leaves the last pipeline stage together with the vector's first
        dense and sparse beats, so a consumer may wait for it before draining those.
    thresholds : In(stream.Signature(threshold_write_layout(layers)))
        (``table="internal"``) threshold table writes (ready except during the table's
        ``2 * layers``-cycle initialisation after reset); see
        :class:`~oaken_hw.rtl.common.ThresholdTable`.
    table : Out(ThresholdReadSignature(layers))
        (``table="external"``) read port of a shared threshold table; the engine reads it at
        a vector's first beat (``en`` with the beat's transfer, data used the next cycle).
    status : Out(StatusSignature())
        ``config_error`` stays 0 with an external table (the table's owner reports it).
    latency : int
        Cycles from the transfer of a vector's last input beat to ``valid`` of its first
        dense, sparse and meta beats, with the outputs ready.
    fill_latency : int
        Cycles from the transfer of a vector's last input beat to the replay of its first
        beat (the steps are ready).
    buffer_beats : int
    """

    def __init__(self, *, cfg, buffer_beats=None, table="internal"):
        _check_cfg(cfg)
        if table not in ("internal", "external"):
            raise ValueError(f"table must be 'internal' or 'external', not {table!r}")
        self.table_kind = table
        self.cfg = cfg
        q = cfg.quant
        self.lanes, self.middle_bits, self.sparse_block = q.lanes, q.middle_bits, q.sparse_block
        self.beats = cfg.beats_per_vector
        self.blocks = cfg.blocks_per_vector
        self.layers = cfg.model.layers

        # last beat accepted -> P1 -> P2 -> P3 -> Extents -> Scale -> info FIFO write (the
        # record counts as there the cycle after) = the first replayed beat issued; then the
        # ring read (1), the group-shift register (1), Encoder, Packer and an output FIFO
        # (write to read: 2)
        ext, enc = self._new_extents(), self._new_encoder()
        ext._MustUse__silence = enc._MustUse__silence = True     # only asked for latencies
        self.fill_latency = 4 + ext.latency + Scale.latency_for(self.middle_bits) + 1
        # issue -> q0 (ring read) -> q1 (its register) -> q2 (units) -> q3 (group shift)
        # -> Encoder -> Packer -> output FIFO (write to read: 2)
        pass2 = 4 + enc.latency + Packer.latency
        self.latency = self.fill_latency + pass2 + 2
        # every beat from its issue to the consumer's transfer holds a slot; a credit comes
        # back the cycle after the transfer
        self.out_depth = pass2 + 4
        need = self.beats + self.fill_latency + 2
        if buffer_beats is None:
            buffer_beats = 1 << (need - 1).bit_length()
        if isinstance(buffer_beats, bool) or not isinstance(buffer_beats, int) \
                or buffer_beats < self.beats or buffer_beats & (buffer_beats - 1):
            raise ValueError(f"buffer_beats must be a power of two >= beats_per_vector "
                             f"({self.beats}), not {buffer_beats!r}")
        self.buffer_beats = buffer_beats

        self.header_layout = header_layout(cfg)
        self.in_layout = data.StructLayout({
            "header": self.header_layout,
            "data": data.ArrayLayout(16, self.lanes),
        })
        self.dense_layout = data.StructLayout({
            "data": self.lanes * self.middle_bits, "first": 1, "last": 1})
        self.sparse_layout = data.StructLayout({
            "data": data.ArrayLayout(8, self.lanes), "count": range(self.lanes + 1),
            "first": 1, "last": 1})
        self.meta_layout = data.StructLayout({
            "data": cfg.meta_bytes * 8, "header": self.header_layout,
            "bad_inputs": range(cfg.vector_len + 1)})
        ports = {
            "i": In(stream.Signature(self.in_layout)),
            "dense": Out(stream.Signature(self.dense_layout)),
            "sparse": Out(stream.Signature(self.sparse_layout)),
            "meta": Out(stream.Signature(self.meta_layout)),
        }
        if table == "internal":
            ports["thresholds"] = In(stream.Signature(threshold_write_layout(self.layers)))
        else:
            ports["table"] = Out(ThresholdReadSignature(self.layers))
        ports["status"] = Out(StatusSignature())
        super().__init__(ports)

    def _new_extents(self):
        return Extents(lanes=self.lanes, beats=self.beats, sparse_block=self.sparse_block)

    def _new_encoder(self):
        return Encoder(lanes=self.lanes, middle_bits=self.middle_bits)

    def elaborate(self, platform):
        m = Module()
        n, B, D = self.lanes, self.beats, self.buffer_beats
        cfg = self.cfg
        V = cfg.vector_len
        bpb = self.sparse_block // n

        # --- threshold table -------------------------------------------------------------
        if self.table_kind == "internal":
            m.submodules.table = table = ThresholdTable(layers=self.layers)
            wiring.connect(m, wiring.flipped(self.thresholds), table.write)
            m.d.comb += [table.clear_error.eq(self.status.clear),
                         self.status.config_error.eq(table.error)]
            rd = table.read[0]
        else:
            rd = self.table

        # --- input and ring occupancy ----------------------------------------------------
        # beats accepted and not yet replayed; `i.ready` is a register (`used < D`), and
        # pass 2's issue, late, only picks the next count (behind the issue through the
        # count's adder, it was the quantizer's latest endpoint at 89.2 MHz)
        freed = Signal()                      # pass 2 issues a beat this cycle
        acc = Signal()
        _, has_room = occupancy(m, depth=D, limit=D, up=acc, down=freed, name="used")
        m.d.comb += [self.i.ready.eq(has_room), acc.eq(self.i.valid & has_room)]

        in_beat = Signal(range(max(2, B)))
        with m.If(acc):
            m.d.sync += in_beat.eq(Mux(in_beat == B - 1, 0, in_beat + 1))
        m.d.comb += [rd.en.eq(acc & (in_beat == 0)),
                     rd.layer.eq(self.i.payload.header.layer),
                     rd.kv.eq(self.i.payload.header.kv)]

        # --- P1: the beat (the table's read data arrives with it) --------------------------
        p1_v = Signal()
        p1_first, p1_last = Signal(), Signal()
        p1_beat = Signal(range(max(2, B)))
        p1_hdr = Signal(self.header_layout)
        p1_x = Signal(data.ArrayLayout(16, n))
        m.d.sync += [p1_v.eq(acc), p1_first.eq(in_beat == 0), p1_last.eq(in_beat == B - 1),
                     p1_beat.eq(in_beat), p1_hdr.eq(self.i.payload.header),
                     p1_x.eq(self.i.payload.data)]
        thr_latched = Signal(thresholds_layout())
        with m.If(p1_v & p1_first):
            m.d.sync += thr_latched.eq(rd.data)

        # --- P2: sanitize, order keys; the thresholds registered right at the block RAM's
        # output (its clock-to-output delay leaves no room for logic behind it) ----------
        p2_v = Signal()
        p2_first, p2_last = Signal(), Signal()
        p2_beat = Signal(range(max(2, B)))
        p2_hdr = Signal(self.header_layout)
        p2_key = Signal(data.ArrayLayout(16, n))
        p2_bad = Signal(range(n + 1))
        p2_thr = Signal(thresholds_layout())
        bad_bits = []
        for k in range(n):
            clean, bad = fp16_sanitize(p1_x[k])
            bad_bits.append(bad)
            m.d.sync += p2_key[k].eq(fp16_key(clean))
        m.d.sync += [p2_v.eq(p1_v), p2_first.eq(p1_first), p2_last.eq(p1_last),
                     p2_beat.eq(p1_beat), p2_hdr.eq(p1_hdr),
                     p2_bad.eq(Mux(p1_v, popcount(bad_bits), 0)),
                     p2_thr.eq(Mux(p1_first, rd.data, thr_latched))]

        # --- P3: the thresholds as keys and in units -------------------------------------
        p3_v, p3_first, p3_last = Signal(), Signal(), Signal()
        p3_beat = Signal.like(p2_beat)
        p3_hdr = Signal(self.header_layout)
        p3_key = Signal.like(p2_key)
        p3_bad = Signal.like(p2_bad)
        p3_tk = Signal(data.ArrayLayout(16, 4))
        # the thresholds in units: magnitudes here, signed in P4 (the conversion's shifter
        # and its negation in one stage were the quantizer's next path at 82 MHz)
        p3_tmag = Signal(data.ArrayLayout(MAG_WIDTH, 4))
        p3_tneg = Signal(4)
        thr_words = [p2_thr.o_lo, p2_thr.i_lo, p2_thr.i_hi, p2_thr.o_hi]
        m.d.sync += [p3_v.eq(p2_v), p3_first.eq(p2_first), p3_last.eq(p2_last),
                     p3_beat.eq(p2_beat), p3_hdr.eq(p2_hdr), p3_key.eq(p2_key),
                     p3_bad.eq(p2_bad)]
        m.d.sync += [p3_tk[k].eq(fp16_key(w)) for k, w in enumerate(thr_words)]
        m.d.sync += [p3_tmag[k].eq(fp16_magnitude_units(w)) for k, w in enumerate(thr_words)]
        m.d.sync += [p3_tneg[k].eq(w[15]) for k, w in enumerate(thr_words)]

        # --- P4: classify (16-bit key comparators) ---------------------------------------
        m.submodules.classifier = cls = Classifier(lanes=n)
        m.d.comb += [cls.x.eq(p3_key), cls.t.eq(p3_tk)]
        p4_v, p4_first, p4_last = Signal(), Signal(), Signal()
        p4_beat = Signal.like(p2_beat)
        p4_hdr = Signal(self.header_layout)
        p4_key = Signal.like(p2_key)
        p4_bad = Signal.like(p2_bad)
        p4_tu = Signal(data.ArrayLayout(UNITS_SHAPE, 4))
        p4_group = Signal.like(cls.group)
        p4_upper = Signal.like(cls.upper)
        m.d.sync += [p4_v.eq(p3_v), p4_first.eq(p3_first), p4_last.eq(p3_last),
                     p4_beat.eq(p3_beat), p4_hdr.eq(p3_hdr), p4_key.eq(p3_key),
                     p4_bad.eq(p3_bad),
                     p4_group.eq(cls.group), p4_upper.eq(cls.upper)]
        m.d.sync += [p4_tu[k].eq(signed_units(p3_tmag[k], p3_tneg[k])) for k in range(4)]

        # --- write the ring, reduce ------------------------------------------------------
        # the ring keeps the order key (a bijection of the sanitized FP16 pattern)
        ring_elem = data.StructLayout({"x": 16, "group": GROUP_SHAPE, "upper": 1})
        m.submodules.ring = ring = Memory(shape=data.ArrayLayout(ring_elem, n), depth=D,
                                          init=[])
        wp = ring.write_port()
        wr_ptr = Signal(range(D))
        m.d.comb += [wp.addr.eq(wr_ptr), wp.en.eq(p4_v)]
        for k in range(n):
            m.d.comb += [wp.data[k].x.eq(p4_key[k]), wp.data[k].group.eq(p4_group[k]),
                         wp.data[k].upper.eq(p4_upper[k])]
        with m.If(p4_v):
            m.d.sync += wr_ptr.eq(wr_ptr + 1)

        m.submodules.extents = ext = self._new_extents()
        m.d.comb += [ext.valid.eq(p4_v), ext.first.eq(p4_first), ext.last.eq(p4_last),
                     ext.beat.eq(p4_beat), ext.x.eq(p4_key), ext.t.eq(p4_tu),
                     ext.group.eq(p4_group), ext.upper.eq(p4_upper)]

        # per-vector side band: header, thresholds, NaN/Inf count (taken at the last beat
        # and delayed to meet the extents)
        side_layout = data.StructLayout({"header": self.header_layout,
                                         "tu": data.ArrayLayout(UNITS_SHAPE, 4),
                                         "bad": range(V + 1)})
        hdr_l = Signal(self.header_layout)
        bad_acc = Signal(range(V + 1))
        bad_vec = (Mux(p4_first, 0, bad_acc) + p4_bad)[:len(bad_acc)]
        with m.If(p4_v):
            m.d.sync += bad_acc.eq(bad_vec)
            with m.If(p4_first):
                m.d.sync += hdr_l.eq(p4_hdr)
        side = Signal(side_layout)
        m.d.comb += [side.header.eq(Mux(p4_first, p4_hdr, hdr_l)),
                     side.tu.eq(p4_tu),
                     side.bad.eq(bad_vec)]
        side_d = side
        for k in range(ext.latency):
            nxt = Signal(side_layout, name=f"side_d{k}")
            m.d.sync += nxt.eq(side_d)
            side_d = nxt

        # status: NaN/Inf counter
        with m.If(self.status.clear):
            m.d.sync += [self.status.bad_input.eq(0), self.status.bad_count.eq(0)]
        with m.Elif(p4_v & (p4_bad != 0)):
            total = self.status.bad_count + p4_bad
            m.d.sync += [self.status.bad_input.eq(1),
                         self.status.bad_count.eq(Mux(total[32:] != 0, 0xFFFF_FFFF, total))]

        # --- Scale -----------------------------------------------------------------------
        # The per-vector side band waits in its own FIFO (written when the extents are
        # done) instead of riding through the Scale pipeline; the steps follow in the info
        # FIFO. Both pop together, the cycle after the vector's last replayed beat.
        side_rec_layout = data.StructLayout({
            "side": side_layout, "counts": data.ArrayLayout(8, self.blocks),
            "inner_min": 16, "inner_min_u": UNITS_SHAPE})
        steps_layout = data.StructLayout({
            "n_lo": range((1 << self.middle_bits) + 1),
            "delta_mid": 16, "delta_inner": 16, "delta_outer": 16})
        info_layout = data.StructLayout({
            "side": side_layout,
            "counts": data.ArrayLayout(8, self.blocks),
            "inner_min": 16, "inner_min_u": UNITS_SHAPE,
            "n_lo": range((1 << self.middle_bits) + 1),
            "delta_mid": 16, "delta_inner": 16, "delta_outer": 16,
        })
        m.submodules.scale = sc = Scale(middle_bits=self.middle_bits)
        m.d.comb += [
            sc.valid.eq(ext.done), sc.a.eq(ext.a), sc.b.eq(ext.b),
            sc.has_lo.eq(ext.has_lo), sc.has_hi.eq(ext.has_hi),
            sc.outer_max.eq(ext.outer_max), sc.inner_ext.eq(ext.inner_ext),
        ]
        depth = D // B + 2
        m.submodules.side_fifo = side_fifo = SyncFIFOBuffered(width=side_rec_layout.size,
                                                              depth=depth)
        m.submodules.info = info = SyncFIFOBuffered(width=steps_layout.size, depth=depth)
        w_side = Signal(side_rec_layout)
        w_steps = Signal(steps_layout)
        imin = ext.inner_min
        m.d.comb += [
            w_side.side.eq(side_d), w_side.counts.eq(ext.counts),
            w_side.inner_min.eq(ext.inner_min_fp16),
            w_side.inner_min_u.eq(imin),
            side_fifo.w_data.eq(w_side), side_fifo.w_en.eq(ext.done),
            w_steps.n_lo.eq(sc.n_lo), w_steps.delta_mid.eq(sc.delta_mid),
            w_steps.delta_inner.eq(sc.delta_inner), w_steps.delta_outer.eq(sc.delta_outer),
            info.w_data.eq(w_steps), info.w_en.eq(sc.o_valid),
        ]
        side_head = data.View(side_rec_layout, side_fifo.r_data)
        steps_head = data.View(steps_layout, info.r_data)
        head = Signal(info_layout)
        m.d.comb += [
            head.side.eq(side_head.side), head.counts.eq(side_head.counts),
            head.inner_min.eq(side_head.inner_min), head.inner_min_u.eq(side_head.inner_min_u),
            head.n_lo.eq(steps_head.n_lo), head.delta_mid.eq(steps_head.delta_mid),
            head.delta_inner.eq(steps_head.delta_inner),
            head.delta_outer.eq(steps_head.delta_outer),
        ]

        # --- pass 2 ----------------------------------------------------------------------
        # A free-running pipeline: a beat is issued only when every output FIFO that it
        # will write has a slot reserved for it (credit counters), so nothing downstream
        # ever stalls and no stall signal fans out to the pipeline's registers.
        # The vector's record (side and steps FIFO heads) is read one stage after the
        # issue, into q1, and the FIFOs pop from a register the cycle after a vector's last
        # beat: so the pop never waits for the issue decision, nor the issue for the FIFOs'
        # r_rdy (that loop, r_rdy -> issue -> r_en -> r_rdy across the 16 lanes' fanout,
        # was the engine's critical path at 77.8 MHz). `avail` counts the records written
        # and not yet started: a record written in cycle t is on the heads from t + 2 on,
        # when a first beat issued from t + 1 on reads it; a vector's last beat issued in
        # cycle t pops in t + 1, and its record stays on the heads for that beat's q1.
        rp = ring.read_port()
        rd_ptr = Signal(range(D))
        rd_beat = Signal(range(max(2, B)))
        OD = self.out_depth
        # The credits and `avail` keep their compares as registers (`occupancy`): the
        # issue is an AND of flip-flops, not of compares of counts
        issue = Signal()
        first_issue = Signal()
        pop = Signal()
        d_out = self.dense.valid & self.dense.ready
        s_out = self.sparse.valid & self.sparse.ready
        m_out = self.meta.valid & self.meta.ready
        _, d_ok = occupancy(m, depth=OD, limit=OD, up=issue, down=d_out, name="cred_d")
        _, s_ok = occupancy(m, depth=OD, limit=OD, up=issue, down=s_out, name="cred_s")
        _, m_ok = occupancy(m, depth=OD, limit=OD, up=first_issue, down=m_out, name="cred_m")
        _, no_record = occupancy(m, depth=depth, limit=1, up=info.w_en, down=first_issue,
                                 name="avail")
        m.d.comb += [issue.eq(d_ok & s_ok & ((rd_beat != 0) | (m_ok & ~no_record))),
                     first_issue.eq(issue & (rd_beat == 0)), freed.eq(issue),
                     side_fifo.r_en.eq(pop), info.r_en.eq(pop),
                     rp.addr.eq(rd_ptr), rp.en.eq(1)]
        m.d.sync += pop.eq(issue & (rd_beat == B - 1))
        with m.If(issue):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1),
                         rd_beat.eq(Mux(rd_beat == B - 1, 0, rd_beat + 1))]

        band_layout = data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "bib": range(max(2, bpb)),
            "meta": self.meta_layout})
        q0 = Signal(band_layout)
        m.d.sync += [q0.valid.eq(issue), q0.first.eq(rd_beat == 0),
                     q0.last.eq(rd_beat == B - 1), q0.bib.eq(rd_beat % bpb)]
        # what the lanes need of the vector
        lane_info = data.StructLayout({
            "tu": data.ArrayLayout(UNITS_SHAPE, 4), "inner_min_u": UNITS_SHAPE,
            "n_lo": info_layout["n_lo"].shape, "delta_mid": 16, "delta_inner": 16,
            "delta_outer": 16})

        def delay(value, name, n=1):
            for k in range(n):
                r = Signal(value.shape(), name=f"{name}{k}")
                m.d.sync += r.eq(value)
                value = r
            return value

        # q1: the ring's read data registered at the block RAM's output, and the vector's
        # record registered from the FIFO heads
        q1 = Signal(band_layout)
        q1_rec = Signal(info_layout)
        m.d.sync += [q1.valid.eq(q0.valid), q1.first.eq(q0.first), q1.last.eq(q0.last),
                     q1.bib.eq(q0.bib), q1_rec.eq(head)]
        # the meta record of the vector (used with its first beat)
        m.d.comb += [
            q1.meta.header.eq(q1_rec.side.header), q1.meta.bad_inputs.eq(q1_rec.side.bad),
            q1.meta.data.eq(meta_record(q1_rec.delta_mid, q1_rec.delta_inner,
                                        q1_rec.inner_min, q1_rec.delta_outer,
                                        q1_rec.n_lo,
                                        [q1_rec.counts[k] for k in range(self.blocks)])),
        ]
        q1_info = Signal(lane_info)
        m.d.comb += [q1_info.tu.eq(q1_rec.side.tu), q1_info.inner_min_u.eq(q1_rec.inner_min_u),
                     q1_info.n_lo.eq(q1_rec.n_lo), q1_info.delta_mid.eq(q1_rec.delta_mid),
                     q1_info.delta_inner.eq(q1_rec.delta_inner),
                     q1_info.delta_outer.eq(q1_rec.delta_outer)]
        q1_data = Signal.like(rp.data)
        m.d.sync += q1_data.eq(rp.data)

        # q2: the values in units
        q2 = delay(q1, "q2_")
        q2_info = delay(q1_info, "q2_info")
        q2_xmag = Signal(data.ArrayLayout(MAG_WIDTH, n))
        q2_xneg = Signal(data.ArrayLayout(1, n))
        q2_group = Signal(data.ArrayLayout(GROUP_SHAPE, n))
        q2_upper = Signal(data.ArrayLayout(1, n))
        for k in range(n):
            bits = fp16_key_to_bits(q1_data[k].x)
            m.d.sync += [q2_xmag[k].eq(fp16_magnitude_units(bits)), q2_xneg[k].eq(bits[15]),
                         q2_group[k].eq(q1_data[k].group), q2_upper[k].eq(q1_data[k].upper)]
        q2_p = Signal(data.ArrayLayout(PIVOT_SHAPE, 5))
        folded = fold_pivots([q1_info.tu[k] for k in range(4)], q1_info.inner_min_u)
        m.d.sync += [q2_p[k].eq(v) for k, v in enumerate(folded)]

        # q3: the group shift (inner minimum now known)
        m.submodules.shift = gs = GroupShift(lanes=n)
        m.d.comb += [gs.p.eq(q2_p), gs.x_mag.eq(q2_xmag), gs.x_neg.eq(q2_xneg),
                     gs.group.eq(q2_group), gs.upper.eq(q2_upper)]
        q3 = delay(q2, "q3_")
        q3_info = delay(q2_info, "q3_info")
        q3_group, q3_upper, q3_mag = (Signal.like(gs.group), Signal.like(gs.upper),
                                      Signal.like(gs.mag))
        m.d.sync += [q3_group.eq(gs.group), q3_upper.eq(gs.upper), q3_mag.eq(gs.mag)]

        m.submodules.encoder = enc = self._new_encoder()
        m.d.comb += [enc.en.eq(1), enc.group.eq(q3_group), enc.upper.eq(q3_upper),
                     enc.mag.eq(q3_mag), enc.n_lo.eq(q3_info.n_lo),
                     enc.delta_mid.eq(q3_info.delta_mid),
                     enc.delta_inner.eq(q3_info.delta_inner),
                     enc.delta_outer.eq(q3_info.delta_outer)]
        band = delay(q3, "qe_", enc.latency)

        m.submodules.packer = pk = Packer(lanes=n, middle_bits=self.middle_bits,
                                          sparse_block=self.sparse_block)
        m.d.comb += [pk.en.eq(1), pk.beat_in_block.eq(band.bib), pk.dense.eq(enc.dense),
                     pk.high.eq(enc.high), pk.outlier.eq(enc.outlier), pk.outer.eq(enc.outer)]
        last = delay(band, "qp_", Packer.latency)

        # --- output FIFOs (a slot is reserved for every beat in flight) ------------------
        m.submodules.dense_fifo = dfifo = SyncFIFOBuffered(width=self.dense_layout.size,
                                                           depth=OD)
        m.submodules.sparse_fifo = sfifo = SyncFIFOBuffered(width=self.sparse_layout.size,
                                                            depth=OD)
        m.submodules.meta_fifo = mfifo = SyncFIFOBuffered(width=self.meta_layout.size,
                                                          depth=OD)
        push = last.valid
        d_w = Signal(self.dense_layout)
        s_w = Signal(self.sparse_layout)
        m.d.comb += [
            d_w.data.eq(pk.dense_word), d_w.first.eq(last.first), d_w.last.eq(last.last),
            s_w.data.eq(pk.sparse), s_w.count.eq(pk.count), s_w.first.eq(last.first),
            s_w.last.eq(last.last),
            dfifo.w_data.eq(d_w), dfifo.w_en.eq(push),
            sfifo.w_data.eq(s_w), sfifo.w_en.eq(push),
            mfifo.w_data.eq(last.meta), mfifo.w_en.eq(push & last.first),
        ]
        for fifo, port in ((dfifo, self.dense), (sfifo, self.sparse), (mfifo, self.meta)):
            m.d.comb += [port.valid.eq(fifo.r_rdy), port.payload.eq(fifo.r_data),
                         fifo.r_en.eq(port.ready)]
        return m
