"""Toy generators g: R^d -> R^m whose modulus of continuity (Assumption 1, eq. (1)) and nearest-point
projection (Theorem 2, eq. (5)) are known exactly.

* :class:`CircleGenerator` is the paper's Figure 1 model, g(z) = (cos 2 pi z, sin 2 pi z), d = 1, m = 2.
* :class:`TorusGenerator` is its d-dimensional analogue, a product of d circles in R^{2d}.
* :class:`IsometricLinearGenerator` is g(z) = A z + b with orthonormal columns: an isometry onto its range,
  the setting of Remark 4 where eq. (2) is attained.
* :class:`SplitGenerator` is ``g(z) = z + c sign(z_1) e_1``: two half-spaces pushed apart, a support with
  two connected components, whose exact modulus is the affine ``omega(t) = t + 2c`` with ``omega(0+) = 2c > 0``
  (the paper's footnote 4: eq. (1) does not require ``omega(0) = 0``).
* :class:`InvertibleGenerator` is a random deep network with leaky-ReLU layers and full-column-rank weights:
  non-linear, yet with an exact left inverse, so a classifier ``f = h o g^{-1}`` has any latent partition ``h``
  we choose (Remark 4 with a non-linear generator), and a Lipschitz constant bounded by its spectral norms.

For the circle and the torus, exact in-distribution robustness: :func:`circle_in_distribution_robustness`
(chord to the nearest label change), :func:`torus_sine_sum_in_distribution_robustness` (the image-space
half-space ``sum_k x_{2k} >= 0``), and the latent law of a circle angle, :func:`wrapped_normal_cell_probabilities`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special
from torch import nn

from .modulus import (
    AffineModulus,
    IdentityModulus,
    LipschitzModulus,
    Modulus,
    check_seed,
    integer_at_least,
    real_scalar,
)


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
        self.d = integer_at_least(d, "d (number of circles)", 1)

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
        self.latent_dim = integer_at_least(latent_dim, "latent_dim", 1)
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

    matrix: torch.Tensor
    offset: torch.Tensor

    def __init__(self, latent_dim: int, image_dim: int, seed: int = 0, offset: bool = False,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if latent_dim < 1 or image_dim < latent_dim:
            raise ValueError(f"need 1 <= latent_dim <= image_dim; got latent_dim={latent_dim}, image_dim={image_dim}")
        gen = torch.Generator().manual_seed(check_seed(seed))
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


class SplitGenerator(nn.Module):
    """``g(z) = z + gap * sign(z_1) e_1`` on ``R^d`` (``sign(0) = +1``): the two half-spaces ``z_1 >= 0`` and
    ``z_1 < 0`` pushed apart by ``2 gap``, so the support ``{|x_1| >= gap}`` has two connected components (the
    paper's footnote 4: a modulus with ``omega(0) > 0`` models a disconnected support).

    No Lipschitz modulus holds (``g`` jumps by ``2 gap`` across ``z_1 = 0``); the smallest valid modulus of
    continuity (eq. (1)) is the affine ``omega(t) = t + 2 gap`` (:attr:`modulus`): ``||g(z) - g(z')|| <=
    ||z - z'|| + 2 gap``, approached by pairs across the cut.  For the image classifier ``f(x) = [x_1 >= 0]``,
    :meth:`half_space_in_distribution_robustness` is the exact ``r_in = |z_1| + 2 gap`` (an infimum: the
    nearest generated point of the other class lies at ``x_1 -> -gap``), so ``P(r_in <= eta) = 2 Phi(eta -
    2 gap) - 1``, which is eq. (2) for two classes of probability 1/2 with ``omega^{-1}(eta) = eta - 2 gap``:
    Theorem 1 holds with equality for this modulus (Remark 4 with ``omega(0) > 0``).
    """

    def __init__(self, latent_dim: int = 2, gap: float = 0.5) -> None:
        super().__init__()
        self.latent_dim = integer_at_least(latent_dim, "latent_dim", 1)
        gap = real_scalar(gap, "gap")
        if not (0 <= gap < math.inf):
            raise ValueError(f"gap must be a finite number >= 0; got {gap!r}")
        self.gap = gap
        self.modulus = AffineModulus(offset=2 * gap, lipschitz=1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_last_dim(z, self.latent_dim, "z")
        shift = torch.zeros_like(z)
        one = torch.ones_like(z[..., 0])
        shift[..., 0] = self.gap * torch.where(z[..., 0] >= 0, one, -one)
        return z + shift

    def half_space_in_distribution_robustness(self, z: torch.Tensor) -> torch.Tensor:
        """Exact ``r_in(g(z)) = |z_1| + 2 gap`` for ``f(x) = [x_1 >= 0]`` (see the class docstring)."""
        _check_last_dim(z, self.latent_dim, "z")
        return z[..., 0].abs() + 2 * self.gap


class InvertibleGenerator(nn.Module):
    """A random deep generator with an exact inverse on its range:

        g(z) = W_L s(... s(W_2 s(W_1 z + b_1) + b_2) ...) + b_L,

    ``s`` the leaky ReLU with negative slope ``slope`` in (0, 1] (a bijection of R), ``W_k`` Gaussian
    matrices of shape (n_k, n_{k-1}) with n_k >= n_{k-1} (full column rank with probability 1; better
    conditioned when the widths grow by a factor 2 or more) with entries of variance 2 / ((1 + slope^2) n_k),
    so that every layer keeps the norm of its input on average (``E||g(z)|| ~ E||z||``, the normalisation of
    Remark 1), and biases N(0, 0.1^2).  ``widths = (d, n_1, ..., n_L)``; ``n_L`` is the image dimension m.

    :meth:`inverse` undoes the layers one by one (the pseudo-inverse of each W_k, then s^{-1}): on the range
    of g it returns z exactly (up to rounding), which is all Remark 4 needs to define ``f = h o g^{-1}``.
    Off the range it is one particular extension (layer-wise least squares), not the nearest-point
    projection of eq. (5).  g is piecewise affine, so it is non-linear as soon as some pre-activation changes
    sign; since s is 1-Lipschitz, ``prod_k ||W_k||_2`` is a Lipschitz constant (:meth:`lipschitz_bound`).
    """

    def __init__(self, widths: tuple[int, ...] | list[int], slope: float = 0.2, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        sizes = [integer_at_least(w, "widths[k]", 1) for w in widths]
        if len(sizes) < 2:
            raise ValueError(f"widths must list at least (d, m); got {list(widths)!r}")
        if any(b < a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise ValueError(f"widths must be non-decreasing (each layer injective); got {sizes}")
        slope = real_scalar(slope, "slope")
        if not 0.0 < slope <= 1.0:
            raise ValueError(f"slope (leaky-ReLU negative slope) must be in (0, 1]; got {slope!r}")
        gen = torch.Generator().manual_seed(check_seed(seed))
        for k, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            std = math.sqrt(2.0 / ((1.0 + slope * slope) * b))
            self.register_buffer(f"weight{k}", std * torch.randn(b, a, generator=gen, dtype=dtype))
            self.register_buffer(f"bias{k}", 0.1 * torch.randn(b, generator=gen, dtype=dtype))
            self.register_buffer(f"pinv{k}", torch.linalg.pinv(getattr(self, f"weight{k}")))
        self.widths = tuple(sizes)
        self.latent_dim, self.image_dim = sizes[0], sizes[-1]
        self.slope = slope
        self.modulus = LipschitzModulus(self.lipschitz_bound())

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(getattr(self, f"weight{k}"), getattr(self, f"bias{k}")) for k in range(len(self.widths) - 1)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_last_dim(z, self.latent_dim, "z")
        layers = self._layers()
        y = z.to(layers[0][0].dtype)
        for k, (w, b) in enumerate(layers):
            y = y @ w.T + b
            if k < len(layers) - 1:
                y = torch.nn.functional.leaky_relu(y, self.slope)
        return y

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """The layer-wise left inverse g^{-1}(x): exact on the range of g (differentiable in x)."""
        _check_last_dim(x, self.image_dim, "x")
        layers = self._layers()
        y = x.to(layers[0][0].dtype)
        for k in reversed(range(len(layers))):
            if k < len(layers) - 1:
                y = torch.where(y >= 0, y, y / self.slope)
            y = (y - layers[k][1]) @ getattr(self, f"pinv{k}").T
        return y

    def lipschitz_bound(self) -> float:
        """prod_k ||W_k||_2 (the leaky ReLU is 1-Lipschitz): an upper bound on the Lipschitz constant."""
        return float(math.prod(float(torch.linalg.matrix_norm(w, 2)) for w, _ in self._layers()))


# --------------------------------------------------------------------------------------------------
# The circle: latent law of the angle and in-distribution robustness
# --------------------------------------------------------------------------------------------------

def wrapped_normal_cell_probabilities(m: int, terms: int = 12) -> np.ndarray:
    """P(z mod 1 in [k/m, (k+1)/m)) for z ~ N(0, 1), k = 0..m-1: the law of the circle generator's angle
    (in turns) on a regular grid of m cells.

    Each cell's mass is sum_j [Phi(b + j) - Phi(a + j)] over |j| <= ``terms`` (the rest is below
    Phi(-terms + 1) < 1e-25), each difference taken on the side of the small tail.
    """
    m = integer_at_least(m, "m (number of grid cells)", 1)
    edges = np.arange(m + 1) / m
    out = np.zeros(m)
    for j in range(-terms, terms + 1):
        a, b = edges[:-1] + j, edges[1:] + j
        out += np.where(a >= 0, special.ndtr(-a) - special.ndtr(-b), special.ndtr(b) - special.ndtr(a))
    return out


def circle_label_changes(labels: np.ndarray) -> np.ndarray:
    """Positions (in turns) of the label changes of a regular grid of m cells of the circle, cell k being
    [k/m, (k+1)/m): the boundaries k/m between cells k - 1 and k (cyclically) whose labels differ."""
    lab = np.asarray(labels).ravel()
    if lab.size < 1:
        raise ValueError("labels must contain at least one grid cell")
    return np.flatnonzero(lab != np.roll(lab, 1)) / lab.size


def circle_in_distribution_robustness(turns: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """r_in on the circle generator g(z) = (cos 2 pi z, sin 2 pi z) for a labelling of the circle by arcs.

    A point at angle ``turns`` (in turns) can only move along the circle; the nearest point with another
    label is the nearest arc end, at circular distance Delta (in turns), and the distance in the plane is
    the chord 2 sin(pi Delta).  ``boundaries`` are the arc ends in turns (e.g. from
    :func:`circle_label_changes`, or exact ones); no boundary means one label: r_in = inf.
    """
    u = np.mod(np.asarray(turns, dtype=float), 1.0)
    b = np.sort(np.mod(np.asarray(boundaries, dtype=float).ravel(), 1.0))
    if b.size == 0:
        return np.full(u.shape, np.inf)
    pos = np.searchsorted(b, u)
    left, right = b[(pos - 1) % b.size], b[pos % b.size]
    gap = np.minimum(np.mod(u - left, 1.0), np.mod(right - u, 1.0))
    return 2.0 * np.sin(np.pi * np.minimum(gap, 0.5))


def torus_sine_sum_in_distribution_robustness(z: np.ndarray, iters: int = 60, chunk: int = 2_000_000) -> np.ndarray:
    """Exact r_in on the torus generator for f(x) = [sum_k x_{2k} >= 0], i.e. the sign of
    S = sum_k sin theta_k with theta_k = 2 pi z_k: the least total squared chord that brings S to 0.

    Derivation (ours).  Moving angle k to theta'_k costs the squared chord 4 sin^2((theta'_k - theta_k)/2)
    = |e^{i theta'_k} - e^{i theta_k}|^2.  For a multiplier lam >= 0, minimising the cost + lam sgn(S) sum_k
    sin theta'_k coordinatewise means minimising |p - e^{i theta_k}|^2 + lam sgn(S) Im p over the unit circle,
    whose solution is the angle of 2 e^{i theta_k} - i lam sgn(S):
    theta'_k = atan2(2 sin theta_k - lam sgn S, 2 cos theta_k).  These moves change S continuously and
    monotonically in lam, so bisection on lam reaches S = 0, and by Lagrangian sufficiency that move is a
    global minimiser.  Rows are processed in chunks of about ``chunk`` angles.
    """
    theta = 2.0 * np.pi * np.atleast_2d(np.asarray(z, dtype=float))
    rows = max(1, chunk // theta.shape[1])
    return np.concatenate([_sine_sum_chunk(theta[i:i + rows], iters) for i in range(0, len(theta), rows)])


def _sine_sum_chunk(theta: np.ndarray, iters: int) -> np.ndarray:
    sgn = np.where(np.sin(theta).sum(axis=1) >= 0, 1.0, -1.0)[:, None]
    two_sin, two_cos = 2 * np.sin(theta), 2 * np.cos(theta)

    def moved(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        new = np.arctan2(two_sin - lam[:, None] * sgn, two_cos)
        return new, (np.sin(new) * sgn).sum(axis=1)

    lo, hi = np.zeros(len(theta)), np.full(len(theta), 4.0)
    while True:  # grow hi until the sum is pushed past 0 for every row
        _, val = moved(hi)
        if np.all(val <= 0):
            break
        hi = np.where(val > 0, 2 * hi, hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        _, val = moved(mid)
        lo, hi = np.where(val > 0, mid, lo), np.where(val > 0, hi, mid)
    new, _ = moved(hi)
    return np.sqrt((4 * np.sin((new - theta) / 2) ** 2).sum(axis=1))


def _check_last_dim(t: torch.Tensor, n: int, name: str) -> None:
    if t.ndim < 1 or t.shape[-1] != n:
        raise ValueError(f"{name} must have last dimension {n}; got shape {tuple(t.shape)}")


__all__ = [
    "TorusModulus",
    "TorusGenerator",
    "CircleGenerator",
    "IsometricLinearGenerator",
    "InvertibleGenerator",
    "SplitGenerator",
    "wrapped_normal_cell_probabilities",
    "circle_label_changes",
    "circle_in_distribution_robustness",
    "torus_sine_sum_in_distribution_robustness",
]
