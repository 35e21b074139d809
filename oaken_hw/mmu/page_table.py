"""One page table: the pages of many equal-length streams, in logical order."""

from amaranth import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["PageTable"]


class PageTable(wiring.Component):
    """Entry ``(stream, entry)`` holds the physical page of the stream's logical page ``entry``.

    Stored flat at ``stream * entries + entry``: depth ``streams * entries`` exactly, no
    power-of-two padding. Which entries are valid is not stored here: entry ``i`` of a stream
    is valid iff ``i`` is below the stream's page count, which the MMU derives from its token
    and byte counters; zeroing those counters invalidates a whole stream at once.

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
    r_stream, r_entry : In
        Read address; ``r_data`` shows that entry one cycle later (:attr:`latency`).
    w_stream, w_entry, w_data, w_en : In
        Write port; a read of the entry being written returns the old page.
    storage_bits : int
        Bits of the table memory.
    latency : int
        Read latency in cycles (1).
    """

    latency = 1

    def __init__(self, *, streams, entries, page_bits):
        for name, v in (("streams", streams), ("entries", entries), ("page_bits", page_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.streams, self.entries, self.page_bits = streams, entries, page_bits
        self.depth = streams * entries
        self.storage_bits = self.depth * page_bits
        super().__init__({
            "r_stream": In(range(streams)),
            "r_entry": In(range(entries)),
            "r_data": Out(unsigned(page_bits)),
            "w_stream": In(range(streams)),
            "w_entry": In(range(entries)),
            "w_data": In(unsigned(page_bits)),
            "w_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.page_bits), depth=self.depth,
                                        init=[])
        rd = mem.read_port()
        wr = mem.write_port()
        m.d.comb += [
            rd.addr.eq(self.r_stream * self.entries + self.r_entry),
            self.r_data.eq(rd.data),
            wr.addr.eq(self.w_stream * self.entries + self.w_entry),
            wr.data.eq(self.w_data),
            wr.en.eq(self.w_en),
        ]
        return m
