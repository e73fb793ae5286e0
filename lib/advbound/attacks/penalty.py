"""A penalty attack in the latent space: a slow, strong reference search for ``r_in`` and ``r_Z``.

Carlini & Wagner's L2 attack (IEEE S&P 2017) moved to the latent space: per sample, Adam minimises

    ``D(r) + c * max(l_y(g(z + r)) - max_{j != y} l_j(g(z + r)) + kappa, 0)``

with ``D(r) = ||g(z + r) - g(z)||_2^2`` (``distance="image"``, an ``r_in`` search) or ``D(r) = ||r||_2^2``
(``distance="latent"``, an ``r_Z`` search).  The penalty weight ``c`` is searched per sample over ``rounds``
rounds of ``steps`` Adam steps: multiplied by 10 while a round finds no adversarial point, then bisected
(geometric mean) between the largest failing and the smallest succeeding weight.  Every iterate whose label
differs from ``y`` is a valid adversarial point; the one with the smallest distance over all rounds is kept.

It costs ``rounds * steps`` forward and backward passes through ``f o g``, hundreds of times a DeepFool run:
it is meant as a reference to measure the fast attacks against, not as their replacement.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from .base import _as_int, _check_differentiable, _check_logits, evaluates
from .latent import LatentAttackResult, _check_latent, _Composed, _latent_result

DISTANCES = ("image", "latent")


def _positive(value: object, name: str, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``), else a ValueError naming ``name``."""
    bound = ">=" if allow_zero else ">"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (number > 0 or (allow_zero and number == 0)):
            return number
    raise ValueError(f"{name} must be a finite number {bound} 0; got {value!r}")


@evaluates("classifier", "generator")
def latent_penalty_attack(classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor], z: Tensor,
                          *, distance: str = "image", rounds: int = 7, steps: int = 300, lr: float = 0.01,
                          c_init: float = 1.0, kappa: float = 0.0, init: Tensor | None = None) -> LatentAttackResult:
    """Penalty (Carlini-Wagner-style) attack on ``z -> f(g(z))``: an upper estimate of ``r_in`` or ``r_Z``.

    Parameters
    ----------
    distance : ``"image"`` minimises ``||g(z + r) - g(z)||`` (``r_in``), ``"latent"`` minimises ``||r||``
        (``r_Z``).
    rounds, steps : weight-search rounds (>= 1) and Adam steps per round (>= 1); each round restarts from
        ``init`` with a fresh optimiser.
    lr : Adam's learning rate (> 0), decayed linearly to ``lr / 100`` over each round.
    c_init : the first penalty weight (> 0) of every sample.
    kappa : margin (>= 0) the penalty asks for beyond the boundary.
    init : starting latent perturbations, shape of ``z`` (default zeros); restarts pass random ones.

    ``method`` is ``"penalty"`` for every sample; samples without a valid point keep ``z`` with
    ``success == False``.
    """
    _check_latent(classifier, generator, z)
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}; got {distance!r}")
    rounds, steps = _as_int(rounds, "rounds", 1), _as_int(steps, "steps", 1)
    lr, c_init = _positive(lr, "lr"), _positive(c_init, "c_init")
    kappa = _positive(kappa, "kappa", allow_zero=True)
    z0 = z.detach()
    if init is None:
        init = torch.zeros_like(z0)
    elif not isinstance(init, Tensor) or init.shape != z0.shape or init.dtype != z0.dtype:
        raise ValueError(f"init must be a tensor of z's shape {tuple(z0.shape)} and dtype {z0.dtype}; got "
                         f"{getattr(init, 'dtype', type(init).__name__)} {tuple(getattr(init, 'shape', ()))}")
    elif not bool(torch.isfinite(init).all()):
        raise ValueError("init must be finite")
    fn = _Composed(classifier, generator)
    with torch.no_grad():
        x0 = generator(z0)
        logits0 = fn(z0)
    n_classes = _check_logits(logits0, z0.shape[0], "classifier(generator(z))")
    _check_differentiable(fn, z0, n_classes, "classifier(generator(z))", "z")
    y = logits0.argmax(dim=1)
    n = z0.shape[0]
    best_cost = torch.full((n,), math.inf, dtype=z0.dtype, device=z0.device)
    best_r = torch.zeros_like(z0)
    c = torch.full((n,), c_init, dtype=z0.dtype, device=z0.device)
    lo = torch.zeros_like(c)
    hi = torch.full_like(c, math.inf)
    for _ in range(rounds):
        r = init.detach().to(device=z0.device).clone().requires_grad_(True)
        opt = torch.optim.Adam([r], lr=lr)
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.01, total_iters=steps)
        found = torch.zeros(n, dtype=torch.bool, device=z0.device)
        for _ in range(steps):
            with torch.enable_grad():
                img = generator(z0 + r)
                logits = classifier(img)
                dist2 = ((img - x0).flatten(1) ** 2).sum(1) if distance == "image" else (r ** 2).sum(1)
                other = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
                gap = logits.gather(1, y[:, None])[:, 0] - other
                loss = dist2 + c * (gap + kappa).clamp_min(0)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
            with torch.no_grad():
                valid = (logits.argmax(dim=1) != y) & torch.isfinite(logits).all(dim=1) & torch.isfinite(dist2)
                better = valid & (dist2 < best_cost)
                best_cost = torch.where(better, dist2.detach(), best_cost)
                best_r[better] = r.detach()[better]
                found |= valid
            opt.step()
            sched.step()
        with torch.no_grad():
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            c = torch.where(torch.isfinite(hi), torch.where(lo > 0, (lo * hi).sqrt(), hi / 10), lo * 10)
    success = torch.isfinite(best_cost)
    z_adv = z0 + best_r
    with torch.no_grad():
        adv_labels = fn(z_adv).argmax(dim=1)
    # re-verified on the model at the returned point
    success = success & (adv_labels != y)
    return _latent_result(generator, z0, z_adv, success, torch.full((n,), rounds * steps, device=z0.device), y,
                          adv_labels, ["penalty"] * n)
