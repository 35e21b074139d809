"""The vectors every emitted-Verilog bench plays: corner cases first, then real KV."""

from pathlib import Path

import numpy as np

from oaken_hw.calibrate import calibrate
from oaken_hw.model import to_vectors

DATA = Path(__file__).parent.parent / "tests" / "data"


def workload(cfg, n_random, seed):
    """Vectors ``(N, V)``, their (layer, kv) and the per-layer thresholds ``(layers, 2, 4)``."""
    topics = np.load(DATA / "smollm2_pydoc_topics_64tok.npz")
    tutorial = np.load(DATA / "smollm2_pydocs_tutorial_64tok.npz")
    th = np.stack([calibrate(topics["k"]), calibrate(topics["v"])], axis=1)
    rng = np.random.default_rng(seed)
    scale = rng.choice([1e-3, 0.1, 1, 10], (n_random, 1))
    rand = (rng.standard_t(2, (n_random, cfg.vector_len)) * scale).astype(np.float16)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 6e-8, 65504, -65504], np.float16)
    hit = rng.random(rand.shape) < 0.01
    rand[hit] = rng.choice(special, hit.sum())
    rand[0] = 0                                     # all equal
    rand[1] = np.linspace(-40, 40, cfg.vector_len)  # mostly outer
    rand[2] = np.where(np.arange(cfg.vector_len) % 2, 300, -300)  # every element an outlier
    # corner cases first, so that short runs (Icarus) include them
    vecs, layers = [rand], [rng.integers(0, cfg.model.layers, n_random)]
    kvs = [rng.integers(0, 2, n_random)]
    for kv, key in enumerate(("k", "v")):
        for src in (tutorial, topics):
            v, layer = to_vectors(src[key], cfg)
            vecs.append(v), layers.append(layer), kvs.append(np.full(len(v), kv))
    return np.concatenate(vecs), np.concatenate(layers), np.concatenate(kvs), th
