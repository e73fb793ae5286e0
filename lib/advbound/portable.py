"""Random draws that are the same bits on every x86 CPU.

torch's CPU sampler for ``float32`` normal draws takes a vectorised code path whose last bits depend on the
instruction set torch dispatches to (``ATEN_CPU_CAPABILITY``: ``default``, ``avx2``, ``avx512``): measured with
torch 2.14.1, ``torch.randn(500, 100)`` from one seed gives other bits under ``default`` than under ``avx2``.
The ``float64`` sampler, and the uniform one, give identical bits.  Every draw whose numbers the book prints
goes through :func:`normal` (drawn in ``float64`` on the CPU, then cast), so a printed number cannot move when
the book is re-checked on another CPU.
"""

from __future__ import annotations

import torch

from .modulus import check_seed


def normal(*shape: int, generator: torch.Generator, dtype: torch.dtype | None = None,
           device: str | torch.device | None = None) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator`` (a CPU generator), drawn in float64 and then
    converted to ``dtype`` (default: torch's default dtype) on ``device``."""
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (portable draws); got one on {generator.device}")
    draws = torch.randn(*shape, generator=generator, dtype=torch.float64)
    return draws.to(device=device, dtype=dtype or torch.get_default_dtype())


def seeded_normal(*shape: int, seed: int, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """:func:`normal` from a fresh generator seeded with ``seed``."""
    return normal(*shape, generator=torch.Generator().manual_seed(check_seed(seed)), dtype=dtype, device=device)


__all__ = ["normal", "seeded_normal"]
