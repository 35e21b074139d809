"""The I/O harness that lets any wide component be placed and routed on a real package.

Why a harness and not out-of-context place-and-route
----------------------------------------------------
The Oaken engine's ports are hundreds of bits wide (16 FP16 lanes in, codes, metadata and
memory buses out); an LFE5U-85F in CABGA381 has 197 user I/Os and an iCE40 UP5K in SG48 has
39. ``nextpnr-ecp5 --out-of-context`` exists but is marked experimental, leaves the clock
unpromoted (so Fmax is not that of a real build) and produces nothing that could be loaded
into a chip; ``nextpnr-ice40`` has no out-of-context mode at all. A harness works the same
way on every target, routes the real global clock and gives a bitstream-ready design, so
it is what the flow uses.

What the harness does
---------------------
* every **input** bit of the component (stream payloads, ``valid``, ``ready`` of output
  streams, ...) is driven by its own flip-flop of one long shift register fed from the
  single pin ``sdi``: no input is constant or shared, so synthesis cannot simplify the
  datapath;
* every **output** bit is folded into the single pin ``sdo`` by a *registered* XOR tree
  (4 inputs per LUT, a register after each level), so every output bit is observable and
  the tree never sits on the critical path;
* the component keeps its own hierarchy (Yosys ``keep_hierarchy`` on its module), so its
  LUT/FF/DSP/BRAM figures are read from its module alone and exclude the harness, and no
  optimisation crosses the boundary.

The harness's own cost is reported beside the component's (``harness`` in the result).
Its shift register and XOR registers are plain fabric, so ``pnr`` utilisation (whole chip)
is always larger than the component's figures by about ``in_bits`` FFs + ``out_bits/3``
LUTs/FFs.
"""

# no `from __future__ import annotations`: wiring reads the port annotations
from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Harness", "DUT_NAME"]

#: Submodule name of the component inside the harness (its Yosys module is ``<top>.dut``).
DUT_NAME = "dut"


class Harness(wiring.Component):
    """Wrap ``component`` between a scan-in shift register and a registered XOR tree.

    Parameters
    ----------
    component : wiring.Component
        Any component clocked by the ``sync`` domain.

    Attributes
    ----------
    sdi : In(1)
        Serial input feeding the input shift register.
    sdo : Out(1)
        XOR of every output bit of the component (registered, ``xor_levels`` cycles late).
    in_bits, out_bits : int
        Total input and output bits of the component.
    """

    sdi: In(1)
    sdo: Out(1)

    def __init__(self, component):
        # an object that failed to build is not an "unused elaboratable" worth a warning
        if not isinstance(component, wiring.Component):
            self._MustUse__silence = True
            raise TypeError(f"the harness wraps a wiring.Component, not {component!r}")
        self.component = component
        self._ins, self._outs = [], []
        for _path, member, value in component.signature.flatten(component):
            (self._ins if member.flow == In else self._outs).append(Value.cast(value))
        self.in_bits = sum(len(v) for v in self._ins)
        self.out_bits = sum(len(v) for v in self._outs)
        if self.out_bits == 0:
            self._MustUse__silence = True
            raise ValueError("the component has no output bits: nothing would survive synthesis")
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules[DUT_NAME] = self.component

        if self.in_bits:
            chain = Signal(self.in_bits, reset_less=True)
            m.d.sync += chain.eq(Cat(self.sdi, chain[:-1]))
            offset = 0
            for v in self._ins:
                m.d.comb += v.eq(chain[offset:offset + len(v)])
                offset += len(v)

        bits = [b for v in self._outs for b in v]
        level = 0
        while True:
            regs = []
            for k in range(0, len(bits), 4):
                r = Signal(name=f"xor{level}_{k // 4}", reset_less=True)
                group = bits[k:k + 4]
                acc = group[0]
                for b in group[1:]:
                    acc = acc ^ b
                m.d.sync += r.eq(acc)
                regs.append(r)
            bits, level = regs, level + 1
            if len(bits) == 1:
                break
        self.xor_levels = level
        m.d.comb += self.sdo.eq(bits[0])
        return m
