"""A queue of bytes: any number in per beat, any number out per cycle, oldest first."""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..rtl.common.shift import below

__all__ = ["ByteQueue", "beat_take"]


def beat_take(left, room):
    """The bytes the next beat of a burst takes, ``min(left, room)``, and whether they are
    all of ``left`` (its last beat): the step of the write and read paths' burst cursors."""
    return Mux(left < room, left, room), left <= room


class ByteQueue(wiring.Component):
    """Packs beats that carry ``0 .. in_bytes`` bytes into a contiguous byte queue.

    The reader sees the oldest ``out_bytes`` bytes (``head``, byte 0 the oldest) and how many
    are valid (``fill``), and removes ``take`` of them in the same cycle (``take <= fill``, the
    reader's promise). Both ends move every cycle: the sparse bytes of the quantizer become
    memory beats, and memory beats become the dequantizer's per-token sparse beats, at one
    beat per cycle.

    Parameters
    ----------
    in_bytes, out_bytes : int

    Attributes
    ----------
    i : In(stream.Signature({data: ArrayLayout(8, in_bytes), count: range(in_bytes + 1)}))
        Bytes ``0 .. count-1`` of ``data`` are appended; ready while at most ``out_bytes``
        bytes are queued (so a full beat always fits, whatever ``take`` is).
    head : Out(ArrayLayout(8, out_bytes))
        The oldest bytes; bytes at and above ``fill`` read 0.
    fill : Out(range(in_bytes + out_bytes + 1))
    take : In(range(out_bytes + 1))
    """

    def __init__(self, *, in_bytes, out_bytes):
        for name, v in (("in_bytes", in_bytes), ("out_bytes", out_bytes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.in_bytes, self.out_bytes = in_bytes, out_bytes
        self.capacity = in_bytes + out_bytes
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(8, in_bytes), "count": range(in_bytes + 1)}))),
            "head": Out(data.ArrayLayout(8, out_bytes)),
            "fill": Out(range(self.capacity + 1)),
            "take": In(range(out_bytes + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cap, nin = self.capacity, self.in_bytes
        buf = Signal(8 * cap)          # invariant: bytes at and above `fill` are zero
        fill = Signal(range(cap + 1))
        accept = self.i.valid & self.i.ready
        count = self.i.payload.count
        # bytes above `count` are not trusted to be zero
        masked = Signal(8 * nin)
        keep = below(count, nin)
        for b in range(nin):
            m.d.comb += masked[8 * b:8 * b + 8].eq(self.i.payload.data[b] & keep[b].replicate(8))
        m.d.comb += [
            self.i.ready.eq(fill <= self.out_bytes),
            self.head.eq(buf[:8 * self.out_bytes]),
            self.fill.eq(fill),
        ]
        # Append at `fill` first, then drop `take` bytes: the same bytes as dropping first
        # and appending at `fill - take`, but the append depends on registers and the input
        # only, and `take` (late: the reader computes it in the same cycle) drives one
        # shifter and no subtractor. It fits: `fill <= out_bytes` when a beat is accepted.
        appended = Signal(8 * cap)
        m.d.comb += appended.eq(buf | Mux(accept, masked << (fill * 8), 0)[:8 * cap])
        m.d.sync += [buf.eq((appended >> (self.take * 8))[:8 * cap]),
                     fill.eq(fill + Mux(accept, count, 0) - self.take)]
        return m
