"""The MMU controller: append, read and free over the page tables and the free list."""

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .free_list import FreeList
from .layout import Kind, MMULayout, Op, Status
from .page_table import PageTable

__all__ = ["append_layout", "cmd_layout", "record_layout", "group_state_layout",
           "ObservationSignature", "MMU"]


def append_layout(L):
    """Payload of the ``append`` port: one token of one group, sparse byte count per head."""
    return data.StructLayout({
        "seq": L.seq_bits,
        "layer": L.layer_bits,
        "kv": 1,
        "pos": L.token_bits,
        "counts": data.ArrayLayout(L.count_bits, L.heads),
    })


def cmd_layout(L):
    """Payload of the ``cmd`` port: a read (``op`` = READ) or a free (``op`` = FREE)."""
    return data.StructLayout({
        "op": 1,
        "kind": 2,
        "seq": L.seq_bits,
        "layer": L.layer_bits,
        "kv": 1,
        "head": L.head_bits,
        "lo": L.range_bits,
        "hi": L.range_bits,
    })


def record_layout(L):
    """Payload of both response streams (see :class:`oaken_hw.mmu.model.Record`)."""
    return data.StructLayout({
        "kind": 2,
        "head": L.head_bits,
        "addr": L.addr_bits,
        "length": L.len_bits,
        "status": 3,
    })


def group_state_layout(L):
    """One word of the group-state memory: tokens of the group, bytes of each sparse stream."""
    return data.StructLayout({
        "n": L.token_bits,
        "sb": data.ArrayLayout(L.sbytes_bits, L.heads),
    })


class ObservationSignature(wiring.Signature):
    """Internal events exported for verification (unused logic is removed by synthesis).

    Members: ``alloc``/``release`` strobes with the page and the stream id
    (:meth:`MMULayout.stream_id`), in the cycle the free list takes the page (a release
    reaches the free list one cycle after the free walk passes its entry, through the
    table's output register); ``seq``/``group`` of the command being executed;
    ``free_done`` strobe with ``free_seq``, in the cycle of the walk's last release or
    later; the ``live`` bit of every sequence.
    """

    def __init__(self, L):
        sid = max(1, (L.stream_ids - 1).bit_length())
        super().__init__({
            "alloc": Out(1), "alloc_page": Out(L.page_bits), "alloc_sid": Out(sid),
            "release": Out(1), "release_page": Out(L.page_bits), "release_sid": Out(sid),
            "seq": Out(L.seq_bits), "group": Out(range(L.groups)),
            "free_done": Out(1), "free_seq": Out(L.seq_bits),
            "live": Out(L.sequences),
        })


class MMU(wiring.Component):
    """Paged memory management of the compressed KV cache.

    Two command ports so that a stalled append never blocks the free that would unstall it:
    ``append`` (the write path) and ``cmd`` (reads and frees). One command executes at a time;
    ``cmd`` has priority. Each command produces zero or more burst records and then exactly
    one ``STATUS`` record, on ``wr_out`` for appends and on ``rd_out`` for ``cmd``. The
    semantics are those of :class:`oaken_hw.mmu.model.MMUModel`.

    Reset (at power-up and after any ``sync`` reset) returns the MMU to the state of a fresh
    :class:`~oaken_hw.mmu.model.MMUModel`: the free list rewrites its ring to ``0 .. pages -
    1`` and the MMU zeroes every word of its group-state memory, one word per cycle, at the
    same time. ``append.ready`` and ``cmd.ready`` stay low (and ``ready`` low) for
    :attr:`init_cycles` cycles. The page tables need no walk: an entry is valid only below
    the counts, which the walk zeroes.

    Parameters
    ----------
    cfg : OakenConfig
        The configuration.
    free_list : type, optional
        Free-list class; only fault-injection tests pass anything but :class:`FreeList`.

    Attributes
    ----------
    append : In(stream.Signature(append_layout))
    cmd : In(stream.Signature(cmd_layout))
    wr_out, rd_out : Out(stream.Signature(record_layout))
    out_of_pages : Out(1)
        High while an accepted append waits for free pages (``append.ready`` is low then).
    free_pages : Out(range(pages + 1))
        ``pages`` from reset on (also during the initialisation walk).
    ready : Out(1)
        High once the initialisation walks after reset are done.
    obs : Out(ObservationSignature)
    layout : MMULayout
    storage_bits : dict of str to int
        Bits of every memory, by name.
    append_cycles : int
        Cycles from accepting an append to its status record with no output stall
        (``2 * heads + vectors + 5``), plus one per sparse record that crosses a page.
    read_latency : int
        Cycles from accepting a read to its first burst; then one burst per cycle. (The
        page tables have a read latency of 2; the first entry is addressed in the cycle
        after acceptance, and the range's bounds take a cycle of their own, ``R_LIM``.)
    init_cycles : int
        Cycles of the initialisation after reset, ``max(pages, group_rows)``:
        ``ready`` is high, and a command can be accepted, from the ``init_cycles``-th cycle
        out of reset on (counting the first as 0).
    """

    read_latency = 4

    def __init__(self, *, cfg, free_list=FreeList):
        self.layout = L = MMULayout(cfg)
        if not (isinstance(free_list, type) and issubclass(free_list, FreeList)):
            raise ValueError(f"free_list must be a FreeList subclass, not {free_list!r}")
        self._free_list_cls = free_list
        self.storage_bits = L.storage_bits
        self.append_cycles = L.slots + 5
        self.init_cycles = max(L.pages, L.group_rows)
        super().__init__({
            "append": In(stream.Signature(append_layout(L))),
            "cmd": In(stream.Signature(cmd_layout(L))),
            "wr_out": Out(stream.Signature(record_layout(L))),
            "rd_out": Out(stream.Signature(record_layout(L))),
            "out_of_pages": Out(1),
            "free_pages": Out(range(L.pages + 1)),
            "ready": Out(1),
            "obs": Out(ObservationSignature(L)),
        })

    def elaborate(self, platform):
        L = self.layout
        H, V, G, P, S = L.heads, L.vectors, L.groups, L.page_bytes, L.slots
        shift = L.page_shift
        m = Module()

        m.submodules.free_list = fl = self._free_list_cls(pages=L.pages)
        sg = L.group_rows
        strides = L.table_strides
        dtab, stab, mtab = (PageTable(streams=sg * strides[k][0], entries=strides[k][1],
                                      page_bits=L.page_bits)
                            for k in ("dense", "sparse", "meta"))
        m.submodules.dense_table, m.submodules.sparse_table = dtab, stab
        m.submodules.meta_table = mtab
        tables = (dtab, stab, mtab)
        named = ((dtab, "dense"), (stab, "sparse"), (mtab, "meta"))
        # one word per group: its token count and the running byte count of every head's
        # sparse stream, so that one read gives an append everything it checks
        gs_layout = group_state_layout(L)
        m.submodules.group_state = gsm = Memory(shape=gs_layout, depth=sg, init=[])
        gs_rd, gs_wr = gsm.read_port(), gsm.write_port()

        # the initialisation walk of the group state (the free list walks its ring itself)
        gs_walk = Signal(range(sg))
        gs_done = Signal()
        ready = Signal()
        m.d.comb += [ready.eq(gs_done & fl.ready), self.ready.eq(ready)]
        with m.If(~gs_done):
            m.d.sync += gs_walk.eq(gs_walk + 1)
            with m.If(gs_walk == sg - 1):
                m.d.sync += gs_done.eq(1)

        live = Signal(L.sequences)
        pending = Signal()      # an accepted append waits for pages
        retry = Signal()        # a free completed since the append stalled
        from_cmd = Signal()     # the command executing came from `cmd`
        ap = Signal(append_layout(L))
        cm = Signal(cmd_layout(L))
        fg = Signal(range(G))   # group walked by a free

        seq = Signal(L.seq_bits)
        grp = Signal(range(G))
        m.d.comb += [
            seq.eq(Mux(from_cmd, cm.seq, ap.seq)),
            grp.eq(Mux(from_cmd,
                       Mux(cm.op == Op.FREE, fg, cm.layer * 2 + cm.kv),
                       ap.layer * 2 + ap.kv)),
        ]
        # The row of the executing command's group, a register: it changes only when a
        # command is accepted (the wires (seq, layer, kv) of the incoming payload, see
        # MMULayout.group_rows) and when a free walks on to the next group (to gidx1, the
        # register gidx + 1), so neither an adder nor a multiplier is on a per-cycle path
        gidx = Signal(range(sg))
        gidx1 = Signal.like(gidx)

        def group_row(seq_, g_):
            # g_ = layer * 2 + kv, as the wires Cat(kv, layer); a layer >= layers (never
            # written: BAD_FIELD) may alias a valid row
            return Cat(g_[:L.group_stride.bit_length() - 1], seq_)
        # The group's word, one cycle after its address. A block RAM's data arrives late in
        # the cycle, so it only ever goes straight into registers (n and sb below): the word
        # of a new command is read as it is accepted and registered in A_LOOK/C_LOOK, and a
        # free reads the next group's word ahead, during the current group's walk.
        gs = gs_rd.data

        def load_group_word():
            m.d.sync += n.eq(gs.n)
            m.d.sync += [sb[h].eq(gs.sb[h]) for h in range(H)]

        n = Signal(L.token_bits)            # tokens of the group
        sb = Array(Signal(L.sbytes_bits, name=f"sb{h}") for h in range(H))
        counts = Array(ap.counts[h] for h in range(H))
        pg0 = Array(Signal(L.page_bits, name=f"pg0_{j}") for j in range(S))
        pg1 = Array(Signal(L.page_bits, name=f"pg1_{h}") for h in range(H))
        j = Signal(range(S + 1))            # slot being resolved (append) or walked (free)
        frag = Signal()                     # emitting the second sparse fragment
        status = Signal(3)
        # read cursor, kept so that a burst's length is one compare of registers: bytes
        # left, room and offset in the current page, entry e shown by the table's read port
        r_left = Signal(L.range_bits + shift + 1)
        r_room = Signal(range(P + 1))
        r_off = Signal(range(P))
        e = Signal(L.range_bits + 1)
        # e + 1 and e + 2 as registers: the table addresses need no incrementer
        e1 = Signal(L.range_bits + 1)
        e2 = Signal(L.range_bits + 1)

        def set_e(v):
            m.d.sync += [e.eq(v), e1.eq(v + 1), e2.eq(v + 2)]

        def step_e():
            m.d.sync += [e.eq(e1), e1.eq(e2), e2.eq(e2 + 1)]
        npg = Signal(L.range_bits + 1)      # pages of the stream a free walks
        # The append's table reads run ahead of the slot pipeline, one slot per cycle from
        # A_LOOK on and independent of output stalls: slot rk is addressed this cycle, and
        # the entry of slot cap2_k (addressed two cycles before) is on the table's output
        # register and goes into pg0[cap2_k]. Slot k is resolved no earlier than that
        # cycle (an allocation then overrides the read) and emitted a cycle later, from pg0.
        rk = Signal(range(S + 1))
        cap1_k = Signal(range(S + 1))
        cap2_k = Signal(range(S + 1))
        cap1 = Signal()
        cap2 = Signal()
        rel_v = Signal()                    # the release stage of a free: valid, table, stream
        rel_tab = Signal(2)
        rel_sid = Signal.like(self.obs.release_sid)
        free_done_q = Signal()

        def sid(kind_slot):
            # observation only (unused logic, removed by synthesis): the stream's number of
            # MMULayout.stream_id
            return (seq * G + grp) * S + kind_slot

        m.d.comb += [
            gs_rd.addr.eq(gidx),
            gs_wr.addr.eq(gidx),
            self.out_of_pages.eq(pending),
            self.free_pages.eq(fl.count),
            self.obs.seq.eq(seq),
            self.obs.group.eq(grp),
            self.obs.live.eq(live),
            self.obs.alloc.eq(fl.alloc.valid & fl.alloc.ready),
            self.obs.alloc_page.eq(fl.alloc.payload),
            self.obs.alloc_sid.eq(sid(j)),
            self.obs.release.eq(fl.release.valid & fl.release.ready),
            self.obs.release_page.eq(fl.release.payload),
            self.obs.release_sid.eq(rel_sid),
            self.obs.free_done.eq(free_done_q),
            self.obs.free_seq.eq(cm.seq),
        ]
        free_done = Signal()
        m.d.sync += free_done_q.eq(free_done)

        # -- slots: j < H dense head j, j < 2H sparse head j-H, else metadata vector j-2H --
        def slot_split(k, select):
            """(dense, sparse, index, table) of slot ``k``: hardware with ``select = Mux``,
            Python values with a Python ``select`` for an integer ``k``."""
            dense = k < H
            sparse = (k >= H) & (k < 2 * H)
            return (dense, sparse, select(dense, k, select(sparse, k - H, k - 2 * H)),
                    select(dense, 0, select(sparse, 1, 2)))

        def slot_fields(k):
            dense, sparse, idx_v, tab_v = slot_split(k, Mux)
            idx = Signal(range(max(H, V)), name="slot_idx")
            tab = Signal(2, name="slot_tab")
            m.d.comb += [idx.eq(idx_v), tab.eq(tab_v)]
            return dense, sparse, idx, tab

        # The fields of slots j - 1, j and j + 1 are registers, loaded with j (set_j /
        # step_j), and so are slot rk's index and the captured slot's table: the table
        # addresses, a slot's counts and the records start from flip-flops, not from
        # compares and subtractions of j behind them (j -> its fields -> the table
        # addresses was one of the MMU's endpoints later than 10 ns at 89.2 MHz)
        def slot_regs(tag, k):
            # reset to the fields of slot k (j resets to 0)
            dense, sparse, idx, tab = slot_split(k, lambda c, a, b: a if c else b)
            idx_width = Shape.cast(range(max(H, V))).width
            return (Signal(name=f"{tag}_dense", init=dense),
                    Signal(name=f"{tag}_sparse", init=sparse),
                    Signal(idx_width, name=f"{tag}_idx", init=idx % (1 << idx_width)),
                    Signal(2, name=f"{tag}_tab", init=tab))

        def load_fields(regs, fields):
            return [r.eq(f) for r, f in zip(regs, fields)]

        j_prev, j_now, j_next = slot_regs("jp", -1), slot_regs("j", 0), slot_regs("jn", 1)
        jm1 = Signal.like(j, init=(1 << len(j)) - 1)    # j - 1: pg0's index of the slot

        def set_j(v):
            m.d.sync += [j.eq(v), jm1.eq(v - 1),
                         *load_fields(j_prev, slot_fields(v - 1)),
                         *load_fields(j_now, slot_fields(v)),
                         *load_fields(j_next, slot_fields(v + 1))]

        def step_j():
            m.d.sync += [j.eq(j + 1), jm1.eq(j),
                         *load_fields(j_prev, j_now), *load_fields(j_now, j_next),
                         *load_fields(j_next, slot_fields(j + 2))]

        is_dense, is_sparse, in_slot, slot_tab = j_now
        rk_idx = Signal(range(max(H, V)))   # slot rk's index
        rk_tab = Signal(2)
        cap1_tab = Signal(2)                # the table of slot cap1_k, cap2_k
        cap2_tab = Signal(2)
        d_new = (n & (L.dense_tpp - 1)) == 0
        m_new = (n & (L.meta_tpp - 1)) == 0

        def sparse_split(s_, c_):
            off = s_ & (P - 1)
            first_new = (c_ != 0) & (off == 0)
            second = (c_ != 0) & (off + c_ > P)
            return off, first_new, second, Mux(second, P - off, c_)

        s_cur, c_cur = sb[in_slot], counts[in_slot]
        s_off, _, s_second, _ = sparse_split(s_cur, c_cur)

        # checks of the append, from the group's word registered in A_LOOK
        need = Signal(range(S + 1))
        # per slot, in slot order: the append allocates the slot's first page (a_first) or
        # the second page of a sparse record that crosses a page (a_second); registered in
        # A_CHK. `need` counts the slots that allocate.
        first_terms, second_terms = [d_new] * H, [Const(0, 1)] * H
        for h in range(H):
            _, fn, sec, _ = sparse_split(sb[h], counts[h])
            first_terms.append(fn)
            second_terms.append(sec)
        first_terms += [m_new] * V
        second_terms += [Const(0, 1)] * V
        m.d.comb += need.eq(sum(f | s_ for f, s_ in zip(first_terms, second_terms)))
        # need <= free pages, as a compare of need's width: the count's upper bits only say
        # whether it is at least S (a compare of the full count behind the sum of the
        # slots' terms was the MMU's critical path)
        enough = Signal()
        low = len(need)
        m.d.comb += enough.eq((fl.count >= S) | (need <= fl.count[:low]))
        a_first = Signal(S)
        a_second = Signal(S)
        take_first = Signal()
        take_second = Signal()
        m.d.comb += [take_first.eq(a_first.bit_select(j, 1)),
                     take_second.eq(a_second.bit_select(j, 1))]
        em_free = Signal()
        em_ready = Signal()
        chk_pos = Signal()                  # A_CHK's results: BAD_POSITION, CAPACITY
        chk_cap = Signal()
        cap_bad = Signal()
        m.d.comb += cap_bad.eq((n >= L.max_tokens)
                               | Cat(*[sb[h] + counts[h] > L.sparse_capacity
                                       for h in range(H)]).any())
        field_bad = Signal()
        m.d.comb += field_bad.eq((ap.layer >= L.layers)
                                 | Cat(*[counts[h] > L.head_dim for h in range(H)]).any())

        # -- table ports --------------------------------------------------------------------
        # A table's address is the wires (gidx, stream index, entry): each group owns a
        # power-of-two block of streams and each stream a power-of-two block of entries
        # (MMULayout.table_strides), so no adder sits between the state machine's choice
        # of entry and the block RAM (a `base + stream * entries + entry` adder there was
        # the MMU's critical path). gidx is a register set when a command is accepted and
        # stepped by a free's walk. A stream index beyond a table's streams (a dense slot
        # seen by the metadata table) wraps: that read is never used.
        t_idx = Signal(range(max(H, V)))    # stream within the group of the table reads
        m.d.comb += t_idx.eq(in_slot)
        r_entry = {t: Signal(range(t.entries), name=f"{k}_r_entry") for t, k in named}
        w_entry = {t: Signal(range(t.entries), name=f"{k}_w_entry") for t, k in named}
        for tab, k in named:
            stream_bits = (strides[k][0] - 1).bit_length()
            m.d.comb += [tab.r_addr.eq(Cat(r_entry[tab], t_idx[:stream_bits], gidx)),
                         tab.w_addr.eq(Cat(w_entry[tab], in_slot[:stream_bits], gidx)),
                         tab.w_data.eq(fl.alloc.payload)]
        tab_data = Array([dtab.r_data, stab.r_data, mtab.r_data])
        # A free's releases leave through a register stage (rel_*): a page read from a table
        # goes straight into a register, not on to the free list's ring. The stage drains by
        # itself (a release is taken the cycle after it is registered, as the ring is never
        # full while a page is owned), so obs.free_done, which follows the walk's last
        # release, is registered as well.
        m.d.comb += [fl.release.valid.eq(rel_v), fl.release.payload.eq(tab_data[rel_tab])]
        with m.If(fl.release.ready):
            m.d.sync += rel_v.eq(0)
        # the tables' output registers advance unless the release stage holds a page that
        # the free list does not take (R_EMIT: unless the burst waits)
        tab_en = Signal()
        m.d.comb += tab_en.eq(~rel_v | fl.release.ready)
        for tab in tables:
            m.d.comb += tab.r_en.eq(tab_en)

        def accept_group(seq_, g_):
            """A command of group ``g_`` of sequence ``seq_`` starts: its word is read now
            and registered next cycle; gidx and the table bases are set."""
            m.d.comb += gs_rd.addr.eq(group_row(seq_, g_))
            m.d.sync += gidx.eq(group_row(seq_, g_))

        def next_group():
            """The free walks on to group ``gidx + 1``, whose word the walk has been reading."""
            load_group_word()
            m.d.sync += [gidx.eq(gidx1), gidx1.eq(gidx1 + 1)]

        # -- response -----------------------------------------------------------------------
        rec = Signal(record_layout(L))
        rec_valid = Signal()
        m.d.comb += [
            self.wr_out.payload.eq(rec), self.rd_out.payload.eq(rec),
            self.wr_out.valid.eq(rec_valid & ~from_cmd),
            self.rd_out.valid.eq(rec_valid & from_cmd),
        ]
        rec_ready = Mux(from_cmd, self.rd_out.ready, self.wr_out.ready)

        def page_addr(page, offset):
            return Cat(Const(0, shift), page) | offset

        def emit_status(code):
            m.d.sync += status.eq(code)
            m.next = "STATUS"

        # read command quantities
        r_sparse = cm.kind == Kind.SPARSE
        r_meta = cm.kind == Kind.META
        r_idx = Signal(range(max(H, V)))
        m.d.comb += r_idx.eq(Mux(r_meta, 0, cm.head) if V == 1 else cm.head)

        def r_bytes(tokens_or_bytes):
            return Mux(r_sparse, tokens_or_bytes,
                       Mux(r_meta, tokens_or_bytes << (L.meta_slot.bit_length() - 1),
                           tokens_or_bytes << (L.dense_slot.bit_length() - 1)))

        r_tab = Mux(r_sparse, 1, Mux(r_meta, 2, 0))
        limit = Signal(L.range_bits)        # a read's bounds: what was written, its end
        hi = Signal(L.range_bits)

        def dense_pages(tokens):
            return (tokens + L.dense_tpp - 1) >> (L.dense_tpp.bit_length() - 1)

        def meta_pages(tokens):
            return (tokens + L.meta_tpp - 1) >> (L.meta_tpp.bit_length() - 1)

        # The page count of every stream of the group, registered a cycle after the group's
        # word (n, sb): a free's walk (F_CNT, F_WALK) picks a register by slot, with no
        # adder between the slot counter and the walk's next step. F_GRP, which every
        # group of a free passes through, gives them that cycle.
        d_pages = Signal.like(npg)
        m_pages = Signal.like(npg)
        s_pages = Array(Signal.like(npg, name=f"s_pages{h}") for h in range(H))
        has_pages = Signal(S)               # per slot: the stream has a page
        m.d.sync += [d_pages.eq(dense_pages(n)), m_pages.eq(meta_pages(n)),
                     has_pages.eq(Cat(*([n != 0] * H + [sb[h] != 0 for h in range(H)]
                                        + [n != 0] * V)))]
        m.d.sync += [s_pages[h].eq((sb[h] + P - 1) >> shift) for h in range(H)]

        def slot_pages(dense, sparse, idx):
            """The registered page count of a slot, from its :func:`slot_fields`."""
            return Mux(dense, d_pages, Mux(sparse, s_pages[idx], m_pages))

        def free_next_slot():
            with m.If(j == S - 1):
                with m.If(fg == G - 1):
                    m.d.comb += free_done.eq(1)
                    m.d.sync += [live.bit_select(cm.seq, 1).eq(0), retry.eq(1)]
                    emit_status(Status.OK)
                with m.Else():
                    next_group()
                    m.d.sync += fg.eq(fg + 1)
                    m.next = "F_GRP"
            with m.Else():
                step_j()
                m.next = "F_CNT"

        d_entry = n >> (L.dense_tpp.bit_length() - 1)
        m_entry = n >> (L.meta_tpp.bit_length() - 1)

        def append_read(k):
            """Address slot ``k``'s current entry in its table (``k`` = S: nothing) and
            capture the entry addressed two cycles before into ``pg0[cap2_k]``.

            The dense and metadata entries come from ``ap.pos`` (a register from acceptance
            on), which equals the token count ``n`` whenever the append goes on past
            ``A_CHK``; the sparse entries need ``sb``, registered in ``A_LOOK``, and sparse
            slots (``k >= H``) are addressed from ``A_CHK`` on."""
            if isinstance(k, int):
                _, _, k_idx, k_tab = slot_fields(k)
            else:
                k_idx, k_tab = rk_idx, rk_tab
            m.d.comb += [r_entry[dtab].eq(ap.pos >> (L.dense_tpp.bit_length() - 1)),
                         r_entry[mtab].eq(ap.pos >> (L.meta_tpp.bit_length() - 1)),
                         r_entry[stab].eq(sb[k_idx] >> shift), t_idx.eq(k_idx)]
            m.d.sync += [cap1_k.eq(k), cap1.eq(k != S), cap2_k.eq(cap1_k), cap2.eq(cap1),
                         cap1_tab.eq(k_tab), cap2_tab.eq(cap1_tab)]
            _, _, k1_idx, k1_tab = slot_fields(k + 1)
            if not isinstance(k, int):
                with m.If(k != S):
                    m.d.sync += [rk.eq(k + 1), rk_idx.eq(k1_idx), rk_tab.eq(k1_tab)]
            else:
                m.d.sync += [rk.eq(k + 1), rk_idx.eq(k1_idx), rk_tab.eq(k1_tab)]
            with m.If(cap2):
                m.d.sync += pg0[cap2_k].eq(tab_data[cap2_tab])

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += [frag.eq(0), cap1.eq(0), cap2.eq(0)]
                set_j(0)
                with m.If(~ready):
                    pass                # initialising after reset: nothing is accepted
                with m.Elif(self.cmd.valid):
                    m.d.comb += self.cmd.ready.eq(1)
                    c_ = self.cmd.payload
                    m.d.sync += [cm.eq(c_), from_cmd.eq(1), fg.eq(0)]
                    accept_group(c_.seq, Mux(c_.op == Op.FREE, 0, Cat(c_.kv, c_.layer)))
                    m.next = "C_LOOK"
                with m.Elif(pending):
                    with m.If(retry):
                        m.d.sync += [from_cmd.eq(0), retry.eq(0)]
                        accept_group(ap.seq, Cat(ap.kv, ap.layer))
                        m.next = "A_LOOK"
                with m.Elif(self.append.valid):
                    m.d.comb += self.append.ready.eq(1)
                    a_ = self.append.payload
                    m.d.sync += [ap.eq(a_), from_cmd.eq(0)]
                    accept_group(a_.seq, Cat(a_.kv, a_.layer))
                    m.next = "A_LOOK"

            # ---------------------------------------------------------------- append
            with m.State("A_LOOK"):
                # the group's word (read at acceptance) is registered; the field checks need
                # no memory
                load_group_word()
                append_read(0)
                with m.If(ap.seq >= L.sequences):
                    emit_status(Status.UNKNOWN_SEQ)
                with m.Elif(field_bad):
                    emit_status(Status.BAD_FIELD)
                with m.Else():
                    m.next = "A_CHK"
            with m.State("A_CHK"):
                # the checks are computed from the group word's registers and registered;
                # A_RUN acts on them in its first cycle (j = 0, which emits nothing), so
                # that the sums and compares do not feed the state machine directly
                append_read(rk)
                m.d.sync += [chk_pos.eq(ap.pos != n), chk_cap.eq(cap_bad),
                             em_free.eq((ap.pos == n) & ~cap_bad & enough),
                             frag.eq(0), em_ready.eq(0),
                             a_first.eq(Cat(*first_terms)), a_second.eq(Cat(*second_terms))]
                set_j(0)
                m.next = "A_RUN"
            with m.State("A_RUN"):
                # A two-stage pipeline over the slots: the page of slot j is resolved
                # (allocated, or read from its table) while the records of slot j-1 are
                # emitted; an output stall or a second sparse fragment holds the resolve.
                pd, ps_, pidx, ptab = j_prev
                p_page = pg0[jm1]
                # the table reads run ahead (see rk): slot rk is addressed, slot cap_k lands
                append_read(rk)
                # slot j-1's sparse split, registered when slot j-1 was resolved, so that
                # its record is not computed from sb and counts on the output path
                p_off = Signal(range(P), name="p_off")
                p_second = Signal(name="p_second")
                p_c_nz = Signal(name="p_c_nz")
                p_first_len = Signal(range(P + 1), name="p_first_len")
                p_second_len = Signal(range(P + 1), name="p_second_len")
                _, _, _, s_first_len = sparse_split(s_cur, c_cur)
                # c - first_len is c + off - P when the record crosses a page, else 0: one
                # sum beside the crossing test instead of a subtraction behind it (the
                # chain in_slot -> sum -> compare -> first_len -> difference reached 12.6 ns
                # in the engine, session 19)
                s_second_len = Mux(s_second, s_off + c_cur - P, 0)
                # slot j-1 is done with this cycle: em_free / em_ready (registers) say
                # whether it is regardless of the output's ready, or with it (wr_out's: an
                # append is never from `cmd`, so rd_out's ready stays off this path)
                emitted = Signal()
                m.d.comb += emitted.eq(em_free | (em_ready & self.wr_out.ready))
                with m.If(j == 0):
                    # the checks of A_CHK (em_free: all passed)
                    with m.If(~em_free):
                        with m.If(chk_pos):
                            emit_status(Status.BAD_POSITION)
                        with m.Elif(chk_cap):
                            emit_status(Status.CAPACITY)
                        with m.Else():
                            # hold the append; `cmd` keeps being served so a free can
                            # unstall it
                            m.d.sync += pending.eq(1)
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += pending.eq(0)
                with m.Elif(pd):
                    m.d.comb += [
                        rec_valid.eq(1), rec.kind.eq(Kind.DENSE), rec.head.eq(pidx),
                        rec.addr.eq(page_addr(p_page, (n & (L.dense_tpp - 1)) * L.dense_slot)),
                        rec.length.eq(L.dense_bytes),
                    ]
                with m.Elif(ps_):
                    m.d.comb += [rec.kind.eq(Kind.SPARSE), rec.head.eq(pidx)]
                    with m.If(~frag):
                        m.d.comb += [rec_valid.eq(p_c_nz),
                                     rec.addr.eq(page_addr(p_page, p_off)),
                                     rec.length.eq(p_first_len)]
                        with m.If(self.wr_out.ready & p_second):
                            m.d.sync += [frag.eq(1), em_ready.eq(1)]
                    with m.Else():
                        m.d.comb += [rec_valid.eq(1),
                                     rec.addr.eq(page_addr(pg1[pidx], 0)),
                                     rec.length.eq(p_second_len)]
                with m.Else():
                    m.d.comb += [
                        rec_valid.eq(1), rec.kind.eq(Kind.META), rec.head.eq(pidx),
                        rec.addr.eq(page_addr(p_page, (n & (L.meta_tpp - 1)) * L.meta_slot)),
                        rec.length.eq(L.meta_bytes),
                    ]

                # slot j's entries written by an allocation
                s_entry = s_cur >> shift
                m.d.comb += [w_entry[dtab].eq(d_entry), w_entry[mtab].eq(m_entry),
                             w_entry[stab].eq(Mux(take_second, s_entry + 1, s_entry))]
                with m.If(emitted):
                    step_j()
                    m.d.sync += [frag.eq(0),
                                 p_off.eq(s_off), p_second.eq(s_second), p_c_nz.eq(c_cur != 0),
                                 p_first_len.eq(s_first_len),
                                 p_second_len.eq(s_second_len),
                                 # slot j's emission: a sparse slot with no bytes has no
                                 # record, one that crosses a page waits for its fragments
                                 em_free.eq(is_sparse & (c_cur == 0)),
                                 em_ready.eq(~is_sparse | ((c_cur != 0) & ~s_second))]
                    with m.If(j == S):
                        # commit the counters; the tables and free list are already done
                        m.d.comb += [gs_wr.en.eq(1), gs_wr.data.n.eq(n + 1)]
                        m.d.comb += [gs_wr.data.sb[h].eq(sb[h] + counts[h]) for h in range(H)]
                        m.d.sync += live.bit_select(ap.seq, 1).eq(1)
                        emit_status(Status.OK)
                    with m.Elif(take_first | take_second):
                        # the allocation decisions were registered in A_CHK (a_first,
                        # a_second), so the free list's pop depends on registers and ready
                        m.d.comb += fl.alloc.ready.eq(1)
                        with m.If(is_dense):
                            m.d.comb += dtab.w_en.eq(1)
                        with m.Elif(is_sparse):
                            m.d.comb += stab.w_en.eq(1)
                        with m.Else():
                            m.d.comb += mtab.w_en.eq(1)
                        with m.If(take_second):
                            m.d.sync += pg1[in_slot].eq(fl.alloc.payload)
                        with m.Else():
                            m.d.sync += pg0[j].eq(fl.alloc.payload)

            # ---------------------------------------------------------------- cmd
            with m.State("C_LOOK"):
                load_group_word()       # for a read's range check (a free reloads it)
                m.d.sync += gidx1.eq(gidx + 1)      # a free's next group
                # a read's first entry is addressed already (from cm and the bases only)
                lo_e = r_bytes(cm.lo) >> shift
                for t in tables:
                    m.d.comb += r_entry[t].eq(lo_e)
                m.d.comb += t_idx.eq(r_idx)
                set_e(lo_e)
                with m.If((cm.seq >= L.sequences) | ~live.bit_select(cm.seq, 1)):
                    emit_status(Status.UNKNOWN_SEQ)
                with m.Elif(cm.op == Op.FREE):
                    m.next = "F_GRP"
                with m.Elif((cm.layer >= L.layers) | (cm.head >= H)
                            | (cm.kind == Kind.STATUS)):
                    emit_status(Status.BAD_FIELD)
                with m.Else():
                    m.next = "R_LIM"
            with m.State("R_LIM"):
                # the range's bounds are registered (the group word's registers -> the head's
                # mux -> the bounds' muxes -> the range compares -> the state and status
                # enables was one chain, 10.1-10.4 ns in session 21); entry e is addressed
                # again, so that R_CHK finds the table's pipeline as C_LOOK left it
                r_lim = Mux(r_sparse, sb[cm.head[:max(1, (H - 1).bit_length())]], n)
                # a sparse read with an all-ones hi reads to the end of what was written
                m.d.sync += [limit.eq(r_lim),
                             hi.eq(Mux(r_sparse & (cm.hi == L.to_end), r_lim, cm.hi))]
                for t in tables:
                    m.d.comb += r_entry[t].eq(e)
                m.d.comb += t_idx.eq(r_idx)
                m.next = "R_CHK"
            with m.State("R_CHK"):
                lo_b = r_bytes(cm.lo)
                m.d.sync += [r_left.eq(r_bytes(hi) - lo_b), r_off.eq(lo_b & (P - 1)),
                             r_room.eq(P - (lo_b & (P - 1)))]
                set_j(r_tab)
                # entry e is in the memory's read register, e + 1 is addressed
                for t in tables:
                    m.d.comb += r_entry[t].eq(e1)
                m.d.comb += t_idx.eq(r_idx)
                with m.If((cm.lo > hi) | (hi > limit)):
                    emit_status(Status.BAD_RANGE)
                with m.Elif(cm.lo == hi):
                    emit_status(Status.OK)
                with m.Else():
                    m.next = "R_EMIT"
            with m.State("R_EMIT"):
                # entry e is on the table's output register, e + 1 in the memory's read
                # register; when the burst leaves, both advance and e + 2 is addressed, and
                # while it waits they hold (the output register's enable) and e + 1 is
                # addressed again
                last_burst = r_left <= r_room
                length = Mux(last_burst, r_left, r_room)
                m.d.comb += [
                    rec_valid.eq(1),
                    rec.kind.eq(cm.kind), rec.head.eq(r_idx),
                    rec.addr.eq(page_addr(tab_data[j[:2]], r_off)),
                    rec.length.eq(length),
                    t_idx.eq(r_idx),
                ]
                # (rd_out's ready, not rec_ready: a read is always from `cmd`, and wr_out's
                # ready need not reach the block RAMs' address)
                rd_ready = self.rd_out.ready
                for t in tables:
                    m.d.comb += r_entry[t].eq(Mux(rd_ready, e2, e1))
                m.d.comb += tab_en.eq(rd_ready)
                with m.If(rd_ready):
                    # every burst after the first starts a page. What is left is
                    # r_left - r_room, or nothing after the last burst: the subtraction runs
                    # beside the compare, not behind it and the length's mux (that chain
                    # into r_left reached 11.2-11.9 ns in the engine, session 19)
                    m.d.sync += [r_left.eq(Mux(last_burst, 0, r_left - r_room)),
                                 r_off.eq(0), r_room.eq(P)]
                    step_e()
                    with m.If(last_burst):
                        emit_status(Status.OK)

            # ---------------------------------------------------------------- free
            with m.State("F_GRP"):
                # the group's word is in its registers (from C_LOOK for the first group, from
                # the walk's read ahead for the next ones); its page counts register now
                set_j(0)
                m.next = "F_CNT"
            with m.State("F_CNT"):
                # the walk reads the next group's word all along: it is on gs_rd.data from
                # the group's second cycle on, and a group takes at least S > 1 cycles
                m.d.comb += gs_rd.addr.eq(gidx1)
                # one cycle per stream: its page count, and the read of its entry 0
                with m.If(j == 0):
                    # zero the group's counters: this invalidates all of its entries
                    m.d.comb += [gs_wr.en.eq(1), gs_wr.data.eq(0)]
                for t in tables:
                    m.d.comb += r_entry[t].eq(0)
                m.d.sync += npg.eq(slot_pages(is_dense, is_sparse, in_slot))
                set_e(0)
                with m.If(~has_pages.bit_select(j, 1)):
                    free_next_slot()
                with m.Else():
                    m.next = "F_WALK"
            with m.State("F_WALK"):
                m.d.comb += gs_rd.addr.eq(gidx1)
                # the release stage takes this stream's page e (it is free or drains now)
                adv = Signal()
                m.d.comb += adv.eq(~rel_v | fl.release.ready)
                # the next stream of the group, prefetched during this one's last page so
                # that the walk goes on without a bubble. The address does not wait for
                # k_cnt: when the next stream is empty (or there is none) the read is unused,
                # as F_CNT reads the entry 0 of its stream again.
                k_dense, k_sparse, k_idx, _ = j_next
                last = e1 == npg
                for t in tables:
                    m.d.comb += r_entry[t].eq(Mux(adv, Mux(last, 0, e1), e))
                with m.If(adv & last):
                    m.d.comb += t_idx.eq(k_idx)
                # the next slot has pages (none after the last slot)
                k_has = Cat(has_pages[1:], Const(0, 1)).bit_select(j, 1)
                with m.If(adv):
                    # page e is in the memory's read register: it moves to the table's
                    # output register, where the release stage takes it next cycle
                    m.d.sync += [rel_v.eq(1), rel_tab.eq(slot_tab), rel_sid.eq(sid(j))]
                    step_e()
                    with m.If(last):
                        with m.If(k_has):
                            step_j()
                            m.d.sync += npg.eq(slot_pages(k_dense, k_sparse, k_idx))
                            set_e(0)
                        with m.Else():
                            free_next_slot()

            with m.State("STATUS"):
                m.d.comb += [rec_valid.eq(1), rec.kind.eq(Kind.STATUS), rec.status.eq(status)]
                with m.If(~from_cmd):
                    # a held append that ends in an error is done with, too
                    m.d.sync += pending.eq(0)
                with m.If(rec_ready):
                    m.next = "IDLE"

        # the walk shares the group state's write port: the FSM stays in IDLE, which never
        # writes it, until the walk is done
        with m.If(~gs_done):
            m.d.comb += [gs_wr.addr.eq(gs_walk), gs_wr.data.eq(0), gs_wr.en.eq(1)]
        return m
