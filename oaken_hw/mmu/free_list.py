"""The free list: a ring of free page numbers, one allocation and one release per cycle."""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["FreeList"]


class FreeList(wiring.Component):
    """FIFO of free pages, full at reset (``0, 1, ..., pages - 1`` in that order).

    Allocation takes the oldest free page; release appends at the tail. A FIFO rather than a
    stack: it spreads reuse over the pool, and its read and write ends never share an address
    when both move in one cycle, so one memory with one read and one write port serves an
    allocation and a release every cycle.

    Reset: a ``sync`` reset resets the pointers, but a memory keeps its contents, so after a
    reset in the middle of traffic the ring could hold stale and duplicate pages. The free
    list therefore walks the ring after every reset (and at power-up, where it rewrites the
    ``init`` contents with the same values): one write per cycle, ``ring[i] = i``, through
    the release write port. During the walk (:attr:`init_cycles` = ``pages`` cycles)
    ``ready`` and ``alloc.valid`` are low and ``release.ready`` is low; ``count`` already
    reads ``pages`` (the pool is whole, it is only not served yet).

    Parameters
    ----------
    pages : int
        Pages in the pool, a power of two >= 2 (the ring pointers wrap by overflow).

    Attributes
    ----------
    alloc : Out(stream.Signature(unsigned(page_bits)))
        The next free page; valid whenever a page is free. A transfer allocates it.
    release : In(stream.Signature(unsigned(page_bits)))
        A page to return; ready unless the ring is full (which a correct MMU never sees).
    count : Out(range(pages + 1))
        Free pages (``pages`` from reset on, also during the initialisation walk).
    ready : Out(1)
        High once the initialisation walk is done, :attr:`init_cycles` cycles after reset.
    storage_bits : int
        Bits of the ring memory.
    init_cycles : int
        Cycles of the walk after reset (``pages``): ``ready`` is high from the
        ``init_cycles``-th cycle on (counting the first cycle out of reset as 0).
    """

    def __init__(self, *, pages):
        if not isinstance(pages, int) or pages < 2 or pages & (pages - 1):
            raise ValueError(f"pages must be a power of two >= 2, not {pages!r}")
        self.pages = pages
        self.page_bits = (pages - 1).bit_length()
        self.storage_bits = pages * self.page_bits
        self.init_cycles = pages
        super().__init__({
            "alloc": Out(stream.Signature(unsigned(self.page_bits))),
            "release": In(stream.Signature(unsigned(self.page_bits))),
            "count": Out(range(pages + 1), init=pages),
            "ready": Out(1),
        })

    def _advance(self, head):
        """The head pointer after an allocation (a hook for the fault-injection tests)."""
        return head + 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.ring = ring = Memory(shape=unsigned(self.page_bits), depth=self.pages,
                                          init=range(self.pages))
        wr = ring.write_port()
        # transparent: a page released into the ring is readable the next cycle
        rd = ring.read_port(transparent_for=(wr,))
        # The next free page is a register (`page`, ring[head]) and the read port looks one
        # entry ahead (ring[head + 1]) for the allocation after it: the memory's read data
        # went straight into the MMU's slot registers, the engine's critical path at 85.3
        # MHz (the block RAM's clock-to-output, then the slot decode, 11.7 ns).
        page = Signal(self.page_bits)

        head = Signal(self.page_bits)
        tail = Signal(self.page_bits)
        count = Signal(range(self.pages + 1), init=self.pages)
        # the initialisation walk: ring[walk] = walk, one entry per cycle
        walk = Signal(self.page_bits)
        done = Signal()
        pop = self.alloc.valid & self.alloc.ready
        push = self.release.valid & self.release.ready
        new_head = Signal(self.page_bits)
        m.d.comb += new_head.eq(Mux(pop, self._advance(head), head))
        # count == 0 and count == pages as registers, so that the handshakes do not wait
        # for a compare of the count; their next values are chosen by the handshakes among
        # flags of the count register (an allocation alone empties the ring iff one page
        # is free, a release alone fills it iff one is missing), not computed from the
        # updated count (the MMU's critical path on ECP5 ran from its state through the
        # pop into that adder and compare)
        empty = Signal()
        full = Signal(init=1)
        single = Signal()                   # count == 1
        new_count = Signal.like(count)
        only_pop, only_push = pop & ~push, push & ~pop
        # count - 1 and count + 1 come from the register alone and the handshakes choose
        # (the pop arrives late in the cycle, and `count + push - pop` put it in front of a
        # carry chain)
        m.d.comb += new_count.eq(Mux(only_pop, count - 1, Mux(only_push, count + 1, count)))
        m.d.sync += [
            empty.eq(Mux(only_pop, count == 1, Mux(only_push, 0, empty))),
            full.eq(Mux(only_push, count == self.pages - 1, Mux(only_pop, 0, full))),
            single.eq(Mux(only_pop, count == 2, Mux(only_push, empty, single))),
        ]
        # the page after an allocation is ring[head + 1], unless the ring is left with only
        # the page released in the same cycle (which the read port has not seen yet)
        with m.If(push & (empty | (single & pop))):
            m.d.sync += page.eq(self.release.payload)
        with m.Elif(pop):
            m.d.sync += page.eq(rd.data)

        # The read port always presents the page after the next head, `new_head + 1`. Both
        # candidates are registers, chosen by the allocation handshake: computed after the
        # handshake, the increment's carry chain ran into the ring's address pins, which
        # span the block RAMs of the whole ring (the engine's critical path at 77.5 MHz:
        # the write path's record FIFO level -> the MMU's handshake -> this address). Their
        # next values are sums of `head` alone, chosen by the handshake last: summed after
        # the choice, `after_next` was the MMU's latest endpoint at every seed (12.6-13.0
        # ns in the engine, session 19). Their reset values are those of `head = 0` for
        # `_advance` as written here (a subclass that changes it may differ in the first
        # cycle out of reset, when no allocation can be made anyway: the walk runs).
        after_head = Signal(self.page_bits, init=1)
        after_next = Signal(self.page_bits, init=2 % self.pages)
        advanced = self._advance(head)
        m.d.sync += [after_head.eq(Mux(pop, advanced + 1, head + 1)),
                     after_next.eq(Mux(pop, self._advance(advanced) + 1, advanced + 1))]
        m.d.comb += [
            rd.addr.eq(Mux(pop, after_next, after_head)),
            self.alloc.valid.eq(done & ~empty),
            self.alloc.payload.eq(page),
            self.release.ready.eq(done & ~full),
            wr.addr.eq(Mux(done, tail, walk)),
            wr.data.eq(Mux(done, self.release.payload, walk)),
            wr.en.eq(push | ~done),
            self.count.eq(count),
            self.ready.eq(done),
        ]
        with m.If(~done):
            m.d.sync += walk.eq(walk + 1)
            with m.If(walk == self.pages - 1):
                m.d.sync += done.eq(1)
        m.d.sync += [
            head.eq(new_head),
            count.eq(new_count),
        ]
        with m.If(push):
            m.d.sync += tail.eq(tail + 1)
        return m
