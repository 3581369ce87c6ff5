"""The CLI tests share one rule: a command may set torch's thread count (``--threads``); each
test gets back the count it started with, so one test's setting never slows the next."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
