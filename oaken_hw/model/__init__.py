"""The bit-exact golden model of Oaken: the specification the RTL must match.

* :mod:`.numerics` -- exact fixed-point units and FP16 rounding;
* :mod:`.quantizer` -- classification, group shift, steps, codes, and the decoder;
* :mod:`.memory_format` -- the fused dense-and-sparse memory image;
* :mod:`.kv` -- whole KV tensors: vector layout, round trip, statistics;
* :mod:`.reference` -- non-bit-exact comparison quantizers (ideal Oaken, INT4).
"""

from .kv import roundtrip_kv, sqnr_db, to_vectors, from_vectors
from .memory_format import MemoryImage, effective_bits, pack, unpack
from .quantizer import INNER, MIDDLE, OUTER, Encoded, dequantize, quantize

__all__ = ["quantize", "dequantize", "pack", "unpack", "roundtrip_kv", "sqnr_db", "to_vectors",
           "from_vectors", "effective_bits", "Encoded", "MemoryImage", "MIDDLE", "INNER", "OUTER"]
