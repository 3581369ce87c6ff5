"""The pinned Qt binding must survive a long live run: many thousands of signal emits."""

import subprocess
import sys

EMIT_MANY = """
from PySide6.QtCore import QCoreApplication, QObject, Signal
app = QCoreApplication([])
class Source(QObject):
    ticked = Signal(int)
source, seen = Source(), []
source.ticked.connect(seen.append)
for i in range(20000):
    source.ticked.emit(i)
print(len(seen))
"""


def test_twenty_thousand_signal_emits_do_not_crash_the_process():
    # PySide6 6.12.0 on Python 3.11 drops a reference to True on every emit and aborts the
    # process after a few thousand; a live plot emits that many in a minute.
    done = subprocess.run([sys.executable, "-c", EMIT_MANY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "20000"
