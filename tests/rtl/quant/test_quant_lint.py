"""The emitted Verilog of the quantization engine and the shared blocks passes
``verilator --lint-only -Wall`` apart from a short waiver list.

Waivers (each is a property of Amaranth's Verilog backend, not of this design):

* ``PROCASSINIT`` -- Amaranth declares every register as ``reg x = init;`` and assigns it in
  an ``always`` block: that is how it gives registers their reset/initial value.
* ``UNUSEDSIGNAL`` -- the backend names intermediate nets and every field of a struct view
  (``payload.header``...) as wires; a net of which only a slice is used, or a field alias
  that nothing reads, is reported although it costs no logic.
* ``WIDTHEXPAND`` / ``WIDTHTRUNC`` -- the backend writes mixed-width operators
  (``a + b[3:0]``, ``!x`` for "x == 0", ``{1'h0, x} << s``) relying on Verilog's implicit
  extension, which has exactly Amaranth's semantics; Verilator flags each one.
* ``DECLFILENAME`` -- all submodules go into one file with hierarchical names
  (``top.classifier``), which never match the file name.
"""

import pytest

from oaken_hw.config import config_from_dict, default_config
from oaken_hw.rtl.common import FP16ToUnits, ThresholdTable
from oaken_hw.rtl.quant import QuantEngine
from oaken_hw.verilog import emit_verilog, verilator_lint

WAIVERS = ("PROCASSINIT", "UNUSEDSIGNAL", "WIDTHEXPAND", "WIDTHTRUNC", "DECLFILENAME")


DESIGNS = {
    "oaken_quant_engine": lambda: QuantEngine(cfg=default_config()),
    "oaken_quant_engine_small":
        lambda: QuantEngine(cfg=config_from_dict({"quant": {"lanes": 4, "scope": "head"}})),
    "oaken_threshold_table": lambda: ThresholdTable(layers=30, read_ports=2),
    "oaken_fp16_to_units": lambda: FP16ToUnits(),
}


@pytest.mark.parametrize("top", list(DESIGNS))
def test_verilator_lint(top):
    text = emit_verilog(DESIGNS[top](), top)
    assert verilator_lint(text, top, waivers=WAIVERS) == []
