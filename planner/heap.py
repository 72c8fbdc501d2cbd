"""Python's cycle collector around planning's large heaps.

A fleet's candidates and columns are hundreds of thousands of long-lived objects without reference cycles.
Each full collection while they pile up (one per quarter the heap grows) walks all of them again, and every
collection after they are built walks them once more, for nothing: at 200 services that was about 2 s of a
10 s plan. ``collector_paused`` pauses the collector while such objects are built; ``planning_heap`` pauses it
while a plan's inputs are built and then freezes them (``gc.freeze``: moved out of every generation the
collector walks) until the plan is made, when they go back to the oldest generation and, unreferenced, are
freed by their reference counts as before. What is built does not depend on either.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector paused inside the block (as it was after it)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def planning_heap() -> Iterator[Callable[[], None]]:
    """The collector paused until the block calls the function it is given (``built()``, once the inputs
    exist), which freezes every object alive then and resumes the collector; the block's end unfreezes them."""
    was = gc.isenabled()
    frozen = False

    def built() -> None:
        nonlocal frozen
        if not frozen:
            gc.freeze()
            frozen = True
            if was:
                gc.enable()

    gc.disable()
    try:
        yield built
    finally:
        if frozen:
            gc.unfreeze()
        elif was:
            gc.enable()
