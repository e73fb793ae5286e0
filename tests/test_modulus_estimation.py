"""Modulus estimation (our design for the paper's C.2) on generators whose modulus is known exactly."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from advbound.bounds import robustness_quantile_bound
from advbound.modulus import EmpiricalModulus
from advbound.modulus_estimation import default_radii, estimate_modulus, local_increments, order_statistic_rank


class LinearGenerator(nn.Module):
    """g(z) = A z: sup_{||u|| <= t} ||g(z + u) - g(z)|| = sigma_max(A) t for every z."""

    def __init__(self, d=6, m=10, seed=0):
        super().__init__()
        self.latent_dim = d
        gen = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(m, d, generator=gen), requires_grad=False)

    def forward(self, z):
        return z @ self.A.T


class TanhGenerator(LinearGenerator):
    """A nonlinear g with Lipschitz constant <= sigma_max(A)."""

    def forward(self, z):
        return torch.tanh(z @ self.A.T)


def test_ascent_finds_the_linear_supremum_random_directions_do_not():
    g = LinearGenerator()
    sigma = float(torch.linalg.matrix_norm(g.A, ord=2))
    z = torch.randn(16, 6)
    found = local_increments(g, z, 0.5, restarts=2, steps=40)
    assert float(found.max()) <= sigma * 0.5 * (1 + 1e-5)
    assert float(found.min()) >= 0.99 * sigma * 0.5
    random_only = local_increments(g, z, 0.5, restarts=2, steps=0)
    assert float(random_only.mean()) < 0.95 * sigma * 0.5


def test_estimate_is_monotone_carries_delta_and_respects_lipschitz():
    g = TanhGenerator()
    sigma = float(torch.linalg.matrix_norm(g.A, ord=2))
    radii = default_radii(6, t_max=1.0)
    est = estimate_modulus(g, radii=radii, n_samples=40, delta=0.1, restarts=2, steps=5, seed=1)
    assert isinstance(est.modulus, EmpiricalModulus) and est.modulus.delta == 0.1
    assert np.all(np.diff(est.modulus.values) >= 0) and est.modulus.values[0] == 0
    assert np.all(est.modulus.values <= sigma * radii * (1 + 1e-5))
    assert est.increments.shape == (6, 40)
    # delta enters the bound: solved at q + delta, so a larger delta gives a larger (weaker) bound
    b = robustness_quantile_bound(0.25, n_classes=10, modulus=est.modulus)
    b0 = robustness_quantile_bound(0.25, n_classes=10, modulus=est.modulus, delta=0.0)
    assert b > b0 > 0
    assert est.to_dict()["delta"] == 0.1


def test_order_statistic_rank_has_the_stated_coverage():
    n, delta, conf = 300, 0.05, 0.9
    k = order_statistic_rank(n, delta, conf)
    assert stats.binom.sf(k - 1, n, 1 - delta) <= 1 - conf < stats.binom.sf(k - 2, n, 1 - delta)
    # Monte Carlo: the k-th order statistic of uniforms exceeds the (1 - delta) quantile often enough
    rng = np.random.default_rng(0)
    kth = np.sort(rng.random((4000, n)), axis=1)[:, k - 1]
    assert np.mean(kth >= 1 - delta) >= conf - 0.02
    # Bonferroni over more radii asks for a higher rank; too few samples is refused
    assert order_statistic_rank(n, delta, conf, n_tests=10) >= k
    with pytest.raises(ValueError, match="too small"):
        order_statistic_rank(10, 0.05, 0.95)


def test_confidence_mode_uses_the_order_statistic():
    g = TanhGenerator()
    est = estimate_modulus(g, radii=[0.0, 0.2, 0.4], n_samples=100, delta=0.1, confidence=0.8, restarts=1,
                           steps=2)
    assert est.rank == order_statistic_rank(100, 0.1, 0.8, n_tests=2)
    np.testing.assert_allclose(est.raw[1:], np.sort(est.increments, axis=1)[1:, est.rank - 1])


@pytest.mark.parametrize("kwargs,match", [
    ({"radii": [0.1, 0.2]}, "radii"),
    ({"radii": [0.0, 0.2, 0.1]}, "radii"),
    ({"delta": 0.0}, "delta"),
    ({"n_samples": 0}, "n_samples"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_modulus(LinearGenerator(), **kwargs)
    with pytest.raises(ValueError, match="n_radii"):
        default_radii(1)
    with pytest.raises(ValueError, match="radius"):
        local_increments(LinearGenerator(), torch.zeros(2, 6), -1.0)
    assert math.isclose(float(local_increments(LinearGenerator(), torch.zeros(2, 6), 0.0).sum()), 0.0)


@pytest.mark.parametrize("latent_dim", ["<absent>", 0, 2.5, True])
def test_generator_needs_an_integer_latent_dim(latent_dim):
    generator = LinearGenerator()
    if latent_dim == "<absent>":
        del generator.latent_dim
    else:
        generator.latent_dim = latent_dim
    with pytest.raises(ValueError, match=r"generator must have an integer attribute latent_dim >= 1"):
        estimate_modulus(generator, n_samples=2)


def test_bonferroni_runs_over_the_positive_radii():
    """At t_0 = 0 the increment is exactly 0 and nothing is estimated, so the union bound runs over the
    m = len(radii) - 1 positive radii: the rank is the smallest k with P(Binomial(n, 1 - delta) >= k) <=
    (1 - c) / m, computed here by an exact binomial sum in rationals.  For these n, delta, c, counting t_0
    too (m + 1 tests) would give another rank, so the test tells the two apart."""
    from fractions import Fraction

    def rank(n, delta, level):
        p = 1 - delta
        for k in range(1, n + 1):
            if sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1)) <= level:
                return k

    radii, n = [0.0, 0.1, 0.2, 0.3], 60
    m = len(radii) - 1
    expected = rank(n, Fraction(1, 10), Fraction(2, 10) / m)
    assert (expected, rank(n, Fraction(1, 10), Fraction(2, 10) / (m + 1))) == (58, 59)
    est = estimate_modulus(TanhGenerator(), radii=radii, n_samples=n, delta=0.1, confidence=0.8, restarts=1, steps=1)
    assert est.rank == expected
