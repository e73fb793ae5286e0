"""Monte Carlo proportions and quadrature-weighted distributions against brute force."""

from __future__ import annotations

import math

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


def test_quantile_interval_ranks_are_the_tightest_equal_tailed_ones():
    """The ranks (j, k) against the binomial law of the count below the true quantile, by brute force."""
    from scipy.stats import binom

    from advbound.montecarlo import quantile_interval

    n, q, tail = 500, 0.25, 0.025
    lo, hi = quantile_interval(np.arange(1.0, n + 1), q)  # X_(r) = r, so the ends are the ranks
    j, k = int(lo), int(hi)
    assert binom.cdf(j - 1, n, q) <= tail < binom.cdf(j, n, q)          # j is the largest admissible rank
    assert binom.sf(k - 1, n, q) <= tail < binom.sf(k - 2, n, q)        # k is the smallest admissible rank
    assert binom.cdf(k - 1, n, q) - binom.cdf(j - 1, n, q) >= 0.95      # coverage, exactly


def test_quantile_interval_covers_the_true_quantile_95_percent_of_the_time():
    from advbound.montecarlo import quantile_interval

    rng = np.random.default_rng(1)
    trials, n = 3000, 200
    hits = sum(lo <= 0.25 <= hi for lo, hi in (quantile_interval(rng.random(n), 0.25) for _ in range(trials)))
    p = hits / trials
    se = np.sqrt(0.95 * 0.05 / trials)
    assert p >= 0.95 - 3 * se           # at least the nominal level (up to Monte Carlo error)
    assert p <= 0.985                   # and not a trivially wide interval


def test_quantile_interval_edge_cases():
    from advbound.montecarlo import quantile_interval

    # n = 5: P(B = 0) = 0.75**5 = 0.24 > 0.025, so no lower rank qualifies; P(B >= 4) = 0.0156 <= 0.025 while
    # P(B >= 3) = 0.104, so the upper end is X_(4) (here the value 3.0)
    assert quantile_interval(np.arange(5.0), 0.25) == (-np.inf, 3.0)
    lo, hi = quantile_interval(np.r_[np.ones(400), np.full(100, np.inf)], 0.25)
    assert (lo, hi) == (1.0, 1.0)
    with pytest.raises(ValueError, match="q must be in"):
        quantile_interval(np.ones(10), 1.0)
    with pytest.raises(ValueError, match="level must be in"):
        quantile_interval(np.ones(10), 0.5, level=1.5)
    with pytest.raises(ValueError, match="NaN"):
        quantile_interval(np.array([1.0, np.nan]), 0.5)


@pytest.mark.parametrize(("k", "n"), [(0, 20), (3, 20), (52, 2000), (20, 20)])
def test_proportion_interval_is_clopper_pearson(k, n):
    from scipy.stats import binomtest

    from advbound.montecarlo import proportion_interval

    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert proportion_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_proportion_interval_bad_input():
    from advbound.montecarlo import proportion_interval

    with pytest.raises(ValueError, match=r"successes must be an integer in \[0, n = 5\]"):
        proportion_interval(6, 5)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        proportion_interval(0, 0)


def test_bound_margin_table_reads_the_nearest_grid_point():
    from advbound.montecarlo import bound_margin_table

    grid = np.array([0.0, 0.19, 0.31, 0.5])
    res = {"a": {"est": np.array([0.0, 0.30, 0.4, 0.6]), "se": np.array([1.0, 0.01, 0.01, 0.02]),
                 "bound": np.array([0.0, 0.28, 0.5, 0.7])}}
    text, margins = bound_margin_table(res, grid, (0.2, 0.5), variable="t", heading="est, bound", name_width=3,
                                       column_width=25)
    assert margins == {("a", 0.2): pytest.approx(2.0), ("a", 0.5): pytest.approx(-5.0)}
    lines = text.splitlines()
    assert lines[0] == "   " + "t = 0.2: est, bound".rjust(25) + "t = 0.5: est, bound".rjust(25)
    assert lines[1] == "a  " + "0.300±0.010, 0.280 (+2.0 se)".rjust(25) + "0.600±0.020, 0.700 (-5.0 se)".rjust(25)


def test_dkw_half_width_closed_form_and_coverage():
    """sqrt(log(2 / 0.05) / (2 n)); the sup distance of an empirical cdf of uniforms stays inside it in at
    least 95% of repetitions (exact Massart bound, measured here by simulation)."""
    from advbound.montecarlo import dkw_half_width

    assert dkw_half_width(20_000) == pytest.approx(math.sqrt(math.log(40) / 40_000), rel=1e-15)
    rng = np.random.default_rng(0)
    n, reps, inside = 200, 2000, 0
    grid = np.arange(1, n + 1) / n
    for _ in range(reps):
        u = np.sort(rng.uniform(size=n))
        sup = max(np.max(grid - u), np.max(u - (grid - 1 / n)))   # Kolmogorov-Smirnov statistic
        inside += sup <= dkw_half_width(n)
    assert inside / reps >= 0.95
    with pytest.raises(ValueError, match="n must"):
        dkw_half_width(0)
    with pytest.raises(ValueError, match="level"):
        dkw_half_width(10, level=1.0)


def test_compare_proportions_uses_clopper_pearson_intervals():
    from advbound.montecarlo import compare_proportions, proportion_interval

    far = compare_proportions((45, 50), (5, 50), names=("A", "B"), what="share")
    assert far.verdict == "larger" and "do not overlap" in far.sentence and "n = 50" in far.sentence
    assert far.first[1:] == proportion_interval(45, 50)
    near = compare_proportions((10, 12), (9, 12), names=("A", "B"), what="share")
    assert near.verdict == "no difference detected" and near.sentence.startswith("no difference detected at n = 12")
    with pytest.raises(ValueError, match="pair"):
        compare_proportions((1, 2, 3), (1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="successes"):
        compare_proportions((5, 4), (1, 2))


def test_compare_quantiles_takes_tensors():
    """The chapters pass torch tensors: the sizes in the sentence are the samples' sizes."""
    from advbound.montecarlo import compare_quantiles

    a, b = torch.arange(40, dtype=torch.float64), torch.arange(30, dtype=torch.float64) + 100
    c = compare_quantiles(a, b, names=("A", "B"), what="median")
    assert c.verdict == "smaller" and c.sizes == (40, 30) and "n = 40 and 30" in c.sentence
# ---------------------------------------------------------------- edges and options (mutation testing, issue 20)

def test_tensors_that_require_grad_and_float32_inputs_are_read_in_float64():
    r = torch.tensor([0.3, 0.1, 0.2], requires_grad=True)
    p, se = probability_at_most(r, [0.15, 0.25])
    np.testing.assert_array_equal(p, [1 / 3, 2 / 3])
    p32 = np.float32(0.1)
    exact = float(p32)  # the float32 number, computed with in float64
    assert binomial_standard_error(p32, 7) == pytest.approx(np.sqrt(exact * (1 - exact) / 7), rel=1e-15)
    got = margin_in_standard_errors(np.float32(0.3), np.float32(0.1), np.float32(0.07))
    assert got.dtype == np.float64
    assert got == pytest.approx((float(np.float32(0.3)) - float(np.float32(0.1))) / float(np.float32(0.07)),
                                rel=1e-15)


def test_margin_with_zero_standard_error_raises_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = margin_in_standard_errors([[0.5], [0.75]], [0.5, 0.25], [0.0, 0.125])
    np.testing.assert_array_equal(got, [[0.0, 2.0], [np.inf, 4.0]])


def test_weighted_quantile_ends():
    assert weighted_quantile([3.0, 1.0, 2.0], [1, 1, 1], 0.0) == 1.0
    assert weighted_quantile([3.0, 1.0, 2.0], [1, 1, 1], 1.0) == 3.0
    assert weighted_quantile([3.0, 1.0, 2.0], [1, 1, 0], 1.0) == 3.0  # the largest value with weight, not beyond
    assert weighted_quantile([3.0, 1.0, 2.0], [0, 1, 1], 1.0) == 2.0
    for q in (-0.1, 1.1):
        with pytest.raises(ValueError, match="q must be in"):
            weighted_quantile([1.0], [1.0], q)
    with pytest.raises(ValueError, match="weights must be finite"):
        weighted_quantile([1.0, 2.0], [1.0, np.inf], 0.5)


def test_class_proportions_have_one_entry_per_class():
    np.testing.assert_array_equal(class_proportions(np.array([0, 0, 1, 0]), 4), [0.75, 0.25, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        class_proportions([-1, 0], 3)


def test_quantile_interval_small_samples():
    """Closed forms from the binomial law: n = 1 gives no finite end; with n = 6 and q = 1/2,
    P(B <= 0) = 1/64 <= 0.025 < P(B <= 1) = 7/64, so the lower end is X_(1), and symmetrically X_(6)."""
    from advbound.montecarlo import quantile_interval

    assert quantile_interval([5.0], 0.5) == (-np.inf, np.inf)
    assert quantile_interval([4.0, 1.0, 6.0, 2.0, 3.0, 5.0], 0.5) == (1.0, 6.0)
    # a tail exactly equal to a binomial probability counts: n = 2, q = 1/2, level 1/2 (tail 1/4 = P(B = 0))
    assert quantile_interval([2.0, 1.0], 0.5, level=0.5) == (1.0, 2.0)
    for q in (0.0, 1.0):
        with pytest.raises(ValueError, match="q must be in"):
            quantile_interval([1.0, 2.0], q)
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match="level must be in"):
            quantile_interval([1.0, 2.0], 0.5, level=level)


def test_proportion_interval_arguments():
    from scipy.stats import beta

    from advbound.montecarlo import proportion_interval

    assert proportion_interval(0, 1) == pytest.approx((0.0, float(beta.ppf(0.975, 1, 1))))
    assert proportion_interval(1, 1) == pytest.approx((float(beta.ppf(0.025, 1, 1)), 1.0))
    for successes, n, name in ((1, 2.5, "n must be"), (1.5, 3, "successes must be"), (True, 3, "successes must be"),
                               (1, True, "n must be")):
        with pytest.raises(ValueError, match=name):
            proportion_interval(successes, n)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="level must be in"):
            proportion_interval(1, 3, level=level)


def test_bound_margin_table_defaults():
    from advbound.montecarlo import bound_margin_table

    res = {"a": {"est": np.array([0.3]), "se": np.array([0.01]), "bound": np.array([0.28])}}
    text, _ = bound_margin_table(res, np.array([0.2]), (0.2,))
    lines = text.splitlines()
    assert lines[0] == " " * 18 + "eta = 0.2: estimate, bound".rjust(31)
    assert lines[1] == "a".ljust(18) + "0.300±0.010, 0.280 (+2.0 se)".rjust(31)


# ---------------------------------------------------------------- second mutation round (issue 20)

@pytest.mark.parametrize("n", [1, 2, 5, 11, 40])
def test_quantile_with_failures_is_numpy_linear_quantile_on_finite_samples(n: int) -> None:
    """Without failures it is numpy's default (linear) quantile: position q (n - 1) between order statistics."""
    from advbound.montecarlo import quantile_with_failures

    values = np.random.default_rng(n).normal(size=n) * 3 + 10  # positive, unsorted
    for q in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        assert quantile_with_failures(torch.tensor(values), q) == pytest.approx(np.quantile(values, q), rel=1e-14)
    assert quantile_with_failures([2.0, 4.0, 1.0], 0.75) == 3.0  # 1 + 0.75 * 2 = 2.5: halfway between 2 and 4


def test_quantile_with_failures_is_infinite_only_where_it_interpolates_a_failure() -> None:
    """Sorted (1, 2, 3, inf): position q * 3; q = 0.5 lies between 2 and 3 (2.5), q = 0.7 between 3 and inf."""
    from advbound.montecarlo import quantile_with_failures

    values = np.array([np.inf, 2.0, 1.0, 3.0])
    assert quantile_with_failures(values, 0.5) == 2.5
    assert quantile_with_failures(values, 2 / 3) == pytest.approx(3.0, rel=1e-14)
    assert quantile_with_failures(values, 0.7) == math.inf
    assert quantile_with_failures([np.inf], 0.5) == math.inf
    assert quantile_with_failures([7.0], 0.5) == 7.0
    with pytest.raises(ValueError, match="values must contain at least one sample"):
        quantile_with_failures([], 0.5)


def test_margin_is_computed_in_float64_from_extended_precision_inputs() -> None:
    """Long doubles are rounded to float64 first: 1 / float64(1/49) = 49.00000000000001, while the quotient in long
    double rounds to 49 (on machines where long double is wider than float64; elsewhere both are the same)."""
    third = np.longdouble(1) / 3
    se = np.longdouble(1) / 49
    got = margin_in_standard_errors(np.longdouble(1), np.longdouble(0), se)
    assert got.dtype == np.float64 and got == 1.0 / float(se)
    got = margin_in_standard_errors(third, np.longdouble(0), 1.0)
    assert got.dtype == np.float64 and got == float(third)
    got = margin_in_standard_errors(0.0, -third, 1.0)
    assert got.dtype == np.float64 and got == float(third)


def test_dkw_half_width_at_its_smallest_arguments() -> None:
    """n = 1 is allowed (sqrt(log 40 / 2)); a bool is not a sample size; the level must lie strictly in (0, 1)."""
    from advbound.montecarlo import dkw_half_width

    assert dkw_half_width(1) == pytest.approx(math.sqrt(math.log(40) / 2), rel=1e-15)
    assert dkw_half_width(8, level=0.5) == pytest.approx(math.sqrt(math.log(4) / 16), rel=1e-15)
    for bad in (True, 2.5, -1):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            dkw_half_width(bad)  # type: ignore[arg-type]
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match="level must be in"):
            dkw_half_width(10, level=level)


def test_bound_margin_table_finds_the_nearest_point_in_float64() -> None:
    """A half-precision grid (0, 1000, 1001): 1000.6 is nearest to 1001 (in float16 it would round to 1000.5, a
    tie resolved towards 1000)."""
    from advbound.montecarlo import bound_margin_table

    grid = np.array([0.0, 1000.0, 1001.0], dtype=np.float16)
    res = {"a": {"est": np.array([0.0, 0.5, 0.6]), "se": np.array([1.0, 0.1, 0.1]), "bound": np.array([0.0, 0.5, 0.4])}}
    _, margins = bound_margin_table(res, grid, (1000.6,))
    assert margins == {("a", 1000.6): pytest.approx(2.0)}


def _interval(value: float, lo: float, hi: float, fmt: str = "{:.3g}") -> str:
    return f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def test_compare_intervals_sentences_and_fields() -> None:
    """The book's rule, word for word: names in order, the quantity, the intervals, one n or both."""
    from advbound.montecarlo import compare_intervals

    a, b = (2.0, 1.5, 2.5), (1e-5, 0.0, 1.0)
    c = compare_intervals(a, b, (12, 12), ("P", "Q"), "mean")
    assert c.verdict == "larger" and c.differs
    assert c.sentence == ("P's mean is larger than Q's: 2 [1.5, 2.5] against 1e-05 [0, 1] "
                          "(95% intervals do not overlap, n = 12)")
    assert (c.first, c.second, c.sizes) == (a, b, (12, 12))
    c = compare_intervals(b, a, (12, 7), ("P", "Q"), "mean", fmt="{:.1f}")
    assert c.verdict == "smaller"
    assert c.sentence == ("P's mean is smaller than Q's: 0.0 [0.0, 1.0] against 2.0 [1.5, 2.5] "
                          "(95% intervals do not overlap, n = 12 and 7)")
    # intervals that touch overlap: no difference, in either order
    for first, second in (((1.0, 0.5, 1.5), (2.0, 1.5, 2.5)), ((2.0, 1.5, 2.5), (1.0, 0.5, 1.5))):
        c = compare_intervals(first, second, (5, 5), ("P", "Q"), "mean")
        assert c.verdict == "no difference detected" and not c.differs
        assert c.sentence == (f"no difference detected at n = 5 between the mean of P, {_interval(*first)}, and of Q, "
                              f"{_interval(*second)} (95% intervals overlap)")
    # a degenerate interval (low = high) is allowed
    assert compare_intervals((1.0, 1.0, 1.0), (3.0, 3.0, 3.0), (1, 1), ("P", "Q"), "mean").verdict == "smaller"


@pytest.mark.parametrize("first, second, match", [
    ((np.nan, 0.0, 1.0), (1.0, 0.0, 1.0), "^first must be"), ((1.0, 2.0, 1.0), (1.0, 0.0, 1.0), "^first must be"),
    ((1.0, 0.0, 1.0), (1.0, 0.0, np.nan), "^second must be"), ((1.0, 0.0, 1.0), (1.0, 2.0, 1.0), "^second must be"),
])
def test_compare_intervals_names_the_bad_interval(first: tuple[float, float, float],
                                                 second: tuple[float, float, float], match: str) -> None:
    from advbound.montecarlo import compare_intervals

    with pytest.raises(ValueError, match=match):
        compare_intervals(first, second, (5, 5), ("P", "Q"), "mean")


def test_compare_quantiles_sentence_with_defaults_and_options() -> None:
    """Each estimate is the linear quantile with its order-statistic interval; failed attacks (inf) count."""
    from advbound.montecarlo import compare_quantiles, quantile_interval

    a = np.r_[np.arange(10.0), np.full(10, np.inf)]
    b = np.arange(20.0) * 1e-5
    c = compare_quantiles(a, b)
    ia, ib = quantile_interval(a, 0.5), quantile_interval(b, 0.5)
    assert c.first == (math.inf, *ia) and c.second == (pytest.approx(9.5e-5), *ib)
    assert c.sentence == (f"A's median is larger than B's: {_interval(math.inf, *ia)} against {_interval(9.5e-5, *ib)} "
                          "(95% intervals do not overlap, n = 20)")
    c = compare_quantiles(b, a, 0.25, names=("P", "Q"), what="lower quartile", fmt="{:.2e}")
    ja, jb = quantile_interval(a, 0.25), quantile_interval(b, 0.25)
    assert c.first == (pytest.approx(np.quantile(b, 0.25)), *jb) and c.second == (np.quantile(a, 0.25), *ja)
    assert c.sentence.startswith(f"P's lower quartile is smaller than Q's: {_interval(c.first[0], *jb, fmt='{:.2e}')} "
                                 f"against {_interval(c.second[0], *ja, fmt='{:.2e}')}")
    one = compare_quantiles([1.0], [2.0])  # one value each: intervals of -inf to inf
    assert one.first == (1.0, -math.inf, math.inf) and one.verdict == "no difference detected"
    for args, match in ((([], [1.0]), "^first must contain"), (([1.0], []), "^second must contain")):
        with pytest.raises(ValueError, match=match):
            compare_quantiles(*args)
    with pytest.raises(ValueError, match="level must be 0.95"):
        compare_quantiles(a, b, level=0.9)


def test_compare_proportions_sentence_with_defaults_and_options() -> None:
    from scipy.stats import binomtest

    from advbound.montecarlo import compare_proportions

    ia = binomtest(45, 50).proportion_ci(confidence_level=0.95, method="exact")
    ib = binomtest(5, 60).proportion_ci(confidence_level=0.95, method="exact")
    c = compare_proportions((45, 50), (5, 60))
    assert c.first == pytest.approx((0.9, ia.low, ia.high), abs=1e-12)
    assert c.second == pytest.approx((5 / 60, ib.low, ib.high), abs=1e-12)
    assert c.sentence == (f"A's fraction is larger than B's: {_interval(*c.first)} against {_interval(*c.second)} "
                          "(95% intervals do not overlap, n = 50 and 60)")
    c = compare_proportions((5, 60), (45, 50), names=("P", "Q"), what="success rate", fmt="{:.1%}")
    assert c.sentence == (f"P's success rate is smaller than Q's: {_interval(5 / 60, ib.low, ib.high, '{:.1%}')} "
                          f"against {_interval(0.9, ia.low, ia.high, '{:.1%}')} "
                          "(95% intervals do not overlap, n = 60 and 50)")
    # a lower end below 1e-4 is printed with an exponent, "{:.3g}" style
    lo = binomtest(1, 1000).proportion_ci(confidence_level=0.95, method="exact")
    c = compare_proportions((1, 1000), (1, 1000))
    text = _interval(0.001, lo.low, lo.high)
    assert c.sentence == (f"no difference detected at n = 1000 between the fraction of A, {text}, "
                          f"and of B, {text} (95% intervals overlap)")
    assert "e-05" in c.sentence
    for first, second, match in (([1, 2], (1, 2), "^first must be a pair"),
                                 ((1, 2), (1, 2, 3), "^second must be a pair")):
        with pytest.raises(ValueError, match=match):
            compare_proportions(first, second)  # type: ignore[arg-type]
