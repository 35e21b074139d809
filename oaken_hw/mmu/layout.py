"""Geometry of the MMU: streams, slots, table sizes and the command/response encodings.

Everything here is derived from an :class:`~oaken_hw.config.OakenConfig` and is shared by the
golden model (:mod:`oaken_hw.mmu.model`) and the RTL (:mod:`oaken_hw.mmu.mmu`), so that the two
cannot disagree on a size or a code.
"""

from __future__ import annotations

import enum
import math

from ..config import OakenConfig

__all__ = ["Status", "Kind", "Op", "MMULayout"]


class Status(enum.IntEnum):
    """Completion status of a command (the ``status`` field of the ``STATUS`` record).

    Checks are made in this order; the first that fails decides the status, and a command
    that fails changes no state.
    """

    OK = 0
    #: Sequence id >= ``mmu.sequences``; or a read or free of a sequence that is not live
    #: (a double free lands here).
    UNKNOWN_SEQ = 1
    #: Layer >= ``model.layers``, head >= ``model.kv_heads``, read kind not a data stream,
    #: or a sparse count > ``head_dim``.
    BAD_FIELD = 2
    #: Append position is not the number of tokens already written (skips ahead or rewrites).
    BAD_POSITION = 3
    #: Read range with ``lo > hi`` or ``hi`` beyond what was written.
    BAD_RANGE = 4
    #: The append would exceed ``max_tokens`` or the head's sparse table (``sparse_pages``).
    CAPACITY = 5


class Kind(enum.IntEnum):
    """What a response record describes (and which stream a read asks for)."""

    DENSE = 0
    SPARSE = 1
    META = 2
    #: The last record of every command; carries the status, address and length 0.
    STATUS = 3


class Op(enum.IntEnum):
    """Operation of a command on the ``cmd`` port (appends have their own port)."""

    READ = 0
    FREE = 1


def _bits(n):
    """Bits of an unsigned value in ``0 .. n``."""
    return max(1, int(n).bit_length())


def _pow2_ceil(n):
    return 1 << max(0, (int(n) - 1).bit_length())


class MMULayout:
    """Derived sizes of the MMU for one configuration.

    Three kinds of stream per ``(sequence, layer, K/V)`` *group*: one dense and one sparse
    stream per KV head, and one metadata stream per quantization vector (one per group in
    scope ``"layer"``, one per head in scope ``"head"``).

    Parameters
    ----------
    cfg : OakenConfig
        The configuration.

    Attributes
    ----------
    groups : int
        ``layers * 2`` (K and V); group ``g`` is ``layer * 2 + kv``.
    group_stride, group_rows : int
        Rows of one sequence in the group state and in the tables' group blocks (``groups``
        rounded up to a power of two), and of all sequences (``sequences * group_stride``):
        the row of group ``g`` of sequence ``seq`` is ``seq * group_stride + g``, the wires
        ``(seq, layer, kv)``.
    heads, vectors : int
        Dense/sparse streams and metadata streams per group.
    page_bytes, page_shift, pages, page_bits : int
        Page geometry; page ``p`` covers bytes ``[p * page_bytes, (p + 1) * page_bytes)``.
    dense_bytes, dense_slot, dense_tpp, dense_entries : int
        Bytes of one token of one head in the dense stream, the power-of-two slot that holds
        it, tokens per page, and page-table entries per dense stream.
    meta_bytes, meta_slot, meta_tpp, meta_entries : int
        The same for the metadata stream.
    sparse_entries : int
        Page-table entries per sparse stream; ``sparse_capacity`` is their bytes.
    to_end : int
        ``(1 << range_bits) - 1``, all ones in a read's ``hi``: a ``SPARSE`` read with this
        ``hi`` reads up to the bytes written so far in the head's sparse stream. It is never
        a byte count (it is odd and above ``sparse_capacity``, which is even).
    slots : int
        Streams per group, in the MMU's canonical order: dense heads, sparse heads, metadata
        vectors (``2 * heads + vectors``). Allocation, response and free order follow it.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, OakenConfig):
            raise ValueError(f"cfg must be an OakenConfig, not {cfg!r}")
        self.cfg = cfg
        m, g, q = cfg.mmu, cfg.model, cfg.quant
        self.sequences = m.sequences
        self.layers = g.layers
        self.groups = 2 * g.layers
        self.heads = g.kv_heads
        self.head_dim = g.head_dim
        self.vectors = cfg.vectors_per_token
        self.max_tokens = m.max_tokens
        self.pages = m.pages
        self.page_bits = _bits(m.pages - 1)
        self.page_bytes = m.page_bytes
        self.page_shift = m.page_bytes.bit_length() - 1

        if (g.head_dim * q.middle_bits) % 8:
            raise ValueError(f"model.head_dim x quant.middle_bits must fill whole bytes so that "
                             f"each head's dense data is separable, not "
                             f"{g.head_dim} x {q.middle_bits}")
        self.dense_bytes = g.head_dim * q.middle_bits // 8
        self.meta_bytes = cfg.meta_bytes
        # power-of-two slots: a token never straddles a page, and address = page | offset
        self.dense_slot = _pow2_ceil(self.dense_bytes)
        self.meta_slot = _pow2_ceil(self.meta_bytes)
        for name, slot in (("dense", self.dense_slot), ("metadata", self.meta_slot)):
            if slot > m.page_bytes:
                raise ValueError(f"mmu.page_bytes ({m.page_bytes}) must hold one {name} slot "
                                 f"of {slot} bytes")
        if g.head_dim > m.page_bytes:
            raise ValueError(f"mmu.page_bytes ({m.page_bytes}) must be >= model.head_dim "
                             f"({g.head_dim}), the most sparse bytes of one head and token")
        self.dense_tpp = m.page_bytes // self.dense_slot
        self.meta_tpp = m.page_bytes // self.meta_slot
        self.dense_entries = math.ceil(m.max_tokens / self.dense_tpp)
        self.meta_entries = math.ceil(m.max_tokens / self.meta_tpp)
        self.sparse_entries = m.sparse_pages
        self.sparse_capacity = m.sparse_pages * m.page_bytes
        self.slots = 2 * self.heads + self.vectors

        # field widths of the ports
        self.seq_bits = _bits(m.sequences - 1)
        self.layer_bits = _bits(g.layers - 1)
        self.head_bits = _bits(max(self.heads, self.vectors) - 1)
        self.count_bits = _bits(g.head_dim)            # sparse bytes of one head, one token
        self.token_bits = _bits(m.max_tokens)          # 0 .. max_tokens
        self.sbytes_bits = _bits(self.sparse_capacity)  # 0 .. sparse capacity
        self.range_bits = max(self.token_bits, self.sbytes_bits)
        self.to_end = (1 << self.range_bits) - 1
        if self.to_end <= self.sparse_capacity:
            raise ValueError(f"a read's all-ones hi ({self.to_end}) must lie above the sparse "
                             f"capacity ({self.sparse_capacity}) to mean 'to the end'")
        self.addr_bits = self.page_bits + self.page_shift
        self.len_bits = _bits(m.page_bytes)
        self.stream_ids = self.sequences * self.groups * self.slots
        # a group's row is the wires (seq, layer, kv): no multiplier or adder between a
        # command's fields and the group state's address (seq * G + g, a table and an
        # adder, was in front of its block RAM at 10.7 ns in session 21)
        self.group_stride = _pow2_ceil(self.groups)
        self.group_rows = self.sequences * self.group_stride

    # -- streams ---------------------------------------------------------------------------
    def slot_of(self, kind, head):
        """Canonical slot of stream ``kind`` (:class:`Kind`), ``head`` within its group."""
        if kind == Kind.DENSE:
            return head
        if kind == Kind.SPARSE:
            return self.heads + head
        return 2 * self.heads + head

    def stream_id(self, seq, group, kind, head):
        """A unique number of every stream (used by the formal ownership checks)."""
        return (seq * self.groups + group) * self.slots + self.slot_of(kind, head)

    def meta_vector(self, head):
        """Metadata vector holding ``head``'s records."""
        return head if self.vectors > 1 else 0

    # -- storage -----------------------------------------------------------------------------
    @property
    def table_strides(self):
        """``(streams, entries)`` of one group in each page table, both rounded up to powers
        of two, so that a table address is the wires ``(group, stream, entry)`` and no
        adder: ``{"dense", "sparse", "meta"}``."""
        return {"dense": (_pow2_ceil(self.heads), _pow2_ceil(self.dense_entries)),
                "sparse": (_pow2_ceil(self.heads), _pow2_ceil(self.sparse_entries)),
                "meta": (_pow2_ceil(self.vectors), _pow2_ceil(self.meta_entries))}

    @property
    def table_depths(self):
        """Entries of the three page tables, with the strides of :attr:`table_strides`:
        ``{"dense", "sparse", "meta"}``."""
        return {k: self.group_rows * streams * entries
                for k, (streams, entries) in self.table_strides.items()}

    @property
    def storage_bits(self):
        """Bits of every on-chip memory of the MMU, by name."""
        bits = {f"{k}_table": d * self.page_bits for k, d in self.table_depths.items()}
        # per group: its token count and the running byte count of each head's sparse stream
        bits["group_state"] = self.group_rows * (self.token_bits + self.heads * self.sbytes_bits)
        bits["free_list"] = self.pages * self.page_bits
        bits["live"] = self.sequences
        return bits
