"""One page table: the pages of many equal-length streams, in logical order."""

from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["PageTable"]


class PageTable(wiring.Component):
    """Entry ``(stream, entry)`` holds the physical page of the stream's logical page ``entry``.

    Stored flat at ``stream * entries + entry``: depth ``streams * entries`` exactly, no
    power-of-two padding. The ports take that flat address (:meth:`addr`): the table does
    no arithmetic, so that the MMU can keep each stream's base in a register and add only
    the entry on its per-cycle path (a multiplier there limited the clock). Which entries
    are valid is not stored here: entry ``i`` of a stream is valid iff ``i`` is below the
    stream's page count, which the MMU derives from its token and byte counters; zeroing
    those counters invalidates a whole stream at once.

    Parameters
    ----------
    streams : int
        Streams held.
    entries : int
        Entries (logical pages) per stream.
    page_bits : int
        Width of a page number.

    Attributes
    ----------
    r_addr : In(range(depth))
        Flat read address; ``r_data`` shows that entry two cycles later (:attr:`latency`).
    r_data : Out(page_bits)
        A register after the memory's read data (block RAM data arrives late in the cycle,
        so it goes into a register before any logic): a two-stage read pipeline.
    r_en : In(1)
        Clock enable of the output register: while low, ``r_data`` holds and the memory's
        read data (the entry addressed the cycle before) waits in the memory, so a reader
        that presents the same address again stalls the pipeline without losing an entry.
    w_addr, w_data, w_en : In
        Write port (flat address); a read of the entry being written returns the old page.
    depth : int
        Entries of the table, ``streams * entries``.
    storage_bits : int
        Bits of the table memory.
    latency : int
        Read latency in cycles (2).
    """

    latency = 2

    def __init__(self, *, streams, entries, page_bits):
        for name, v in (("streams", streams), ("entries", entries), ("page_bits", page_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.streams, self.entries, self.page_bits = streams, entries, page_bits
        self.depth = streams * entries
        self.storage_bits = self.depth * page_bits
        super().__init__({
            "r_addr": In(range(self.depth)),
            "r_data": Out(unsigned(page_bits)),
            "r_en": In(1, init=1),
            "w_addr": In(range(self.depth)),
            "w_data": In(unsigned(page_bits)),
            "w_en": In(1),
        })

    def addr(self, stream, entry):
        """Flat address of ``entry`` of ``stream`` (Python ints or Amaranth values).

        Parameters
        ----------
        stream, entry : int or Value

        Returns
        -------
        int or Value
            ``stream * entries + entry``.
        """
        return stream * self.entries + entry

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.page_bits), depth=self.depth,
                                        init=[])
        rd = mem.read_port()
        wr = mem.write_port()
        q = Signal(self.page_bits)
        with m.If(self.r_en):
            m.d.sync += q.eq(rd.data)
        m.d.comb += [
            rd.addr.eq(self.r_addr),
            self.r_data.eq(q),
            wr.addr.eq(self.w_addr),
            wr.data.eq(self.w_data),
            wr.en.eq(self.w_en),
        ]
        return m
