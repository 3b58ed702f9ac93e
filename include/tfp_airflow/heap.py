"""Keep Python's cyclic garbage collector off what lives as long as the process.

A night's process loads Airflow, its execution API, Great Expectations, pandas and scipy: a few million
objects that live until the process ends. Each full collection walks all of them again, and Python's
shutdown walks them once more; on a 2,000-family ``tfp run`` that was about 3 s during the night and
3 s after its last task. ``long_lived`` makes such objects without collections and then freezes them
(``gc.freeze``: out of the collector's sight, still freed by reference counting); ``freeze_at_exit``
spares the shutdown walk. Only cycles among frozen objects would wait for the process's end, which
is when they would go anyway. Nothing a night writes depends on any of this.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_at_exit = False


@contextmanager
def long_lived() -> Iterator[None]:
    """No collection while the block makes objects meant to live until the process ends (imports, the
    parsed DAG, the in-process execution API); then everything alive is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def freeze_at_exit() -> None:
    """Freeze the heap when the interpreter exits, so its shutdown does not walk it (once per process)."""
    global _at_exit
    if not _at_exit:
        atexit.register(gc.freeze)
        _at_exit = True
