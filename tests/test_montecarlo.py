"""Monte Carlo proportions and quadrature-weighted distributions against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbound.montecarlo import (
    binomial_standard_error,
    class_proportions,
    margin_in_standard_errors,
    probability_at_most,
    weighted_probability_at_most,
    weighted_quantile,
)


def test_probability_at_most_counts_and_standard_error():
    r = np.array([0.3, 0.1, np.inf, 0.2, 0.2])
    p, se = probability_at_most(torch.tensor(r), [0.0, 0.2, 1.0, np.inf])
    np.testing.assert_array_equal(p, [0.0, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(se, np.sqrt(p * (1 - p) / 5))
    np.testing.assert_allclose(binomial_standard_error(0.5, 100), 0.05)


def test_weighted_distribution_equals_the_repeated_sample():
    rng = np.random.default_rng(0)
    values = rng.normal(size=40).round(1)  # ties included
    counts = rng.integers(0, 6, size=40)
    sample = np.repeat(values, counts)
    eta = np.linspace(-3, 3, 61)
    np.testing.assert_allclose(weighted_probability_at_most(values, counts / counts.sum(), eta),
                               probability_at_most(sample, eta)[0], atol=1e-14)
    for q in (0.01, 0.25, 0.5, 0.9, 1.0):
        assert weighted_quantile(values, counts, q) == np.quantile(sample, q, method="inverted_cdf")


def test_weighted_and_class_proportion_errors():
    with pytest.raises(ValueError, match="same length"):
        weighted_quantile([1.0, 2.0], [1.0], 0.5)
    with pytest.raises(ValueError, match="weights"):
        weighted_probability_at_most([1.0], [-1.0], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        weighted_quantile([1.0], [1.0], 1.5)
    np.testing.assert_allclose(class_proportions(torch.tensor([0, 2, 2, 1]), 3), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="labels"):
        class_proportions([0, 3], 3)


def test_margin_in_standard_errors_handles_zero_standard_errors():
    got = margin_in_standard_errors([0.5, 1.0, 1.0, 0.2, 0.0], [0.4, 0.9, 1.0, 0.3, 0.1], [0.1, 0, 0, 0, 0])
    np.testing.assert_allclose(got, [1.0, np.inf, 0.0, -np.inf, -np.inf], rtol=1e-12)
