"""Toy classifiers with exact robustness: their decision regions are convex polyhedra (half-spaces, slabs,
argmax-of-affine cells) or simple non-convex sets (ball complement, checkerboard orthants).

Used in latent space, ``exact_robustness(z)`` is the latent robustness r_Z of Remark 5; composed with an
isometric generator it is also r_in (Remark 4).  Each classifier is an ``nn.Module`` returning logits, so the
attacks can be run on them and checked against the exact value.

:class:`MergedClassifier` merges the classes of any classifier into groups (Remark 2: the same classifier
with fewer classes).

For Theorem 3, :func:`joint_fooling_distance` is the exact norm of the smallest single perturbation that
changes the labels of two argmax-of-affine classifiers at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .modulus import integer_at_least, real_scalar


class ToyClassifier(nn.Module):
    """Base class: ``forward`` gives logits (n, K); ``predict`` the labels; ``exact_robustness`` the
    Euclidean distance from each point to the complement of its own decision region."""

    n_classes: int

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(dim=-1)

    def exact_robustness(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class AffineClassifier(ToyClassifier):
    """f(x) = argmax_k (W x + b)_k.  Each region {x : f(x) = i} is a convex polyhedron, the intersection of
    the half-spaces h_ij(x) = (w_i - w_j) x + (b_i - b_j) >= 0, so the distance from an interior point to
    its complement (a union of half-spaces) is exactly min_j h_ij(x) / ||w_i - w_j||.  Redundant facets
    give larger values and never win the minimum, so no facet enumeration is needed.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.ndim != 2 or weight.shape[0] < 2:
            raise ValueError(f"weight must have shape (K, n) with K >= 2; got {tuple(weight.shape)}")
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},); got {tuple(bias.shape)}")
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone().to(weight.dtype))
        self.n_classes = int(weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"x must have last dimension {self.weight.shape[1]}; got shape {tuple(x.shape)}")
        return x.to(self.weight.dtype) @ self.weight.T + self.bias

    def exact_robustness(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward(x)
        label = logits.argmax(dim=-1)
        gap = logits.gather(-1, label[..., None]) - logits  # h_ij(x), >= 0
        wdiff = torch.linalg.vector_norm(self.weight[label][..., None, :] - self.weight, dim=-1)
        dist = torch.where(wdiff > 0, gap / wdiff.clamp_min(torch.finfo(wdiff.dtype).tiny), torch.inf)
        dist = dist.masked_fill(torch.nn.functional.one_hot(label, self.n_classes).bool(), torch.inf)
        return dist.min(dim=-1).values

    def minimal_perturbation(self, x: torch.Tensor, overshoot: float = 1e-6) -> torch.Tensor:
        """The smallest move out of each point's cell, scaled by ``1 + overshoot`` so that it lands in the
        other cell: ``-(1 + overshoot) h_ij(x) (w_i - w_j) / ||w_i - w_j||^2`` for the facet j that gives
        :meth:`exact_robustness` (its norm is ``(1 + overshoot)`` times that distance)."""
        logits = self.forward(x)
        label = logits.argmax(dim=-1)
        gap = logits.gather(-1, label[..., None]) - logits
        diff = self.weight[label][..., None, :] - self.weight  # w_i - w_j, shape (..., K, n)
        sq = (diff * diff).sum(dim=-1)
        dist = torch.where(sq > 0, gap / sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.inf)
        dist = dist.masked_fill(torch.nn.functional.one_hot(label, self.n_classes).bool(), torch.inf)
        j = dist.argmin(dim=-1)
        pick = torch.gather(diff, -2, j[..., None, None].expand(*j.shape, 1, diff.shape[-1]))[..., 0, :]
        coef = torch.gather(gap, -1, j[..., None]) / torch.gather(sq, -1, j[..., None])
        return -(1.0 + float(overshoot)) * coef * pick


def half_space_classifier(normal: torch.Tensor, threshold: float = 0.0) -> AffineClassifier:
    """Two classes split by the hyperplane normal . x = threshold (class 0 where normal . x >= threshold),
    Remark 4's classifier when used in latent space."""
    n = normal.reshape(-1)
    weight = torch.stack((n, -n)) / 2.0
    bias = torch.tensor([-threshold / 2.0, threshold / 2.0], dtype=n.dtype)
    return AffineClassifier(weight, bias)


def sector_classifier(n_classes: int, phase: float = 0.0, dims: int = 2) -> AffineClassifier:
    """K cones around the origin in the plane of the first two coordinates: the argmax of the K linear
    functions with unit directions at angles phase + 2 pi k / K (class k is the cone of angle 2 pi / K
    centred on its direction; K = 2 gives two half-spaces).  Every cell is a convex polyhedron, and for a
    rotation-invariant law, such as N(0, I), the classes are equiprobable."""
    k = integer_at_least(n_classes, "n_classes", 2)
    dims = integer_at_least(dims, "dims", 2)
    ang = real_scalar(phase, "phase") + 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    weight = torch.zeros(k, dims, dtype=torch.float64)
    weight[:, 0], weight[:, 1] = torch.cos(ang), torch.sin(ang)
    return AffineClassifier(weight)


def distance_to_two_half_spaces(y: torch.Tensor, c1: torch.Tensor, e1: torch.Tensor | float,
                                c2: torch.Tensor, e2: torch.Tensor | float) -> torch.Tensor:
    """Distance from each row of ``y`` (n, m) to {v : c1 . v <= e1} intersected with {v : c2 . v <= e2}.

    ``c1``, ``c2`` are normals, one per row (n, m) or shared (m,); ``e1``, ``e2`` offsets.  The nearest
    point has 0, 1 or 2 active constraints (the optimality conditions of a projection onto a polyhedron):
    y itself if feasible; its projection onto one boundary hyperplane if that satisfies the other
    constraint; or its projection onto the intersection of both hyperplanes, which is always feasible.  The
    smallest feasible candidate is the distance; ``inf`` when the intersection is empty (opposite normals).
    Rows with a zero normal give NaN.
    """
    c1, c2 = torch.broadcast_to(c1, y.shape), torch.broadcast_to(c2, y.shape)
    e1, e2 = torch.as_tensor(e1, dtype=y.dtype), torch.as_tensor(e2, dtype=y.dtype)
    s1, s2 = (c1 * y).sum(-1) - e1, (c2 * y).sum(-1) - e2
    n1, n2, g12 = (c1 * c1).sum(-1), (c2 * c2).sum(-1), (c1 * c2).sum(-1)
    inf = torch.full_like(s1, math.inf)
    best = torch.where((s1 <= 0) & (s2 <= 0), torch.zeros_like(s1), inf)
    # half-space a, then b: the projection of y onto a is y - move c_a, which moves c_b . y by -move c_a . c_b
    for s_a, n_a, s_b, g in ((s1, n1, s2, g12), (s2, n2, s1, g12)):
        move = s_a.clamp_min(0) / n_a
        ok = s_b - move * g <= 1e-12 * (1 + s_b.abs())  # ... satisfies the other constraint
        best = torch.where(ok, torch.minimum(best, move * n_a.sqrt()), best)
    det = n1 * n2 - g12 * g12
    nonparallel = det > 1e-12 * n1 * n2
    safe = torch.where(nonparallel, det, torch.ones_like(det))
    l1, l2 = (n2 * s1 - g12 * s2) / safe, (n1 * s2 - g12 * s1) / safe  # y - l1 c1 - l2 c2 lies on both planes
    corner = (l1[..., None] * c1 + l2[..., None] * c2).norm(dim=-1)
    return torch.where(nonparallel, torch.minimum(best, corner), best)


def joint_fooling_distance(f: AffineClassifier, h: AffineClassifier, x: torch.Tensor) -> torch.Tensor:
    """min ||v|| such that f(x + v) != f(x) and h(x + v) != h(x), for two argmax-of-affine classifiers
    (Theorem 3's event, exactly).

    f's label leaves class i where some j beats it, the half-space (w_j - w_i) . y + b_j - b_i >= 0; so the
    set of points relabelled by both is the union over pairs (j, jh) of the intersection of one such
    half-space of f and one of h, and the distance is the smallest distance to these intersections
    (:func:`distance_to_two_half_spaces`).
    """
    if f.weight.shape[1] != h.weight.shape[1]:
        raise ValueError(f"f and h must take the same input dimension; got {f.weight.shape[1]} and {h.weight.shape[1]}")
    x = x.to(f.weight.dtype)
    kf, kh = f.predict(x), h.predict(x)
    best = torch.full((x.shape[0],), math.inf, dtype=x.dtype)
    for j in range(f.n_classes):
        c1 = f.weight[kf] - f.weight[j]  # {y : c1 . y <= b_j - b_kf}: j beats f's class
        e1 = f.bias[j] - f.bias[kf]
        for jh in range(h.n_classes):  # and jh beats h's class
            c2 = h.weight[kh] - h.weight[jh]
            e2 = h.bias[jh] - h.bias[kh]
            with torch.no_grad():
                d = distance_to_two_half_spaces(x, c1, e1, c2, e2)
            best = torch.where((kf != j) & (kh != jh), torch.minimum(best, d), best)
    return best


class ConeClassifier(ToyClassifier):
    """Labels the plane by the angle of x: class k on the arc [b_k, b_{k+1}) of angles, in turns (the last
    arc wraps around to b_0 + 1).  The cells are cones, not necessarily convex.  Optionally, outside the
    disc of radius ``shell`` every label is shifted by one (k -> k + 1 mod K): a classifier that agrees
    with the cones on the unit circle but has adversarial examples at distance ``shell - 1`` from it.

    ``exact_robustness`` is the distance to the nearest boundary ray {s (cos 2 pi b, sin 2 pi b), s >= 0}
    (for a point of the cone, the complement's nearest point lies on its two bounding rays), and with a
    shell also at most shell - ||x||, which the radial step outwards attains (its label is shifted);
    it is defined for points inside the shell.
    """

    boundaries: torch.Tensor

    def __init__(self, boundaries: Sequence[float] | torch.Tensor, shell: float | None = None) -> None:
        super().__init__()
        b = torch.as_tensor(boundaries, dtype=torch.float64).reshape(-1)
        if b.numel() < 2 or torch.any(torch.diff(b) <= 0) or b[0] < 0 or b[-1] >= 1:
            raise ValueError("boundaries (in turns) must be at least 2 strictly increasing values in [0, 1)")
        if shell is not None and not shell > 0:
            raise ValueError(f"shell must be None or a radius > 0; got {shell!r}")
        self.register_buffer("boundaries", b)
        self.shell = None if shell is None else float(shell)
        self.n_classes = int(b.numel())

    def _turns(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 2:
            raise ValueError(f"x must have last dimension 2; got shape {tuple(x.shape)}")
        x = x.to(torch.float64)
        return torch.remainder(torch.atan2(x[..., 1], x[..., 0]) / (2 * math.pi), 1.0)

    def _cone(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.searchsorted(self.boundaries, self._turns(x).contiguous(), right=True) - 1
        return torch.remainder(k, self.n_classes)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        label = self._cone(x)
        if self.shell is not None:
            label = torch.where(x.to(torch.float64).norm(dim=-1) > self.shell, (label + 1) % self.n_classes, label)
        return label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.predict(x), self.n_classes).to(torch.float64)

    def exact_robustness(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        self._turns(x)
        ang = 2 * math.pi * self.boundaries
        rays = torch.stack((torch.cos(ang), torch.sin(ang)), dim=-1)  # (K, 2)
        along = x @ rays.T
        across = (x[..., :1] * rays[:, 1] - x[..., 1:] * rays[:, 0]).abs()
        norm = x.norm(dim=-1)
        dist = torch.where(along >= 0, across, norm[..., None]).min(dim=-1).values
        if self.shell is not None:
            if torch.any(norm > self.shell):
                raise ValueError(f"exact_robustness is defined inside the shell (||x|| <= {self.shell:g})")
            dist = torch.minimum(dist, self.shell - norm)
        return dist


class SlabClassifier(ToyClassifier):
    """Classes are the slabs t_{k-1} <= u . x < t_k cut by parallel hyperplanes (u a unit direction).

    Every region is convex but, for K > 2, not a half-space, so eq. (2) is strict (Remark 4).
    """

    direction: torch.Tensor
    thresholds: torch.Tensor

    def __init__(self, direction: torch.Tensor, thresholds: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        u = direction.reshape(-1)
        norm = torch.linalg.vector_norm(u)
        if not norm > 0:
            raise ValueError("direction must be a non-zero vector")
        t = torch.as_tensor(thresholds, dtype=u.dtype).reshape(-1)
        if t.numel() < 1 or torch.any(torch.diff(t) <= 0) or not torch.all(torch.isfinite(t)):
            raise ValueError("thresholds must be a non-empty, finite, strictly increasing sequence")
        self.register_buffer("direction", u / norm)
        self.register_buffer("thresholds", t)
        self.n_classes = int(t.numel() + 1)

    def _coordinate(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.direction.dtype) @ self.direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self._coordinate(x)[..., None]
        inf = torch.full((1,), torch.inf, dtype=s.dtype, device=s.device)
        lower = torch.cat((-inf, self.thresholds))
        upper = torch.cat((self.thresholds, inf))
        # minus the distance from s to slab k: 0 inside it, so the argmax is the slab containing s
        return -(torch.relu(lower - s) + torch.relu(s - upper))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.thresholds, self._coordinate(x).contiguous(), right=True)

    def exact_robustness(self, x: torch.Tensor) -> torch.Tensor:
        s = self._coordinate(x)
        k = torch.searchsorted(self.thresholds, s.contiguous(), right=True)
        inf = torch.full_like(s, torch.inf)
        below = torch.where(k > 0, s - self.thresholds[(k - 1).clamp_min(0)], inf)
        last = self.thresholds.numel() - 1
        above = torch.where(k <= last, self.thresholds[k.clamp_max(last)] - s, inf)
        return torch.minimum(below, above)


class BallClassifier(ToyClassifier):
    """Class 0 inside the ball ||x - c|| < radius, class 1 outside (a non-convex outer region)."""

    center: torch.Tensor

    def __init__(self, radius: float, center: torch.Tensor | None = None) -> None:
        super().__init__()
        if not radius > 0:
            raise ValueError(f"radius must be > 0; got {radius!r}")
        self.radius = float(radius)
        self.register_buffer("center", center if center is not None else torch.zeros(()))
        self.n_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gap = self.radius - torch.linalg.vector_norm(x - self.center, dim=-1)
        return torch.stack((gap, -gap), dim=-1)

    def exact_robustness(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.vector_norm(x - self.center, dim=-1) - self.radius).abs()


class CheckerboardClassifier(ToyClassifier):
    """Label = parity of the number of negative coordinates among the first ``n_dims``: opposite orthants
    share a label, so each class is a union of 2^(n_dims - 1) disconnected orthants."""

    def __init__(self, n_dims: int = 2) -> None:
        super().__init__()
        if n_dims < 1:
            raise ValueError(f"n_dims must be >= 1; got {n_dims!r}")
        self.n_dims = int(n_dims)
        self.n_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.n_dims:
            raise ValueError(f"x must have at least {self.n_dims} coordinates; got shape {tuple(x.shape)}")
        prod = torch.prod(x[..., : self.n_dims], dim=-1)
        return torch.stack((prod, -prod), dim=-1)

    def exact_robustness(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.n_dims].abs().min(dim=-1).values


class MergedClassifier(nn.Module):
    """The classes of ``classifier`` merged into groups: logit of group ``k`` = the largest logit of its
    members, so the merged label is the group of the original label (Remark 2: the dependence on the number
    of classes K, with the decision boundaries of one trained classifier and no retraining).

    A perturbation that changes the merged label changes the original one, so every robustness of the merged
    classifier is at least that of the original, sample by sample.  ``groups`` lists the original classes of
    each group; together they must cover ``0, ..., K - 1`` exactly once.
    """

    def __init__(self, classifier: nn.Module, groups: Sequence[Sequence[int]]) -> None:
        super().__init__()
        flat = [int(c) for grp in groups for c in grp]
        if len(groups) < 2 or any(len(grp) == 0 for grp in groups):
            raise ValueError(f"groups must be at least two non-empty groups of classes; got {groups!r}")
        if sorted(flat) != list(range(len(flat))):
            raise ValueError(f"groups must cover the classes 0..K-1 exactly once; got {groups!r}")
        self.classifier = classifier
        self.groups = tuple(tuple(int(c) for c in grp) for grp in groups)
        self.n_classes = len(self.groups)
        self.n_original = len(flat)
        lookup = torch.empty(len(flat), dtype=torch.long)
        for k, grp in enumerate(self.groups):
            lookup[list(grp)] = k
        self.register_buffer("lookup", lookup)

    lookup: torch.Tensor

    def merge_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The group of each original label."""
        return self.lookup.to(labels.device)[labels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x)
        if logits.shape[-1] != self.n_original:
            raise ValueError(f"the classifier returned {logits.shape[-1]} logits; the groups cover {self.n_original}")
        return torch.stack([logits[..., list(grp)].amax(dim=-1) for grp in self.groups], dim=-1)


__all__ = [
    "MergedClassifier",
    "ToyClassifier",
    "AffineClassifier",
    "half_space_classifier",
    "sector_classifier",
    "distance_to_two_half_spaces",
    "joint_fooling_distance",
    "ConeClassifier",
    "SlabClassifier",
    "BallClassifier",
    "CheckerboardClassifier",
]
