"""The dequantizer: per-element level, pivot and FP16 rounding.

The hardware form of :func:`oaken_hw.model.quantizer.dequantize`. Per element, from the
unpacked fields (:func:`~.unpacker.beat_layout`) and the thresholds of the vector's layer and
K/V:

* middle (not an outlier): upper side iff ``code >= n_lo``; ``j = code - n_lo`` (upper) or
  ``n_lo - 1 - code`` (lower); pivot ``T_i_hi`` / ``T_i_lo``; step ``delta_mid``;
* outer: side = high bit, ``j = code``, pivot ``T_o_hi`` / ``T_o_lo``; step ``delta_outer``;
* inner: ``j = high << middle_bits | code``, pivot ``inner_min``, upper; step ``delta_inner``;

and the output is the FP16 nearest (ties to even, saturating) to
``N = 2 * pivot +- (2j + 1) * step`` half units of 2^-25: an exact integer. The step is an
FP16 value ``sig << sh`` units, so the level is a small product ``(2j + 1) * sig``
(``middle_bits + 2`` by 11 bits) shifted left by ``sh <= 29``; ``|N| < 2^(middle_bits + 43)``.

Pipeline (whole-pipeline stall, ``advance = ~o.valid | o.ready``)::

    i ─► P1 (beat; thresholds read at a vector's first beat) ─► P2 (pivot, level per lane)
      ─► P3 (N = 2 pivot +- level) ─► P4 (|N|, saturation, shift) ─► P5 = o (FP16)
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..common.fp16 import UNITS_SHAPE, UNITS_WIDTH, fp16_to_units
from ..common.header import header_layout
from ..common.threshold_table import ThresholdReadSignature
from .fp16_round import prepared_layout, round_finish, round_prepare
from .unpacker import beat_layout, errors_layout

__all__ = ["out_layout", "Dequantizer"]


def out_layout(cfg):
    """Output beat: ``data`` (``lanes`` FP16 bit patterns), ``header``, ``last``,
    ``malformed`` and ``errors`` of the vector."""
    return data.StructLayout({
        "data": data.ArrayLayout(16, cfg.quant.lanes),
        "header": header_layout(cfg),
        "last": 1, "malformed": 1, "errors": errors_layout(),
    })


class Dequantizer(wiring.Component):
    """Unpacked beats to FP16 beats, bit-exact with the golden decoder.

    Parameters
    ----------
    cfg : OakenConfig

    Attributes
    ----------
    i : In(stream.Signature(beat_layout(cfg)))
    o : Out(stream.Signature(out_layout(cfg)))
    table : Out(ThresholdReadSignature(layers))
        Read port of the threshold table (read latency 1), read with each vector's first
        beat (addressed by its header's ``layer`` and ``kv``); the data must hold while
        ``en`` is low, as :class:`ThresholdTable`'s does.
    latency : int
        5: cycles from a beat's transfer on ``i`` to ``valid`` on ``o`` when not stalled.
    level_width, sum_width : int
        Widths of the level ``(2j + 1) * step`` (unsigned) and of ``N`` (signed).
    """

    latency = 5

    def __init__(self, *, cfg):
        self.cfg = cfg
        mb = cfg.quant.middle_bits
        self.level_width = (mb + 2) + 11 + 29
        self.sum_width = max(UNITS_WIDTH + 1, self.level_width) + 2
        super().__init__({
            "i": In(stream.Signature(beat_layout(cfg))),
            "o": Out(stream.Signature(out_layout(cfg))),
            "table": Out(ThresholdReadSignature(cfg.model.layers)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes, mb = cfg.quant.lanes, cfg.quant.middle_bits
        LW, NW = self.level_width, self.sum_width
        side_layout = data.StructLayout({"valid": 1, "header": header_layout(cfg), "last": 1,
                                         "malformed": 1, "errors": errors_layout()})

        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        # the thresholds are read once per vector, with its first beat, and held (the
        # table's read data holds while `en` is low), so that a table write while a
        # vector is being decoded cannot give it two sets of thresholds
        first = Signal(init=1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += first.eq(self.i.payload.last)
        m.d.comb += [
            self.i.ready.eq(adv),
            self.table.en.eq(adv & first),
            self.table.layer.eq(self.i.payload.header.layer),
            self.table.kv.eq(self.i.payload.header.kv),
        ]

        # --- P1: the beat (the table's read data is aligned with it) ----------------------
        p1 = Signal(beat_layout(cfg), name="p1")
        p1_v = Signal()
        with m.If(adv):
            m.d.sync += [p1.eq(self.i.payload), p1_v.eq(self.i.valid)]
        side1 = Signal(side_layout)
        m.d.comb += [side1.valid.eq(p1_v), side1.header.eq(p1.header), side1.last.eq(p1.last),
                     side1.malformed.eq(p1.malformed), side1.errors.eq(p1.errors)]

        # --- S1: pivot and level ------------------------------------------------------
        t = self.table.data
        pivots = {}
        for name, word in (("o_lo", t.o_lo), ("i_lo", t.i_lo), ("i_hi", t.i_hi),
                           ("o_hi", t.o_hi), ("inner_min", p1.inner_min)):
            u = Signal(UNITS_SHAPE, name=f"pivot_{name}")
            m.d.comb += u.eq(fp16_to_units(word))
            pivots[name] = u
        steps = {}
        for name in ("delta_mid", "delta_inner", "delta_outer"):
            w = getattr(p1, name)
            exp = w[10:15]
            # a step is non-negative (the unpacker zeroes malformed vectors), its sign unused
            steps[name] = (Cat(w[:10], exp != 0), Mux(exp == 0, 0, exp - 1)[:5])

        p2_pivot = [Signal(signed(UNITS_WIDTH + 1), name=f"p2_pivot{k}") for k in range(lanes)]
        p2_level = [Signal(unsigned(LW), name=f"p2_level{k}") for k in range(lanes)]
        p2_upper = Signal(lanes)
        side2 = Signal(side_layout)
        n_lo = p1.n_lo
        for k in range(lanes):
            code = p1.code[k]
            outlier, outer, high = p1.outlier[k], p1.outer[k], p1.high[k]
            inner = outlier & ~outer
            mid_upper = code >= n_lo
            j_mid = Mux(mid_upper, code - n_lo, n_lo - 1 - code)[:mb]
            j = Mux(~outlier, j_mid, Mux(outer, code, Cat(code, high)))[:mb + 1]
            upper = Mux(~outlier, mid_upper, Mux(outer, high, 1))
            pivot = Mux(~outlier, Mux(mid_upper, pivots["i_hi"], pivots["i_lo"]),
                        Mux(outer, Mux(high, pivots["o_hi"], pivots["o_lo"]),
                            pivots["inner_min"]))
            sig = Mux(~outlier, steps["delta_mid"][0],
                      Mux(outer, steps["delta_outer"][0], steps["delta_inner"][0]))
            sh = Mux(~outlier, steps["delta_mid"][1],
                     Mux(outer, steps["delta_outer"][1], steps["delta_inner"][1]))
            odd = Cat(Const(1, 1), j)                     # 2j + 1
            with m.If(adv):
                m.d.sync += [p2_pivot[k].eq(pivot << 1),
                             p2_level[k].eq(((odd * sig) << sh)[:LW]),
                             p2_upper[k].eq(upper)]
        with m.If(adv):
            m.d.sync += side2.eq(side1)

        # --- S2: N = 2 pivot +- level -------------------------------------------------
        p3_n = [Signal(signed(NW), name=f"p3_n{k}") for k in range(lanes)]
        side3 = Signal(side_layout)
        with m.If(adv):
            m.d.sync += side3.eq(side2)
            for k in range(lanes):
                m.d.sync += p3_n[k].eq(Mux(p2_upper[k], p2_pivot[k] + p2_level[k],
                                           p2_pivot[k] - p2_level[k]))

        # --- S3, S4: round to FP16 ------------------------------------------------------
        p4 = [Signal(prepared_layout(NW), name=f"p4_{k}") for k in range(lanes)]
        side4 = Signal(side_layout)
        with m.If(adv):
            m.d.sync += side4.eq(side3)
        for k in range(lanes):
            prep = round_prepare(m, p3_n[k], 25, name=f"rnd{k}")
            with m.If(adv):
                m.d.sync += [p4[k].mag.eq(prep["mag"]), p4[k].shift.eq(prep["shift"]),
                             p4[k].neg.eq(prep["neg"]), p4[k].sat.eq(prep["sat"])]
        o = self.o.payload
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(side4.valid), o.header.eq(side4.header),
                         o.last.eq(side4.last), o.malformed.eq(side4.malformed),
                         o.errors.eq(side4.errors)]
        for k in range(lanes):
            bits = round_finish(m, p4[k], 25, name=f"fin{k}")
            with m.If(adv):
                m.d.sync += o.data[k].eq(bits)
        return m
