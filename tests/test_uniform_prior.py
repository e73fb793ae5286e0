"""Footnote 2: the bounds for the uniform prior on [-1, 1]^d, checked against closed forms, brute-force
distances and Monte Carlo on half-spaces and slabs of the cube."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from advbound import bounds as B
from advbound.modulus import LipschitzModulus
from advbound.uniform_prior import (
    GAUSSIAN_TO_CUBE_LIPSCHITZ,
    cube_distance_to_half_space,
    cube_half_space_robustness,
    cube_slab_robustness,
    gaussian_to_cube,
    uniform_prior_mean_upper_bound,
    uniform_prior_probability_lower_bound,
    uniform_prior_quantile_upper_bound,
)

C = math.sqrt(2 / math.pi)


def test_transport_map_pushes_the_gaussian_to_the_cube_and_is_sqrt_2_over_pi_lipschitz():
    assert GAUSSIAN_TO_CUBE_LIPSCHITZ == pytest.approx(0.7978845608028654, rel=1e-15)
    s = np.linspace(-0.999, 0.999, 201)  # P(T(z) <= s) = (1 + s) / 2: T maps the (1+s)/2 quantile to s
    np.testing.assert_allclose(gaussian_to_cube(stats.norm.ppf((1 + s) / 2)), s, atol=1e-14)
    rng = np.random.default_rng(0)
    z, w = rng.standard_normal((2, 20_000, 3))
    ratio = np.linalg.norm(gaussian_to_cube(z) - gaussian_to_cube(w), axis=1) / np.linalg.norm(z - w, axis=1)
    assert ratio.max() <= C
    near = 1e-6 * rng.standard_normal((1, 3))  # attained near the origin
    assert np.linalg.norm(gaussian_to_cube(near)) / np.linalg.norm(near) == pytest.approx(C, rel=1e-9)


def test_bound_is_eq2_at_the_rescaled_radius():
    eta = np.linspace(0, 2, 21)
    np.testing.assert_allclose(uniform_prior_probability_lower_bound(eta, n_classes=2),
                               2 * stats.norm.cdf(math.sqrt(math.pi / 2) * eta) - 1, atol=1e-15)
    lip = LipschitzModulus(3.0)
    np.testing.assert_allclose(uniform_prior_probability_lower_bound(eta, class_probs=[0.2, 0.8], modulus=lip),
                               B.latent_probability_lower_bound(eta / 3 / C, class_probs=[0.2, 0.8]), rtol=1e-14)
    for q in (0.25, 0.5):
        e = uniform_prior_quantile_upper_bound(q, n_classes=10, modulus=lip)
        assert e == pytest.approx(3 * C * B.latent_quantile_upper_bound(q, n_classes=10), rel=1e-14)
        assert uniform_prior_probability_lower_bound(e, n_classes=10, modulus=lip) == pytest.approx(q, abs=1e-12)
    # Theorem 4: omega_u(c s)
    assert uniform_prior_mean_upper_bound(n_classes=2) == pytest.approx(C * 2 * stats.norm.pdf(0), rel=1e-14)


def _grid_distance(u: np.ndarray, grid: np.ndarray, member: np.ndarray) -> np.ndarray:
    pts = grid[member]
    return np.array([np.min(np.linalg.norm(pts - x, axis=1)) for x in u])


@pytest.mark.parametrize("d, n_grid", [(2, 801), (3, 97)])
def test_cube_distance_to_half_space_against_a_dense_grid(d, n_grid):
    rng = np.random.default_rng(d)
    axes = np.linspace(-1, 1, n_grid)
    grid = np.stack(np.meshgrid(*[axes] * d), axis=-1).reshape(-1, d)
    # from any point v of the set, the corner of its grid cell in the direction sign(normal) is in the set
    step = 2 / (n_grid - 1) * math.sqrt(d)
    for normal, offset in ((rng.standard_normal(d), 0.7), (np.eye(d)[0], -0.2), (np.ones(d), d - 0.5)):
        u = rng.uniform(-1, 1, (40, d))
        got = cube_distance_to_half_space(u, normal, offset)
        brute = _grid_distance(u, grid, grid @ normal >= offset)
        assert np.all(got <= brute + 1e-12)  # exact distance <= distance to any grid point of the set
        assert np.all(brute - got <= step + 1e-12)
        # it is larger than the distance to the hyperplane when the cube gets in the way
        plane = np.maximum(offset - u @ normal, 0) / np.linalg.norm(normal)
        assert np.all(got >= plane - 1e-12)
    assert np.isinf(cube_distance_to_half_space(np.zeros((1, d)), np.ones(d), d + 0.1)).all()


def test_slab_robustness_closed_form_on_an_axis_and_labels():
    u = np.random.default_rng(3).uniform(-1, 1, (1000, 3))
    label, r = cube_slab_robustness(u, [1.0, 0, 0], -0.5, 0.5)
    np.testing.assert_array_equal(label, np.abs(u[:, 0]) <= 0.5)
    np.testing.assert_allclose(r, np.abs(np.abs(u[:, 0]) - 0.5), atol=1e-15)
    label, r = cube_half_space_robustness(u, [0, 2.0, 0], 0.6)  # 2 u_2 >= 0.6
    np.testing.assert_array_equal(label, u[:, 1] >= 0.3)
    np.testing.assert_allclose(r, np.abs(u[:, 1] - 0.3), atol=1e-15)
    with pytest.raises(ValueError, match="cube"):
        cube_slab_robustness(u * 2, [1.0, 0, 0], -0.5, 0.5)
    with pytest.raises(ValueError, match="low < high"):
        cube_slab_robustness(u, [1.0, 0, 0], 0.5, -0.5)


N_MC, D = 60_000, 4
ETA = np.linspace(0.05, 1.0, 20)
DIAG = np.ones(D) / math.sqrt(D)
CASES = {  # name: (robustness function, exact class probabilities or None for the Monte Carlo estimate)
    "half-cube u1 >= 0": (lambda u: cube_half_space_robustness(u, np.eye(D)[0], 0.0), [0.5, 0.5]),
    "u1 >= 0.5": (lambda u: cube_half_space_robustness(u, np.eye(D)[0], 0.5), [0.75, 0.25]),
    "diagonal half-space": (lambda u: cube_half_space_robustness(u, DIAG, 0.0), [0.5, 0.5]),
    "slab |u1| <= 1/2": (lambda u: cube_slab_robustness(u, np.eye(D)[0], -0.5, 0.5), [0.5, 0.5]),
    "diagonal slab": (lambda u: cube_slab_robustness(u, DIAG, -0.4, 0.4), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_monte_carlo_never_falls_below_the_uniform_prior_bound(name):
    """P(r_in <= eta) on the cube (identity generator, u uniform), 60,000 samples: the estimate minus the
    bound, in binomial standard errors sqrt(p (1 - p) / n) (at most 0.0021), must exceed -4 at every eta."""
    fn, probs = CASES[name]
    u = np.random.default_rng(7).uniform(-1, 1, (N_MC, D))
    label, r = fn(u)
    if probs is None:
        probs = np.bincount(label, minlength=2) / N_MC
    est = (r[None, :] <= ETA[:, None]).mean(axis=1)
    se = np.sqrt(np.maximum(est * (1 - est), 1e-12) / N_MC)
    bound = uniform_prior_probability_lower_bound(ETA, class_probs=probs)
    assert np.all((est - bound) / se > -4), (name, np.min((est - bound) / se))


def test_the_half_cube_nearly_attains_the_bound_for_small_eta():
    """For the half-cube, P(r <= eta) = eta exactly; the bound 2 Phi(sqrt(pi/2) eta) - 1 agrees to first
    order: the gap is below 0.005 up to eta = 0.25 and grows to 0.21 at eta = 1."""
    eta = np.linspace(0, 1, 101)
    gap = eta - uniform_prior_probability_lower_bound(eta, n_classes=2)
    assert np.all(gap >= 0)
    assert gap[eta <= 0.25].max() < 0.005
    assert gap[-1] == pytest.approx(1 - (2 * stats.norm.cdf(math.sqrt(math.pi / 2)) - 1), rel=1e-12)
