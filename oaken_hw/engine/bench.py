"""cocotb bench of the emitted ``oaken_engine`` Verilog: plays a plan, records every output.

It is a cocotb test module (``oaken_hw.engine.sim`` runs it on Verilator or Icarus) and
knows the engine's ports (``docs/engine.md``) but not its semantics: the plan
(:mod:`oaken_hw.engine.scenario`) carries every input payload as an integer, the bench
records every output payload as an integer, and the pytest side compares them with
:class:`~oaken_hw.engine.model.EngineModel`.

Behind ``wmem_*`` / ``rmem_*`` sits a memory model: random ``ready`` on ``cmd``, ``wdata``
and ``rmem_cmd``, read data returned in command order after a random latency of 1 to
``mem_latency`` cycles, with random gaps in ``rmem_rdata.valid``. A write is applied when both
its command and its data were taken; a read returns the memory as it was when its command
was taken.

Plan (JSON, path in ``$OAKEN_ENGINE_PLAN``)::

    {"seed": int, "max_cycles": int, "reset_cycles": int, "hang_cycles": int,
     "oop_hold": int, "init_cycles": int,
     "stream": {"p_valid", "p_ready", "p_mem", "p_rdata": float, "mem_latency": int},
     "phases": [{"kv_in" | "read" | "free" | "thresholds": [payload as hex str],
                 "free_on_oop": [free payloads], "expect": {"write_done": n, ...},
                 "settle": cycles, "reset_after": cycles, "stream": {overrides}}, ...],
     "result": "<path>"}

A phase ends (barrier) when all its inputs were taken and the outputs it expects arrived,
then ``settle`` idle cycles pass. ``free_on_oop``: one free is sent each time
``status__out_of_pages`` has stayed high for ``oop_hold`` cycles with no free outstanding.
``reset_after``: ``rst`` is raised that many cycles into the phase for ``reset_cycles``
cycles; the rest of the phase is dropped, the memory controller's queues too (it shares the
reset), and the next phase starts once ``status__ready`` is high. ``init_cycles``: after every
reset ``status__ready`` must rise that many cycles after ``rst`` falls
(:attr:`oaken_hw.engine.top.OakenEngine.init_cycles`).
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

INPUTS = ("kv_in", "read", "free", "thresholds")
OUTPUTS = ("write_done", "o", "read_done", "free_done")
STATUS = ("free_pages", "out_of_pages", "ready", "vectors_written", "write_errors",
          "tokens_read", "read_errors", "malformed", "bad_inputs", "config_error")
DEFAULT_STREAM = {"p_valid": 0.7, "p_ready": 0.7, "p_mem": 0.7, "p_rdata": 0.7,
                  "mem_latency": 8}


class Port:
    """Cached handles of one stream, writing a signal only when its value changes."""

    def __init__(self, dut, name):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self._v = self._r = self._p = None

    def set_valid(self, v):
        if v != self._v:
            self.valid.value = self._v = v

    def set_ready(self, r):
        if r != self._r:
            self.ready.value = self._r = r

    def set_payload(self, p):
        if p != self._p:
            self.payload.value = self._p = p


def _field(payload, offset, width):
    return (payload >> offset) & ((1 << width) - 1)


@cocotb.test()
async def engine(dut):
    with open(os.environ["OAKEN_ENGINE_PLAN"]) as f:
        plan = json.load(f)
    rng = random.Random(plan["seed"])
    n = plan["beat_bytes"]
    addr_bits = plan["addr_bits"]
    ins = {p: Port(dut, p) for p in INPUTS}
    outs = {p: Port(dut, p) for p in OUTPUTS}
    wcmd, wdata = Port(dut, "wmem_cmd"), Port(dut, "wmem_wdata")
    rcmd, rdata = Port(dut, "rmem_cmd"), Port(dut, "rmem_rdata")
    status = {s: getattr(dut, f"status__{s}") for s in STATUS}
    oop, ready_sig = status["out_of_pages"], status["ready"]
    dut.status__clear.value = 0

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for p in ins.values():
        p.set_valid(0)
    for p in (*outs.values(), wcmd, wdata, rcmd):
        p.set_ready(0)
    rdata.set_valid(0)

    got = {p: [] for p in OUTPUTS}
    debug = bool(plan.get("debug"))
    dbg = {"rd_offer": 0, "rd_ready": 0, "rd_valid_sig": 0}
    memlog, memory = [], {}
    errors = []
    phases_out = []
    cycle = 0

    async def reset():
        nonlocal cycle
        dut.rst.value = 1
        for p in ins.values():
            p.set_valid(0)
        rdata.set_valid(0)
        for _ in range(plan.get("reset_cycles", 3)):
            await RisingEdge(dut.clk)
            cycle += 1
        dut.rst.value = 0
        waited = 0
        while True:
            await RisingEdge(dut.clk)
            cycle += 1
            waited += 1
            await ReadOnly()
            if int(ready_sig.value):
                break
        if "init_cycles" in plan and waited != plan["init_cycles"]:
            errors.append(f"cycle {cycle}: status__ready rose {waited} cycles after reset, "
                          f"not init_cycles = {plan['init_cycles']}")

    await reset()
    start_cycle = cycle
    pending_out = {}                      # output port -> payload offered but not taken
    cmdq, dataq, readq = [], [], []       # memory controller queues
    rd_offer = False
    rq_time = 0

    for index, ph in enumerate(plan["phases"]):
        sp = {**DEFAULT_STREAM, **plan.get("stream", {}), **ph.get("stream", {})}
        p_valid, p_ready, p_mem = sp["p_valid"], sp["p_ready"], sp["p_mem"]
        p_rdata, latency = sp["p_rdata"], sp["mem_latency"]
        queues = {p: [int(v, 16) for v in ph.get(p, [])] for p in INPUTS}
        qpos = dict.fromkeys(INPUTS, 0)
        holding = dict.fromkeys(INPUTS, False)
        oop_frees = [int(v, 16) for v in ph.get("free_on_oop", [])]
        expect = ph.get("expect", {})
        base = {p: len(got[p]) for p in OUTPUTS}
        oop_run = 0
        first = {"kv_in": None, "o": None}
        last = {"kv_in": None, "o": None}
        count = {"kv_in": 0, "o": 0}
        phase_start = cycle
        reset_at = ph.get("reset_after")
        did_reset = False
        idle = 0
        settle = None
        hung = False
        while True:
            await RisingEdge(dut.clk)
            cycle += 1
            if reset_at is not None and cycle - phase_start > reset_at:
                # after the edge, not in the read-only phase of the previous cycle
                await reset()
                did_reset = True
                break
            if cycle > plan["max_cycles"]:
                errors.append(f"phase {index}: max_cycles ({plan['max_cycles']}) reached")
                hung = True
                break
            # -- drive ----------------------------------------------------------------------
            for p in INPUTS:
                q, port = queues[p], ins[p]
                if holding[p] or (qpos[p] < len(q) and rng.random() < p_valid):
                    port.set_payload(q[qpos[p]])
                    port.set_valid(1)
                    holding[p] = True
                else:
                    port.set_valid(0)
            for p in OUTPUTS:
                outs[p].set_ready(int(rng.random() < p_ready))
            wcmd.set_ready(int(p_mem >= 1 or rng.random() < p_mem))
            wdata.set_ready(int(p_mem >= 1 or rng.random() < p_mem))
            rcmd.set_ready(int(p_mem >= 1 or rng.random() < p_mem))
            if not rd_offer and readq and readq[0][0] <= cycle \
                    and (p_rdata >= 1 or rng.random() < p_rdata):
                rd_offer = True
                rdata.set_payload(readq[0][1])
            rdata.set_valid(int(rd_offer))
            # -- sample ---------------------------------------------------------------------
            await ReadOnly()
            moved = False
            for p in INPUTS:
                if holding[p] and int(ins[p].ready.value):
                    qpos[p] += 1
                    holding[p] = False
                    moved = True
                    if p == "kv_in":
                        count["kv_in"] += 1
                        first["kv_in"] = first["kv_in"] or cycle
                        last["kv_in"] = cycle
            for p in OUTPUTS:
                port = outs[p]
                if int(port.valid.value):
                    val = int(port.payload.value)
                    if p in pending_out and pending_out[p] != val:
                        errors.append(f"cycle {cycle}: {p} payload changed before it was taken")
                    if port._r:
                        got[p].append(val)
                        pending_out.pop(p, None)
                        moved = True
                        if p == "o":
                            count["o"] += 1
                            first["o"] = first["o"] or cycle
                            last["o"] = cycle
                    else:
                        pending_out[p] = val
                elif p in pending_out:
                    errors.append(f"cycle {cycle}: {p} valid dropped before the transfer")
                    pending_out.pop(p)
            if wcmd._r and int(wcmd.valid.value):
                c = int(wcmd.payload.value)
                if not c & 1:
                    errors.append(f"cycle {cycle}: wmem_cmd with we = 0")
                cmdq.append(c >> 1)
                moved = True
            if wdata._r and int(wdata.valid.value):
                dataq.append(int(wdata.payload.value))
                moved = True
            while cmdq and dataq:
                addr, d = cmdq.pop(0), dataq.pop(0)
                we = d >> (8 * n)
                data = d & ((1 << 8 * n) - 1)
                old = memory.get(addr, 0)
                mask = 0
                for lane in range(n):
                    if we >> lane & 1:
                        mask |= 0xFF << (8 * lane)
                memory[addr] = (old & ~mask) | (data & mask)
                memlog.append((addr, data & mask, we))
            if rcmd._r and int(rcmd.valid.value):
                c = int(rcmd.payload.value)
                if c & 1:
                    errors.append(f"cycle {cycle}: rmem_cmd with we = 1")
                rq_time = max(rq_time, cycle + rng.randint(1, latency))
                readq.append((rq_time, memory.get((c >> 1) & ((1 << addr_bits) - 1), 0)))
                moved = True
            if debug:
                dbg["rd_offer"] += rd_offer
                dbg["rd_ready"] += int(rdata.ready.value)
                dbg["rd_valid_sig"] += int(rdata.valid.value)
            if rd_offer and int(rdata.ready.value):
                readq.pop(0)
                rd_offer = False
                moved = True
            # -- out of pages: free on demand -----------------------------------------------
            if oop_frees:
                if int(oop.value):
                    oop_run += 1
                else:
                    oop_run = 0
                outstanding = len(queues["free"]) > len(got["free_done"]) - base["free_done"]
                if oop_run >= plan.get("oop_hold", 32) and not outstanding:
                    queues["free"].append(oop_frees.pop(0))
                    oop_run = 0
            # -- barrier --------------------------------------------------------------------
            inputs_done = all(qpos[p] == len(queues[p]) for p in INPUTS) and not oop_frees
            outputs_done = all(len(got[p]) - base[p] >= k for p, k in expect.items())
            if inputs_done and outputs_done and reset_at is None:
                settle = ph.get("settle", 0) if settle is None else settle
                if settle <= 0:
                    break
                settle -= 1
            idle = 0 if moved else idle + 1
            if idle > plan.get("hang_cycles", 50_000):
                errors.append(f"phase {index}: nothing moved for {idle} cycles "
                              f"(inputs taken {qpos}, outputs "
                              f"{ {p: len(got[p]) - base[p] for p in OUTPUTS} }, "
                              f"expected {expect})")
                hung = True
                break
        if did_reset:
            pending_out.clear()
            cmdq, dataq, readq = [], [], []
            rd_offer = False
        phases_out.append({
            "end": {p: len(got[p]) for p in OUTPUTS}, "mem_end": len(memlog),
            "cycles": cycle - phase_start, "reset": did_reset,
            "kv_in": count["kv_in"], "kv_in_first": first["kv_in"], "kv_in_last": last["kv_in"],
            "o": count["o"], "o_first": first["o"], "o_last": last["o"],
            "leftover_reads": len(readq), "leftover_writes": [len(cmdq), len(dataq)]})
        if not did_reset and (readq or cmdq or dataq):
            errors.append(f"phase {index}: memory queues not empty at the barrier "
                          f"({len(readq)} reads, {len(cmdq)} commands, {len(dataq)} data)")
        if hung:
            break

    await RisingEdge(dut.clk)
    await ReadOnly()
    final = {s: int(status[s].value) for s in STATUS}
    with open(plan["result"], "w") as f:
        json.dump({"cycles": cycle - start_cycle, "errors": errors, "status": final,
                   "outputs": {p: [format(v, "x") for v in vs] for p, vs in got.items()},
                   "memlog": [[a, format(d, "x"), w] for a, d, w in memlog],
                   "memory": {str(a): format(v, "x") for a, v in memory.items()},
                   "phases": phases_out, "debug": dbg}, f)
