"""Threshold comparators and group shift (the paper's "decomposer").

Each lane's value is compared with the four thresholds of its vector's layer and K/V
(on 16-bit order keys of the FP16 patterns), giving its group and side, and the pivot of
that group and side is subtracted (in units, see :mod:`oaken_hw.rtl.common.fp16`), giving
the magnitude that the group's step quantizes
(:func:`oaken_hw.model.quantizer.classify` and the ``pivot`` / ``mag`` lines of
:func:`~oaken_hw.model.quantizer.quantize`).
"""

from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.add_sub import add_or_subtract
from ..common.fp16 import UNITS_WIDTH

__all__ = ["MIDDLE", "INNER", "OUTER", "GROUP_SHAPE", "MAG_SHAPE", "PIVOT_SHAPE", "classify",
           "fold_pivots", "group_shift", "Classifier", "GroupShift"]

#: group codes, as in the golden model
MIDDLE, INNER, OUTER = 0, 1, 2
GROUP_SHAPE = unsigned(2)
#: |x - pivot| <= 2 * 65504 units = 2047 << 30 < 2^41
MAG_SHAPE = unsigned(UNITS_WIDTH)
#: a pivot or a negated pivot in units
PIVOT_SHAPE = signed(UNITS_WIDTH + 1)


def classify(x, t):
    """Group and side of one value ``x`` against thresholds ``t`` (four values of one
    ordered kind: signed units, or :func:`~oaken_hw.rtl.common.fp16.fp16_key` keys).

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


def fold_pivots(t, inner_min):
    """The five pivots as :class:`GroupShift` takes them: ``T_o_lo, T_i_lo, -T_i_hi,
    -T_o_hi, -inner_min`` (the pivots of the sides above them negated), ``signed(42)``."""
    t_olo, t_ilo, t_ihi, t_ohi = t
    return [t_olo, t_ilo, -t_ihi, -t_ohi, -inner_min]


def group_shift(m, x_mag, x_neg, group, upper, p):
    """``|x - pivot|`` of ``x = -x_mag if x_neg else x_mag`` with folded pivots ``p``
    (:func:`fold_pivots`).

    The classification fixes the sign of ``x - pivot``: lower sides lie at or below their
    pivot, upper sides and the inner group at or above it. So the magnitude is
    ``x - pivot`` or ``pivot - x``, i.e. ``(+-pivot) + (+-x_mag)`` with signs known
    beforehand: the pivot's sign is folded into ``p`` once per vector, the value's is an
    add-or-subtract, and one carry chain does it (no negation of ``x``, no absolute value).
    """
    up = upper | (group == INNER)
    pivot = Mux(group == INNER, p[4],
                Mux(group == OUTER, Mux(upper, p[3], p[0]), Mux(upper, p[2], p[1])))
    # modulo 2^UNITS_WIDTH is enough: the magnitude is below it
    return add_or_subtract(m, pivot, x_mag, up ^ x_neg, UNITS_WIDTH)


def _lanes_layout(shape, lanes):
    return data.ArrayLayout(shape, lanes)


class Classifier(wiring.Component):
    """Combinational comparators for ``lanes`` values (latency 0).

    The comparisons are made on 16-bit order keys of the FP16 patterns
    (:func:`~oaken_hw.rtl.common.fp16.fp16_key`): exact, and a fraction of the cost of
    41-bit comparators on units.

    Parameters
    ----------
    lanes : int

    Attributes
    ----------
    x : In(ArrayLayout(16, lanes))
        Keys of the (sanitized) values.
    t : In(ArrayLayout(16, 4))
        Keys of ``T_o_lo, T_i_lo, T_i_hi, T_o_hi``.
    group : Out(ArrayLayout(2, lanes))
    upper : Out(ArrayLayout(1, lanes))
    """

    latency = 0

    def __init__(self, *, lanes):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "x": In(_lanes_layout(16, lanes)),
            "t": In(_lanes_layout(16, 4)),
            "group": Out(_lanes_layout(GROUP_SHAPE, lanes)),
            "upper": Out(_lanes_layout(1, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        t = [self.t[k] for k in range(4)]
        for i in range(self.lanes):
            g, u = classify(self.x[i], t)
            m.d.comb += [self.group[i].eq(g), self.upper[i].eq(u)]
        return m


class GroupShift(wiring.Component):
    """Combinational group shift of ``lanes`` classified values (latency 0).

    Parameters
    ----------
    lanes : int

    Attributes
    ----------
    x_mag : In(ArrayLayout(40, lanes))
        Magnitudes of the values in units.
    x_neg : In(ArrayLayout(1, lanes))
        Signs of the values.
    p : In(ArrayLayout(signed(42), 5))
        The vector's folded pivots (:func:`fold_pivots`), computed once per vector.
    group, upper : In(ArrayLayout)
        As found by the :class:`Classifier`.
    mag : Out(ArrayLayout(41, lanes))
    """

    latency = 0

    def __init__(self, *, lanes):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "x_mag": In(_lanes_layout(UNITS_WIDTH - 1, lanes)),
            "x_neg": In(_lanes_layout(1, lanes)),
            "p": In(_lanes_layout(PIVOT_SHAPE, 5)),
            "group": In(_lanes_layout(GROUP_SHAPE, lanes)),
            "upper": In(_lanes_layout(1, lanes)),
            "mag": Out(_lanes_layout(MAG_SHAPE, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        p = [self.p[k] for k in range(5)]
        for i in range(self.lanes):
            m.d.comb += self.mag[i].eq(group_shift(m, self.x_mag[i], self.x_neg[i],
                                                   self.group[i], self.upper[i], p))
        return m
