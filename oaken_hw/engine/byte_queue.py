"""A queue of bytes: any number in per beat, any number out per cycle, oldest first."""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..rtl.common.shift import rotate_left, rotate_right

__all__ = ["ByteQueue", "beat_take"]


def beat_take(left, room):
    """The bytes the next beat of a burst takes, ``min(left, room)``, and whether they are
    all of ``left`` (its last beat): the step of the write and read paths' burst cursors."""
    return Mux(left < room, left, room), left <= room


class ByteQueue(wiring.Component):
    """Packs beats that carry ``0 .. in_bytes`` bytes into a contiguous byte queue.

    The reader sees the oldest ``out_bytes`` bytes (``head``, byte ``lane`` the oldest) and
    how many are valid (``fill``), and removes ``take[sel]`` of them in the same cycle
    (``take[sel] <= fill``, the reader's promise). Both ends move every cycle: the sparse
    bytes of the quantizer become memory beats, and memory beats become the dequantizer's
    per-token sparse beats, at one beat per cycle.

    Parameters
    ----------
    in_bytes, out_bytes : int

    Attributes
    ----------
    i : In(stream.Signature({data: ArrayLayout(8, in_bytes), count: range(in_bytes + 1)}))
        Bytes ``0 .. count-1`` of ``data`` are appended; ready while at most ``out_bytes``
        bytes are queued (so a full beat always fits, whatever ``take`` is).
    lane : In(range(out_bytes))
        Where ``head`` puts the oldest byte: a writer's byte lane in a memory beat (0 for a
        reader that wants the bytes from byte 0).
    head : Out(ArrayLayout(8, out_bytes))
        The oldest bytes, from byte ``lane`` on (byte ``lane + i`` is the ``i``-th oldest):
        one rotation of the store. The bytes below ``lane`` and from ``lane + fill`` on are
        other bytes of the store, not 0: readers take ``fill`` (or a count) with them, and
        the engine's writer puts them under byte enables.
    fill : Out(range(in_bytes + out_bytes + 1))
    take : In(ArrayLayout(range(out_bytes + 1), 2))
        The bytes the reader removes, for either outcome of its handshake ``sel``:
        ``take[sel]`` is removed.
    need : In(ArrayLayout(range(2 * out_bytes + 1), 2))
        The bytes the reader will need in the next cycle (its next take if it takes) plus
        the bytes it takes in this one, for either outcome of ``sel``. A reader forms each
        from its registers.
    sel : In(1)
        The reader's handshake, late in the cycle: the queue works out its next state for
        both takes and needs and chooses by ``sel`` last, so that the handshake meets one
        mux in front of each register and no adder or compare.
    enough : Out(1)
        ``fill >= want``, with ``want = need[sel] - take[sel]`` of the cycle before, from a
        register: with ``want`` the next value of the reader's own take register,
        ``enough == (fill >= take)`` in every cycle. A reader that waits for ``enough``
        instead of comparing ``fill`` starts its handshake from a register, not behind a
        compare (see ``elaborate``).
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
            "lane": In(range(out_bytes)),
            "head": Out(data.ArrayLayout(8, out_bytes)),
            "fill": Out(range(self.capacity + 1)),
            "take": In(data.ArrayLayout(range(out_bytes + 1), 2)),
            "need": In(data.ArrayLayout(range(2 * out_bytes + 1), 2)),
            "sel": In(1),
            "enough": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nin, nout = self.in_bytes, self.out_bytes
        # A circular store: the beat is written at the write pointer and the head read at the
        # read pointer, so `take` (late: the reader computes it in the same cycle) only adds
        # to a pointer and the fill. A shifting buffer (append at `fill`, then drop `take`)
        # put `take` in front of a shifter as wide as the queue, in a loop through the
        # buffer register: the write and read paths' limit at 73-75 MHz on ECP5.
        depth = 1 << (self.capacity - 1).bit_length()    # pointers wrap by truncation
        store = Signal(data.ArrayLayout(8, depth))
        wptr = Signal(range(depth))
        rptr = Signal(range(depth))
        fill = Signal(range(self.capacity + 1))
        # `fill <= out_bytes`, registered from the next fill: the reader's late `take`
        # ends at this register instead of running on through the writer's handshake (in
        # the read path: the framing queue's fill -> its `ready` -> the dispatcher's read
        # data handshake -> the dense beat FIFO, the engine's critical path at 77.0 MHz)
        ready = Signal(init=1)
        # `fill >= want`, registered from the next fill for the same reason: a reader's beat
        # handshake that compared `fill` with its take reached every queue of the write path
        # through that compare (`c_take` -> `fire` -> the record FIFO's level, the engine's
        # critical path at 78.2 MHz). Reset: the fill is 0 and so is a reader's take.
        # Both compares have the late `take` on one side only, against the early bytes held
        # before the take (`held`): `held - take >= want` is `held >= need`, and
        # `held - take <= out_bytes` is `held - out_bytes <= take`. (The fill's subtraction
        # in front of them was the engine's critical path at 89.5 MHz: the dequantizer's
        # sparse `ready` -> the read path's take -> the framing queue's `enough`.)
        enough = Signal(init=1)
        accept = self.i.valid & self.i.ready
        count = self.i.payload.count
        m.d.comb += [self.i.ready.eq(ready), self.fill.eq(fill), self.enough.eq(enough)]

        # input byte j goes to store byte wptr + j, every one of them, not only the first
        # `count`: when a beat is accepted `fill <= out_bytes`, so the `in_bytes` bytes
        # from the write pointer on are free, and those past `count` are not counted and are
        # written over by the next beat. The write enables are then the write pointer's
        # alone: from `count` (its thermometer, rotated) they were the write path's latest
        # endpoints (the staged count -> the store's clock enables, 10.5 ns, 81 % of it
        # routing, at 92.3 MHz in session 23)
        placed = Signal(data.ArrayLayout(8, depth))
        write = Signal(depth)
        m.d.comb += write.eq(rotate_left(Const((1 << nin) - 1, depth), wptr, 1))
        if depth % nin == 0:
            # store byte k takes input byte (k - wptr) mod in_bytes: a rotation of the
            # input alone, by the pointer's low bits
            rot = rotate_left(self.i.payload.data.as_value(), wptr[:exact_log2(nin)], 8)
            m.d.comb += placed.eq(Cat(*[rot] * (depth // nin)))
        else:
            m.d.comb += placed.eq(rotate_left(
                Cat(self.i.payload.data, Const(0, 8 * (depth - nin))), wptr, 8))
        for k in range(depth):
            with m.If(accept & write[k]):
                m.d.sync += store[k].eq(placed[k])
        # the oldest byte at `lane`: bytes outside the valid ones are not masked (a mask
        # behind the rotation cost a level of logic on both paths' output)
        start = Signal.like(rptr)
        m.d.comb += [start.eq(rptr - self.lane),
                     self.head.eq(rotate_right(store.as_value(), start, 8)[:8 * nout])]
        added = Mux(accept, count, 0)
        held = Signal.like(fill)
        over = Signal(signed(len(fill) + 1))
        m.d.comb += [held.eq(fill + added), over.eq(held - nout)]
        m.d.sync += wptr.eq(wptr + added)
        # The reader's `sel` chooses last, between the next states worked out for both of
        # its outcomes: with the take and need chosen first, the write path's beat handshake
        # ran on through their muxes into `enough`'s compare (the memory port's `ready` ->
        # `fire` -> `bytes.enough`, 10.3-10.5 ns at 94.7 MHz, session 24).
        nexts = [(rptr + take, held - take, over <= take, held >= need)
                 for take, need in zip(self.take, self.need)]
        for reg, (idle, fired) in zip((rptr, fill, ready, enough), zip(*nexts)):
            m.d.sync += reg.eq(Mux(self.sel, fired, idle))
        return m
