"""An adder-subtractor that is one carry chain.

Shared by the quantization engine's group shift and extents (``pivot +- x``). (The
dequantizer's ``2 pivot +- level`` needs the sum's magnitude, which it makes from the sum
and both differences side by side: :meth:`.dequant.level_sum.SumWindow.total`.)
"""

from amaranth.hdl import Cat, Const, Signal

__all__ = ["add_or_subtract"]


def add_or_subtract(m, base, mag, plus, width, name="addsub"):
    """``(base + mag if plus else base - mag) mod 2^width`` as one carry chain.

    ``base + (mag ^ ~plus) + ~plus``, the carry-in made an extra low bit of both operands
    (``1 + ~plus`` carries exactly ``~plus`` into bit 1). Written as a ``Mux`` of a sum and
    a difference it synthesizes to two carry chains and a mux (the group shift: 4,096
    against 3,408 LUT4 at 16 lanes).

    Parameters
    ----------
    m : Module
        The operand and the sum are made comb signals of ``m``.
    base : Value
        Sign- or zero-extended by its own shape to ``width`` bits.
    mag : Value, unsigned
    plus : Value, 1 bit
    width : int

    Returns
    -------
    Value, ``width`` bits (the caller reads it as signed or unsigned).
    """
    operand = Signal(width, name=f"{name}_operand")
    m.d.comb += operand.eq(mag ^ (~plus).replicate(width))
    extended = Signal(width, name=f"{name}_base")
    m.d.comb += extended.eq(base)
    total = Signal(width + 1, name=name)
    m.d.comb += total.eq(Cat(Const(1, 1), extended) + Cat(~plus, operand))
    return total[1:]
