"""Per-vector reductions of the first pass: the extents that the steps are made from.

For every vector: the largest middle magnitude on the lower side (``a``) and on the upper
side (``b``) and whether each side has elements, the largest outer magnitude, the inner
group's minimum and extent (max - min of the inner values), and the outlier count of every
sparse block (the framing bytes of the metadata record).
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.fp16 import MAG_WIDTH, UNITS_SHAPE
from .classifier import GROUP_SHAPE, INNER, MAG_SHAPE, MIDDLE, OUTER

__all__ = ["Extents", "reduce_tree"]

# larger than every value in units (|x| < 2^40)
_BIG = (1 << MAG_WIDTH) - 1


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


def _max(a, b):
    return Mux(a > b, a, b)


def _min(a, b):
    return Mux(a < b, a, b)


class Extents(wiring.Component):
    """Per-vector min/max reductions over a vector's beats.

    Beats enter with ``valid``; ``first``/``last`` mark a vector's first and last beat and
    ``beat`` is the beat's index in its vector. Two cycles after a ``last`` beat, ``done``
    is high for one cycle with the vector's results (they hold until the next ``done``).

    Parameters
    ----------
    lanes, beats, sparse_block : int
        Elements per beat, beats per vector, elements per sparse block.

    Attributes
    ----------
    valid, first, last : In(1)
    beat : In(range(beats))
    x : In(ArrayLayout(signed(41), lanes))
        Values in units (for the inner group).
    group, upper, mag : In(ArrayLayout)
        From the :class:`~.classifier.Classifier`.
    done : Out(1)
    a, b, outer_max, inner_ext : Out(41)
    has_lo, has_hi : Out(1)
        The middle group has lower / upper elements.
    inner_min : Out(signed(41))
        0 when the vector has no inner element.
    counts : Out(ArrayLayout(8, blocks))
        Outliers per sparse block.
    latency : int
        2: cycles from a ``last`` beat to ``done``.
    """

    latency = 2

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
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1),
            "beat": In(range(max(2, beats))),
            "x": In(data.ArrayLayout(UNITS_SHAPE, lanes)),
            "group": In(data.ArrayLayout(GROUP_SHAPE, lanes)),
            "upper": In(data.ArrayLayout(1, lanes)),
            "mag": In(data.ArrayLayout(MAG_SHAPE, lanes)),
            "done": Out(1),
            "a": Out(MAG_SHAPE), "b": Out(MAG_SHAPE), "has_lo": Out(1), "has_hi": Out(1),
            "outer_max": Out(MAG_SHAPE),
            "inner_min": Out(UNITS_SHAPE), "inner_ext": Out(MAG_SHAPE),
            "counts": Out(data.ArrayLayout(8, self.blocks)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        g = [self.group[i] for i in range(n)]
        u = [self.upper[i] for i in range(n)]
        mag = [self.mag[i] for i in range(n)]
        x = [self.x[i] for i in range(n)]
        lo_mid = [(g[i] == MIDDLE) & ~u[i] for i in range(n)]
        hi_mid = [(g[i] == MIDDLE) & u[i] for i in range(n)]
        inner = [g[i] == INNER for i in range(n)]
        outer = [g[i] == OUTER for i in range(n)]

        # stage 1: reductions over the lanes of one beat
        r = {
            "valid": Signal(), "first": Signal(), "last": Signal(),
            "block": Signal(range(max(2, self.blocks))),
            "a": Signal(MAG_SHAPE), "b": Signal(MAG_SHAPE), "o": Signal(MAG_SHAPE),
            "imin": Signal(UNITS_SHAPE), "imax": Signal(UNITS_SHAPE),
            "has_lo": Signal(), "has_hi": Signal(), "has_in": Signal(),
            "count": Signal(range(n + 1)),
        }
        sel = lambda v, c, other: Mux(c, v, other)
        m.d.sync += [
            r["valid"].eq(self.valid), r["first"].eq(self.first), r["last"].eq(self.last),
            r["block"].eq(self.beat // self.beats_per_block),
            r["a"].eq(reduce_tree(m, [sel(mag[i], lo_mid[i], 0) for i in range(n)], _max, MAG_SHAPE)),
            r["b"].eq(reduce_tree(m, [sel(mag[i], hi_mid[i], 0) for i in range(n)], _max, MAG_SHAPE)),
            r["o"].eq(reduce_tree(m, [sel(mag[i], outer[i], 0) for i in range(n)], _max, MAG_SHAPE)),
            r["imin"].eq(reduce_tree(m, [sel(x[i], inner[i], Const(_BIG, UNITS_SHAPE))
                                      for i in range(n)], _min, UNITS_SHAPE)),
            r["imax"].eq(reduce_tree(m, [sel(x[i], inner[i], Const(-_BIG, UNITS_SHAPE))
                                      for i in range(n)], _max, UNITS_SHAPE)),
            r["has_lo"].eq(reduce_tree(m, lo_mid, lambda p, q: p | q, 1)),
            r["has_hi"].eq(reduce_tree(m, hi_mid, lambda p, q: p | q, 1)),
            r["has_in"].eq(reduce_tree(m, inner, lambda p, q: p | q, 1)),
            r["count"].eq(sum(~(gi == MIDDLE) for gi in g)),
        ]

        # stage 2: accumulate over the beats of the vector
        acc_a, acc_b, acc_o = Signal(MAG_SHAPE), Signal(MAG_SHAPE), Signal(MAG_SHAPE)
        acc_imin, acc_imax = Signal(UNITS_SHAPE), Signal(UNITS_SHAPE)
        acc_lo, acc_hi, acc_in = Signal(), Signal(), Signal()
        acc_cnt = [Signal(8, name=f"acc_cnt{k}") for k in range(self.blocks)]
        f = r["first"]
        nxt_a = Mux(f | (r["a"] > acc_a), r["a"], acc_a)
        nxt_b = Mux(f | (r["b"] > acc_b), r["b"], acc_b)
        nxt_o = Mux(f | (r["o"] > acc_o), r["o"], acc_o)
        nxt_imin = Mux(f | (r["imin"] < acc_imin), r["imin"], acc_imin)
        nxt_imax = Mux(f | (r["imax"] > acc_imax), r["imax"], acc_imax)
        nxt_lo = r["has_lo"] | (~f & acc_lo)
        nxt_hi = r["has_hi"] | (~f & acc_hi)
        nxt_in = r["has_in"] | (~f & acc_in)
        nxt_cnt = [(Mux(f, 0, acc_cnt[k]) + Mux(r["block"] == k, r["count"], 0))[:8]
                   for k in range(self.blocks)]
        with m.If(r["valid"]):
            m.d.sync += [acc_a.eq(nxt_a), acc_b.eq(nxt_b), acc_o.eq(nxt_o),
                         acc_imin.eq(nxt_imin), acc_imax.eq(nxt_imax),
                         acc_lo.eq(nxt_lo), acc_hi.eq(nxt_hi), acc_in.eq(nxt_in)]
            m.d.sync += [acc_cnt[k].eq(nxt_cnt[k]) for k in range(self.blocks)]
        m.d.sync += self.done.eq(r["valid"] & r["last"])
        with m.If(r["valid"] & r["last"]):
            m.d.sync += [
                self.a.eq(nxt_a), self.b.eq(nxt_b), self.outer_max.eq(nxt_o),
                self.has_lo.eq(nxt_lo), self.has_hi.eq(nxt_hi),
                self.inner_min.eq(Mux(nxt_in, nxt_imin, 0)),
                self.inner_ext.eq(Mux(nxt_in, (nxt_imax - nxt_imin)[:MAG_WIDTH + 1], 0)),
            ]
            m.d.sync += [self.counts[k].eq(nxt_cnt[k]) for k in range(self.blocks)]
        return m
