"""Theorem 2's nearest-neighbour classifier, eq. (5): ``f~(x) = f(g(z*))`` with ``z* = argmin_z ||g(z) - x||``.

``f~`` agrees with ``f`` on the range of ``g`` (same risk, same in-distribution robustness) and, by
Theorem 2, has unconstrained robustness ``r_unc(x) >= r_in(x) / 2``.  The argmin is found either by an
exact projection supplied by the caller (toy generators: e.g. by angle on the circle) or by batched
gradient inversion: Adam on ``||g(z) - x||^2`` from several starting points per sample (the first at
``z = 0``, the others drawn once from ``N(0, I)`` and shared by every sample, so that ``f~(x)`` depends on ``x``
alone and not on the batch it is evaluated in), keeping for every sample the iterate with the smallest residual
over all restarts and steps (so the result is never worse than a starting point).  The inversion is a local
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
    bank : optional latent codes (m, d) of a fixed bank of generated images: each sample's inversion also
        starts from the code whose image ``g(bank_k)`` is nearest to it (a nearest-neighbour initialisation
        that sees ``x`` only); with a bank, ``restarts`` may be 0.

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
    bank: Tensor | None

    def __init__(self, classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor],
                 latent_dim: int, *, restarts: int = 4, steps: int = 200, lr: float = 0.05,
                 exact_projection: Callable[[Tensor], Tensor] | None = None, seed: int = 0,
                 latent: bool = False, bank: Tensor | None = None) -> None:
        super().__init__()
        latent_dim = _as_int(latent_dim, "latent_dim", 1)
        if bank is not None and (not isinstance(bank, Tensor) or bank.dim() != 2 or bank.shape[1] != latent_dim
                                 or bank.shape[0] < 1 or not bool(torch.isfinite(bank).all())):
            raise ValueError(f"bank must be a finite tensor of latent codes (m, {latent_dim}) with m >= 1; got "
                             f"{getattr(bank, 'shape', type(bank))}")
        restarts = _as_int(restarts, "restarts", 0 if bank is not None else 1)
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
        self.bank = None if bank is None else bank.detach()
        self._bank_images: Tensor | None = None

    def _nearest_bank_codes(self, x: Tensor) -> Tensor:
        """The bank code whose image is nearest to each sample (the bank's images are computed once)."""
        assert self.bank is not None
        bank = self.bank.to(device=x.device, dtype=x.dtype)
        if self._bank_images is None or self._bank_images.dtype != x.dtype or self._bank_images.device != x.device:
            with torch.no_grad():
                self._bank_images = torch.cat([self.generator(bank[i:i + 500]).flatten(1)
                                               for i in range(0, bank.shape[0], 500)])
        dist = torch.cdist(x.flatten(1), self._bank_images)
        return bank[dist.argmin(dim=1)]

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
        # the same r starting points for every sample, so that f~(x) depends on x alone, not on the batch
        starts = normal(r, 1, self.latent_dim, generator=gen, dtype=x.dtype, device=x.device).expand(r, n, -1).clone()
        if r > 0:
            starts[0] = 0.0
        if self.bank is not None:
            starts = torch.cat([starts, self._nearest_bank_codes(x)[None]])
            r = starts.shape[0]
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
    winner is then decided by rounding); ``reach`` above 1 also lets the search report changes beyond
    ``r_in`` when the directions do not point at the nearest one.

    The clean label is ``f(x) = f(g(z))`` (``h(z)`` for a latent classifier).  ``starts`` (n, s, d) are extra
    starting points of the inversion for every point of sample i (for instance ``z`` itself and the latent point
    of an in-distribution adversarial example: an *oracle* inversion that knows ``z``); without them the
    inversion is that of ``projection``, which sees ``x`` only, as a deployed ``f~`` would.
    """
    return theorem2_checks([projection], z, [r_in], [directions], starts=None if starts is None else [starts],
                           grid=grid, bisect=bisect, reach=reach)[0]


def _check_shared_inversion(projections: Sequence[ProjectionClassifier]) -> None:
    """Several projection classifiers may share one inversion only if they have the same generator and
    inversion settings (only their classifiers differ)."""
    keys = ("generator", "latent_dim", "restarts", "steps", "lr", "seed", "exact_projection", "bank")

    def same(a: object, b: object) -> bool:
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
        return a is b or a == b

    for p in projections[1:]:
        if not all(same(getattr(p, k), getattr(projections[0], k)) for k in keys):
            raise ValueError("the projections must share the generator and the inversion "
                             f"({', '.join(keys)}); only their classifiers may differ")


def theorem2_checks(projections: Sequence[ProjectionClassifier], z: Tensor, r_in: Sequence[Tensor],
                    directions: Sequence[Sequence[Tensor]], *, starts: Sequence[Tensor] | None = None,
                    grid: int = 4, bisect: int = 8, reach: float = 1.0) -> list[Theorem2Check]:
    """:func:`theorem2_check` for several projection classifiers ``f~_k`` of the same generator with the same
    inversion (only their classifiers differ), at the same data points ``x = g(z)``: ``r_in[k]``,
    ``directions[k]`` and ``starts[k]`` belong to ``f~_k``.  The inversion does not depend on the classifier,
    so every step of the ray searches projects the points of all classifiers and directions in one batch (one
    inversion per step instead of one per classifier and direction); the results are those of separate
    :func:`theorem2_check` calls.
    """
    from .attacks.ray import ray_search

    if len(projections) == 0:
        raise ValueError("projections must hold at least one ProjectionClassifier")
    first = projections[0]
    _check_shared_inversion(projections)
    if len(r_in) != len(projections) or len(directions) != len(projections) or \
            (starts is not None and len(starts) != len(projections)):
        raise ValueError("r_in, directions (and starts) must hold one entry per projection")
    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != first.latent_dim:
        raise ValueError(f"z must have shape (n, {first.latent_dim}); got {getattr(z, 'shape', type(z))}")
    if isinstance(reach, bool) or not isinstance(reach, numbers.Real) or not 0 < float(reach) < math.inf:
        raise ValueError(f"reach must be a finite number > 0; got {reach!r}")
    n = z.shape[0]
    r_ins = []
    for r in r_in:
        r = torch.as_tensor(r, dtype=z.dtype, device=z.device).reshape(-1)
        if r.shape[0] != n or not bool((r > 0).all()) or not bool(torch.isfinite(r).all()):
            raise ValueError("r_in must hold one finite value > 0 per sample")
        r_ins.append(r)
    if any(len(d) == 0 for d in directions):
        raise ValueError("directions must hold at least one tensor of directions per projection")
    with torch.no_grad(), eval_mode(first.generator):
        x = first.generator(z)
    # one row per (projection k, direction j, sample i), stacked in that order
    plan = [(k, u) for k, dirs in enumerate(directions) for u in dirs]
    owner = torch.cat([torch.full((n,), k, dtype=torch.long, device=z.device) for k, _ in plan])
    sample = torch.arange(n, device=z.device).repeat(len(plan))
    labels = [p.on_latent(z).argmax(dim=1) for p in projections]
    if starts is not None and any(st.shape != starts[0].shape for st in starts):
        raise ValueError("starts must hold tensors of the same shape (n, s, d) for every projection")
    stacked_starts = None if starts is None else torch.cat([starts[k] for k, _ in plan])
    extra_data = None if starts is None else torch.cat(list(starts))

    def labels_at(zs: Tensor, rows: Tensor) -> Tensor:
        out = torch.empty(rows.shape[0], dtype=torch.long, device=z.device)
        for k, p in enumerate(projections):
            mine = owner[rows] == k
            if bool(mine.any()):
                out[mine] = p.on_latent(zs[mine]).argmax(dim=1)
        return out

    # the projection at the latest change found on each row: the ray search only ever moves a row's verified
    # change to a newly changed point, so the last one recorded is the one it returns (no second inversion)
    z_hit = torch.full((len(plan) * n, first.latent_dim), math.nan, dtype=z.dtype, device=z.device)
    res_hit = torch.full((len(plan) * n,), math.nan, dtype=z.dtype, device=z.device)

    def changed(points: Tensor, rows: Tensor) -> Tensor:
        zs, res = first.project(points, None if stacked_starts is None else stacked_starts[rows])
        clean = torch.stack(labels)[owner[rows], sample[rows]]
        hit = labels_at(zs, rows) != clean
        z_hit[rows[hit]] = zs[hit]
        res_hit[rows[hit]] = res[hit]
        return hit

    # the data points: one inversion (once per projection when each has its own extra starts)
    if starts is None:
        z1, r1 = first.project(x)
        z_data, res_data = z1.repeat(len(projections), 1), r1.repeat(len(projections))
    else:
        z_data, res_data = first.project(x.repeat(len(projections), *([1] * (x.dim() - 1))), extra_data)
    reach_t = torch.cat([float(reach) * r_ins[k] for k, _ in plan])
    xs = x.repeat(len(plan), *([1] * (x.dim() - 1)))
    found = ray_search(changed, xs, torch.cat([u for _, u in plan]), reach_t, grid=grid, bisect=bisect)
    best_t = torch.full((len(projections), n), math.inf, dtype=z.dtype, device=z.device)
    best_points = x.repeat(len(projections), *([1] * (x.dim() - 1))).view(len(projections), *x.shape)
    best_z = torch.full((len(projections), n, first.latent_dim), math.nan, dtype=z.dtype, device=z.device)
    res_b = torch.full_like(best_t, math.nan)
    for j, (k, _) in enumerate(plan):
        part = slice(j * n, (j + 1) * n)
        better = found.t[part] < best_t[k]
        best_t[k] = torch.where(better, found.t[part], best_t[k])
        best_points[k][better] = found.points[part][better]
        best_z[k][better] = z_hit[part][better]
        res_b[k] = torch.where(better, res_hit[part], res_b[k])
    # the distance from x to the generated point whose label f~ gave at each change found
    borrowed = torch.full_like(best_t, math.nan)
    hit = torch.isfinite(best_t)
    if bool(hit.any()):
        which, rows = hit.nonzero(as_tuple=True)
        with torch.no_grad(), eval_mode(first.generator):
            borrowed[which, rows] = (first.generator(best_z[which, rows]) - x[rows]).flatten(1).norm(dim=1)
    results = []
    for k, p in enumerate(projections):
        zk = z_data[k * n:(k + 1) * n]
        agrees = p.on_latent(zk).argmax(dim=1) == labels[k]
        results.append(Theorem2Check(r_ins[k], best_t[k], res_data[k * n:(k + 1) * n], res_b[k], borrowed[k],
                                     agrees, best_points[k]))
    return results


@dataclass
class RadiusScan:
    """Labels of several projection classifiers ``f~_k`` along one ray per data point (:func:`radius_scan`).

    ``radii`` (m,): the scanned norms ``t``; ``labels`` (k, n): ``f~_k(x)``; ``clean`` (k, n): ``f_k(x)`` (the
    classifier on the data point, i.e. without inversion); ``residual`` (n,): the inversion's residual at
    ``x``; ``first`` (k, n): the index of the first radius at which ``f~_k(x + t u) != f~_k(x)`` (``m`` where
    none did), so ``r_unc(f~_k)(x) <= radii[first]`` along ``u``, and no change was seen at the smaller radii
    (a change between two of them, or in another direction, is not seen)."""

    radii: Tensor
    labels: Tensor
    clean: Tensor
    residual: Tensor
    first: Tensor

    @property
    def premise(self) -> Tensor:
        """Theorem 2's premise at each data point: ``f~(x) = f(x)`` (k, n)."""
        return self.labels == self.clean

    def change_radius(self) -> Tensor:
        """``radii[first]`` (``inf`` where no change was seen), an upper estimate of ``r_unc(f~)`` (k, n)."""
        padded = torch.cat([self.radii, torch.tensor([math.inf], dtype=self.radii.dtype, device=self.radii.device)])
        return padded[self.first]

    def last_unchanged(self) -> Tensor:
        """The largest scanned radius below the change (0 where the change came at the first radius) (k, n)."""
        padded = torch.cat([torch.zeros(1, dtype=self.radii.dtype, device=self.radii.device), self.radii])
        return padded[self.first]


def radius_scan(projections: Sequence[ProjectionClassifier], z: Tensor, directions: Tensor,
                radii: Sequence[float]) -> RadiusScan:
    """Scan ``x + t u`` (``x = g(z)``, ``u`` the unit ``directions``, one per point) at the given radii ``t``
    with several projection classifiers that share one inversion (same generator and inversion settings, as
    in :func:`theorem2_checks`): one inversion per radius serves them all, so the cost does not grow with
    their number.  The scan stops early once every classifier has changed at every point.  A search for
    ``r_unc(f~)`` (Theorem 2) at the resolution of the radii, for a budget where a bisection per classifier is
    too costly; ``directions`` should be computed from ``x`` alone when the search must not know ``z``."""
    if len(projections) == 0:
        raise ValueError("projections must hold at least one ProjectionClassifier")
    first_p = projections[0]
    _check_shared_inversion(projections)
    radii_t = torch.as_tensor(list(radii), dtype=z.dtype, device=z.device)
    if radii_t.dim() != 1 or radii_t.numel() == 0 or not bool((radii_t > 0).all()) or \
            not bool((radii_t[1:] > radii_t[:-1]).all()) or not bool(torch.isfinite(radii_t).all()):
        raise ValueError(f"radii must be finite, > 0 and increasing; got {list(radii)!r}")
    with torch.no_grad(), eval_mode(first_p.generator):
        x = first_p.generator(z)
    if not isinstance(directions, Tensor) or directions.shape != x.shape:
        raise ValueError(f"directions must be a tensor of the shape of g(z) {tuple(x.shape)}")
    norms = directions.flatten(1).norm(dim=1)
    if not bool((norms > 0).all()) or not bool(torch.isfinite(norms).all()):
        raise ValueError("directions must be finite and non-zero for every point")
    u = directions / norms.view(-1, *([1] * (x.dim() - 1)))
    z0, res0 = first_p.project(x)
    labels = torch.stack([p.on_latent(z0).argmax(dim=1) for p in projections])
    clean = torch.stack([p.on_latent(z).argmax(dim=1) for p in projections])
    m = radii_t.numel()
    first = torch.full_like(labels, m)
    for j, t in enumerate(radii_t):
        open_rows = (first == m).any(dim=0)
        if not bool(open_rows.any()):
            break
        rows = open_rows.nonzero().flatten()
        zs, _ = first_p.project(x[rows] + t * u[rows])
        for k, p in enumerate(projections):
            changed = p.on_latent(zs).argmax(dim=1) != labels[k, rows]
            newly = changed & (first[k, rows] == m)
            first[k, rows[newly]] = j
    return RadiusScan(radii_t, labels, clean, res0, first)
