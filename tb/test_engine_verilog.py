"""The engine top's emitted Verilog against the golden engine model (``docs/engine.md``).

Every ``write_done``, ``o`` beat, ``read_done`` and ``free_done`` payload, every memory write
(address, data under the byte enables, byte enables), the final memory image and the
counters are compared with :class:`~oaken_hw.engine.model.EngineModel`, with random
valid/ready gaps on every stream and a memory with random latency
(:mod:`oaken_hw.engine.bench`).
"""

from pathlib import Path

import pytest

from oaken_hw.config import default_config
from oaken_hw.engine.sim import available, bundled_kv, describe, run_builder, simulate

from engine_scenario import out_of_pages_scenario, reset_scenario

CACHE = Path(__file__).parent / "sim_build"


def _skip_unless(sim):
    if not available(sim):
        pytest.skip(f"{sim} not installed")


def _check(mism):
    assert not mism, f"{len(mism)} mismatches; first: {describe(mism[0])}"


@pytest.mark.slow
def test_default_config_10k_vectors_verilator(tmp_path):
    _skip_unless("verilator")
    res = simulate(default_config(), simulator="verilator", vectors=10_000, seed=3,
                   workdir=tmp_path, cache=CACHE)
    assert res["vectors"] >= 10_000
    assert res["mismatches"] == 0, describe(res["first_mismatch"])
    print(f"\nwrite {res['write_beats_per_cycle']:.3f} beats/cycle, read "
          f"{res['read_beats_per_cycle']:.3f} beats/cycle, {res['cycles']} cycles, "
          f"{res['sim_vectors_per_s']:.0f} vectors/s")
    # a vector of 12 beats per 12-cycle MMU append, a token of 4 beats per cycle or so:
    # these catch a gross loss of throughput, not a cycle
    assert res["write_beats_per_cycle"] > 0.5
    assert res["read_beats_per_cycle"] > 0.3


@pytest.mark.slow
def test_default_config_sustained_throughput_verilator(tmp_path):
    """One long history of real keys (the bundled slice, repeated) on always-ready memory and
    streams (``--scenario throughput``)."""
    _skip_unless("verilator")
    cfg = default_config()
    kv, th = bundled_kv(cfg, tmp_path)
    res = simulate(cfg, simulator="verilator", vectors=128, seed=2, kv=str(kv),
                   thresholds=str(th), workdir=tmp_path, cache=CACHE, scenario="throughput")
    assert res["mismatches"] == 0, describe(res["first_mismatch"])
    print(f"\nsustained: write {res['write_beats_per_cycle']:.3f}, read "
          f"{res['read_beats_per_cycle']:.3f} beats/cycle")
    # cycle counts, not time: the design's steady state is about 0.99 on both paths
    assert res["write_beats_per_cycle"] > 0.9 and res["read_beats_per_cycle"] > 0.9


def test_default_config_short_icarus(tmp_path):
    _skip_unless("icarus")
    res = simulate(default_config(), simulator="icarus", vectors=64, seed=5,
                   workdir=tmp_path, cache=CACHE)
    assert res["mismatches"] == 0, describe(res["first_mismatch"])


@pytest.mark.parametrize("seed", [1, 2])
def test_out_of_pages_stall_and_recovery(seed, tmp_path):
    _skip_unless("verilator")
    cfg, b = out_of_pages_scenario(seed=seed)
    _, mism, _ = run_builder(b, cfg, workdir=tmp_path, cache=CACHE)
    _check(mism)


@pytest.mark.parametrize("reset_after", [40, 300])
def test_reset_mid_stream(reset_after, tmp_path):
    _skip_unless("verilator")
    cfg, b = reset_scenario(reset_after=reset_after)
    res, mism, _ = run_builder(b, cfg, workdir=tmp_path, cache=CACHE)
    _check(mism)
    assert any(p["reset"] for p in res["phases"])
