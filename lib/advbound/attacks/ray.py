"""Decision-based search along rays: the smallest ``t`` at which a label changes on ``x + t u``.

For classifiers that cannot be differentiated, such as the projection classifier of eq. (5), whose label is
piecewise constant in ``x``.  For each sample, the ray ``x + t u`` (``u`` a unit direction) is scanned on a
grid of ``grid`` points of ``(0, t_max]``; at the first grid point where the label has changed, the interval
back to the previous grid point is bisected ``bisect`` times, keeping its upper end a verified change.  The
returned ``t`` is therefore the norm of a valid adversarial perturbation (an upper estimate of ``r_unc``),
within ``t_max / (grid 2^bisect)`` of a label change along the ray; a change that starts and ends between
two grid points is missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import _as_int, _flat_norm

#: ``changed(points, rows)``: for the points (k, ...) of the samples ``rows`` (k,), whether the label differs
#: from the sample's clean label (a bool tensor of shape (k,))
ChangePredicate = Callable[[Tensor, Tensor], Tensor]


@dataclass
class RayResult:
    """``t`` (n,): the norm of the verified change found along each ray (``inf`` where none was found up to
    ``t_max``); ``points`` the changed points ``x + t u`` (``x`` itself where none was found)."""

    t: Tensor
    points: Tensor

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.t)


def ray_search(changed: ChangePredicate, x: Tensor, directions: Tensor, t_max: Tensor | float, *,
               grid: int = 4, bisect: int = 8) -> RayResult:
    """First label change along ``x + t u`` for ``t`` in ``(0, t_max]`` (per sample), see the module docstring.

    ``directions`` has the shape of ``x`` and is normalised per sample; ``t_max`` is a number or one per
    sample (> 0).  ``changed`` is called on batches of points with the indices of their samples.
    """
    grid = _as_int(grid, "grid", 1)
    bisect = _as_int(bisect, "bisect", 0)
    if not isinstance(directions, Tensor) or directions.shape != x.shape:
        raise ValueError(f"directions must be a tensor of the shape of x {tuple(x.shape)}; got "
                         f"{getattr(directions, 'shape', type(directions))}")
    n = x.shape[0]
    norms = _flat_norm(directions)
    if bool((norms == 0).any()) or not bool(torch.isfinite(norms).all()):
        raise ValueError("directions must be finite and non-zero for every sample")
    view = (-1,) + (1,) * (x.dim() - 1)
    u = directions / norms.view(view)
    tmax = torch.as_tensor(t_max, dtype=x.dtype, device=x.device).expand(n).clone()
    if not bool((tmax > 0).all()) or not bool(torch.isfinite(tmax).all()):
        raise ValueError("t_max must be finite and > 0 for every sample")
    lo = torch.zeros(n, dtype=x.dtype, device=x.device)
    hi = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    rows = torch.arange(n, device=x.device)
    for j in range(1, grid + 1):  # scan the grid; samples with a change leave the scan
        active = rows[~torch.isfinite(hi)]
        if active.numel() == 0:
            break
        t = tmax[active] * j / grid
        hit = changed(x[active] + t.view(view) * u[active], active)
        hi[active[hit]] = t[hit]
        lo[active[~hit]] = t[~hit]
    found = rows[torch.isfinite(hi)]
    for _ in range(bisect):
        if found.numel() == 0:
            break
        mid = 0.5 * (lo[found] + hi[found])
        hit = changed(x[found] + mid.view(view) * u[found], found)
        hi[found[hit]] = mid[hit]
        lo[found[~hit]] = mid[~hit]
    points = x.clone()
    points[found] = x[found] + hi[found].view(view) * u[found]
    return RayResult(hi, points)


@torch.no_grad()
def common_change_search(classifiers: Sequence[Callable[[Tensor], Tensor]], x: Tensor, directions: Sequence[Tensor],
                         t_max: Tensor | float, *, grid: int = 8, bisect: int = 6) -> RayResult:
    """The smallest ``||v||`` found such that *every* classifier changes its label at ``x + v`` (the event of
    Theorem 3, eq. (6), for two classifiers): :func:`ray_search` along each of ``directions`` (tensors of the
    shape of ``x``, e.g. adversarial perturbations found against each classifier) with the predicate "all
    labels differ from their labels at ``x``", keeping per sample the smallest verified ``t`` over the
    directions.  An upper estimate of that smallest norm (``inf`` where no direction reached it up to
    ``t_max``).  The classifiers return logits and are put in eval mode by the caller."""
    if len(classifiers) == 0 or len(directions) == 0:
        raise ValueError("common_change_search needs at least one classifier and one direction")
    clean = [clf(x).argmax(dim=1) for clf in classifiers]

    def changed(points: Tensor, rows: Tensor) -> Tensor:
        out = torch.ones(rows.shape[0], dtype=torch.bool, device=x.device)
        for clf, y in zip(classifiers, clean, strict=True):
            out &= clf(points).argmax(dim=1) != y[rows]
        return out

    best = RayResult(torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device), x.clone())
    view = (-1,) + (1,) * (x.dim() - 1)
    for u in directions:
        # a sample without this direction (zero or not finite, e.g. a failed attack) is skipped for it
        usable = (_flat_norm(u) > 0) & torch.isfinite(_flat_norm(u))
        if not bool(usable.any()):
            continue
        u = torch.where(usable.view(view), u, torch.ones_like(u))
        found = ray_search(changed, x, u, t_max, grid=grid, bisect=bisect)
        found.t[~usable] = math.inf
        better = found.t < best.t
        best.t[better] = found.t[better]
        best.points[better] = found.points[better]
    return best


__all__ = ["ChangePredicate", "RayResult", "common_change_search", "ray_search"]
