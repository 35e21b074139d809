"""The vector header that travels with a KV vector from the write port to the MMU."""

from amaranth.hdl import unsigned
from amaranth.lib import data

__all__ = ["header_layout", "field_width"]


def field_width(count):
    """Bits of an index ``0 .. count-1`` (at least 1)."""
    return max(1, (count - 1).bit_length())


def header_layout(cfg):
    """Header of one quantization vector (a :class:`~amaranth.lib.data.StructLayout`).

    Fields, LSB first: ``seq`` (sequence id, ``mmu.sequences``), ``layer``
    (``model.layers``), ``kv`` (0 = K, 1 = V), ``head`` (``model.kv_heads``; meaningful
    for ``quant.scope = "head"``, passed through otherwise), ``pos`` (token position,
    ``mmu.max_tokens``).
    """
    return data.StructLayout({
        "seq": unsigned(field_width(cfg.mmu.sequences)),
        "layer": unsigned(field_width(cfg.model.layers)),
        "kv": unsigned(1),
        "head": unsigned(field_width(cfg.model.kv_heads)),
        "pos": unsigned(field_width(cfg.mmu.max_tokens)),
    })
