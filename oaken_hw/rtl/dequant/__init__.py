"""The dequantization engine: the fused dense-and-sparse format back to FP16 vectors.

* :mod:`.unpacker` -- framers, the zero-inserting shifter and the dense buffer
  (:func:`oaken_hw.model.unpack` in hardware);
* :mod:`.dequantizer` -- level, pivot and FP16 rounding
  (:func:`oaken_hw.model.dequantize` in hardware);
* :mod:`.fp16_round` -- integer to FP16, nearest even, saturating;
* :mod:`.engine` -- :class:`DequantEngine`, the two together with a threshold table.
"""

from .dequantizer import Dequantizer
from .engine import DequantEngine, DequantStatusSignature
from .fp16_round import FP16Round
from .unpacker import Unpacker

__all__ = ["DequantEngine", "DequantStatusSignature", "Unpacker", "Dequantizer", "FP16Round"]
