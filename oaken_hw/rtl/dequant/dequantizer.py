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
(``middle_bits + 2`` by 11 bits) shifted left by ``sh <= 29``. ``N`` is added as a
floating-point adder does, in a window of ``middle_bits + 16`` bits around the larger of
the two terms, with the same bits as the exact sum (:mod:`.level_sum`).

Pipeline (free running; ``i.ready``, a register, while an output FIFO slot is free for
every beat in flight)::

    i ─► P1 (beat; thresholds read at a vector's first beat) ─► P2 (thresholds registered;
      per lane pivot index, 2j + 1, step parts) ─► P3 (per lane the pivot's FP16 word,
      (2j + 1) * sig) ─► P4 (the exponent compare) ─► P5 (both terms aligned in the
      window) ─► P6 (|sum|, its sign) ─► P7 (shift) ─► P8 (kept bits, guard, sticky,
      exponent) ─► P9 (rounding increment; exponent field and saturation for both
      carries) ─► P10 (FP16) ─► output FIFO ─► o
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..common.header import header_layout
from ..common.occupancy import occupancy
from ..common.threshold_table import ThresholdReadSignature
from .fp16_round import (floor_mask, pack_rounded, prepared_layout, round_increment,
                         round_prepare, round_select, rounded_layout, selected_layout)
from .level_sum import ROUND_PAD, SumWindow, step_parts
from .streams import beat_layout, errors_layout

__all__ = ["out_layout", "Dequantizer"]


def out_layout(cfg):
    """Output beat: ``data`` (``lanes`` FP16 bit patterns), ``header``, ``last``,
    ``malformed`` and ``errors`` of the vector."""
    return data.StructLayout({
        "data": data.ArrayLayout(16, cfg.quant.lanes),
        "header": header_layout(cfg),
        "last": 1, "malformed": 1, "errors": errors_layout(),
    })


def exponents_layout(win):
    """P4: the exponent compare (:meth:`.level_sum.SumWindow.exponents`)."""
    return data.StructLayout({"a_larger": 1, "d": 6, "offset": win.offset_shape})


def aligned_layout(win):
    """P5: both terms in the window (:meth:`.level_sum.SumWindow.align`)."""
    return data.StructLayout({"a": win.width, "b": win.width, "offset": win.offset_shape,
                              "sign": 1})


def summed_layout(win):
    """P6: the magnitude and sign of their sum, the window's position and the rounder's
    exponent clamp (:func:`.fp16_round.floor_mask`)."""
    return data.StructLayout({"mag": win.width + 1, "neg": 1, "offset": win.offset_shape,
                              "floor": 25 - 13 - win.offset_min})


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
        12: cycles from a beat's transfer on ``i`` to ``valid`` on ``o`` (``o`` is the output
        of a FIFO; ``i.ready`` falls when ``out_depth`` beats are in flight or waiting).
    window : SumWindow
        The window ``N`` is added in (:mod:`.level_sum`).
    """

    #: P1 .. P10 and the output FIFO (write to read: 2)
    latency = 12
    #: output FIFO depth: every beat from its acceptance to its transfer on ``o`` holds a
    #: slot, and a credit comes back the cycle after the transfer
    out_depth = latency + 3

    def __init__(self, *, cfg):
        self.cfg = cfg
        mb = cfg.quant.middle_bits
        self.window = SumWindow(mb)
        super().__init__({
            "i": In(stream.Signature(beat_layout(cfg))),
            "o": Out(stream.Signature(out_layout(cfg))),
            "table": Out(ThresholdReadSignature(cfg.model.layers)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes, mb = cfg.quant.lanes, cfg.quant.middle_bits
        win = self.window
        side_layout = data.StructLayout({"valid": 1, "header": header_layout(cfg), "last": 1,
                                         "malformed": 1, "errors": errors_layout()})

        # A free-running pipeline into an output FIFO: a beat is accepted only when a FIFO
        # slot is reserved for it (a credit counter), so the consumer's `ready` reaches
        # neither the pipeline's registers (no stall fanout) nor a long path.
        adv = Const(1, 1)
        fire_in = Signal()
        fire_out = self.o.valid & self.o.ready
        # `used < out_depth` as a register: `i.ready` is in the Unpacker's merge
        # handshake, which enables its FIFOs' wide output registers
        _, room = occupancy(m, depth=self.out_depth, limit=self.out_depth, up=fire_in,
                            down=fire_out, name="used")
        m.d.comb += fire_in.eq(self.i.valid & room)
        # the thresholds are read once per vector, with its first beat, and held (the
        # table's read data holds while `en` is low), so that a table write while a
        # vector is being decoded cannot give it two sets of thresholds
        first = Signal(init=1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += first.eq(self.i.payload.last)
        m.d.comb += [
            self.i.ready.eq(room),
            self.table.en.eq(self.i.ready & first),
            self.table.layer.eq(self.i.payload.header.layer),
            self.table.kv.eq(self.i.payload.header.kv),
        ]

        # --- P1: the beat (the table's read data is aligned with it) ----------------------
        p1 = Signal(beat_layout(cfg), name="p1")
        p1_v = Signal()
        with m.If(adv):
            m.d.sync += [p1.eq(self.i.payload), p1_v.eq(fire_in)]
        side1 = Signal(side_layout)
        m.d.comb += [side1.valid.eq(p1_v), side1.header.eq(p1.header), side1.last.eq(p1.last),
                     side1.malformed.eq(p1.malformed), side1.errors.eq(p1.errors)]

        # --- P2: the table's read data registered at the block RAM's output (its clock-to-
        # output delay leaves no room for logic behind it); per lane the pivot's index,
        # j, the step's parts ---------------------------------------------------------------
        t2 = Signal.like(self.table.data, name="t2")
        p2 = Signal(beat_layout(cfg), name="p2")
        side2 = Signal(side_layout)
        with m.If(adv):
            m.d.sync += [t2.eq(self.table.data), p2.eq(p1), side2.eq(side1)]
        # a step is non-negative (the unpacker zeroes malformed vectors), its sign unused
        steps = {name: step_parts(getattr(p1, name))
                 for name in ("delta_mid", "delta_inner", "delta_outer")}
        # pivot index: 0 o_lo, 1 i_lo, 2 i_hi, 3 o_hi, 4 inner_min
        p2_sel = [Signal(3, name=f"p2_sel{k}") for k in range(lanes)]
        # j, registered (here and in P3), and 2j + 1 formed behind it: a register of the
        # constant 1 is merged by Yosys with any other such flip-flop of the design (the
        # quantizer's, in the engine), and its one copy drove all the lanes' multipliers
        # from afar (12.0 ns into the product, 6.5 of it one net, session 20)
        p2_j = [Signal(mb + 1, name=f"p2_j{k}") for k in range(lanes)]
        p2_sig = [Signal(11, name=f"p2_sig{k}") for k in range(lanes)]
        p2_eb = [Signal(6, name=f"p2_eb{k}") for k in range(lanes)]   # step exponent
        p2_upper = Signal(lanes)
        n_lo = p1.n_lo
        for k in range(lanes):
            code = p1.code[k]
            outlier, outer, high = p1.outlier[k], p1.outer[k], p1.high[k]
            mid_upper = code >= n_lo
            j_mid = Mux(mid_upper, code - n_lo, n_lo - 1 - code)[:mb]
            j = Mux(~outlier, j_mid, Mux(outer, code, Cat(code, high)))[:mb + 1]
            upper = Mux(~outlier, mid_upper, Mux(outer, high, 1))
            sel = Mux(~outlier, Mux(mid_upper, 2, 1), Mux(outer, Mux(high, 3, 0), 4))
            sig = Mux(~outlier, steps["delta_mid"][0],
                      Mux(outer, steps["delta_outer"][0], steps["delta_inner"][0]))
            sh = Mux(~outlier, steps["delta_mid"][1],
                     Mux(outer, steps["delta_outer"][1], steps["delta_inner"][1]))
            with m.If(adv):
                m.d.sync += [p2_sel[k].eq(sel), p2_j[k].eq(j),
                             p2_sig[k].eq(sig), p2_eb[k].eq(win.step_exponent(sh)),
                             p2_upper[k].eq(upper)]

        # --- P3: per lane the pivot's FP16 word and the product's operands; P4: the small
        # product (2j + 1) * sig, and the exponent compare, a stage of its own: behind the
        # pivot's 5:1 mux of the thresholds register (which reaches every lane) it was a
        # long path, and beside the alignment shift (P5) it would be one -----------------
        words = (t2.o_lo, t2.i_lo, t2.i_hi, t2.o_hi, p2.inner_min)

        def pivot(sel):
            return Mux(sel[2], words[4], Mux(sel[1], Mux(sel[0], words[3], words[2]),
                                             Mux(sel[0], words[1], words[0])))
        p3_piv = [Signal(16, name=f"p3_piv{k}") for k in range(lanes)]
        # the product's operands, registered again: the multiply runs from P3 to P4. P2's
        # j and sig are formed by the lane's muxes and placed with them; these copies can
        # sit by the DSP block, so that neither of its ends is a long route (P2 -> DSP ->
        # a P3 product was 10.9 ns, nearly all routing, at 89.2 MHz)
        p3_j = [Signal(mb + 1, name=f"p3_j{k}") for k in range(lanes)]
        p3_sig = [Signal(11, name=f"p3_sig{k}") for k in range(lanes)]
        p3_eb = [Signal(6, name=f"p3_eb{k}") for k in range(lanes)]
        p3_upper = Signal(lanes)
        side3 = Signal(side_layout)
        p4_piv = [Signal(16, name=f"p4_piv{k}") for k in range(lanes)]
        p4_prod = [Signal(win.sig, name=f"p4_prod{k}") for k in range(lanes)]
        p4_exps = [Signal(exponents_layout(win), name=f"p4_exps{k}") for k in range(lanes)]
        p4_upper = Signal(lanes)
        side4 = Signal(side_layout)
        with m.If(adv):
            m.d.sync += [side3.eq(side2), p3_upper.eq(p2_upper),
                         side4.eq(side3), p4_upper.eq(p3_upper)]
        for k in range(lanes):
            exps = win.exponents(m, p3_piv[k], p3_eb[k], name=f"exp{k}")
            with m.If(adv):
                m.d.sync += [p3_piv[k].eq(pivot(p2_sel[k])), p3_eb[k].eq(p2_eb[k]),
                             p3_j[k].eq(p2_j[k]), p3_sig[k].eq(p2_sig[k])]
                m.d.sync += [p4_piv[k].eq(p3_piv[k]),
                             p4_prod[k].eq(Cat(Const(1, 1), p3_j[k]) * p3_sig[k])]
                m.d.sync += [getattr(p4_exps[k], f).eq(exps[f])
                             for f in ("a_larger", "d", "offset")]

        # --- P5: both terms in the window; P6: the magnitude and sign of their sum -------
        p5 = [Signal(aligned_layout(win), name=f"p5_{k}") for k in range(lanes)]
        p5_upper = Signal(lanes)
        side5 = Signal(side_layout)
        p6 = [Signal(summed_layout(win), name=f"p6_{k}") for k in range(lanes)]
        side6 = Signal(side_layout)
        with m.If(adv):
            m.d.sync += [side5.eq(side4), p5_upper.eq(p4_upper), side6.eq(side5)]
        for k in range(lanes):
            al = win.align(m, p4_piv[k], p4_prod[k], p4_exps[k], name=f"lvl{k}")
            mag, neg = win.total(m, p5[k].a, p5[k].b, p5[k].sign, p5_upper[k],
                                 name=f"sum{k}")
            with m.If(adv):
                m.d.sync += [getattr(p5[k], f).eq(al[f]) for f in ("a", "b", "sign")]
                m.d.sync += p5[k].offset.eq(p4_exps[k].offset)
                m.d.sync += [p6[k].mag.eq(mag), p6[k].neg.eq(neg),
                             p6[k].offset.eq(p5[k].offset),
                             p6[k].floor.eq(floor_mask(25, p5[k].offset, win.offset_min))]

        # --- P7: the shift (the exponent clamp registered in P6 as a mask, OR-ed into the
        # bit length's first level); P8: kept bits, guard, sticky and the exponent; P9: the
        # rounding increment, and beside it the exponent field and saturation for both
        # outcomes of its carry; P10: pack (the carry picks them: muxes only) ----------
        p7 = [Signal(prepared_layout(win.width + 1, ROUND_PAD, win.offset_shape),
                     name=f"p7_{k}") for k in range(lanes)]
        side7 = Signal(side_layout)
        p8 = [Signal(selected_layout(), name=f"p8_{k}") for k in range(lanes)]
        side8 = Signal(side_layout)
        p9 = [Signal(rounded_layout(), name=f"p9_{k}") for k in range(lanes)]
        side9 = Signal(side_layout)
        with m.If(adv):
            m.d.sync += [side7.eq(side6), side8.eq(side7), side9.eq(side8)]
        for k in range(lanes):
            prep = round_prepare(m, p6[k].mag, 25, name=f"rnd{k}", offset=p6[k].offset,
                                 pad=ROUND_PAD, floor=p6[k].floor)
            sel = round_select(m, p7[k], 25, name=f"sel{k}", pad=ROUND_PAD)
            inc = round_increment(m, p8[k], 25, name=f"inc{k}")
            with m.If(adv):
                m.d.sync += [p7[k].mag.eq(prep["mag"]), p7[k].shift.eq(prep["shift"]),
                             p7[k].offset.eq(prep["offset"]),
                             p7[k].neg.eq(p6[k].neg)]
                m.d.sync += [getattr(p8[k], f).eq(sel[f]) for f in
                             ("kept", "guard", "sticky", "exp", "neg")]
                m.d.sync += [getattr(p9[k], f).eq(inc[f]) for f in
                             ("q", "field", "sat", "neg")]
        ov = Signal()
        o = Signal(out_layout(cfg))
        with m.If(adv):
            m.d.sync += [ov.eq(side9.valid), o.header.eq(side9.header),
                         o.last.eq(side9.last), o.malformed.eq(side9.malformed),
                         o.errors.eq(side9.errors)]
        for k in range(lanes):
            bits = pack_rounded(m, p9[k], name=f"fin{k}")
            with m.If(adv):
                m.d.sync += o.data[k].eq(bits)

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=out_layout(cfg).size,
                                                    depth=self.out_depth)
        m.d.comb += [fifo.w_en.eq(ov), fifo.w_data.eq(o),
                     self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready)]
        return m
