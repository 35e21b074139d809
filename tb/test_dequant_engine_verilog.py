"""The dequantization engine's emitted Verilog against the golden decoder (Verilator, Icarus).

Memory images made by the golden encoder (real K/V of both test texts, heavy-tailed random
vectors with NaN/Inf, all-outlier vectors) are streamed in as meta, dense and sparse beats,
the sparse list cut into beats of up to ``lanes`` bytes, with random valid/ready gaps on every
stream; every output bit is compared with ``dequantize(unpack(image))``.
"""

import numpy as np
import pytest

from oaken_hw.config import default_config
from oaken_hw.model import dequantize, pack, quantize, unpack
from oaken_hw.rtl.dequant import DequantEngine
from oaken_hw.rtl.dequant.engine import engine_out_layout
from oaken_hw.rtl.dequant.streams import dense_layout, meta_layout, sparse_layout

from harness import available, build, pack as pack_payload, play, unpack as unpack_payload
from workload import header, threshold_writes, workload


def run_engine(sim, n_vectors, seed, tmp_path, p=0.7):
    cfg = default_config()
    dut = DequantEngine(cfg=cfg)
    bdir = build(dut, "dequant_engine", sim)
    x, layer, kv, th = workload(cfg, n_vectors, seed)
    n, lanes, beats = len(x), cfg.quant.lanes, cfg.beats_per_vector
    img = pack(quantize(x, th[layer, kv], cfg), cfg)
    dec, malformed = unpack(img, cfg)
    want = dequantize(dec, th[layer, kv], cfg).view(np.uint16)

    writes = threshold_writes(dut.thresholds.payload.shape(), th, pack_payload)
    dense_bits = lanes * cfg.quant.middle_bits
    metas, denses, sparses = [], [], []
    offsets = img.sparse_offsets
    for i in range(n):
        metas.append(pack_payload(meta_layout(cfg), {
            "data": int.from_bytes(img.meta[i].tobytes(), "little"),
            "header": header(cfg, i, layer, kv)}))
        d = int.from_bytes(img.dense[i].tobytes(), "little")
        denses += [pack_payload(dense_layout(cfg), {
            "data": (d >> (b * dense_bits)) & ((1 << dense_bits) - 1), "last": b == beats - 1})
            for b in range(beats)]
        sp = list(img.sparse[offsets[i]:offsets[i + 1]])
        chunks = [sp[k:k + lanes] for k in range(0, len(sp), lanes)] or [[]]
        sparses += [pack_payload(sparse_layout(cfg), {
            "data": c + [0] * (lanes - len(c)), "count": len(c), "last": k == len(chunks) - 1})
            for k, c in enumerate(chunks)]
    res = play(bdir, "dequant_engine", sim, {
        "seed": seed, "p_valid": p, "p_ready": p,
        "phases": [{"thresholds": writes}, {"meta": metas, "dense": denses, "sparse": sparses}],
        "outputs": {"o": n * beats}}, tmp_path)

    out = [unpack_payload(engine_out_layout(cfg), w) for w in res["outputs"]["o"]]
    assert len(out) == n * beats, "the engine stopped early"
    for i in range(n):
        for b in range(beats):
            o = out[i * beats + b]
            got = (o["data"], o["last"], o["malformed"], o["header"]["layer"], o["header"]["kv"])
            exp = (list(want[i, b * lanes:(b + 1) * lanes]), int(b == beats - 1),
                   int(malformed[i]), layer[i], kv[i])
            assert got == exp, f"vector {i}, beat {b}: expected {exp}, got {got}"


@pytest.mark.parametrize("sim,n", [("verilator", 10_240), ("icarus", 48)])
def test_emitted_dequant_engine_matches_golden_decoder(sim, n, tmp_path):
    if not available(sim):
        pytest.skip(f"{sim} not installed")
    run_engine(sim, n, seed=11, tmp_path=tmp_path)
