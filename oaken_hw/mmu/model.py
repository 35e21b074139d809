"""Golden model of the MMU: the specification that the RTL matches bit for bit.

The model is a transaction-level description: each command is applied atomically and returns
the list of response records the RTL emits for it, the last one being the ``STATUS`` record.
An append that lacks free pages returns :data:`STALL` and changes nothing; the RTL holds it
and raises ``out_of_pages`` until a free returns enough pages.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from .layout import Kind, MMULayout, Status

__all__ = ["Record", "STALL", "MMUModel"]


class Record(NamedTuple):
    """One response record: a burst ``[addr, addr + length)`` inside one page, or a status."""

    kind: int
    head: int
    addr: int
    length: int
    status: int = Status.OK


#: Returned by :meth:`MMUModel.append` when the pool has too few free pages.
STALL = None


def _status(code):
    return [Record(Kind.STATUS, 0, 0, 0, int(code))]


class MMUModel:
    """The page-table MMU as plain Python.

    Parameters
    ----------
    cfg : OakenConfig
        The configuration (sizes from ``cfg.mmu`` and the model geometry).

    Attributes
    ----------
    layout : MMULayout
        Derived sizes, shared with the RTL.
    free : collections.deque of int
        The free list, head first: pages are allocated from the left and returned on the
        right. It starts as ``0, 1, ..., pages - 1``.
    live : list of bool
        Per sequence: appended to since its last free.
    tokens : list of list of int
        ``tokens[seq][group]``: tokens appended to the group (all its streams).
    sbytes : list of list of list of int
        ``sbytes[seq][group][head]``: bytes in the head's sparse stream (its running offset).
    tables : dict of str to list
        ``tables[kind][seq][group][head]``: the pages of one stream in logical order, for
        ``kind`` in ``"dense"``, ``"sparse"``, ``"meta"``.
    """

    def __init__(self, cfg):
        self.layout = L = MMULayout(cfg)
        self.free = deque(range(L.pages))
        self.live = [False] * L.sequences
        self.tokens = [[0] * L.groups for _ in range(L.sequences)]
        self.sbytes = [[[0] * L.heads for _ in range(L.groups)] for _ in range(L.sequences)]
        per = {"dense": L.heads, "sparse": L.heads, "meta": L.vectors}
        self.tables = {k: [[[[] for _ in range(n)] for _ in range(L.groups)]
                           for _ in range(L.sequences)] for k, n in per.items()}

    # -- helpers -------------------------------------------------------------------------------
    def _fits(self, name, value, bits):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise ValueError(f"{name} must be an integer in [0, {(1 << bits) - 1}] (the port "
                             f"field is {bits} bits), not {value!r}")

    def _addr(self, page, offset):
        return (page << self.layout.page_shift) | offset

    def _bursts(self, table, kind, head, lo, hi):
        P = self.layout.page_bytes
        out = []
        while lo < hi:
            entry, off = divmod(lo, P)
            n = min(P - off, hi - lo)
            out.append(Record(int(kind), head, self._addr(table[entry], off), n))
            lo += n
        return out

    @property
    def owned(self):
        """``{page: (seq, group, kind, head)}`` of every page held by a stream."""
        own = {}
        for kind, t in self.tables.items():
            for s, groups in enumerate(t):
                for g, heads in enumerate(groups):
                    for h, pages in enumerate(heads):
                        for p in pages:
                            assert p not in own, f"page {p} owned twice"
                            own[p] = (s, g, kind, h)
        return own

    def pages_needed(self, seq, layer, kv, counts):
        """New pages an append of ``counts`` to ``(seq, layer, kv)`` takes."""
        L = self.layout
        g = 2 * layer + kv
        n = self.tokens[seq][g]
        need = 0
        for h in range(L.heads):
            need += n % L.dense_tpp == 0
            s, c = self.sbytes[seq][g][h], counts[h]
            need += -(-(s + c) // L.page_bytes) > -(-s // L.page_bytes)
        need += L.vectors * (n % L.meta_tpp == 0)
        return need

    # -- commands ------------------------------------------------------------------------------
    def append(self, seq, layer, kv, pos, counts):
        """Append one token of ``(seq, layer, kv)``.

        Parameters
        ----------
        seq, layer, kv : int
            The group (``kv`` 0 for K, 1 for V).
        pos : int
            Token position; must equal the tokens already appended to the group.
        counts : sequence of int
            Sparse bytes of each head (0 .. ``head_dim``).

        Returns
        -------
        list of Record or STALL
            In the canonical slot order: the dense slot of every head; the sparse bytes of
            every head (one record, two when they cross a page, none when the count is 0);
            one metadata record per vector; then the status. New pages are taken from the
            free list in the same order. :data:`STALL` when the pool has too few pages.
        """
        L = self.layout
        self._fits("seq", seq, L.seq_bits)
        self._fits("layer", layer, L.layer_bits)
        self._fits("kv", kv, 1)
        self._fits("pos", pos, L.token_bits)
        if len(counts) != L.heads:
            raise ValueError(f"counts must have one entry per head ({L.heads}), "
                             f"not {len(counts)}")
        for c in counts:
            self._fits("counts[]", c, L.count_bits)

        if seq >= L.sequences:
            return _status(Status.UNKNOWN_SEQ)
        if layer >= L.layers or any(c > L.head_dim for c in counts):
            return _status(Status.BAD_FIELD)
        g = 2 * layer + kv
        n = self.tokens[seq][g]
        if pos != n:
            return _status(Status.BAD_POSITION)
        if n >= L.max_tokens or any(self.sbytes[seq][g][h] + counts[h] > L.sparse_capacity
                                    for h in range(L.heads)):
            return _status(Status.CAPACITY)
        if self.pages_needed(seq, layer, kv, counts) > len(self.free):
            return STALL

        P = L.page_bytes
        out = []
        for h in range(L.heads):
            dense = self.tables["dense"][seq][g][h]
            if n % L.dense_tpp == 0:
                dense.append(self.free.popleft())
            out.append(Record(Kind.DENSE, h,
                              self._addr(dense[-1], (n % L.dense_tpp) * L.dense_slot),
                              L.dense_bytes))
        for h in range(L.heads):
            sparse = self.tables["sparse"][seq][g][h]
            s, c = self.sbytes[seq][g][h], counts[h]
            if c:
                if s % P == 0:
                    sparse.append(self.free.popleft())
                first = min(c, P - s % P)
                out.append(Record(Kind.SPARSE, h, self._addr(sparse[-1], s % P), first))
                if first < c:
                    sparse.append(self.free.popleft())
                    out.append(Record(Kind.SPARSE, h, self._addr(sparse[-1], 0), c - first))
            self.sbytes[seq][g][h] = s + c
        for v in range(L.vectors):
            meta = self.tables["meta"][seq][g][v]
            if n % L.meta_tpp == 0:
                meta.append(self.free.popleft())
            out.append(Record(Kind.META, v,
                              self._addr(meta[-1], (n % L.meta_tpp) * L.meta_slot),
                              L.meta_bytes))
        self.tokens[seq][g] = n + 1
        self.live[seq] = True
        return out + _status(Status.OK)

    def read(self, seq, layer, kv, head, kind, lo, hi):
        """Translate a range of one head's stream into page-bounded bursts.

        Parameters
        ----------
        seq, layer, kv, head : int
            The stream's group and head (for ``META`` the head whose vector is read).
        kind : int
            :class:`Kind` ``DENSE``, ``SPARSE`` or ``META``.
        lo, hi : int
            Half-open range: tokens for ``DENSE`` and ``META``, bytes of the head's sparse
            stream for ``SPARSE`` (the reader sums the per-block counts of the metadata).
            For ``SPARSE``, ``hi`` = :attr:`MMULayout.to_end` (all ones) means the bytes
            written so far: the read covers ``[lo, sbytes)``. Other kinds give it no
            meaning (it is out of range unless it is a legal token count).

        Returns
        -------
        list of Record
            Bursts in logical order, then the status. Dense and metadata bursts cover whole
            slots (``dense_slot``, ``meta_slot`` bytes per token).
        """
        L = self.layout
        for name, value, bits in (("seq", seq, L.seq_bits), ("layer", layer, L.layer_bits),
                                  ("kv", kv, 1), ("head", head, L.head_bits),
                                  ("kind", kind, 2), ("lo", lo, L.range_bits),
                                  ("hi", hi, L.range_bits)):
            self._fits(name, value, bits)
        if seq >= L.sequences or not self.live[seq]:
            return _status(Status.UNKNOWN_SEQ)
        if layer >= L.layers or head >= L.heads or kind == Kind.STATUS:
            return _status(Status.BAD_FIELD)
        g = 2 * layer + kv
        if kind == Kind.SPARSE:
            limit, unit, idx = self.sbytes[seq][g][head], 1, head
            table = self.tables["sparse"][seq][g][head]
            if hi == L.to_end:
                hi = limit
        else:
            idx = head if kind == Kind.DENSE else L.meta_vector(head)
            limit = self.tokens[seq][g]
            unit = L.dense_slot if kind == Kind.DENSE else L.meta_slot
            table = self.tables["dense" if kind == Kind.DENSE else "meta"][seq][g][idx]
        if lo > hi or hi > limit:
            return _status(Status.BAD_RANGE)
        return self._bursts(table, kind, idx, lo * unit, hi * unit) + _status(Status.OK)

    def free_sequence(self, seq):
        """Release every page of ``seq`` to the free list and invalidate its entries.

        Pages are returned group by group (``g = layer * 2 + kv``), and inside a group stream
        by stream in the canonical slot order, each stream's pages in logical order.
        """
        L = self.layout
        self._fits("seq", seq, L.seq_bits)
        if seq >= L.sequences or not self.live[seq]:
            return _status(Status.UNKNOWN_SEQ)
        for g in range(L.groups):
            for kind in ("dense", "sparse", "meta"):
                for pages in self.tables[kind][seq][g]:
                    self.free.extend(pages)
                    pages.clear()
            self.tokens[seq][g] = 0
            self.sbytes[seq][g] = [0] * L.heads
        self.live[seq] = False
        return _status(Status.OK)

    def check_invariants(self):
        """Assert the properties the formal proofs establish for the RTL."""
        L = self.layout
        own = self.owned
        assert not set(own) & set(self.free), "a page is both free and owned"
        assert len(own) + len(self.free) == L.pages, "pages lost or duplicated"
        assert len(set(self.free)) == len(self.free), "free list holds a page twice"
        for s in range(L.sequences):
            for g in range(L.groups):
                n = self.tokens[s][g]
                for h in range(L.heads):
                    assert len(self.tables["dense"][s][g][h]) == -(-n // L.dense_tpp)
                    b = self.sbytes[s][g][h]
                    assert len(self.tables["sparse"][s][g][h]) == -(-b // L.page_bytes)
                for v in range(L.vectors):
                    assert len(self.tables["meta"][s][g][v]) == -(-n // L.meta_tpp)
