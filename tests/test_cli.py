"""The ``oaken-hw`` model commands, run as a user would, errors included."""

import json
import subprocess
import sys

import numpy as np
import pytest

DATA = __import__("pathlib").Path(__file__).parent.parent / "oaken_hw" / "data"
TOPICS = DATA / "smollm2_pydoc_topics_64tok.npz"
TUTORIAL = DATA / "smollm2_pydocs_tutorial_64tok.npz"


def run(*args):
    return subprocess.run([sys.executable, "-m", "oaken_hw.cli", *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory):
    out = tmp_path_factory.mktemp("th") / "th.json"
    r = run("calibrate", str(TOPICS), "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_eval_json_and_dump(thresholds, tmp_path):
    dump = tmp_path / "out.npz"
    r = run("eval", str(TUTORIAL), "--thresholds", str(thresholds), "--json", "--dump", str(dump))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    for key in ("k", "v"):
        s = rep[key]
        assert set(s) >= {"effective_bits", "sqnr_db", "fractions", "max_error_steps"}
        assert set(s["fractions"]) == {"outer", "middle", "inner"}
        assert 4.7 < s["effective_bits"] < 5.9 and s["sqnr_db"] > 20
    # the default shares move outliers from V to K (14 % and 6 %) at a 10 % mean
    assert rep["k"]["effective_bits"] > rep["v"]["effective_bits"] + 0.4
    assert 5.0 < (rep["k"]["effective_bits"] + rep["v"]["effective_bits"]) / 2 < 5.6
    src, out = np.load(TUTORIAL), np.load(dump)
    assert sorted(out.files) == ["k", "v"]
    assert out["k"].shape == src["k"].shape and out["k"].dtype == np.float16


def test_k_pre_and_ratios(tmp_path):
    out = tmp_path / "th.json"
    r = run("calibrate", str(TOPICS), "-o", str(out), "--key", "k_pre", "--ratios", "0.02,0.94,0.04")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["ratios"] == {"k": [0.02, 0.94, 0.04], "v": [0.02, 0.94, 0.04]}
    r = run("calibrate", str(TOPICS), "-o", str(out), "--k-ratios", "0.1,0.8,0.1")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["ratios"] == {"k": [0.1, 0.8, 0.1], "v": [0.02, 0.94, 0.04]}
    r = run("eval", str(TUTORIAL), "--thresholds", str(out), "--key", "k_pre")
    assert r.returncode == 0 and "SQNR" in r.stdout


def one_line_error(r, pattern):
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert pattern in r.stderr, r.stderr


def test_bad_input_gives_one_line_errors(thresholds, tmp_path):
    one_line_error(run("eval", str(tmp_path / "missing.npz"), "--thresholds", str(thresholds)),
                   "no such file")
    bad = tmp_path / "bad.npz"
    np.savez(bad, k=np.zeros((2, 3, 4), np.float16), v=np.zeros((2, 3, 4), np.float16))
    one_line_error(run("eval", str(bad), "--thresholds", str(thresholds)), "shaped")
    few = tmp_path / "few.npz"
    np.savez(few, k=np.zeros((2, 3, 4, 64), np.float16), v=np.zeros((2, 3, 4, 64), np.float16))
    one_line_error(run("eval", str(few), "--thresholds", str(thresholds)), "30 layers")
    data = json.loads(thresholds.read_text())
    data["v"][3] = [1, 0, 2, 3]
    unordered = tmp_path / "unordered.json"
    unordered.write_text(json.dumps(data))
    one_line_error(run("eval", str(TUTORIAL), "--thresholds", str(unordered)), "ordered")
    one_line_error(run("calibrate", str(TOPICS), "-o", str(tmp_path / "x.json"),
                       "--ratios", "0.5,0.6"), "--ratios")
    one_line_error(run("eval", str(TUTORIAL), "--thresholds", str(tmp_path / "none.json")),
                   "none.json")
