"""Integer to FP16 output rounding: round to nearest, ties to even, saturating at +-65504.

The hardware form of :func:`oaken_hw.model.numerics.half_units_to_fp16` (``frac_bits = 25``)
and :func:`~oaken_hw.model.numerics.units_to_fp16` (``frac_bits = 24``). The value is a
signed integer ``n`` counting ``2^-frac_bits``.

How it works (for half units, ``frac_bits = 25``; other fractions shift the exponent):
an FP16 value is ``q * 2^e`` half units with an 11-bit ``q`` and ``e >= 1`` (``e = 1``
covers the subnormals and the first binade, whose quantum is 2 half units = 2^-24). So
``e = max(bitlen(|n|) - 11, 1)``, ``q = RNE(|n| / 2^e)``; a carry out of the rounding
(``q = 2048``) bumps ``e``. ``|n| >= 65504 * 2^frac_bits`` saturates to 65504 (the model
clips before it rounds, so nothing becomes infinite). A negative value that rounds to zero
gives +0 (the model adds +0 after the cast).

The logic is offered as two expression builders, so that a pipeline can register between
them: :func:`round_prepare` (absolute value, saturation test, bit length) and
:func:`round_finish` (shift, round, pack). :class:`FP16Round` chains them combinationally
(for tests and for callers without timing needs).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.shift import shift_right

__all__ = ["prepared_layout", "selected_layout", "round_prepare", "round_select",
           "round_pack", "round_finish", "FP16Round"]

#: largest finite FP16 significand and exponent field
_MAX_SIG, _MAX_EXP = 2047, 30


def _bitlen(value):
    """Bit length of an unsigned value: a log-depth tree of priority encoders.

    (A chain of ``width`` muxes would also do, but nests too deep for the Python simulator.)
    """
    width = len(value)
    if width == 1:
        return value[0]
    half = 1 << ((width - 1).bit_length() - 1)          # largest power of two < width
    hi, lo = value[half:], value[:half]
    return Mux(hi.any(), _bitlen(hi) + half, _bitlen(lo))


def prepared_layout(width):
    """What :func:`round_prepare` hands to :func:`round_finish` for ``signed(width)`` input."""
    return data.StructLayout({
        "mag": unsigned(width),
        "shift": unsigned(max(width, 1).bit_length()),
        "neg": 1,
        "sat": 1,
    })


def round_prepare(m, n, frac_bits=25, name="rnd"):
    """First half of the rounder: ``|n|``, saturation and the right shift.

    Parameters
    ----------
    m : Module
        Intermediate values are made comb signals of ``m`` (shared sub-expressions).
    n : Value, signed
    frac_bits : int
        ``n`` counts ``2^-frac_bits`` (25: half units; 24: units). At least 24.

    Returns
    -------
    dict with ``mag``, ``shift``, ``neg``, ``sat`` (the fields of :func:`prepared_layout`).
    """
    if frac_bits < 24:
        raise ValueError(f"frac_bits must be >= 24 (the FP16 subnormal quantum), "
                         f"not {frac_bits!r}")
    width = len(n)
    s = frac_bits - 24            # the subnormal quantum is 2^s counts
    neg = n < 0
    mag = Signal(width, name=f"{name}_mag")
    bl = Signal(range(width + 1), name=f"{name}_bitlen")
    m.d.comb += mag.eq(Mux(neg, -n, n).as_unsigned()[:width])
    m.d.comb += bl.eq(_bitlen(mag))
    shift_bits = max(width, 1).bit_length()
    # a normal keeps 11 significant bits; below 2^(11+s) counts the quantum is 2^s
    shift = Mux(bl > 11 + s, bl - 11, s)[:shift_bits]
    sat_limit = _MAX_SIG << (_MAX_EXP - 1 + s)
    sat = Const(0, 1) if sat_limit >= 1 << width else mag >= sat_limit
    return {"mag": mag, "shift": shift, "neg": neg, "sat": sat}


def selected_layout(width):
    """What :func:`round_select` hands to :func:`round_pack` for ``signed(width)`` input."""
    return data.StructLayout({
        "kept": 12, "guard": 1, "sticky": 1,
        "shift": unsigned(max(width, 1).bit_length()), "neg": 1, "sat": 1,
    })


def round_select(m, p, frac_bits=25, name="rnd"):
    """Second part: the 12 kept bits ``mag >> shift``, the guard and the sticky bit."""
    mag, shift = p["mag"], p["shift"]
    width = len(mag)
    kept = Signal(12, name=f"{name}_kept")
    guard = Signal(name=f"{name}_guard")
    sticky = Signal(name=f"{name}_sticky")
    m.d.comb += kept.eq(shift_right(mag, shift, 12))
    # guard bit mag[shift - 1] and sticky OR of mag[0:shift - 1]: a mux and a thermometer
    # mask (cheaper than shifting the discarded bits out)
    m.d.comb += guard.eq(Mux(shift == 0, 0, shift_right(Cat(Const(0, 1), mag), shift, 1)))
    m.d.comb += sticky.eq(Cat(*[mag[i] & (shift > i + 1) for i in range(width)]).any())
    return {"kept": kept, "guard": guard, "sticky": sticky, "shift": shift,
            "neg": p["neg"], "sat": p["sat"]}


def round_pack(m, r, frac_bits=25, name="rnd"):
    """Last part: round to nearest even and pack the FP16 bit pattern."""
    kept, guard, sticky = r["kept"], r["guard"], r["sticky"]
    shift, neg, sat = r["shift"], r["neg"], r["sat"]
    s = frac_bits - 24
    q = Signal(12, name=f"{name}_q")
    sig = Signal(11, name=f"{name}_sig")
    m.d.comb += q.eq((kept + (guard & (sticky | kept[0])))[:12])
    carry = q[11]                                  # rounding carried into a new binade
    m.d.comb += sig.eq(Mux(carry, 1024, q[:11])[:11])
    # sig < 1024 only at the smallest shift: a subnormal, exponent field 0
    exp_field = Mux(sig[10], (shift + carry + 1 - s)[:5], 0)
    bits = Cat(sig[:10], exp_field)
    nonzero = bits != 0
    bits = Mux(sat, Const((_MAX_EXP << 10) | 0x3FF, 15), bits)
    return Cat(bits, neg & (nonzero | sat))


def round_finish(m, p, frac_bits=25, name="rnd"):
    """Second half: round ``mag >> shift`` to nearest even and pack the FP16 bit pattern
    (:func:`round_select` then :func:`round_pack`, for callers that do not register
    between them).

    Parameters
    ----------
    m : Module
    p : dict or View of :func:`prepared_layout`
    frac_bits : int
        As given to :func:`round_prepare`.
    """
    return round_pack(m, round_select(m, p, frac_bits, name), frac_bits, name)


class FP16Round(wiring.Component):
    """Combinational rounder of a signed integer to FP16 (latency 0).

    Parameters
    ----------
    width : int
        Width of the signed input.
    frac_bits : int
        The input counts ``2^-frac_bits``.

    Attributes
    ----------
    i : In(signed(width))
    o : Out(16)
        FP16 bit pattern, nearest even, saturating at +-65504, never -0.
    latency : int
        0.
    """

    latency = 0

    def __init__(self, *, width, frac_bits=25):
        if isinstance(width, bool) or not isinstance(width, int) or width < 2:
            raise ValueError(f"width must be an integer >= 2, not {width!r}")
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or frac_bits < 24:
            raise ValueError(f"frac_bits must be an integer >= 24, not {frac_bits!r}")
        self.width, self.frac_bits = width, frac_bits
        super().__init__({"i": In(signed(width)), "o": Out(16)})

    def elaborate(self, platform):
        m = Module()
        p = round_prepare(m, self.i, self.frac_bits)
        m.d.comb += self.o.eq(round_finish(m, p, self.frac_bits))
        return m
