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
        As produced by the :class:`~.classifier.GroupShift`.
    n_lo : In(range(codes + 1))
    delta_mid, delta_inner, delta_outer : In(16)
        FP16 steps of the vector.
    dense : Out(ArrayLayout(middle_bits, lanes))
    high : Out(ArrayLayout(1, lanes))
    outlier, outer : Out(ArrayLayout(1, lanes))
    latency : int
        2 (``en`` cycles).
    """

    latency = 2

    def __init__(self, *, lanes, middle_bits):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        if isinstance(middle_bits, bool) or not isinstance(middle_bits, int) \
                or not 2 <= middle_bits <= 7:
            raise ValueError(f"middle_bits must be an integer in [2, 7], not {middle_bits!r}")
        self.lanes, self.middle_bits = lanes, middle_bits
        self.codes = 1 << middle_bits
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
        rw = 11 + qb                              # remainder width below saturation
        parts = [step_parts(d) for d in (self.delta_mid, self.delta_inner, self.delta_outer)]
        n_lo = self.n_lo
        n_lo1 = Signal.like(n_lo, name="n_lo1")

        # stage 1: shift, saturating restoring division, clamp
        for i in range(self.lanes):
            g, u, mag = self.group[i], self.upper[i], self.mag[i]
            d, s = Signal(11, name=f"d{i}"), Signal(5, name=f"s{i}")
            t = Signal(len(mag), name=f"t{i}")
            m.d.comb += [
                d.eq(Mux(g == MIDDLE, parts[0][0], Mux(g == INNER, parts[1][0], parts[2][0]))),
                s.eq(Mux(g == MIDDLE, parts[0][1], Mux(g == INNER, parts[1][1], parts[2][1]))),
                t.eq(mag >> s),
            ]
            sat = (t[rw:] != 0) | (t[:rw] >= (d << qb))
            rem = t[:rw]
            q = []
            for k in reversed(range(qb)):
                trial = d << k
                ge = rem >= trial
                q.append(ge)
                nrem = Signal(rw, name=f"rem{i}_{k}")
                m.d.comb += nrem.eq(Mux(ge, rem - trial, rem))
                rem = nrem
            quot = Cat(*reversed(q))
            quot = Mux(sat, (1 << qb) - 1, quot)
            levels = Mux(g == INNER, 2 * codes,
                         Mux(g == OUTER, codes, Mux(u, codes - n_lo, n_lo)))[:qb + 1]
            top = (levels - 1)[:qb]
            j = Mux(d == 0, 0, Mux(quot > top, top, quot))
            j1, g1, u1 = Signal(qb, name=f"j{i}"), Signal(GROUP_SHAPE, name=f"g{i}"), \
                Signal(name=f"u{i}")
            with m.If(self.en):
                m.d.sync += [j1.eq(j), g1.eq(g), u1.eq(u)]

            # stage 2: code, dense slot, extra bit
            code = Mux(g1 == MIDDLE, Mux(u1, n_lo1 + j1, n_lo1 - 1 - j1), j1)[:qb]
            with m.If(self.en):
                m.d.sync += [
                    self.dense[i].eq(code[:mb]),
                    self.high[i].eq(Mux(g1 == OUTER, u1, Mux(g1 == INNER, code[mb], 0))),
                    self.outlier[i].eq(g1 != MIDDLE),
                    self.outer[i].eq(g1 == OUTER),
                ]
        with m.If(self.en):
            m.d.sync += n_lo1.eq(n_lo)
        return m
