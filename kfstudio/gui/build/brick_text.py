"""Bricks and runs in words: the one- and two-line texts the Build page shows."""

from __future__ import annotations

from kfstudio.assembly.rules import brick_title
from kfstudio.core.students.networks import count_parameters
from kfstudio.core.tasks import ONE_VS_REST


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def percent(fraction: float) -> str:
    """One decimal where it matters: 0.9972 -> "99.7%", 1.0 -> "100%", 0.5 -> "50%"."""
    value = round(fraction * 100, 1)
    return f"{value:.0f}%" if value == int(value) else f"{value:.1f}%"


def teacher_name(manifest: dict) -> str:
    teacher = manifest.get("teacher") or {}
    return str(teacher.get("name") or teacher.get("ref") or "unknown teacher")


def run_group_title(teacher: str, folder_name: str) -> str:
    """The palette's heading for a run: "digits demo teacher · 20261202-004224", not the studio's
    folder name "20261202-004224-digits-demo-teacher" that repeats the teacher's name."""
    slug = "-" + teacher.replace(" ", "-")
    run = folder_name[:-len(slug)] if folder_name.endswith(slug) and len(folder_name) > len(slug) else folder_name
    return f"{teacher} · {run}"


def brick_summary(brick) -> str:
    task = brick.task
    kind = "one-vs-rest" if task.kind == ONE_VS_REST else f"{task.kind}, {len(task.classes)} classes"
    parts = [kind, f"{count_parameters(brick.module):,} parameters"]
    accuracy = (brick.manifest.get("metrics") or {}).get("accuracy")
    if isinstance(accuracy, (int, float)):
        parts.append(f"{percent(accuracy)} accurate")
    return " · ".join(parts + detector_words(brick.manifest.get("detector")))


def detector_words(detector: dict | None) -> list[str]:
    """A calibrated brick used alone, as a detector of its class: ["AUC 0.98", "detects 94%"]."""
    words = []
    if detector and isinstance(detector.get("auc"), (int, float)):
        words.append(f"AUC {detector['auc']:.2f}")
    if detector and isinstance(detector.get("accuracy"), (int, float)):
        words.append(f"detects {percent(detector['accuracy'])}")
    return words


def brick_tooltip(brick) -> str:
    task = brick.task
    classes = ", ".join(task.class_names[:12]) + (" …" if len(task.class_names) > 12 else "")
    return (f"{brick_title(brick)}\nTask '{task.name}' of the output '{task.source}' ({classes})\n"
            f"{brick_summary(brick)}\nFrom {brick.path}")


def attached_line(titles: list[str]) -> str:
    """The status line under the canvas for what is on the plate now."""
    if not titles:
        return "Drag a brick onto the base plate to add its task."
    shown = ", ".join(titles[:6]) + (" …" if len(titles) > 6 else "")
    return f"{plural(len(titles), 'brick')} attached: {shown}. Drag more bricks on, or export the network (Ctrl+E)."
