"""Layouts of the engine's top-level ports, shared by the RTL, the golden model and the benches.

``docs/engine.md`` describes every port; the field order here is the bit order of the
emitted Verilog (LSB first).
"""

from amaranth.hdl import unsigned
from amaranth.lib import data

from ..mmu.layout import MMULayout
from ..rtl.common.header import field_width, header_layout
from ..rtl.common.threshold_table import threshold_write_layout

__all__ = ["EnginePorts", "STATUS_BITS"]

#: Width of a status code (:class:`oaken_hw.mmu.layout.Status`).
STATUS_BITS = 3


class EnginePorts:
    """The payload layouts of :class:`~oaken_hw.engine.top.OakenEngine` for one configuration.

    Parameters
    ----------
    cfg : OakenConfig

    Attributes
    ----------
    kv_in, write_done, read, o, read_done, free, free_done, thresholds : data.StructLayout
    mem_cmd, mem_wdata, mem_rdata : data.StructLayout
        The memory ports (LiteDRAM native port shape): ``cmd{we, addr}``, ``wdata{data, we}``,
        ``rdata{data}``; ``addr`` counts ``memory.data_bytes``-byte beats.
    beat_bytes : int
        ``memory.data_bytes``.
    beat_shift : int
        ``log2(beat_bytes)``: a byte address shifted right by it is a beat address.
    addr_bits : int
        Bits of a beat address (the MMU's byte address bits minus ``beat_shift``).
    dense_bits : int
        Bits of one quantizer/dequantizer dense beat (``lanes * middle_bits``).
    dense_ratio : int
        Dense beats per memory beat (``8 * beat_bytes // dense_bits``).
    """

    def __init__(self, cfg):
        L = MMULayout(cfg)
        q, g = cfg.quant, cfg.model
        self.beat_bytes = n = cfg.memory.data_bytes
        self.beat_shift = n.bit_length() - 1
        self.addr_bits = L.addr_bits - self.beat_shift
        self.dense_bits = q.lanes * q.middle_bits
        self.dense_ratio = 8 * n // self.dense_bits
        self.header = header_layout(cfg)
        token = unsigned(field_width(cfg.mmu.max_tokens + 1))
        self.kv_in = data.StructLayout({
            "header": self.header,
            "data": data.ArrayLayout(16, q.lanes),
        })
        self.write_done = data.StructLayout({
            "seq": self.header["seq"].shape, "layer": self.header["layer"].shape,
            "kv": 1, "pos": self.header["pos"].shape, "status": STATUS_BITS,
        })
        self.read = data.StructLayout({
            "seq": self.header["seq"].shape, "layer": self.header["layer"].shape,
            "kv": 1, "head": self.header["head"].shape, "lo": token, "hi": token,
        })
        self.o = data.StructLayout({
            "data": data.ArrayLayout(16, q.lanes),
            "header": self.header,
            "last": 1,
            "malformed": 1,
        })
        self.read_done = data.StructLayout({"status": STATUS_BITS, "tokens": token})
        self.free = data.StructLayout({"seq": self.header["seq"].shape})
        self.free_done = data.StructLayout({"seq": self.header["seq"].shape,
                                            "status": STATUS_BITS})
        self.thresholds = threshold_write_layout(g.layers)
        self.mem_cmd = data.StructLayout({"we": 1, "addr": self.addr_bits})
        self.mem_wdata = data.StructLayout({"data": 8 * n, "we": n})
        self.mem_rdata = data.StructLayout({"data": 8 * n})
