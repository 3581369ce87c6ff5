"""The shipped digits file (resources/data/digits.npz) is scikit-learn's digits with the split
builtin:digits always had, and loading the demo data imports neither scikit-learn nor SciPy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from kfstudio.core.data.sources import Dataset, _hold_out, load_data


def test_shipped_digits_match_scikit_learn_and_the_old_split():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    expected = _hold_out(Dataset("builtin:digits", x, {"digit": y}, {"digit": [str(i) for i in range(10)]}),
                         seed=0, test_fraction=0.2)
    shipped = load_data("builtin:digits")
    for part in ("train", "test"):
        want, got = getattr(expected, part), getattr(shipped, part)
        assert torch.equal(got.x, want.x), part
        assert torch.equal(got.labels["digit"], want.labels["digit"]), part
    assert len(shipped.test) == 360 and "360" in shipped.note


def test_loading_the_digits_demo_imports_neither_scikit_learn_nor_scipy():
    code = ("import sys; from kfstudio.core.data.sources import load_data; load_data('builtin:digits'); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
