"""Shifts by a variable amount written so that Yosys builds small logic for them.

:func:`shift_right`: a right barrel shifter that builds only the bits its result keeps.

``(value >> amount)[:width]`` written as one operator is lowered by Yosys to a log shifter
whose every level is as wide as the input, and the slice is applied only at the end.
Written level by level, widest step first, level ``b`` (a shift by ``2^b``) keeps only the
``width + 2^b - 1`` bits that can still reach the result. In the quantization engine's
``Encoder`` (``mag >> s``, 41 -> 16 bits, 16 lanes) that took 6,106 LUT4 down to 4,978.
(Left shifts that widen a short value, FP16 -> units, gain nothing this way: 2,304
against 2,272 LUT4 for 16 converters; they stay ``<<``.)

:func:`below`: a thermometer mask, ``i < amount`` for every bit ``i``, as the shift of a
constant. Written as one comparison per bit, Yosys makes each a carry chain: in the
dequantizer's windowed sum (the jam and sticky bits) the shift form took 746 LUT4 per lane
to 669.
"""

from amaranth.hdl import Const, Mux

__all__ = ["shift_right", "below"]


def shift_right(value, amount, width):
    """``(value >> amount)[:width]`` for an unsigned ``value``."""
    v = value
    for b in reversed(range(len(amount))):
        v = Mux(amount[b], v >> (1 << b), v)[:width + (1 << b) - 1]
    return v[:width]


def below(amount, width):
    """A thermometer mask: bit ``i`` (of ``width``) set iff ``i < amount``.

    Written as a shift of a constant, so that each bit is a small function of ``amount``;
    ``amount > i`` written per bit is lowered by Yosys to a carry chain per bit.
    """
    return ~(Const((1 << width) - 1, width) << amount)[:width]
