"""A run's reports, saved beside its run.json as ``reports.jsonl`` and read back for the plots.

One JSON object per line: ``{"kind": "step", ...}`` with the fields of the frozen report
dataclasses of ``kfstudio.core.factorize`` (TaskMetrics as plain dicts). Plain JSON, never
pickle: a run folder may come from anyone. The file is rewritten atomically at every
checkpoint and at the end, so after a crash it holds exactly what the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kfstudio.core.errors import FileFormatError
from kfstudio.io.atomic import write_bytes

REPORTS_NAME = "reports.jsonl"
_SAVED_KINDS = ("setup", "step", "eval", "checkpoint")


def report_to_dict(report) -> dict:
    """A frozen report as plain JSON-able values (nested dataclasses become dicts)."""
    return {"kind": report.kind, **dataclasses.asdict(report)}


def report_from_dict(d: dict):
    """Rebuild a report written by ``report_to_dict`` (raises FileFormatError when it is not one)."""
    from kfstudio.core.runs import CheckpointReport, EvalReport, SetupReport, StepReport
    from kfstudio.core.imb import StageHealth
    from kfstudio.core.measures.metrics import TaskMetrics

    kinds = {"setup": SetupReport, "step": StepReport, "eval": EvalReport, "checkpoint": CheckpointReport}
    cls = kinds.get(d.get("kind")) if isinstance(d, dict) else None
    if cls is None:
        raise FileFormatError(f"A line of {REPORTS_NAME} is not a run report.")
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in d.items() if k in fields}
    try:
        if cls is SetupReport:
            values["teacher_metrics"] = {k: TaskMetrics(**m) for k, m in values["teacher_metrics"].items()}
            for key in ("messages", "task_names", "task_titles"):
                values[key] = tuple(values[key])
        if cls is StepReport:
            values["infomax_health"] = tuple(StageHealth(**h) for h in values.get("infomax_health", ()))
        if cls is EvalReport:
            for key in ("tasks", "groups"):
                values[key] = {k: TaskMetrics(**m) for k, m in values[key].items()}
        return cls(**values)
    except (KeyError, TypeError, AttributeError) as exc:
        raise FileFormatError(f"A {d['kind']} report in {REPORTS_NAME} is incomplete ({exc}).") from None


class ReportLog:
    """Collects a run's reports and writes them to ``folder/reports.jsonl``."""

    def __init__(self, folder: str | Path, keep_existing: bool = False) -> None:
        self.path = Path(folder) / REPORTS_NAME
        self._lines: list[str] = []
        if keep_existing and self.path.is_file():  # a resumed run goes on where its file stopped
            self._lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        self._written = len(self._lines)

    def append(self, report) -> None:
        if report.kind not in _SAVED_KINDS:
            return
        self._lines.append(json.dumps(report_to_dict(report), allow_nan=True))
        if report.kind == "checkpoint":
            self.flush()

    def flush(self) -> None:
        if self._lines and len(self._lines) != self._written:
            write_bytes(self.path, ("\n".join(self._lines) + "\n").encode())
            self._written = len(self._lines)

    def close(self) -> None:
        self.flush()


def write_reports(folder: str | Path, reports) -> Path:
    """Write all ``reports`` at once (the CLI and tests); returns the file written."""
    log = ReportLog(folder)
    for report in reports:
        log.append(report)
    log.close()
    return log.path


def read_reports(folder: str | Path) -> list:
    """The reports saved with a run, oldest first; [] when the run has none (older runs)."""
    path = Path(folder) / REPORTS_NAME
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise FileFormatError(f"Line {number} of {path} is not valid JSON; the file is damaged.") from None
        out.append(report_from_dict(d))
    return out
