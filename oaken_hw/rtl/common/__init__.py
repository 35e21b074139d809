"""Pieces shared by the quantization and dequantization engines.

* :mod:`.fp16` -- FP16 sanitize and exact conversion to units of 2^-24;
* :mod:`.threshold_table` -- the per-(layer, K/V) threshold table with its config stream;
* :mod:`.header` -- the vector header layout;
* :mod:`.occupancy` -- a count with its ``count < limit`` compare as a register (the
  credits and queue levels that decide handshakes, in both engines).
"""

from .fp16 import (FP16ToUnits, MAG_WIDTH, UNITS_SHAPE, UNITS_WIDTH, fp16_magnitude_units,
                   fp16_sanitize, fp16_to_units)
from .header import field_width, header_layout
from .threshold_table import (ThresholdReadSignature, ThresholdTable, threshold_write_layout,
                              thresholds_layout)

__all__ = ["FP16ToUnits", "MAG_WIDTH", "UNITS_SHAPE", "UNITS_WIDTH", "fp16_magnitude_units",
           "fp16_sanitize", "fp16_to_units", "field_width",
           "header_layout", "ThresholdReadSignature", "ThresholdTable",
           "threshold_write_layout", "thresholds_layout"]
