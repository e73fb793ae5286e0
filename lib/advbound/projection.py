"""Theorem 2's nearest-neighbour classifier, eq. (5): ``f~(x) = f(g(z*))`` with ``z* = argmin_z ||g(z) - x||``.

``f~`` agrees with ``f`` on the range of ``g`` (same risk, same in-distribution robustness) and, by
Theorem 2, has unconstrained robustness ``r_unc(x) >= r_in(x) / 2``.  The argmin is found either by an
exact projection supplied by the caller (toy generators: e.g. by angle on the circle) or by batched
gradient inversion: Adam on ``||g(z) - x||^2`` from several starting points per sample (the first at
``z = 0``, the others drawn once from ``N(0, I)`` with the classifier's ``seed`` and the same for every
sample, so that ``f~(x)`` is a function of ``x`` alone, whatever else is in the batch), keeping for every
sample the iterate with the smallest residual over all restarts and steps (so the result is never worse than
a starting point).  The inversion is a local
search: on a non-convex generator it may return a local minimum, in which case ``f~`` is only an
approximation of eq. (5); :meth:`ProjectionClassifier.project` returns the residual ``||g(z*) - x||`` so that
callers can check.

The classifier and the generator are evaluated in eval mode (:func:`advbound.attacks.base.eval_mode`) and
given back in the mode they came in; the inversion differentiates with respect to ``z`` only, so it neither
updates BatchNorm statistics nor fills the ``.grad`` of their parameters, and its random restarts come from
a private generator seeded by ``seed`` (the global torch RNG is not used).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attacks.base import _as_int, _check_module_matches, eval_mode
from .portable import normal


class ProjectionClassifier(nn.Module):
    """``x -> classifier(generator(z*(x)))``, the classifier ``f~`` of eq. (5).

    Parameters
    ----------
    classifier : image classifier returning logits (n, K); with ``latent=True``, a classifier ``h`` of latent
        codes, so that ``f~(x) = h(z*(x))`` (a classifier linear in the latent space, Section 6, when ``h`` is).
    generator : ``z (n, d) -> x (n, ...)``.
    latent_dim : ``d``.
    restarts : >= 1 starting points per sample for the gradient inversion: ``z = 0`` and ``restarts - 1`` draws
        from ``N(0, I)`` (from ``seed``), the same points for every sample.
    steps : >= 1 Adam steps per restart.
    lr : > 0 Adam learning rate.
    exact_projection : optional callable ``x -> z*`` that replaces the optimisation (e.g. a toy
        generator's ``project`` method).
    seed : seed of the random restarts (the inversion is deterministic given it).
    latent : whether ``classifier`` takes latent codes ``z`` (default: images ``x``).

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
    latent: bool

    def __init__(self, classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor],
                 latent_dim: int, *, restarts: int = 4, steps: int = 200, lr: float = 0.05,
                 exact_projection: Callable[[Tensor], Tensor] | None = None, seed: int = 0,
                 latent: bool = False) -> None:
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
        if not isinstance(latent, bool):
            raise ValueError(f"latent must be True or False; got {latent!r}")
        self.latent = latent

    def _residual(self, z: Tensor, x: Tensor) -> Tensor:
        return (self.generator(z) - x).flatten(1).norm(dim=1)

    def project(self, x: Tensor, starts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(z*, ||g(z*) - x||_2)`` per sample, the (approximate) projection of eq. (5).

        ``starts`` (n, s, d), optional: s more starting points per sample for the gradient inversion (for
        instance latent points known to map near ``x``), searched together with the ``restarts`` ones; the
        iterate with the smallest residual is kept (ignored with an exact projection).  Samples are projected
        independently: a sample with NaN or inf gets a NaN ``z*`` and residual and does not affect the others.
        """
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a tensor of shape (n, ...); got {getattr(x, 'shape', type(x))}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor; got dtype {x.dtype}")
        if starts is not None and (not isinstance(starts, Tensor) or starts.dim() != 3
                                   or starts.shape[0] != x.shape[0] or starts.shape[2] != self.latent_dim):
            raise ValueError(f"starts must be a tensor of shape (n, s, latent_dim) = ({x.shape[0]}, s, "
                             f"{self.latent_dim}); got {getattr(starts, 'shape', type(starts))}")
        _check_module_matches("x", x, self.generator, "generator")
        with eval_mode(self.classifier, self.generator):
            return self._project(x.detach(), None if starts is None else starts.detach())

    def on_latent(self, z: Tensor) -> Tensor:
        """Logits of ``f~ o g = f o g`` at latent points ``z``: the projection of ``g(z)`` is ``z`` itself (or a
        point with the same image), so no inversion is needed on the data.  With ``latent=True`` this is
        ``h(z)``."""
        with torch.no_grad(), eval_mode(self.classifier, self.generator):
            return self.classifier(z) if self.latent else self.classifier(self.generator(z))

    def _project(self, x: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.exact_projection is not None:
            z = self.exact_projection(x)
            if not isinstance(z, Tensor) or z.shape != (x.shape[0], self.latent_dim):
                raise ValueError(f"exact_projection must return z of shape (n, latent_dim) = "
                                 f"({x.shape[0]}, {self.latent_dim}); got {getattr(z, 'shape', type(z))}")
            with torch.no_grad():
                return z, self._residual(z, x)
        n, r = x.shape[0], self.restarts
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        # one set of starts for every sample (never drawn per batch position: a sample's label must not
        # depend on the rest of the batch)
        starts = normal(r, 1, self.latent_dim, generator=gen, dtype=x.dtype, device=x.device).expand(r, n, -1)
        starts = starts.clone()
        starts[0] = 0.0
        if extra is not None:
            starts = torch.cat([starts, extra.to(device=x.device, dtype=x.dtype).transpose(0, 1)])
            r = starts.shape[0]
        # all restarts as one batch of r * n latent vectors
        z = starts.reshape(r * n, self.latent_dim).clone().requires_grad_(True)
        target = x.repeat(r, *([1] * (x.dim() - 1)))
        opt = torch.optim.Adam([z], lr=self.lr)
        best_z = z.detach().clone()
        best_loss = torch.full((r * n,), math.inf, dtype=x.dtype, device=x.device)

        def keep_best(loss: Tensor) -> None:  # every iterate is a candidate: keep each restart's best one
            better = loss < best_loss
            best_loss.copy_(torch.where(better, loss, best_loss))
            best_z[better] = z.detach()[better]

        with torch.enable_grad():
            for _ in range(self.steps):
                loss = (self.generator(z) - target).flatten(1).pow(2).sum(dim=1)
                keep_best(loss.detach())
                # the gradient with respect to z only: the generator's parameters get no .grad
                (z.grad,) = torch.autograd.grad(loss.sum(), z)
                opt.step()
        with torch.no_grad():
            keep_best((self.generator(z) - target).flatten(1).pow(2).sum(dim=1))
            res = self._residual(best_z, target).view(r, n)
            pick = res.argmin(dim=0)
            rows = torch.arange(n, device=x.device)
            return best_z.view(r, n, self.latent_dim)[pick, rows], res[pick, rows]

    def forward(self, x: Tensor) -> Tensor:
        z, _ = self.project(x)
        return self.on_latent(z)


@dataclass
class Theorem2Check:
    """Theorem 2, ``r_unc(f~)(x) >= r_in(f)(x) / 2``, checked at data points ``x = g(z)`` (per sample).

    ``r_in``: the estimate of ``r_in(f)(x)`` given by the caller (an attack's valid point: an upper
    estimate).  ``r_unc``: the norm ``||v||`` of the smallest change of ``f~`` found along the given
    directions, ``inf`` where none was found up to ``r_in`` (an upper estimate of ``r_unc(f~)``).
    ``residual_data``: the inversion error at the data point, ``||g(z*(x)) - x||`` (0 for an exact
    projection).  At the point ``x' = x + v`` found: ``residual_boundary = ||g(z*(x')) - x'||`` and
    ``borrowed = ||g(z*(x')) - x||``, the distance from ``x`` to the generated point whose label ``f~`` gave
    to ``x'`` (NaN where nothing was found).  ``agrees_on_data``: whether ``f~(x) = f(x)`` with the
    approximate inversion; ``points``: the points ``x'`` (``x`` itself where nothing was found).

    The proof of Theorem 2 in numbers: the exact projection is at least as close to ``x'`` as ``x`` is, so
    ``residual_boundary <= ||v||``; then ``borrowed <= 2 ||v||`` by the triangle inequality, and since
    ``g(z*(x'))`` is a generated point with another label, ``r_in(x) <= borrowed <= 2 ||v||``.  An
    approximate inversion can break only the first step (:attr:`proof_step`).
    """

    r_in: Tensor
    r_unc: Tensor
    residual_data: Tensor
    residual_boundary: Tensor
    borrowed: Tensor
    agrees_on_data: Tensor
    points: Tensor

    @property
    def ratio(self) -> Tensor:
        """``r_unc(f~) / r_in(f)`` (Theorem 2: >= 1/2; ``inf`` where no change was found)."""
        return self.r_unc / self.r_in

    @property
    def holds(self) -> Tensor:
        """Whether ``r_unc >= r_in / 2`` with the caller's ``r_in``."""
        return self.r_unc >= 0.5 * self.r_in

    @property
    def proof_step(self) -> Tensor:
        """Whether the inversion at the point found was at least as close as ``x``: ``residual_boundary <=
        ||v||`` (True where nothing was found: there is no point to check)."""
        return ~torch.isfinite(self.r_unc) | (self.residual_boundary <= self.r_unc)


def theorem2_check(projection: ProjectionClassifier, z: Tensor, r_in: Tensor, directions: Sequence[Tensor], *,
                   starts: Tensor | None = None, grid: int = 4, bisect: int = 8,
                   reach: float = 1.0) -> Theorem2Check:
    """Search for the smallest label change of ``f~`` (``projection``) around ``x = g(z)`` along each of
    ``directions`` (tensors of the shape of ``x``), up to ``reach * r_in``
    (:func:`~advbound.attacks.ray.ray_search`), and return the :class:`Theorem2Check`.

    ``reach`` slightly above 1 (e.g. 65/64) keeps the searched points off the exact midpoint ``r_in / 2`` of
    the chord towards an in-distribution example, where the inversion's starts at both ends tie (the
    winner is then decided by rounding).

    The clean label is ``f(x) = f(g(z))`` (``h(z)`` for a latent classifier).  ``starts`` (n, s, d) are extra
    starting points of the inversion for every point of sample i (for instance ``z`` itself and the latent point
    of an in-distribution adversarial example); the inversion is otherwise that of ``projection``.
    """
    from .attacks.ray import ray_search

    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != projection.latent_dim:
        raise ValueError(f"z must have shape (n, {projection.latent_dim}); got {getattr(z, 'shape', type(z))}")
    r_in = torch.as_tensor(r_in, dtype=z.dtype, device=z.device).reshape(-1)
    if r_in.shape[0] != z.shape[0] or not bool((r_in > 0).all()) or not bool(torch.isfinite(r_in).all()):
        raise ValueError("r_in must hold one finite value > 0 per sample")
    if len(directions) == 0:
        raise ValueError("directions must hold at least one tensor of directions")
    if isinstance(reach, bool) or not isinstance(reach, numbers.Real) or not 0 < float(reach) < math.inf:
        raise ValueError(f"reach must be a finite number > 0; got {reach!r}")
    with torch.no_grad(), eval_mode(projection.generator):
        x = projection.generator(z)
    label = projection.on_latent(z).argmax(dim=1)
    z_data, res_data = projection.project(x, starts)
    agrees = projection.on_latent(z_data).argmax(dim=1) == label

    def changed(points: Tensor, rows: Tensor) -> Tensor:
        zs, _ = projection.project(points, None if starts is None else starts[rows])
        return projection.on_latent(zs).argmax(dim=1) != label[rows]

    best_t = torch.full_like(r_in, math.inf)
    best_points = x.clone()
    for u in directions:
        found = ray_search(changed, x, u, float(reach) * r_in, grid=grid, bisect=bisect)
        better = found.t < best_t
        best_t = torch.where(better, found.t, best_t)
        best_points[better] = found.points[better]
    nan = torch.full_like(r_in, math.nan)
    res_b, borrowed = nan.clone(), nan.clone()
    hit = torch.isfinite(best_t)
    if bool(hit.any()):
        zb, rb = projection.project(best_points[hit], None if starts is None else starts[hit])
        with torch.no_grad(), eval_mode(projection.generator):
            borrowed[hit] = (projection.generator(zb) - x[hit]).flatten(1).norm(dim=1)
        res_b[hit] = rb
    return Theorem2Check(r_in, best_t, res_data, res_b, borrowed, agrees, best_points)
