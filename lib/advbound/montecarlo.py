"""Monte Carlo estimates with their standard errors, and quadrature-weighted distributions, for checking
the bounds against sampled or gridded robustness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _as_numpy(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    arr = arr.ravel()
    if arr.size == 0:
        raise ValueError(f"{name} must contain at least one sample")
    return arr


def binomial_standard_error(p: np.ndarray | float, n: int) -> np.ndarray:
    """sqrt(p (1 - p) / n): the standard error of a proportion p estimated from n independent samples (in
    float64, whatever the dtype of ``p``)."""
    p = np.asarray(p, dtype=float)
    return np.sqrt(p * (1.0 - p) / n)


def probability_at_most(robustness: np.ndarray | torch.Tensor,
                        eta: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical P(r <= eta) for each eta, with the binomial standard error sqrt(p (1 - p) / n)."""
    r = _as_numpy(robustness, "robustness")
    p = np.sort(r).searchsorted(np.atleast_1d(eta), side="right") / r.size
    return p, binomial_standard_error(p, r.size)


def margin_in_standard_errors(estimate: np.ndarray, reference: np.ndarray, se: np.ndarray) -> np.ndarray:
    """(estimate - reference) / se: how many standard errors an estimate lies above (> 0) or below (< 0) a
    reference such as a bound.  Where se = 0 (an estimated proportion of exactly 0 or 1) the margin is
    +inf, -inf or 0 according to the sign of the difference.  Computed in float64 whatever the inputs' dtype."""
    diff, se = np.broadcast_arrays(np.asarray(estimate, dtype=float) - np.asarray(reference, dtype=float),
                                   np.asarray(se, dtype=float))
    out = np.where(diff == 0, 0.0, np.copysign(np.inf, diff))  # the margin where se = 0
    return np.divide(diff, se, out=out, where=se > 0)


def weighted_probability_at_most(values: np.ndarray, weights: np.ndarray, eta: float | np.ndarray) -> np.ndarray:
    """sum of ``weights`` over the values <= eta, for each eta: P(r <= eta) when the weights are the
    probabilities of the grid points where r was computed (a quadrature, not a sample: no standard error)."""
    v, w = _check_weighted(values, weights)
    order = np.argsort(v)  # the order among equal values does not change any cumulative weight below
    cum = np.concatenate([[0.0], np.cumsum(w[order])])
    return cum[np.searchsorted(v[order], np.atleast_1d(eta), side="right")]


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of a weighted distribution: the smallest value whose cumulative weight reaches q
    (the inverse of :func:`weighted_probability_at_most`)."""
    v, w = _check_weighted(values, weights)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1]; got {q!r}")
    order = np.argsort(v)  # equal values are interchangeable: the value returned does not depend on their order
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, q * cum[-1])])  # an index < n: q * cum[-1] <= cum[-1]


def _check_weighted(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v, w = _as_numpy(values, "values"), _as_numpy(weights, "weights").astype(float)
    if v.shape != w.shape:
        raise ValueError(f"values and weights must have the same length; got {v.size} and {w.size}")
    if np.any(w < 0) or not np.isfinite(w).all():
        raise ValueError("weights must be finite and >= 0")
    return v, w


def class_proportions(labels: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """Empirical class probabilities p_i = P(f(g(z)) = i) from sampled labels."""
    lab = _as_numpy(labels, "labels")
    if lab.min() < 0 or lab.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes - 1}]")
    return np.bincount(lab.astype(np.int64), minlength=n_classes) / lab.size


def quantile_with_failures(values: np.ndarray | torch.Tensor, q: float) -> float:
    """Linear-interpolated ``q`` quantile (numpy's default) where failed attacks are ``+inf``: the result is
    ``inf`` when an order statistic it interpolates is.  An empty sample raises ``ValueError``."""
    v = np.sort(_as_numpy(values, "values").astype(float))
    pos = q * (v.size - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    if not np.isfinite(v[hi]):
        return float("inf")
    return float(v[lo] + (pos - lo) * (v[hi] - v[lo]))


def quantile_interval(values: np.ndarray | torch.Tensor, q: float, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval ``[X_(j), X_(k)]`` for the ``q`` quantile from order statistics.

    With ``B`` the number of the ``n`` samples at or below the true quantile, ``B ~ Binomial(n, q)`` for a
    continuous distribution, and ``P(X_(j) <= xi_q <= X_(k)) >= P(j <= B <= k - 1)``.  ``j`` is the largest
    rank with ``P(B <= j - 1) <= (1 - level) / 2`` and ``k`` the smallest with ``P(B >= k) <= (1 - level) / 2``,
    so the coverage is at least ``level`` (equal-tailed; exact, not asymptotic).  When no rank qualifies the
    end is ``-inf`` / ``+inf`` (too few samples); ``+inf`` samples (failed attacks) are ordinary order
    statistics, so an upper end can be ``inf``.
    """
    from scipy.stats import binom

    v = np.sort(_as_numpy(values, "values").astype(float))
    if np.isnan(v).any():
        raise ValueError("values must not contain NaN")
    if not (0.0 < q < 1.0):
        raise ValueError(f"q must be in (0, 1); got {q!r}")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    n, tail = v.size, (1.0 - level) / 2.0
    ranks = np.arange(1, n + 1)
    below = binom.cdf(ranks - 1, n, q)            # P(B <= r - 1) for r = 1..n
    above = binom.sf(ranks - 1, n, q)             # P(B >= r)
    j = ranks[below <= tail]
    k = ranks[above <= tail]
    lo = float(v[j[-1] - 1]) if j.size else -np.inf
    hi = float(v[k[0] - 1]) if k.size else np.inf
    return lo, hi


def dkw_half_width(n: int, level: float = 0.95) -> float:
    """Half-width ``sqrt(log(2 / (1 - level)) / (2 n))`` of the Dvoretzky-Kiefer-Wolfowitz band: with
    probability at least ``level`` the empirical cdf of ``n`` independent samples lies within it of the true
    cdf at *every* point simultaneously (Massart's constant, so the band is exact, not asymptotic).  It is the
    test for "a Monte Carlo distribution equals a bound over a whole grid", where per-point standard errors
    would be read many times."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    return float(np.sqrt(np.log(2.0 / (1.0 - level)) / (2.0 * int(n))))


def proportion_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) confidence interval for a proportion ``successes / n``."""
    from scipy.stats import beta

    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    if isinstance(successes, bool) or int(successes) != successes or not 0 <= successes <= n:
        raise ValueError(f"successes must be an integer in [0, n = {n}]; got {successes!r}")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    tail = (1.0 - level) / 2.0
    lo = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1.0 - tail, successes + 1, n - successes))
    return lo, hi


__all__ = [
    "Comparison",
    "binomial_standard_error",
    "bound_margin_table",
    "class_proportions",
    "compare_intervals",
    "compare_proportions",
    "compare_quantiles",
    "dkw_half_width",
    "margin_in_standard_errors",
    "probability_at_most",
    "proportion_interval",
    "quantile_interval",
    "quantile_with_failures",
    "weighted_probability_at_most",
    "weighted_quantile",
]


def bound_margin_table(results: dict[str, dict[str, np.ndarray]], grid: np.ndarray, at: tuple[float, ...],
                       *, variable: str = "eta", heading: str = "estimate, bound", name_width: int = 18,
                       column_width: int = 31) -> tuple[str, dict[tuple[str, float], float]]:
    """A text table comparing Monte Carlo estimates with a bound at a few grid points.

    ``results[name]`` holds arrays ``est``, ``se`` (its standard error) and ``bound`` over ``grid``; for each
    value in ``at`` the nearest grid point is used.  Each cell reads ``estimate±se, bound (margin se)``, the
    margin being :func:`margin_in_standard_errors`.  Returns the text and the margins by ``(name, value)``.
    """
    g = np.asarray(grid, dtype=float)
    lines = [f"{'':<{name_width}}" + "".join(f"{f'{variable} = {v:g}: {heading}':>{column_width}}" for v in at)]
    margins: dict[tuple[str, float], float] = {}
    for name, res in results.items():
        cells = []
        for v in at:
            i = int(np.argmin(np.abs(g - v)))
            margins[name, v] = float(margin_in_standard_errors(res["est"][i], res["bound"][i], res["se"][i]))
            cells.append(f"{res['est'][i]:.3f}±{res['se'][i]:.3f}, {res['bound'][i]:.3f} ({margins[name, v]:+.1f} se)")
        lines.append(f"{name:<{name_width}}" + "".join(f"{c:>{column_width}}" for c in cells))
    return "\n".join(lines), margins


# --------------------------------------------------------------------------------------------------
# The book's one rule for claiming a difference
# --------------------------------------------------------------------------------------------------

def _interval_text(value: float, lo: float, hi: float, fmt: str) -> str:
    return f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"


@dataclass(frozen=True)
class Comparison:
    """Two measured quantities compared under the book's one statistical standard (:func:`compare_quantiles`).

    ``verdict`` is ``"larger"`` or ``"smaller"`` (the first quantity relative to the second, claimed only when
    the two 95% intervals do not overlap) or ``"no difference detected"``; ``sentence`` states it with the
    numbers, the intervals and the sample sizes."""

    verdict: str
    sentence: str
    first: tuple[float, float, float]     # estimate, interval low, interval high
    second: tuple[float, float, float]
    sizes: tuple[int, int]

    @property
    def differs(self) -> bool:
        return self.verdict != "no difference detected"


def compare_intervals(first: tuple[float, float, float], second: tuple[float, float, float], sizes: tuple[int, int],
                      names: tuple[str, str], what: str, fmt: str = "{:.3g}") -> Comparison:
    """The book's rule on two estimates with their 95% intervals ``(estimate, low, high)``: a difference is
    claimed only when the intervals do not overlap; otherwise "no difference detected at n = ...".

    Two non-overlapping 95% intervals are a conservative two-sample test (for independent estimates its level is
    well below 5%).  ``names`` name the two things measured, ``what`` the quantity (e.g. ``"median r_in / r_unc"``);
    ``sizes`` are the sample sizes behind each estimate."""
    (a, alo, ahi), (b, blo, bhi) = first, second
    for label, (v, lo, hi) in (("first", first), ("second", second)):
        if any(np.isnan(x) for x in (v, lo, hi)) or not lo <= hi:
            raise ValueError(f"{label} must be (estimate, low, high) with low <= high and no NaN; got {(v, lo, hi)}")
    ta, tb = _interval_text(a, alo, ahi, fmt), _interval_text(b, blo, bhi, fmt)
    n = f"n = {sizes[0]}" if sizes[0] == sizes[1] else f"n = {sizes[0]} and {sizes[1]}"
    if alo > bhi or ahi < blo:
        verdict = "larger" if alo > bhi else "smaller"
        sentence = (f"{names[0]}'s {what} is {verdict} than {names[1]}'s: {ta} against {tb} "
                    f"(95% intervals do not overlap, {n})")
    else:
        verdict = "no difference detected"
        sentence = (f"no difference detected at {n} between the {what} of {names[0]}, {ta}, and of {names[1]}, "
                    f"{tb} (95% intervals overlap)")
    return Comparison(verdict, sentence, (float(a), float(alo), float(ahi)), (float(b), float(blo), float(bhi)),
                      (int(sizes[0]), int(sizes[1])))


def compare_quantiles(first: np.ndarray | torch.Tensor, second: np.ndarray | torch.Tensor, q: float = 0.5, *,
                      names: tuple[str, str] = ("A", "B"), what: str = "median", level: float = 0.95,
                      fmt: str = "{:.3g}") -> Comparison:
    """Compare the ``q`` quantiles of two samples with their order-statistic intervals
    (:func:`quantile_interval`) under the book's rule (:func:`compare_intervals`).  ``+inf`` values (failed
    attacks) are ordinary order statistics."""
    if level != 0.95:
        raise ValueError(f"level must be 0.95, the level every comparison of the book uses; got {level!r}")
    ests, sizes = [], []
    for label, values in (("first", first), ("second", second)):
        v = _as_numpy(values, label).astype(float)
        if v.size < 1:
            raise ValueError(f"{label} must hold at least one value")
        lo, hi = quantile_interval(v, q, level)
        ests.append((quantile_with_failures(v, q), lo, hi))
        sizes.append(int(v.size))
    return compare_intervals(ests[0], ests[1], (sizes[0], sizes[1]), names, what, fmt)


def compare_proportions(first: tuple[int, int], second: tuple[int, int], *, names: tuple[str, str] = ("A", "B"),
                        what: str = "fraction", fmt: str = "{:.3g}") -> Comparison:
    """Compare two proportions ``(successes, n)`` with their 95% Clopper-Pearson intervals
    (:func:`proportion_interval`) under the book's rule (:func:`compare_intervals`)."""
    ests = []
    for label, pair in (("first", first), ("second", second)):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(f"{label} must be a pair (successes, n); got {pair!r}")
        k, n = pair
        lo, hi = proportion_interval(k, n)
        ests.append((k / n, lo, hi))
    return compare_intervals(ests[0], ests[1], (int(first[1]), int(second[1])), names, what, fmt)
