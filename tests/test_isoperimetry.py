"""Gaussian isoperimetry: the six sets' distances and exact expansions, against brute force, numerical
integration and Monte Carlo; the inequality itself on their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from advbound.isoperimetry import (
    HALF_MEASURE_SETS,
    distances_to_sets,
    expansion_measure,
    expansion_monte_carlo,
    isoperimetric_bound,
    median_ball_radius,
)

EPS = np.linspace(0, 2, 41)


@pytest.mark.parametrize("d", [2, 5, 50])
def test_every_set_has_measure_one_half_and_respects_the_inequality(d):
    bound = isoperimetric_bound(0.5, EPS)
    for name in HALF_MEASURE_SETS:
        exact = expansion_measure(name, EPS, d)
        assert exact[0] == pytest.approx(0.5, abs=1e-12), name
        assert np.all(exact >= bound - 1e-12), name
        assert np.all(np.diff(exact) >= -1e-15), name
    np.testing.assert_allclose(expansion_measure("half-space", EPS, d), bound, rtol=1e-15)


def test_ball_in_the_plane_has_the_rayleigh_closed_form():
    r = median_ball_radius(2)
    assert r == pytest.approx(math.sqrt(2 * math.log(2)), rel=1e-12)  # 1 - exp(-R^2 / 2) = 1/2
    np.testing.assert_allclose(expansion_measure("ball", EPS, 2), 1 - np.exp(-(r + EPS) ** 2 / 2), rtol=1e-12)


def test_stripes_closed_form_against_numerical_integration():
    x = np.linspace(-12, 12, 2_400_001)
    h = x[1] - x[0]
    dist = distances_to_sets(np.column_stack([x, np.zeros_like(x)]))["stripes"]
    for eps in (0.0, 0.05, 0.1, 0.2, 0.25, 0.4):
        integral = np.sum(stats.norm.pdf(x) * (dist <= eps)) * h
        assert expansion_measure("stripes", eps, 2) == pytest.approx(integral, abs=2e-5), eps


def test_distances_against_a_dense_grid_of_each_set():
    axis = np.linspace(-4, 4, 801)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    members = {k: v == 0 for k, v in distances_to_sets(grid).items()}
    points = np.random.default_rng(0).uniform(-2, 2, (25, 2))
    exact = distances_to_sets(points)
    step = 8 / 800 * math.sqrt(2) / 2
    for name in HALF_MEASURE_SETS:
        pts = grid[members[name]]
        brute = np.array([np.min(np.linalg.norm(pts - p, axis=1)) for p in points])
        assert np.all(np.abs(brute - exact[name]) <= step + 1e-12), name


@pytest.mark.parametrize("d", [2, 10])
def test_monte_carlo_agrees_with_the_closed_forms(d):
    """40,000 samples: every estimate within 4 binomial standard errors (at most 0.0025) of its closed form."""
    est, se = expansion_monte_carlo(d, EPS, 40_000, np.random.default_rng(d), chunk=15_000)
    for name in HALF_MEASURE_SETS:
        exact = expansion_measure(name, EPS, d)
        assert np.all(np.abs(est[name] - exact) <= 4 * se[name] + 1e-12), name


def test_bad_inputs():
    with pytest.raises(KeyError, match="unknown set"):
        expansion_measure("torus", 0.1, 2)
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        distances_to_sets(np.zeros((3, 1)))
