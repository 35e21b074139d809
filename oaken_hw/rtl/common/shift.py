"""Barrel shifters by a variable amount that build only the bits their result keeps.

``(value >> amount)[:width]`` written as one operator is lowered by Yosys to a log shifter
whose every level is as wide as the input (or, for ``<<``, as the widest output), and the
slice is applied only at the end. Written level by level, each level keeps the bits that
can still reach the result: for a right shift, level ``b`` (shift by ``2^b``, widest first)
needs ``width + 2^b - 1`` bits; for a left shift (narrowest first) a level needs at most
``width``. In the quantization engine's ``Encoder`` (``mag >> s``, 41 -> 16 bits, 16 lanes)
that took 6,106 LUT4 down to 4,978.
"""

from amaranth.hdl import Mux

__all__ = ["shift_right", "shift_left"]


def shift_right(value, amount, width):
    """``(value >> amount)[:width]`` for an unsigned ``value``."""
    v = value
    for b in reversed(range(len(amount))):
        v = Mux(amount[b], v >> (1 << b), v)[:width + (1 << b) - 1]
    return v[:width]


def shift_left(value, amount, width):
    """``(value << amount)[:width]`` for an unsigned ``value``."""
    v = value
    for b in range(len(amount)):
        v = Mux(amount[b], v << (1 << b), v)[:width]
    return v
