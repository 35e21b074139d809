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
from ..common.fp16 import UNITS_SHAPE, fp16_sanitize, fp16_to_units, units_to_fp16_exact
from ..common.header import header_layout
from ..common.threshold_table import (ThresholdReadSignature, ThresholdTable,
                                      threshold_write_layout, thresholds_layout)
from .classifier import GROUP_SHAPE, Classifier, GroupShift
from .encoder import Encoder
from .extents import Extents
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
        (``table="internal"``) threshold table writes (always ready); see
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

        # last beat accepted -> P1 -> P2 -> P3 -> Extents -> Scale -> info FIFO (write to
        # read: 2) = the first replayed beat issued; then the ring read (1), the group-shift
        # register (1), Encoder, Packer and an output FIFO (write to read: 2)
        self.fill_latency = 3 + Extents.latency + Scale.latency + 2
        self.latency = self.fill_latency + 2 + Encoder.latency + Packer.latency + 2
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
        used = Signal(range(D + 1))           # beats accepted and not yet replayed
        freed = Signal()                      # pass 2 issues a beat this cycle
        acc = Signal()
        m.d.comb += [self.i.ready.eq(used < D), acc.eq(self.i.valid & self.i.ready)]
        m.d.sync += used.eq(used + acc - freed)

        in_beat = Signal(range(max(2, B)))
        with m.If(acc):
            m.d.sync += in_beat.eq(Mux(in_beat == B - 1, 0, in_beat + 1))
        m.d.comb += [rd.en.eq(acc & (in_beat == 0)),
                     rd.layer.eq(self.i.payload.header.layer),
                     rd.kv.eq(self.i.payload.header.kv)]

        # --- P1: sanitize and convert ----------------------------------------------------
        p1_v = Signal()
        p1_first, p1_last = Signal(), Signal()
        p1_beat = Signal(range(max(2, B)))
        p1_hdr = Signal(self.header_layout)
        p1_x = Signal(data.ArrayLayout(16, n))
        m.d.sync += [p1_v.eq(acc), p1_first.eq(in_beat == 0), p1_last.eq(in_beat == B - 1),
                     p1_beat.eq(in_beat), p1_hdr.eq(self.i.payload.header),
                     p1_x.eq(self.i.payload.data)]
        thr_latched = Signal(thresholds_layout())
        thr = Signal(thresholds_layout())
        m.d.comb += thr.eq(Mux(p1_first, rd.data, thr_latched))
        with m.If(p1_v & p1_first):
            m.d.sync += thr_latched.eq(rd.data)

        p2_v = Signal()
        p2_first, p2_last = Signal(), Signal()
        p2_beat = Signal(range(max(2, B)))
        p2_hdr = Signal(self.header_layout)
        p2_clean = Signal(data.ArrayLayout(16, n))
        p2_x = Signal(data.ArrayLayout(UNITS_SHAPE, n))
        p2_bad = Signal(range(n + 1))
        p2_tu = Signal(data.ArrayLayout(UNITS_SHAPE, 4))
        bad_bits = []
        for k in range(n):
            clean, bad = fp16_sanitize(p1_x[k])
            bad_bits.append(bad)
            m.d.sync += [p2_clean[k].eq(clean), p2_x[k].eq(fp16_to_units(clean))]
        thr_words = [thr.o_lo, thr.i_lo, thr.i_hi, thr.o_hi]
        m.d.sync += [p2_v.eq(p1_v), p2_first.eq(p1_first), p2_last.eq(p1_last),
                     p2_beat.eq(p1_beat), p2_hdr.eq(p1_hdr),
                     p2_bad.eq(Mux(p1_v, sum(bad_bits), 0))]
        m.d.sync += [p2_tu[k].eq(fp16_to_units(w)) for k, w in enumerate(thr_words)]

        # --- P2: classify ------------------------------------------------------------------
        m.submodules.classifier = cls = Classifier(lanes=n)
        m.d.comb += [cls.x.eq(p2_x), cls.t.eq(p2_tu), cls.inner_min.eq(0)]

        # P3 register: the comparators and the subtractor take a cycle of their own
        p3_v, p3_first, p3_last = Signal(), Signal(), Signal()
        p3_beat = Signal.like(p2_beat)
        p3_hdr = Signal(self.header_layout)
        p3_clean = Signal.like(p2_clean)
        p3_x = Signal.like(p2_x)
        p3_bad = Signal.like(p2_bad)
        p3_tu = Signal.like(p2_tu)
        p3_group = Signal.like(cls.group)
        p3_upper = Signal.like(cls.upper)
        p3_mag = Signal.like(cls.mag)
        m.d.sync += [p3_v.eq(p2_v), p3_first.eq(p2_first), p3_last.eq(p2_last),
                     p3_beat.eq(p2_beat), p3_hdr.eq(p2_hdr), p3_clean.eq(p2_clean),
                     p3_x.eq(p2_x), p3_bad.eq(p2_bad), p3_tu.eq(p2_tu),
                     p3_group.eq(cls.group), p3_upper.eq(cls.upper), p3_mag.eq(cls.mag)]

        # --- P3: write the ring, reduce ----------------------------------------------------
        ring_elem = data.StructLayout({"x": 16, "group": GROUP_SHAPE, "upper": 1})
        m.submodules.ring = ring = Memory(shape=data.ArrayLayout(ring_elem, n), depth=D,
                                          init=[])
        wp = ring.write_port()
        wr_ptr = Signal(range(D))
        m.d.comb += [wp.addr.eq(wr_ptr), wp.en.eq(p3_v)]
        for k in range(n):
            m.d.comb += [wp.data[k].x.eq(p3_clean[k]), wp.data[k].group.eq(p3_group[k]),
                         wp.data[k].upper.eq(p3_upper[k])]
        with m.If(p3_v):
            m.d.sync += wr_ptr.eq(wr_ptr + 1)

        m.submodules.extents = ext = Extents(lanes=n, beats=B, sparse_block=self.sparse_block)
        m.d.comb += [ext.valid.eq(p3_v), ext.first.eq(p3_first), ext.last.eq(p3_last),
                     ext.beat.eq(p3_beat), ext.x.eq(p3_x), ext.group.eq(p3_group),
                     ext.upper.eq(p3_upper), ext.mag.eq(p3_mag)]

        # per-vector side band: header, thresholds, NaN/Inf count (taken at the last beat
        # and delayed to meet the extents)
        side_layout = data.StructLayout({"header": self.header_layout,
                                         "tu": data.ArrayLayout(UNITS_SHAPE, 4),
                                         "bad": range(V + 1)})
        hdr_l = Signal(self.header_layout)
        tu_l = Signal(data.ArrayLayout(UNITS_SHAPE, 4))
        bad_acc = Signal(range(V + 1))
        bad_vec = (Mux(p3_first, 0, bad_acc) + p3_bad)[:len(bad_acc)]
        with m.If(p3_v):
            m.d.sync += bad_acc.eq(bad_vec)
            with m.If(p3_first):
                m.d.sync += [hdr_l.eq(p3_hdr), tu_l.eq(p3_tu)]
        side = Signal(side_layout)
        m.d.comb += [side.header.eq(Mux(p3_first, p3_hdr, hdr_l)),
                     side.tu.eq(Mux(p3_first, p3_tu, tu_l)),
                     side.bad.eq(bad_vec)]
        side_d = side
        for k in range(Extents.latency):
            nxt = Signal(side_layout, name=f"side_d{k}")
            m.d.sync += nxt.eq(side_d)
            side_d = nxt

        # status: NaN/Inf counter
        with m.If(self.status.clear):
            m.d.sync += [self.status.bad_input.eq(0), self.status.bad_count.eq(0)]
        with m.Elif(p3_v & (p3_bad != 0)):
            total = self.status.bad_count + p3_bad
            m.d.sync += [self.status.bad_input.eq(1),
                         self.status.bad_count.eq(Mux(total[32:] != 0, 0xFFFF_FFFF, total))]

        # --- Scale -----------------------------------------------------------------------
        # The per-vector side band waits in its own FIFO (written when the extents are
        # done) instead of riding through the Scale pipeline; the steps follow in the info
        # FIFO. Both pop together, at the vector's last replayed beat.
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
            w_side.inner_min.eq(units_to_fp16_exact(Mux(imin < 0, -imin, imin)[:40],
                                                    imin < 0)),
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
        adv = Signal()
        rp = ring.read_port()
        rd_ptr = Signal(range(D))
        rd_beat = Signal(range(max(2, B)))
        issue = Signal()
        # the side record was written Scale.latency cycles before the steps: it is there
        m.d.comb += [issue.eq(adv & info.r_rdy & side_fifo.r_rdy), freed.eq(issue),
                     side_fifo.r_en.eq(issue & (rd_beat == B - 1)),
                     rp.addr.eq(rd_ptr), rp.en.eq(adv),
                     info.r_en.eq(issue & (rd_beat == B - 1))]
        with m.If(issue):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1),
                         rd_beat.eq(Mux(rd_beat == B - 1, 0, rd_beat + 1))]

        band_layout = data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "bib": range(max(2, bpb)),
            "meta": self.meta_layout})
        q0 = Signal(band_layout)
        q0_info = Signal(info_layout)
        with m.If(adv):
            m.d.sync += [q0.valid.eq(issue), q0.first.eq(rd_beat == 0),
                         q0.last.eq(rd_beat == B - 1), q0.bib.eq(rd_beat % bpb),
                         q0_info.eq(head)]
        # the meta record of the vector (used with its first beat)
        m.d.comb += [
            q0.meta.header.eq(q0_info.side.header), q0.meta.bad_inputs.eq(q0_info.side.bad),
            q0.meta.data.eq(meta_record(q0_info.delta_mid, q0_info.delta_inner,
                                        q0_info.inner_min, q0_info.delta_outer,
                                        q0_info.n_lo,
                                        [q0_info.counts[k] for k in range(self.blocks)])),
        ]

        m.submodules.shift = gs = GroupShift(lanes=n)
        # thresholds and inner minimum travel in units: no converters needed here
        m.d.comb += [gs.t.eq(q0_info.side.tu), gs.inner_min.eq(q0_info.inner_min_u)]
        for k in range(n):
            m.d.comb += [gs.x[k].eq(fp16_to_units(rp.data[k].x)),
                         gs.group[k].eq(rp.data[k].group), gs.upper[k].eq(rp.data[k].upper)]

        # a register between the group shift and the divider
        qs = Signal(band_layout, name="qs")
        qs_info = Signal(data.StructLayout({          # what the Encoder needs
            "n_lo": info_layout["n_lo"].shape, "delta_mid": 16, "delta_inner": 16,
            "delta_outer": 16}))
        qs_group, qs_upper, qs_mag = (Signal.like(gs.group), Signal.like(gs.upper),
                                      Signal.like(gs.mag))
        with m.If(adv):
            m.d.sync += [qs.eq(q0), qs_group.eq(gs.group), qs_upper.eq(gs.upper),
                         qs_mag.eq(gs.mag), qs_info.n_lo.eq(q0_info.n_lo),
                         qs_info.delta_mid.eq(q0_info.delta_mid),
                         qs_info.delta_inner.eq(q0_info.delta_inner),
                         qs_info.delta_outer.eq(q0_info.delta_outer)]

        m.submodules.encoder = enc = Encoder(lanes=n, middle_bits=self.middle_bits)
        m.d.comb += [enc.en.eq(adv), enc.group.eq(qs_group), enc.upper.eq(qs_upper),
                     enc.mag.eq(qs_mag), enc.n_lo.eq(qs_info.n_lo),
                     enc.delta_mid.eq(qs_info.delta_mid),
                     enc.delta_inner.eq(qs_info.delta_inner),
                     enc.delta_outer.eq(qs_info.delta_outer)]
        band = qs
        for k in range(Encoder.latency):
            nxt = Signal(band_layout, name=f"q{k + 1}")
            with m.If(adv):
                m.d.sync += nxt.eq(band)
            band = nxt

        m.submodules.packer = pk = Packer(lanes=n, middle_bits=self.middle_bits,
                                          sparse_block=self.sparse_block)
        m.d.comb += [pk.en.eq(adv), pk.beat_in_block.eq(band.bib), pk.dense.eq(enc.dense),
                     pk.high.eq(enc.high), pk.outlier.eq(enc.outlier), pk.outer.eq(enc.outer)]
        last = Signal(band_layout, name="q_last")
        with m.If(adv):
            m.d.sync += last.eq(band)

        # --- output FIFOs ----------------------------------------------------------------
        m.submodules.dense_fifo = dfifo = SyncFIFOBuffered(width=self.dense_layout.size,
                                                           depth=4)
        m.submodules.sparse_fifo = sfifo = SyncFIFOBuffered(width=self.sparse_layout.size,
                                                            depth=4)
        m.submodules.meta_fifo = mfifo = SyncFIFOBuffered(width=self.meta_layout.size,
                                                          depth=4)
        m.d.comb += adv.eq(~last.valid | (dfifo.w_rdy & sfifo.w_rdy
                                          & (~last.first | mfifo.w_rdy)))
        push = last.valid & adv
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
