"""The child-process side of "Train a new brick…" (no Qt here, as in training_child).

``child_main`` runs in a ``spawn`` process. It drives ``kfstudio.io.grow_run.iter_add_brick``
(the same code as ``kfstudio add-brick``) and speaks the protocol of training_child:
``("report", r)``, ``("paused",)`` / ``("resumed",)``, ``("saved", brick_path, cancelled,
epochs_done)`` or ``("failed", sentence)`` up one pipe; "pause" / "resume" / "cancel" down the other.
"""

from __future__ import annotations

import threading
import traceback

from kfstudio.core.errors import KFError
from kfstudio.gui.training_child import _ChildControl, _listen


def child_main(run_folder: str, config, reports, commands) -> None:
    import torch

    from kfstudio.io.grow_run import iter_add_brick

    torch.set_num_threads(max(1, config.num_threads or 1))
    control = _ChildControl(reports.send)
    threading.Thread(target=_listen, args=(commands, control), daemon=True, name="kf-control").start()
    try:
        gen = iter_add_brick(run_folder, config, control=control)
        while True:
            try:
                report = next(gen)
            except StopIteration as stop:
                added = stop.value
                break
            reports.send(("report", report))
        reports.send(("saved", str(added.written[0]), bool(added.result.cancelled), int(added.result.epochs_done)))
    except KFError as exc:
        reports.send(("failed", str(exc)))
    except Exception as exc:  # a bug: say what happened in words, keep the detail on stderr
        traceback.print_exc()
        reports.send(("failed", f"Training the new brick stopped unexpectedly: {type(exc).__name__}: {exc}"))
    finally:
        reports.close()
