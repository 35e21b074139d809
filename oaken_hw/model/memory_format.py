"""The fused dense-and-sparse memory image, bit for bit (see ``docs/format.md``).

Per quantization vector of ``V`` elements the quantizer writes three byte strings:

* **dense**: ``V * middle_bits / 8`` bytes; element ``i``'s slot is bits
  ``[i*m, (i+1)*m)`` of the string read as a little-endian integer (LSB first);
* **sparse**: one byte per outlier, in element order:
  ``index_in_block | outer << index_bits | high << (index_bits + 1)``;
* **meta**: ``9 + V / sparse_block`` bytes: the little-endian FP16 words ``delta_mid``,
  ``delta_inner``, ``inner_min``, ``delta_outer``, the byte ``n_lo``, then one byte per
  sparse block counting that block's entries (the framing: where a vector's sparse bytes
  end and which block every entry belongs to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quantizer import INNER, MIDDLE, OUTER, Encoded

__all__ = ["MemoryImage", "pack", "unpack", "effective_bits"]

META_FP16_FIELDS = ("delta_mid", "delta_inner", "inner_min", "delta_outer")
META_N_LO = 8
META_COUNTS = 9


@dataclass
class MemoryImage:
    """Memory image of ``N`` vectors.

    Attributes
    ----------
    dense : ndarray (N, dense_bytes) uint8
    meta : ndarray (N, meta_bytes) uint8
    sparse : ndarray (S,) uint8
        All vectors' sparse bytes, vector after vector.
    sparse_counts : ndarray (N,) int64
        Sparse bytes per vector (also the sum of the block counts in ``meta``).
    """

    dense: np.ndarray
    meta: np.ndarray
    sparse: np.ndarray
    sparse_counts: np.ndarray

    @property
    def sparse_offsets(self):
        """Start of every vector's sparse bytes in ``sparse``, and the end: (N + 1,)."""
        return np.concatenate([[0], np.cumsum(self.sparse_counts)]).astype(np.int64)

    def vector_sparse(self, i):
        o = self.sparse_offsets
        return self.sparse[o[i]:o[i + 1]]

    @property
    def total_bits(self):
        return 8 * (self.dense.size + self.meta.size + self.sparse.size)


def _block_counts(outlier, block):
    n, v = outlier.shape
    return outlier.reshape(n, v // block, block).sum(axis=-1)


def pack(enc, cfg):
    """Pack an :class:`~oaken_hw.model.quantizer.Encoded` into its memory image."""
    q = cfg.quant
    n, v = enc.group.shape
    mb, block, ib = q.middle_bits, q.sparse_block, q.index_bits

    slots = np.unpackbits(enc.dense[..., None], axis=-1, bitorder="little")[..., :mb]
    dense = np.packbits(slots.reshape(n, v * mb), axis=-1, bitorder="little")

    outlier = enc.group != MIDDLE
    idx = np.broadcast_to(np.arange(v) % block, (n, v))
    entry = (idx | ((enc.group == OUTER).astype(np.int64) << ib)
             | (enc.high.astype(np.int64) << (ib + 1))).astype(np.uint8)
    sparse = entry[outlier]                                # row-major: vector, then element order

    words = np.stack([getattr(enc, f) for f in META_FP16_FIELDS], axis=-1).astype("<u2")
    meta = np.concatenate([words.view(np.uint8).reshape(n, 8),
                           enc.n_lo.astype(np.uint8)[:, None],
                           _block_counts(outlier, block).astype(np.uint8)], axis=-1)
    return MemoryImage(dense=dense, meta=meta, sparse=sparse,
                       sparse_counts=outlier.sum(axis=-1).astype(np.int64))


def unpack(image, cfg):
    """Rebuild the :class:`Encoded` of a memory image, checking its framing.

    Returns
    -------
    enc : Encoded
        Malformed vectors decode as all-middle with every field zero.
    malformed : ndarray (N,) bool
        Vectors whose metadata or sparse list is inconsistent: a block count above the
        block size, block counts that do not add up to the vector's sparse byte count,
        entries of a block not strictly increasing in index, ``n_lo > 2^middle_bits``, or
        a step / minimum that is not a finite FP16 (negative steps included).
    """
    q = cfg.quant
    mb, block, ib = q.middle_bits, q.sparse_block, q.index_bits
    n = image.dense.shape[0]
    v = cfg.vector_len
    nblk = v // block
    if image.dense.shape != (n, cfg.dense_bytes) or image.meta.shape != (n, cfg.meta_bytes):
        raise ValueError(f"memory image shapes {image.dense.shape}, {image.meta.shape} do not "
                         f"match the configuration ({cfg.dense_bytes}, {cfg.meta_bytes})")

    bits = np.unpackbits(image.dense, axis=-1, bitorder="little").reshape(n, v, mb)
    dense = np.packbits(bits, axis=-1, bitorder="little")[..., 0]

    words = image.meta[:, :8].copy().view("<u2").astype(np.uint16)
    n_lo = image.meta[:, META_N_LO]
    counts = image.meta[:, META_COUNTS:META_COUNTS + nblk].astype(np.int64)

    if image.sparse.size != image.sparse_counts.sum():
        raise ValueError("memory image: sparse byte count does not match sparse_counts")
    malformed = (counts > block).any(axis=-1) | (counts.sum(axis=-1) != image.sparse_counts)
    malformed |= n_lo > (1 << mb)
    as_f16 = words.view(np.float16)
    malformed |= (~np.isfinite(as_f16)).any(axis=-1)
    malformed |= (np.signbit(as_f16[:, [0, 1, 3]]) & (as_f16[:, [0, 1, 3]] != 0)).any(axis=-1)

    # every sparse entry's vector and block, from the framing counts
    ok_counts = np.where(malformed[:, None], 0, counts)
    entry_vec = np.repeat(np.arange(n), image.sparse_counts)
    entry_block = np.repeat(np.arange(n * nblk), ok_counts.reshape(-1)) % nblk \
        if ok_counts.sum() else np.zeros(0, np.int64)
    good_entries = np.repeat(~malformed, image.sparse_counts)
    entries = image.sparse[good_entries].astype(np.int64)
    entry_vec = entry_vec[good_entries]
    index = entries & (block - 1)
    # strictly increasing index inside each block
    same_block = (entry_vec[1:] == entry_vec[:-1]) & (entry_block[1:] == entry_block[:-1])
    bad_order = same_block & (index[1:] <= index[:-1])
    malformed[entry_vec[1:][bad_order]] = True

    group = np.full((n, v), MIDDLE, np.uint8)
    high = np.zeros((n, v), np.uint8)
    keep = ~malformed[entry_vec]
    elem = entry_block[keep] * block + index[keep]
    group[entry_vec[keep], elem] = np.where((entries[keep] >> ib) & 1, OUTER, INNER)
    high[entry_vec[keep], elem] = (entries[keep] >> (ib + 1)) & 1

    zero = lambda a: np.where(malformed if a.ndim == 1 else malformed[:, None], 0, a)
    enc = Encoded(group=zero(group).astype(np.uint8), dense=zero(dense).astype(np.uint8),
                  high=zero(high).astype(np.uint8),
                  delta_mid=zero(words[:, 0]).astype(np.uint16),
                  delta_inner=zero(words[:, 1]).astype(np.uint16),
                  inner_min=zero(words[:, 2]).astype(np.uint16),
                  delta_outer=zero(words[:, 3]).astype(np.uint16),
                  n_lo=zero(n_lo).astype(np.uint8), bad_inputs=np.zeros(n, np.int64))
    return enc, malformed


def effective_bits(outlier_fraction, cfg):
    """Stored bits per element: dense slot + 8 per outlier + the metadata record."""
    return cfg.quant.middle_bits + 8 * outlier_fraction + 8 * cfg.meta_bytes / cfg.vector_len
