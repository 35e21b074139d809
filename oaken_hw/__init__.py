"""oaken_hw: an Amaranth generator and bit-exact golden model of the Oaken KV-cache
compression engine (quantization engine, dequantization engine, MMU)."""

__version__ = "0.1.0"
