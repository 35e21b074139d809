"""The dequantizer's sum ``N = 2 pivot +- level`` as an aligned window, rounded to FP16.

Per element the golden decoder (:func:`oaken_hw.model.quantizer.dequantize`) rounds
``N = 2 pivot +- (2j + 1) * step`` half units to FP16 once. Both terms are short
floating-point numbers:

* ``A = 2 pivot = +-ma * 2^ea``: the pivot's 11-bit significand ``ma`` and
  ``ea = max(exponent field, 1)`` (an FP16 value is ``ma << (ea - 1)`` units);
* ``B = level = prod * 2^sh``: ``prod = (2j + 1) * sig`` (``middle_bits + 2`` by 11 bits) and
  the step's ``sh = max(exponent field - 1, 0)``.

Written as integers they span 48 bits, and the old datapath added and normalized all 48
(about 1,000 LUT4 per lane on ECP5). Here they are added as a floating-point adder does:
both as ``S``-bit significands (``S = middle_bits + 13``, 17 at the default: the pivot's
moved up by ``up = S - 11`` bits, ``eA = ea``, ``eB = sh + up``), the one with the smaller
exponent (the level on a tie) shifted right by the difference ``d`` into a window of
``T = 3`` bits below the larger one's, the bits shifted out of the window OR-ed into the
window's bit 0 (a *jam* bit), and the sum's magnitude (21 bits at the default) handed to
the rounder (:mod:`.fp16_round`) with the window's position.

Why the window gives the same bits as the exact sum. The jam bit keeps every bit of the
sum at window position 1 and above, and whether anything below position 1 is non-zero
(an even number plus ``y`` in ``[0, 2)`` has the same bits above bit 0, and the same
"bit 0 or below non-zero", as with ``y`` replaced by ``[y > 0]``). The rounder reads only
the kept bits, the guard and the OR of the bits below the guard, so the result is exact
whenever nothing is lost, or the guard is at window position 1 or above:

* the pivot is the larger: its significand is normal (a subnormal or zero pivot has
  ``eA = 1 < up <= eB``), its leading one at ``T + S - 1``; the level loses bits only if
  ``d > T``, and is then below ``2^(S - 1)``; the sum's leading one is at ``T + S - 2`` or
  above, the guard at ``T + S - 13 >= 5``;
* the level is the larger: a zero or subnormal step has ``eB = up``, the smallest
  exponent, so ``d < up`` and the pivot's ``T + up`` low zero bits absorb the shift; a
  normal step has ``prod >= sig >= 1024``, the leading one at ``T + 10`` or above, and the
  pivot loses bits only if ``d > T + up``, when it is below ``2^(S - up - 1) = 2^10``; the
  sum's leading one is at ``T + 9`` or above and the guard at ``T - 2 = 1``. This case
  sets ``T``.

When bits are lost the window's bit 0 is at least 2 half units and the sum is far
above the subnormal range (``e > 1``), so the rounder's exponent clamp never meets a jam
bit. ``test_level_sum_matches_model`` checks this against the model, ``T``'s tight case
and the jam cases included (``T = 2`` fails it).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..common.shift import below, shift_right
from .fp16_round import floor_mask, round_finish, round_prepare

__all__ = ["ROUND_PAD", "step_parts", "SumWindow", "LevelSum"]

#: zero bits the rounder appends below the sum: a small sum far above the window's bit 0
#: is shifted left by up to 11 bits
ROUND_PAD = 11


def step_parts(word):
    """Significand (11 bits) and left shift ``sh`` (0..29) of a non-negative FP16 step:
    the step is ``sig << sh`` units. The sign bit is not read."""
    exp = word[10:15]
    return Cat(word[:10], exp != 0), Mux(exp == 0, 0, exp - 1)[:5]


def _pivot_parts(word):
    """Sign, 11-bit significand and ``ea = max(exponent field, 1)`` of an FP16 pivot:
    twice the pivot is ``+-ma << ea`` half units."""
    exp = word[10:15]
    return word[15], Cat(word[:10], exp != 0), Mux(exp == 0, 1, exp)[:5]


def _shift_with_jam(value, amount, width):
    """``value >> amount`` in ``width`` bits, with the OR of the bits shifted out of bit 0
    OR-ed into bit 0 (a thermometer mask of ``amount``, as the rounder's sticky bit)."""
    lost = (value & below(amount, len(value))).any()
    return shift_right(value, amount, width) | lost


class SumWindow:
    """The window of one ``middle_bits``: significands of ``S = middle_bits + 13`` bits
    (``prod``'s width), ``T = 3`` bits below the larger one (a 20-bit window and a 21-bit
    magnitude of the sum at ``middle_bits = 4``).

    Attributes
    ----------
    sig, low, width : int
        ``S``, ``T`` and ``T + S``.
    offset_shape : Shape
        Of the window's position: its bit 0 counts ``2^(offset - 25)``,
        ``offset = max(eA, eB) - (S - 11) - T`` in ``[-3, 26]``.
    offset_min : int
        -3 (``-T``: ``max(eA, eB) >= eB >= S - 11``), the ``lowest`` of the rounder's
        :func:`.fp16_round.floor_mask`.
    """

    def __init__(self, middle_bits):
        self.sig = middle_bits + 13
        self.low = 3
        self.width = self.low + self.sig
        self.offset_shape = signed(6)
        self.offset_min = -self.low

    def step_exponent(self, sh):
        """The exponent of the product ``(2j + 1) * sig`` in the window, from the step's
        shift ``sh`` (5 bits, :func:`step_parts`): 6 bits, an input of :meth:`exponents`
        that a pipeline can register a stage ahead of it."""
        return (sh + (self.sig - 11))[:6]

    def exponents(self, m, pivot, eb, name="lvl"):
        """The exponent compare, which can be a stage ahead of :meth:`align`.

        Parameters
        ----------
        m : Module
        pivot : Value, 16 bits
            FP16 bit pattern of the pivot (finite).
        eb : Value, 6 bits
            The step's exponent in the window (:meth:`step_exponent`).

        Returns
        -------
        dict with ``a_larger`` (the pivot's exponent is the larger), ``d`` (the difference,
        6 bits) and ``offset`` (the window's position, :attr:`offset_shape`).
        """
        up = self.sig - 11                          # the pivot's significand moved up
        ea = _pivot_parts(pivot)[2]
        a_larger = Signal(name=f"{name}_a_larger")
        d = Signal(6, name=f"{name}_d")
        offset = Signal(self.offset_shape, name=f"{name}_offset")
        m.d.comb += [a_larger.eq(ea >= eb), d.eq(Mux(a_larger, ea - eb, eb - ea)),
                     offset.eq(Mux(a_larger, ea, eb) - up - self.low)]
        return {"a_larger": a_larger, "d": d, "offset": offset}

    def align(self, m, pivot, prod, exps, name="lvl"):
        """Both operands in the window.

        Parameters
        ----------
        m : Module
        pivot : Value, 16 bits
            FP16 bit pattern of the pivot (finite).
        prod : Value, unsigned, at most ``sig`` bits
            ``(2j + 1) * sig`` of the step.
        exps : dict
            :meth:`exponents` of the pivot and the step (``a_larger`` and ``d`` are read).

        Returns
        -------
        dict with ``a`` and ``b`` (the window values of ``|2 pivot|`` and of the level,
        ``width`` bits each) and ``sign`` (the pivot's sign bit).
        """
        S, T, W = self.sig, self.low, self.width
        up = S - 11
        sign, ma, _ = _pivot_parts(pivot)
        a_larger, d = exps["a_larger"], exps["d"]
        sig_a = Cat(Const(0, T + up), ma)
        sig_b = Cat(Const(0, T), prod[:S])
        smaller = Signal(W, name=f"{name}_smaller")
        m.d.comb += smaller.eq(_shift_with_jam(Mux(a_larger, sig_b, sig_a), d, W))
        a, b = Signal(W, name=f"{name}_a"), Signal(W, name=f"{name}_b")
        m.d.comb += [a.eq(Mux(a_larger, sig_a, smaller)), b.eq(Mux(a_larger, smaller, sig_b))]
        return {"a": a, "b": b, "sign": sign}

    def total(self, m, a, b, sign, upper, name="lvl"):
        """The second stage: the magnitude and sign of ``+-(|2 pivot| +- level)``.

        The level is added when it has the pivot's sign (``upper`` and a non-negative
        pivot, or a lower level and a negative one) and subtracted otherwise. The
        difference is made both ways, beside the sum, and the non-negative one kept (three
        carry chains side by side): an absolute value after the sum would put a second
        carry chain behind the first, and the rounder's bit length behind both.

        Returns
        -------
        mag : Value, ``width + 1`` bits, unsigned
        neg : Value, 1 bit
            The result is negative (set for a zero result too; the rounder gives it +0).
        """
        plus = ~(sign ^ ~upper)
        total = Signal(self.width + 1, name=f"{name}_total")
        a_b = Signal(signed(self.width + 1), name=f"{name}_a_b")
        b_a = Signal(self.width, name=f"{name}_b_a")
        m.d.comb += [total.eq(a + b), a_b.eq(a - b), b_a.eq(b - a)]
        below_b = a_b < 0
        mag = Signal(self.width + 1, name=f"{name}_mag")
        m.d.comb += mag.eq(Mux(plus, total, Mux(below_b, b_a, a_b.as_unsigned())))
        return mag, sign ^ (~plus & below_b)


class LevelSum(wiring.Component):
    """``2 pivot +- (2j + 1) * step`` rounded to FP16, combinational (latency 0): the
    dequantizer's per-element datapath without its registers, for tests.

    Parameters
    ----------
    middle_bits : int

    Attributes
    ----------
    pivot, step : In(16)
        FP16 bit patterns (finite; the step non-negative).
    odd : In(middle_bits + 2)
        ``2j + 1``.
    upper : In(1)
        Add the level (else subtract it).
    o : Out(16)
        FP16 bit pattern, as :func:`oaken_hw.model.numerics.half_units_to_fp16`.
    """

    latency = 0

    def __init__(self, *, middle_bits):
        if isinstance(middle_bits, bool) or not isinstance(middle_bits, int) \
                or not 2 <= middle_bits <= 7:
            raise ValueError(f"middle_bits must be an integer in [2, 7], not {middle_bits!r}")
        self.middle_bits = middle_bits
        super().__init__({"pivot": In(16), "step": In(16), "odd": In(middle_bits + 2),
                          "upper": In(1), "o": Out(16)})

    def elaborate(self, platform):
        m = Module()
        sig, sh = step_parts(self.step)
        prod = Signal(unsigned(self.middle_bits + 2 + 11))
        m.d.comb += prod.eq(self.odd * sig)
        win = SumWindow(self.middle_bits)
        exps = win.exponents(m, self.pivot, win.step_exponent(sh))
        al = win.align(m, self.pivot, prod, exps)
        mag, neg = win.total(m, al["a"], al["b"], al["sign"], self.upper)
        p = round_prepare(m, mag, 25, offset=exps["offset"], pad=ROUND_PAD,
                          floor=floor_mask(25, exps["offset"], win.offset_min))
        p["neg"] = neg
        m.d.comb += self.o.eq(round_finish(m, p, 25, pad=ROUND_PAD))
        return m
