"""The dequantization engine's stream layouts: what comes in from memory, what goes out.

The dense, sparse and meta streams carry the memory format of ``docs/format.md``;
:func:`beat_layout` is the unpacker's output, one beat of decoded fields.
"""

from amaranth.lib import data

from ..common.header import header_layout

__all__ = ["uint_bits", "dense_layout", "sparse_layout", "meta_layout", "errors_layout",
           "beat_layout"]


def uint_bits(n):
    """Bits of an unsigned value ``0 .. n`` (at least 1)."""
    return max(1, int(n).bit_length())


def dense_layout(cfg):
    """Dense beat: lane ``i``'s slot at bits ``[i*m, (i+1)*m)`` of ``data``; ``last``."""
    return data.StructLayout({"data": cfg.quant.lanes * cfg.quant.middle_bits, "last": 1})


def sparse_layout(cfg):
    """Sparse beat: bytes ``0 .. count-1`` of ``data`` are sparse bytes in list order."""
    lanes = cfg.quant.lanes
    return data.StructLayout({"data": data.ArrayLayout(8, lanes), "count": range(lanes + 1),
                              "last": 1})


def meta_layout(cfg):
    """One per vector: the meta record (``data``, byte 0 at the LSB) and the header."""
    return data.StructLayout({"data": cfg.meta_bytes * 8, "header": header_layout(cfg)})


def errors_layout():
    """Why a vector is malformed (several bits may be set).

    ``count``: a block count above the block size; ``meta``: ``n_lo > 2^middle_bits``, a
    non-finite FP16 word or a negative step; ``order``: indices not strictly increasing in
    a block; ``sparse``: delivered sparse bytes differ from the sum of the block counts;
    ``dense``: the dense vector had too few or too many beats.
    """
    return data.StructLayout({"count": 1, "meta": 1, "order": 1, "sparse": 1, "dense": 1})


def beat_layout(cfg):
    """The unpacker's output beat: one beat of :class:`~oaken_hw.model.quantizer.Encoded`.

    ``code`` (dense slot), ``outlier``, ``outer``, ``high`` per lane, the vector's
    ``delta_mid``, ``delta_inner``, ``inner_min``, ``delta_outer`` (FP16 bit patterns) and
    ``n_lo``, all zero when ``malformed``; ``header``, ``last``, ``errors``.
    """
    q = cfg.quant
    lanes = q.lanes
    return data.StructLayout({
        "code": data.ArrayLayout(q.middle_bits, lanes),
        "outlier": lanes, "outer": lanes, "high": lanes,
        "delta_mid": 16, "delta_inner": 16, "inner_min": 16, "delta_outer": 16,
        "n_lo": range((1 << q.middle_bits) + 1),
        "header": header_layout(cfg),
        "malformed": 1, "errors": errors_layout(), "last": 1,
    })
