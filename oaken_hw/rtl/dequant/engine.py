"""The dequantization engine: the fused dense-and-sparse format in, FP16 vectors out.

Block diagram (see ``docs/dequant_engine.md``)::

    meta ───┐
    dense ──┼─► Unpacker (framers, zero-inserting shifter, ──► Dequantizer ──► o
    sparse ─┘   dense buffer, malformed-vector check)          (level, pivot, FP16)
                                                                   ▲
    thresholds ──► ThresholdTable ─────────────────────────────────┘

Bit-exact with ``dequantize(*unpack(image, cfg), thresholds, cfg)`` of the golden model for
every vector, malformed ones included (which decode with all fields zero).
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...config import OakenConfig
from ..common.header import header_layout
from ..common.threshold_table import (ThresholdReadSignature, ThresholdTable,
                                      threshold_write_layout)
from .dequantizer import Dequantizer
from .sparse import SparseFramer
from .streams import dense_layout, meta_layout, sparse_layout
from .unpacker import Unpacker

__all__ = ["DequantEngine", "DequantStatusSignature", "engine_out_layout"]

#: width of the status counters
COUNTER_BITS = 32


class DequantStatusSignature(wiring.Signature):
    """Status port, from the engine's side.

    Members (Out unless noted): ``vectors`` (vectors output, 32 bits, saturating),
    ``malformed`` (malformed vectors output, 32 bits, saturating), sticky flags
    ``count_error`` (a block count above the block size), ``meta_error`` (``n_lo`` above
    ``2^middle_bits``, a non-finite FP16 word or a negative step in a meta record),
    ``order_error`` (sparse indices not strictly increasing in a block), ``sparse_error``
    (sparse bytes delivered differ from the sum of the block counts: truncated or overlong
    sparse list), ``dense_error`` (dense vector shorter or longer than ``beats_per_vector``),
    ``config_error`` (a threshold write was rejected; internal table only), and ``clear``
    (In: clears all of them). Counters and flags are updated when a vector's last beat
    leaves ``o``.
    """

    def __init__(self):
        super().__init__({
            "vectors": Out(COUNTER_BITS), "malformed": Out(COUNTER_BITS),
            "count_error": Out(1), "meta_error": Out(1), "order_error": Out(1),
            "sparse_error": Out(1), "dense_error": Out(1), "config_error": Out(1),
            "clear": In(1),
        })


def engine_out_layout(cfg):
    """Output beat: ``data`` (``lanes`` FP16 bit patterns), ``header``, ``last``,
    ``malformed``."""
    from amaranth.lib import data
    return data.StructLayout({
        "data": data.ArrayLayout(16, cfg.quant.lanes), "header": header_layout(cfg),
        "last": 1, "malformed": 1})


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")


class DequantEngine(wiring.Component):
    """The Oaken dequantization engine.

    Parameters
    ----------
    cfg : OakenConfig
        Lanes, vector length, bits, sparse block and layer count come from here.
    buffer_beats : int or None
        Depth of the dense and row FIFOs in beats; at least ``2 * beats_per_vector + 8``
        for one output beat per cycle (a vector is buffered whole while the next arrives).
        ``None``: exactly that.
    vectors : int or None
        Depth of the per-vector FIFOs (meta, framing, verdicts); at least 3. ``None``:
        ``4 + ceil(8 / beats_per_vector)``, enough for one beat per cycle.
    table : {"internal", "external"}
        ``"internal"``: the engine has its own threshold table written through
        ``thresholds``. ``"external"``: it reads a shared table through ``table``.

    Attributes
    ----------
    meta : In(stream.Signature(StructLayout({"data": meta_bytes * 8, "header": ...})))
        One beat per vector: its meta record (byte 0 at the LSB) and header (``layer`` and
        ``kv`` select the thresholds; the header is passed through to the output).
    dense : In(stream.Signature(StructLayout({"data": lanes * middle_bits, "last": 1})))
        ``beats_per_vector`` beats per vector, ``last`` on the final one; lane ``i``'s slot
        at bits ``[i*m, (i+1)*m)``.
    sparse : In(stream.Signature(StructLayout({"data": ArrayLayout(8, lanes),
                                               "count": range(lanes + 1), "last": 1})))
        At least one beat per vector, ``last`` on the final one; bytes ``0 .. count-1`` of a
        beat are the next sparse bytes of the vector's list (a count above ``lanes`` reads
        as ``lanes``). Beats of ``lanes`` bytes (or one beat per dense beat, as the
        quantization engine writes them) sustain one output beat per cycle.
    o : Out(stream.Signature(StructLayout({"data": ArrayLayout(16, lanes), "header": ...,
                                           "last": 1, "malformed": 1})))
        ``beats_per_vector`` beats per vector, ``last`` on the final one.
    thresholds : In(stream.Signature(threshold_write_layout(layers)))
        (``table="internal"``) threshold table writes (ready except during the table's
        ``2 * layers``-cycle initialisation after reset); see :class:`ThresholdTable`.
    table : Out(ThresholdReadSignature(layers))
        (``table="external"``) read port of a shared threshold table.
    status : Out(DequantStatusSignature())
    latency : int
        Cycles from the transfer of a vector's first input beats (meta, dense and sparse
        offered together, one beat per cycle each, an idle engine, ``o`` ready) to
        ``valid`` of its first output beat, when its sparse list is as long as its dense
        data (``beats_per_vector`` sparse beats: the worst case). The vector is received
        whole before it is decoded.
    min_latency : int
        The same for a vector whose sparse list ends before its dense data (then the dense
        path sets the pace).
    pipeline_latency : int
        Cycles from the release of a complete vector to its first output beat.
    beats_per_vector : int
    """

    def __init__(self, *, cfg, buffer_beats=None, vectors=None, table="internal"):
        if not isinstance(cfg, OakenConfig):
            raise ValueError(f"cfg must be an OakenConfig, not {type(cfg).__name__}")
        q = cfg.quant
        if cfg.vector_len % q.lanes or q.sparse_block % q.lanes:
            raise ValueError(f"quant.lanes must divide quant.sparse_block ({q.sparse_block}) "
                             f"and the vector length ({cfg.vector_len}), not {q.lanes}")
        if cfg.vector_len % q.sparse_block:
            raise ValueError(f"quant.sparse_block must divide the vector length "
                             f"({cfg.vector_len}), not {q.sparse_block}")
        self.cfg = cfg
        self.lanes = q.lanes
        self.beats_per_vector = K = cfg.beats_per_vector
        # a vector is buffered whole while the next arrives, plus the cycles from its last
        # input beat to its release (see `latency`)
        need = 2 * K + 8
        if buffer_beats is None:
            buffer_beats = need
        _check_int("buffer_beats", buffer_beats, need)
        # vectors between their meta beat and their last output beat: about
        # (2 K + 8) / K + 1; short vectors need more of them in flight
        if vectors is None:
            vectors = 4 + -(-8 // K)
        _check_int("vectors", vectors, 3)
        if table not in ("internal", "external"):
            raise ValueError(f"table must be 'internal' or 'external', not {table!r}")
        self.buffer_beats, self.vectors, self.table_kind = buffer_beats, vectors, table
        # the first sparse beat waits 2 cycles for the meta's framing (FIFO), the K-th
        # follows K - 1 cycles later, the framer's stages (2) and the inserter's queue (1)
        # register it, the final row's verdict crosses its FIFO (2); then the Dequantizer
        sf = SparseFramer.latency + 1
        self.pipeline_latency = Dequantizer.latency
        self.latency = 2 + (K - 1) + sf + 2 + Dequantizer.latency
        # the last dense beat's verdict crosses its FIFO (2), or a one-beat sparse list
        # passes the meta FIFO, framer, inserter and verdict FIFO (2 + 3 + 2)
        self.min_latency = max((K - 1) + 2, 2 + sf + 2) + Dequantizer.latency

        layers = cfg.model.layers
        ports = {
            "meta": In(stream.Signature(meta_layout(cfg))),
            "dense": In(stream.Signature(dense_layout(cfg))),
            "sparse": In(stream.Signature(sparse_layout(cfg))),
            "o": Out(stream.Signature(engine_out_layout(cfg))),
            "status": Out(DequantStatusSignature()),
        }
        if table == "internal":
            ports["thresholds"] = In(stream.Signature(threshold_write_layout(layers)))
        else:
            ports["table"] = Out(ThresholdReadSignature(layers))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.unpacker = up = Unpacker(cfg=cfg, buffer_beats=self.buffer_beats,
                                              vectors=self.vectors)
        m.submodules.dequantizer = dq = Dequantizer(cfg=cfg)
        wiring.connect(m, wiring.flipped(self.meta), up.meta)
        wiring.connect(m, wiring.flipped(self.dense), up.dense)
        wiring.connect(m, wiring.flipped(self.sparse), up.sparse)
        wiring.connect(m, up.o, dq.i)

        st = self.status
        if self.table_kind == "internal":
            m.submodules.table = table = ThresholdTable(layers=cfg.model.layers)
            wiring.connect(m, wiring.flipped(self.thresholds), table.write)
            wiring.connect(m, dq.table, table.read[0])
            m.d.comb += [table.clear_error.eq(st.clear), st.config_error.eq(table.error)]
        else:
            wiring.connect(m, dq.table, wiring.flipped(self.table))

        o = dq.o.payload
        m.d.comb += [
            self.o.valid.eq(dq.o.valid), dq.o.ready.eq(self.o.ready),
            self.o.payload.data.eq(o.data), self.o.payload.header.eq(o.header),
            self.o.payload.last.eq(o.last), self.o.payload.malformed.eq(o.malformed),
        ]

        done = self.o.valid & self.o.ready & o.last
        flags = [(st.count_error, o.errors.count), (st.meta_error, o.errors.meta),
                 (st.order_error, o.errors.order), (st.sparse_error, o.errors.sparse),
                 (st.dense_error, o.errors.dense)]
        full = (1 << 32) - 1
        with m.If(st.clear):
            m.d.sync += [st.vectors.eq(0), st.malformed.eq(0)]
            m.d.sync += [f.eq(0) for f, _ in flags]
        with m.Elif(done):
            m.d.sync += [f.eq(f | e) for f, e in flags]
            with m.If(st.vectors != full):
                m.d.sync += st.vectors.eq(st.vectors + 1)
            with m.If(o.malformed & (st.malformed != full)):
                m.d.sync += st.malformed.eq(st.malformed + 1)
        return m
