"""Several GPUs: the device list offers "All N GPUs" and the run goes to torchrun's processes.

CI has no GPU: the list is tested with a faked set of devices, and the run of many processes
end to end on the CPU (2 gloo processes, the same launch path as N GPUs: the device is the
only difference). Process 0 reports; pause, resume, cancel and a killed process leave the
studio open with a message.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kfstudio.core.devices import DeviceInfo
from kfstudio.gui.train.run_settings import DeviceOption
from kfstudio.runner.ranks import _root_failure


def _fake_devices(cpu_threads=None):
    return [DeviceInfo("cuda:0", "NVIDIA A100 (39.0 GB free of 40.0 GB)", 39_000_000_000, 40_000_000_000),
            DeviceInfo("cuda:1", "NVIDIA A100 (30.0 GB free of 40.0 GB)", 30_000_000_000, 40_000_000_000),
            DeviceInfo("cpu", "CPU: 1 of 2 cores", None, None, 1)]


def test_two_gpus_offer_all_gpus_and_a_run_on_both(qtbot, monkeypatch, digits_choice, wait_estimated):
    import kfstudio.gui.train.page as fp

    monkeypatch.setattr(fp, "list_devices", _fake_devices)
    page = fp.FactorizePage(runs_home=Path("unused"))
    qtbot.addWidget(page)
    labels = [page.device_combo.itemText(i) for i in range(page.device_combo.count())]
    assert labels[0].startswith("All 2 GPUs") and len(labels) == 4  # all, each GPU, the CPU
    page.set_choice(digits_choice)
    assert page.processes() == 2 and page.config().device == "cuda"
    wait_estimated(page)
    assert "on each GPU" in page.memory_label.text() and "30.0 GB free" in page.memory_label.text()
    page.device_combo.setCurrentIndex(1)
    assert page.processes() == 1 and page.config().device == "cuda:0"


def test_one_cpu_shows_no_all_gpus_entry(qtbot, window):
    combo = window.factorize_page.device_combo
    assert not any(combo.itemText(i).startswith("All ") for i in range(combo.count()))


def _two_processes(page) -> None:
    """The launch path of "All N GPUs", on the CPU: 2 gloo processes."""
    page.device_combo.insertItem(0, "2 CPU processes", DeviceOption("cpu", "2 CPU processes", None, 2, 2))
    page.device_combo.setCurrentIndex(0)


def _ranks(launcher_pid: int) -> list[int]:
    """The training processes torchrun's agent started (children of the studio's child)."""
    path = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    pids = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_run_on_two_processes_follows_process_0_pauses_and_cancels(qtbot, window, short_run, digits_choice):
    window.set_choice(digits_choice)
    page = window.factorize_page
    short_run(page, epochs=3)
    page.config_overrides["tasks"] = "one-vs-rest:0,1"
    _two_processes(page)
    steps = []
    page.report_received.connect(lambda r: steps.append(r) if r.kind == "step" else None)
    saved = []
    page.run_saved.connect(lambda folder, cancelled: saved.append((folder, cancelled)))
    assert page.start()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=180_000)  # as below: a loaded machine starts two processes slowly
    assert "Training on 2 processes (gloo)" in page.log.toPlainText()  # process 0's setup report
    page.pause()
    qtbot.waitUntil(lambda: page.control.blocked, timeout=30_000)
    seen = len(steps)
    page.resume()
    qtbot.waitUntil(lambda: len(steps) > seen, timeout=30_000)
    page.cancel()
    qtbot.waitUntil(lambda: bool(saved) and not page.is_running, timeout=60_000)
    folder, cancelled = saved[0]
    assert cancelled and (Path(folder) / "common.safetensors").is_file()
    assert page.loss_plot.reports_seen == len(steps) > 0  # the plots drew process 0's reports
    assert steps[-1].samples_per_s > 0


def test_a_killed_process_stops_the_run_and_the_studio_says_so(qtbot, window, short_run, digits_choice,
                                                               message_boxes):
    window.set_choice(digits_choice)
    page = window.factorize_page
    short_run(page, epochs=50)
    page.config_overrides["tasks"] = "one-vs-rest:0,1"
    _two_processes(page)
    steps = []
    page.report_received.connect(lambda r: steps.append(r) if r.kind == "step" else None)
    assert page.start()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=180_000)  # two processes start torch, the teacher and the data; slow on a loaded machine
    ranks = _ranks(page.worker.pid)
    assert len(ranks) == 2
    os.kill(max(ranks), signal.SIGKILL)  # one of the two (the message names which)
    qtbot.waitUntil(lambda: not page.is_running, timeout=60_000)
    assert window.isVisible()
    title, text = message_boxes[-1]
    assert "of 2 stopped" in text and "The studio is fine" in text
    # torchrun's agent may see the surviving process fail first (its connection to the killed
    # one closes); the message then names that one, truthfully, instead of the SIGKILL.
    assert "SIGKILL" in text or "exited with status 1" in text
    assert page.start_button.isEnabled()
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in ranks)  # none left running


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_the_message_names_the_killed_process_before_a_peer_that_failed_first():
    from types import SimpleNamespace as Failure

    peer_first = {0: Failure(exitcode=1, timestamp=1.0), 1: Failure(exitcode=-9, timestamp=2.0)}
    assert _root_failure(peer_first)[0] == 1
    both_exited = {0: Failure(exitcode=1, timestamp=3.0), 1: Failure(exitcode=1, timestamp=2.0)}
    assert _root_failure(both_exited)[0] == 1
