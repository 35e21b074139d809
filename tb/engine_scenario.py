"""Pytest-side scenarios of the engine bench beyond ``oaken-hw sim``'s default one: a small
configuration whose pool runs out (stall and recovery by frees), and a reset mid-stream.

Each returns a :class:`~oaken_hw.engine.scenario.PlanBuilder` whose phases carry the model's
expectations; :func:`oaken_hw.engine.sim.run_builder` runs and compares it.
"""

import numpy as np

from oaken_hw.config import config_from_dict
from oaken_hw.engine.scenario import PlanBuilder, random_thresholds, random_vectors


def small_config():
    """2 layers x 2 heads x head_dim 64, 256-byte pages (8 dense tokens of a head): a
    sequence's first token takes ~20 pages (the dense, sparse and meta streams of 4 groups),
    16 tokens ~34, so three sequences run a 64-page pool dry."""
    return config_from_dict({
        "model": {"layers": 2, "kv_heads": 2, "head_dim": 64},
        "quant": {"sparse_block": 64, "lanes": 16},
        "mmu": {"sequences": 3, "max_tokens": 32, "pages": 64, "page_bytes": 256,
                "sparse_pages": 4},
    })


def _tokens(cfg, seq, t0, t1, rng, pool):
    hs, xs = [], []
    for t in range(t0, t1):
        for layer in range(cfg.model.layers):
            for kv in (0, 1):
                hs.append({"seq": seq, "layer": layer, "kv": kv, "pos": t,
                           "head": int(rng.integers(cfg.model.kv_heads))})
                xs.append(pool[len(xs) % len(pool)])
    return hs, np.array(xs)


def _all_reads(b, cfg, seqs):
    return [(s, l, k, h, 0, b.written(s, l, k)) for s in seqs for l in range(cfg.model.layers)
            for k in (0, 1) for h in range(cfg.model.kv_heads)]


def _thresholds(cfg, seed):
    th = random_thresholds(cfg, seed)
    return [(l, k, th[l, k]) for l in range(cfg.model.layers) for k in (0, 1)]


def out_of_pages_scenario(seed=1, stream=None):
    """Seq 0 fills most of the pool, seq 1 runs it dry while seq 2 waits behind it; the
    bench frees seq 0 when ``out_of_pages`` holds; everything is read back."""
    cfg = small_config()
    rng = np.random.default_rng(seed)
    pool = random_vectors(cfg, 256, seed)
    b = PlanBuilder(cfg, seed=seed, stream=stream)
    b.phase(thresholds=_thresholds(cfg, seed), name="thresholds")
    b.phase(writes=_tokens(cfg, 0, 0, 16, rng, pool), name="seq 0")
    b.phase(reads=_all_reads(b, cfg, [0]), name="read seq 0")
    hs, xs = [], []
    for t in range(4):                    # seq 1 and 2 interleaved, token by token
        for s in (1, 2):
            h, x = _tokens(cfg, s, t, t + 1, rng, pool[7 * s + t:])
            hs += h
            xs.append(x)
    b.phase(writes=(hs, np.concatenate(xs)), free_on_oop=[0],
            name="seq 1 and 2 until out of pages")
    assert b.phases[-1].get("free_on_oop"), "the scenario did not run out of pages"
    b.phase(reads=_all_reads(b, cfg, [1, 2]) + [(0, 0, 0, 0, 0, 1)], name="read 1, 2")
    b.phase(frees=[1, 2, 1], name="free all")
    b.phase(writes=_tokens(cfg, 0, 0, 3, rng, pool[11:]), name="seq 0 again")
    b.phase(reads=_all_reads(b, cfg, [0]), name="read seq 0 again")
    return cfg, b


def reset_scenario(seed=2, reset_after=150, stream=None):
    """Writes and reads cut by a reset mid-stream; then the engine starts from power-up
    (thresholds zero until rewritten), writes and reads again. The configuration is the
    out-of-pages scenario's (one Verilator build for both); these writes never fill it."""
    cfg = small_config()
    rng = np.random.default_rng(seed)
    pool = random_vectors(cfg, 256, seed)
    b = PlanBuilder(cfg, seed=seed, stream=stream)
    b.phase(thresholds=_thresholds(cfg, seed), name="thresholds")
    b.phase(writes=_tokens(cfg, 0, 0, 4, rng, pool), name="seq 0")
    h, x = _tokens(cfg, 1, 0, 4, rng, pool[5:])
    b.phase(writes=(h, x), reads=_all_reads(b, cfg, [0]), reset_after=reset_after,
            name="cut by reset")
    # power-up state: seq 0 is gone, thresholds are zero
    b.phase(writes=_tokens(cfg, 1, 0, 3, rng, pool[9:]), reads=[(0, 0, 0, 0, 0, 0)],
            name="after reset, zero thresholds")
    b.phase(reads=_all_reads(b, cfg, [1]), name="read after reset")
    b.phase(thresholds=_thresholds(cfg, seed + 1), name="thresholds again")
    b.phase(writes=_tokens(cfg, 1, 3, 5, rng, pool[13:]), name="more")
    b.phase(reads=_all_reads(b, cfg, [1]), name="read all")
    return cfg, b
