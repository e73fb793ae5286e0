"""Test set-up: point the library at the official MNIST test files when they sit beside the checkout.

The library never searches for the repository; the test harness (like the Makefile) names the folder through
``$ADVBOUND_MNIST_DIR`` when ``../shared/data/mnist`` exists.
"""

from __future__ import annotations

import os
from pathlib import Path

_SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
if not os.environ.get("ADVBOUND_MNIST_DIR") and (_SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
    os.environ["ADVBOUND_MNIST_DIR"] = str(_SHARED_MNIST)
