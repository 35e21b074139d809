"""The one configuration object shared by the golden model, the RTL and the tools.

A configuration is loaded from TOML (:func:`load_config`); every key that a file omits takes
the value of the embedded default (``oaken_hw/default.toml``). Every invalid value raises
:class:`ValueError` naming the parameter and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelGeometry", "QuantConfig", "MMUConfig", "MemoryConfig", "OakenConfig",
           "load_config", "default_config", "check_ratios"]


def _is_pow2(n):
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {allowed}, not {value}")


def check_ratios(name, r):
    """Calibration shares (outer, middle, inner) as floats; ``ValueError`` naming ``name``."""
    if (not isinstance(r, (tuple, list)) or len(r) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)):
        raise ValueError(f"{name} must be three numbers (outer, middle, inner), not {r!r}")
    shares = tuple(float(v) for v in r)
    if not all(0.0 <= v <= 1.0 and math.isfinite(v) for v in shares) \
            or abs(sum(shares) - 1.0) > 1e-9 or shares[1] <= 0.0:
        raise ValueError(f"{name} must be three shares in [0, 1] with a positive "
                         f"middle share that sum to 1, not {r!r}")
    return shares


@dataclass(frozen=True)
class ModelGeometry:
    """KV-cache geometry of the LLM.

    Parameters
    ----------
    layers : int
        Decoder layers.
    kv_heads : int
        KV heads per layer.
    head_dim : int
        Elements per head.
    """

    layers: int = 30
    kv_heads: int = 3
    head_dim: int = 64

    def __post_init__(self):
        _check_int("model.layers", self.layers, 1, 4096)
        _check_int("model.kv_heads", self.kv_heads, 1, 1024)
        _check_int("model.head_dim", self.head_dim, 1, 4096)


@dataclass(frozen=True)
class QuantConfig:
    """Quantizer parameters.

    Parameters
    ----------
    scope : {"layer", "head"}
        Extent of one quantization vector: one token's K (or V) of one layer across all KV
        heads, or one head only.
    ratios : tuple of float, or dict
        Shares of the outer, middle and inner groups used by calibration; they sum to 1.
        Three numbers apply to K and V alike; a table ``{"k": (...), "v": (...)}`` gives
        each its own. Stored as ``(k_shares, v_shares)``; read it with :meth:`ratios_for`.
        Calibration is the only user: the hardware reads thresholds, not shares.
    middle_bits : int
        Width of every element's dense slot and of the middle codes.
    outlier_bits : int
        Width of the inner and outer codes; always ``middle_bits + 1`` (the extra bit rides
        in the outlier's sparse byte).
    sparse_block : int
        Sparse indices are relative to blocks of this many elements (64 for a 6-bit index).
    lanes : int
        FP16 elements per stream beat.
    """

    scope: str = "layer"
    ratios: tuple | dict = ((0.08, 0.86, 0.06), (0.02, 0.94, 0.04))
    middle_bits: int = 4
    outlier_bits: int = 5
    sparse_block: int = 64
    lanes: int = 16

    def __post_init__(self):
        if self.scope not in ("layer", "head"):
            raise ValueError(f"quant.scope must be 'layer' or 'head', not {self.scope!r}")
        r = self.ratios
        if isinstance(r, dict):
            if set(r) != {"k", "v"}:
                raise ValueError(f"quant.ratios as a table must have exactly the keys 'k' and "
                                 f"'v', not {sorted(r)}")
            pair = (check_ratios("quant.ratios.k", r["k"]), check_ratios("quant.ratios.v", r["v"]))
        elif (isinstance(r, tuple) and len(r) == 2
              and all(isinstance(x, tuple) and len(x) == 3 for x in r)):
            pair = (check_ratios("quant.ratios.k", r[0]), check_ratios("quant.ratios.v", r[1]))
        else:
            pair = (check_ratios("quant.ratios", r),) * 2
        object.__setattr__(self, "ratios", pair)
        _check_int("quant.middle_bits", self.middle_bits, 2, 7)
        if self.outlier_bits != self.middle_bits + 1:
            raise ValueError(f"quant.outlier_bits must be middle_bits + 1 = {self.middle_bits + 1} "
                             f"(the dense slot plus one bit of the sparse byte), "
                             f"not {self.outlier_bits!r}")
        if not _is_pow2(self.sparse_block) or not 2 <= self.sparse_block <= 64:
            raise ValueError(f"quant.sparse_block must be a power of two in [2, 64] (the sparse "
                             f"byte has 6 index bits), not {self.sparse_block!r}")
        if not _is_pow2(self.lanes) or self.lanes > self.sparse_block:
            raise ValueError(f"quant.lanes must be a power of two <= sparse_block "
                             f"({self.sparse_block}), not {self.lanes!r}")

    def ratios_for(self, kind):
        """The calibration shares (outer, middle, inner) of ``kind`` ("k" or "v")."""
        if kind not in ("k", "v"):
            raise ValueError(f"kind must be 'k' or 'v', not {kind!r}")
        return self.ratios[0 if kind == "k" else 1]

    @property
    def index_bits(self):
        """Bits of the in-block index of a sparse entry."""
        return self.sparse_block.bit_length() - 1


@dataclass(frozen=True)
class MMUConfig:
    """Sizes of the MMU and its page pool (the choice is explained in ``docs/mmu.md``).

    Parameters
    ----------
    sequences : int
        Sequences that can be live at once.
    max_tokens : int
        Tokens per sequence that the page tables can map.
    pages : int
        Physical pages in the pool (a power of two).
    page_bytes : int
        Bytes per page (a power of two).
    sparse_pages : int
        Page-table entries of one head's sparse stream (one sequence, layer, K or V, head).
        Sparse bytes per token vary (0 to ``head_dim``); the worst case would be
        ``max_tokens * head_dim / page_bytes`` entries, so the sparse table is sized for a
        budget instead and an append beyond it gets the ``CAPACITY`` status.
    """

    sequences: int = 4
    max_tokens: int = 512
    pages: int = 16384
    page_bytes: int = 1024
    sparse_pages: int = 8

    def __post_init__(self):
        _check_int("mmu.sequences", self.sequences, 1, 1 << 16)
        _check_int("mmu.max_tokens", self.max_tokens, 1, 1 << 24)
        if not _is_pow2(self.pages) or self.pages < 2:
            raise ValueError(f"mmu.pages must be a power of two >= 2, not {self.pages!r}")
        if not _is_pow2(self.page_bytes) or not 16 <= self.page_bytes <= 1 << 20:
            raise ValueError(f"mmu.page_bytes must be a power of two in [16, 1048576], "
                             f"not {self.page_bytes!r}")
        _check_int("mmu.sparse_pages", self.sparse_pages, 1, 1 << 16)


@dataclass(frozen=True)
class MemoryConfig:
    """The memory port.

    Parameters
    ----------
    data_bytes : int
        Width of the data bus in bytes (a power of two).
    """

    data_bytes: int = 16

    def __post_init__(self):
        if not _is_pow2(self.data_bytes) or not 1 <= self.data_bytes <= 128:
            raise ValueError(f"memory.data_bytes must be a power of two in [1, 128], "
                             f"not {self.data_bytes!r}")


@dataclass(frozen=True)
class OakenConfig:
    """The whole configuration, with the quantities derived from it.

    Attributes
    ----------
    vector_len : int
        Elements in one quantization vector.
    vectors_per_token : int
        Quantization vectors per token, layer and K/V.
    beats_per_vector : int
        Stream beats per vector (``vector_len // lanes``).
    blocks_per_vector : int
        Sparse-index blocks per vector.
    dense_bytes : int
        Bytes of dense slots per vector.
    meta_bytes : int
        Bytes of the per-vector metadata record (see ``docs/format.md``).
    """

    model: ModelGeometry = field(default_factory=ModelGeometry)
    quant: QuantConfig = field(default_factory=QuantConfig)
    mmu: MMUConfig = field(default_factory=MMUConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self):
        v, q = self.vector_len, self.quant
        # a head's dense and sparse data must be separable (the MMU keeps them per head)
        if self.model.head_dim % q.sparse_block:
            raise ValueError(f"model.head_dim ({self.model.head_dim}) must be a multiple of "
                             f"quant.sparse_block ({q.sparse_block})")
        if (v * q.middle_bits) % 8:
            raise ValueError(f"vector length x quant.middle_bits must fill whole bytes, "
                             f"not {v} x {q.middle_bits}")

    @property
    def vector_len(self):
        g = self.model
        return g.head_dim * (g.kv_heads if self.quant.scope == "layer" else 1)

    @property
    def vectors_per_token(self):
        return 1 if self.quant.scope == "layer" else self.model.kv_heads

    @property
    def beats_per_vector(self):
        return self.vector_len // self.quant.lanes

    @property
    def blocks_per_vector(self):
        return self.vector_len // self.quant.sparse_block

    @property
    def dense_bytes(self):
        return self.vector_len * self.quant.middle_bits // 8

    @property
    def meta_bytes(self):
        # four FP16 words, the middle split byte, one count byte per sparse block
        return 9 + self.blocks_per_vector

    def with_geometry(self, shape):
        """This configuration for KV tensors shaped ``(layers, kv_heads, tokens, head_dim)``."""
        layers, kv_heads, _, head_dim = shape
        return dataclasses.replace(self, model=ModelGeometry(
            layers=layers, kv_heads=kv_heads, head_dim=head_dim))

    def to_dict(self):
        """The configuration as plain data (TOML-shaped)."""
        d = dataclasses.asdict(self)
        d["quant"]["ratios"] = {"k": list(self.quant.ratios[0]), "v": list(self.quant.ratios[1])}
        return d


_SECTIONS = {"model": ModelGeometry, "quant": QuantConfig, "mmu": MMUConfig,
             "memory": MemoryConfig}


def config_from_dict(data):
    """Build an :class:`OakenConfig` from TOML-shaped data, defaults filling the gaps."""
    if not isinstance(data, dict):
        raise ValueError("a configuration must be a table of sections")
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"unknown configuration section(s) {sorted(unknown)}; "
                         f"allowed: {sorted(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise ValueError(f"configuration section [{name}] must be a table")
        allowed = {f.name for f in dataclasses.fields(cls)}
        extra = set(values) - allowed
        if extra:
            raise ValueError(f"unknown parameter(s) {', '.join(f'{name}.{k}' for k in sorted(extra))}; "
                             f"allowed in [{name}]: {', '.join(sorted(allowed))}")
        if isinstance(values.get("ratios"), list):
            values = {**values, "ratios": tuple(values["ratios"])}
        sections[name] = cls(**values)
    return OakenConfig(**sections)


def _default_data():
    text = Path(__file__).with_name("default.toml").read_text()
    return tomllib.loads(text)


def default_config():
    """The embedded default configuration."""
    return config_from_dict(_default_data())


def load_config(path=None):
    """Load a TOML configuration; keys it omits take the embedded default.

    Parameters
    ----------
    path : str or Path or None
        The TOML file; ``None`` gives the embedded default.
    """
    data = _default_data()
    if path is not None:
        try:
            user = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
        for name, values in user.items():
            if isinstance(values, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **values}
            else:
                data[name] = values
    return config_from_dict(data)
