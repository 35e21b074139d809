"""The designs that ``oaken-hw synth`` knows: name -> factory(cfg) -> wiring.Component.

Adding a design is one :func:`register` call at the bottom of this file. ``role`` says
what the design is to the report: the ``"top"`` design's figures become the top-level
keys of ``oaken-hw synth --json`` (the full engine, once it exists); ``"component"`` marks
its parts (quantization engine, dequantization engine, MMU); ``"reference"`` marks
comparison points such as the plain INT4 quantizer. Every design run appears under
``components``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Design", "DESIGNS", "register", "get_design", "ROLES"]

ROLES = ("top", "component", "reference")


@dataclass(frozen=True)
class Design:
    """A registered design.

    Attributes
    ----------
    name : str
    factory : callable
        ``factory(cfg: OakenConfig) -> wiring.Component`` (clocked by ``sync``).
    role : {"top", "component", "reference"}
    description : str
    split : bool
        Synthesize the design's blocks (its direct submodules) as modules of their own
        (:func:`oaken_hw.flow.run.synthesize`).
    """

    name: str
    factory: Callable
    role: str
    description: str
    split: bool = False


#: All registered designs, in registration order (the order of the report).
DESIGNS: dict[str, Design] = {}


def register(name, factory, *, role="component", description="", split=False):
    """Add a design to :data:`DESIGNS`; ``ValueError`` on a duplicate or a second top."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if name in DESIGNS:
        raise ValueError(f"design {name!r} is already registered")
    if role == "top" and any(d.role == "top" for d in DESIGNS.values()):
        raise ValueError(f"only one design can be the top; {name!r} would be a second")
    DESIGNS[name] = Design(name, factory, role, description, split)
    return DESIGNS[name]


def get_design(name):
    try:
        return DESIGNS[name]
    except KeyError:
        raise ValueError(f"unknown design {name!r}; choose from {', '.join(DESIGNS)}") from None


def _oaken_engine(cfg):
    from oaken_hw.engine.top import OakenEngine
    return OakenEngine(cfg=cfg)


def _quant_engine(cfg):
    from oaken_hw.rtl.quant import QuantEngine
    return QuantEngine(cfg=cfg)


def _dequant_engine(cfg):
    from oaken_hw.rtl.dequant import DequantEngine
    return DequantEngine(cfg=cfg)


def _mmu(cfg):
    from oaken_hw.mmu.mmu import MMU
    return MMU(cfg=cfg)


def _int4_baseline(cfg):
    from oaken_hw.rtl.baseline.int4_quantizer import Int4Quantizer
    return Int4Quantizer(lanes=cfg.quant.lanes, vector_len=cfg.vector_len)


register("oaken_engine", _oaken_engine, role="top", split=True,
         description="the whole engine: write path (quantizer, MMU append, memory writes), "
                     "read path (MMU reads, memory reads, dequantizer), configuration")
register("quant_engine", _quant_engine,
         description="quantization engine: FP16 vectors in, dense / sparse / meta streams out")
register("dequant_engine", _dequant_engine,
         description="dequantization engine: dense / sparse / meta streams in, FP16 vectors out")
register("mmu", _mmu, description="MMU: page tables and free list for dense, sparse and meta data")
register("int4_baseline", _int4_baseline, role="reference",
         description="plain per-vector INT4 min/max quantizer (no outlier handling), "
                     "quant.lanes lanes, vector_len elements")
