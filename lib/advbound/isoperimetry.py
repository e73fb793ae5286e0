"""Gaussian isoperimetry, the fact behind Theorem 1: among sets of Gaussian measure p, a half-space has the
smallest eps-expansion, nu(A_eps) >= Phi(Phi^{-1}(p) + eps) in every dimension (Borell 1975; Sudakov and
Tsirel'son 1978, the book's references).

Six sets of Gaussian measure exactly 1/2 in R^d, each with its distance function and the exact measure of
its expansion A_eps = {z : dist(z, A) <= eps}, so that the inequality can be checked by Monte Carlo
against closed forms:

==============  =============================================  =========================================
set             distance from z outside A                      nu(A_eps)
==============  =============================================  =========================================
half-space      z_1 (A = {z_1 <= 0})                           Phi(eps)
ball            ||z|| - R_d, R_d^2 the median of chi^2_d       F_{chi^2_d}((R_d + eps)^2)
outside ball    R_d - ||z||                                    1 - F_{chi^2_d}((R_d - eps)_+^2)
slab            |z_1| - s, s = Phi^{-1}(3/4)                   2 Phi(s + eps) - 1
quadrants       min(|z_1|, |z_2|) (A = {z_1 z_2 >= 0})         1 - 2 Phi(-eps)^2
stripes         to the nearest stripe [2kw, (2k+1)w) of z_1    1/2 + the eps-margins of every gap
==============  =============================================  =========================================

(quadrants: the complement of A_eps is {z_1 z_2 < 0, min(|z_1|, |z_2|) > eps}, of measure 2 Phi(-eps)^2;
stripes: the gaps ((2k+1)w, (2k+2)w) are covered from both ends, fully once eps >= w/2.)
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from .montecarlo import binomial_standard_error, probability_at_most

#: the six sets, each of Gaussian measure 1/2
HALF_MEASURE_SETS = ("half-space", "ball", "outside ball", "slab", "quadrants", "stripes")
SLAB_HALF_WIDTH = float(special.ndtri(0.75))
STRIPE_WIDTH = 0.5


def isoperimetric_bound(p: float, eps: np.ndarray | float) -> np.ndarray:
    """Phi(Phi^{-1}(p) + eps): the smallest Gaussian measure of the eps-expansion of a set of measure p."""
    return special.ndtr(special.ndtri(p) + np.asarray(eps, dtype=float))


def median_ball_radius(d: int) -> float:
    """R_d with P(||z|| <= R_d) = 1/2 for z ~ N(0, I_d): the square root of the median of chi^2_d."""
    return float(np.sqrt(stats.chi2.ppf(0.5, d)))


def distances_to_sets(z: np.ndarray) -> dict[str, np.ndarray]:
    """Distance from each row of z (n, d), d >= 2, to each of the six sets (0 inside the set)."""
    z = np.atleast_2d(np.asarray(z, dtype=float))
    if z.shape[1] < 2:
        raise ValueError(f"z must have at least 2 coordinates (the quadrants use two); got shape {z.shape}")
    norm = np.linalg.norm(z, axis=1)
    z1, z2 = z[:, 0], z[:, 1]
    r = median_ball_radius(z.shape[1])
    u = np.mod(z1, 2 * STRIPE_WIDTH)  # stripes: [2kw, (2k+1)w) belong to A
    return {
        "half-space": np.maximum(z1, 0.0),
        "ball": np.maximum(norm - r, 0.0),
        "outside ball": np.maximum(r - norm, 0.0),
        "slab": np.maximum(np.abs(z1) - SLAB_HALF_WIDTH, 0.0),
        "quadrants": np.where(z1 * z2 >= 0, 0.0, np.minimum(np.abs(z1), np.abs(z2))),
        "stripes": np.where(u < STRIPE_WIDTH, 0.0, np.minimum(u - STRIPE_WIDTH, 2 * STRIPE_WIDTH - u)),
    }


def expansion_measure(name: str, eps: np.ndarray | float, d: int) -> np.ndarray:
    """nu(A_eps) in closed form for the set ``name`` of :data:`HALF_MEASURE_SETS` in dimension d."""
    eps = np.asarray(eps, dtype=float)
    phi = special.ndtr
    if name == "half-space":
        return phi(eps)
    if name == "ball":
        return stats.chi2.cdf((median_ball_radius(d) + eps) ** 2, d)
    if name == "outside ball":
        return 1.0 - stats.chi2.cdf(np.maximum(median_ball_radius(d) - eps, 0.0) ** 2, d)
    if name == "slab":
        return 2 * phi(SLAB_HALF_WIDTH + eps) - 1
    if name == "quadrants":
        return 1 - 2 * phi(-eps) ** 2
    if name == "stripes":  # A plus, in each gap [(2k+1)w, (2k+2)w], the eps-margins at both ends
        w = STRIPE_WIDTH
        k = np.arange(-40, 40).reshape((-1,) + (1,) * eps.ndim)  # |z_1| <= 40 w carries all the mass
        lo, hi = (2 * k + 1) * w, (2 * k + 2) * w
        e = np.minimum(eps, w / 2)
        return 0.5 + np.sum(phi(lo + e) - phi(lo) + phi(hi) - phi(hi - e), axis=0)
    raise KeyError(f"unknown set {name!r}; the sets are {HALF_MEASURE_SETS}")


def expansion_monte_carlo(d: int, eps: np.ndarray, n: int, rng: np.random.Generator,
                          chunk: int = 100_000) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Monte Carlo estimates of nu(A_eps) for the six sets, from n samples z ~ N(0, I_d) drawn in chunks,
    with their binomial standard errors: ({name: estimate}, {name: standard error})."""
    eps = np.atleast_1d(np.asarray(eps, dtype=float))
    total = {name: np.zeros(eps.size) for name in HALF_MEASURE_SETS}
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        for name, dist in distances_to_sets(rng.standard_normal((m, d))).items():
            total[name] += probability_at_most(dist, eps)[0] * m
    est = {name: t / n for name, t in total.items()}
    return est, {name: binomial_standard_error(p, n) for name, p in est.items()}


__all__ = ["HALF_MEASURE_SETS", "SLAB_HALF_WIDTH", "STRIPE_WIDTH", "isoperimetric_bound", "median_ball_radius",
           "distances_to_sets", "expansion_measure", "expansion_monte_carlo"]
