"""Regenerate the report samples in tests/flow/data/ from real tool runs.

    python tests/flow/make_samples.py

Each sample is the Int4Quantizer (the flow's reference design) at a tiny size, so the
files stay small; the parser tests check the figures written in data/README.md.
"""

import gzip
import json
import shutil
import tempfile
from pathlib import Path

from oaken_hw.flow import synthesize
from oaken_hw.rtl.baseline.int4_quantizer import Int4Quantizer

DATA = Path(__file__).parent / "data"
SAMPLES = [("ice40-up5k", 2, 8), ("ecp5-85k", 1, 4), ("xc7", 1, 4)]


def main():
    DATA.mkdir(exist_ok=True)
    for target, lanes, vector_len in SAMPLES:
        with tempfile.TemporaryDirectory() as tmp:
            res = synthesize(Int4Quantizer(lanes=lanes, vector_len=vector_len), target,
                             name=f"int4_l{lanes}v{vector_len}", seed=1, workdir=tmp)
            stem = f"{target}_int4_l{lanes}v{vector_len}"
            shutil.copy(Path(tmp) / "stat.json", DATA / f"{stem}_stat.json")
            if res.fmax_mhz is not None:
                # gzip: nextpnr's detailed timing makes the report ~1 MB of JSON
                report = (Path(tmp) / "report.json").read_bytes()
                (DATA / f"{stem}_report.json.gz").write_bytes(gzip.compress(report, mtime=0))
            print(stem, json.dumps({k: getattr(res, k) for k in
                                    ("fmax_mhz", "lut", "ff", "dsp", "bram", "lutram")}))


if __name__ == "__main__":
    main()
