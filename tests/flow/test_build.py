"""`oaken-hw build` end to end on the small iCE40 configuration, without place-and-route
(the P&R step is `oaken-hw synth`'s, tested in `test_flow_end_to_end.py`)."""

import json
from pathlib import Path

import pytest

from oaken_hw.cli import main
from oaken_hw.engine.sim import available

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ice40-2lane.toml"


def test_build_without_pnr_self_checks_and_summarises(tmp_path, capsys, monkeypatch):
    if not available("verilator"):
        pytest.skip("verilator not installed")
    monkeypatch.setenv("OAKEN_SIM_CACHE", str(Path(__file__).resolve().parents[2] / "tb"
                                              / "sim_build"))
    out = tmp_path / "rtl"
    assert main(["build", "--config", str(CONFIG), "--target", "ice40-up5k", "--no-pnr",
                 "--vectors", "100", "-o", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert "oaken_engine.v" in s["files"] and (out / "manifest.json").is_file()
    assert s["self_check"]["mismatches"] == 0 and s["self_check"]["vectors"] >= 100
    sus = s["sustained"]
    assert sus["mismatches"] == 0
    for side in ("write", "read"):
        assert 0 < sus[f"{side}_beats_per_cycle"] <= 1
        assert s[f"{side}_elements_per_s"] is None          # no Fmax without P&R
    # 2 lanes, 32 channels: the bundled real KV cut to this geometry
    assert 4 < s["effective_bits"]["k"] < 8 and 4 < s["effective_bits"]["v"] < 8
    assert s["synth"] is None
