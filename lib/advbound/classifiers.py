"""Toy classifiers with exact robustness: their decision regions are convex polyhedra (half-spaces, slabs,
argmax-of-affine cells) or simple non-convex sets (ball complement, checkerboard orthants).

Used in latent space, ``exact_robustness(z)`` is the latent robustness r_Z of Remark 5; composed with an
isometric generator it is also r_in (Remark 4).  Each classifier is an ``nn.Module`` returning logits, so the
attacks can be run on them and checked against the exact value.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


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


def half_space_classifier(normal: torch.Tensor, threshold: float = 0.0) -> AffineClassifier:
    """Two classes split by the hyperplane normal . x = threshold (class 0 where normal . x >= threshold),
    Remark 4's classifier when used in latent space."""
    n = normal.reshape(-1)
    weight = torch.stack((n, -n)) / 2.0
    bias = torch.tensor([-threshold / 2.0, threshold / 2.0], dtype=n.dtype)
    return AffineClassifier(weight, bias)


class SlabClassifier(ToyClassifier):
    """Classes are the slabs t_{k-1} <= u . x < t_k cut by parallel hyperplanes (u a unit direction).

    Every region is convex but, for K > 2, not a half-space, so eq. (2) is strict (Remark 4).
    """

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
        above = torch.where(k < self.thresholds.numel(), self.thresholds[k.clamp_max(self.thresholds.numel() - 1)] - s, inf)
        return torch.minimum(below, above)


class BallClassifier(ToyClassifier):
    """Class 0 inside the ball ||x - c|| < radius, class 1 outside (a non-convex outer region)."""

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


__all__ = [
    "ToyClassifier",
    "AffineClassifier",
    "half_space_classifier",
    "SlabClassifier",
    "BallClassifier",
    "CheckerboardClassifier",
]
