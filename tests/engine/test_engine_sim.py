"""The engine bench's pytest side without a simulator: plans, the comparison and the CLI."""

import copy
from pathlib import Path

import numpy as np
import pytest

from oaken_hw.cli import main
from oaken_hw.config import default_config
from oaken_hw.engine.scenario import (PlanBuilder, default_scenario, throughput_scenario,
                                      tokens_in_pages, unpack_payload)
from oaken_hw.engine.sim import compare, describe, throughput


def perfect_result(b):
    """The bench result an engine that matches the model exactly would give."""
    outs = {p: [] for p in ("write_done", "o", "read_done", "free_done")}
    memlog, phases, image = [], [], {}
    for exp in b.expected:
        for p in outs:
            outs[p] += [format(v, "x") for v, _ in exp[p]]
        for (a, d, we), _ in exp["mem"]:
            memlog.append([a, format(int.from_bytes(d, "little"), "x"), we])
            mask = sum(0xFF << 8 * i for i in range(16) if we >> i & 1)
            image[a] = image.get(a, 0) & ~mask | int.from_bytes(d, "little") & mask
        phases.append({"end": {p: len(outs[p]) for p in outs}, "mem_end": len(memlog),
                       "reset": False, "kv_in": 10, "kv_in_first": 1, "kv_in_last": 20,
                       "o": 10, "o_first": 1, "o_last": 10})
    return {"outputs": outs, "memlog": memlog, "phases": phases, "errors": [],
            "memory": {str(a): format(v, "x") for a, v in image.items()},
            "status": b.model.status(), "cycles": 1}


@pytest.fixture(scope="module")
def scenario():
    return default_scenario(default_config(), 1200, seed=4)


def test_default_scenario_shape(scenario):
    b = scenario
    assert b.vectors >= 1200 and b.reads > 0
    names = [p["name"] for p in b.phases]
    assert names[0] == "thresholds" and "measure writes" in names and "frees" in names
    st = b.model.status()
    assert st["config_error"] == 1 and st["write_errors"] > 0 and st["read_errors"] > 0
    assert st["bad_inputs"] > 0 and st["tokens_read"] > 0
    # every read whose status is OK outputs whole tokens; framing of o
    P = b.ports
    o = [unpack_payload(P.o, v) for exp in b.expected for v, _ in exp["o"]]
    assert [x["last"] for x in o[:8]] == [0, 0, 0, 1] * 2


def test_compare_accepts_the_model_and_names_the_first_mismatch(scenario):
    b = scenario
    good = perfect_result(b)
    assert compare(b, good) == []
    assert throughput(good, b)["write_beats_per_cycle"] == 0.5
    bad = copy.deepcopy(good)
    i = 7
    v = int(bad["outputs"]["o"][i], 16) ^ (1 << b.ports.o["malformed"].offset)
    bad["outputs"]["o"][i] = format(v, "x")
    bad["memlog"][3][2] ^= 1
    m = compare(b, bad)
    first = [x for x in m if x["port"] == "o"][0]
    assert first["field"] == "malformed" and first["index"] == i and "token" in first["what"]
    mem = [x for x in m if x["port"] == "mem"][0]
    assert mem["field"] == "byte_enables" and mem["index"] == 3
    assert "expected" in describe(m[0])


def test_a_small_mmu_caps_the_scenario_instead_of_failing_it():
    # configs/ice40-2lane.toml: 2 sequences x 8 groups, 64 pages of 256 bytes; a dense or
    # metadata page holds 16 tokens and each sparse stream may take 2 pages. At 16 tokens
    # a group needs 1 + 2 + 1 pages (2 x 8 x 4 = 64: all of them); at 17, 2 + 2 + 2.
    from oaken_hw.config import load_config
    cfg = load_config(Path(__file__).parents[2] / "configs" / "ice40-2lane.toml")
    assert tokens_in_pages(cfg, 2) == 16 and tokens_in_pages(default_config(), 4) == 384
    b = default_scenario(cfg, 2000, seed=1)          # 125 tokens asked: capped, not refused
    assert max(b.written(s, 0, 0) for s in range(2)) <= 16


def test_builder_refuses_timing_dependent_phases():
    cfg = default_config()
    b = PlanBuilder(cfg)
    x = np.zeros((1, cfg.vector_len), np.float16)
    with pytest.raises(ValueError, match="threshold"):
        b.phase(thresholds=[(0, 0, [-1, 0, 0, 1])], writes=([{"seq": 0, "layer": 0, "kv": 0,
                                                             "pos": 0}], x))
    with pytest.raises(ValueError, match="frees"):
        b.phase(frees=[0], writes=([{"seq": 0, "layer": 0, "kv": 0, "pos": 0}], x))
    b.phase(writes=([{"seq": 0, "layer": 0, "kv": 0, "pos": 0}], x))
    with pytest.raises(ValueError, match="own phase"):
        b.phase(writes=([{"seq": 0, "layer": 0, "kv": 0, "pos": 1}], x),
                reads=[(0, 0, 0, 0, 0, 2)])


def test_throughput_scenario_reads_every_head_of_one_long_history():
    cfg = default_config()
    b = throughput_scenario(cfg, 40, seed=2)
    assert [p["name"] for p in b.phases] == ["thresholds", "measure writes", "measure reads"]
    assert b.vectors == 40 and b.reads == 2 * cfg.model.kv_heads
    beats = cfg.model.head_dim // cfg.quant.lanes
    o = b.expected[2]["o"]
    assert len(o) == 2 * cfg.model.kv_heads * 40 * beats
    assert all(st == 0 for v, _ in b.expected[1]["write_done"]
               for st in [unpack_payload(b.ports.write_done, v)["status"]])
    with pytest.raises(ValueError, match="tokens"):
        throughput_scenario(cfg, cfg.mmu.max_tokens + 1, seed=2)


@pytest.mark.parametrize("argv,msg", [
    (["sim", "--kv", "x.npz"], "go together"),
    (["sim", "--vectors", "0"], "vectors"),
    (["sim", "--scenario", "throughput", "--vectors", "100000"], "max_tokens"),
])
def test_sim_cli_errors(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err
