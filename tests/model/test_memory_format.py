"""The memory image: bit layout, framing, round trip, malformed images, bit accounting."""

import numpy as np
import pytest

from oaken_hw.model import MIDDLE, pack, quantize, unpack
from oaken_hw.model.memory_format import effective_bits
from oaken_hw.model.numerics import fp16_bits


def random_encoded(cfg, n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, (n, cfg.vector_len)) * 0.5).astype(np.float16)
    return quantize(x, np.array([-1.5, -0.05, 0.05, 1.5], np.float16), cfg)


def test_pack_unpack_round_trip(cfg):
    enc = random_encoded(cfg)
    dec, malformed = unpack(pack(enc, cfg), cfg)
    assert not malformed.any()
    for f in ("group", "dense", "high", "delta_mid", "delta_inner", "delta_outer",
              "inner_min", "n_lo"):
        assert np.array_equal(getattr(dec, f), getattr(enc, f)), f


def test_bit_layout_of_a_hand_made_vector(cfg):
    """One vector laid out by hand from the format description in docs/format.md."""
    v = cfg.vector_len
    x = np.zeros((1, v), np.float16)
    x[0, 0], x[0, 3], x[0, 70], x[0, 191] = 4.0, 0.25, -8.0, 0.5   # outer, inner, outer, middle
    th = np.array([-2, 0.125, 0.375, 2], np.float16)
    enc = quantize(x, th, cfg)
    img = pack(enc, cfg)
    # dense: element i in bits 4i..4i+3, little-endian
    for i in range(v):
        assert (img.dense[0, i // 2] >> (4 * (i % 2))) & 15 == enc.dense[0, i]
    # sparse: element order; index in block, outer bit 6, high bit 7
    assert list(img.sparse) == [0 | 1 << 6 | 1 << 7, 3 | int(enc.high[0, 3]) << 7, 6 | 1 << 6]
    # meta: four little-endian FP16 words, n_lo, one count per 64-element block
    m = img.meta[0]
    words = [int(m[2 * k]) | int(m[2 * k + 1]) << 8 for k in range(4)]
    assert words == [int(enc.delta_mid[0]), int(enc.delta_inner[0]), int(enc.inner_min[0]),
                     int(enc.delta_outer[0])]
    assert words[2] == int(fp16_bits(np.float16(0.25)))
    assert m[8] == enc.n_lo[0] and list(m[9:]) == [2, 1, 0]
    assert img.total_bits == 8 * (cfg.dense_bytes + cfg.meta_bytes + 3)


def test_effective_bits_count_every_stored_bit(cfg):
    enc = random_encoded(cfg)
    img = pack(enc, cfg)
    share = np.mean(enc.group != MIDDLE)
    assert img.total_bits / enc.group.size == pytest.approx(effective_bits(share, cfg))
    # the default: 4 + 8 x share + 96 metadata bits per 192 elements
    assert effective_bits(0.1, cfg) == pytest.approx(4 + 0.8 + 0.5)


def corrupt(img, fn):
    img = type(img)(img.dense.copy(), img.meta.copy(), img.sparse.copy(), img.sparse_counts.copy())
    fn(img)
    return img


@pytest.mark.parametrize("what,fn", [
    ("block count above block size", lambda im: im.meta.__setitem__((1, 9), 65)),
    ("counts do not add up", lambda im: im.meta.__setitem__((1, 9), im.meta[1, 9] + 1)),
    ("n_lo too large", lambda im: im.meta.__setitem__((1, 8), 17)),
    ("NaN step", lambda im: im.meta.__setitem__((1, slice(0, 2)), [0x00, 0x7e])),
    ("negative step", lambda im: im.meta.__setitem__((1, slice(6, 8)), [0x00, 0xbc])),
    ("indices not increasing", lambda im: im.sparse.__setitem__(
        slice(im.sparse_offsets[1], im.sparse_offsets[1] + 2),
        im.sparse[im.sparse_offsets[1]:im.sparse_offsets[1] + 2][::-1].copy())),
])
def test_malformed_vectors_are_flagged_and_do_not_disturb_others(cfg, what, fn):
    enc = random_encoded(cfg, n=3)
    img = pack(enc, cfg)
    dec, malformed = unpack(corrupt(img, fn), cfg)
    assert list(malformed) == [False, True, False], what
    assert not dec.dense[1].any() and not dec.group[1].any()
    for i in (0, 2):
        assert np.array_equal(dec.group[i], enc.group[i]) and np.array_equal(dec.dense[i], enc.dense[i])
