"""FP16 input conversion: sanitize and convert exactly to signed integer "units" of 2^-24.

This is the hardware form of :func:`oaken_hw.model.numerics.sanitize` and
:func:`~oaken_hw.model.numerics.fp16_to_units`. Every finite FP16 value (subnormals included)
is an integer number of units, at most ``65504 * 2^24 = 2047 << 29 < 2^40`` in magnitude, so
a 40-bit magnitude and a 41-bit signed value hold it exactly. No arithmetic is needed: the
value is the significand ``(1024 | mantissa)`` (``mantissa`` alone for subnormals) shifted
left by ``exponent - 1`` (0 for subnormals).

Besides the :class:`FP16ToUnits` component, the module offers the same logic as plain
expression builders (:func:`fp16_sanitize`, :func:`fp16_to_units`) so that a caller can put
it inside its own pipeline stage, and the bit-level helpers the engines share
(:func:`smear_down`, :func:`bit_length`, :func:`one_hot_length`).
"""

from amaranth.hdl import C, Cat, Const, Module, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FRAC_BITS", "MAG_WIDTH", "UNITS_WIDTH", "FP16_MAX_BITS", "UNITS_SHAPE",
           "fp16_sanitize", "fp16_to_units", "signed_units", "fp16_magnitude_units",
           "fp16_key", "fp16_key_to_bits", "smear_down", "top_index",
           "bit_length", "one_hot_length", "FP16ToUnits"]

#: fractional bits of a unit (LSB = 2^-24, the smallest FP16 subnormal)
FRAC_BITS = 24
#: width of the magnitude of a finite FP16 value in units (2047 << 29 < 2^40)
MAG_WIDTH = 40
#: width of a signed value in units
UNITS_WIDTH = MAG_WIDTH + 1
#: shape of a signed value in units
UNITS_SHAPE = signed(UNITS_WIDTH)
#: bit pattern of +65504 (the largest finite FP16) without its sign bit
FP16_MAX_BITS = 0x7BFF


def fp16_sanitize(bits):
    """Sanitize an FP16 bit pattern as the golden model does.

    NaN becomes +0, +-Inf become +-65504, -0 becomes +0; finite values are kept.

    Parameters
    ----------
    bits : Value, 16 bits

    Returns
    -------
    clean : Value, 16 bits
    bad : Value, 1 bit
        The input was NaN or infinite.
    """
    exp, man, sign = bits[10:15], bits[0:10], bits[15]
    special = exp == 0x1F
    nan = special & (man != 0)
    inf = special & (man == 0)
    neg_zero = bits == 0x8000
    clean = Mux(nan | neg_zero, C(0, 16),
                Mux(inf, Cat(C(FP16_MAX_BITS, 15), sign), bits))
    return clean, special


def fp16_key(bits):
    """Order key of a finite FP16 bit pattern: an unsigned 16-bit value that compares as
    the FP16 values do (sign-magnitude is monotone: flip the magnitude of negatives, set
    the top bit of non-negatives). ``-0`` is mapped to the key of ``+0``, so equal values
    have equal keys and comparisons are exact."""
    sign, mag = bits[15] & (bits[:15] != 0), bits[:15]
    return Cat(Mux(sign, ~mag, mag), ~sign)


def fp16_key_to_bits(key):
    """Inverse of :func:`fp16_key` (gives ``+0`` for zero)."""
    neg = ~key[15]
    return Cat(Mux(neg, ~key[:15], key[:15]), neg)


def fp16_magnitude_units(bits):
    """Magnitude of a finite FP16 bit pattern in units (unsigned, :data:`MAG_WIDTH` bits).

    The result is meaningless for NaN/Inf patterns: sanitize first.
    """
    exp, man = bits[10:15], bits[0:10]
    normal = exp != 0
    significand = Cat(man, normal)                      # 11 bits: hidden bit for normals
    # `significand << (exp - 1)` for a normal, `significand` for a subnormal: shifted one
    # place further (by `exp`, or by 1 when `exp` is 0) and the low bit dropped, which
    # needs no subtractor before the shifter (a carry chain on the quantization engine's
    # path from the ring's data to the lanes' magnitudes)
    shift = Cat(exp[0] | ~normal, exp[1:])             # 1..30
    return (significand << shift)[1:MAG_WIDTH + 1]


def fp16_to_units(bits):
    """Exact signed value of a finite FP16 bit pattern in units (:data:`UNITS_SHAPE`)."""
    return signed_units(fp16_magnitude_units(bits), bits[15])


def signed_units(mag, neg):
    """A magnitude in units (:data:`MAG_WIDTH` bits) and a sign as a signed value in units
    (:data:`UNITS_SHAPE`); the second half of :func:`fp16_to_units`, for pipelines that
    register the magnitude between the two."""
    return Mux(neg, -mag, mag).as_signed()[:UNITS_WIDTH].as_signed()


def smear_down(value):
    """Bit ``i`` is set iff ``value`` has a set bit at position ``i`` or above.

    Each bit is the OR-reduction of a slice, which synthesis builds as a shallow tree
    (3 levels of LUT4 for 48 bits). Written this way rather than as a chain of
    ``Mux(value[i], ...)``, which Yosys maps to a chain of wide multiplexers as deep as the
    value is wide (the old critical path of the Scale block). (A log-step prefix OR,
    ``s | s >> k``, would be as shallow but doubles the expression tree per step.)
    """
    return Cat(*[value[i:].any() for i in range(len(value))])


def top_index(value):
    """Index of the highest set bit of an unsigned value (0 when only bit 0 or no bit is
    set), ``(len(value) - 1).bit_length()`` bits: a log-depth tree of priority encoders.
    A level's index is the lower half's, or the upper half's with one bit set above it: a
    concatenation, where ``bit length + half`` would be an adder."""
    width = len(value)
    if width == 1:
        return Const(0, 0)
    half = 1 << ((width - 1).bit_length() - 1)          # largest power of two < width
    bits = (half - 1).bit_length()
    hi, lo = value[half:], value[:half]
    upper = top_index(hi)
    return Mux(hi.any(), Cat(upper, Const(0, bits - len(upper)), 1), top_index(lo))


def bit_length(value):
    """The bit length of an unsigned ``value`` (0 for 0): the highest set bit's index of
    ``value`` with a one below it, so that 0 needs no special case.

    (A one-hot word of the leading one, then each result bit an OR of it, measured 171
    LUT4 more in the dequantization engine's rounder: 14,814 against 14,643, ECP5.)
    """
    return top_index(Cat(Const(1, 1), value))


def one_hot_length(one_hot):
    """``i + 1`` for a one-hot list of bits with bit ``i`` set (0 when none is): each result
    bit an OR of the one-hot bits whose position + 1 has it set."""
    width = len(one_hot)
    return Cat(*[Cat(*[one_hot[i] for i in range(width) if (i + 1) >> b & 1]).any()
                 for b in range(width.bit_length())])


class FP16ToUnits(wiring.Component):
    """Combinational FP16 sanitizer and converter (latency 0).

    Ports
    -----
    i : In(16)
        FP16 bit pattern.
    clean : Out(16)
        Sanitized bit pattern (NaN -> +0, +-Inf -> +-65504, -0 -> +0).
    units : Out(signed(41))
        Exact value of ``clean`` in units of 2^-24.
    bad : Out(1)
        ``i`` was NaN or infinite.

    Attributes
    ----------
    latency : int
        0: the outputs follow the input in the same cycle; register them in the caller.
    """

    i: In(16)
    clean: Out(16)
    units: Out(UNITS_SHAPE)
    bad: Out(1)

    latency = 0

    def elaborate(self, platform):
        m = Module()
        clean, bad = fp16_sanitize(self.i)
        m.d.comb += [self.clean.eq(clean), self.bad.eq(bad),
                     self.units.eq(fp16_to_units(clean))]
        return m
