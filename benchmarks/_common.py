"""What every benchmark shares: the machine header, the docs section writer, small stats, plots.

Each benchmark prints its tables and replaces its own section of docs/benchmarks.md, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; the reading at the top of that file is
written by a person and never touched here.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
FIG_DIR = ROOT / "docs" / "benchmarks"

_INTRO = """# KF Studio benchmarks

(The reading of these tables is written by hand above the generated sections.)
"""


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the benchmark works")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores on an idle machine, 1 when the 1-minute "
                             "load average is above 0.5: on a shared CPU, OpenMP threads that spin-wait for a "
                             "busy core make 2 threads ~3x slower than 1)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    if extra:
        extra(parser)
    args = parser.parse_args()
    args.load_at_start = os.getloadavg()[0]
    args.started_at = _dt.datetime.now().isoformat(timespec="seconds")
    if args.no_write:  # plots go to a scratch folder too, so docs/ keeps matching its tables
        import tempfile
        global FIG_DIR
        FIG_DIR = Path(tempfile.mkdtemp(prefix="kf-bench-plots-"))
    args.command = "python -m " + _module_name() + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    return args


def _module_name() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name if spec else Path(sys.argv[0]).stem


def setup_torch(args):
    import torch

    threads = args.threads or (os.cpu_count() or 1 if args.load_at_start < 0.5 else 1)
    torch.set_num_threads(threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but this machine has no CUDA GPU.")
    return torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_now() -> float:
    return os.getloadavg()[0]


def timing_caption(threads: int | None = None) -> str:
    """What every timing table's heading names: the CPU model, the threads timed with and the load now,
    e.g. "AMD EPYC, 1 thread, load 8.67 on 2 cores" (a ratio holds for one CPU, and a busy one shows)."""
    import torch

    threads = torch.get_num_threads() if threads is None else threads
    return (f"{cpu_model()}, {threads} thread{'s' if threads != 1 else ''}, "
            f"load {load_now():.2f} on {os.cpu_count()} cores")


def machine_header(args, seeds=None, notes: list[str] | None = None) -> str:
    """A few lines that say where, when and how a table was measured."""
    import torch

    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(0)})"
    lines = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"device {device}",
        f"- Command: `{args.command}`",
        f"- Started: {args.started_at}; 1-minute load average at start: "
        f"{args.load_at_start:.2f} (on {os.cpu_count()} cores; above ~0.5 means other work shared the CPU)",
    ]
    if seeds is not None:
        lines.append(f"- Seeds: {', '.join(str(s) for s in seeds)}")
    if args.quick:
        lines.append("- **--quick run: tiny settings to check the benchmark works; these are not results.**")
    lines += [f"- {n}" for n in notes or []]
    return "\n".join(lines)


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def mean_sd(values, scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def pct(values) -> str:
    return mean_sd(values, 100.0, 2)


def write_section(args, name: str, body: str) -> None:
    """Print ``body`` and put it between the markers of section ``name`` in docs/benchmarks.md."""
    print(body)
    if args.no_write:
        return
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.is_file() else _INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(f"\nWrote the '{name}' section of {DOC.relative_to(ROOT)}")


def line_plot(path: Path, title: str, x_label: str, y_label: str, series: dict[str, tuple[list, list]],
              hline: float | None = None) -> Path:
    """A PNG line plot rendered offscreen with pyqtgraph (no matplotlib needed)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from pyqtgraph.exporters import ImageExporter

    pg.mkQApp()
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    plot = pg.PlotWidget(title=title)
    plot.resize(720, 420)
    legend = pg.LegendItem(colCount=min(4, max(1, len(series))), horSpacing=12)
    plot.getPlotItem().layout.addItem(legend, 4, 1)  # under the plot, where it never hides a curve
    plot.getPlotItem().legend = legend  # plot(name=...) adds its curve here
    plot.setLabel("bottom", x_label)
    plot.setLabel("left", y_label)
    plot.getAxis("left").enableAutoSIPrefix(False)  # scores of 0-1 read as such, not "x0.001"
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        plot.plot(list(xs), list(ys), name=name, pen=pg.mkPen(colours[i % len(colours)], width=2),
                  symbol="o", symbolSize=5, symbolBrush=colours[i % len(colours)])
    if hline is not None:
        plot.addItem(pg.InfiniteLine(hline, angle=0, pen=pg.mkPen("#777", style=pg.QtCore.Qt.PenStyle.DashLine)))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Lay the widget out before exporting: unshown, its axes keep their default geometry and the
    # exported image draws the curves shifted against the tick labels (by ~0.04 on a 0-1 axis).
    plot.show()
    pg.QtWidgets.QApplication.processEvents()
    exporter = ImageExporter(plot.plotItem)
    exporter.parameters()["width"] = 900
    exporter.export(str(path))
    plot.close()
    return path
