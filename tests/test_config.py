"""The shared configuration: defaults, TOML loading, and a clear error for every bad value."""

import pytest

from oaken_hw.config import config_from_dict, default_config, load_config


def test_default_geometry_and_derived_sizes():
    cfg = default_config()
    assert cfg.vector_len == 192 and cfg.beats_per_vector == 12 and cfg.blocks_per_vector == 3
    assert cfg.dense_bytes == 96 and cfg.meta_bytes == 12


def test_toml_overrides_only_what_it_names(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[quant]\nlanes = 4\nscope = "head"\n')
    cfg = load_config(p)
    assert cfg.quant.lanes == 4 and cfg.vector_len == 64 and cfg.model.layers == 30


@pytest.mark.parametrize("data,name", [
    ({"model": {"layers": 0}}, "model.layers"),
    ({"model": {"head_dim": 48}}, "model.head_dim"),
    ({"model": {"kv_heads": 0}}, "model.kv_heads"),
    ({"model": {"kv_heads": 1025}}, "model.kv_heads"),
    ({"model": {"kv_heads": 2.0}}, "model.kv_heads"),
    ({"model": {"kv_heads": True}}, "model.kv_heads"),
    ({"quant": {"scope": "token"}}, "quant.scope"),
    ({"quant": {"ratios": [0.5, 0.6, 0.1]}}, "quant.ratios"),
    ({"quant": {"ratios": {"k": [0.04, 0.9, 0.06]}}}, "quant.ratios"),
    ({"quant": {"ratios": {"k": [0.04, 0.9, 0.06], "v": [0.9, 0.9, 0.1]}}}, "quant.ratios.v"),
    # in [0, 1] and summing to 1, but no middle share
    ({"quant": {"ratios": [0.5, 0.0, 0.5]}}, "quant.ratios"),
    ({"quant": {"ratios": [0.4, -0.0, 0.6]}}, "quant.ratios"),
    ({"quant": {"ratios": {"k": [0.5, 0.0, 0.5], "v": [0.04, 0.9, 0.06]}}}, "quant.ratios.k"),
    ({"quant": {"middle_bits": 9}}, "quant.middle_bits"),
    ({"quant": {"outlier_bits": 6}}, "quant.outlier_bits"),
    ({"quant": {"sparse_block": 128}}, "quant.sparse_block"),
    ({"quant": {"lanes": 12}}, "quant.lanes"),
    ({"quant": {"lanes": 128}}, "quant.lanes"),
    ({"mmu": {"sequences": 0}}, "mmu.sequences"),
    ({"mmu": {"sequences": 65537}}, "mmu.sequences"),
    ({"mmu": {"sequences": "4"}}, "mmu.sequences"),
    ({"mmu": {"max_tokens": 0}}, "mmu.max_tokens"),
    ({"mmu": {"max_tokens": (1 << 24) + 1}}, "mmu.max_tokens"),
    ({"mmu": {"max_tokens": 512.0}}, "mmu.max_tokens"),
    ({"mmu": {"pages": 1000}}, "mmu.pages"),
    ({"mmu": {"page_bytes": 100}}, "mmu.page_bytes"),
    ({"memory": {"data_bytes": 3}}, "memory.data_bytes"),
    ({"quant": {"lane": 4}}, "quant.lane"),
    ({"qaunt": {}}, "qaunt"),
])
def test_invalid_values_name_the_parameter(data, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        config_from_dict(data)


def test_bad_toml_is_a_value_error(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[quant\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(p)


def test_ratios_per_kind_or_shared(tmp_path):
    cfg = default_config()
    assert cfg.quant.ratios_for("k") == (0.08, 0.86, 0.06)
    assert cfg.quant.ratios_for("v") == (0.02, 0.94, 0.04)
    p = tmp_path / "c.toml"
    p.write_text("[quant]\nratios = [0.04, 0.90, 0.06]\n")   # replaces the default's table whole
    shared = load_config(p).quant
    assert shared.ratios_for("k") == shared.ratios_for("v") == (0.04, 0.9, 0.06)
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="kind"):
        cfg.quant.ratios_for("q")
