"""Paged memory management of the compressed KV cache (see ``docs/mmu.md``).

- :mod:`.layout`: sizes and encodings shared by the model and the RTL;
- :mod:`.model`: the golden model (the specification);
- :mod:`.free_list`, :mod:`.page_table`: the storage components;
- :mod:`.mmu`: the controller that executes append, read and free commands.
"""

from .layout import Kind, MMULayout, Op, Status
from .model import STALL, MMUModel, Record
from .free_list import FreeList
from .page_table import PageTable
from .mmu import MMU

__all__ = ["Kind", "MMULayout", "Op", "Status", "STALL", "MMUModel", "Record", "FreeList",
           "PageTable", "MMU"]
