"""Classifier-agnostic robustness bounds: Theorem 1 (eqs. (2)-(4)), Theorem 3 and Theorem 4.

Notation (the paper's Section 3): ``z ~ N(0, I_d)``, ``x = g(z)``, a classifier with class probabilities
``p_i = P(f(g(z)) = i)`` and ``a_i = a_{!=i} = Phi^{-1}(1 - p_i)``.  The latent radius that the
modulus certifies for an image-space radius ``eta`` is ``t = omega^{-1}(eta)``.

Names say which way a bound goes:

* ``*_probability_lower_bound(eta, ...)``: a lower bound on ``P(r <= eta)``, the probability that a
  perturbation of norm at most ``eta`` changes the label (Theorem 1, Theorem 3);
* ``*_quantile_upper_bound(q, ...)``: an upper bound on the q-quantile of the robustness ``r`` (the
  smallest ``eta`` at which a probability lower bound reaches ``q``; Tables 1-2, Figure 2);
* ``*_mean_upper_bound(...)``: an upper bound on the mean robustness (Theorem 4).

The names used before (``theorem1_bound``, ``robustness_quantile_bound``, ...) remain as aliases.

A *probabilistic* modulus (``modulus.delta > 0``, see :mod:`advbound.modulus`) fails on at most ``delta``
of the latent mass: probability lower bounds subtract it, quantile upper bounds solve for ``q + delta``.

Numerics.  Each term of eq. (2), ``Phi(a_i + t) - Phi(a_i)``, is evaluated from whichever tail of the
normal distribution is small, as a relative change of that tail computed with ``log_ndtr`` and
``expm1``; so a class probability of ``1e-12`` costs no accuracy (no ``1 - 1e-12`` is ever formed).
The complementary mass ``1 - p_i`` is taken as ``sum_{j != i} p_j``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

from .modulus import (
    ArrayLike,
    Modulus,
    ModulusNotConcaveError,
    _as_nonneg_array,
    as_array,
    as_modulus,
    check_delta,
    integer_at_least,
    real_scalar,
)

#: the paper's Tables 1-2 report the 25% quantile; Figure 2 the median.
TABLE_QUANTILE = 0.25

SQRT_PI_OVER_2 = math.sqrt(math.pi / 2.0)

#: Tolerance on the sum of given class probabilities, per class: half a unit of the 6th decimal (values
#: printed to 6 decimals), or 16 units in the last place of the input's floating dtype if that is larger
#: (float32 averages of softmax outputs); the sum may be off by K times this.
PRINTED_PROBABILITY_ROUNDING = 5e-7
DTYPE_ULPS = 16


# ---- Input validation ------------------------------------------------------------------------------

def class_probabilities(class_probs: ArrayLike | None = None, n_classes: int | None = None,
                        *, atol: float | None = None) -> np.ndarray:
    """Validated class probabilities, as float64: either given (non-negative, summing to 1) or ``K``
    equiprobable.  Exactly one of ``class_probs`` and ``n_classes`` must be given.

    Given probabilities may miss 1 by rounding: by default the sum may be off by ``K`` times the larger of
    5e-7 (values printed to 6 decimals) and 16 units in the last place of their dtype (float32: 1.9e-6),
    or by ``atol`` if given.  Accepted probabilities are divided by their sum.  Raises ``ValueError``
    naming the offending argument otherwise.
    """
    if (class_probs is None) == (n_classes is None):
        raise ValueError("give exactly one of class_probs (probabilities summing to 1) and n_classes (K >= 1)")
    if n_classes is not None:
        k = integer_at_least(n_classes, "n_classes (K)", 1)
        return np.full(k, 1.0 / k)
    raw = as_array(class_probs, "class_probs")
    if raw.dtype.kind not in "fiu":
        raise TypeError(f"class_probs must be a sequence of real numbers; got dtype {raw.dtype}")
    p = raw.astype(float).ravel()
    if p.size == 0:
        raise ValueError("class_probs must contain at least one class (K >= 1)")
    if not np.all(np.isfinite(p)):
        raise ValueError("class_probs must be finite numbers in [0, 1]")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"class_probs must lie in [0, 1]; got min {p.min():g}, max {p.max():g}")
    if atol is None:
        eps = float(np.finfo(raw.dtype).eps) if raw.dtype.kind == "f" else 0.0
        tol = p.size * max(PRINTED_PROBABILITY_ROUNDING, DTYPE_ULPS * eps)
    else:
        tol = real_scalar(atol, "atol")
        if not (0.0 <= tol < math.inf):
            raise ValueError(f"atol (tolerance on the sum of class_probs) must be a finite number >= 0; got {atol!r}")
    total = math.fsum(p)
    if abs(total - 1.0) > tol:
        raise ValueError(f"class_probs must sum to 1 (within {tol:g}); they sum to {total:.12g}")
    return p / total


def _check_quantile(q: object, name: str = "quantile") -> float:
    value = real_scalar(q, name)
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must be in (0, 1); got {q!r}")
    return value


def _modulus_delta(mod: Modulus, delta: object) -> float:
    """The failure probability to account for: ``delta`` if given, else the modulus's own."""
    return mod.delta if delta is None else check_delta(delta)


def _complements(p: np.ndarray) -> np.ndarray:
    """1 - p_i. For the (at most one) class with p_i > 1/2 it is the exact sum of the other
    probabilities, so a complement of 1e-12 keeps its relative accuracy; elsewhere 1 - p_i >= 1/2."""
    comp = 1.0 - p
    for i in np.flatnonzero(p > 0.5):
        comp[i] = math.fsum(np.delete(p, i))
    return comp


def _as_output(out: np.ndarray) -> np.ndarray | float:
    return float(out) if out.ndim == 0 else out


# ---- Theorem 1: lower bounds on P(r <= eta) --------------------------------------------------------

#: a latent radius beyond every root of eq. (2) = q < 1 (see :func:`latent_quantile_upper_bound`)
_LATENT_RADIUS_MAX = 64.0

#: the largest log-ratio passed to expm1 in :func:`_phi_increment` (exp overflows float64 above 709.78)
_MAX_LOG_RATIO = 700.0


def _phi_increment(p: np.ndarray, comp: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Phi(a + t) - Phi(a) with a = Phi^{-1}(1 - p), for every (t, class) pair; shape (len(t), K).

    If p <= 1/2 (a >= 0), the upper tail p = Phi(-a) is small: the increment is
    p * (1 - Phi(-a - t) / p).  Otherwise the lower tail 1 - p = Phi(a) is small: the increment is
    (1 - p) * (Phi(a + t) / (1 - p) - 1).  Both ratios come from log_ndtr, so no cancellation occurs.
    When the second ratio exceeds e^700 (1 - p below 1e-304, subnormal included, and a large t) ``expm1``
    would overflow: there the increment is Phi(a + t) itself, since 1 - p < e^-700 Phi(a + t) vanishes in
    the subtraction (in float64 the two are the same number).
    """
    t = t[:, None]
    out = np.zeros((t.shape[0], p.size))
    upper = (p > 0) & (p <= 0.5)
    if np.any(upper):
        pu = p[upper]
        a = -special.ndtri(pu)  # Phi^{-1}(1 - p) from the small tail
        out[:, upper] = -pu * np.expm1(special.log_ndtr(-(a + t)) - np.log(pu))
    lower = (p > 0.5) & (comp > 0)
    if np.any(lower):
        cl = comp[lower]
        a = special.ndtri(cl)
        log_cdf = special.log_ndtr(a + t)
        log_ratio = log_cdf - np.log(cl)
        out[:, lower] = np.where(log_ratio > _MAX_LOG_RATIO, np.exp(log_cdf),
                                 cl * np.expm1(np.minimum(log_ratio, _MAX_LOG_RATIO)))
    return out


def latent_probability_lower_bound(t: ArrayLike, class_probs: ArrayLike | None = None,
                                   n_classes: int | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (2), as a function of the latent radius t = omega^{-1}(eta):

        P(r <= eta) >= sum_i [ Phi(a_{!=i} + t) - Phi(a_{!=i}) ],   a_{!=i} = Phi^{-1}(1 - p_i).

    With t the latent radius itself this is the bound on the latent robustness r_Z (Remark 5).
    A class with p_i = 0 contributes 0; K = 1 gives 0 for every t.  Vectorised over ``t``.
    """
    p = class_probabilities(class_probs, n_classes)
    tt = _as_nonneg_array(t, "t (latent radius)")
    flat = np.atleast_1d(tt).ravel()
    out = _phi_increment(p, _complements(p), flat).sum(axis=1)
    return _as_output(np.clip(out, 0.0, 1.0).reshape(tt.shape))


def probability_lower_bound(eta: ArrayLike, class_probs: ArrayLike | None = None, n_classes: int | None = None,
                            modulus: Modulus | float | None = None, delta: float | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (2): lower bound on P(r_in(x) <= eta) for any classifier with these class
    probabilities, for a generator with modulus ``omega`` (default: identity, i.e. latent robustness r_Z).

    Any modulus of continuity works (Assumption 1: non-decreasing, omega(0) > 0 allowed).  A probabilistic
    modulus fails on at most ``delta`` (default ``modulus.delta``) of the mass, which is subtracted
    (clipped at 0).
    """
    mod = as_modulus(modulus)
    d = _modulus_delta(mod, delta)
    out = np.asarray(latent_probability_lower_bound(mod.inverse(eta), class_probs, n_classes)) - d
    return _as_output(np.maximum(out, 0.0))


def balanced_probability_lower_bound(eta: ArrayLike, modulus: Modulus | float | None = None,
                                     delta: float | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (3), valid when every P(C_i) <= 1/2:

        P(r_in <= eta) >= 1 - sqrt(pi/2) exp(-omega^{-1}(eta)^2 / 2)   (minus ``delta`` of a probabilistic modulus).

    Returned as given by the formula (it is negative, hence vacuous, for small eta).  Remark 1: with
    omega(t) = L t and eta = 2 L this is 1 - sqrt(pi/2) e^{-2} = 0.8304.
    """
    mod = as_modulus(modulus)
    t = np.asarray(mod.inverse(eta))
    return _as_output(1.0 - SQRT_PI_OVER_2 * np.exp(-0.5 * t * t) - _modulus_delta(mod, delta))


def _eq4_rate(n_classes: object) -> float:
    k = float(integer_at_least(n_classes, "n_classes (K) for eq. (4)", 5))
    return math.sqrt(math.log(k * k / (4.0 * math.pi * math.log(k))))


def equiprobable_probability_lower_bound(eta: ArrayLike, n_classes: int, modulus: Modulus | float | None = None,
                                         delta: float | None = None) -> np.ndarray | float:
    """Theorem 1, eq. (4), for K >= 5 equiprobable classes:

        P(r_in <= eta) >= 1 - sqrt(pi/2) exp(-t^2/2) exp(-t sqrt(log(K^2 / (4 pi log K)))),  t = omega^{-1}(eta).

    The paper prints ``eta`` in the second exponent; the derivation (and eq. (3), which it refines) has the
    latent radius there, so we use t = omega^{-1}(eta).  The two agree when omega is the identity.
    """
    rate = _eq4_rate(n_classes)
    mod = as_modulus(modulus)
    t = np.asarray(mod.inverse(eta))
    return _as_output(1.0 - SQRT_PI_OVER_2 * np.exp(-0.5 * t * t - rate * t) - _modulus_delta(mod, delta))


# ---- Inverting Theorem 1: upper bounds on a quantile of the robustness -----------------------------

def latent_quantile_upper_bound(q: float, class_probs: ArrayLike | None = None, n_classes: int | None = None) -> float:
    """Upper bound on the q-quantile of the latent robustness r_Z: the smallest latent radius t with
    eq. (2) >= q (a root of an increasing function).

    Returns ``inf`` when the bound never reaches q (e.g. K = 1, or a single class of probability 1).  The root
    lies below :data:`_LATENT_RADIUS_MAX` = 64: a_i >= Phi^{-1}(5e-324) = -38.5 for every class, and
    Phi(-38.5 + 64) = 1 - 1e-143, so eq. (2) has reached any q < 1 of float64 by then.
    """
    q = _check_quantile(q, "q (target probability)")
    p = class_probabilities(class_probs, n_classes)
    comp = _complements(p)

    def excess(t: float) -> float:
        return float(_phi_increment(p, comp, np.array([t])).sum()) - q

    if excess(0.0) >= 0:  # eq. (2) is 0 at t = 0 up to rounding: a q below that rounding is reached at 0
        return 0.0
    if excess(_LATENT_RADIUS_MAX) < 0:  # the bound's supremum is below q
        return math.inf
    return float(optimize.brentq(excess, 0.0, _LATENT_RADIUS_MAX, xtol=1e-14))


def _solve_for(q: float, mod: Modulus, delta: object) -> float:
    """q + delta, checked to stay below 1."""
    d = _modulus_delta(mod, delta)
    if q + d >= 1.0:
        raise ValueError(f"q + delta must be < 1; got q={q:g}, delta={d:g}")
    return q + d


def _through(mod: Modulus, t_star: float) -> float:
    return float(mod(t_star)) if math.isfinite(t_star) else math.inf


def quantile_upper_bound(q: float, class_probs: ArrayLike | None = None, n_classes: int | None = None,
                         modulus: Modulus | float | None = None, delta: float | None = None) -> float:
    """Upper bound on the q-quantile of r_in (Tables 1-2 use q = 0.25, Figure 2 q = 0.5), from eq. (2).

    The smallest eta with eq. (2) >= q + delta, where ``delta`` is the failure probability of a
    probabilistic modulus (default: ``modulus.delta``): with probability at least q + delta the bound's
    event holds, and the modulus fails on at most delta of the mass, so P(r_in <= eta) >= q.
    The latent root t* is mapped through the modulus: eta = omega(t*).  With the identity modulus this is
    the bound on the latent robustness r_Z.  Returns ``inf`` when no finite eta is certified.
    """
    q = _check_quantile(q, "q (quantile)")
    mod = as_modulus(modulus)
    return _through(mod, latent_quantile_upper_bound(_solve_for(q, mod, delta), class_probs, n_classes))


def balanced_quantile_upper_bound(q: float, modulus: Modulus | float | None = None,
                                  delta: float | None = None) -> float:
    """Eq. (3) inverted in closed form: omega(t) with t = sqrt(2 log(sqrt(pi/2) / (1 - q - delta))).

    Valid when every class probability is <= 1/2.  Never smaller than :func:`quantile_upper_bound`
    (eq. (3) is a weaker form of eq. (2)).
    """
    q = _check_quantile(q, "q (quantile)")
    mod = as_modulus(modulus)
    target = _solve_for(q, mod, delta)
    return _through(mod, math.sqrt(2.0 * math.log(SQRT_PI_OVER_2 / (1.0 - target))))


def equiprobable_quantile_upper_bound(q: float, n_classes: int, modulus: Modulus | float | None = None,
                                      delta: float | None = None) -> float:
    """Eq. (4) inverted in closed form (K >= 5 equiprobable classes): omega(t) with t the positive root of
    t^2 / 2 + rate t = log(sqrt(pi/2) / (1 - q - delta)), rate = sqrt(log(K^2 / (4 pi log K))):

        t = sqrt(rate^2 + 2 log(sqrt(pi/2) / (1 - q - delta))) - rate.
    """
    q = _check_quantile(q, "q (quantile)")
    rate = _eq4_rate(n_classes)
    mod = as_modulus(modulus)
    target = _solve_for(q, mod, delta)
    c = math.log(SQRT_PI_OVER_2 / (1.0 - target))
    t = 2.0 * c / (math.sqrt(rate * rate + 2.0 * c) + rate)  # the root, written without cancellation
    return _through(mod, t)


# Coefficients of Gamma(x + 1/2) / (Gamma(x) sqrt(x)) = sum_k c_k x^{-k} (checked against mpmath).
_GAMMA_RATIO_SERIES = (1.0, -1 / 8, 1 / 128, 5 / 1024, -21 / 32768, -399 / 262144, 869 / 4194304)


def expected_latent_norm(d: int) -> float:
    """E||z||_2 for z ~ N(0, I_d): sqrt(2) Gamma((d+1)/2) / Gamma(d/2) (Remark 1; it lies in
    [sqrt(d - 1), sqrt(d)]).

    For d <= 340 the two gamma functions are computed directly; above, the ratio comes from its asymptotic
    series in 1/x, x = d/2 (seven terms: relative error below 1e-18 at x = 170).  Accurate to a few units
    in the last place for every d up to 1e300 (a log-gamma difference loses digits from d ~ 1e6 on).
    """
    integer_at_least(d, "d (latent dimension)", 1)
    try:
        d_val = float(d)
    except OverflowError:
        d_val = math.inf
    if not d_val <= 1e300:
        raise ValueError(f"d (latent dimension) must be an integer in [1, 1e300]; got {d!r}")
    if d_val <= 340:
        return math.sqrt(2.0) * math.gamma((d_val + 1) / 2.0) / math.gamma(d_val / 2.0)
    inv_x = 2.0 / d_val
    series = sum(c * inv_x**k for k, c in enumerate(_GAMMA_RATIO_SERIES))
    return math.sqrt(d_val) * series


# ---- Theorem 3: transferability --------------------------------------------------------------------

def transfer_probability_lower_bound(eta: ArrayLike, class_probs: ArrayLike, disagreement: float,
                                     modulus: Modulus | float | None = None,
                                     delta: float | None = None) -> np.ndarray | float:
    """Theorem 3, eq. (6): for classifiers f, h with P(f(g(z)) != h(g(z))) <= disagreement and
    P(C_i(f)) + disagreement <= 1/2 for all i, a single v with ||v|| <= eta fools both with probability at least

        1 - sqrt(pi/2) exp(-omega^{-1}(eta)^2 / 2) - 2 disagreement   (minus ``delta`` of a probabilistic modulus).

    ``class_probs`` are those of f.  The assumption is checked.  Any modulus of continuity works (the proof
    applies eq. (3) to the classes of f and a union bound over the disagreement set).
    """
    p = class_probabilities(class_probs)
    dis = real_scalar(disagreement, "disagreement (delta of Theorem 3)")
    if not (0.0 <= dis <= 1.0):
        raise ValueError(f"disagreement (delta of Theorem 3) must be in [0, 1]; got {disagreement!r}")
    if p.max() + dis > 0.5 + 1e-12:
        raise ValueError(
            "Theorem 3 assumes P(C_i(f)) + delta <= 1/2 for all i; "
            f"got max class probability {p.max():g} + delta {dis:g} > 1/2")
    mod = as_modulus(modulus)
    t = np.asarray(mod.inverse(eta))
    return _as_output(1.0 - SQRT_PI_OVER_2 * np.exp(-0.5 * t * t) - 2.0 * dis - _modulus_delta(mod, delta))


# ---- Theorem 4: upper bounds on the mean robustness, approximate generator -------------------------

def _theorem4_modulus(modulus: Modulus | float | None, wasserstein: object, diameter: object) -> tuple[Modulus, float]:
    """The checked modulus and the additive term wasserstein + delta * diameter."""
    w = real_scalar(wasserstein, "wasserstein (W1 distance delta)")
    if not (w >= 0 and math.isfinite(w)):
        raise ValueError(f"wasserstein (W1 distance delta) must be finite and >= 0; got {wasserstein!r}")
    mod = as_modulus(modulus)
    hint = ("; for an estimated modulus use EmpiricalModulus.concave_majorant(diameter=D), its least concave "
            "majorant, with D an upper bound on the distance between two generated points")
    if not mod.is_concave:
        raise ModulusNotConcaveError(f"Theorem 4 requires a concave modulus; {mod!r} is not concave{hint}")
    if not mod.is_finite:
        raise ModulusNotConcaveError(
            f"Theorem 4 requires a modulus that is concave on all of [0, inf) (Jensen's inequality over the "
            f"whole distribution of r_Z); {mod!r} is infinite beyond its last radius{hint}")
    extra = w
    if mod.delta > 0:
        if diameter is None:
            raise ValueError(f"a probabilistic modulus (delta={mod.delta:g}) needs diameter, an upper bound on "
                             "r_unc, for the mass where it fails: the bound adds delta * diameter")
        dia = real_scalar(diameter, "diameter")
        if not (dia >= 0 and math.isfinite(dia)):
            raise ValueError(f"diameter must be finite and >= 0; got {diameter!r}")
        extra += mod.delta * dia
    return mod, extra


def latent_mean_upper_bound(class_probs: ArrayLike | None = None, n_classes: int | None = None) -> float:
    """Upper bound on E r_Z: sum_i [phi(a_i) - a_i Phi(-a_i)] = sum_i E(Z - a_i)^+, the integral over t of
    (1 - eq. (2)); the argument of omega in Theorem 4.  Infinite when K = 1.
    """
    p = class_probabilities(class_probs, n_classes)
    total = 0.0
    for pi, ci in zip(p, _complements(p), strict=True):
        if pi == 0.0:
            continue
        if ci == 0.0:
            return math.inf
        a = -special.ndtri(pi) if pi <= 0.5 else special.ndtri(ci)
        # phi(a) - a Phi(-a) with Phi(-a) = p_i taken exactly (not recomputed from a); the term is an
        # expectation of a non-negative variable, so a rounding below 0 (p_i near 5e-324) counts as 0
        total += max(math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi) - a * pi, 0.0)
    return total


def mean_upper_bound(class_probs: ArrayLike | None = None, n_classes: int | None = None,
                     modulus: Modulus | float | None = None, wasserstein: float = 0.0,
                     diameter: float | None = None) -> float:
    """Theorem 4: if W1(g_* nu, mu) <= delta and omega is concave on [0, inf),

        E_{x ~ mu} r_unc(x) <= omega( sum_i [ -a_i Phi(-a_i) + exp(-a_i^2/2) / sqrt(2 pi) ] ) + delta.

    ``wasserstein`` is delta.  A modulus that is not concave, or infinite beyond a measured range, raises
    :class:`~advbound.modulus.ModulusNotConcaveError` (use its least concave majorant).  A probabilistic
    modulus failing on delta_m of the mass also needs ``diameter`` (an upper bound on r_unc): there r_unc
    is at most the diameter, so the bound adds delta_m * diameter.
    """
    mod, extra = _theorem4_modulus(modulus, wasserstein, diameter)
    s = latent_mean_upper_bound(class_probs, n_classes)
    return _through(mod, s) + extra


def equiprobable_mean_upper_bound(n_classes: int, modulus: Modulus | float | None = None, wasserstein: float = 0.0,
                                  diameter: float | None = None) -> float:
    """Theorem 4, K >= 5 equiprobable classes: E r_unc <= omega( log(4 pi log K) / sqrt(2 log K) ) + delta.

    The same requirements on the modulus as :func:`mean_upper_bound`.
    """
    k = integer_at_least(n_classes, "n_classes (K) for this form", 5)
    mod, extra = _theorem4_modulus(modulus, wasserstein, diameter)
    lk = math.log(k)
    return _through(mod, math.log(4 * math.pi * lk) / math.sqrt(2 * lk)) + extra


# ---- The earlier names (aliases, the same objects) -------------------------------------------------

latent_bound = latent_probability_lower_bound
theorem1_bound = probability_lower_bound
balanced_bound = balanced_probability_lower_bound
equiprobable_bound = equiprobable_probability_lower_bound
latent_radius_quantile = latent_quantile_upper_bound
robustness_quantile_bound = quantile_upper_bound
transfer_bound = transfer_probability_lower_bound
expected_latent_robustness_bound = latent_mean_upper_bound
theorem4_bound = mean_upper_bound
theorem4_equiprobable_bound = equiprobable_mean_upper_bound

#: earlier name -> current name
ALIASES = {old: globals()[old].__name__ for old in (
    "latent_bound", "theorem1_bound", "balanced_bound", "equiprobable_bound", "latent_radius_quantile",
    "robustness_quantile_bound", "transfer_bound", "expected_latent_robustness_bound", "theorem4_bound",
    "theorem4_equiprobable_bound")}

def normalized_lipschitz(lipschitz: float, latent_dim: int, mean_image_norm: float) -> float:
    """The normalised Lipschitz constant of the paper's footnote 5, ``L' = L E||z||_2 / E||g(z)||``: Remark 1's
    discussion assumes data scaled so that ``E||g(z)|| = E||z||_2``; without that scaling it applies with
    ``L'`` in place of ``L`` (``L'`` is the constant of ``c g`` with ``c = E||z||_2 / E||g(z)||``).  Remark 1's
    criterion for small adversarial perturbations is ``L' << sqrt(d)``."""
    lip, norm = real_scalar(lipschitz, "lipschitz"), real_scalar(mean_image_norm, "mean_image_norm")
    if not (0 < lip < math.inf):
        raise ValueError(f"lipschitz must be finite and > 0; got {lipschitz!r}")
    if not (0 < norm < math.inf):
        raise ValueError(f"mean_image_norm must be finite and > 0; got {mean_image_norm!r}")
    return lip * expected_latent_norm(latent_dim) / norm


__all__ = [
    "TABLE_QUANTILE", "class_probabilities", "expected_latent_norm", "normalized_lipschitz",
    "probability_lower_bound", "latent_probability_lower_bound", "balanced_probability_lower_bound",
    "equiprobable_probability_lower_bound", "transfer_probability_lower_bound",
    "quantile_upper_bound", "latent_quantile_upper_bound", "balanced_quantile_upper_bound",
    "equiprobable_quantile_upper_bound", "mean_upper_bound", "latent_mean_upper_bound",
    "equiprobable_mean_upper_bound",
    *ALIASES,
]
