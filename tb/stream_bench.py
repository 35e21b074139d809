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

The outputs are checked against the stream rules: an output offered while stalled (valid,
not ready at an edge) must still be valid with the same payload at the next edge, and no
output may offer more beats than expected, in the run or in a drain after it (inputs idle,
every ready high for ``drain_cycles``, default twice the observed latency, at least 16).
Violations go to the result's ``errors`` and fail the cocotb test (so ``play`` fails).
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
    errors = []
    held = {p: None for p in expect}      # payload offered while stalled at the last edge
    first_in = last_in = None             # cycles of the first / last input transfer
    first_out = last_out = None           # cycles of the first valid / last transfer out
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
            if phase < len(phases):       # the latency is measured on the last phase
                first_in = first_out = None
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
                first_in = first_in or cycles
                last_in = cycles
        for p, port in outs.items():
            v = int(port.valid.value)
            payload = int(port.payload.value) if v else None
            # stream rules: once valid, a beat holds its payload until it is taken
            if held[p] is not None and payload != held[p]:
                errors.append(f"cycle {cycles}: {p} " + (
                    "valid dropped before the transfer" if payload is None else
                    f"payload changed from {held[p]} to {payload} before the transfer"))
            held[p] = payload if v and not port._r else None
            if v:
                first_out = first_out or cycles
            if v and port._r:
                got[p].append(str(payload))
                last_out = cycles
                if len(got[p]) == expect[p] + 1:
                    errors.append(f"cycle {cycles}: {p} beat beyond the {expect[p]} expected")

    drain = 0
    if cycles <= plan["max_cycles"]:
        # drain: inputs idle, every ready high; no output may offer another beat
        latency = max((first_out or 0) - (first_in or 0), (last_out or 0) - (last_in or 0), 0)
        drain = plan.get("drain_cycles", max(16, 2 * latency))
        for p in outs:
            if held[p] is not None:      # every count is reached: a stalled beat is extra
                errors.append(f"cycle {cycles}: {p} offered a beat ({held[p]}) after the "
                              f"{expect[p]} expected")
        for i in range(drain):
            await RisingEdge(dut.clk)
            for port in ins.values():
                port.set_valid(0)
            for port in outs.values():
                port.set_ready(1)
            await ReadOnly()
            for p, port in outs.items():
                if int(port.valid.value):
                    errors.append(f"drain cycle {i + 1} of {drain}: {p} offered a beat "
                                  f"({int(port.payload.value)}) after the "
                                  f"{expect[p]} expected")

    with open(plan["result"], "w") as f:
        json.dump({"cycles": cycles, "outputs": got, "phases_done": len(consumed),
                   "drain_cycles": drain, "errors": errors}, f)
    assert not errors, f"{len(errors)} stream-rule violations; first: {errors[0]}"
