"""The sparse path of the unpacker: sparse bytes to element positions, then to rows.

:class:`SparseFramer` gives every sparse byte of a vector its element position from the
meta record's block counts and checks the list (counts, order); :class:`ZeroInserter`
spreads the increasing positions into one row of ``lanes`` outlier flags per output beat,
with zeros between them. :class:`~.unpacker.Unpacker` wires them between the frame FIFO and
the row FIFO.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..common.occupancy import occupancy
from ..common.shift import below
from .streams import sparse_layout, uint_bits

__all__ = ["frame_layout", "row_layout", "SparseFramer", "ZeroInserter"]


def frame_layout(cfg):
    nblk = cfg.blocks_per_vector
    w = uint_bits(255 * nblk)
    return data.StructLayout({"prefix": data.ArrayLayout(w, max(1, nblk - 1)),
                              "total": w})


def _entry_layout(cfg):
    return data.StructLayout({"pos": uint_bits(cfg.vector_len - 1), "outer": 1, "high": 1})


def _entries_layout(cfg):
    lanes = cfg.quant.lanes
    return data.StructLayout({"entry": data.ArrayLayout(_entry_layout(cfg), lanes),
                              "val": lanes, "rows": _rows_layout(cfg),
                              "end": 1, "order": 1, "sparse": 1})


def _rows_layout(cfg):
    """Per entry of a beat, where its row (``pos // lanes``) stands among the beat's rows.

    From the positions alone, not from ``val``: ``change[j]``, entry ``j + 1`` is in
    another row than entry ``j``; ``other0[j]``, another row than entry 0; ``third[j]``,
    entries ``0 .. j`` span three rows or more; ``other_fin[j]``, another row than the
    beat's final byte (the framer's, which is the forwarded run's final entry unless the
    vector is malformed). Inside the run the rows do not decrease, so ANDed with ``val``
    these say where the rows of the run start and end.
    """
    lanes = cfg.quant.lanes
    return data.StructLayout({"change": max(1, lanes - 1), "other0": lanes, "third": lanes,
                              "other_fin": lanes})


def row_flags(rows, fin):
    """The :func:`_rows_layout` flags of a beat as integers (a model, for tests).

    Parameters
    ----------
    rows : list of int
        Row of each entry of the beat (``lanes`` of them; unused ones any value).
    fin : int
        Index of the beat's final byte.
    """
    n = len(rows)
    change = sum((rows[j + 1] != rows[j]) << j for j in range(n - 1))
    other0 = sum((r != rows[0]) << j for j, r in enumerate(rows))
    third = sum((sum(rows[i + 1] != rows[i] for i in range(j)) >= 2) << j for j in range(n))
    other_fin = sum((r != rows[fin]) << j for j, r in enumerate(rows))
    return {"change": change, "other0": other0, "third": third, "other_fin": other_fin}


def row_layout(cfg):
    lanes = cfg.quant.lanes
    return data.StructLayout({"outlier": lanes, "outer": lanes, "high": lanes,
                              "empty_after": range(max(2, cfg.beats_per_vector))})


def _thermometer(bits):
    """The number of set bits of a thermometer code (``bits[k]`` implies ``bits[k-1]``).

    The index of its 1 -> 0 edge, OR-encoded: no adder.
    """
    n = len(bits)
    edge = [(bits[t - 1] if t else 1) & (~bits[t] if t < n else 1) for t in range(n + 1)]
    return Cat(*[Cat(*[edge[t] for t in range(n + 1) if (t >> k) & 1]).any()
                 for k in range(uint_bits(n))])


class SparseFramer(wiring.Component):
    """Gives every sparse byte its element position and checks the sparse list.

    The ``o``-th byte of a vector belongs to block ``b`` where
    ``prefix[b-1] <= o < prefix[b]`` (``prefix`` = running sums of the block counts) and
    sits at element ``b * sparse_block + index``. Only a strictly increasing run of
    positions is forwarded: once an entry is out of order, or beyond the sum of the counts,
    no further entry of the vector goes on, so that the :class:`ZeroInserter` always sees
    increasing positions inside the vector. One beat per cycle, two register stages (each
    advances when the next one has room, so a stall stops only what is behind it)::

        i, frame ──► A: blocks, positions, byte count ──► B: steps, order, run, rows ──► o

    **Stage A** works from the ``base`` register (bytes of the vector before the beat):
    one subtraction ``prefix[b] - base`` per block, shared by the beat's bytes; byte ``j``
    is in block ``b`` or later when it is ``<= j``, a compare with a small constant (a few
    LUTs). The prefixes do not decrease, so these bits are a thermometer code, turned into
    the block number without an adder; ``total - base`` likewise says which bytes lie
    within the counts. The stage's loop is just ``base + count`` (with the saturation).
    The frame is used only here, so the beat that takes it (the vector's ``last``)
    consumes it, exactly once per vector.

    **Stage B** holds the order state: ``prev``, the position of the previous beat's final
    byte (forwarded or not), and the sticky ``order`` flag. Its compares are
    ``pos[0] > prev`` and each byte's *step* ``pos[j] > pos[j-1]``, side by side, all from
    registers (in stage A the steps were compares of the input bytes, which reach the
    framer late, at the end of the read path's byte queue); the forwarded run ``val`` is
    the AND prefix of the steps and "within" bits (a mask, not a count: the inserter
    would only decode a count again). Beside it, and from stage A's positions alone, the
    stage works out the row flags the :class:`ZeroInserter` tags a beat with, so that the
    inserter's queue loads each tag as an AND of two of these registers (an OR of such
    for two flags) rather than at the end of a scan behind the run.

    Attributes
    ----------
    i : In(stream.Signature(sparse_layout(cfg)))
    frame : In(stream.Signature(frame layout))
        One per vector: the running sums of the block counts and their total; taken at the
        vector's ``last`` sparse beat.
    o : Out(stream.Signature(entries layout))
        ``entry[j]`` where ``val[j]`` (a prefix of the beat): position, group bit, high
        bit; ``rows``, the row flags of the beat's bytes (:func:`_rows_layout`); ``end`` on
        the vector's final beat, with ``order`` (indices not increasing) and ``sparse``
        (byte count differs from the counts' sum).
    """

    #: register stages from ``i`` to ``o``
    latency = 2

    def __init__(self, *, cfg):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(sparse_layout(cfg))),
            "frame": In(stream.Signature(frame_layout(cfg))),
            "o": Out(stream.Signature(_entries_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, q = self.cfg, self.cfg.quant
        lanes, ib, nblk = q.lanes, q.index_bits, cfg.blocks_per_vector
        pw = uint_bits(cfg.vector_len - 1)
        fw = len(self.frame.payload.total)
        bw = fw + 1                       # delivered-byte counter, saturating
        sat = (1 << bw) - 1
        frame = self.frame.payload
        inp = self.i.payload

        # --- handshake: each stage advances when the next one has room -------------------
        a_valid = Signal(name="a_valid")
        adv_b = ~self.o.valid | self.o.ready
        adv_a = ~a_valid | adv_b
        fire = self.i.valid & self.i.ready
        fire_b = a_valid & adv_b
        m.d.comb += [self.i.ready.eq(adv_a & self.frame.valid),
                     self.frame.ready.eq(fire & inp.last)]

        # --- stage A: blocks and positions -------------------------------------------------
        base = Signal(bw)                 # bytes of this vector before the current beat
        count = Mux(inp.count > lanes, lanes, inp.count)
        # o = base + j >= prefix  <=>  prefix - base <= j: one subtraction per block, shared
        # by the beat's bytes; the per-byte part compares it with a small constant, which
        # is a few LUTs (sign, high bits zero, low bits) rather than another carry chain
        lb = uint_bits(lanes - 1)
        d_blk = [Signal(signed(bw + 1), name=f"d_blk{b}") for b in range(nblk - 1)]
        d_tot = Signal(signed(bw + 1), name="d_tot")
        m.d.comb += [d_tot.eq(frame.total - base),
                     *[d_blk[b].eq(frame.prefix[b] - base) for b in range(nblk - 1)]]

        def at_most(d, j):                # d <= j for 0 <= j < 2 ** lb
            lo = d[:lb]
            return d[-1] | (~d[lb:-1].any() & Cat(*[lo == v for v in range(j + 1)]).any())

        a_pos = [Signal(pw, name=f"a_pos{j}") for j in range(lanes)]
        a_gh = [Signal(2, name=f"a_gh{j}") for j in range(lanes)]    # group bit, high bit
        a_ok = Signal(lanes, name="a_ok")         # present and within the counts' sum
        a_fin = Signal(lanes, name="a_fin")       # the beat's final byte, one-hot
        a_end, a_sparse = Signal(name="a_end"), Signal(name="a_sparse")
        total = base + count
        delivered = Mux(total > sat, sat, total)[:bw]

        with m.If(adv_a):
            m.d.sync += a_valid.eq(fire)
        therm = [Cat(*[at_most(d_blk[b], j) for b in range(nblk - 1)]) for j in range(lanes)]
        present = below(count, lanes)     # byte j is one of the beat's
        with m.If(fire):
            for j in range(lanes):
                byte = inp.data[j]
                if nblk > 1:
                    m.d.sync += a_pos[j].eq(Cat(byte[:ib], _thermometer(therm[j])))
                else:
                    m.d.sync += a_pos[j].eq(byte[:ib])
                m.d.sync += [a_gh[j].eq(byte[ib:ib + 2]),
                             a_ok[j].eq(present[j] & ~at_most(d_tot, j)),
                             a_fin[j].eq(count == j + 1)]
            m.d.sync += [a_end.eq(inp.last), a_sparse.eq(delivered != frame.total)]
            m.d.sync += base.eq(Mux(inp.last, 0, delivered))

        # --- stage B: order, the forwarded run ---------------------------------------------
        prev = Signal(pw)                 # position of the previous beat's final byte
        have_prev = Signal()
        order = Signal()                  # sticky: an entry was out of order
        # sparse_block = 2 ** ib, so a position (block, index) compares lexicographically
        inc = Cat(~have_prev | (a_pos[0] > prev), *[a_pos[j] > a_pos[j - 1]
                                                    for j in range(1, lanes)])
        beat_bad = (a_ok & ~inc).any()
        # the forwarded entries are a prefix (the run), as a mask; a_ok is a prefix itself
        # (j < count and j < total - base), so entry j needs only its own a_ok bit
        val = Cat(*[~order & a_ok[j] & inc[:j + 1].all() for j in range(lanes)])
        last_pos = Signal(pw, name="last_pos")
        m.d.comb += last_pos.eq(Cat(*[Cat(*[a_fin[j] & a_pos[j][k] for j in range(lanes)]).any()
                                      for k in range(pw)]))
        # the row flags, from the positions only (a few LUTs beside the run's chain)
        ll = lanes.bit_length() - 1
        rows = [a_pos[j][ll:] for j in range(lanes)]
        change = [rows[j + 1] != rows[j] for j in range(lanes - 1)]
        last_row = last_pos[ll:]
        r_change = Cat(*change) if lanes > 1 else Const(0, 1)
        r_other0 = Cat(*[r != rows[0] for r in rows])
        r_third = Cat(*[_two_or_more(change[:j]) if j >= 2 else Const(0, 1)
                        for j in range(lanes)])
        r_other_fin = Cat(*[r != last_row for r in rows])

        with m.If(adv_b):
            m.d.sync += self.o.valid.eq(a_valid)
        with m.If(fire_b):
            p = self.o.payload
            for j in range(lanes):
                m.d.sync += [p.entry[j].pos.eq(a_pos[j]), p.entry[j].outer.eq(a_gh[j][0]),
                             p.entry[j].high.eq(a_gh[j][1])]
            m.d.sync += [p.val.eq(val), p.end.eq(a_end), p.order.eq(order | beat_bad),
                         p.sparse.eq(a_sparse),
                         p.rows.change.eq(r_change), p.rows.other0.eq(r_other0),
                         p.rows.third.eq(r_third), p.rows.other_fin.eq(r_other_fin)]
            with m.If(a_end):
                m.d.sync += [have_prev.eq(0), order.eq(0)]
            with m.Else():
                m.d.sync += order.eq(order | beat_bad)
                with m.If(a_fin.any()):
                    m.d.sync += [prev.eq(last_pos), have_prev.eq(1)]
        return m


def _two_or_more(bits):
    """Whether at least two of ``bits`` are set (a tree of (any, two) pairs, no adder)."""
    pairs = [(b, Const(0, 1)) for b in bits]
    while len(pairs) > 1:
        nxt = [(a1 | a2, t1 | t2 | (a1 & a2))
               for (a1, t1), (a2, t2) in zip(pairs[::2], pairs[1::2])]
        pairs = nxt + pairs[len(nxt) * 2:]
    return pairs[0][1]


def _first_run(mask, last):
    """The entries of ``mask`` up to and including its first one with ``last`` set."""
    return Cat(*[mask[j] & ~Cat(*[mask[i] & last[i] for i in range(j)]).any() if j else mask[0]
                 for j in range(len(mask))])


class ZeroInserter(wiring.Component):
    """The zero-inserting shifter: increasing sparse positions to one row per output beat.

    Row ``k`` of a vector holds its entries with position in ``[k * lanes, (k+1) * lanes)``,
    each at lane ``position % lanes`` (the other lanes get a zero: not an outlier). Positions
    increase inside a vector, so a row is a run of consecutive entries, and the inserter
    works on runs rather than on positions::

        i ──► tag ──► beat queue (3 beats) ──► row stage ──► row FIFO ──► o
                                                        └──► verdict FIFO ──► verdict

    **Tag.** Every entry gets ``last`` (the vector's next entry is in a later row, or there
    is none) and the run of empty rows after its row (``next row - row - 1``, or
    ``beats - 1 - row`` after the vector's final entry). Inside a beat that compares
    neighbours; the tag of a beat's final entry needs the vector's next non-empty beat (or
    its ``end``), so the beat waits in the queue, *open*, until that arrives and *closes*
    it. A vector's first beat whose first entry is in a row ``r > 0`` carries a *lead*: an
    empty row 0 with ``r - 1`` empty rows after it; a vector without entries becomes a
    beat with only a lead (``beats - 1`` empty rows). Empty beats before the end carry
    nothing and are dropped. The queue lets the input go on while the row stage spends a
    cycle on a lead row; ``i.ready`` is just "queue not full".

    **Row stage.** Holds the oldest closed beat (an open head closes "in flight" when the
    beat that closes it is at the input) and emits one row per cycle: the remaining
    entries up to the first ``last`` flag. The row's entry mask and the "one / two rows
    left" flags are registers, the next mask is a priority encode of registered flags: no
    row number, adder or comparator lies in the stage's loop. A beat's entries after its
    final ``last`` belong to a row that goes on in the next beat; they are kept as lane
    bits and merged into that beat's first row. A beat without any ``last`` (possible only
    when beats split rows) costs a cycle without a row.

    The rows between a row and the next entry's row are empty: they leave with it as a run
    length (``empty_after``) and the merge expands them, so the inserter spends one cycle
    per *non-empty* row (and one per lead), and a stretch of empty rows never makes it
    fall behind the input.

    Attributes
    ----------
    i : In(stream.Signature(entries layout))
    o : Out(stream.Signature(row layout))
        Per vector, rows with ``empty_after`` empty rows after each, ``beats`` rows in all,
        from a FIFO of ``depth`` entries.
    verdict : Out(stream.Signature(2))
        ``order``, ``sparse`` of each vector, pushed once its final beat is in the row
        stage, in a cycle in which the stage emits one of its rows: from then on its
        remaining rows leave one per cycle.
    """

    #: beats in the queue: the open one, a closed one waiting for the row stage, and one
    #: to ride out a lead row without stopping the input (``i.ready`` only looks at the
    #: fill, not at what the row stage does in the same cycle)
    queue_beats = 3

    def __init__(self, *, cfg, depth, vectors):
        self.cfg, self.depth, self.vectors = cfg, depth, vectors
        super().__init__({
            "i": In(stream.Signature(_entries_layout(cfg))),
            "o": Out(stream.Signature(row_layout(cfg))),
            "verdict": Out(stream.Signature(2)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes, K = cfg.quant.lanes, cfg.beats_per_vector
        ll = lanes.bit_length() - 1
        rw = uint_bits(cfg.vector_len - 1) - ll                 # row number bits
        rl = row_layout(cfg)
        ew = Shape.cast(rl["empty_after"].shape).width     # run length bits
        D = self.queue_beats

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=rl.size, depth=self.depth)
        m.submodules.vfifo = vfifo = SyncFIFOBuffered(width=2, depth=self.vectors)
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready),
                     self.verdict.valid.eq(vfifo.r_rdy), self.verdict.payload.eq(vfifo.r_data),
                     vfifo.r_en.eq(self.verdict.ready)]

        # --- tag the input beat ------------------------------------------------------------
        slot_layout = data.StructLayout({
            "lane": data.ArrayLayout(max(1, ll), lanes), "outer": lanes, "high": lanes,
            "val": lanes,       # entry j is present: j < n
            "last": lanes,      # last of its row, as far as the beat tells (not the final one)
            "empty": data.ArrayLayout(ew, lanes),            # run after it, where "last"
            "first": lanes,     # the beat's first row (does not depend on the final entry)
            "one": 1, "two": 1,                              # one / two "last" in the beat
            "sfx": lanes,       # after the final "last": the row may go on in the next beat
            "lead": 1, "lead_empty": ew,
            "closed": 1,        # the final entry's tag is known:
            "tlast": 1, "tempty": ew,
            "end": 1, "verdict": 2,
        })
        inp = self.i.payload
        fire = self.i.valid & self.i.ready
        val, rf = inp.val, inp.rows
        has = val[0]
        row = [inp.entry[j].pos[ll:] for j in range(lanes)]
        ilast = Signal(lanes, name="in_last")
        m.d.comb += ilast.eq(Cat(*[val[j + 1] & rf.change[j] for j in range(lanes - 1)]))
        final_in = Cat(*[val[j] & (~val[j + 1] if j < lanes - 1 else 1) for j in range(lanes)])
        final_row_in = Signal(rw, name="in_final_row")
        m.d.comb += final_row_in.eq(Cat(*[Cat(*[final_in[j] & row[j][b]
                                                for j in range(lanes)]).any()
                                          for b in range(rw)]))

        started = Signal(name="started")    # the vector has a beat in the queue: its open one
        open_row = Signal(rw, name="open_row")    # row of that beat's final entry

        new = Signal(slot_layout, name="new")
        # The rows do not decrease inside the run, so the beat's first row is the entries
        # in entry 0's row, the trailing ones those in the final byte's row (only a
        # malformed vector's run ends before that byte, and then the trailing entries,
        # which only ever reach row contents, are zeroed by the merge), one / two "last"
        # flags mean two / three rows: each tag is an AND of the framer's registers (an
        # OR of such for one, two), not a prefix or suffix scan of "last" bits behind the
        # framer's run (the queue's longest paths, 11 LUT levels).
        m.d.comb += [
            new.outer.eq(Cat(*[inp.entry[j].outer for j in range(lanes)])),
            new.high.eq(Cat(*[inp.entry[j].high for j in range(lanes)])),
            new.val.eq(val), new.last.eq(ilast), new.first.eq(val & ~rf.other0),
            new.one.eq((val & rf.other0).any()), new.two.eq((val & rf.third).any()),
            new.sfx.eq(val & ~rf.other_fin),
            new.lead.eq(~started & (~has | (row[0] != 0))),
            new.lead_empty.eq(Mux(has, row[0] - 1, K - 1)[:ew]),
            new.closed.eq(inp.end), new.tlast.eq(1), new.tempty.eq((K - 1 - final_row_in)[:ew]),
            new.end.eq(inp.end), new.verdict.eq(Cat(inp.order, inp.sparse)),
        ]
        for j in range(lanes):
            m.d.comb += [new.lane[j].eq(inp.entry[j].pos[:ll] if ll else 0),
                         new.empty[j].eq((row[j + 1] - row[j] - 1)[:ew] if j < lanes - 1 else 0)]

        # closing the open beat: by the vector's next non-empty beat, or by its end
        close = Signal(name="close")
        close_last = Signal(name="close_last")
        close_empty = Signal(ew, name="close_empty")
        close_end = Signal(name="close_end")
        m.d.comb += [
            close.eq(fire & started & (has | inp.end)),
            close_last.eq(~has | (row[0] != open_row)),
            close_empty.eq(Mux(has, row[0] - open_row - 1, K - 1 - open_row)[:ew]),
            close_end.eq(~has & inp.end),
        ]
        push = Signal(name="push")
        m.d.comb += push.eq(fire & (has | (inp.end & ~started)))
        with m.If(fire):
            m.d.sync += started.eq(~inp.end & (started | has))
            with m.If(has):
                m.d.sync += open_row.eq(final_row_in)

        # --- the beat queue (one-hot pointers; only the newest beat can be open) ---------
        slots = [Signal(slot_layout, name=f"q{s}") for s in range(D)]
        wp = Signal(D, init=1, name="q_wp")
        rp = Signal(D, init=1, name="q_rp")
        newest = Cat(wp[1:], wp[0])           # one behind the write pointer
        pop = Signal(name="pop")
        # `i.ready` (`count != D`) is a register: the dequantization engine's sparse
        # `ready` started with the compare, on the way into the read path's framing queue
        # (q_count -> ... -> its `enough`, 11.2 ns, the engine's critical path at 89.5 MHz)
        count, not_full = occupancy(m, depth=D, limit=D, up=push, down=pop, name="q_count")
        m.d.comb += self.i.ready.eq(not_full)
        for s in range(D):
            # the slot at the write pointer is free unless the queue is full: it takes the
            # input whether or not it is pushed (so that its enable is a flip-flop's)
            with m.If(self.i.ready & wp[s]):
                m.d.sync += slots[s].eq(new)
            with m.Elif(close & newest[s]):
                m.d.sync += [slots[s].closed.eq(1), slots[s].tlast.eq(close_last),
                             slots[s].tempty.eq(close_empty)]
                with m.If(close_end):
                    m.d.sync += [slots[s].end.eq(1),
                                 slots[s].verdict.eq(Cat(inp.order, inp.sparse))]
        with m.If(push):
            m.d.sync += wp.eq(Cat(wp[-1], wp[:-1]))
        with m.If(pop):
            m.d.sync += rp.eq(Cat(rp[-1], rp[:-1]))

        head = Signal(slot_layout, name="head")
        sel = 0
        for s in range(D):
            sel = sel | Mux(rp[s], slots[s].as_value(), 0)
        m.d.comb += head.eq(sel)
        # The head is open when it is the only beat and its vector has not ended; then it
        # closes in flight, when the beat that closes it is at the input. The final
        # entry's tag only matters to the final entry, so the beat's first row is known
        # without it.
        head_ok = (count > 1) | ((count == 1) & (~started | close))
        h_tlast = Signal(name="h_tlast")
        h_tempty = Signal(ew, name="h_tempty")
        h_end = Signal(name="h_end")
        h_verdict = Signal(2, name="h_verdict")
        m.d.comb += [
            h_tlast.eq(Mux(head.closed, head.tlast, close_last) & head.val[0]),
            h_tempty.eq(Mux(head.closed, head.tempty, close_empty)),
            h_end.eq(head.end | (~head.closed & close_end)),
            h_verdict.eq(Mux(head.closed, head.verdict, Cat(inp.order, inp.sparse))),
        ]
        h_final = [head.val[j] & (~head.val[j + 1] if j < lanes - 1 else 1)
                   for j in range(lanes)]

        # --- the row stage -----------------------------------------------------------------
        bv = Signal(name="b_valid")                       # holds a beat
        # each entry's lane, one-hot: the placement is then an AND-OR of flip-flops
        b_lane = [Signal(lanes, name=f"b_lane{j}") for j in range(lanes)]
        b_outer, b_high = Signal(lanes, name="b_outer"), Signal(lanes, name="b_high")
        b_last = Signal(lanes, name="b_last")
        b_empty = [Signal(ew, name=f"b_empty{j}") for j in range(lanes)]
        b_rem = Signal(lanes, name="b_rem")               # entries not emitted yet
        b_row = Signal(lanes, name="b_row")               # those of the row it emits next
        b_one, b_two = Signal(name="b_one"), Signal(name="b_two")   # rows closed in b_rem
        b_sfx = Signal(lanes, name="b_sfx")
        b_lead, b_lead_empty = Signal(name="b_lead"), Signal(ew, name="b_lead_empty")
        b_nil, b_end = Signal(name="b_nil"), Signal(name="b_end")
        acc_o, acc_g, acc_h = (Signal(lanes, name=f"acc_{x}") for x in "ogh")   # open row

        def place(mask):
            mg, mh = mask & b_outer, mask & b_high
            o, g, h = [], [], []
            for lane in range(lanes):
                o.append(Cat(*[mask[j] & b_lane[j][lane] for j in range(lanes)]).any())
                g.append(Cat(*[mg[j] & b_lane[j][lane] for j in range(lanes)]).any())
                h.append(Cat(*[mh[j] & b_lane[j][lane] for j in range(lanes)]).any())
            return Cat(*o), Cat(*g), Cat(*h)

        row_o, row_g, row_h = place(b_row)
        sfx_o, sfx_g, sfx_h = place(b_sfx)
        run = Signal(ew, name="run")
        fin = b_row & b_last
        m.d.comb += run.eq(Mux(b_lead, b_lead_empty,
                               Cat(*[Cat(*[fin[j] & b_empty[j][b] for j in range(lanes)]).any()
                                     for b in range(ew)])))
        rest = Signal(lanes, name="b_rest")               # after this row
        m.d.comb += rest.eq(b_rem & ~b_row)

        emit = Signal(name="emit")
        consume = Signal(name="consume")
        load = Signal(name="load")
        lead_mask = Cat(*[~b_lead] * lanes)
        m.d.comb += [
            emit.eq(bv & (b_lead | b_one) & fifo.w_rdy),
            consume.eq(bv & Mux(b_lead, b_nil & fifo.w_rdy,
                                Mux(b_one, ~b_two & fifo.w_rdy, 1))),
            fifo.w_en.eq(emit),
            fifo.w_data.eq(Cat((row_o | acc_o) & lead_mask, (row_g | acc_g) & lead_mask,
                               (row_h | acc_h) & lead_mask, run)),
        ]

        # The verdict goes out when the vector's final beat enters the row stage while
        # the stage emits a row of the same vector (then every remaining row of the vector
        # leaves one per cycle from this cycle on), else one cycle later, with its first
        # row. The merge may start the vector then and finds each row in time. (A beat
        # that becomes final in flight, by the vector's empty final beat, always takes
        # the later push: the early one is then a function of flip-flops only.)
        late = Signal(name="late")
        late_v = Signal(2, name="late_v")
        early = emit & ~b_end
        # (room for a verdict is asked of every beat, not only of final ones: then it is
        # a function of flip-flops only)
        room = vfifo.level + late < self.vectors
        take = (~bv | consume) & room
        load_end = (count != 0) & head.end & take      # = load & head.end (then closed)
        m.d.comb += [
            load.eq(head_ok & take), pop.eq(load),
            vfifo.w_en.eq((load_end & early) | late),
            vfifo.w_data.eq(Mux(late, late_v, head.verdict)),
        ]
        m.d.sync += [late.eq(load & h_end & ~(load_end & early)), late_v.eq(h_verdict)]

        with m.If(emit & b_lead):
            m.d.sync += b_lead.eq(0)
        with m.If(emit & ~b_lead):
            m.d.sync += [b_rem.eq(rest), b_row.eq(_first_run(rest, b_last)),
                         b_one.eq(b_two), b_two.eq(_two_or_more(rest & b_last)),
                         acc_o.eq(0), acc_g.eq(0), acc_h.eq(0)]
        with m.If(consume):
            # the row that goes on into the next beat: this beat's trailing entries (merged
            # with the open row when this beat closed no row)
            keep = ~b_one & ~b_lead
            m.d.sync += [acc_o.eq(sfx_o | Mux(keep, acc_o, 0)),
                         acc_g.eq(sfx_g | Mux(keep, acc_g, 0)),
                         acc_h.eq(sfx_h | Mux(keep, acc_h, 0)),
                         bv.eq(0)]
        with m.If(load):
            m.d.sync += [
                bv.eq(1),
                b_outer.eq(head.outer), b_high.eq(head.high),
                b_last.eq(head.last | Mux(h_tlast, Cat(*h_final), 0)),
                b_rem.eq(head.val), b_row.eq(head.first),
                b_one.eq(head.one | h_tlast), b_two.eq(head.two | (head.one & h_tlast)),
                b_sfx.eq(Mux(h_tlast, 0, head.sfx)),
                b_lead.eq(head.lead), b_lead_empty.eq(head.lead_empty),
                b_nil.eq(~head.val[0]), b_end.eq(h_end),
            ]
            for j in range(lanes):
                m.d.sync += [b_lane[j].eq(1 << head.lane[j] if ll else 1),
                             b_empty[j].eq(Mux(h_final[j], h_tempty, head.empty[j]))]
        return m
