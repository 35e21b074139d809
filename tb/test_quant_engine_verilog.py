"""The quantization engine's emitted Verilog against the golden model, on Verilator and Icarus.

Thresholds are written through the configuration port first; then KV vectors (real KV of
both test texts, K and V of every layer, heavy-tailed random vectors and corner cases) flow
through with random valid/ready gaps on every stream. Every bit of the dense, sparse and
meta streams is compared with ``quantize`` + ``pack``.
"""

import numpy as np
import pytest

from oaken_hw.config import default_config
from oaken_hw.model import pack, quantize
from oaken_hw.rtl.quant import QuantEngine

from harness import available, build, pack as pack_payload, play, unpack as unpack_payload
from workload import header, threshold_writes, workload


def run_engine(sim, n_vectors, seed, tmp_path, p=0.7):
    cfg = default_config()
    dut = QuantEngine(cfg=cfg)
    bdir = build(dut, "quant_engine", sim)
    x, layer, kv, th = workload(cfg, n_vectors, seed)
    n, lanes, beats = len(x), cfg.quant.lanes, cfg.beats_per_vector
    writes = threshold_writes(dut.thresholds.payload.shape(), th, pack_payload)
    xb = x.view(np.uint16)
    beats_in = [pack_payload(dut.in_layout, {
        "header": header(cfg, i, layer, kv),
        "data": xb[i, b * lanes:(b + 1) * lanes]}) for i in range(n) for b in range(beats)]
    res = play(bdir, "quant_engine", sim, {
        "seed": seed, "p_valid": p, "p_ready": p,
        "phases": [{"thresholds": writes}, {"i": beats_in}],
        "outputs": {"dense": n * beats, "sparse": n * beats, "meta": n}}, tmp_path)

    enc = quantize(x, th[layer, kv], cfg)
    img = pack(enc, cfg)
    out = res["outputs"]
    assert [len(out[s]) for s in ("dense", "sparse", "meta")] == [n * beats, n * beats, n], \
        "the engine stopped early"
    dense = [unpack_payload(dut.dense_layout, w) for w in out["dense"]]
    sparse = [unpack_payload(dut.sparse_layout, w) for w in out["sparse"]]
    meta = [unpack_payload(dut.meta_layout, w) for w in out["meta"]]
    offsets = img.sparse_offsets
    bits = lanes * cfg.quant.middle_bits
    for i in range(n):
        words = dense[i * beats:(i + 1) * beats]
        got_dense = sum(w["data"] << (b * bits) for b, w in enumerate(words))
        want_dense = int.from_bytes(img.dense[i].tobytes(), "little")
        got_sparse = [s for w in sparse[i * beats:(i + 1) * beats] for s in w["data"][:w["count"]]]
        want_sparse = list(img.sparse[offsets[i]:offsets[i + 1]])
        m = meta[i]
        checks = {
            "dense": (got_dense, want_dense),
            "sparse": (got_sparse, want_sparse),
            "meta": (m["data"], int.from_bytes(img.meta[i].tobytes(), "little")),
            "layer/kv": ((m["header"]["layer"], m["header"]["kv"]), (layer[i], kv[i])),
            "bad_inputs": (m["bad_inputs"], enc.bad_inputs[i]),
            "framing": ([(w["first"], w["last"]) for w in words],
                        [(int(b == 0), int(b == beats - 1)) for b in range(beats)]),
        }
        for field, (got, want) in checks.items():
            assert got == want, f"vector {i}, {field}: expected {want}, got {got}"
    return res["cycles"], n * beats


@pytest.mark.parametrize("sim,n", [("verilator", 10_240), ("icarus", 48)])
def test_emitted_quant_engine_matches_golden_model(sim, n, tmp_path):
    if not available(sim):
        pytest.skip(f"{sim} not installed")
    run_engine(sim, n, seed=7, tmp_path=tmp_path)
