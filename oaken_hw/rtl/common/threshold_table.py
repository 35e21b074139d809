"""The threshold table: four FP16 thresholds per (layer, K/V), written through a stream.

One engine serves every layer of a model: the thresholds that calibration produced for each
layer and for K and V are written here once, and each vector's header selects its entry.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fp16 import fp16_key
from .header import field_width

__all__ = ["thresholds_layout", "threshold_write_layout", "ThresholdReadSignature",
           "ThresholdTable"]


def thresholds_layout():
    """Four FP16 bit patterns, LSB first: ``o_lo``, ``i_lo``, ``i_hi``, ``o_hi``."""
    return data.StructLayout({"o_lo": 16, "i_lo": 16, "i_hi": 16, "o_hi": 16})


def threshold_write_layout(layers):
    """Payload of a configuration write: ``layer``, ``kv`` (0 = K, 1 = V), ``t``."""
    return data.StructLayout({
        "layer": unsigned(field_width(layers)),
        "kv": unsigned(1),
        "t": thresholds_layout(),
    })


class ThresholdReadSignature(wiring.Signature):
    """A synchronous read port of the table, from the reader's side.

    Members: ``en`` (Out), ``layer`` (Out), ``kv`` (Out), ``data`` (In,
    :func:`thresholds_layout`). ``data`` is the entry addressed in the cycle where ``en`` was
    high; it holds while ``en`` is low (latency 1).
    """

    def __init__(self, layers):
        super().__init__({
            "en": Out(1),
            "layer": Out(field_width(layers)),
            "kv": Out(1),
            "data": In(thresholds_layout()),
        })


class ThresholdTable(wiring.Component):
    """``layers x 2`` entries of four FP16 thresholds in a :class:`Memory`.

    A write (stream ``write``, ready whenever ``ready`` is) is stored only if its four
    thresholds are finite FP16 values ordered ``T_o_lo <= T_i_lo <= T_i_hi <= T_o_hi``
    (compared as exact values, so ``-0 == +0``, as
    :func:`oaken_hw.model.quantizer.check_thresholds`) and its layer is below ``layers``.
    Otherwise it is dropped and ``error`` is set (the cycle after) until ``clear_error``.

    The table resets to all-zero thresholds (a valid entry: every nonzero input is then an
    outer element), at power-up and after any ``sync`` reset: a memory keeps its contents
    across a reset, so the table walks its entries and writes zero into each, one per cycle
    through the write port, for :attr:`init_cycles` = ``2 * layers`` cycles. Meanwhile
    ``ready`` and ``write.ready`` are low and every read returns zero. A read of a layer at
    or above ``layers`` returns zero too (the golden model's thresholds for such a vector,
    whose append the MMU refuses).

    Parameters
    ----------
    layers : int
        Decoder layers (``cfg.model.layers``).
    read_ports : int
        Independent read ports (e.g. one for the quantizer, one for the dequantizer).

    Attributes
    ----------
    write : In(stream.Signature(threshold_write_layout(layers)))
    read : array of ``read_ports`` × In(ThresholdReadSignature(layers))
        Synchronous read: ``data`` one cycle after ``en``. A write taken in cycle ``c`` is
        stored in cycle ``c + 1``: a read with ``en`` in cycle ``c + 1`` or later returns it
        (reads are transparent to the store), one in cycle ``c`` the entry before it.
    error : Out(1)
        Sticky: a write was rejected.
    clear_error : In(1)
    ready : Out(1)
        High once the initialisation walk after reset is done.
    read_latency : int
        1.
    init_cycles : int
        ``2 * layers``: ``ready`` is high from the ``init_cycles``-th cycle out of reset on
        (counting the first as 0).
    """

    read_latency = 1

    def __init__(self, *, layers, read_ports=1):
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, not {layers!r}")
        if isinstance(read_ports, bool) or not isinstance(read_ports, int) or read_ports < 1:
            raise ValueError(f"read_ports must be a positive integer, not {read_ports!r}")
        self.layers = layers
        self.read_ports = read_ports
        self.init_cycles = 2 * layers
        super().__init__({
            "write": In(stream.Signature(threshold_write_layout(layers))),
            "read": In(ThresholdReadSignature(layers)).array(read_ports),
            "error": Out(1),
            "clear_error": In(1),
            "ready": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = 2 * self.layers
        m.submodules.mem = mem = Memory(shape=thresholds_layout(), depth=depth, init=[])
        wp = mem.write_port()

        # the initialisation walk: entry `walk` := 0, one per cycle
        walk = Signal(range(depth))
        done = Signal()
        with m.If(~done):
            m.d.sync += walk.eq(walk + 1)
            with m.If(walk == depth - 1):
                m.d.sync += done.eq(1)

        t = self.write.payload.t
        words = [t.o_lo, t.i_lo, t.i_hi, t.o_hi]
        finite = Signal()
        ordered = Signal()
        in_range = Signal()
        # ordered as exact values: on the 16-bit order keys (exact for finite values, -0 ==
        # +0), not on 41-bit units (three 41-bit comparators on the write path)
        keys = [fp16_key(w) for w in words]
        m.d.comb += [
            finite.eq(~(words[0][10:15].all() | words[1][10:15].all()
                        | words[2][10:15].all() | words[3][10:15].all())),
            ordered.eq((keys[0] <= keys[1]) & (keys[1] <= keys[2]) & (keys[2] <= keys[3])),
            in_range.eq(self.write.payload.layer < self.layers),
            self.write.ready.eq(done),
            self.ready.eq(done),
        ]
        ok = finite & ordered & in_range
        take = self.write.valid & done
        # A checked write is stored a cycle after it is taken: the check, from the ports,
        # and the block RAM's write enable are then a register apart (together they were
        # the quantization engine's critical path on ECP5, 13.6 ns, 9.2 ns of it routing).
        staged_en = Signal()
        staged_addr = Signal.like(wp.addr)
        staged_data = Signal.like(wp.data)
        # The walk goes through the same registers (its last zero is stored in the cycle
        # `ready` rises; a read then sees it, reads being transparent), so that the write
        # port's pins are driven by registers alone: with the walk's multiplexers between
        # the registers and the block RAM, router1 stalled on the quantization engine for
        # over 20 minutes at two seeds (docs/quant_engine.md, *Timing on ECP5*).
        m.d.sync += [staged_en.eq(Mux(done, take & ok, 1)),
                     staged_addr.eq(Mux(done, self.write.payload.layer * 2
                                        + self.write.payload.kv, walk)),
                     staged_data.eq(Mux(done, t.as_value(), 0))]
        m.d.comb += [wp.addr.eq(staged_addr), wp.data.eq(staged_data), wp.en.eq(staged_en)]
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.If(take & ~ok):
            m.d.sync += self.error.eq(1)

        for i in range(self.read_ports):
            rp = mem.read_port(transparent_for=(wp,))
            port = self.read[i]
            # a read made during the walk returns zero (the entry's value after reset) even
            # if the walk has not reached that entry yet; it holds while `en` is low, like
            # the port's data register. Zero also before the first read after reset, and for
            # a layer out of range (an address beyond the memory reads X in a 4-state
            # simulator and an aliased entry in hardware; the golden model reads zeros).
            zero = Signal(init=1, name=f"zero{i}")
            with m.If(port.en):
                m.d.sync += zero.eq(~done | (port.layer >= self.layers))
            m.d.comb += [
                rp.en.eq(port.en),
                rp.addr.eq(port.layer * 2 + port.kv),
                port.data.eq(Mux(zero, 0, rp.data)),
            ]
        return m
