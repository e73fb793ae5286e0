"""Estimating the modulus of continuity of a trained generator (the paper's footnote 11 and supplement C.2).

The paper evaluates the image-space bounds of Tables 1-2 with a *probabilistic* modulus of continuity: the
inequality ``||g(z) - g(z')|| <= omega(||z - z'||)`` is required only with high probability over ``z``, and
its failure probability ``delta`` is accounted for in the bound.  The supplement (C.2) that describes the
exact optimisation is not available, so **the procedure below is this project's design** (DESIGN.md,
"Estimating omega for a trained generator"), not a reproduction of the authors' code:

1. For each radius ``t`` of a grid ``0 = t_0 < t_1 < ... < t_m`` and each of ``n`` latent samples
   ``z ~ N(0, I_d)``, estimate the local increment ``s_t(z) = max_{||u|| <= t} ||g(z + u) - g(z)||_2`` by
   projected gradient ascent on ``u`` from several random directions (batched); every iterate is a valid
   point of the ball, so the best value seen is kept.  Random directions alone underestimate a supremum.
2. ``omega(t_k)`` is the ``(1 - delta)`` quantile of ``s_{t_k}(z)`` over the sample (or, with
   ``confidence``, an order statistic that upper-bounds that quantile with the stated confidence, see
   below), then made monotone by a running maximum -> :class:`advbound.modulus.EmpiricalModulus` carrying
   ``delta``, which :func:`advbound.bounds.robustness_quantile_bound` adds to the target probability.

Honest caveats (also printed in the book):

* the inner maximum is found by a local ascent, so ``s_t(z)`` is a *lower* estimate of the true supremum;
* the ``(1 - delta)`` quantile of a finite sample is itself an estimate.  With ``confidence = c`` we use
  the distribution-free order statistic ``s_(k)`` with the smallest rank ``k`` such that
  ``P(Binomial(n, 1 - delta) >= k) <= (1 - c) / m`` (Bonferroni over the ``m`` radii ``t_1 .. t_m``; at
  ``t_0 = 0`` the increment is exactly 0 and nothing is estimated), so that, *for the increments as
  computed*, ``P(s_t(z) > omega(t)) <= delta`` holds at every grid radius simultaneously with probability
  at least ``c`` over the sample;
* between grid radii the modulus is interpolated linearly (not a certified upper bound), and beyond the
  last radius it is ``+inf``;
* a modulus that holds for most ``z`` around each ``z`` is what the bound uses here; whether this matches
  the paper's (unavailable) exact formulation cannot be checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from .attacks.base import _module_device, _module_dtype, eval_mode
from .modulus import EmpiricalModulus, check_seed
from .portable import normal, seeded_normal
from .training import latent_dimension, resolve_device


def default_radii(n_radii: int = 12, t_max: float = 2.0, t_min: float = 0.02) -> np.ndarray:
    """``0`` followed by ``n_radii - 1`` geometrically spaced radii from ``t_min`` to ``t_max``.

    The Tables 1-2 bound needs omega near the latent radius ``t* ~ 0.16-0.25`` (10 classes, d = 100),
    which the default range covers with several points.
    """
    if isinstance(n_radii, bool) or int(n_radii) != n_radii or n_radii < 2:
        raise ValueError(f"n_radii must be an integer >= 2; got {n_radii!r}")
    if not (0 < t_min < t_max and math.isfinite(t_max)):
        raise ValueError(f"need 0 < t_min < t_max < inf; got t_min={t_min!r}, t_max={t_max!r}")
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, int(n_radii) - 1)])


def order_statistic_rank(n: int, delta: float, confidence: float, n_tests: int = 1) -> int:
    """Smallest 1-based rank ``k`` with ``P(Binomial(n, 1 - delta) >= k) <= (1 - confidence) / n_tests``.

    Then the ``k``-th smallest of ``n`` i.i.d. draws is ``>=`` their ``(1 - delta)`` quantile with
    probability at least ``1 - (1 - confidence) / n_tests``.  Raises ``ValueError`` when even the maximum
    (``k = n``) does not reach that level: ``n`` is too small for ``delta`` and ``confidence``.
    """
    if n < 1:
        raise ValueError(f"n (number of latent samples) must be >= 1; got {n!r}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    level = (1.0 - confidence) / max(1, int(n_tests))
    ks = np.arange(1, n + 1)
    ok = np.flatnonzero(stats.binom.sf(ks - 1, n, 1.0 - delta) <= level)
    if ok.size == 0:
        need = math.ceil(math.log(level) / math.log(1.0 - delta))
        raise ValueError(f"n_samples={n} is too small for delta={delta:g} at confidence {confidence:g} over "
                         f"{n_tests} radii; need at least {need} latent samples")
    return int(ks[ok[0]])


def local_increments(generator: nn.Module, z: torch.Tensor, radius: float, *, restarts: int = 4,
                     steps: int = 10, step_size: float = 0.25, batch_size: int = 256,
                     seed: int = 0) -> torch.Tensor:
    """Per-sample estimate of ``max_{||u|| <= radius} ||g(z + u) - g(z)||_2`` (a lower estimate of the sup).

    For each ``z`` and each of ``restarts`` random unit directions, start at ``u = radius * direction`` and
    take ``steps`` normalised gradient-ascent steps of length ``step_size * radius``, projecting back onto
    the ball; return the best value seen over restarts and iterates.  All samples and restarts are batched.
    An ``nn.Module`` generator is evaluated in eval mode and given back in the mode it came in.
    """
    if radius < 0 or not math.isfinite(radius):
        raise ValueError(f"radius must be finite and >= 0; got {radius!r}")
    for name, v in (("restarts", restarts), ("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or int(v) != v or v < (0 if name == "steps" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'steps' else 1}; got {v!r}")
    if not (step_size > 0):
        raise ValueError(f"step_size must be > 0; got {step_size!r}")
    seed = check_seed(seed)
    n = z.shape[0]
    if radius == 0.0 or n == 0:
        return torch.zeros(n, device=z.device)
    with eval_mode(generator):
        return _local_increments(generator, z, radius, restarts, steps, step_size, batch_size, seed)


def _local_increments(generator: nn.Module, z: torch.Tensor, radius: float, restarts: int, steps: int,
                      step_size: float, batch_size: int, seed: int) -> torch.Tensor:
    n = z.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out = torch.empty(n, device=z.device, dtype=z.dtype)
    per_chunk = max(1, batch_size // restarts)
    for start in range(0, n, per_chunk):
        zc = z[start:start + per_chunk].detach()
        c = zc.shape[0]
        zr = zc.repeat_interleave(restarts, dim=0)
        with torch.no_grad():
            base = generator(zr)
        u = normal(*zr.shape, generator=gen, dtype=z.dtype, device=z.device)
        u = radius * u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        best = torch.zeros(zr.shape[0], device=z.device, dtype=z.dtype)
        for it in range(int(steps) + 1):
            u.requires_grad_(True)
            dist = (generator(zr + u) - base).flatten(1).norm(dim=1)
            best = torch.maximum(best, dist.detach())
            if it == steps:
                break
            (grad,) = torch.autograd.grad(dist.sum(), u)
            with torch.no_grad():
                u = u + step_size * radius * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                u = u * (radius / u.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        out[start:start + c] = best.view(c, restarts).max(dim=1).values
    return out


@dataclass
class ModulusEstimate:
    """An estimated probabilistic modulus and how it was obtained (see the module docstring)."""

    modulus: EmpiricalModulus
    radii: np.ndarray
    raw: np.ndarray              # (1 - delta) quantile (or order statistic) per radius, before monotone
    increments: np.ndarray       # (n_radii, n_samples) inner-maximum estimates s_t(z)
    delta: float
    n_samples: int
    confidence: float | None = None
    rank: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data summary for a results JSON."""
        return {
            "method": "our design (paper's C.2 unavailable): (1-delta) quantile over z of a projected-"
                      "gradient-ascent estimate of max_{||u||<=t} ||g(z+u)-g(z)||, running max over t",
            "radii": self.radii.tolist(), "raw": self.raw.tolist(), "values": self.modulus.values.tolist(),
            "delta": self.delta, "n_samples": self.n_samples, "confidence": self.confidence,
            "order_statistic_rank": self.rank, **self.settings,
        }


def estimate_modulus(generator: nn.Module, *, radii: Sequence[float] | np.ndarray | None = None,
                     n_samples: int = 256, delta: float = 0.05, confidence: float | None = None,
                     restarts: int = 4, steps: int = 10, step_size: float = 0.25, batch_size: int = 256,
                     seed: int = 0, device: str | torch.device | None = None) -> ModulusEstimate:
    """Estimate a probabilistic modulus of continuity of ``generator`` (footnote 11; our design for C.2).

    ``radii`` (default :func:`default_radii`) must start at 0 and increase.  ``omega(t)`` is the
    ``(1 - delta)`` empirical quantile over ``n_samples`` latent draws of :func:`local_increments`; with
    ``confidence`` it is instead the order statistic of :func:`order_statistic_rank` (Bonferroni over the
    ``len(radii) - 1`` positive radii).  Returns a :class:`ModulusEstimate` whose ``modulus`` carries
    ``delta`` into the bound.  The generator is moved to ``device`` (default: where its parameters are),
    evaluated in eval mode and given back in the mode it came in.
    """
    r = default_radii() if radii is None else np.asarray(radii, dtype=float).ravel()
    if r.size < 2 or r[0] != 0.0 or np.any(np.diff(r) <= 0) or not np.all(np.isfinite(r)):
        raise ValueError("radii must be finite, start at 0 and increase strictly (at least 2 values)")
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1; got {n_samples!r}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta (failure probability of the modulus) must be in (0, 1); got {delta!r}")
    seed = check_seed(seed)
    dev = resolve_device(device) if device is not None else (_module_device(generator) or torch.device("cpu"))
    generator = generator.to(dev)
    d = latent_dimension(generator)
    dtype = _module_dtype(generator) or torch.get_default_dtype()
    z = seeded_normal(int(n_samples), d, seed=int(seed), dtype=dtype, device=dev)
    with eval_mode(generator):
        inc = np.stack([local_increments(generator, z, float(t), restarts=restarts, steps=steps,
                                         step_size=step_size, batch_size=batch_size,
                                         seed=int(seed) + 1 + k).cpu().numpy()
                        for k, t in enumerate(r)])
    rank = None
    if confidence is None:
        raw = np.quantile(inc, 1.0 - delta, axis=1, method="higher")
    else:
        rank = order_statistic_rank(int(n_samples), delta, confidence, n_tests=r.size - 1)
        raw = np.sort(inc, axis=1)[:, rank - 1]
    raw[0] = 0.0  # g(z + 0) - g(z) = 0
    modulus = EmpiricalModulus.from_estimates(r, raw, delta)
    settings = {"restarts": int(restarts), "steps": int(steps), "step_size": float(step_size), "seed": int(seed)}
    return ModulusEstimate(modulus, r, raw, inc, float(delta), int(n_samples), confidence, rank, settings)


__all__ = [
    "ModulusEstimate",
    "default_radii",
    "estimate_modulus",
    "local_increments",
    "order_statistic_rank",
]
