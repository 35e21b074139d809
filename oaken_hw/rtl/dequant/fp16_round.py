"""Integer to FP16 output rounding: round to nearest, ties to even, saturating at +-65504.

The hardware form of :func:`oaken_hw.model.numerics.half_units_to_fp16` (``frac_bits = 25``)
and :func:`~oaken_hw.model.numerics.units_to_fp16` (``frac_bits = 24``). The value is a
signed integer ``n * 2^offset`` counting ``2^-frac_bits``: ``offset`` (0 unless given) is
the position of ``n``'s bit 0, so that a caller can hand over a narrow window of a wide
value (the dequantizer's aligned sum, :mod:`.level_sum`).

How it works (for half units, ``frac_bits = 25``; other fractions shift the exponent):
an FP16 value is ``q * 2^e`` half units with an 11-bit ``q`` and ``e >= 1`` (``e = 1``
covers the subnormals and the first binade, whose quantum is 2 half units = 2^-24). So
``e = max(bitlen(|n|) + offset - 11, 1)``, ``q = RNE(|n| / 2^(e - offset))``; a carry out
of the rounding (``q = 2048``) bumps ``e``. A value at or above 65504 saturates to 65504:
the model clips before it rounds, which gives the same bits as rounding first and
saturating every result whose exponent field overflows (65504 is an FP16 value, and
rounding is monotone), so saturation is read off the rounded exponent. A negative value
that rounds to zero gives +0 (the model adds +0 after the cast).

The logic is offered as expression builders, so that a pipeline can register between
them: :func:`round_prepare` (absolute value, bit length, shift), :func:`round_select`
(kept bits, guard, sticky, exponent), :func:`round_increment` (round; the exponent field and
its saturation test for both outcomes of the rounding's carry) and :func:`pack_rounded`
(saturate, pack); :func:`round_pack` is the last two, :func:`round_finish` the last
three. :class:`FP16Round` chains them combinationally (for tests and for callers without
timing needs).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..common.fp16 import bit_length
from ..common.shift import below, shift_right

__all__ = ["prepared_layout", "selected_layout", "rounded_layout", "floor_mask",
           "round_prepare", "round_select", "round_increment", "pack_rounded", "round_pack",
           "round_finish", "FP16Round"]

#: largest finite FP16 exponent field
_MAX_EXP = 30


#: width of the exponent ``e`` handed between the stages
_EXP_BITS = 7


def prepared_layout(width, pad=0, offset_shape=signed(1)):
    """What :func:`round_prepare` hands to :func:`round_select` for ``signed(width)``
    input (``pad`` as given to it, ``offset_shape`` that of its ``offset``)."""
    return data.StructLayout({
        "mag": unsigned(width),
        "shift": unsigned((width + pad).bit_length()),
        "offset": offset_shape,
        "neg": 1,
    })


def floor_mask(frac_bits, offset, lowest=None):
    """The exponent clamp as a one-hot mask for :func:`round_prepare`.

    The exponent is ``e = max(bitlen + offset - 11, s)`` (``s = frac_bits - 24``), so the
    shift depends on ``max(bitlen, t)``, ``t = s + 11 - offset``, which is the bit length
    of ``|n|`` with bit ``t - 1`` set (for ``t >= 1``; for ``t <= 0`` it is ``bitlen``).
    OR-ed into ``|n|`` in the bit length's first level, the clamp costs no comparison.

    Parameters
    ----------
    frac_bits : int
    offset : Value or int
        As given to :func:`round_prepare`. A pipeline that knows ``offset`` a stage early
        makes the mask there and registers it.
    lowest : int or None
        The smallest ``offset`` the caller can give (default: the least of its shape); the
        mask is ``frac_bits - 13 - lowest`` bits wide.

    Returns
    -------
    Value
        Bit ``t - 1`` set, or none.
    """
    top = frac_bits - 13
    if isinstance(offset, int):
        return Const(1 << (top - offset - 1), top - offset) if top - offset >= 1 \
            else Const(0, 1)
    if lowest is None:
        lowest = -(1 << (len(offset) - 1)) if offset.shape().signed else 0
    # bit i is set when t - 1 = i: one small comparison per bit, no shifter
    return Cat(offset == top - 1 - i for i in range(max(top - lowest, 1)))


def round_prepare(m, n, frac_bits=25, name="rnd", offset=0, pad=0, floor=None):
    """First part of the rounder: ``|n|`` and the right shift.

    Parameters
    ----------
    m : Module
        Intermediate values are made comb signals of ``m`` (shared sub-expressions).
    n : Value
        Signed, or unsigned for a magnitude (``neg`` is then 0).
    frac_bits : int
        ``n`` counts ``2^-frac_bits`` (25: half units; 24: units). At least 24.
    offset : Value or int
        ``n``'s bit 0 counts ``2^(offset - frac_bits)``.
    pad : int
        Zero bits appended below ``|n|`` before the shift, so that the shift
        ``e - offset + pad`` is never negative: at least the largest ``offset - e``.
    floor : Value or None
        :func:`floor_mask` of ``offset``, if the caller has it registered.

    Returns
    -------
    dict with ``mag``, ``shift``, ``offset``, ``neg`` (the fields of
    :func:`prepared_layout`).
    """
    if frac_bits < 24:
        raise ValueError(f"frac_bits must be >= 24 (the FP16 subnormal quantum), "
                         f"not {frac_bits!r}")
    width = len(n)
    mag = Signal(width, name=f"{name}_mag")
    if n.shape().signed:
        neg = n < 0
        m.d.comb += mag.eq(Mux(neg, -n, n).as_unsigned()[:width])
    else:                         # a magnitude already (the dequantizer's sum)
        neg = Const(0, 1)
        m.d.comb += mag.eq(n)
    # e = max(bl + offset - 11, s): a normal keeps 11 significant bits, and below
    # 2^(11+s) counts the quantum is 2^s. The shift e - offset + pad is
    # max(bl, s + 11 - offset) + pad - 11, the clamp a bit OR-ed into |n| (floor_mask).
    if floor is None:
        floor = floor_mask(frac_bits, offset)
    clamped = Signal(max(width, len(floor)), name=f"{name}_clamped")
    bl = Signal(range(len(clamped) + 1), name=f"{name}_bitlen")
    m.d.comb += [clamped.eq(mag | floor), bl.eq(bit_length(clamped))]
    shift = (bl if pad == 11 else bl + (pad - 11))[:(width + pad).bit_length()]
    return {"mag": mag, "shift": shift, "offset": offset, "neg": neg}


def selected_layout():
    """What :func:`round_select` hands to :func:`round_increment` (or
    :func:`round_pack`)."""
    return data.StructLayout({
        "kept": 12, "guard": 1, "sticky": 1, "exp": unsigned(_EXP_BITS), "neg": 1,
    })


def round_select(m, p, frac_bits=25, name="rnd", pad=0):
    """Second part: the 12 kept bits ``(|n| << pad) >> shift``, the guard, the sticky bit
    and the exponent ``e = shift + offset - pad`` (``pad`` as given to
    :func:`round_prepare`)."""
    mag, shift = p["mag"], p["shift"]
    width = len(mag)
    kept = Signal(12, name=f"{name}_kept")
    guard = Signal(name=f"{name}_guard")
    sticky = Signal(name=f"{name}_sticky")
    exp = Signal(_EXP_BITS, name=f"{name}_exp")
    # the guard bit (0 when the shift is 0) comes out of the same shifter, one bit below
    # the kept bits; the sticky bit is the OR of the bits below the guard, a thermometer
    # mask (cheaper than shifting the discarded bits out)
    m.d.comb += Cat(guard, kept).eq(shift_right(Cat(Const(0, 1 + pad), mag), shift, 13))
    mask = below(shift, pad + 1 + width)
    m.d.comb += sticky.eq((mag & mask[pad + 1:]).any())
    m.d.comb += exp.eq(shift + p["offset"] - pad)
    return {"kept": kept, "guard": guard, "sticky": sticky, "exp": exp, "neg": p["neg"]}


def rounded_layout():
    """What :func:`round_increment` hands to :func:`pack_rounded`: the rounded 12 bits
    ``q`` (bit 11 a carry into the next binade), for either outcome of that carry (index
    0: none, 1: carry) the exponent field's low 5 bits and whether it saturates, and the
    sign."""
    return data.StructLayout({
        "q": 12, "field": data.ArrayLayout(5, 2), "sat": 2, "neg": 1,
    })


def round_increment(m, r, frac_bits=25, name="rnd"):
    """Third part: round to nearest even, and beside the increment's carry chain, from the
    exponent alone, the exponent field and its saturation test for both outcomes of the
    carry (behind the carry they would be an adder and a compare in series with its
    chain).

    Parameters
    ----------
    m : Module
    r : dict or View of :func:`selected_layout`
    frac_bits : int
        As given to :func:`round_prepare`.

    Returns
    -------
    dict with the fields of :func:`rounded_layout`.
    """
    kept, guard, sticky, exp = r["kept"], r["guard"], r["sticky"], r["exp"]
    s = frac_bits - 24
    q = Signal(12, name=f"{name}_q")
    m.d.comb += q.eq((kept + (guard & (sticky | kept[0])))[:12])
    field = Signal(data.ArrayLayout(5, 2), name=f"{name}_fields")
    sat = Signal(2, name=f"{name}_sats")
    for carry in (0, 1):
        # the field is exp + c in _EXP_BITS + 1 bits; it saturates above _MAX_EXP, a
        # compare of exp with a constant (no adder); exp + c < 0 would wrap to a large
        # field (unreachable, as exp >= s, but the bits stay those of the sum)
        c = carry + 1 - s
        over = exp > _MAX_EXP - c
        if c < 0:
            over |= exp < -c
        m.d.comb += [field[carry].eq((exp + c)[:5]), sat[carry].eq(over)]
    return {"q": q, "field": field, "sat": sat, "neg": r["neg"]}


def pack_rounded(m, u, name="rnd"):
    """Last part: saturate and pack the FP16 bit pattern of :func:`round_increment`'s
    result (muxes only: the carry picks the precomputed field and saturation test)."""
    q, neg = u["q"], u["neg"]
    carry = q[11]                                  # rounding carried into a new binade
    sig = Signal(11, name=f"{name}_sig")
    m.d.comb += sig.eq(Mux(carry, 1024, q[:11])[:11])
    # sig < 1024 only at the smallest exponent: a subnormal, exponent field 0
    field = Signal(5, name=f"{name}_field")
    m.d.comb += field.eq(Mux(sig[10], Mux(carry, u["field"][1], u["field"][0]), 0))
    sat = sig[10] & Mux(carry, u["sat"][1], u["sat"][0])
    bits = Cat(sig[:10], field)
    nonzero = bits != 0
    bits = Mux(sat, Const((_MAX_EXP << 10) | 0x3FF, 15), bits)
    return Cat(bits, neg & (nonzero | sat))


def round_pack(m, r, frac_bits=25, name="rnd"):
    """Round to nearest even, saturate and pack the FP16 bit pattern:
    :func:`round_increment` then :func:`pack_rounded`, for callers that do not register
    between them."""
    return pack_rounded(m, round_increment(m, r, frac_bits, name), name)


def round_finish(m, p, frac_bits=25, name="rnd", pad=0):
    """Second half: round ``mag >> shift`` to nearest even and pack the FP16 bit pattern
    (:func:`round_select` then :func:`round_pack`, for callers that do not register
    between them).

    Parameters
    ----------
    m : Module
    p : dict or View of :func:`prepared_layout`
    frac_bits, pad : int
        As given to :func:`round_prepare`.
    """
    return round_pack(m, round_select(m, p, frac_bits, name, pad), frac_bits, name)


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
