"""Randomly damaged memory images: whatever the damage, the engine must give what the golden
model gives (``unpack`` decides malformed or not; a damaged but well-formed record decodes
to whatever its fields say), flag malformed vectors, and never hang."""

import numpy as np
import pytest

from dequant_harness import SMALL, Vec, check, encode, golden_vec, run, sparse_beats, thresholds_for
from oaken_hw.config import default_config



def _dense_bytes(cfg, v):
    bits = cfg.quant.lanes * cfg.quant.middle_bits
    mask = (1 << bits) - 1
    value = sum((d & mask) << (k * bits)
                for k, (d, _) in enumerate(v.dense[:cfg.beats_per_vector]))
    return np.frombuffer(value.to_bytes(cfg.dense_bytes, "little"), np.uint8)


def damage(cfg, table, v, rng):
    """A randomly damaged copy of Vec ``v`` with its golden expectation."""
    meta = bytearray(v.meta)
    sp = bytearray(b"".join(d[:c] for d, c, _ in v.sparse))
    dense = list(v.dense)
    dense_ok = True
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.integers(0, 9)
        if kind == 0:                                       # any meta bit
            i = int(rng.integers(0, len(meta)))
            meta[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:                                     # a block count
            meta[9 + int(rng.integers(0, cfg.blocks_per_vector))] = int(rng.integers(0, 256))
        elif kind == 2 and sp:                              # any sparse bit (index/group/high)
            i = int(rng.integers(0, len(sp)))
            sp[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 3 and sp:                              # a byte lost
            del sp[int(rng.integers(0, len(sp)))]
        elif kind == 4:                                     # a byte gained
            sp.insert(int(rng.integers(0, len(sp) + 1)), int(rng.integers(0, 256)))
        elif kind == 5:                                     # the step/minimum words
            w = int(rng.integers(0, 4))
            val = int(rng.choice([0x0000, 0x8000, 0x0001, 0x7BFF, 0x7C00, 0x3C00,
                                  int(rng.integers(0, 1 << 16))]))
            meta[2 * w], meta[2 * w + 1] = val & 0xFF, val >> 8
        elif kind == 6:                                     # n_lo
            meta[8] = int(rng.choice([0, 1 << cfg.quant.middle_bits,
                                      (1 << cfg.quant.middle_bits) + 1, 255]))
        elif kind == 7:                                     # dense framing
            K = len(dense)
            cut = int(rng.integers(1, K + 4))
            if cut < K:
                dense = dense[:cut - 1] + [(dense[cut - 1][0], True)]
            else:
                dense = [(d, False) for d, _ in dense] + \
                        [(int(rng.integers(0, 1 << 30)), i == cut - K) for i in range(cut - K + 1)]
            dense_ok = len(dense) == cfg.beats_per_vector
        # kind 8 (or a no-op above): only the sparse beat split changes
    out = Vec(v.layer, v.kv, bytes(meta), dense, sparse_beats(cfg, bytes(sp), "random", rng))
    # the dense data the engine decodes is the damaged one (when its framing is right)
    return golden_vec(cfg, table, out, dense_bytes=_dense_bytes(cfg, out), dense_ok=dense_ok)


@pytest.mark.parametrize("cfg", [default_config(), SMALL], ids=["default", "small"])
def test_randomly_damaged_images_decode_as_the_golden_model_says(cfg):
    rng = np.random.default_rng(41)
    table = thresholds_for(rng, cfg.model.layers)
    V = cfg.vector_len
    x = (rng.standard_normal((40, V)) * np.where(rng.random((40, V)) < 0.15, 10, 1))
    where = [(int(rng.integers(0, cfg.model.layers)), int(rng.integers(0, 2))) for _ in x]
    src = encode(cfg, x.astype(np.float16), where, table, "full")
    vecs = [damage(cfg, table, v, rng) if k % 4 else v for k, v in enumerate(src)]
    n_bad = sum(v.malformed for v in vecs)
    assert 5 < n_bad < len(vecs) - 10, n_bad          # both kinds well represented
    res = run(cfg, table, vecs, stall=0.3, out_stall=0.3, seed=42)
    check(cfg, vecs, res)
    assert res.status["malformed"] == n_bad
