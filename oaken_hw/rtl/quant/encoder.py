"""Codes: ``j = min(mag // step, levels - 1)`` (0 for a zero step) and the dense/high bits.

A step is an FP16 value ``d << s`` with an 11-bit ``d``, so ``mag // step`` is
``(mag >> s) // d``; the quotient is wanted only up to ``2 * codes - 1`` (larger ones
clamp), so a short restoring division of ``middle_bits + 1`` steps on a narrow remainder
does it (:func:`oaken_hw.model.quantizer.quantize`, the ``j`` and ``code`` lines).

Codes per group (``codes = 2^middle_bits``): lower middle ``n_lo - 1 - j``, upper middle
``n_lo + j``, inner and outer ``j``. The dense slot is the code's low ``middle_bits``; the
outlier's extra bit ("high") is the side for outer and the code's top bit for inner.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.shift import shift_right
from .classifier import GROUP_SHAPE, INNER, MAG_SHAPE, MIDDLE, OUTER

__all__ = ["Encoder", "step_parts"]


def step_parts(bits):
    """Split an FP16 step (non-negative) into ``(d, s)`` with ``step = d << s``."""
    exp, man = bits[10:15], bits[0:10]
    normal = exp != 0
    return Cat(man, normal), Mux(normal, exp - 1, 0)[:5]


class Encoder(wiring.Component):
    """Quantizes ``lanes`` magnitudes; a two-stage pipeline advanced by ``en``.

    Parameters
    ----------
    lanes, middle_bits : int

    Attributes
    ----------
    en : In(1)
        Advance the pipeline (outputs hold while it is low).
    group, upper, mag : In(ArrayLayout)
        As produced by the :class:`~.classifier.GroupShift`. Precondition:
        ``mag <= levels * step`` for the lane's side, which the engine guarantees (a step
        covers its group's extent: ``levels * step_for(extent, levels) >= extent``), so
        ``mag >> s <= levels * d < 2^(middle_bits + 12)`` and only those bits are kept.
    n_lo : In(range(codes + 1))
    delta_mid, delta_inner, delta_outer : In(16)
        FP16 steps of the vector.
    dense : Out(ArrayLayout(middle_bits, lanes))
    high : Out(ArrayLayout(1, lanes))
    outlier, outer : Out(ArrayLayout(1, lanes))
    latency : int
        ``en`` cycles: the step's selection, the shift, the division (two quotient bits
        per stage), the code.
    """

    def __init__(self, *, lanes, middle_bits):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        if isinstance(middle_bits, bool) or not isinstance(middle_bits, int) \
                or not 2 <= middle_bits <= 7:
            raise ValueError(f"middle_bits must be an integer in [2, 7], not {middle_bits!r}")
        self.lanes, self.middle_bits = lanes, middle_bits
        self.codes = 1 << middle_bits
        # selection (1) + shift (1) + division stages + code (1)
        self.latency = 2 + -(-(middle_bits + 1) // 2) + 1
        L = lambda s: data.ArrayLayout(s, lanes)
        super().__init__({
            "en": In(1),
            "group": In(L(GROUP_SHAPE)), "upper": In(L(1)), "mag": In(L(MAG_SHAPE)),
            "n_lo": In(range(self.codes + 1)),
            "delta_mid": In(16), "delta_inner": In(16), "delta_outer": In(16),
            "dense": Out(L(middle_bits)), "high": Out(L(1)),
            "outlier": Out(L(1)), "outer": Out(L(1)),
        })

    def elaborate(self, platform):
        m = Module()
        mb, codes = self.middle_bits, self.codes
        qb = mb + 1                               # quotient bits: j < 2 * codes
        rw = 11 + qb                              # mag >> s <= levels * d < 2^rw
        parts = [step_parts(d) for d in (self.delta_mid, self.delta_inner, self.delta_outer)]

        def reg(value, name, shape=None):
            r = Signal(shape if shape is not None else len(value), name=name)
            with m.If(self.en):
                m.d.sync += r.eq(value)
            return r

        # the vector's n_lo travels with the lanes
        n_lo = [self.n_lo]
        for k in range(self.latency - 1):
            n_lo.append(reg(n_lo[-1], f"n_lo{k + 1}", len(self.n_lo)))

        for i in range(self.lanes):
            g, u = self.group[i], self.upper[i]
            # stage 1: the step's parts and the side's top code, selected by the group
            d = Mux(g == MIDDLE, parts[0][0], Mux(g == INNER, parts[1][0], parts[2][0]))
            sv = Mux(g == MIDDLE, parts[0][1], Mux(g == INNER, parts[1][1], parts[2][1]))
            levels = Mux(g == INNER, 2 * codes,
                         Mux(g == OUTER, codes, Mux(u, codes - n_lo[0], n_lo[0])))[:qb + 1]
            mag = reg(self.mag[i], f"mag{i}")
            s = reg(sv, f"s{i}", 5)
            dd = reg(d, f"d{i}_0", 11)
            top = reg((levels - 1)[:qb], f"top{i}_0", qb)
            gg, uu = reg(g, f"g{i}_0", GROUP_SHAPE), reg(u, f"u{i}_0", 1)

            # stage 2: mag >> s, its low rw bits: it is below levels * d < 2^rw (the
            # precondition)
            t = Signal(rw, name=f"t{i}")
            m.d.comb += t.eq(shift_right(mag, s, rw))
            rem = reg(t, f"rem{i}_in")
            dd = reg(dd, f"d{i}", 11)
            top = reg(top, f"top{i}", qb)
            gg, uu = reg(gg, f"g{i}_1", GROUP_SHAPE), reg(uu, f"u{i}_1", 1)

            # stages 2..: restoring division, two quotient bits per stage. The remainder
            # before quotient bit k is at most d << (k + 1) (mag >> s <= levels * d <=
            # d << qb), so bit k needs only a 12-bit subtraction of d from rem >> k; its
            # borrow is the comparison and the low k bits pass through. At the bound
            # (mag >> s == d << qb: an inner value at the far end of a step that is exact)
            # every bit is 1, the clamped code, so no saturation test is needed.
            q = []
            ks = list(reversed(range(qb)))
            for st in range(0, qb, 2):
                for k in ks[st:st + 2]:
                    top_bits = rem[k:k + 12]
                    diff = Signal(13, name=f"diff{i}_{k}")
                    m.d.comb += diff.eq(top_bits - dd)
                    ge = ~diff[12]
                    q.append(ge)
                    nrem = Signal(k + 11, name=f"rem{i}_{k}")
                    m.d.comb += nrem.eq(Cat(rem[:k], Mux(ge, diff[:11], top_bits[:11])))
                    rem = nrem
                if st + 2 < qb:
                    n = st // 2 + 2
                    rem = reg(rem, f"rem{i}_s{n}")
                    q = [reg(b, f"q{i}_{j}_s{n}", 1) for j, b in enumerate(q)]
                    dd = reg(dd, f"d{i}_s{n}", 11)
                    top = reg(top, f"top{i}_s{n}", qb)
                    gg, uu = reg(gg, f"g{i}_s{n}", GROUP_SHAPE), reg(uu, f"u{i}_s{n}", 1)
            quot = Cat(*reversed(q))
            j = Mux(dd == 0, 0, Mux(quot > top, top, quot))
            j1 = reg(j, f"j{i}", qb)
            g1, u1 = reg(gg, f"g{i}", GROUP_SHAPE), reg(uu, f"u{i}", 1)

            # last stage: code, dense slot, extra bit
            nl = n_lo[-1]
            code = Mux(g1 == MIDDLE, Mux(u1, nl + j1, nl - 1 - j1), j1)[:qb]
            with m.If(self.en):
                m.d.sync += [
                    self.dense[i].eq(code[:mb]),
                    self.high[i].eq(Mux(g1 == OUTER, u1, Mux(g1 == INNER, code[mb], 0))),
                    self.outlier[i].eq(g1 != MIDDLE),
                    self.outer[i].eq(g1 == OUTER),
                ]
        return m
