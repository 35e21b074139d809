"""The quantization engine and its blocks, in data-flow order.

* :mod:`.classifier` -- threshold comparators and group shift;
* :mod:`.extents` -- per-vector reductions (min/max, block counts);
* :mod:`.scale` -- middle split and steps;
* :mod:`.encoder` -- codes, dense slots and outlier bits;
* :mod:`.packer` -- dense words, the zero-removing shifter, the meta record;
* :mod:`.engine` -- :class:`QuantEngine`, the composition with its buffers.
"""

from .classifier import Classifier, GroupShift
from .encoder import Encoder
from .engine import QuantEngine, StatusSignature
from .extents import Extents
from .packer import Packer
from .scale import Scale

__all__ = ["Classifier", "GroupShift", "Extents", "Scale", "Encoder", "Packer", "QuantEngine",
           "StatusSignature"]
