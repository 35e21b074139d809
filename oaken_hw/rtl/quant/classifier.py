"""Threshold comparators and group shift (the paper's "decomposer").

Each lane's value (in units, see :mod:`oaken_hw.rtl.common.fp16`) is compared with the four
thresholds of its vector's layer and K/V, giving its group and side, and the pivot of that
group and side is subtracted, giving the magnitude that the group's step quantizes
(:func:`oaken_hw.model.quantizer.classify` and the ``pivot`` / ``mag`` lines of
:func:`~oaken_hw.model.quantizer.quantize`).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.fp16 import UNITS_SHAPE, UNITS_WIDTH

__all__ = ["MIDDLE", "INNER", "OUTER", "GROUP_SHAPE", "MAG_SHAPE", "classify", "group_shift",
           "Classifier", "GroupShift"]

#: group codes, as in the golden model
MIDDLE, INNER, OUTER = 0, 1, 2
GROUP_SHAPE = unsigned(2)
#: |x - pivot| <= 2 * 65504 units = 2047 << 30 < 2^41
MAG_SHAPE = unsigned(UNITS_WIDTH)


def classify(x, t):
    """Group and side of one value ``x`` against thresholds ``t`` (four signed values).

    Returns ``(group, upper)``: ``upper`` is the side of middle (``x >= T_i_hi``) and outer
    (``x >= T_o_hi``) values, 0 for inner values. (An outer value is upper only beyond
    ``T_o_hi``, so that with degenerate thresholds ``T_o_lo == T_i_hi`` a value at
    ``T_o_lo`` keeps its own pivot.)
    """
    t_olo, t_ilo, t_ihi, t_ohi = t
    above_o = x >= t_ohi
    outer = (x <= t_olo) | above_o
    inner = (x > t_ilo) & (x < t_ihi)
    group = Mux(outer, OUTER, Mux(inner, INNER, MIDDLE))
    return group, Mux(outer, above_o, x >= t_ihi) & ~inner


def group_shift(m, x, group, upper, t, inner_min):
    """``|x - pivot|``: the pivot is the inner threshold of the side for middle values, the
    outer threshold of the side for outer values and ``inner_min`` for inner values."""
    t_olo, t_ilo, t_ihi, t_ohi = t
    pivot = Mux(group == INNER, inner_min,
                Mux(group == OUTER, Mux(upper, t_ohi, t_olo), Mux(upper, t_ihi, t_ilo)))
    diff = Signal(signed(UNITS_WIDTH + 1), name="diff")
    m.d.comb += diff.eq(x - pivot)
    return Mux(diff < 0, -diff, diff)[:UNITS_WIDTH]


def _lanes_layout(shape, lanes):
    return data.ArrayLayout(shape, lanes)


class _LaneShift(wiring.Component):
    """Ports shared by :class:`Classifier` and :class:`GroupShift`; ``_sides`` says whether
    ``group`` and ``upper`` are computed here (``Out``) or given (``In``)."""

    _sides = Out

    def __init__(self, *, lanes):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "x": In(_lanes_layout(UNITS_SHAPE, lanes)),
            "t": In(_lanes_layout(UNITS_SHAPE, 4)),
            "inner_min": In(UNITS_SHAPE),
            "group": self._sides(_lanes_layout(GROUP_SHAPE, lanes)),
            "upper": self._sides(_lanes_layout(1, lanes)),
            "mag": Out(_lanes_layout(MAG_SHAPE, lanes)),
        })


class Classifier(_LaneShift):
    """Combinational comparators and group shift for ``lanes`` values (latency 0).

    Parameters
    ----------
    lanes : int

    Attributes
    ----------
    x : In(ArrayLayout(signed(41), lanes))
        Values in units.
    t : In(ArrayLayout(signed(41), 4))
        ``T_o_lo, T_i_lo, T_i_hi, T_o_hi`` in units.
    inner_min : In(signed(41))
        Pivot of the inner group (feed 0 when it is not known yet: the inner magnitude is
        then meaningless).
    group : Out(ArrayLayout(2, lanes))
    upper : Out(ArrayLayout(1, lanes))
    mag : Out(ArrayLayout(41, lanes))
    """

    latency = 0

    def elaborate(self, platform):
        m = Module()
        t = [self.t[k] for k in range(4)]
        for i in range(self.lanes):
            g, u = classify(self.x[i], t)
            m.d.comb += [self.group[i].eq(g), self.upper[i].eq(u),
                         self.mag[i].eq(group_shift(m, self.x[i], self.group[i],
                                                    self.upper[i], t, self.inner_min))]
        return m


class GroupShift(_LaneShift):
    """Combinational group shift of ``lanes`` already classified values (latency 0).

    The second pass of the engine stores the group and side of every element and repeats
    only the subtraction, now with the vector's inner minimum known.

    Attributes
    ----------
    x, t, inner_min, group, upper : In
        As :class:`Classifier`'s ports of the same names.
    mag : Out(ArrayLayout(41, lanes))
    """

    latency = 0
    _sides = In

    def elaborate(self, platform):
        m = Module()
        t = [self.t[k] for k in range(4)]
        for i in range(self.lanes):
            m.d.comb += self.mag[i].eq(group_shift(m, self.x[i], self.group[i], self.upper[i],
                                                   t, self.inner_min))
        return m
