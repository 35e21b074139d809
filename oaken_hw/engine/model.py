"""The golden model of the engine top (``docs/engine.md``, "Semantics"): the specification of
every memory write, read-back vector and status that :class:`~oaken_hw.engine.top.OakenEngine`
emits.

It is composed of the golden quantizer (:mod:`oaken_hw.model`), the memory format and
:class:`~oaken_hw.mmu.model.MMUModel`, and works at the transaction level: a write, read or
free is applied atomically and returns everything the engine outputs for it. Quantization
does not depend on the MMU, only on the threshold table, so a whole batch of vectors can be
quantized at once (:meth:`EngineModel.encode`) and written one by one later.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import NamedTuple

import numpy as np

from ..mmu import layout as mmu_layout
from ..mmu.layout import Kind, MMULayout, Status
from ..mmu.model import STALL, MMUModel
from ..model.memory_format import MemoryImage, pack, unpack
from ..model.quantizer import check_thresholds, dequantize, quantize

__all__ = ["EngineModel", "EncodedVector", "WriteResult", "ReadResult", "FreeResult", "STALL",
           "COUNTERS", "head_view_config", "check_engine_config"]

#: The status port's counters (32-bit, saturating) in the order of ``docs/engine.md``.
COUNTERS = ("vectors_written", "write_errors", "tokens_read", "read_errors", "malformed",
            "bad_inputs")
_SATURATE = (1 << 32) - 1


def head_view_config(cfg):
    """``cfg`` with ``quant.scope = "head"``: the configuration one head's data decodes with."""
    return dataclasses.replace(cfg, quant=dataclasses.replace(cfg.quant, scope="head"))


class EncodedVector(NamedTuple):
    """One quantized vector, split per head as the MMU stores it.

    ``dense[h]``, ``sparse[h]``: head ``h``'s dense and sparse bytes; ``meta``: the record;
    ``counts[h]``: ``len(sparse[h])``; ``bad_inputs``: NaN/Inf elements of the input.
    """

    dense: tuple
    sparse: tuple
    meta: bytes
    counts: tuple
    bad_inputs: int


class WriteResult(NamedTuple):
    """A completed write: the ``write_done`` fields and the memory writes in ``wmem`` order.

    ``mem_writes``: ``(beat_addr, data, byte_enables)`` with ``data`` ``N`` bytes (lanes
    without an enable are 0) and ``byte_enables`` an int, bit ``i`` for lane ``i``.
    """

    seq: int
    layer: int
    kv: int
    pos: int
    status: int
    mem_writes: list


class ReadResult(NamedTuple):
    """A read: its status and the tokens output (``o`` beats are ``head_dim / lanes`` per
    token).

    ``pos`` (T,), ``values`` (T, head_dim) uint16 FP16 bit patterns, ``malformed`` (T,) bool.
    """

    status: int
    pos: np.ndarray
    values: np.ndarray
    malformed: np.ndarray

    @property
    def tokens(self):
        """``[(pos, values, malformed)]`` per token."""
        return [(int(p), v, bool(m)) for p, v, m in zip(self.pos, self.values, self.malformed)]


class FreeResult(NamedTuple):
    """A free's status and the waiting writes it let complete (in order)."""

    status: int
    writes: list


def check_engine_config(cfg):
    """``ValueError`` (naming the parameter) for configurations the engine top cannot build."""
    from ..config import OakenConfig
    if not isinstance(cfg, OakenConfig):
        raise ValueError(f"cfg must be an OakenConfig, not {type(cfg).__name__}")
    q, n = cfg.quant, cfg.memory.data_bytes
    if q.scope != "layer":
        raise ValueError(f"quant.scope must be 'layer' for the engine top (one MMU append per "
                         f"token and group), not {q.scope!r}")
    L = MMULayout(cfg)
    if q.lanes * q.middle_bits > 8 * n:
        raise ValueError(f"memory.data_bytes ({n}) must hold a dense beat of quant.lanes x "
                         f"quant.middle_bits = {q.lanes * q.middle_bits} bits")
    if L.dense_bytes % n:
        raise ValueError(f"memory.data_bytes ({n}) must divide a head's dense bytes "
                         f"({L.dense_bytes})")
    if L.meta_slot > n:
        raise ValueError(f"memory.data_bytes ({n}) must hold a metadata slot "
                         f"({L.meta_slot} bytes)")


class EngineModel:
    """The golden engine model.

    Parameters
    ----------
    cfg : OakenConfig
        Scope ``"layer"`` only (``ValueError`` naming ``quant.scope`` otherwise).

    Attributes
    ----------
    thresholds : ndarray (layers, 2, 4) uint16
        The threshold table, FP16 bit patterns (``o_lo, i_lo, i_hi, o_hi``); zeros at reset.
    mmu : MMUModel
    memory : dict of int to bytearray
        The memory behind the engine, by beat address; unwritten bytes read as 0. It is not
        part of the engine, so :meth:`reset` keeps it (DRAM survives the engine's reset).
    counters : dict of str to int
        :data:`COUNTERS`; ``config_error`` is the sticky flag.
    waiting : deque of (header, EncodedVector)
        Writes held because the pool is out of pages, oldest first. The engine processes
        writes strictly in order, so a held write holds every later one.
    """

    def __init__(self, cfg):
        check_engine_config(cfg)
        self.cfg = cfg
        self.head_cfg = head_view_config(cfg)
        self.layout = MMULayout(cfg)
        self.beat_bytes = cfg.memory.data_bytes
        self.memory = {}
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self):
        """Power-up state: empty MMU, zero thresholds and counters, no waiting write."""
        self.mmu = MMUModel(self.cfg)
        self.thresholds = np.zeros((self.cfg.model.layers, 2, 4), np.uint16)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.config_error = False
        self.waiting = deque()

    def clear_status(self):
        """``status__clear``: counters and the sticky flag to zero."""
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.config_error = False

    def _count(self, name, n=1):
        self.counters[name] = min(self.counters[name] + int(n), _SATURATE)

    @property
    def out_of_pages(self):
        return bool(self.waiting)

    def status(self):
        """The ``status__*`` outputs (without ``clear``) as a dict."""
        return {"free_pages": len(self.mmu.free), "out_of_pages": int(self.out_of_pages),
                "ready": 1, **self.counters, "config_error": int(self.config_error)}

    # -- configuration -----------------------------------------------------------------------
    def write_thresholds(self, layer, kv, t):
        """Write entry ``(layer, kv)``; ``t``: four FP16 bit patterns ``o_lo, i_lo, i_hi, o_hi``.

        Returns whether it was taken. A bad write (``layer >= layers``, a NaN/Inf threshold,
        unordered thresholds) is dropped and sets ``config_error``.
        """
        bits = np.asarray(t, np.uint16).reshape(4)
        ok = 0 <= layer < self.cfg.model.layers and kv in (0, 1)
        if ok:
            try:
                check_thresholds(bits.view(np.float16))
            except ValueError:
                ok = False
        if ok:
            self.thresholds[layer, kv] = bits
        else:
            self.config_error = True
        return ok

    # -- write path --------------------------------------------------------------------------
    def encode(self, x, layer, kv):
        """Quantize vectors with the table's current thresholds.

        Parameters
        ----------
        x : array_like (n, vector_len) or (vector_len,)
            FP16 values (or their uint16 bit patterns).
        layer, kv : int or array_like (n,)
            The entry of the threshold table each vector uses (a layer out of range uses
            zeros: the MMU refuses such a write anyway).

        Returns
        -------
        list of EncodedVector
        """
        x = np.asarray(x)
        if x.dtype == np.uint16:
            x = x.view(np.float16)
        x = x.astype(np.float16).reshape(-1, self.cfg.vector_len)
        n = x.shape[0]
        layer = np.broadcast_to(np.asarray(layer, np.int64), (n,))
        kv = np.broadcast_to(np.asarray(kv, np.int64), (n,))
        ok = (layer < self.cfg.model.layers) & (layer >= 0)
        th = np.zeros((n, 4), np.uint16)
        th[ok] = self.thresholds[layer[ok], kv[ok] & 1]
        enc = quantize(x, th.view(np.float16), self.cfg)
        img = pack(enc, self.cfg)
        g, q = self.cfg.model, self.cfg.quant
        bph = g.head_dim // q.sparse_block
        hd = self.layout.dense_bytes
        block_counts = img.meta[:, 9:].astype(np.int64).reshape(n, g.kv_heads, bph)
        head_counts = block_counts.sum(axis=-1)
        offsets = img.sparse_offsets
        out = []
        for i in range(n):
            sp = img.sparse[offsets[i]:offsets[i + 1]].tobytes()
            ends = np.concatenate([[0], np.cumsum(head_counts[i])])
            dense = img.dense[i].tobytes()
            out.append(EncodedVector(
                dense=tuple(dense[h * hd:(h + 1) * hd] for h in range(g.kv_heads)),
                sparse=tuple(sp[ends[h]:ends[h + 1]] for h in range(g.kv_heads)),
                meta=img.meta[i].tobytes(), counts=tuple(int(c) for c in head_counts[i]),
                bad_inputs=int(enc.bad_inputs[i])))
        return out

    def _bytes_at(self, addr, payload):
        """Memory writes (one per beat) that put ``payload`` at byte address ``addr``."""
        n = self.beat_bytes
        out = []
        i = 0
        while i < len(payload):
            beat, lane = divmod(addr + i, n)
            k = min(n - lane, len(payload) - i)
            data = bytes(lane) + payload[i:i + k] + bytes(n - lane - k)
            out.append((beat, data, ((1 << k) - 1) << lane))
            i += k
        return out

    def _apply(self, mem_writes):
        n = self.beat_bytes
        full = (1 << n) - 1
        for beat, data, we in mem_writes:
            if we == full:
                self.memory[beat] = bytearray(data)
                continue
            word = self.memory.setdefault(beat, bytearray(n))
            for lane in range(n):
                if we >> lane & 1:
                    word[lane] = data[lane]

    def write(self, header, vec):
        """One write, atomically, ignoring the waiting queue (see :meth:`submit`).

        Parameters
        ----------
        header : dict or tuple
            ``seq, layer, kv, pos`` (a dict may carry more keys, e.g. ``head``: ignored).
        vec : EncodedVector or array_like (vector_len,)
            Arrays are encoded with the current thresholds.

        Returns
        -------
        WriteResult or STALL
            ``STALL`` (the pool lacks pages) changes nothing.
        """
        seq, layer, kv, pos = _header(header)
        if not isinstance(vec, EncodedVector):
            vec = self.encode(vec, layer, kv)[0]
        recs = self.mmu.append(seq, layer, kv, pos, list(vec.counts))
        if recs is STALL:
            return STALL
        status = recs[-1].status
        writes = []
        if status == Status.OK:
            used = [0] * self.layout.heads
            for r in recs[:-1]:
                if r.kind == Kind.DENSE:
                    writes += self._bytes_at(r.addr, vec.dense[r.head])
                elif r.kind == Kind.SPARSE:
                    s = vec.sparse[r.head][used[r.head]:used[r.head] + r.length]
                    used[r.head] += r.length
                    writes += self._bytes_at(r.addr, s)
                else:
                    writes += self._bytes_at(r.addr, vec.meta)
            self._apply(writes)
            self._count("vectors_written")
        else:
            self._count("write_errors")
        return WriteResult(seq, layer, kv, pos, int(status), writes)

    def submit(self, header, vec):
        """A write as the engine takes it: in order behind any waiting write.

        Counts the vector's NaN/Inf elements (``bad_inputs``: the quantizer sees every
        vector, whatever the MMU later says). Returns the writes completed now, in order
        (empty while the pool is out of pages).
        """
        seq, layer, kv, _ = _header(header)
        if not isinstance(vec, EncodedVector):
            vec = self.encode(vec, layer, kv)[0]
        self._count("bad_inputs", vec.bad_inputs)
        self.waiting.append((header, vec))
        return self._drain()

    def _drain(self):
        done = []
        while self.waiting:
            res = self.write(*self.waiting[0])
            if res is STALL:
                break
            self.waiting.popleft()
            done.append(res)
        return done

    # -- free --------------------------------------------------------------------------------
    def free(self, seq):
        """Free every page of ``seq``, then retry the waiting writes."""
        status = int(self.mmu.free_sequence(int(seq))[-1].status)
        return FreeResult(status, self._drain())

    # -- read path ---------------------------------------------------------------------------
    def _stream(self, recs):
        """The memory bytes of a list of burst records, concatenated."""
        n = self.beat_bytes
        out = bytearray()
        for r in recs:
            first, last = r.addr // n, (r.addr + r.length - 1) // n
            raw = b"".join(bytes(self.memory.get(b, bytes(n))) for b in range(first, last + 1))
            off = r.addr - first * n
            out += raw[off:off + r.length]
        return bytes(out)

    def read(self, seq, layer, kv, head, lo, hi):
        """Read tokens ``[lo, hi)`` of one head's history from memory.

        Returns
        -------
        ReadResult
            Status ``BAD_RANGE`` for ``lo > hi``, else the first failing MMU status of the
            META ``[0, hi)``, DENSE ``[lo, hi)`` and SPARSE ``[S(lo), end)`` reads; no tokens
            unless ``OK``.
        """
        L, g, q = self.layout, self.cfg.model, self.cfg.quant
        seq, layer, kv, head, lo, hi = (int(v) for v in (seq, layer, kv, head, lo, hi))
        empty = lambda st: ReadResult(int(st), np.zeros(0, np.int64),
                                      np.zeros((0, g.head_dim), np.uint16), np.zeros(0, bool))
        if lo > hi:
            self._count("read_errors")
            return empty(Status.BAD_RANGE)
        meta = self.mmu.read(seq, layer, kv, head, Kind.META, 0, hi)
        dense = self.mmu.read(seq, layer, kv, head, Kind.DENSE, lo, hi) \
            if meta[-1].status == Status.OK else meta
        for recs in (meta, dense):
            if recs[-1].status != Status.OK:
                self._count("read_errors")
                return empty(recs[-1].status)
        bph = g.head_dim // q.sparse_block
        mb = L.meta_bytes
        mstream = np.frombuffer(self._stream(meta[:-1]), np.uint8).reshape(hi, L.meta_slot)[:, :mb]
        counts = mstream[:, 9 + head * bph:9 + (head + 1) * bph]
        per_token = counts.astype(np.int64).sum(axis=-1)
        s = np.concatenate([[0], np.cumsum(per_token)])
        end = getattr(mmu_layout, "TO_END", None)
        if end is None:
            end = self.mmu.sbytes[seq][2 * layer + kv][head]
        sparse = self.mmu.read(seq, layer, kv, head, Kind.SPARSE, int(s[lo]), end)
        if sparse[-1].status != Status.OK:
            self._count("read_errors")
            return empty(sparse[-1].status)
        T = hi - lo
        if T == 0:
            return empty(Status.OK)
        sp = np.frombuffer(self._stream(sparse[:-1]), np.uint8)
        need = int(s[hi] - s[lo])
        if sp.size < need:              # only with a corrupt memory image: read as zeros
            sp = np.concatenate([sp, np.zeros(need - sp.size, np.uint8)])
        dstream = np.frombuffer(self._stream(dense[:-1]), np.uint8).reshape(T, L.dense_slot)
        img = MemoryImage(
            dense=dstream[:, :L.dense_bytes].copy(),
            meta=np.concatenate([mstream[lo:hi, :9], counts[lo:hi]], axis=-1),
            sparse=sp[:need].copy(), sparse_counts=per_token[lo:hi].copy())
        enc, malformed = unpack(img, self.head_cfg)
        th = self.thresholds[layer, kv].view(np.float16)
        values = dequantize(enc, th, self.head_cfg).view(np.uint16)
        self._count("tokens_read", T)
        self._count("malformed", int(malformed.sum()))
        return ReadResult(int(Status.OK), np.arange(lo, hi), values.reshape(T, g.head_dim),
                          malformed)


def _header(h):
    if isinstance(h, dict):
        return int(h["seq"]), int(h["layer"]), int(h["kv"]), int(h["pos"])
    seq, layer, kv, pos = h
    return int(seq), int(layer), int(kv), int(pos)
