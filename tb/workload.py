"""The vectors every emitted-Verilog bench plays: corner cases first, then real KV."""

from pathlib import Path

import numpy as np

from oaken_hw.calibrate import calibrate
from oaken_hw.engine.scenario import random_vectors
from oaken_hw.model import to_vectors

DATA = Path(__file__).parent.parent / "oaken_hw" / "data"


def workload(cfg, n_vectors, seed):
    """``n_vectors`` vectors ``(N, V)``, their layer and kv, and the thresholds ``(layers, 2, 4)``.

    Heavy-tailed random vectors with corner cases first, then the real K and V of both test
    texts; the random part fills what the real part leaves (at least 64 vectors).
    """
    real = 4 * cfg.model.layers * 64 * cfg.vectors_per_token   # 2 texts x K/V, 64 tokens
    n_random = max(n_vectors - real, 64)
    topics = np.load(DATA / "smollm2_pydoc_topics_64tok.npz")
    tutorial = np.load(DATA / "smollm2_pydocs_tutorial_64tok.npz")
    th = np.stack([calibrate(topics["k"]), calibrate(topics["v"])], axis=1)
    rand = random_vectors(cfg, n_random, seed)     # corner vectors first, then heavy tails
    rng = np.random.default_rng(seed + 1)
    # corner cases first, so that short runs (Icarus) include them
    vecs, layers = [rand], [rng.integers(0, cfg.model.layers, n_random)]
    kvs = [rng.integers(0, 2, n_random)]
    for kv, key in enumerate(("k", "v")):
        for src in (tutorial, topics):
            v, layer = to_vectors(src[key], cfg)
            vecs.append(v), layers.append(layer), kvs.append(np.full(len(v), kv))
    x, layer, kv = (np.concatenate(a)[:n_vectors] for a in (vecs, layers, kvs))
    return x, layer, kv, th


def threshold_writes(layout, th, pack):
    """Payloads that write every (layer, K/V) entry of ``th`` through a threshold port."""
    bits = th.view(np.uint16)
    return [pack(layout, {"layer": l, "kv": k,
                          "t": dict(zip(("o_lo", "i_lo", "i_hi", "o_hi"), bits[l, k]))})
            for l in range(th.shape[0]) for k in range(2)]


def header(cfg, i, layer, kv):
    """The header of the ``i``-th vector of a run."""
    return {"seq": i % cfg.mmu.sequences, "layer": layer[i], "kv": kv[i],
            "pos": i % cfg.mmu.max_tokens}
