"""The portable-CPU Jupyter kernel that ``make install`` registers (the Makefile's ``PORTABLE_KERNEL``): the
kernel nbval re-executes the pages in, whose environment the simulated Colab kernels share."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def makefile_variable(name: str) -> str:
    """The value of ``NAME := value`` in the Makefile."""
    match = re.search(rf"^{name} := (.*)$", MAKEFILE.read_text(), re.M)
    assert match, f"the Makefile defines no {name}"
    return match.group(1).strip()


def portable_kernel_spec():
    """The installed kernel spec of ``PORTABLE_KERNEL`` (a test failure that says to run ``make install`` when
    it is absent)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    name = makefile_variable("PORTABLE_KERNEL")
    try:
        return KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        pytest.fail(f"the Jupyter kernel {name!r} is not installed: run `make install`")
