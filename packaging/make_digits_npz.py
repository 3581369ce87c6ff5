"""Write resources/data/digits.npz: scikit-learn's 1797 handwritten digits (the UCI "Optical
Recognition of Handwritten Digits" test set, BSD-3 via scikit-learn) and the fixed test split
of builtin:digits, so that loading the demo needs neither scikit-learn nor SciPy.

Importing them took ~1.3 s in every training process and, in the studio's loading thread, held
the interpreter lock long enough to freeze the window (docs/benchmarks.md, "The moments an
audience sees"). Run once by hand; tests/core/test_digits_file.py checks the file against
scikit-learn and the split rule.

    python packaging/make_digits_npz.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from sklearn.model_selection import train_test_split

from kfstudio.io.atomic import write_bytes

TARGET = Path(__file__).resolve().parents[1] / "resources" / "data" / "digits.npz"


def main() -> None:
    digits = load_digits()
    images = digits.images.astype(np.uint8)          # 0..16, as the UCI file has them
    target = digits.target.astype(np.uint8)
    # The split builtin:digits always had: kfstudio.core.data.sources._hold_out(seed=0, 20 %), stratified.
    n = len(target)
    _, test_idx = train_test_split(np.arange(n), test_size=int(np.ceil(0.2 * n)), random_state=0, stratify=target)
    test = np.zeros(n, dtype=bool)
    test[test_idx] = True
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, target=target, test=test)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(TARGET, buffer.getvalue())
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes; {int(test.sum())} test images)")


if __name__ == "__main__":
    main()
