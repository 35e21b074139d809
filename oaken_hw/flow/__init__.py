"""The open FPGA flow: Yosys synthesis and nextpnr place-and-route of any component.

* :mod:`.targets` -- ``ecp5-85k``, ``ecp5-45k``, ``ice40-up5k``, ``xc7`` (synthesis only);
* :mod:`.harness` -- the I/O harness that keeps every datapath bit of a wide top alive;
* :mod:`.tools` -- running the YoWASP tools with progress, :class:`FlowError`;
* :mod:`.wasm_stack` -- the launcher that gives them a deeper WebAssembly stack;
* :mod:`.report` -- parsing Yosys ``stat -json`` and nextpnr ``--report`` into a
  :class:`Result`;
* :mod:`.run` -- :func:`synthesize`, the whole flow for one component and one target;
* :mod:`.designs` -- the registry of designs that ``oaken-hw synth`` runs;
* :mod:`.commands` -- the ``oaken-hw synth`` subcommand.

See ``docs/flow.md``.
"""

from .harness import Harness
from .report import Result
from .run import synthesize
from .targets import TARGETS, Target, get_target
from .tools import FlowError

__all__ = ["Harness", "Result", "synthesize", "TARGETS", "Target", "get_target", "FlowError"]
