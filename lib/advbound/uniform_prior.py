"""The paper's footnote 2: the bounds for a generator whose latent prior is uniform on [-1, 1]^d.

Derivation (a transport argument; ours, written out here because the paper only says the extension is
easy).  Let ``T(z) = 2 Phi(z) - 1`` coordinatewise.

1. ``T`` pushes ``N(0, I_d)`` to the uniform distribution on the open cube ``(-1, 1)^d``: each coordinate
   ``2 Phi(z_k) - 1`` is uniform on (-1, 1) (probability integral transform), independently.
2. ``T`` is ``c``-Lipschitz for the Euclidean norm, ``c = sqrt(2/pi) = 0.798``: each coordinate map has
   derivative ``2 phi(z_k) <= 2 phi(0) = sqrt(2/pi)``, so ``||T(z) - T(z')||^2 = sum_k (T(z_k) - T(z'_k))^2
   <= c^2 ||z - z'||^2``.
3. So a generator ``g_u`` on the cube with modulus ``omega_u`` gives ``g = g_u o T`` on the Gaussian latent
   space with the same output distribution and modulus ``omega(t) = omega_u(c t)``, hence
   ``omega^{-1}(eta) = omega_u^{-1}(eta) / c``.  Class probabilities are the same, and the in-distribution
   robustness of ``g`` can only be larger than that of ``g_u`` (its range misses the cube's faces), so
   Theorem 1 (and Theorems 3, 4) for ``g`` bound the robustness of ``g_u``:

       P_u(r_in <= eta) >= sum_i [ Phi(a_i + sqrt(pi/2) omega_u^{-1}(eta)) - Phi(a_i) ].

The same contraction transports the Gaussian isoperimetric inequality (Borell 1975; Sudakov and Tsirel'son
1978) to the cube: for A in [-1, 1]^d of uniform measure p, T^{-1}(A) has Gaussian measure p and T maps its
(eps / c)-expansion into A_eps, so ``mu(A_eps) >= Phi(Phi^{-1}(p) + sqrt(pi/2) eps)``.  For the half-cube
``{u_1 <= 0}`` both sides are ``1/2 + eps/2 + O(eps^2)``, so the constant cannot be improved.

The in-cube distance functions below give the exact in-distribution robustness of half-space and slab
classifiers when ``g_u`` is the identity on the cube (``omega_u(t) = t``), for checking the bound.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from .bounds import mean_upper_bound, probability_lower_bound, quantile_upper_bound
from .modulus import ArrayLike, Modulus, RescaledModulus, as_array, as_modulus, real_scalar

#: Lipschitz constant of the Gaussian-to-cube map T(z) = 2 Phi(z) - 1: 2 phi(0) = sqrt(2 / pi).
GAUSSIAN_TO_CUBE_LIPSCHITZ = math.sqrt(2.0 / math.pi)


def gaussian_to_cube(z: ArrayLike) -> np.ndarray:
    """T(z) = 2 Phi(z) - 1 = erf(z / sqrt(2)), coordinatewise: N(0, I_d) -> uniform on (-1, 1)^d."""
    return special.erf(np.asarray(z, dtype=float) / math.sqrt(2.0))


def cube_modulus(modulus: Modulus | float | None = None) -> Modulus:
    """The modulus of g = g_u o T for a cube generator g_u with modulus ``modulus`` (default: identity):
    omega(t) = omega_u(sqrt(2/pi) t)."""
    return RescaledModulus(as_modulus(modulus), GAUSSIAN_TO_CUBE_LIPSCHITZ)


def uniform_prior_probability_lower_bound(eta: ArrayLike, class_probs: ArrayLike | None = None,
                                          n_classes: int | None = None, modulus: Modulus | float | None = None,
                                          delta: float | None = None) -> np.ndarray | float:
    """Footnote 2 / Theorem 1, eq. (2) for the uniform prior on [-1, 1]^d (derivation in the module
    docstring): a lower bound on P(r_in <= eta), eq. (2) at the latent radius sqrt(pi/2) omega_u^{-1}(eta)."""
    return probability_lower_bound(eta, class_probs, n_classes, cube_modulus(modulus), delta)


def uniform_prior_quantile_upper_bound(q: float, class_probs: ArrayLike | None = None, n_classes: int | None = None,
                                       modulus: Modulus | float | None = None, delta: float | None = None) -> float:
    """Footnote 2 / eq. (2) inverted for the uniform prior: an upper bound on the q-quantile of r_in,
    omega_u(sqrt(2/pi) t*) with t* the Gaussian latent radius of :func:`advbound.bounds.quantile_upper_bound`."""
    return quantile_upper_bound(q, class_probs, n_classes, cube_modulus(modulus), delta)


def uniform_prior_mean_upper_bound(class_probs: ArrayLike | None = None, n_classes: int | None = None,
                                   modulus: Modulus | float | None = None, wasserstein: float = 0.0,
                                   diameter: float | None = None) -> float:
    """Footnote 2 / Theorem 4 for the uniform prior: omega_u(sqrt(2/pi) s) + delta, s the Gaussian argument
    (omega_u concave, as Theorem 4 requires)."""
    return mean_upper_bound(class_probs, n_classes, cube_modulus(modulus), wasserstein, diameter)


# --------------------------------------------------------------------------------------------------
# Exact in-cube distances, for half-space and slab classifiers on the cube
# --------------------------------------------------------------------------------------------------

def _cube_points(u: ArrayLike, normal: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The points ``u`` (n, d) in [-1, 1]^d and a finite, non-zero ``normal`` (d,), checked."""
    pts = np.atleast_2d(as_array(u, "u").astype(float))
    n = as_array(normal, "normal").astype(float).ravel()
    if pts.shape[-1] != n.size:
        raise ValueError(f"u must have last dimension {n.size} (the length of normal); got shape {pts.shape}")
    if not np.all(np.abs(pts) <= 1.0):  # NaN fails this test too
        raise ValueError("u must lie in the cube [-1, 1]^d (finite coordinates, no NaN)")
    if not np.all(np.isfinite(n)):
        raise ValueError(f"normal must be a finite vector (no NaN or inf); got {n!r}")
    if not np.any(n != 0):
        raise ValueError("normal must be a non-zero vector")
    return pts, n


def _finite(value: object, name: str) -> float:
    """``value`` as a finite float, else an error naming ``name`` (an offset of the half-space or slab)."""
    out = real_scalar(value, name)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return out


def cube_distance_to_half_space(u: ArrayLike, normal: ArrayLike, offset: float) -> np.ndarray:
    """Distance from each row of ``u`` (points of [-1, 1]^d) to ``{v in [-1, 1]^d : normal . v >= offset}``,
    ``inf`` where that set is empty.

    The nearest point is ``v(lam) = clip(u + lam normal, -1, 1)`` for the smallest ``lam >= 0`` with
    ``normal . v(lam) = offset`` (the optimality conditions of this convex projection).  ``normal . v(lam)``
    is non-decreasing and piecewise linear in ``lam``, with a kink where a coordinate reaches its bound; the
    kinks are sorted and the linear piece that reaches ``offset`` is solved exactly.
    """
    pts, n = _cube_points(u, normal)
    b = _finite(offset, "offset")
    out = np.zeros(len(pts))
    if b > np.abs(n).sum():  # the set is empty
        out[:] = np.inf
        return out
    todo = pts @ n < b
    if not np.any(todo):
        return out
    p = pts[todo]
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = np.where(n != 0, (np.sign(n) - p) / n, 0.0)  # lam at which coordinate i stops moving
    order = np.argsort(kinks, axis=1)
    lam = np.take_along_axis(kinks, order, axis=1)
    sq = (n * n)[order]
    slope = (n * n).sum() - np.concatenate([np.zeros((len(p), 1)), np.cumsum(sq, axis=1)[:, :-1]], axis=1)
    steps = np.diff(np.concatenate([np.zeros((len(p), 1)), lam], axis=1), axis=1)
    level = (p @ n)[:, None] + np.cumsum(slope * steps, axis=1)  # normal . v at each kink
    k = np.argmax(level >= b - 1e-15 * np.abs(b), axis=1)  # first kink at which the offset is reached
    rows = np.arange(len(p))
    start = np.where(k > 0, lam[rows, k - 1], 0.0)
    base = np.where(k > 0, level[rows, k - 1], p @ n)
    with np.errstate(divide="ignore", invalid="ignore"):
        found = start + np.where(slope[rows, k] > 0, (b - base) / slope[rows, k], 0.0)
    out[todo] = np.linalg.norm(np.clip(p + found[:, None] * n, -1.0, 1.0) - p, axis=1)
    return out


def cube_half_space_robustness(u: ArrayLike, normal: ArrayLike, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[normal . u >= offset]`` and the in-cube distance to the other label (the in-distribution
    robustness for the identity generator on the cube)."""
    pts, n = _cube_points(u, normal)
    offset = _finite(offset, "offset")
    label = pts @ n >= offset
    to_upper = cube_distance_to_half_space(pts, n, offset)
    to_lower = cube_distance_to_half_space(pts, -n, -offset)
    return label.astype(int), np.where(label, to_lower, to_upper)


def cube_slab_robustness(u: ArrayLike, normal: ArrayLike, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1 inside the slab ``low <= normal . u <= high``, 0 outside) and the in-cube distance to the
    other label.  From inside, the other label is the union of two half-spaces (the nearer one counts); from
    outside it is the slab itself, whose nearest point lies on the crossed face."""
    pts, n = _cube_points(u, normal)
    low, high = _finite(low, "low"), _finite(high, "high")
    if not low < high:
        raise ValueError(f"need low < high; got low={low!r}, high={high!r}")
    s = pts @ n
    inside = (s >= low) & (s <= high)
    to_top = cube_distance_to_half_space(pts, n, high)  # to {s >= high}
    to_bottom = cube_distance_to_half_space(pts, -n, -low)  # to {s <= low}
    back_from_above = cube_distance_to_half_space(pts, -n, -high)  # to {s <= high}
    back_from_below = cube_distance_to_half_space(pts, n, low)  # to {s >= low}
    r = np.where(inside, np.minimum(to_top, to_bottom), np.where(s > high, back_from_above, back_from_below))
    return inside.astype(int), r


__all__ = [
    "GAUSSIAN_TO_CUBE_LIPSCHITZ",
    "gaussian_to_cube",
    "cube_modulus",
    "uniform_prior_probability_lower_bound",
    "uniform_prior_quantile_upper_bound",
    "uniform_prior_mean_upper_bound",
    "cube_distance_to_half_space",
    "cube_half_space_robustness",
    "cube_slab_robustness",
]
