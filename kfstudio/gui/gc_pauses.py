"""Short full passes of the garbage collector, so that no worker thread freezes the window.

A full collection walks every object the process holds and keeps the interpreter lock all the
while, in whichever thread happened to trigger it. The studio holds a large heap (Qt wrappers,
torch, pyqtgraph), so one pass took ~100 ms, and 215 ms on a busy machine, when the Factorize
page's estimate worker built a network after a project was opened: the window stood still. What
exists once the pages are built, or once a demo, project or teacher has been loaded, lives about as
long as the window, so it is moved out of the collector's sight (``gc.freeze``); later full passes
walk only what is newer. Frozen objects are still freed by reference counting; only a reference
cycle among them that later becomes garbage is kept, a small price here.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Exempt every object alive now from later full collections (see the module's note)."""
    gc.freeze()
