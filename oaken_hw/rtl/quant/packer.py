"""Dense slots, compacted sparse bytes (the zero-removing shifter) and the meta record.

Memory format (:func:`oaken_hw.model.memory_format.pack`): a beat's dense word holds lane
``i``'s ``middle_bits`` slot at bits ``[i*m, (i+1)*m)``, so the beats of a vector
concatenated LSB first are the vector's dense bytes read as a little-endian integer. Each
outlier gets the byte ``index_in_block | outer << index_bits | high << (index_bits + 1)``;
the bytes of a beat are moved to the low positions in lane (= index) order, so the bytes
of all beats in order are the vector's sparse list.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["Packer", "meta_record", "compact", "prefix_sums"]


def prefix_sums(bits):
    """Inclusive prefix sums ``popcount(bits[:i+1])`` by a Sklansky network: ``log2(n)``
    levels of small adders (a ripple of ``n`` adders would be ``n`` levels deep)."""
    s = [b for b in bits]
    n, span = len(s), 1
    while span < n:
        s = [s[i] + s[(i // span) * span - 1] if (i // span) % 2 else s[i]
             for i in range(n)]
        span *= 2
    return s


def compact(m, valid, entries, width=8):
    """Zero-removing shifter: the entries whose ``valid`` bit is set, moved to the low
    positions in order. Returns ``(outputs, count)``.

    Entry ``i`` goes to position ``popcount(valid[:i])``; each output is an AND-OR over the
    entries that can land there (a one-hot selection, no priority chain).
    """
    n = len(entries)
    pos = []
    run = Const(0, range(n + 1))
    for i in range(n):
        p = Signal(range(n + 1), name=f"pos{i}")
        m.d.comb += p.eq(run)
        pos.append(p)
        run = (run + valid[i])[:len(run)]
    outs = []
    for k in range(n):
        terms = [Mux(valid[i] & (pos[i] == k), entries[i], 0) for i in range(k, n)]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc | t
        outs.append(acc[:width])
    count = sum(valid[i] for i in range(n))
    return outs, count


def meta_record(delta_mid, delta_inner, inner_min, delta_outer, n_lo, counts):
    """The meta record as one value, byte 0 at the LSB: four little-endian FP16 words, the
    ``n_lo`` byte, then one outlier-count byte per sparse block."""
    return Cat(delta_mid, delta_inner, inner_min, delta_outer, n_lo.as_unsigned()[:8]
               if len(n_lo) >= 8 else Cat(n_lo, Const(0, 8 - len(n_lo))), *counts)


class Packer(wiring.Component):
    """Dense word and compacted sparse bytes of a beat; two register stages advanced by
    ``en``.

    Parameters
    ----------
    lanes, middle_bits, sparse_block : int

    Attributes
    ----------
    en : In(1)
    beat_in_block : In(range(sparse_block // lanes))
        The beat's position in its sparse block (the index's high part).
    dense, high, outlier, outer : In(ArrayLayout)
        From the :class:`~.encoder.Encoder`.
    dense_word : Out(lanes * middle_bits)
    sparse : Out(ArrayLayout(8, lanes))
        The beat's sparse bytes in positions ``0 .. count-1``; the rest are 0.
    count : Out(range(lanes + 1))
    latency : int
        2: the target positions, the selection.
    """

    latency = 2

    def __init__(self, *, lanes, middle_bits, sparse_block):
        for name, v in (("lanes", lanes), ("middle_bits", middle_bits),
                        ("sparse_block", sparse_block)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if sparse_block % lanes or sparse_block > 64 or sparse_block & (sparse_block - 1):
            raise ValueError(f"sparse_block must be a power of two <= 64 and a multiple of "
                             f"lanes ({lanes}), not {sparse_block}")
        self.lanes, self.middle_bits, self.sparse_block = lanes, middle_bits, sparse_block
        self.index_bits = sparse_block.bit_length() - 1
        L = lambda s: data.ArrayLayout(s, lanes)
        super().__init__({
            "en": In(1),
            "beat_in_block": In(range(max(2, sparse_block // lanes))),
            "dense": In(L(middle_bits)), "high": In(L(1)),
            "outlier": In(L(1)), "outer": In(L(1)),
            "dense_word": Out(lanes * middle_bits),
            "sparse": Out(L(8)),
            "count": Out(range(lanes + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        n, ib = self.lanes, self.index_bits
        lane_bits = (n - 1).bit_length()

        def reg(value, name):
            r = Signal(len(value), name=name)
            with m.If(self.en):
                m.d.sync += r.eq(value)
            return r

        # stage 1: each entry's target position popcount(outlier[:i]) (a prefix count),
        # registered so that the AND-OR selection has a cycle of its own
        entries, valid, pos = [], [], []
        for i in range(n):
            index = Cat(Const(i, lane_bits), self.beat_in_block)[:ib] if lane_bits \
                else self.beat_in_block[:ib]
            if lane_bits >= ib:
                index = Const(i, ib)
            entries.append(reg(Cat(index, self.outer[i], self.high[i], Const(0, 6 - ib)),
                               f"entry{i}"))
            valid.append(reg(self.outlier[i], f"outlier{i}"))
        incl = prefix_sums([self.outlier[i] for i in range(n)])   # popcount(outlier[:i+1])
        for i in range(n):
            pos.append(reg(incl[i - 1] if i else Const(0, 1), f"pos{i}"))
        dense = reg(Cat(*(self.dense[i] for i in range(n))), "dense1")
        count = reg(incl[n - 1], "count1")

        # stage 2: the one-hot AND-OR selection
        outs = []
        for k in range(n):
            terms = [Mux(valid[i] & (pos[i] == k), entries[i], 0) for i in range(k, n)]
            acc = terms[0]
            for t in terms[1:]:
                acc = acc | t
            outs.append(acc[:8])
        with m.If(self.en):
            m.d.sync += [self.dense_word.eq(dense), self.count.eq(count)]
            m.d.sync += [self.sparse[k].eq(outs[k]) for k in range(n)]
        return m
