"""The child-process side of "Train a new brick…" (no Qt here, as in training_child).

``child_main`` runs in a ``spawn`` process. It drives ``kfstudio.io.grow_run.iter_add_brick``
(the same code as ``kfstudio add-brick``) and speaks the protocol of training_child:
``("report", r)``, ``("paused",)`` / ``("resumed",)``, ``("saved", brick_path, cancelled,
epochs_done)`` or ``("failed", sentence)`` up one pipe; "pause" / "resume" / "cancel" down the other.
"""

from __future__ import annotations

from kfstudio.runner.training_child import drive, start_control


def child_main(run_folder: str, config, reports, commands) -> None:
    from kfstudio.io.grow_run import iter_add_brick

    control = start_control(config, reports, commands)

    def finish(added):
        return ("saved", str(added.written[0]), bool(added.result.cancelled), int(added.result.epochs_done))

    drive(reports, iter_add_brick(run_folder, config, control=control), finish, "Training the new brick")
