"""Moduli of continuity (Assumption 1) and their generalised inverses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advbound.generators import TorusGenerator, TorusModulus
from advbound.modulus import (
    AffineModulus,
    EmpiricalModulus,
    IdentityModulus,
    LipschitzModulus,
    RescaledModulus,
    as_modulus,
)


@pytest.mark.parametrize("mod", [IdentityModulus(), LipschitzModulus(2.5), AffineModulus(0.3, 0.7),
                                 EmpiricalModulus([0, 0.5, 1, 2], [0.1, 0.6, 0.6, 1.4]), TorusModulus(1),
                                 TorusModulus(7)])
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


# ---------------------------------------------------------------- numbers as users give them

def test_moduli_accept_numpy_scalars_and_name_bad_types():
    assert LipschitzModulus(np.float32(3))(1.0) == 3.0
    assert as_modulus(np.float32(3)).lipschitz == 3.0
    assert as_modulus(np.int64(2)).lipschitz == 2.0
    assert AffineModulus(np.float64(0.5), np.int32(2), delta=np.float32(0.25)).delta == 0.25
    for bad in ("3", [3.0], np.array([1.0, 2.0]), True):
        with pytest.raises(TypeError, match="modulus"):
            as_modulus(bad)
    with pytest.raises(TypeError, match="lipschitz"):
        LipschitzModulus("3")
    with pytest.raises(TypeError, match="eta"):
        IdentityModulus().inverse("1.0")


# ---------------------------------------------------------------- least concave majorant

def _brute_majorant(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """At each grid radius, the largest value of any chord between two points that straddle it: the least
    concave majorant of finitely many points (in one dimension a point of their convex hull lies on a chord)."""
    out = v.copy()
    for k in range(r.size):
        for i in range(k + 1):
            for j in range(k, r.size):
                if i < j:
                    lam = (r[k] - r[i]) / (r[j] - r[i])
                    out[k] = max(out[k], (1 - lam) * v[i] + lam * v[j])
    return out


@pytest.mark.parametrize("seed", range(6))
def test_concave_majorant_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 25))
    radii = np.concatenate([[0.0], np.cumsum(rng.uniform(0.05, 1.0, m - 1))])
    values = np.cumsum(rng.exponential(1.0, m) * (rng.uniform(size=m) < 0.7))  # monotone, with flat pieces
    mod = EmpiricalModulus(radii, values)
    maj = mod.concave_majorant()
    # 1) it is the smallest concave majorant of the points: equal to the brute-force chord maximum
    np.testing.assert_allclose(maj.values, _brute_majorant(radii, values), rtol=1e-12, atol=1e-12)
    # 2) it majorises the piecewise-linear modulus everywhere on the measured range
    t = np.sort(np.concatenate([rng.uniform(0, radii[-1], 2000), radii]))
    assert np.all(maj(t) >= mod(t) - 1e-12)
    # 3) every chord of it lies on or under it (concavity), and it is monotone
    s, u, lam = rng.uniform(0, radii[-1], (3, 2000))
    lam = lam / radii[-1]
    assert np.all(maj(lam * s + (1 - lam) * u) >= lam * maj(s) + (1 - lam) * maj(u) - 1e-12)
    assert np.all(np.diff(maj.values) >= 0) and maj.is_concave
    assert maj.values[0] == values[0] and maj.values[-1] == values[-1]
    # a concave modulus is its own majorant
    np.testing.assert_allclose(maj.concave_majorant().values, maj.values, rtol=1e-13)


def test_concave_majorant_with_a_diameter_is_concave_on_the_whole_half_line():
    mod = EmpiricalModulus([0, 1, 2, 3], [0.1, 0.5, 2.0, 2.2])
    assert not mod.is_concave and not mod.is_finite
    maj = mod.concave_majorant()
    np.testing.assert_allclose(maj.values, [0.1, 1.05, 2.0, 2.2])  # the chord (0, .1) -> (2, 2) lifts t = 1
    assert maj.is_concave and not maj.is_finite and math.isinf(maj(3.5))
    full = mod.concave_majorant(diameter=4.0)
    # the last point is raised to the diameter: hull of (0, .1), (1, .5), (2, 2), (3, 4) is the chord (0, .1)-(3, 4)
    np.testing.assert_allclose(full.values, 0.1 + 1.3 * np.arange(4))
    assert full.is_concave and full.is_finite and full(100.0) == 4.0
    assert math.isinf(full.inverse(4.0)) and full.inverse(1.4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="diameter"):
        mod.concave_majorant(diameter=1.0)
    with pytest.raises(ValueError, match="ceiling"):
        EmpiricalModulus([0, 1], [0, 2], ceiling=1.0)


def test_rescaled_modulus_is_the_composition_with_a_lipschitz_map():
    base = AffineModulus(0.2, 3.0)
    mod = RescaledModulus(base, 0.5)
    t = np.array([0.0, 1.0, 2.5])
    np.testing.assert_allclose(mod(t), 0.2 + 1.5 * t)
    np.testing.assert_allclose(mod.inverse(0.2 + 1.5 * t), t)
    assert mod.is_concave and mod.is_finite and mod.delta == base.delta
    assert not RescaledModulus(EmpiricalModulus([0, 1, 2], [0, 1, 3]), 2.0).is_concave
    with pytest.raises(ValueError, match="scale"):
        RescaledModulus(base, 0.0)
    with pytest.raises(TypeError, match="base"):
        RescaledModulus(3.0, 1.0)
