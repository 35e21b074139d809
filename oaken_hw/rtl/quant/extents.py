"""Per-vector reductions of the first pass: the extents that the steps are made from.

For every vector: the largest middle magnitude on the lower side (``a``) and on the upper
side (``b``) and whether each side has elements, the largest outer magnitude, the inner
group's minimum and extent (max - min of the inner values), and the outlier count of every
sparse block (the framing bytes of the metadata record).

The magnitudes are not reduced element by element: every side of every group lies on one
side of its pivot (lower sides at or below it, upper sides at or above it), so the largest
magnitude of a side is ``pivot - min(x)`` or ``max(x) - pivot`` over that side. The lanes
therefore reduce 16-bit order keys of the FP16 values (:func:`~..common.fp16.fp16_key`,
exact), and only the per-vector results are converted to units and subtracted.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.add_sub import add_or_subtract
from ..common.fp16 import (MAG_WIDTH, UNITS_SHAPE, UNITS_WIDTH, fp16_key_to_bits,
                           fp16_magnitude_units, signed_units)
from .classifier import GROUP_SHAPE, INNER, MAG_SHAPE, MIDDLE, OUTER

__all__ = ["Extents", "reduce_tree", "popcount"]

#: tree levels between two pipeline registers of the lane reductions. One: with two, a
#: stage held two 16-bit compares and two multiplexers in a row, and its registers were
#: the largest group of the whole engine's endpoints slower than 10 ns on ECP5 (about 330
#: at 77.5 MHz, up to 12.4 ns; docs/flow.md, session 18)
LEVELS_PER_STAGE = 1


def reduce_tree(m, values, op, shape=None):
    """Balanced binary reduction of a list of expressions (each node a named signal, so
    that an operand used twice by ``op`` is not duplicated in the netlist)."""
    values = list(values)
    level = 0
    while len(values) > 1:
        nxt = []
        for i in range(0, len(values) - 1, 2):
            s = Signal(shape if shape is not None else len(values[i]), name=f"red{level}")
            m.d.comb += s.eq(op(values[i], values[i + 1]))
            nxt.append(s)
        level += 1
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def popcount(bits):
    """Number of set bits, as a balanced adder tree (not a chain of ``len(bits)`` adders)."""
    vals = [b for b in bits]
    while len(vals) > 1:
        nxt = [vals[i] + vals[i + 1] for i in range(0, len(vals) - 1, 2)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return vals[0]


def _node(a, fa, b, fb, a_wins, masked):
    """One min/max tree node: ``a`` if it wins, or (masked) if only ``a`` has members.

    A masked tree carries a "has members" flag with every value instead of replacing the
    non-members by the neutral element, so the lanes' raw keys go straight into every tree
    and the trees can share their first comparators.
    """
    if not masked:
        return Mux(a_wins, a, b)
    return Mux(fa & (~fb | a_wins), a, b)


def _wins(a, b, is_min):
    return a < b if is_min else a > b


class Extents(wiring.Component):
    """Per-vector min/max reductions over a vector's beats.

    Beats enter with ``valid``; ``first``/``last`` mark a vector's first and last beat and
    ``beat`` is the beat's index in its vector. ``latency`` cycles after a ``last`` beat,
    ``done`` is high for one cycle with the vector's results (they hold until the next
    ``done``).

    Pipeline: the lane reductions (a register every :data:`LEVELS_PER_STAGE` tree levels),
    the accumulation over the beats, the conversion of the vector's keys to units, the
    subtraction of the pivots, the larger of the two outer sides.

    Parameters
    ----------
    lanes, beats, sparse_block : int
        Elements per beat, beats per vector, elements per sparse block.

    Attributes
    ----------
    valid, first, last : In(1)
    beat : In(range(beats))
    x : In(ArrayLayout(16, lanes))
        Order keys of the (sanitized) values.
    t : In(ArrayLayout(signed(41), 4))
        The vector's thresholds in units; read with the ``last`` beat.
    group, upper : In(ArrayLayout)
        From the :class:`~.classifier.Classifier`.
    done : Out(1)
    a, b, outer_max, inner_ext : Out(41)
    has_lo, has_hi : Out(1)
        The middle group has lower / upper elements.
    inner_min : Out(signed(41))
        0 when the vector has no inner element.
    inner_min_fp16 : Out(16)
        The same as an FP16 bit pattern (+0 when there is no inner element).
    counts : Out(ArrayLayout(8, blocks))
        Outliers per sparse block.
    latency : int
        Cycles from a ``last`` beat to ``done``: ``tree_stages + 4``.
    """

    def __init__(self, *, lanes, beats, sparse_block):
        for name, v in (("lanes", lanes), ("beats", beats), ("sparse_block", sparse_block)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if sparse_block % lanes or (lanes * beats) % sparse_block:
            raise ValueError(f"sparse_block must be a multiple of lanes ({lanes}) that divides "
                             f"the vector ({lanes * beats}), not {sparse_block}")
        self.lanes, self.beats, self.sparse_block = lanes, beats, sparse_block
        self.blocks = lanes * beats // sparse_block
        self.beats_per_block = sparse_block // lanes
        levels = (lanes - 1).bit_length()
        self.tree_stages = -(-levels // LEVELS_PER_STAGE)
        self.latency = self.tree_stages + 4
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1),
            "beat": In(range(max(2, beats))),
            "x": In(data.ArrayLayout(16, lanes)),
            "t": In(data.ArrayLayout(UNITS_SHAPE, 4)),
            "group": In(data.ArrayLayout(GROUP_SHAPE, lanes)),
            "upper": In(data.ArrayLayout(1, lanes)),
            "done": Out(1),
            "a": Out(MAG_SHAPE), "b": Out(MAG_SHAPE), "has_lo": Out(1), "has_hi": Out(1),
            "outer_max": Out(MAG_SHAPE),
            "inner_min": Out(UNITS_SHAPE), "inner_min_fp16": Out(16),
            "inner_ext": Out(MAG_SHAPE),
            "counts": Out(data.ArrayLayout(8, self.blocks)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        g = [self.group[i] for i in range(n)]
        u = [self.upper[i] for i in range(n)]
        x = [self.x[i] for i in range(n)]
        lo_mid = [(g[i] == MIDDLE) & ~u[i] for i in range(n)]
        hi_mid = [(g[i] == MIDDLE) & u[i] for i in range(n)]
        inner = [g[i] == INNER for i in range(n)]
        lo_out = [(g[i] == OUTER) & ~u[i] for i in range(n)]
        hi_out = [(g[i] == OUTER) & u[i] for i in range(n)]

        # the six reductions: (name, members, is_min, masked). The outer sides need no
        # masking: every lower outer value is below every other value (x <= T_o_lo and
        # x < T_o_hi, the others are above one of them) and every upper outer value is above
        # every other (x >= T_o_hi), so when a side has members its extreme is the beat's
        # min or max.
        specs = [("lo", lo_mid, True, True), ("hi", hi_mid, False, True),
                 ("olo", lo_out, True, False), ("ohi", hi_out, False, False),
                 ("imin", inner, True, True), ("imax", inner, False, True)]
        cur = {name: list(x) for name, *_ in specs}
        flags = {name: [mask[i] for i in range(n)] for name, mask, *_ in specs}
        # every tree's first level compares the same pairs of raw keys: one comparator per
        # pair for all six (a max tree takes "a < b" reversed; on a tie both are the same)
        first_lt = []
        for i in range(0, n - 1, 2):
            lt = Signal(name=f"first_lt{i // 2}")
            m.d.comb += lt.eq(x[i] < x[i + 1])
            first_lt.append(lt)
        side = {"valid": self.valid, "first": self.first, "last": self.last,
                "block": (self.beat // self.beats_per_block) if self.blocks > 1 else Const(0, 1),
                "count": popcount([~(gi == MIDDLE) for gi in g]),
                "t": self.t}

        # --- lane reductions, LEVELS_PER_STAGE tree levels per register stage -----------
        for st in range(self.tree_stages):
            for name, _, is_min, masked in specs:
                vals, fl = cur[name], flags[name]
                for lv in range(LEVELS_PER_STAGE):
                    if len(vals) > 1:
                        pairs = range(0, len(vals) - 1, 2)
                        if st == lv == 0:
                            wins = [first_lt[i // 2] if is_min else ~first_lt[i // 2]
                                    for i in pairs]
                        else:
                            wins = [_wins(vals[i], vals[i + 1], is_min) for i in pairs]
                        nv = [_node(vals[i], fl[i], vals[i + 1], fl[i + 1], w, masked)
                              for i, w in zip(pairs, wins)]
                        nf = [fl[i] | fl[i + 1] for i in pairs]
                        if len(vals) % 2:
                            nv.append(vals[-1]); nf.append(fl[-1])
                        vals, fl = nv, nf
                regs = [Signal(16, name=f"t{st}_{name}{i}") for i in range(len(vals))]
                fregs = [Signal(name=f"t{st}_has_{name}{i}") for i in range(len(fl))]
                m.d.sync += [r.eq(v) for r, v in zip(regs, vals)]
                m.d.sync += [r.eq(v) for r, v in zip(fregs, fl)]
                cur[name], flags[name] = regs, fregs
            nside = {}
            for k, v in side.items():
                r = Signal(v.shape(), name=f"t{st}_{k}")
                m.d.sync += r.eq(v)
                nside[k] = r
            side = nside
        r = {name: cur[name][0] for name, *_ in specs}
        rf = {name: flags[name][0] for name, *_ in specs}

        # --- accumulate over the beats of the vector --------------------------------------
        f = side["first"]
        acc = {name: Signal(16, name=f"acc_{name}") for name, *_ in specs}
        acc_f = {name: Signal(name=f"acc_has_{name}") for name, *_ in specs}
        acc_cnt = [Signal(8, name=f"acc_cnt{k}") for k in range(self.blocks)]
        nxt = {name: Mux(f, r[name], _node(acc[name], acc_f[name], r[name], rf[name],
                                           _wins(acc[name], r[name], is_min), masked))
               for name, _, is_min, masked in specs}
        nxt_f = {name: rf[name] | (~f & acc_f[name]) for name, *_ in specs}
        nxt_cnt = [(Mux(f, 0, acc_cnt[k]) + Mux(side["block"] == k, side["count"], 0))[:8]
                   for k in range(self.blocks)]
        with m.If(side["valid"]):
            m.d.sync += [acc[k].eq(nxt[k]) for k in acc]
            m.d.sync += [acc_f[k].eq(nxt_f[k]) for k in acc_f]
            m.d.sync += [acc_cnt[k].eq(nxt_cnt[k]) for k in range(self.blocks)]
        v1 = Signal()
        k1 = {name: Signal(16, name=f"v1_{name}") for name, *_ in specs}
        f1 = {name: Signal(name=f"v1_has_{name}") for name, *_ in specs}
        c1 = [Signal(8, name=f"v1_cnt{k}") for k in range(self.blocks)]
        t1 = Signal.like(self.t, name="v1_t")
        m.d.sync += v1.eq(side["valid"] & side["last"])
        with m.If(side["valid"] & side["last"]):
            m.d.sync += [k1[k].eq(nxt[k]) for k in k1] + [f1[k].eq(nxt_f[k]) for k in f1]
            m.d.sync += [c1[k].eq(nxt_cnt[k]) for k in range(self.blocks)]
            m.d.sync += t1.eq(side["t"])

        # --- the vector's keys in units ------------------------------------------------
        v2 = Signal()
        f2 = {name: Signal(name=f"v2_has_{name}") for name, *_ in specs}
        c2 = [Signal(8, name=f"v2_cnt{k}") for k in range(self.blocks)]
        # the lower sides' pivots (the upper sides' come negated, nt2 below)
        t2 = {k: Signal(UNITS_SHAPE, name=f"v2_t{k}") for k in (0, 1)}
        imin_bits2 = Signal(16)
        bits = {name: fp16_key_to_bits(k1[name]) for name, *_ in specs}
        m.d.sync += [v2.eq(v1), imin_bits2.eq(bits["imin"])] + [t2[k].eq(t1[k]) for k in t2]
        # every side as sign and magnitude, added to or subtracted from its pivot (or the
        # other inner extreme) in one carry chain, with no negation of its own: behind the
        # FP16 shifter in one stage, the inner minimum's negation (at 85 MHz) and then the
        # upper sides' (at 87 MHz) were the quantizer's critical path. The upper sides'
        # pivots come negated (x - T = -T +- |x|), from registers a stage early.
        mag2 = {k: Signal(MAG_WIDTH, name=f"v2_mag_{k}")
                for k in ("lo", "hi", "olo", "ohi", "imax", "imin")}
        neg2 = {k: Signal(name=f"v2_neg_{k}") for k in mag2}
        nt2 = {k: Signal(UNITS_SHAPE, name=f"v2_neg_t{k}") for k in (2, 3)}
        m.d.sync += [nt2[k].eq(-t1[k]) for k in nt2]
        for k in mag2:
            m.d.sync += [mag2[k].eq(fp16_magnitude_units(bits[k])), neg2[k].eq(bits[k][15])]
        m.d.sync += [f2[k].eq(f1[k]) for k in f2] + [c2[k].eq(c1[k]) for k in range(self.blocks)]

        # --- pivots subtracted -----------------------------------------------------------
        t_olo, t_ilo = t2[0], t2[1]
        v3 = Signal()
        o_lo3, o_hi3 = Signal(MAG_SHAPE), Signal(MAG_SHAPE)
        a3, b3, ext3 = Signal(MAG_SHAPE), Signal(MAG_SHAPE), Signal(MAG_SHAPE)
        imin3, imin_bits3 = Signal(UNITS_SHAPE), Signal(16)
        lo3, hi3 = Signal(), Signal()
        c3 = [Signal(8, name=f"v3_cnt{k}") for k in range(self.blocks)]
        W = UNITS_WIDTH
        m.d.sync += [
            v3.eq(v2), lo3.eq(f2["lo"]), hi3.eq(f2["hi"]),
            # T - x = T + (|x| if x < 0 else -|x|), modulo 2^41 (the extents are below it)
            a3.eq(Mux(f2["lo"], add_or_subtract(m, t_ilo, mag2["lo"], neg2["lo"], W, "a"), 0)),
            b3.eq(Mux(f2["hi"], add_or_subtract(m, nt2[2], mag2["hi"], ~neg2["hi"], W, "b"),
                      0)),
            o_lo3.eq(Mux(f2["olo"], add_or_subtract(m, t_olo, mag2["olo"], neg2["olo"], W,
                                                   "o_lo"), 0)),
            o_hi3.eq(Mux(f2["ohi"], add_or_subtract(m, nt2[3], mag2["ohi"], ~neg2["ohi"], W,
                                                   "o_hi"), 0)),
            imin3.eq(Mux(f2["imin"], signed_units(mag2["imin"], neg2["imin"]), 0)),
            imin_bits3.eq(Mux(f2["imin"], imin_bits2, 0)),
            # max - min: |min| + (-|max| if max < 0 else |max|) when min < 0, else
            # |max| - |min| (then max >= min >= 0)
            ext3.eq(Mux(f2["imin"], add_or_subtract(
                m, Mux(neg2["imin"], mag2["imin"], mag2["imax"]),
                Mux(neg2["imin"], mag2["imax"], mag2["imin"]),
                neg2["imin"] & ~neg2["imax"], W, "ext"), 0)),
        ]
        m.d.sync += [c3[k].eq(c2[k]) for k in range(self.blocks)]

        # --- outputs ---------------------------------------------------------------------
        m.d.sync += self.done.eq(v3)
        with m.If(v3):
            m.d.sync += [
                self.a.eq(a3), self.b.eq(b3), self.has_lo.eq(lo3), self.has_hi.eq(hi3),
                self.outer_max.eq(Mux(o_lo3 > o_hi3, o_lo3, o_hi3)),
                self.inner_min.eq(imin3), self.inner_min_fp16.eq(imin_bits3),
                self.inner_ext.eq(ext3),
            ]
            m.d.sync += [self.counts[k].eq(c3[k]) for k in range(self.blocks)]
        return m
