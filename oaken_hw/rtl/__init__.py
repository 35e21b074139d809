"""Amaranth components of the Oaken engine.

* :mod:`.common` -- pieces shared by the engines (FP16 conversion, threshold table);
* :mod:`.quant` -- the quantization engine;
* :mod:`.dequant` -- the dequantization engine.
"""
