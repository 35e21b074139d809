"""A generic cocotb bench: plays input streams into a design and records its output streams.

It knows nothing about Oaken: the pytest side (``tb/harness.py``) packs every beat's payload
into an integer with the Amaranth layouts, writes a plan file, runs this bench on the
emitted Verilog, and compares what it recorded with the golden model. Every stream gets
random valid (inputs) and ready (outputs) gaps from the plan's seed; a valid, once raised,
holds its payload until the transfer, as the stream rules require.

Plan (JSON, path in ``$OAKEN_TB_PLAN``)::

    {"seed": int, "p_valid": float, "p_ready": float, "max_cycles": int,
     "reset_cycles": int,
     "phases":  [{"<port prefix>": [payload ints as decimal strings]}, ...],
     "outputs": {"<port prefix>": expected beat count},
     "constants": {"<port name>": int},
     "result": "<path of the JSON to write>"}

Phases are played one after the other (a phase ends when all its beats are taken), e.g.
configuration writes before data; outputs are recorded throughout. Port names are the
emitted ones: ``<prefix>__valid``, ``<prefix>__ready``,
``<prefix>__payload``.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from oaken_hw.engine.bench import Port


@cocotb.test()
async def play(dut):
    plan = json.loads(open(os.environ["OAKEN_TB_PLAN"]).read())
    rng = random.Random(plan["seed"])
    p_valid, p_ready = plan["p_valid"], plan["p_ready"]
    phases = [{k: [int(v) for v in vs] for k, vs in ph.items()} for ph in plan["phases"]]
    ports = sorted({p for ph in phases for p in ph})
    expect = plan["outputs"]
    # cached handles, each signal written only when its value changes: the per-cycle
    # Python work is what bounds a 10k-vector run
    ins = {p: Port(dut, p) for p in ports}
    outs = {p: Port(dut, p) for p in expect}

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name, value in plan.get("constants", {}).items():
        getattr(dut, name).value = value
    for port in ins.values():
        port.set_valid(0)
    for port in outs.values():
        port.set_ready(0)
    dut.rst.value = 1
    for _ in range(plan.get("reset_cycles", 2)):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    got = {p: [] for p in expect}
    consumed = []
    cycles = 0
    phase = 0
    inputs = phases[0] if phases else {}
    pos = {p: 0 for p in ports}           # next beat to offer
    holding = {p: False for p in ports}   # valid raised and not yet taken
    while any(len(got[p]) < n for p, n in expect.items()) or phase < len(phases):
        await RisingEdge(dut.clk)
        cycles += 1
        if cycles > plan["max_cycles"]:
            break
        if phase < len(phases) and all(pos[p] == len(v) for p, v in inputs.items()):
            consumed.append(dict(pos))
            phase += 1
            inputs = phases[phase] if phase < len(phases) else {}
            pos = {p: 0 for p in ports}
        for p, port in ins.items():
            beats = inputs.get(p, [])
            if pos[p] < len(beats) and (holding[p] or rng.random() < p_valid):
                port.set_payload(beats[pos[p]])
                port.set_valid(1)
                holding[p] = True
            else:
                port.set_valid(0)
        for port in outs.values():
            port.set_ready(int(rng.random() < p_ready))
        await ReadOnly()
        for p, port in ins.items():
            if holding[p] and int(port.ready.value):
                pos[p] += 1
                holding[p] = False
        for p, port in outs.items():
            if port._r and int(port.valid.value):
                got[p].append(str(int(port.payload.value)))

    with open(plan["result"], "w") as f:
        json.dump({"cycles": cycles, "outputs": got, "phases_done": len(consumed)}, f)
