"""An occupancy count with its ``count < limit`` compare as a register.

Credit counters and FIFO levels decide handshakes. Compared in the cycle they are used, the
count's compare sits in front of the handshake; here the compare of the *next* count is
registered, its three candidates compared from the count register beside the handshake, and
the late ``up`` / ``down`` only choose among them at the end.
"""

from amaranth.hdl import Const, Mux, Signal

__all__ = ["occupancy"]


def occupancy(m, *, depth, limit, up, down, name):
    """A count stepped by ``up`` and ``down`` (one each per cycle) and ``count < limit``.

    Parameters
    ----------
    m : Module
        The count and the flag are ``sync`` registers of ``m``, reset to 0 and 1.
    depth : int
        The count's largest value (the caller keeps it in ``0 .. depth``).
    limit : int
        ``1 .. depth``.
    up, down : Value, 1 bit
    name : str

    Returns
    -------
    count : Signal(range(depth + 1))
    below : Signal(1)
        ``count < limit`` in every cycle, from a flip-flop.
    """
    if not 1 <= limit <= depth:
        raise ValueError(f"limit must be in 1 .. depth ({depth}), not {limit!r}")
    count = Signal(range(depth + 1), name=name)
    below = Signal(init=1, name=f"{name}_below")
    grow = Signal(name=f"{name}_grow")
    shrink = Signal(name=f"{name}_shrink")
    m.d.comb += [grow.eq(up & ~down), shrink.eq(down & ~up)]
    # (the compares that are constant for this count's width are written as constants:
    # Verilator warns of a compare that unsigned arithmetic decides)
    after_grow = count < limit - 1 if limit > 1 else Const(0, 1)
    after_shrink = count <= limit if limit < (1 << len(count)) - 1 else Const(1, 1)
    m.d.sync += [
        count.eq(Mux(grow, count + 1, Mux(shrink, count - 1, count))),
        below.eq(Mux(grow, after_grow, Mux(shrink, after_shrink, count < limit))),
    ]
    return count, below
