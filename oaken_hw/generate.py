"""Verilog emission of the registered designs into one folder, with a manifest.

``generate(cfg, out_dir)`` writes ``<design>.v`` for every design of
:data:`oaken_hw.flow.designs.DESIGNS` and ``manifest.json``: the configuration, every
top-level port (name as emitted, width, direction), each design's latency, the file list
and the generator version. The output depends only on the configuration: emitting twice
gives identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from amaranth.hdl import Value
from amaranth.lib import wiring

from . import __version__
from .flow.designs import DESIGNS
from .verilog import emit_verilog

__all__ = ["ports_of", "latencies_of", "render", "generate"]


def ports_of(component):
    """Top-level ports of a component as emitted: ``[{name, width, direction}]``.

    Amaranth names a port by its signature path joined with ``__``; struct payloads are
    one flat vector.
    """
    ports = [{"name": "clk", "width": 1, "direction": "input"},
             {"name": "rst", "width": 1, "direction": "input"}]
    for path, member, value in component.signature.flatten(component):
        ports.append({"name": "__".join(str(p) for p in path),
                      "width": Value.cast(value).shape().width,
                      "direction": "input" if member.flow == wiring.In else "output"})
    return ports


def latencies_of(component):
    """Every integer ``*latency`` attribute of a component (cycles), by name."""
    names = [a for a in dir(component) if a.endswith("latency") and not a.startswith("_")]
    return {a: getattr(component, a) for a in sorted(names)
            if isinstance(getattr(component, a), int)}


def render(cfg):
    """``{file name: text}`` of every design and the manifest, for ``cfg``."""
    files, designs = {}, {}
    for name, design in DESIGNS.items():
        component = design.factory(cfg)
        text = emit_verilog(component, name)
        files[f"{name}.v"] = text
        designs[name] = {
            "file": f"{name}.v",
            "role": design.role,
            "description": design.description,
            "latencies": latencies_of(component),
            "ports": ports_of(component),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    manifest = {"generator": "oaken_hw", "version": __version__, "config": cfg.to_dict(),
                "designs": designs, "files": sorted(files)}
    files["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    return files


def generate(cfg, out_dir):
    """Write :func:`render`'s files into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render(cfg).items():
        p = out / name
        p.write_text(text)
        paths.append(p)
    return paths
