"""Formal checks of the MMU with yowasp-sby (engine smtbmc yices) on a small configuration.

The harness and its properties are in :mod:`oaken_hw.mmu.formal`. k-induction does not close
on this design (the ring and table memories admit unreachable contents that no small k
excludes), so the properties are checked by bounded model checking from the power-up state
(the initialisation walk takes the first 4 steps); ``COVER``
shows that every property's trigger, including a page re-allocated after a free, is reached.
"""

import os
import shutil

import pytest
from amaranth import Mux

from oaken_hw.config import config_from_dict
from oaken_hw.mmu import FreeList
from oaken_hw.mmu.formal import MMUProof, run_sby

pytestmark = pytest.mark.skipif(shutil.which("yowasp-sby") is None,
                                reason="yowasp-sby is not installed")

#: BMC depth: the initialisation walk (4 steps), then an append and a complete free of its
#: sequence (the free completes at step 23 in the cover traces); ``OAKEN_MMU_BMC_DEPTH=29``
#: also covers the re-allocation of a freed page (step 28). ``OAKEN_MMU_BMC_RESET=1`` leaves
#: reset free as well (a reset at any step; ~45 CPU seconds at depth 24).
BMC_DEPTH = int(os.environ.get("OAKEN_MMU_BMC_DEPTH", 24))
BMC_RESET = os.environ.get("OAKEN_MMU_BMC_RESET", "0") == "1"
#: cover depth: enough for the walk, append, free and a re-allocation of a freed page
#: (step 28)
COVER_DEPTH = 34


def tiny_config():
    """1 layer (2 groups) x 1 head x head_dim 2, 2 sequences, 4 pages of 16 bytes: one
    append takes up to 3 pages, so the pool runs out on the second."""
    return config_from_dict({
        "model": {"layers": 1, "kv_heads": 1, "head_dim": 2},
        "quant": {"sparse_block": 2, "lanes": 2},
        "mmu": {"sequences": 2, "max_tokens": 1, "pages": 4, "page_bytes": 16,
                "sparse_pages": 1},
    })


class DoubleAllocFreeList(FreeList):
    """Broken on purpose: allocating from ring slot 0 does not advance the head, so the page
    stored there is handed out twice."""

    def _advance(self, head):
        return Mux(head == 0, head, head + 1)


def _fail(log):
    return "\n".join(line for line in log.splitlines()
                     if "summary" in line or "failed" in line.lower())


def test_bmc_properties_hold(tmp_path):
    ok, log = run_sby(MMUProof(cfg=tiny_config(), reset=BMC_RESET), mode="bmc",
                      depth=BMC_DEPTH, workdir=tmp_path)
    assert ok, _fail(log)


def test_covers_reached(tmp_path):
    ok, log = run_sby(MMUProof(cfg=tiny_config()), mode="cover", depth=COVER_DEPTH,
                      workdir=tmp_path)
    assert ok, _fail(log)
    assert log.count("reached cover statement") == 5, _fail(log)


def test_broken_free_list_is_caught(tmp_path):
    ok, log = run_sby(MMUProof(cfg=tiny_config(), free_list=DoubleAllocFreeList),
                      mode="bmc", depth=12, workdir=tmp_path)
    assert not ok
    assert "Assert failed" in log or "failed assertion" in log, log[-2000:]
    # the counterexample is the ownership check at the allocation, not a tool error
    assert "formal.py" in log
