"""Theorem 2's nearest-neighbour classifier, eq. (5): ``f~(x) = f(g(z*))`` with ``z* = argmin_z ||g(z) - x||``.

``f~`` agrees with ``f`` on the range of ``g`` (same risk, same in-distribution robustness) and, by
Theorem 2, has unconstrained robustness ``r_unc(x) >= r_in(x) / 2``.  The argmin is found either by an
exact projection supplied by the caller (toy generators: e.g. by angle on the circle) or by batched
gradient inversion: Adam on ``||g(z) - x||^2`` from several starting points per sample (the first at
``z = 0``, the others drawn from ``N(0, I)``), keeping for every sample the restart with the smallest
residual.  The inversion is a local search: on a non-convex generator it may return a local minimum, in
which case ``f~`` is only an approximation of eq. (5); :meth:`ProjectionClassifier.project` returns the
residual ``||g(z*) - x||`` so that callers can check.

The classifier and the generator are evaluated in eval mode (:func:`advbound.attacks.base.eval_mode`) and
given back in the mode they came in; the inversion differentiates with respect to ``z`` only, so it neither
updates BatchNorm statistics nor fills the ``.grad`` of their parameters, and its random restarts come from
a private generator seeded by ``seed`` (the global torch RNG is not used).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attacks.base import _as_int, _check_module_matches, eval_mode


class ProjectionClassifier(nn.Module):
    """``x -> classifier(generator(z*(x)))``, the classifier ``f~`` of eq. (5).

    Parameters
    ----------
    classifier : image classifier returning logits (n, K).
    generator : ``z (n, d) -> x (n, ...)``.
    latent_dim : ``d``.
    restarts : >= 1 starting points per sample for the gradient inversion.
    steps : >= 1 Adam steps per restart.
    lr : > 0 Adam learning rate.
    exact_projection : optional callable ``x -> z*`` that replaces the optimisation (e.g. a toy
        generator's ``project`` method).
    seed : seed of the random restarts (the inversion is deterministic given it).

    ``forward(x)`` returns the logits ``classifier(generator(z*))``; it is piecewise constant in ``x`` through
    ``z*`` and is not meant to be differentiated (attack it with decision-based or exact methods).
    """

    classifier: Callable[[Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    exact_projection: Callable[[Tensor], Tensor] | None
    latent_dim: int
    restarts: int
    steps: int
    lr: float
    seed: int

    def __init__(self, classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor],
                 latent_dim: int, *, restarts: int = 4, steps: int = 200, lr: float = 0.05,
                 exact_projection: Callable[[Tensor], Tensor] | None = None, seed: int = 0) -> None:
        super().__init__()
        latent_dim = _as_int(latent_dim, "latent_dim", 1)
        restarts = _as_int(restarts, "restarts", 1)
        steps = _as_int(steps, "steps", 1)
        seed = _as_int(seed, "seed", 0)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < float(lr) < float("inf"):
            raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
        for name, fn in (("classifier", classifier), ("generator", generator)):
            if not callable(fn):
                raise ValueError(f"{name} must be a callable (an nn.Module or a function); got {type(fn).__name__}")
        if exact_projection is not None and not callable(exact_projection):
            raise ValueError("exact_projection must be None or a callable x -> z*")
        self.classifier = classifier
        self.generator = generator
        self.latent_dim = latent_dim
        self.restarts = restarts
        self.steps = steps
        self.lr = float(lr)
        self.exact_projection = exact_projection
        self.seed = seed

    def _residual(self, z: Tensor, x: Tensor) -> Tensor:
        return (self.generator(z) - x).flatten(1).norm(dim=1)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(z*, ||g(z*) - x||_2)`` per sample, the (approximate) projection of eq. (5).

        Samples are projected independently: a sample with NaN or inf gets a NaN ``z*`` and residual and does
        not affect the others.
        """
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a tensor of shape (n, ...); got {getattr(x, 'shape', type(x))}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor; got dtype {x.dtype}")
        _check_module_matches("x", x, self.generator, "generator")
        with eval_mode(self.classifier, self.generator):
            return self._project(x.detach())

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.exact_projection is not None:
            z = self.exact_projection(x)
            if not isinstance(z, Tensor) or z.shape != (x.shape[0], self.latent_dim):
                raise ValueError(f"exact_projection must return z of shape (n, latent_dim) = "
                                 f"({x.shape[0]}, {self.latent_dim}); got {getattr(z, 'shape', type(z))}")
            with torch.no_grad():
                return z, self._residual(z, x)
        n, r = x.shape[0], self.restarts
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        starts = torch.randn(r, n, self.latent_dim, generator=gen).to(device=x.device, dtype=x.dtype)
        starts[0] = 0.0
        # all restarts as one batch of r * n latent vectors
        z = starts.reshape(r * n, self.latent_dim).clone().requires_grad_(True)
        target = x.repeat(r, *([1] * (x.dim() - 1)))
        opt = torch.optim.Adam([z], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                loss = (self.generator(z) - target).flatten(1).pow(2).sum(dim=1)
                # the gradient with respect to z only: the generator's parameters get no .grad
                (z.grad,) = torch.autograd.grad(loss.sum(), z)
                opt.step()
        with torch.no_grad():
            res = self._residual(z, target).view(r, n)
            best = res.argmin(dim=0)
            z_best = z.detach().view(r, n, self.latent_dim)[best, torch.arange(n, device=x.device)]
            return z_best, res[best, torch.arange(n, device=x.device)]

    def forward(self, x: Tensor) -> Tensor:
        z, _ = self.project(x)
        with torch.no_grad(), eval_mode(self.classifier, self.generator):
            return self.classifier(self.generator(z))
