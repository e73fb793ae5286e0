"""Test set-up: point the library at the official MNIST test files when they sit beside the checkout.

The library never searches for the repository; the test harness (like the Makefile) names the folder through
``$ADVBOUND_MNIST_DIR`` when ``../shared/data/mnist`` exists.  ``tiny_dry_run``: a dry run shared by the dry-run
tests and the ``--out`` tests of the adversarial suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
if not os.environ.get("ADVBOUND_MNIST_DIR") and (_SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
    os.environ["ADVBOUND_MNIST_DIR"] = str(_SHARED_MNIST)


@pytest.fixture(scope="module")
def tiny_dry_run():
    """The dry run of the cifar10 full profile scaled down to seconds (tests/tinyconfig.py), on one thread."""
    import torch

    from advbound.experiments import dryrun
    from tinyconfig import tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return dryrun.dry_run("cifar10", "full", config=tiny("cifar10", "full"), probe_batch=2, repeats=1)
    finally:
        torch.set_num_threads(threads)
