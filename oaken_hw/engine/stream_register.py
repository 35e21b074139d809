"""A register slice on a stream: every signal it drives comes from a flip-flop."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """Forwards a stream through one register stage, at one transfer per cycle.

    ``o.valid``, ``o.payload`` and ``i.ready`` all come from flip-flops (a skid buffer), so
    no path runs through the slice either way: the producer's payload logic ends at it, and
    the consumer's ``ready`` does not reach the producer in the same cycle. An item offered
    while the output stalls waits in the skid register; ``i.ready`` is low while it does.

    Parameters
    ----------
    layout : ShapeLike
        The payload's shape.

    Attributes
    ----------
    i : In(stream.Signature(layout))
    o : Out(stream.Signature(layout))
    """

    def __init__(self, layout):
        self.layout = layout
        super().__init__({"i": In(stream.Signature(layout)),
                          "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.layout)
        skid_v = Signal()
        m.d.comb += self.i.ready.eq(~skid_v)
        with m.If(~self.o.valid | self.o.ready):
            # the output register is free: it takes the skid's item, else the input's
            with m.If(skid_v):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_v.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload),
                             self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_v):
            m.d.sync += [skid.eq(self.i.payload), skid_v.eq(1)]
        return m
