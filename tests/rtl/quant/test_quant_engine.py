"""QuantEngine against the golden model (quantize + pack), every output bit, with random
valid/ready stalls on every stream; throughput and latency."""

import gc
import json
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from oaken_hw.calibrate import calibrate
from oaken_hw.config import config_from_dict, default_config
from oaken_hw.model.kv import to_vectors
from oaken_hw.rtl.common import ThresholdTable, threshold_write_layout
from oaken_hw.rtl.quant import QuantEngine, StatusSignature

from quant_cases import THRESHOLDS, corner_vectors, heavy_tailed, random_thresholds
from quant_harness import check, golden

CONFIGS = {
    "default": default_config(),                                    # 16 lanes x 12 beats
    "small": config_from_dict({"quant": {"lanes": 4, "scope": "head"}}),  # 4 lanes x 16
}


def _named_table(cfg):
    """THRESHOLDS spread over (layer, kv) entries."""
    names = list(THRESHOLDS)
    L = cfg.model.layers
    place = {name: ((3 * k) % L, (k * 3 // L) % 2) for k, name in enumerate(names)}
    assert len(set(place.values())) == len(names), f"{L} layers do not hold the sets apart"
    table = {place[n]: np.array(THRESHOLDS[n], np.float16) for n in names}
    return place, table


@pytest.mark.parametrize("name", list(CONFIGS))
def test_corner_cases(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(5)
    cases = corner_vectors(cfg.vector_len, rng)
    place, table = _named_table(cfg)
    x = np.stack([c[2] for c in cases])
    layers = [place[th][0] for _, th, _ in cases]
    kvs = [place[th][1] for _, th, _ in cases]
    run = check(cfg, x, layers, kvs, table, stall_in=0.2, stall_out=0.25, seed=1,
                clear_at_end=True)
    enc, _ = golden(cfg, x, layers, kvs, table)
    assert run.status["bad_count"] == enc.bad_inputs.sum() > 0
    assert run.status["bad_input"] == 1 and run.status["config_error"] == 0
    assert run.status_cleared == {"bad_input": 0, "bad_count": 0, "config_error": 0}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_vectors_with_stalls(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(17)
    n = 24
    x = heavy_tailed(n, cfg.vector_len, rng)
    layers = rng.integers(0, cfg.model.layers, n)
    kvs = rng.integers(0, 2, n)
    table = {}
    for l, kv in zip(layers, kvs):
        table.setdefault((int(l), int(kv)), random_thresholds(rng, heavy_tailed(4, 64, rng)))
    # heavy and uneven backpressure: each output stalls on its own schedule
    check(cfg, x, layers, kvs, table, stall_in=0.3,
          stall_out={"dense": 0.5, "sparse": 0.3, "meta": 0.7}, seed=2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_real_kv(name, kv_tutorial, kv_topics):
    """A slice of real SmolLM2 K and V, thresholds calibrated on the other text."""
    cfg = CONFIGS[name]
    tokens = 6 if name == "default" else 3
    pick = [0, 9, 29]
    xs, layers, kvs, table = [], [], [], {}
    for kv, key in enumerate(("k", "v")):
        th = calibrate(kv_topics[key])
        for l in pick:
            table[(l, kv)] = th[l]
        t = kv_tutorial[key][pick][:, :, :tokens]
        vec, lay = to_vectors(t, cfg)
        xs.append(vec)
        layers += [pick[i] for i in lay]
        kvs += [kv] * len(vec)
    x = np.concatenate(xs)
    check(cfg, x, layers, kvs, table, stall_in=0.1, stall_out=0.1, seed=3)


@pytest.mark.parametrize("order", ["meta_first", "meta_last"])
def test_consumer_stream_order_does_not_deadlock(order):
    """A consumer may take a vector's meta record before or after its dense/sparse beats."""
    cfg = CONFIGS["small"]
    rng = np.random.default_rng(41)
    x = heavy_tailed(8, cfg.vector_len, rng)
    table = {(2, 1): random_thresholds(rng, x)}
    check(cfg, x, [2] * 8, [1] * 8, table, stall_in=0.1, stall_out=0.3, seed=5, order=order)


def test_reset_in_the_middle_of_a_stream():
    """A reset during traffic (with NaN-laden garbage and blocked outputs) leaves no trace:
    the vectors after it are exact, the status counts only them. The threshold table is
    back to zeros after the reset (its walk holds the config stream meanwhile), so the
    harness writes it again."""
    cfg = CONFIGS["small"]
    rng = np.random.default_rng(53)
    x = heavy_tailed(5, cfg.vector_len, rng)
    table = {(6, 1): random_thresholds(rng, x)}
    run = check(cfg, x, [6] * 5, [1] * 5, table, stall_in=0.1, stall_out=0.2, seed=7,
                pre_reset_cycles=45)
    assert run.status == {"bad_input": 0, "bad_count": 0, "config_error": 0}


# 7 layers: the fewest that hold the named threshold sets apart in ``_named_table``
ODD_CONFIGS = {
    # 2 lanes, 3-bit middle codes, 16-element sparse blocks, 3 blocks per vector
    "lanes2_mb3": {"quant": {"lanes": 2, "middle_bits": 3, "outlier_bits": 4,
                             "sparse_block": 16}, "model": {"head_dim": 32, "layers": 7}},
    # 5-bit middle codes, blocks as wide as a beat
    "lanes8_mb5": {"quant": {"lanes": 8, "middle_bits": 5, "outlier_bits": 6,
                             "sparse_block": 8, "scope": "head"},
                   "model": {"head_dim": 16, "kv_heads": 1, "layers": 7}},
    # one beat per vector: the per-vector blocks must run at one vector per cycle
    "one_beat": {"quant": {"lanes": 16, "sparse_block": 16, "scope": "head"},
                 "model": {"head_dim": 16, "kv_heads": 2, "layers": 7}},
}


@pytest.mark.parametrize("name", list(ODD_CONFIGS))
def test_other_configurations(name):
    """Every corner case with its named threshold set (so the degenerate, subnormal, wide,
    all-equal and -0 sets meet 8 and 32 middle codes and one-beat vectors), with stalls;
    then, on the same configuration with a single layer (a 0-bit layer field, a two-entry
    threshold table), the first vectors at one beat per cycle."""
    d = ODD_CONFIGS[name]
    cfg = config_from_dict(d)
    rng = np.random.default_rng(43)
    cases = corner_vectors(cfg.vector_len, rng)
    x = np.concatenate([np.stack([c[2] for c in cases]), heavy_tailed(8, cfg.vector_len, rng)])
    kinds = [c[1] for c in cases] + ["typical"] * 8
    place, table = _named_table(cfg)
    layers = [place[k][0] for k in kinds]
    kvs = [place[k][1] for k in kinds]
    run = check(cfg, x, layers, kvs, table, stall_in=0.2, stall_out=0.2, seed=6)
    enc, _ = golden(cfg, x, layers, kvs, table)
    assert run.status["bad_count"] == enc.bad_inputs.sum() > 0

    cfg1 = config_from_dict({**d, "model": {**d["model"], "layers": 1}})
    # the corner cases made for all-zero thresholds use them, every other vector the
    # typical set
    table1 = {(0, 0): np.array(THRESHOLDS["typical"], np.float16),
              (0, 1): np.array(THRESHOLDS["zero"], np.float16)}
    kvs1 = [1 if k == "zero" else 0 for k in kinds[:12]]
    run = check(cfg1, x[:12], [0] * 12, kvs1, table1)
    assert _rate(run.in_cycles) == 1.0


def _rate(cycles):
    return (len(cycles) - 1) / (cycles[-1] - cycles[0])


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("kind", ["random", "all_outliers"])
def test_throughput_and_latency(name, kind, record_property):
    """One input beat per cycle while the outputs are ready, for any outlier count."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(23)
    n, V, B = 16, cfg.vector_len, cfg.beats_per_vector
    if kind == "random":
        x = heavy_tailed(n, V, rng)
        table = {(0, 0): random_thresholds(rng, x)}
    else:
        # half inner, half outer: every element is an outlier
        x = np.where(np.arange(V) % 2, rng.uniform(-0.09, 0.09, (n, V)),
                     np.sign(rng.standard_normal((n, V))) * (3 + rng.random((n, V)) * 20))
        table = {(0, 0): np.array([-2, -0.1, 0.1, 2], np.float16)}
    x = x.astype(np.float16)
    eng = QuantEngine(cfg=cfg)
    run = check(cfg, x, [0] * n, [0] * n, table, engine=eng)
    enc, image = golden(cfg, x, [0] * n, [0] * n, table)
    if kind == "all_outliers":
        assert enc.outlier.all()
    rate_in = _rate(run.in_cycles)
    rate_out = _rate(run.dense_cycles)
    # latency: last input beat of a vector -> its first dense beat (outputs always ready)
    lat = [run.dense_cycles[v * B] - run.in_cycles[v * B + B - 1] for v in range(n)]
    meta_lat = [run.meta_cycles[v] - run.in_cycles[v * B + B - 1] for v in range(n)]
    figures = {"config": name, "kind": kind, "in_beats_per_cycle": rate_in,
               "dense_beats_per_cycle": rate_out, "latency": lat[0],
               "buffer_beats": eng.buffer_beats}
    record_property("figures", json.dumps(figures))
    print(json.dumps(figures))
    assert rate_in == 1.0 and rate_out == 1.0
    assert set(lat) == {eng.latency} and set(meta_lat) == {eng.latency}


def test_rejected_threshold_writes_keep_the_table():
    """NaN/Inf, misordered and out-of-range writes are rejected with a sticky error and never
    stored: the vectors are quantized with the thresholds written before."""
    cfg = CONFIGS["small"]
    rng = np.random.default_rng(31)
    good = np.array([-2, -0.1, 0.1, 2], np.float16)
    table = {(1, 0): good, (1, 1): np.array([-1, 0, 0.5, 4], np.float16)}
    bad = [
        (1, 0, [0x7E00, 0xAE66, 0x2E66, 0x4000]),            # NaN
        (1, 0, [0xFC00, 0xAE66, 0x2E66, 0x4000]),            # -Inf
        (1, 1, [0x4000, 0x2E66, 0xAE66, 0xC000]),            # descending
        (1, 0, [0xC000, 0x2E66, 0xAE66, 0x4000]),            # inner pair swapped
        (cfg.model.layers, 0, [0, 0, 0, 0]),                  # layer out of range
    ]
    x = heavy_tailed(4, cfg.vector_len, rng)
    run = check(cfg, x, [1, 1, 1, 1], [0, 1, 0, 1], table, config_writes=bad, seed=4,
                clear_at_end=True)
    assert run.status["config_error"] == 1
    assert run.status_cleared["config_error"] == 0


class _SharedTable(wiring.Component):
    """QuantEngine(table="external") on read port 0 of a two-port ThresholdTable, with the
    internal-table engine's ports (so that the same harness drives it)."""

    def __init__(self, cfg):
        self.q = QuantEngine(cfg=cfg, table="external")
        self.cfg = cfg
        for k in ("header_layout", "in_layout", "dense_layout", "sparse_layout",
                  "meta_layout", "latency", "buffer_beats"):
            setattr(self, k, getattr(self.q, k))
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "dense": Out(stream.Signature(self.dense_layout)),
            "sparse": Out(stream.Signature(self.sparse_layout)),
            "meta": Out(stream.Signature(self.meta_layout)),
            "thresholds": In(stream.Signature(threshold_write_layout(cfg.model.layers))),
            "status": Out(StatusSignature()),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.q = q = self.q
        m.submodules.table = table = ThresholdTable(layers=self.cfg.model.layers, read_ports=2)
        wiring.connect(m, q.table, table.read[0])
        wiring.connect(m, wiring.flipped(self.thresholds), table.write)
        wiring.connect(m, wiring.flipped(self.i), q.i)
        for name in ("dense", "sparse", "meta"):
            wiring.connect(m, getattr(q, name), wiring.flipped(getattr(self, name)))
        m.d.comb += [self.status.bad_input.eq(q.status.bad_input),
                     self.status.bad_count.eq(q.status.bad_count),
                     self.status.config_error.eq(table.error),
                     q.status.clear.eq(self.status.clear), table.clear_error.eq(self.status.clear)]
        return m


def test_external_threshold_table():
    cfg = CONFIGS["small"]
    rng = np.random.default_rng(47)
    x = heavy_tailed(6, cfg.vector_len, rng)
    table = {(4, 0): random_thresholds(rng, x), (5, 1): np.array([-3, -1, 0.5, 1], np.float16)}
    run = check(cfg, x, [4, 5] * 3, [0, 1] * 3, table, engine=_SharedTable(cfg),
                config_writes=[(4, 0, [0x7C00, 0, 0, 0x7C00])], stall_in=0.2, stall_out=0.2)
    assert run.status["config_error"] == 1


@pytest.mark.parametrize("kw, name", [
    ({"cfg": CONFIGS["default"], "table": "shared"}, "table"),
    ({"cfg": "default"}, "cfg"),
    ({"cfg": CONFIGS["default"], "buffer_beats": 24}, "buffer_beats"),
    ({"cfg": CONFIGS["default"], "buffer_beats": 8}, "buffer_beats"),
])
def test_engine_validates_parameters(kw, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=name) as info:
            QuantEngine(**kw)
        del info
        gc.collect()
