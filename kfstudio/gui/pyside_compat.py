"""Work around a reference-counting bug of PySide6 6.12 on Python 3.11 and older.

In PySide6 6.12.0 every ``SignalInstance.emit()`` made from Python gives back ``True``
without taking a new reference, and queued deliveries drop references to ``None``. On
Python 3.12+ these singletons are immortal, so nothing happens; on 3.11 their reference
counts fall with every emit until CPython aborts the process ("deallocating True or
False" / "deallocating None") after a few thousand emits — pyqtgraph alone emits that
many in a minute of live plotting. ``make_singletons_immortal`` gives True, False and
None the huge reference count that 3.12 gives them, which no number of emits can use up.
Call it before any signal is emitted (``kfstudio.gui.theme`` does on import).
"""

from __future__ import annotations

import ctypes
import sys

_DONE = False
_BUMP = 1 << 40  # ~10^12 emits before it could matter


def make_singletons_immortal() -> bool:
    """Apply the fix once on CPython < 3.12; True when applied (now or before)."""
    global _DONE
    if _DONE:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    for obj in (True, False, None):
        refcnt = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is a PyObject's first field
        refcnt.value += _BUMP
    _DONE = True
    return True
