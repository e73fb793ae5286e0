"""Moduli of continuity (Assumption 1) and their generalised inverses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advbound.generators import TorusGenerator, TorusModulus
from advbound.modulus import AffineModulus, EmpiricalModulus, IdentityModulus, LipschitzModulus, as_modulus


@pytest.mark.parametrize("mod", [IdentityModulus(), LipschitzModulus(2.5), AffineModulus(0.3, 0.7),
                                 EmpiricalModulus([0, 0.5, 1, 2], [0.1, 0.6, 0.6, 1.4]), TorusModulus(1), TorusModulus(7)])
def test_inverse_is_the_largest_certified_radius(mod):
    """omega(omega^{-1}(eta)) <= eta wherever something is certified, and omega^{-1} is non-decreasing."""
    eta = np.linspace(0, 3, 301)
    inv = mod.inverse(eta)
    assert np.all(inv[1:] >= inv[:-1])
    finite = np.isfinite(inv) & (inv > 0)
    assert np.all(mod(inv[finite]) <= eta[finite] + 1e-12)
    # slightly larger radii are not certified
    bigger = inv[finite] * (1 + 1e-6) + 1e-9
    assert np.all(mod(bigger) > eta[finite] - 1e-12)


def test_affine_modulus_below_offset_certifies_nothing():
    mod = AffineModulus(0.5, 2.0)
    assert mod.inverse(0.4) == 0.0
    assert mod.inverse(0.5) == 0.0
    assert mod.inverse(1.5) == pytest.approx(0.5)
    assert mod(0.0) == 0.5


def test_empirical_modulus_interpolates_and_stops_at_its_grid():
    mod = EmpiricalModulus([0, 1, 2], [0, 2, 3])
    assert mod(0.5) == pytest.approx(1.0)
    assert mod(1.5) == pytest.approx(2.5)
    assert math.isinf(mod(2.5))
    assert mod.inverse(2.5) == pytest.approx(1.5)
    assert mod.inverse(10.0) == 2.0  # never beyond the last measured radius
    assert mod.is_concave and not EmpiricalModulus([0, 1, 2], [0, 1, 3]).is_concave
    flat = EmpiricalModulus([0, 1, 2, 3], [0, 1, 1, 2])
    assert flat.inverse(1.0) == 2.0  # the supremum jumps over a flat piece


def test_empirical_modulus_from_estimates_takes_running_max():
    mod = EmpiricalModulus.from_estimates([0, 1, 2, 3], [0.0, 1.0, 0.8, 2.0], delta=0.01)
    np.testing.assert_array_equal(mod.values, [0, 1, 1, 2])
    assert mod.delta == 0.01


@pytest.mark.parametrize("radii, values, match", [
    ([0, 1, 2], [0, 2, 1], "non-decreasing"),
    ([0.1, 1], [0, 1], "start at 0"),
    ([0, 1, 1], [0, 1, 2], "strictly increasing"),
    ([0], [0], "at least 2"),
    ([0, 1], [0, -1], ">= 0"),
    ([0, 1, 2], [0, 1], "same length"),
])
def test_empirical_modulus_rejects_bad_input(radii, values, match):
    with pytest.raises(ValueError, match=match):
        EmpiricalModulus(radii, values)


def test_bad_moduli_parameters():
    with pytest.raises(ValueError, match="lipschitz"):
        LipschitzModulus(0.0)
    with pytest.raises(ValueError, match="offset"):
        AffineModulus(-1.0, 1.0)
    with pytest.raises(ValueError, match="delta"):
        LipschitzModulus(1.0, delta=1.0)
    with pytest.raises(ValueError, match="t \\(latent radius\\) must be >= 0"):
        IdentityModulus()(-1.0)
    with pytest.raises(ValueError, match="eta"):
        IdentityModulus().inverse(-1.0)
    with pytest.raises(TypeError):
        as_modulus("fast")
    assert isinstance(as_modulus(2.0), LipschitzModulus)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_torus_modulus_is_the_exact_supremum(d):
    """Brute force: the largest ||g(z + u) - g(z)|| over many directions u with ||u|| = t never exceeds
    omega(t), and the equal split u_k = t / sqrt(d) attains it."""
    g = TorusGenerator(d)
    gen = torch.Generator().manual_seed(d)
    for t in (0.05, 0.2, 0.5 * math.sqrt(d) * 0.9, 2.0):
        u = torch.randn(20_000, d, generator=gen, dtype=torch.float64)
        u = t * u / u.norm(dim=1, keepdim=True)
        z = torch.rand(20_000, d, generator=gen, dtype=torch.float64)
        dist = (g(z + u) - g(z)).norm(dim=1).max().item()
        assert dist <= g.modulus(t) + 1e-9
        eq = torch.full((1, d), t / math.sqrt(d), dtype=torch.float64)
        attained = (g(eq) - g(torch.zeros(1, d, dtype=torch.float64))).norm().item()
        assert attained == pytest.approx(min(g.modulus(t), 2 * math.sqrt(d)), rel=1e-12) or t / math.sqrt(d) > 0.5
