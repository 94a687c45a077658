"""Python's cyclic garbage collector, kept off the scan loop's time.

The collector holds the GIL while it scans, and a full (generation-2) collection scans every
tracked object. A hot reload's parse allocates enough to trigger one: on a started agent's
heap that held the event loop, and the scan loop on it, for 120 to 160 ms (docs/benchmarks.md,
"reload stall"). So:

- `settle()`, once the agent is built and before its scan loop starts: one full collection,
  then `gc.freeze()`. The modules, the config, the first rules, the hardware and the journal
  move to the permanent generation, which no later collection scans.
- `paused()` around a reload (the Reloader: reading, parsing and compiling in its worker
  thread, carrying the timers over and the swap on the loop): no automatic collection while
  the new rules are built; then `collect()`, one collection in a worker thread once the
  old rules are gone, so the loop runs a tick between the swap and it. It scans only what is
  not frozen: the new rules and what the agent allocated since it started (a 162 KiB rule
  file is about 24,000 objects, 5 to 8 ms of CPU on the bench's machine).
- `thaw()` when the agent has stopped, for a process that outlives it (tests, the bench).

A frozen object is still freed by reference counting when its last reference goes: the first
rules after a reload, since a rule set and its evaluator hold no reference cycle
(tests/agent/test_heap.py checks that). A cycle among frozen objects is never freed; that is
why `settle()` collects first and why a reload does not freeze again: a freeze then would
also freeze what the running agent holds at that moment (a connection's buffers, its tasks),
and what of that later became garbage in a cycle would stay until the process ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def settle() -> None:
    """Collect what is garbage now, then freeze the rest (no collection scans it again)."""
    gc.collect()
    gc.freeze()


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside; the collector as it was afterwards. One caller at a
    time (the Reloader's lock): the switch is the process's."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collect() -> None:
    """One full collection: it scans only what is not frozen."""
    gc.collect()


def thaw() -> None:
    """Undo `settle()`: the frozen objects are collectable again."""
    gc.unfreeze()
