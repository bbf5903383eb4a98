"""`paused_gc`: no cyclic garbage collection during a bulk pass over many rows.

The migration and the full comparison allocate millions of short-lived objects (rows, dicts,
strings) and make no reference cycles of their own; the collector would otherwise walk the
objects that live for a chunk again and again (a sixth of the migration's CPU time). Memory
stays flat (`make bench`), and the collector's state is put back afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
