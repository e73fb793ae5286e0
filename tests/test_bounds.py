"""Theorem 1 (eqs. (2)-(4)), its inversion, Theorems 3 and 4, checked against independent references:
the paper's own numbers, mpmath at 50 digits, numerical integration and closed forms."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate, optimize, stats

import advbound
from advbound import bounds as B
from advbound.modulus import AffineModulus, EmpiricalModulus, LipschitzModulus, ModulusNotConcaveError

# ---------------------------------------------------------------- the paper's numbers

def test_table_check_value_latent_space():
    """Tables 1 and 2: d = 100, K = 10 equiprobable, omega = identity, q = 0.25 -> 16e-3 / 0.016."""
    eta = B.robustness_quantile_bound(0.25, n_classes=10)
    normalized = eta / B.expected_latent_norm(100)
    assert f"{normalized:.3g}" == "0.0158"
    assert f"{eta:.3g}" == "0.158"


def test_remark1_eta_2L_gives_probability_above_0_8():
    """Remark 1: with omega(t) = L t and eta = 2 L, eq. (3) exceeds 0.8."""
    for lip in (0.5, 1.0, 7.0):
        assert B.balanced_bound(2 * lip, LipschitzModulus(lip)) > 0.8


def test_expected_latent_norm_closed_forms_and_monte_carlo():
    assert B.expected_latent_norm(1) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-13)
    assert B.expected_latent_norm(2) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-13)
    assert B.expected_latent_norm(3) == pytest.approx(2 * math.sqrt(2 / math.pi), rel=1e-13)
    for d in (10, 100, 10_000):
        val = B.expected_latent_norm(d)
        assert math.sqrt(d - 1) <= val <= math.sqrt(d)  # Remark 1's bracket
    rng = np.random.default_rng(0)
    norms = np.linalg.norm(rng.standard_normal((200_000, 100)), axis=1)
    se = norms.std() / math.sqrt(norms.size)
    assert abs(norms.mean() - B.expected_latent_norm(100)) < 4 * se


# ---------------------------------------------------------------- eq. (2) against high precision

def _mp_bound(t: float, probs: list[str]) -> mp.mpf:
    """eq. (2) at 50 digits, from probabilities given as decimal strings (exactly summing to 1)."""
    with mp.workdps(50):
        total = mp.mpf(0)
        ps = [mp.mpf(p) for p in probs]
        for p in ps:
            if p == 0:
                continue
            a = mp.sqrt(2) * mp.erfinv(2 * (1 - p) - 1)  # Phi^{-1}(1 - p)
            total += mp.ncdf(a + t) - mp.ncdf(a)
        return total


@pytest.mark.parametrize("probs", [
    ["1e-12", "0.999999999999"],
    ["1e-12", "1e-9", "0.499999998999", "0.5"],
    ["0.1"] * 10,
    ["0.000001", "0.2", "0.3", "0.499999"],
    ["1e-12", "1e-12", "0.999999999998"],
])
@pytest.mark.parametrize("t", [1e-6, 1e-3, 0.05, 0.5, 2.0, 8.0])
def test_latent_bound_matches_mpmath(probs, t):
    got = B.latent_bound(t, class_probs=[float(p) for p in probs])
    ref = float(_mp_bound(t, probs))
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_latent_bound_tiny_class_term_is_accurate():
    """A class of probability 1e-12: the naive difference of cdfs near 1 loses most of its digits."""
    p = [1e-12, 1 - 1e-12]
    t = 1e-3
    with mp.workdps(50):
        a = mp.sqrt(2) * mp.erfinv(1 - 2 * mp.mpf("1e-12"))
        small_term = float(mp.ncdf(a + t) - mp.ncdf(a))
    naive = stats.norm.cdf(stats.norm.ppf(1 - 1e-12) + t) - stats.norm.cdf(stats.norm.ppf(1 - 1e-12))
    assert abs(naive - small_term) / small_term > 1e-4  # the naive formula is visibly wrong here
    ours = B.latent_bound(t, class_probs=p) - B.latent_bound(t, class_probs=p[::-1])
    assert abs(ours) < 1e-25  # the class order does not matter
    total = B.latent_bound(t, class_probs=p)
    assert total == pytest.approx(float(_mp_bound(t, ["1e-12", "0.999999999999"])), rel=1e-10)


def test_quantile_inversion_matches_mpmath_root():
    probs = ["0.05", "0.15", "0.3", "0.5"]
    for q in (0.01, 0.25, 0.5, 0.9):
        t = B.latent_radius_quantile(q, class_probs=[float(p) for p in probs])
        with mp.workdps(30):
            root = mp.findroot(lambda s, q=q: _mp_bound(s, probs) - q, t)
        assert t == pytest.approx(float(root), rel=1e-10)


# ---------------------------------------------------------------- tiny and subnormal class probabilities (issue 20)

def _mp_bisect(f, lo: float, hi: float, halvings: int = 110) -> mp.mpf:
    """The root of an increasing function ``f`` in [lo, hi] by bisection in mpmath (110 halvings of a
    bracket of width 120 leave 1e-31)."""
    lo, hi = mp.mpf(lo), mp.mpf(hi)
    assert f(lo) < 0 < f(hi)
    for _ in range(halvings):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def _mp_phi_inv(p: mp.mpf) -> mp.mpf:
    """Phi^{-1}(p) for any p in (0, 1), tiny ones included, from the cdf's logarithm (no 1 - p formed)."""
    return _mp_bisect(lambda t: mp.log(mp.ncdf(t)) - mp.log(p), -60, 60)


def _mp_tails(probs: list) -> list[tuple[mp.mpf, mp.mpf, bool]]:
    """Per class, in mpmath: a_i = Phi^{-1}(1 - p_i), the smaller tail mass min(p_i, 1 - p_i) and whether it is
    the upper one (p_i <= 1 - p_i, 1 - p_i taken as the others' sum); the smaller tail is always given
    exactly, so no 1 - (1 - tiny) is ever formed."""
    ps = [mp.mpf(p) for p in probs]
    out = []
    for i, p in enumerate(ps):
        comp = mp.fsum(ps[:i] + ps[i + 1:])
        if p == 0 or comp == 0:
            continue
        out.append((-_mp_phi_inv(p), p, True) if p <= comp else (_mp_phi_inv(comp), comp, False))
    return out


def _mp_eq2(t: float, probs: list, tails: list | None = None) -> mp.mpf:
    """Eq. (2) in mpmath: sum_i Phi(a_i + t) - Phi(a_i), written as p_i - (1 - Phi(a_i + t)) for an upper tail
    and Phi(a_i + t) - (1 - p_i) for a lower one."""
    with mp.workdps(40):
        return mp.fsum(tail - mp.ncdf(-(a + t)) if upper else mp.ncdf(a + t) - tail
                       for a, tail, upper in (tails or _mp_tails(probs)))


def _mp_quantile(q: float, probs: list) -> float:
    """The smallest t with eq. (2) >= q, in mpmath."""
    with mp.workdps(40):
        tails = _mp_tails(probs)
        return float(_mp_bisect(lambda t: _mp_eq2(t, probs, tails) - q, 0, 60, halvings=60))


SUBNORMAL = [1e-300, 1e-308, 2.2250738585072014e-308, 1e-310, 1e-320, 5e-324]


@pytest.mark.parametrize("tiny", SUBNORMAL)
def test_quantile_with_a_subnormal_class_matches_mpmath(tiny):
    probs = [tiny, 1.0 - tiny]  # 1 - tiny == 1.0 in float64: the complement is the tiny class alone
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        got = B.quantile_upper_bound(0.25, probs)
    assert got == pytest.approx(_mp_quantile(0.25, probs), rel=1e-10)


@pytest.mark.parametrize("t", [0.5, 5.0, 31.5, 38.0, 45.0])
@pytest.mark.parametrize("tiny", [1e-305, 1e-310, 1e-320])
def test_probability_bound_with_tiny_classes_matches_mpmath(t, tiny):
    """A class of probability 0, one of a tiny probability, and one whose complement is that tiny mass."""
    probs = [tiny, 0.0, 1.0 - tiny]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = B.latent_probability_lower_bound(t, probs)
    assert got == pytest.approx(float(_mp_eq2(t, probs)), rel=1e-12, abs=1e-300)


def test_mean_bound_with_a_subnormal_class_is_the_expectation_of_the_positive_part():
    """E(Z - a)^+ summed over classes, in mpmath: phi(a) - a (1 - Phi(a))."""
    probs = [5e-324, 1.0]
    with mp.workdps(40):
        ref = mp.fsum(mp.npdf(a) - a * (tail if upper else 1 - tail) for a, tail, upper in _mp_tails(probs))
    assert B.latent_mean_upper_bound(probs) == pytest.approx(float(ref), rel=1e-12)


# ---------------------------------------------------------------- structure of eq. (2)

def test_latent_bound_edge_cases():
    assert B.latent_bound(3.0, n_classes=1) == 0.0
    assert B.latent_bound(0.0, n_classes=7) == 0.0
    with_zero = B.latent_bound([0.3, 1.0], class_probs=[0.0, 0.25, 0.75])
    without = B.latent_bound([0.3, 1.0], class_probs=[0.25, 0.75])
    np.testing.assert_allclose(with_zero, without, rtol=1e-15)
    assert B.latent_bound(40.0, n_classes=10) == pytest.approx(1.0, abs=1e-15)
    assert math.isinf(B.latent_radius_quantile(0.5, n_classes=1))
    assert math.isinf(B.robustness_quantile_bound(0.5, n_classes=1))


def test_latent_bound_is_monotone_in_t_and_in_K():
    t = np.linspace(0, 4, 81)
    prev = None
    for k in (2, 3, 5, 10, 100, 1000):
        b = B.latent_bound(t, n_classes=k)
        assert np.all(np.diff(b) >= -1e-15)
        if prev is not None:  # Remark 2: more classes, larger probability of being fooled
            assert np.all(b >= prev - 1e-15)
        prev = b


def test_eq2_for_two_balanced_classes_is_2_Phi_t_minus_1():
    """Remark 4's computation: P(r <= eta) = 2 (Phi(t) - Phi(0))."""
    t = np.linspace(0, 3, 13)
    np.testing.assert_allclose(B.latent_bound(t, n_classes=2), 2 * (stats.norm.cdf(t) - 0.5), atol=1e-15)


@pytest.mark.parametrize("modulus", [None, LipschitzModulus(3.0), AffineModulus(0.2, 2.0)])
def test_eq3_and_eq4_never_exceed_eq2(modulus):
    rng = np.random.default_rng(1)
    eta = np.linspace(0, 12, 241)
    for k in (2, 3, 4, 5, 6, 10, 30, 100, 1000, 10_000):
        eq2 = B.theorem1_bound(eta, n_classes=k, modulus=modulus)
        assert np.all(B.balanced_bound(eta, modulus) <= eq2 + 1e-12), k
        if k >= 5:
            assert np.all(B.equiprobable_bound(eta, k, modulus) <= eq2 + 1e-12), k
    for _ in range(200):  # unbalanced classes, each p_i <= 1/2 (eq. (3)'s hypothesis)
        k = int(rng.integers(2, 12))
        p = rng.dirichlet(np.full(k, 0.5))
        if p.max() > 0.5:
            continue
        eq2 = B.theorem1_bound(eta, class_probs=p, modulus=modulus)
        assert np.all(B.balanced_bound(eta, modulus) <= eq2 + 1e-12)


def test_eq4_uses_the_latent_radius_in_both_exponents():
    """With omega(t) = L t, eq. (4)'s second exponent is -t sqrt(...) with t = eta / L (documented fix)."""
    lip, k, eta = 4.0, 10, 6.0
    t = eta / lip
    rate = math.sqrt(math.log(k * k / (4 * math.pi * math.log(k))))
    expected = 1 - math.sqrt(math.pi / 2) * math.exp(-t * t / 2) * math.exp(-t * rate)
    assert B.equiprobable_bound(eta, k, LipschitzModulus(lip)) == pytest.approx(expected, rel=1e-14)


# ---------------------------------------------------------------- inversion with moduli and delta

def test_quantile_bound_maps_latent_root_through_the_modulus():
    t = B.latent_radius_quantile(0.25, n_classes=10)
    assert B.latent_bound(t, n_classes=10) == pytest.approx(0.25, abs=1e-12)
    assert B.robustness_quantile_bound(0.25, n_classes=10, modulus=LipschitzModulus(3.0)) == pytest.approx(3 * t)
    affine = AffineModulus(0.5, 2.0)
    assert B.robustness_quantile_bound(0.25, n_classes=10, modulus=affine) == pytest.approx(0.5 + 2 * t)
    # a probabilistic modulus: solve eq. (2) >= q + delta
    t2 = B.latent_radius_quantile(0.30, n_classes=10)
    emp = EmpiricalModulus([0, 1, 2], [0, 1.5, 2.5], delta=0.05)
    assert B.robustness_quantile_bound(0.25, n_classes=10, modulus=emp) == pytest.approx(1.5 * t2)
    assert B.robustness_quantile_bound(0.25, n_classes=10, modulus=emp, delta=0.0) == pytest.approx(1.5 * t)


def test_quantile_bound_is_infinite_beyond_the_measured_modulus():
    emp = EmpiricalModulus([0, 0.01], [0, 0.02])
    assert math.isinf(B.robustness_quantile_bound(0.25, n_classes=10, modulus=emp))


def test_figure2_median_bound_decreases_with_d_and_K():
    """Figure 2: the bound on median(r_in) / sqrt(d) falls like 1/sqrt(d) and with K."""
    med = {k: B.robustness_quantile_bound(0.5, n_classes=k) for k in (2, 10, 100)}
    assert med[2] > med[10] > med[100] > 0
    assert med[2] == pytest.approx(stats.norm.ppf(0.75), rel=1e-10)  # 2 Phi(t) - 1 = 1/2


# ---------------------------------------------------------------- Theorem 3

def test_transfer_bound_formula_and_assumption():
    eta = np.array([0.5, 1.0, 3.0])
    got = B.transfer_bound(eta, [0.25] * 4, 0.05, LipschitzModulus(2.0))
    np.testing.assert_allclose(got, 1 - math.sqrt(math.pi / 2) * np.exp(-(eta / 2) ** 2 / 2) - 0.1, rtol=1e-14)
    with pytest.raises(ValueError, match="P\\(C_i\\(f\\)\\) \\+ delta <= 1/2"):
        B.transfer_bound(1.0, [0.48, 0.52], 0.01)
    with pytest.raises(ValueError, match="disagreement"):
        B.transfer_bound(1.0, [0.5, 0.5], -0.1)


# ---------------------------------------------------------------- Theorem 4

@pytest.mark.parametrize("probs", [[0.5, 0.5], [0.1] * 10, [0.7, 0.2, 0.1], [1e-9, 0.3, 0.7 - 1e-9], [0.2] * 5])
def test_theorem4_closed_form_equals_integral_of_one_minus_eq2(probs):
    integral, err = integrate.quad(lambda t: 1.0 - B.latent_bound(t, class_probs=probs), 0, np.inf,
                                   epsabs=1e-13, epsrel=1e-11, limit=400)
    assert B.expected_latent_robustness_bound(class_probs=probs) == pytest.approx(integral, rel=1e-8)
    assert B.theorem4_bound(class_probs=probs) == pytest.approx(integral, rel=1e-8)
    lip = LipschitzModulus(2.5)
    shifted = B.theorem4_bound(class_probs=probs, modulus=lip, wasserstein=0.3)
    assert shifted == pytest.approx(2.5 * integral + 0.3, rel=1e-8)


def test_theorem4_equiprobable_form_dominates_general_form():
    for k in (5, 10, 100, 10_000):
        assert B.theorem4_equiprobable_bound(k) >= B.theorem4_bound(n_classes=k)


def test_theorem4_requires_concave_modulus():
    convex = EmpiricalModulus([0, 1, 2], [0, 1, 3], ceiling=3)
    with pytest.raises(ModulusNotConcaveError, match="concave_majorant"):
        B.mean_upper_bound(n_classes=10, modulus=convex)
    # concave on its grid but unknown (infinite) beyond it: Jensen's inequality needs all of [0, inf)
    measured_only = EmpiricalModulus([0, 1, 2], [0, 2, 3])
    with pytest.raises(ModulusNotConcaveError, match="infinite beyond its last radius"):
        B.mean_upper_bound(n_classes=10, modulus=measured_only)
    with pytest.raises(ValueError, match="concave"):  # the named error is a ValueError
        B.equiprobable_mean_upper_bound(10, modulus=convex)
    concave = EmpiricalModulus([0, 1, 2], [0, 2, 3], ceiling=3)
    s = B.latent_mean_upper_bound(n_classes=10)
    assert 0 < s < 1  # omega(s) = 2 s on the first segment
    assert B.mean_upper_bound(n_classes=10, modulus=concave) == pytest.approx(2 * s)
    # the majorant of the convex one: hull of (0, 0), (2, 3) -> omega(t) = 1.5 t up to 2, then 3
    assert B.mean_upper_bound(n_classes=10, modulus=convex.concave_majorant()) == pytest.approx(1.5 * s)


def test_theorem4_with_a_probabilistic_modulus_needs_a_diameter():
    mod = EmpiricalModulus([0, 1, 2], [0, 2, 3], delta=0.01, ceiling=3)
    with pytest.raises(ValueError, match="diameter"):
        B.mean_upper_bound(n_classes=10, modulus=mod)
    s = B.latent_mean_upper_bound(n_classes=10)
    got = B.mean_upper_bound(n_classes=10, modulus=mod, wasserstein=0.2, diameter=3.0)
    assert got == pytest.approx(2 * s + 0.2 + 0.01 * 3.0)


def test_theorems_3_and_4_with_non_identity_moduli():
    """Theorem 3 with an affine modulus, Theorem 4 with the torus's concave sine modulus."""
    from advbound.generators import TorusModulus

    aff = AffineModulus(0.3, 2.0)
    eta = np.array([0.2, 1.0, 4.0])
    t = np.maximum(eta - 0.3, 0) / 2.0
    np.testing.assert_allclose(B.transfer_probability_lower_bound(eta, [0.25] * 4, 0.05, aff),
                               1 - math.sqrt(math.pi / 2) * np.exp(-t * t / 2) - 0.1, rtol=1e-14)
    torus = TorusModulus(4)
    s = B.latent_mean_upper_bound(n_classes=3)
    assert B.mean_upper_bound(n_classes=3, modulus=torus) == pytest.approx(4 * math.sin(math.pi * s / 2), rel=1e-14)


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("kwargs, match", [
    (dict(class_probs=[0.5, 0.6]), "sum to 1"),
    (dict(class_probs=[1.2, -0.2]), "\\[0, 1\\]"),
    (dict(class_probs=[]), "at least one class"),
    (dict(class_probs=[0.5, float("nan"), 0.5]), "finite"),
    (dict(n_classes=0), "K\\) must be an integer >= 1"),
    (dict(n_classes=2.5), "K\\) must be an integer >= 1"),
    (dict(), "exactly one"),
    (dict(class_probs=[1.0], n_classes=1), "exactly one"),
])
def test_bad_class_probabilities(kwargs, match):
    with pytest.raises(ValueError, match=match):
        B.latent_bound(0.5, **kwargs)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_quantile(q):
    with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
        B.robustness_quantile_bound(q, n_classes=10)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="t \\(latent radius\\) must be >= 0"):
        B.latent_bound(-0.1, n_classes=3)
    with pytest.raises(ValueError, match="eta"):
        B.theorem1_bound(-1.0, n_classes=3)
    with pytest.raises(ValueError, match=">= 5"):
        B.equiprobable_bound(1.0, 4)
    with pytest.raises(ValueError, match="q \\+ delta"):
        B.robustness_quantile_bound(0.7, n_classes=10, delta=0.3)
    with pytest.raises(ValueError, match="d \\(latent dimension\\)"):
        B.expected_latent_norm(0)
    with pytest.raises(ValueError, match="wasserstein"):
        B.theorem4_bound(n_classes=3, wasserstein=-1.0)


# ---------------------------------------------------------------- names that say the direction

def test_earlier_names_are_the_same_functions():
    assert len(B.ALIASES) == 10
    for old, new in B.ALIASES.items():
        assert getattr(B, old) is getattr(B, new), old
        assert getattr(advbound, old) is getattr(B, new), old
        assert getattr(advbound, new) is getattr(B, new), new
        assert old in advbound.__all__ and new in advbound.__all__
    lower = [n for n in B.__all__ if n.endswith("_probability_lower_bound") or n == "probability_lower_bound"]
    upper = [n for n in B.__all__ if n.endswith("_upper_bound")]
    assert len(lower) == 5 and len(upper) == 7
    for name in lower + upper:  # each docstring cites what it implements
        doc = getattr(B, name).__doc__
        assert any(ref in doc for ref in ("eq. (", "Theorem", "Eq. (")), name


def test_probability_bound_subtracts_the_failure_probability_of_a_modulus():
    emp = EmpiricalModulus([0, 1, 2], [0, 1.5, 2.5], delta=0.05)
    eta = np.array([0.3, 1.0, 2.0])
    plain = B.latent_probability_lower_bound(emp.inverse(eta), n_classes=10)
    np.testing.assert_allclose(B.probability_lower_bound(eta, n_classes=10, modulus=emp), np.maximum(plain - 0.05, 0))
    np.testing.assert_allclose(B.probability_lower_bound(eta, n_classes=10, modulus=emp, delta=0), plain)
    np.testing.assert_allclose(B.balanced_probability_lower_bound(eta, emp) + 0.05,
                               B.balanced_probability_lower_bound(eta, emp, delta=0.0))
    # the quantile bound is the inverse of the probability bound, delta included
    eta_q = B.quantile_upper_bound(0.25, n_classes=10, modulus=emp)
    assert B.probability_lower_bound(eta_q, n_classes=10, modulus=emp) == pytest.approx(0.25, abs=1e-9)


# ---------------------------------------------------------------- closed-form inversions of eqs. (3), (4)

@pytest.mark.parametrize("modulus", [None, LipschitzModulus(3.0), AffineModulus(0.2, 2.0)])
def test_eq3_and_eq4_quantile_bounds_invert_their_probability_bounds(modulus):
    for q in (0.01, 0.25, 0.5, 0.9):
        eta3 = B.balanced_quantile_upper_bound(q, modulus)
        assert B.balanced_probability_lower_bound(eta3, modulus) == pytest.approx(q, abs=1e-12)
        for k in (5, 10, 1000):
            eta4 = B.equiprobable_quantile_upper_bound(q, k, modulus)
            root = optimize.brentq(lambda e, k=k, q=q: B.equiprobable_probability_lower_bound(e, k, modulus) - q,
                                   0, 50, xtol=1e-14)
            assert eta4 == pytest.approx(root, rel=1e-11, abs=1e-13)
            # eqs. (3) and (4) are weaker than eq. (2): their quantile bounds are larger
            eta2 = B.quantile_upper_bound(q, n_classes=k, modulus=modulus)
            assert eta2 <= eta4 + 1e-12 and eta4 <= eta3 + 1e-12


def test_remark1_exact_value_against_mpmath():
    """Remark 1: eq. (3) at eta = 2L for an L-Lipschitz generator is 1 - sqrt(pi/2) e^{-2} > 0.8."""
    with mp.workdps(30):
        exact = float(1 - mp.sqrt(mp.pi / 2) * mp.exp(-2))
    assert f"{exact:.6f}" == "0.830382"
    for lip in (0.5, 1.0, 7.0, np.float32(2.0)):
        assert B.balanced_probability_lower_bound(2 * lip, lip) == pytest.approx(exact, rel=1e-14)


# ---------------------------------------------------------------- numbers as users give them

def test_float32_class_probabilities_are_accepted():
    """float32 probabilities (e.g. a mean of float32 softmax outputs) miss 1 by float32 rounding."""
    rng = np.random.default_rng(0)
    softmax = rng.dirichlet(np.ones(10), size=5000).astype(np.float32)
    p32 = softmax.mean(axis=0)
    assert abs(math.fsum(p32.astype(float)) - 1) > 1e-9  # a 1e-9 tolerance would reject them
    got = B.robustness_quantile_bound(0.25, class_probs=p32)
    ref = B.robustness_quantile_bound(0.25, class_probs=p32.astype(float) / math.fsum(p32.astype(float)))
    assert got == pytest.approx(ref, rel=1e-12)
    assert B.class_probabilities(np.full(10, 0.1, dtype=np.float32)).dtype == np.float64


def test_probabilities_printed_to_six_decimals_are_accepted():
    printed = [0.333333, 0.333333, 0.333333]  # sums to 0.999999
    np.testing.assert_allclose(B.class_probabilities(printed), np.full(3, 1 / 3), rtol=1e-15)
    ten = [round(x, 6) for x in np.random.default_rng(1).dirichlet(np.ones(10))]
    assert math.isfinite(B.robustness_quantile_bound(0.25, class_probs=ten))
    # a real mismatch is still refused, and an explicit tolerance still applies
    with pytest.raises(ValueError, match="sum to 1"):
        B.class_probabilities([0.3333, 0.3333, 0.3333])
    with pytest.raises(ValueError, match="within 1e-09"):
        B.class_probabilities(printed, atol=1e-9)


@pytest.mark.parametrize("d", [1, 2, 7, 100, 340, 341, 1000, 12_345, 10**6, 10**9, 10**13, 10**16, 10**20,
                               10**100, 1e300, np.int64(100), np.int64(10**18)])
def test_expected_latent_norm_matches_mpmath_for_every_d(d):
    """A plain log-gamma difference loses digits from d ~ 1e6 on and gives sqrt(2) from d = 1e16 on."""
    with mp.workdps(40 + len(str(int(d)))):  # log-gamma of d needs about log10(d) extra digits
        dd = mp.mpf(int(d))
        ref = mp.sqrt(2) * mp.exp(mp.loggamma((dd + 1) / 2) - mp.loggamma(dd / 2))
        rel = abs((mp.mpf(B.expected_latent_norm(d)) - ref) / ref)
    assert rel < 4e-16, (d, float(rel))


def test_expected_latent_norm_refuses_what_it_cannot_compute():
    for bad in (0, -3, 2.5, "100", None, True, 10**400, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="d \\(latent dimension\\)"):
            B.expected_latent_norm(bad)


@pytest.mark.parametrize("q", [np.array([0.25, 0.5]), "0.25", None, [0.25], True])
def test_quantile_that_is_not_a_number_gets_a_named_error(q):
    with pytest.raises(TypeError, match="q \\(quantile\\) must be a single real number"):
        B.robustness_quantile_bound(q, n_classes=10)


def test_numpy_scalars_are_accepted_where_numbers_are_expected():
    ref = B.robustness_quantile_bound(0.25, n_classes=10, modulus=3.0)
    assert B.robustness_quantile_bound(np.float32(0.25), n_classes=np.int64(10), modulus=np.float32(3)) == \
        pytest.approx(ref, rel=1e-7)
    got = B.robustness_quantile_bound(np.array(0.25), n_classes=np.int32(10), modulus=np.int64(3))
    assert got == pytest.approx(ref)
    plain = B.theorem1_bound(1.0, n_classes=10, modulus=3.0)
    assert B.theorem1_bound(1.0, n_classes=10, modulus=np.float32(3)) == plain
    assert B.equiprobable_bound(1.0, np.int64(10)) == B.equiprobable_bound(1.0, 10)
    assert B.theorem4_equiprobable_bound(np.int64(10), modulus=np.int64(2), wasserstein=np.float32(0.5)) == \
        pytest.approx(B.theorem4_equiprobable_bound(10, modulus=2.0, wasserstein=0.5))
    assert B.transfer_bound(1.0, [0.25] * 4, np.float32(0.01)) == pytest.approx(B.transfer_bound(1.0, [0.25] * 4, 0.01))
    assert B.robustness_quantile_bound(0.25, n_classes=10, delta=np.float64(0.01)) == \
        B.robustness_quantile_bound(0.26, n_classes=10)


@pytest.mark.parametrize("call, match", [
    (lambda: B.mean_upper_bound(n_classes=3, wasserstein="1"), "wasserstein"),
    (lambda: B.transfer_probability_lower_bound(1.0, [0.25] * 4, "0.1"), "disagreement"),
    (lambda: B.quantile_upper_bound(0.25, n_classes=10, delta="0.1"), "delta"),
    (lambda: B.probability_lower_bound(1.0, n_classes=3, modulus="fast"), "modulus"),
    (lambda: B.probability_lower_bound("1", n_classes=3), "eta"),
    (lambda: B.probability_lower_bound(1.0, class_probs="0.5,0.5"), "class_probs"),
    (lambda: B.probability_lower_bound(1.0, n_classes=np.bool_(True)), "n_classes"),
])
def test_wrong_types_get_named_errors(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_printed_eq4_is_false_and_the_corrected_form_holds():
    """The counterexample of the README: g(z) = 10 z (Lipschitz 10, an exact modulus), K = 10 equiprobable
    latent sectors, eta = 3.  The true P(r_in <= 3) = P(r_Z <= 0.3) is 1 - E_phi exp(-0.045 / sin^2 phi) with
    phi ~ U[0, pi/10] (the distance of a 2-d Gaussian point to the nearest sector ray is rho sin phi, rho
    Rayleigh), by mpmath quadrature: 0.776.  The paper's printed eq. (4), with eta in the second exponent,
    claims at least 0.958, which is false; with omega^{-1}(eta) = 0.3 there (the library) it gives 0.142."""
    K, L, eta = 10, 10.0, 3.0
    t = mp.mpf(eta) / L
    rate = mp.sqrt(mp.log(K**2 / (4 * mp.pi * mp.log(K))))
    printed = 1 - mp.sqrt(mp.pi / 2) * mp.e ** (-t**2 / 2) * mp.e ** (-eta * rate)
    true = 1 - mp.quad(lambda f: mp.e ** (-t**2 / (2 * mp.sin(f) ** 2)), [0, mp.pi / K]) / (mp.pi / K)
    assert round(float(printed), 3) == 0.958 and round(float(true), 3) == 0.776
    assert float(printed) > float(true)                                 # the printed inequality fails
    corrected = B.equiprobable_probability_lower_bound(eta, K, modulus=LipschitzModulus(L))
    assert round(float(corrected), 3) == 0.142 and corrected <= float(true)
    # the exact robustness of the library's sector classifier agrees with the quadrature (Monte Carlo)
    import torch

    from advbound.classifiers import sector_classifier

    z = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frac = float((L * sector_classifier(K, dims=3).exact_robustness(z) <= eta).double().mean())
    assert abs(frac - float(true)) < 4 * math.sqrt(float(true) * (1 - float(true)) / 200_000)
# ---------------------------------------------------------------- every formula pinned, every option used (issue 20)
# Mutation testing (``make mutation``) found formulas that only inequalities checked and optional arguments that
# no test set to a value that changes the result.  Each reference below is computed here, in mpmath or closed
# form, never taken from the code under test.

def _mp_rate(k: int) -> mp.mpf:
    """eq. (4)'s rate sqrt(log(K^2 / (4 pi log K)))."""
    return mp.sqrt(mp.log(mp.mpf(k) ** 2 / (4 * mp.pi * mp.log(k))))


@pytest.mark.parametrize("k", [5, 10, 100, 10**6])
def test_theorem4_equiprobable_form_pinned_to_mpmath(k):
    """log(4 pi log K) / sqrt(2 log K): 1.57 at K = 10 (a '/' read as '*' gives 7.22)."""
    with mp.workdps(30):
        ref = float(mp.log(4 * mp.pi * mp.log(k)) / mp.sqrt(2 * mp.log(k)))
    assert B.equiprobable_mean_upper_bound(k) == pytest.approx(ref, rel=1e-14)
    assert B.equiprobable_mean_upper_bound(k, LipschitzModulus(3.0), wasserstein=0.25) == \
        pytest.approx(3 * ref + 0.25, rel=1e-14)
    if k == 10:
        assert f"{ref:.2f}" == "1.57"


def test_theorem4_probabilistic_modulus_adds_delta_times_diameter():
    """omega(t) = 2 t on [0, 1], 2 + (t - 1) on [1, 2], 3 beyond; delta = 0.01 of the mass, diameter D."""
    mod = EmpiricalModulus([0, 1, 2], [0, 2, 3], delta=0.01, ceiling=3)
    with mp.workdps(30):
        s = float(mp.log(4 * mp.pi * mp.log(10)) / mp.sqrt(2 * mp.log(10)))  # 1.57, on the second segment
    for diameter in (0.0, 0.5, 4.0):
        got = B.equiprobable_mean_upper_bound(10, mod, wasserstein=0.25, diameter=diameter)
        assert got == pytest.approx(2 + (s - 1) + 0.25 + 0.01 * diameter, rel=1e-14)
    for bad in (-1.0, math.inf):
        with pytest.raises(ValueError, match="diameter must be finite and >= 0"):
            B.mean_upper_bound(n_classes=10, modulus=mod, diameter=bad)


@pytest.mark.parametrize("probs", [[1e-12, 1 - 1e-12], [0.0, 0.5, 0.5], [0.3, 0.0, 0.7], [1e-320, 1.0]])
def test_theorem4_sum_pinned_to_mpmath(probs):
    """sum_i phi(a_i) - a_i (1 - Phi(a_i)), a class of probability 0 contributing nothing."""
    with mp.workdps(40):
        ref = float(mp.fsum(mp.npdf(a) - a * (tail if upper else 1 - tail) for a, tail, upper in _mp_tails(probs)))
    assert B.latent_mean_upper_bound(probs) == pytest.approx(ref, rel=1e-12)
    assert math.isinf(B.latent_mean_upper_bound([1.0]))


@pytest.mark.parametrize("k", [5, 10, 1000])
def test_eq4_with_an_explicit_delta(k):
    """1 - sqrt(pi/2) exp(-t^2/2 - rate t) - delta, t = omega^{-1}(eta); an explicit delta replaces the
    modulus's own."""
    mod = LipschitzModulus(2.0, delta=0.05)
    eta = np.array([0.5, 2.0, 6.0])
    with mp.workdps(30):
        core = [1 - mp.sqrt(mp.pi / 2) * mp.exp(-(e / 2) ** 2 / 2 - _mp_rate(k) * (e / 2)) for e in eta]
    for delta, used in ((None, 0.05), (0.01, 0.01), (0.0, 0.0)):
        got = B.equiprobable_probability_lower_bound(eta, k, mod, delta=delta)
        np.testing.assert_allclose(got, [float(c) - used for c in core], rtol=1e-13, atol=1e-15)


def test_eq3_with_an_explicit_delta():
    mod = LipschitzModulus(2.0, delta=0.05)
    eta = np.array([0.5, 2.0, 6.0])
    for delta, used in ((None, 0.05), (0.01, 0.01)):
        expected = 1 - math.sqrt(math.pi / 2) * np.exp(-(eta / 2) ** 2 / 2) - used
        np.testing.assert_allclose(B.balanced_probability_lower_bound(eta, mod, delta=delta), expected, rtol=1e-14)


@pytest.mark.parametrize("q", [0.05, 0.25, 0.5])
def test_closed_form_quantile_bounds_with_an_explicit_delta(q):
    """Eq. (3): t = sqrt(2 log(sqrt(pi/2) / (1 - q - delta))); eq. (4): the positive root of
    t^2/2 + rate t = log(sqrt(pi/2) / (1 - q - delta)); both mapped through omega(t) = 2 t."""
    mod = LipschitzModulus(2.0, delta=0.05)
    for delta, used in ((None, 0.05), (0.01, 0.01), (0.0, 0.0)):
        with mp.workdps(30):
            c = mp.log(mp.sqrt(mp.pi / 2) / (1 - mp.mpf(q) - mp.mpf(used)))
            t3 = mp.sqrt(2 * c)
            rate = _mp_rate(10)
            t4 = -rate + mp.sqrt(rate ** 2 + 2 * c)
        assert B.balanced_quantile_upper_bound(q, mod, delta=delta) == pytest.approx(2 * float(t3), rel=1e-13)
        assert B.equiprobable_quantile_upper_bound(q, 10, mod, delta=delta) == pytest.approx(2 * float(t4), rel=1e-13)
        eta2 = B.quantile_upper_bound(q, n_classes=10, modulus=mod, delta=delta)
        assert eta2 == pytest.approx(2 * _mp_quantile(q + used, [0.1] * 10), rel=1e-10)


def test_theorem3_with_an_explicit_delta_and_its_assumption():
    mod = LipschitzModulus(2.0, delta=0.05)
    eta = np.array([0.5, 2.0, 6.0])
    for delta, used in ((None, 0.05), (0.01, 0.01)):
        expected = 1 - math.sqrt(math.pi / 2) * np.exp(-(eta / 2) ** 2 / 2) - 2 * 0.1 - used
        np.testing.assert_allclose(B.transfer_probability_lower_bound(eta, [0.2] * 5, 0.1, mod, delta=delta), expected,
                                   rtol=1e-14)
    # no disagreement at all is allowed; exactly 1/2 is allowed; the disagreement alone can break the assumption
    np.testing.assert_allclose(B.transfer_probability_lower_bound(eta, [0.25] * 4, 0.0, mod, delta=0.0),
                               1 - math.sqrt(math.pi / 2) * np.exp(-(eta / 2) ** 2 / 2), rtol=1e-14)
    assert B.transfer_probability_lower_bound(2.0, [0.25] * 4, 0.25) == pytest.approx(
        1 - math.sqrt(math.pi / 2) * math.exp(-2.0) - 0.5, rel=1e-14)
    with pytest.raises(ValueError, match="Theorem 3 assumes"):
        B.transfer_probability_lower_bound(1.0, [0.25] * 4, 0.3)
    with pytest.raises(ValueError, match="Theorem 3 assumes"):
        B.transfer_probability_lower_bound(1.0, [0.25] * 4, 1.0)
    with pytest.raises(ValueError, match=r"disagreement \(delta of Theorem 3\) must be in \[0, 1\]"):
        B.transfer_probability_lower_bound(1.0, [0.25] * 4, 1.5)


@pytest.mark.parametrize("q", [0.9, 0.99, 0.999999])
def test_two_classes_quantile_pinned_beyond_the_first_bracket(q):
    """K = 2: eq. (2) is 2 Phi(t) - 1, so t = Phi^{-1}((1 + q) / 2) = sqrt(2) erfinv(q), a root beyond 1 and 2."""
    with mp.workdps(30):
        ref = float(mp.sqrt(2) * mp.erfinv(mp.mpf(q)))
    assert B.latent_quantile_upper_bound(q, n_classes=2) == pytest.approx(ref, rel=2e-12)


def test_quantile_below_the_rounding_of_eq2_at_zero():
    """At t = 0 eq. (2) is 0 up to rounding (here +2.5e-18 on some machines): a q below that is reached at 0."""
    p = [0.0010397580548109561, 0.25215560168911316, 0.7468046402560758]
    assert 0.0 <= B.latent_quantile_upper_bound(5e-324, p) <= 1e-300


def test_quantile_bound_without_a_root_is_infinite_even_for_a_bounded_modulus():
    """K = 1: no other class, no adversarial point: inf, not omega(inf) = the modulus's ceiling."""
    bounded = EmpiricalModulus([0, 1], [0, 1], ceiling=3)
    assert math.isinf(B.quantile_upper_bound(0.5, n_classes=1, modulus=bounded))
    assert B.quantile_upper_bound(0.5, n_classes=2, modulus=bounded) == pytest.approx(stats.norm.ppf(0.75), rel=1e-12)


def test_eq2_never_exceeds_one():
    """Twenty classes of 1/20 at t = 60: the increments, each 1/20, add up to 1 + 2e-16 before the clip."""
    assert B.latent_probability_lower_bound(60.0, n_classes=20) <= 1.0
    assert B.latent_probability_lower_bound(np.array([60.0]), n_classes=20)[0] <= 1.0


def test_scalars_give_floats_and_arrays_give_arrays():
    assert type(B.latent_probability_lower_bound(1.0, n_classes=3)) is float
    assert type(B.probability_lower_bound(1.0, n_classes=3)) is float
    assert type(B.balanced_probability_lower_bound(1.0)) is float
    out = B.latent_probability_lower_bound([[0.5, 1.0], [2.0, 3.0]], n_classes=3)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)


@pytest.mark.parametrize("probs, match", [
    ([1.5], r"must lie in \[0, 1\]"), ([-0.1, 0.6, 0.5], r"must lie in \[0, 1\]"),
    (np.array([0, 0]), "sum to 1"), (np.array([1, 1]), "sum to 1"),
])
def test_class_probabilities_range_and_integer_sums(probs, match):
    with pytest.raises(ValueError, match=match):
        B.class_probabilities(probs)


def test_class_probabilities_tolerances():
    np.testing.assert_array_equal(B.class_probabilities([1.0]), [1.0])                      # K = 1
    np.testing.assert_array_equal(B.class_probabilities(np.array([0, 1])), [0.0, 1.0])      # integers, exact
    off = np.full(10, 0.1)
    off[0] += 1e-5  # the sum misses 1 by 1e-5: within float32's rounding allowance (1.9e-5), not float64's (5e-6)
    np.testing.assert_allclose(B.class_probabilities(off.astype(np.float32)).sum(), 1.0, rtol=1e-15)
    with pytest.raises(ValueError, match="sum to 1"):
        B.class_probabilities(off)
    np.testing.assert_array_equal(B.class_probabilities([0.5, 0.5], atol=0.0), [0.5, 0.5])
    np.testing.assert_array_equal(B.class_probabilities([0.5, 0.75], atol=0.25), [0.4, 0.6])  # |1.25 - 1| = atol
    for bad in (math.inf, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="atol"):
            B.class_probabilities([0.5, 0.5], atol=bad)


# ---------------------------------------------------------------- second mutation round (issue 20)

@pytest.mark.parametrize("d", [1, 3, 100])
def test_normalized_lipschitz_is_footnote_5(d: int) -> None:
    """Footnote 5: L' = L E||z||_2 / E||g(z)||, with E||z||_2 = sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2) from
    mpmath; a Lipschitz constant below 1 and an image norm below 1 are ordinary values."""
    with mp.workdps(30):
        mean_norm = float(mp.sqrt(2) * mp.gamma(mp.mpf(d + 1) / 2) / mp.gamma(mp.mpf(d) / 2))
    assert B.normalized_lipschitz(0.5, d, 0.25) == pytest.approx(0.5 * mean_norm / 0.25, rel=1e-14)
    assert B.normalized_lipschitz(3.0, d, 7.0) == pytest.approx(3.0 * mean_norm / 7.0, rel=1e-14)


@pytest.mark.parametrize("lipschitz, norm, match", [
    (0.0, 1.0, "lipschitz must be finite and > 0"), (-1.0, 1.0, "lipschitz must be finite and > 0"),
    (math.inf, 1.0, "lipschitz must be finite and > 0"), (1.0, 0.0, "mean_image_norm must be finite and > 0"),
    (1.0, math.inf, "mean_image_norm must be finite and > 0"), ("1", 1.0, "lipschitz"), (1.0, None, "mean_image_norm"),
])
def test_normalized_lipschitz_refuses_bad_constants(lipschitz: object, norm: object, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        B.normalized_lipschitz(lipschitz, 10, norm)  # type: ignore[arg-type]


def test_two_balanced_classes_small_quantile_to_full_precision() -> None:
    """K = 2: eq. (2) is 2 Phi(t) - 1, so the q-quantile is sqrt(2) erfinv(q) (mpmath); at q = 0.05 the root,
    0.0627, is found to 1e-13 (a root-finder tolerance of 2e-12 absolute would leave 5e-12 relative; ``abs=0``, since
    pytest.approx would otherwise also accept any difference below 1e-12)."""
    with mp.workdps(30):
        ref = float(mp.sqrt(2) * mp.erfinv(mp.mpf("0.05")))
    assert B.latent_quantile_upper_bound(0.05, n_classes=2) == pytest.approx(ref, rel=1e-13, abs=0)


def test_quantile_equal_to_the_supremum_of_eq2_is_finite() -> None:
    """Six classes of 1/6: in float64 eq. (2) levels off at 1 - 2^-53 (six increments of 1/6 add up to just below
    1); a q equal to that level is reached (at the bracket's end at the latest), so the bound is finite."""
    top = B.latent_probability_lower_bound(64.0, n_classes=6)
    assert top < 1.0
    t = B.latent_quantile_upper_bound(top, n_classes=6)
    assert math.isfinite(t) and B.latent_probability_lower_bound(t, n_classes=6) >= top


def test_theorem4_sum_for_many_equiprobable_classes_pinned_to_mpmath() -> None:
    """K = 10^4 classes of 1e-4: K (phi(a) - a / K) with a = Phi^{-1}(1 - 1/K) in mpmath, to 1e-13.  Each a is taken
    from its small tail; from 1 - p instead, the sum would be off by 2e-12."""
    k = 10_000
    with mp.workdps(40):
        a = -mp.sqrt(2) * mp.erfinv(2 * mp.mpf(1) / k - 1)  # Phi^{-1}(1 - 1/K)
        ref = float(k * (mp.npdf(a) - a / k))
    assert B.latent_mean_upper_bound(n_classes=k) == pytest.approx(ref, rel=1e-13, abs=0)


def test_theorem3_assumption_allows_rounding_of_1e_12() -> None:
    """P(C_i(f)) + delta <= 1/2 is checked with an allowance of 1e-12 for rounding: exactly at it the bound is
    given, beyond it refused."""
    edge = 0.25 + 1e-12
    assert 0.25 + edge == 0.5 + 1e-12  # the sum lands exactly on the allowance
    assert B.transfer_probability_lower_bound(2.0, [0.25] * 4, edge) == pytest.approx(
        1 - math.sqrt(math.pi / 2) * math.exp(-2.0) - 2 * edge, rel=1e-14)
    with pytest.raises(ValueError, match="Theorem 3 assumes"):
        B.transfer_probability_lower_bound(2.0, [0.25] * 4, 0.25 + 2e-12)


def test_eq2_at_an_infinite_radius() -> None:
    """t = inf: every class's Phi(a_i + t) - Phi(a_i) is its whole mass P(C_i) = p_i, so eq. (2) is 1; a class holding
    all the mass (a_i = -inf) has no other class to reach and contributes 0, not inf - inf."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert B.latent_probability_lower_bound(math.inf, n_classes=1) == 0.0
        np.testing.assert_array_equal(B.latent_probability_lower_bound([0.5, math.inf], class_probs=[1.0, 0.0]),
                                      [0.0, 0.0])
        assert B.latent_probability_lower_bound(math.inf, class_probs=[0.3, 0.7]) == 1.0
        assert B.latent_probability_lower_bound(math.inf, n_classes=10) == pytest.approx(1.0, rel=1e-15)
