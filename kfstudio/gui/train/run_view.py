"""What the Factorize page shows of a run: its curves, its progress and its log, from the reports
of a live run, of a saved run (``reports.jsonl``) or of a replay; the three go the same way.

``RunView`` is a mixin of ``FactorizePage``: it uses the page's plots (``loss_plot``,
``accuracy_plot``), ``run_bar``, ``log``, ``health_badge``, ``control``, ``replay`` and signals.
"""

from __future__ import annotations

from pathlib import Path

from kfstudio.core.errors import KFError


class RunView:
    """Reports in, curves, progress and log out (on the GUI thread)."""

    def show_run(self, folder: str | Path) -> int:
        """Show a finished run's curves and log again (from its reports.jsonl); how many reports."""
        if self.is_running:
            return 0
        self.stop_replay()
        self.clear_curves()
        count = self.show_saved_reports(folder)
        self.shown_folder = Path(folder)
        self._say(f"Saved run {Path(folder).name}: {self.step_count:,} steps shown" if count
                                else "Not started")
        return count

    def clear_curves(self) -> None:
        self.step_count = 0
        self.run_bar.clock.reset()
        self.loss_plot.reset()
        self.accuracy_plot.reset()
        self.log.clear()
        self.health_badge.reset()

    def replay_run(self, folder: str | Path, speed: float) -> bool:
        """Play a recorded run's reports into the same plots at ``speed`` x; False when it has none."""
        from kfstudio.gui.train.replay import RunReplay
        from kfstudio.io.reports import read_reports

        if self.is_running:
            return False
        reports = read_reports(folder)
        if not reports:
            return False
        self.stop_replay()
        self.clear_curves()
        self.shown_folder = Path(folder)
        self.replay = RunReplay(reports, speed, self)
        self.replay.report.connect(self.take_report)
        self.replay.finished.connect(self._on_replay_finished)
        self._say(f"Replaying {Path(folder).name} at {speed:g}x")
        self.replay.start()
        self._update_buttons()
        return True

    def stop_replay(self) -> None:
        if self.replay is not None:
            self.replay.stop()
            self.replay = None

    def _on_replay_finished(self) -> None:
        self.replay = None
        self.run_bar.flush()  # the rate line shows the last step
        self._say(f"Replay finished: {self.step_count:,} steps")
        self.status_message.emit("Replay finished")

    def take_report(self, report) -> None:
        """One report of a live, saved or replayed run."""
        self._on_worker_report(report)

    def show_saved_reports(self, folder: str | Path) -> int:
        """Draw the reports saved with a run (reports.jsonl) as if they had just arrived; how many."""
        from kfstudio.io.reports import read_reports

        try:
            reports = read_reports(folder)
        except KFError as exc:
            self.log.appendPlainText(str(exc))
            return 0
        for report in reports:
            self._on_worker_report(report)
        self.run_bar.flush()
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.fit_span_to_data()  # a run stopped early fills the plot; a resumed one gets its span back from the child
            plot.flush()
        return len(reports)

    def _on_worker_report(self, report) -> None:
        kind = report.kind
        self.health_badge.take_report(report)
        if kind == "step":
            self.step_count += 1
            self._last_epoch = report.epoch
            self.loss_plot.add_report(report)
            self._show_progress(report)
        elif kind == "eval":
            self.accuracy_plot.add_report(report)
            self._log_eval(report)
        elif kind == "setup":
            self._total_epochs = round(report.total_steps / max(1, report.steps_per_epoch))  # a replay's too
            self.accuracy_plot.set_teacher_metrics(report.teacher_metrics)
            self.accuracy_plot.set_titles(dict(zip(report.task_names, report.task_titles, strict=False)))
            for plot in (self.loss_plot, self.accuracy_plot):
                plot.set_span(report.total_steps / max(1, report.steps_per_epoch))
            groups = [name for name in report.teacher_metrics if name not in report.task_names]
            self.accuracy_plot.prepare(groups, report.task_names)
            for message in report.messages:
                self.log.appendPlainText(message)
            self.log.appendPlainText(f"Training on {report.device}: {report.total_steps} steps, "
                                     f"{report.parameters.get('common', 0):,} parameters in the common module.")
            self._say("Training…")
        elif kind == "checkpoint":
            self.status_message.emit(f"Checkpoint saved after epoch {report.epoch}")
        self.report_received.emit(report)

    def _say(self, text: str) -> None:
        """Put ``text`` in the progress bar; a step report still waiting to be shown is dropped."""
        self.run_bar.say(text)

    def _show_progress(self, report) -> None:
        if self.control is not None and (self.control.paused or self.control.cancelled):
            return  # keep "Pausing…"/"Stopping…" visible
        self.run_bar.show_step(report, self._total_epochs,
                               self.replay.time_left_s() if self.replay is not None else None)

    def _log_eval(self, report) -> None:
        parts = []
        for name, m in report.groups.items():
            value = m.accuracy if m.accuracy is not None else m.agreement
            parts.append(f"{name} {value:.1%}")
        self.log.appendPlainText(f"Epoch {report.epoch}: accuracy " + ", ".join(parts))
