"""Sustained throughput, latency, and the Verilator lint of the emitted Verilog."""

import numpy as np
import pytest

from dequant_harness import SMALL, check, encode, run, thresholds_for
from oaken_hw.config import default_config
from oaken_hw.rtl.dequant import DequantEngine
from oaken_hw.verilog import LINT_WAIVERS, emit_verilog, verilator_lint


def _stream(cfg, x, th, table, where, mode):
    table[where] = th
    return encode(cfg, x, [where] * len(x), table, mode)


@pytest.mark.parametrize("cfg", [default_config(), SMALL], ids=["default", "small"])
def test_one_beat_per_cycle_for_any_outlier_count_and_latency(cfg):
    """Always-valid inputs, always-ready output: exactly one output beat per cycle in steady
    state with all-outlier vectors (sparse beats full), all-middle vectors (one empty
    sparse beat) and mixed vectors with one sparse beat per dense beat (the quantization
    engine's format); the first vector's latency equals ``DequantEngine.latency``."""
    rng = np.random.default_rng(21)
    V = cfg.vector_len
    table = thresholds_for(rng, cfg.model.layers)
    n = 12
    f16 = lambda a: np.asarray(a, np.float64).astype(np.float16)
    # thresholds (0, K): no middle band; (0, V): no inner band; the rest random
    all_out = _stream(cfg, f16(rng.standard_normal((n, V))), f16([-0.5, -0.5, .5, .5]),
                      table, (0, 0), "full")
    all_mid = _stream(cfg, f16(rng.uniform(-50, 50, (n, V))), f16([-1000, 0, 0, 1000]),
                      table, (0, 1), "full")
    mixed = encode(cfg, f16(rng.standard_t(2, (n, V))),
                   [(1 + i % (cfg.model.layers - 1), i % 2) for i in range(n)], table, "rows")
    for v in all_out:
        assert all(c == cfg.quant.lanes for _, c, _ in v.sparse)       # every element
    dut = DequantEngine(cfg=cfg)
    phases = [([all_out[0]], 0.0, 0.0), ([all_mid[0]], 0.0, 0.0), (all_out, 0.0, 0.0),
              (all_mid, 0.0, 0.0), (mixed, 0.0, 0.0),
              (all_out[:4] + all_mid[:4] + mixed[:4], 0.0, 0.0)]
    results = run(cfg, table, None, phases=phases, dut=dut, seed=22)
    K = cfg.beats_per_vector
    lat = results[0].first_out - results[0].first_in
    assert lat == dut.latency == K + 18, (lat, dut.latency)
    lat_min = results[1].first_out - results[1].first_in
    assert lat_min == dut.min_latency == K + 13, (lat_min, dut.min_latency)
    for (vecs, _, _), res in zip(phases, results):
        check(cfg, vecs, res)
    for name, res in zip(("all outliers", "all middle", "mixed", "alternating"), results[2:]):
        steady = (res.out_beats - 1) / (res.last_out - res.first_out)
        overall = res.out_beats / (res.last_out - res.first_in + 1)
        print(f"{name}: {res.out_beats} beats, steady {steady:.3f} beats/cycle, "
              f"overall {overall:.3f} (latency {lat} cycles, {K} beats/vector)")
        assert steady == 1.0, (name, steady)


def test_verilator_lint_is_clean_apart_from_the_waivers(cfg):
    text = emit_verilog(DequantEngine(cfg=cfg), "oaken_dequant_engine")
    problems = verilator_lint(text, "oaken_dequant_engine", waivers=LINT_WAIVERS)
    # verilator prints a final "%Error: Exiting due to N warning(s)" only when N > 0
    assert problems == [], "\n".join(problems[:20])
