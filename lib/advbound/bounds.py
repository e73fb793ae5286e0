"""Classifier-agnostic robustness bounds: Theorem 1 (eqs. (2)-(4)), Theorem 3 and Theorem 4.

Notation (the paper's Section 3): ``z ~ N(0, I_d)``, ``x = g(z)``, a classifier with class probabilities
``p_i = P(f(g(z)) = i)`` and ``a_i = a_{!=i} = Phi^{-1}(1 - p_i)``.  The latent radius that the
modulus certifies for an image-space radius ``eta`` is ``t = omega^{-1}(eta)``.

Numerics.  Each term of eq. (2), ``Phi(a_i + t) - Phi(a_i)``, is evaluated from whichever tail of the
normal distribution is small, as a relative change of that tail computed with ``log_ndtr`` and
``expm1``; so a class probability of ``1e-12`` costs no accuracy (no ``1 - 1e-12`` is ever formed).
The complementary mass ``1 - p_i`` is taken as ``sum_{j != i} p_j``.
"""

from __future__ import annotations

import math
import numpy as np
from scipy import optimize, special

from .modulus import ArrayLike, Modulus, as_modulus

#: the paper's Tables 1-2 report the 25% quantile; Figure 2 the median.
TABLE_QUANTILE = 0.25

SQRT_PI_OVER_2 = math.sqrt(math.pi / 2.0)


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------

def class_probabilities(class_probs: ArrayLike | None = None, n_classes: int | None = None,
                        *, atol: float = 1e-9) -> np.ndarray:
    """Validated class probabilities: either given (non-negative, summing to 1) or ``K`` equiprobable.

    Exactly one of ``class_probs`` and ``n_classes`` must be given.  Raises ``ValueError`` naming the
    offending argument otherwise.
    """
    if (class_probs is None) == (n_classes is None):
        raise ValueError("give exactly one of class_probs (probabilities summing to 1) and n_classes (K >= 1)")
    if n_classes is not None:
        if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
            raise ValueError(f"n_classes (K) must be an integer >= 1; got {n_classes!r}")
        return np.full(int(n_classes), 1.0 / int(n_classes))
    p = np.asarray(class_probs, dtype=float).ravel()
    if p.size == 0:
        raise ValueError("class_probs must contain at least one class (K >= 1)")
    if not np.all(np.isfinite(p)):
        raise ValueError("class_probs must be finite numbers in [0, 1]")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"class_probs must lie in [0, 1]; got min {p.min():g}, max {p.max():g}")
    total = math.fsum(p)
    if abs(total - 1.0) > atol:
        raise ValueError(f"class_probs must sum to 1 (within {atol:g}); they sum to {total:.12g}")
    return p


def _check_quantile(q: float, name: str = "quantile") -> float:
    if not (0.0 < q < 1.0):
        raise ValueError(f"{name} must be in (0, 1); got {q!r}")
    return float(q)


def _complements(p: np.ndarray) -> np.ndarray:
    """1 - p_i. For the (at most one) class with p_i > 1/2 it is the exact sum of the other
    probabilities, so a complement of 1e-12 keeps its relative accuracy; elsewhere 1 - p_i >= 1/2."""
    comp = 1.0 - p
    for i in np.flatnonzero(p > 0.5):
        comp[i] = math.fsum(np.delete(p, i))
    return comp


# --------------------------------------------------------------------------------------------------
# Theorem 1
# --------------------------------------------------------------------------------------------------

def _phi_increment(p: np.ndarray, comp: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Phi(a + t) - Phi(a) with a = Phi^{-1}(1 - p), for every (t, class) pair; shape (len(t), K).

    If p <= 1/2 (a >= 0), the upper tail p = Phi(-a) is small: the increment is
    p * (1 - Phi(-a - t) / p).  Otherwise the lower tail 1 - p = Phi(a) is small: the increment is
    (1 - p) * (Phi(a + t) / (1 - p) - 1).  Both ratios come from log_ndtr, so no cancellation occurs.
    """
    t = t[:, None]
    out = np.zeros((t.shape[0], p.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = (p > 0) & (p <= 0.5)
        if np.any(upper):
            pu = p[upper]
            a = -special.ndtri(pu)  # Phi^{-1}(1 - p) from the small tail
            out[:, upper] = -pu * np.expm1(special.log_ndtr(-(a + t)) - np.log(pu))
        lower = (p > 0.5) & (comp > 0)
        if np.any(lower):
            cl = comp[lower]
            a = special.ndtri(cl)
            out[:, lower] = cl * np.expm1(special.log_ndtr(a + t) - np.log(cl))
    return out


def latent_bound(t: ArrayLike, class_probs: ArrayLike | None = None, n_classes: int | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (2), as a function of the latent radius t = omega^{-1}(eta):

        P(r <= eta) >= sum_i [ Phi(a_{!=i} + t) - Phi(a_{!=i}) ],   a_{!=i} = Phi^{-1}(1 - p_i).

    With t the latent radius itself this is the bound on the latent robustness r_Z (Remark 5).
    A class with p_i = 0 contributes 0; K = 1 gives 0 for every t.  Vectorised over ``t``.
    """
    p = class_probabilities(class_probs, n_classes)
    tt = np.asarray(t, dtype=float)
    if np.any(np.isnan(tt)) or np.any(tt < 0):
        raise ValueError("t (latent radius) must be >= 0")
    flat = np.atleast_1d(tt).ravel()
    out = _phi_increment(p, _complements(p), flat).sum(axis=1)
    out = np.clip(out, 0.0, 1.0).reshape(tt.shape)
    return float(out) if out.ndim == 0 else out


def theorem1_bound(eta: ArrayLike, class_probs: ArrayLike | None = None, n_classes: int | None = None,
                   modulus: Modulus | float | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (2): lower bound on P(r_in(x) <= eta) for any classifier with these class
    probabilities, for a generator with modulus ``omega`` (default: identity, i.e. latent robustness).
    """
    return latent_bound(as_modulus(modulus).inverse(eta), class_probs, n_classes)


def balanced_bound(eta: ArrayLike, modulus: Modulus | float | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (3), valid when every P(C_i) <= 1/2:

        P(r_in <= eta) >= 1 - sqrt(pi/2) exp(-omega^{-1}(eta)^2 / 2).

    Returned as given by the formula (it is negative, hence vacuous, for small eta).
    """
    t = np.asarray(as_modulus(modulus).inverse(eta), dtype=float)
    out = 1.0 - SQRT_PI_OVER_2 * np.exp(-0.5 * t * t)
    return float(out) if out.ndim == 0 else out


def equiprobable_bound(eta: ArrayLike, n_classes: int, modulus: Modulus | float | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (4), for K >= 5 equiprobable classes:

        P(r_in <= eta) >= 1 - sqrt(pi/2) exp(-t^2/2) exp(-t sqrt(log(K^2 / (4 pi log K)))),  t = omega^{-1}(eta).

    The paper prints ``eta`` in the second exponent; the derivation (and eq. (3), which it refines) has the
    latent radius there, so we use t = omega^{-1}(eta).  The two agree when omega is the identity.
    """
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 5:
        raise ValueError(f"n_classes (K) must be an integer >= 5 for eq. (4); got {n_classes!r}")
    k = float(n_classes)
    t = np.asarray(as_modulus(modulus).inverse(eta), dtype=float)
    rate = math.sqrt(math.log(k * k / (4.0 * math.pi * math.log(k))))
    out = 1.0 - SQRT_PI_OVER_2 * np.exp(-0.5 * t * t - rate * t)
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------------
# Inverting Theorem 1: an upper bound on a quantile of the robustness
# --------------------------------------------------------------------------------------------------

def latent_radius_quantile(q: float, class_probs: ArrayLike | None = None, n_classes: int | None = None) -> float:
    """Smallest latent radius t with latent_bound(t) >= q (a root of an increasing function).

    Returns ``inf`` when the bound never reaches q (e.g. K = 1, or a single class of probability 1).
    """
    q = _check_quantile(q, "q (target probability)")
    p = class_probabilities(class_probs, n_classes)
    comp = _complements(p)

    def excess(t: float) -> float:
        return float(_phi_increment(p, comp, np.array([t])).sum()) - q

    if excess(0.0) >= 0:
        return 0.0
    hi = 1.0
    while excess(hi) < 0:
        hi *= 2.0
        if hi > 64.0:  # the bound's supremum is below q
            return math.inf
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-14, rtol=1e-13, maxiter=200))


def robustness_quantile_bound(q: float, class_probs: ArrayLike | None = None, n_classes: int | None = None,
                              modulus: Modulus | float | None = None, delta: float | None = None) -> float:
    """Upper bound on the q-quantile of r_in (Tables 1-2 use q = 0.25, Figure 2 q = 0.5).

    The smallest eta with eq. (2) >= q + delta, where ``delta`` is the failure probability of a
    probabilistic modulus (default: ``modulus.delta``): with probability at least q + delta the bound's
    event holds, and the modulus fails on at most delta of the mass, so P(r_in <= eta) >= q.
    The latent root t* is mapped through the modulus: eta = omega(t*).  With the identity modulus this is
    the bound on the latent robustness r_Z.  Returns ``inf`` when no finite eta is certified.
    """
    q = _check_quantile(q, "q (quantile)")
    mod = as_modulus(modulus)
    d = mod.delta if delta is None else float(delta)
    if not (0.0 <= d < 1.0):
        raise ValueError(f"delta (modulus failure probability) must be in [0, 1); got {delta!r}")
    if q + d >= 1.0:
        raise ValueError(f"q + delta must be < 1; got q={q:g}, delta={d:g}")
    t_star = latent_radius_quantile(q + d, class_probs, n_classes)
    return float(mod(t_star)) if math.isfinite(t_star) else math.inf


def expected_latent_norm(d: int) -> float:
    """E||z||_2 for z ~ N(0, I_d): sqrt(2) Gamma((d+1)/2) / Gamma(d/2), via log-gamma (Remark 1)."""
    if isinstance(d, bool) or int(d) != d or d < 1:
        raise ValueError(f"d (latent dimension) must be an integer >= 1; got {d!r}")
    return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2.0) - math.lgamma(d / 2.0))


# --------------------------------------------------------------------------------------------------
# Theorem 3: transferability
# --------------------------------------------------------------------------------------------------

def transfer_bound(eta: ArrayLike, class_probs: ArrayLike, disagreement: float,
                   modulus: Modulus | float | None = None) -> np.ndarray | float:
    """Theorem 3, eq. (6): for classifiers f, h with P(f(g(z)) != h(g(z))) <= delta and
    P(C_i(f)) + delta <= 1/2 for all i, a single v with ||v|| <= eta fools both with probability at least

        1 - sqrt(pi/2) exp(-omega^{-1}(eta)^2 / 2) - 2 delta.

    ``class_probs`` are those of f; ``disagreement`` is delta.  The assumption is checked.
    """
    p = class_probabilities(class_probs)
    if not (0.0 <= disagreement <= 1.0):
        raise ValueError(f"disagreement (delta) must be in [0, 1]; got {disagreement!r}")
    if p.max() + disagreement > 0.5 + 1e-12:
        raise ValueError(
            "Theorem 3 assumes P(C_i(f)) + delta <= 1/2 for all i; "
            f"got max class probability {p.max():g} + delta {disagreement:g} > 1/2")
    t = np.asarray(as_modulus(modulus).inverse(eta), dtype=float)
    out = 1.0 - SQRT_PI_OVER_2 * np.exp(-0.5 * t * t) - 2.0 * disagreement
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------------
# Theorem 4: approximate generator
# --------------------------------------------------------------------------------------------------

def _require_concave(mod: Modulus) -> None:
    if not mod.is_concave:
        raise ValueError(f"Theorem 4 requires a concave modulus; {mod!r} is not concave")


def expected_latent_robustness_bound(class_probs: ArrayLike | None = None, n_classes: int | None = None) -> float:
    """sum_i [phi(a_i) - a_i Phi(-a_i)] = sum_i E(Z - a_i)^+: the integral over t of (1 - eq. (2)),
    an upper bound on E r_Z; the argument of omega in Theorem 4.  Infinite when K = 1.
    """
    p = class_probabilities(class_probs, n_classes)
    total = 0.0
    for pi, ci in zip(p, _complements(p)):
        if pi == 0.0:
            continue
        if ci == 0.0:
            return math.inf
        a = -special.ndtri(pi) if pi <= 0.5 else special.ndtri(ci)
        # phi(a) - a Phi(-a) with Phi(-a) = p_i taken exactly (not recomputed from a)
        total += math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi) - a * pi
    return total


def theorem4_bound(class_probs: ArrayLike | None = None, n_classes: int | None = None,
                   modulus: Modulus | float | None = None, wasserstein: float = 0.0) -> float:
    """Theorem 4: if W1(g_* nu, mu) <= delta and omega is concave,

        E_{x ~ mu} r_unc(x) <= omega( sum_i [ -a_i Phi(-a_i) + exp(-a_i^2/2) / sqrt(2 pi) ] ) + delta.
    """
    if not (wasserstein >= 0 and math.isfinite(wasserstein)):
        raise ValueError(f"wasserstein (W1 distance delta) must be finite and >= 0; got {wasserstein!r}")
    mod = as_modulus(modulus)
    _require_concave(mod)
    s = expected_latent_robustness_bound(class_probs, n_classes)
    return (float(mod(s)) if math.isfinite(s) else math.inf) + wasserstein


def theorem4_equiprobable_bound(n_classes: int, modulus: Modulus | float | None = None, wasserstein: float = 0.0) -> float:
    """Theorem 4, K >= 5 equiprobable classes: E r_unc <= omega( log(4 pi log K) / sqrt(2 log K) ) + delta."""
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 5:
        raise ValueError(f"n_classes (K) must be an integer >= 5 for this form; got {n_classes!r}")
    if not (wasserstein >= 0 and math.isfinite(wasserstein)):
        raise ValueError(f"wasserstein (W1 distance delta) must be finite and >= 0; got {wasserstein!r}")
    mod = as_modulus(modulus)
    _require_concave(mod)
    lk = math.log(n_classes)
    return float(mod(math.log(4 * math.pi * lk) / math.sqrt(2 * lk))) + wasserstein


__all__ = [
    "TABLE_QUANTILE",
    "class_probabilities",
    "latent_bound",
    "theorem1_bound",
    "balanced_bound",
    "equiprobable_bound",
    "latent_radius_quantile",
    "robustness_quantile_bound",
    "expected_latent_norm",
    "transfer_bound",
    "expected_latent_robustness_bound",
    "theorem4_bound",
    "theorem4_equiprobable_bound",
]

