"""Draws that the book prints from are the same bits under another CPU capability (a subprocess with
``ATEN_CPU_CAPABILITY=default``, which every x86 CPU supports)."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from advbound.portable import normal, seeded_normal

SCRIPT = ("import hashlib; from advbound.portable import seeded_normal; "
          "print(hashlib.sha256(seeded_normal(500, 100, seed=303, dtype=__import__('torch').float64)"
          ".numpy().tobytes()).hexdigest())")


def test_seeded_normal_is_the_same_under_the_default_capability():
    here = hashlib.sha256(seeded_normal(500, 100, seed=303, dtype=torch.float64).numpy().tobytes()).hexdigest()
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    there = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here


def test_normal_is_standard_normal_cast_to_the_requested_type():
    z = seeded_normal(20000, 3, seed=0)
    assert z.dtype == torch.get_default_dtype()
    # mean 0 (5 standard errors), variance 1 (sd of the variance estimate is sqrt(2 / n))
    assert float(z.mean().abs()) < 5 / (60000 ** 0.5)
    assert abs(float(z.var()) - 1) < 5 * (2 / 60000) ** 0.5
    g = torch.Generator().manual_seed(0)
    assert torch.equal(normal(20000, 3, generator=g, dtype=torch.float64).float(), z)


def test_a_cuda_generator_is_refused():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    with pytest.raises(ValueError, match="generator must be a CPU"):
        normal(3, generator=torch.Generator(device="cuda"))


def test_nbval_runs_the_chapters_in_the_portable_kernel():
    """`make test` re-executes every chapter in the kernel `make install` installs, and that kernel's torch
    really runs the plain C++ kernels (and oneDNN limited to SSE4.1)."""
    from jupyter_client.manager import start_new_kernel

    from kernels import MAKEFILE, makefile_variable, portable_kernel_spec

    assert "--nbval-kernel-name $(PORTABLE_KERNEL)" in MAKEFILE.read_text()
    name, spec = makefile_variable("PORTABLE_KERNEL"), portable_kernel_spec()
    assert spec.env == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    printed: list[str] = []
    km, kc = start_new_kernel(kernel_name=name)
    try:
        reply = kc.execute_interactive("import torch; print(torch.backends.cpu.get_cpu_capability())", timeout=120,
                                       output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    assert "".join(printed).strip() == "DEFAULT"
