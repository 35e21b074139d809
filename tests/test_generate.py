"""Verilog emission: deterministic, and the committed rtl_out/ is what the generator emits."""

import json
from pathlib import Path

import pytest

from oaken_hw.config import default_config
from oaken_hw.flow.designs import DESIGNS
from oaken_hw.generate import render

RTL_OUT = Path(__file__).parent.parent / "rtl_out"


@pytest.fixture(scope="module")
def rendered():
    return render(default_config())


def test_emitting_twice_gives_identical_files(rendered):
    assert render(default_config()) == rendered


def test_committed_rtl_out_matches_the_generator(rendered):
    committed = {p.name: p.read_text() for p in RTL_OUT.iterdir() if p.is_file()
                 and p.name != "README.md"}
    assert sorted(committed) == sorted(rendered), "rtl_out/ has other files: run oaken-hw generate"
    for name, text in rendered.items():
        assert committed[name] == text, f"rtl_out/{name} is stale: run `oaken-hw generate`"


def test_manifest_lists_every_design_and_port(rendered):
    manifest = json.loads(rendered["manifest.json"])
    assert set(manifest["designs"]) == set(DESIGNS)
    for name, d in manifest["designs"].items():
        text = rendered[d["file"]]
        assert f"module {name}(" in text
        for port in d["ports"]:
            kind = "input" if port["direction"] == "input" else "output"
            width = "" if port["width"] == 1 else rf"[{port['width'] - 1}:0] "
            assert f"{kind} {width}{port['name']};" in text, (name, port)
    assert manifest["config"] == default_config().to_dict()
