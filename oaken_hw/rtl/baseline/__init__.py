"""Reference designs built with the same flow as the Oaken engine, for comparison."""

from .int4_quantizer import Int4Quantizer, int4_golden

__all__ = ["Int4Quantizer", "int4_golden"]
