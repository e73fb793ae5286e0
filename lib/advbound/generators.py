"""Toy generators g: R^d -> R^m whose modulus of continuity (Assumption 1, eq. (1)) and nearest-point
projection (Theorem 2, eq. (5)) are known exactly.

* :class:`CircleGenerator` is the paper's Figure 1 model, g(z) = (cos 2 pi z, sin 2 pi z), d = 1, m = 2.
* :class:`TorusGenerator` is its d-dimensional analogue, a product of d circles in R^{2d}.
* :class:`IsometricLinearGenerator` is g(z) = A z + b with orthonormal columns: an isometry onto its range,
  the setting of Remark 4 where eq. (2) is attained.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .modulus import IdentityModulus, Modulus


class TorusModulus(Modulus):
    """Exact modulus of the product of d unit circles z -> (cos 2 pi z_k, sin 2 pi z_k)_k:

        omega(t) = 2 sqrt(d) sin(pi min(t / sqrt(d), 1/2)).

    Derivation (ours; not in the paper): ||g(z) - g(z')||^2 = 4 sum_k h(Delta_k^2) with
    h(s) = sin^2(pi sqrt(s)), which is concave on [0, 1/4] and whose concave envelope on [0, inf) is
    h(min(s, 1/4)).  Jensen's inequality under sum_k Delta_k^2 <= t^2 gives the bound above, and the equal
    split Delta_k = t / sqrt(d) attains it.  d = 1 is the circle: omega(t) = 2 sin(pi min(t, 1/2)).
    The modulus is concave; its inverse is infinite from the diameter 2 sqrt(d) on.
    """

    def __init__(self, d: int = 1) -> None:
        if isinstance(d, bool) or int(d) != d or d < 1:
            raise ValueError(f"d (number of circles) must be an integer >= 1; got {d!r}")
        self.d = int(d)

    def _forward(self, t: np.ndarray) -> np.ndarray:
        rd = math.sqrt(self.d)
        return 2.0 * rd * np.sin(np.pi * np.minimum(t / rd, 0.5))

    def _inverse(self, eta: np.ndarray) -> np.ndarray:
        rd = math.sqrt(self.d)
        ratio = eta / (2.0 * rd)
        with np.errstate(invalid="ignore"):
            out = rd * np.arcsin(np.minimum(ratio, 1.0)) / np.pi
        return np.where(ratio >= 1.0, np.inf, out)

    @property
    def is_concave(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"TorusModulus(d={self.d})"


class TorusGenerator(nn.Module):
    """g(z) = (cos 2 pi z_1, sin 2 pi z_1, ..., cos 2 pi z_d, sin 2 pi z_d) in R^{2d}."""

    def __init__(self, latent_dim: int = 1) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or int(latent_dim) != latent_dim or latent_dim < 1:
            raise ValueError(f"latent_dim must be an integer >= 1; got {latent_dim!r}")
        self.latent_dim = int(latent_dim)
        self.image_dim = 2 * self.latent_dim
        self.modulus = TorusModulus(self.latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_last_dim(z, self.latent_dim, "z")
        angle = 2.0 * math.pi * z
        return torch.stack((torch.cos(angle), torch.sin(angle)), dim=-1).flatten(-2)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Exact nearest point of the range (eq. (5)): each coordinate's angle, z*_k in [-1/2, 1/2).

        Every latent point congruent modulo 1 has the same image, so this is one representative of the
        argmin.  At x = 0 every z is a minimiser and 0 is returned.
        """
        _check_last_dim(x, self.image_dim, "x")
        pairs = x.unflatten(-1, (self.latent_dim, 2))
        return torch.atan2(pairs[..., 1], pairs[..., 0]) / (2.0 * math.pi)


class CircleGenerator(TorusGenerator):
    """The paper's Figure 1 generator: g(z) = (cos 2 pi z, sin 2 pi z), d = 1, m = 2."""

    def __init__(self) -> None:
        super().__init__(1)


class IsometricLinearGenerator(nn.Module):
    """g(z) = A z + b with A in R^{m x d} having orthonormal columns (A^T A = I_d), m >= d.

    ||g(z) - g(z')|| = ||z - z'||, so the identity is an exact modulus and Remark 4 applies: a classifier
    whose regions pulled back to the latent space are half-spaces attains eq. (2) with equality.
    """

    def __init__(self, latent_dim: int, image_dim: int, seed: int = 0, offset: bool = False,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if latent_dim < 1 or image_dim < latent_dim:
            raise ValueError(f"need 1 <= latent_dim <= image_dim; got latent_dim={latent_dim}, image_dim={image_dim}")
        gen = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(image_dim, latent_dim, generator=gen, dtype=dtype))
        q = q * torch.sign(torch.diagonal(r))  # a deterministic sign convention
        b = torch.randn(image_dim, generator=gen, dtype=dtype) if offset else torch.zeros(image_dim, dtype=dtype)
        self.register_buffer("matrix", q)
        self.register_buffer("offset", b)
        self.latent_dim = int(latent_dim)
        self.image_dim = int(image_dim)
        self.modulus = IdentityModulus()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_last_dim(z, self.latent_dim, "z")
        return z.to(self.matrix.dtype) @ self.matrix.T + self.offset

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Exact nearest point of the range (eq. (5)): z* = A^T (x - b)."""
        _check_last_dim(x, self.image_dim, "x")
        return (x.to(self.matrix.dtype) - self.offset) @ self.matrix


def _check_last_dim(t: torch.Tensor, n: int, name: str) -> None:
    if t.ndim < 1 or t.shape[-1] != n:
        raise ValueError(f"{name} must have last dimension {n}; got shape {tuple(t.shape)}")


__all__ = ["TorusModulus", "TorusGenerator", "CircleGenerator", "IsometricLinearGenerator"]
