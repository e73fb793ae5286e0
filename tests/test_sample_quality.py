"""Sample-quality measures (advbound.sample_quality) and the book's rule for claiming a difference
(advbound.montecarlo.compare_quantiles)."""

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import beta

from advbound import sample_quality as sq
from advbound.models import LeNet
from advbound.montecarlo import compare_intervals, compare_quantiles


def _frechet_reference(a, b):
    """The FID formula with scipy's general matrix square root (an independent algorithm)."""
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(sa @ sb).real
    return float(np.sum((ma - mb) ** 2) + np.trace(sa + sb - 2 * cross))


def test_frechet_distance_matches_an_independent_implementation_and_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) * 2 + 1
    assert sq.frechet_distance(a, b) == pytest.approx(_frechet_reference(a, b), rel=1e-8)
    assert sq.frechet_distance(a, b) == pytest.approx(sq.frechet_distance(b, a), rel=1e-8)
    assert sq.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # two Gaussians with diagonal covariances: ||m1 - m2||^2 + sum (s1 - s2)^2 for standard deviations s
    n = 200_000
    x = rng.normal(size=(n, 3)) * [1.0, 2.0, 3.0]
    y = rng.normal(size=(n, 3)) * [2.0, 2.0, 1.0] + [1.0, 0.0, 0.0]
    exact = 1.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert sq.frechet_distance(x, y) == pytest.approx(exact, rel=0.02)
    with pytest.raises(ValueError, match="same k"):
        sq.frechet_distance(a, b[:, :3])


def test_frechet_interval_is_centred_on_the_estimate_and_covers_its_spread():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + 0.3
    lo, hi = sq.frechet_interval(a, b, seed=0)
    fd = sq.frechet_distance(a, b)
    assert lo < fd < hi and (hi - fd) == pytest.approx(fd - lo)
    # two samples of one distribution: the interval is clipped at 0, where the estimator cannot go
    same = sq.frechet_interval(a, rng.normal(size=(300, 4)), seed=0)
    assert same[0] >= 0
    # the spread of the estimator over fresh samples of the same size is of the interval's size
    fresh = [sq.frechet_distance(rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + 0.3) for _ in range(60)]
    assert 0.5 < (hi - lo) / (2 * 1.96 * np.std(fresh)) < 2.0


def _probs(labels, confident):
    """One-hot-ish probabilities: the label gets 0.95 where ``confident`` else 0.5."""
    labels = torch.as_tensor(labels)
    p = torch.full((len(labels), 10), 0.0, dtype=torch.float64)
    top = torch.where(torch.as_tensor(confident), 0.95, 0.5).double()
    p[torch.arange(len(labels)), labels] = top
    p += ((1 - top) / 9)[:, None] * (p == 0)
    return p


def test_sample_quality_counts_and_clopper_pearson_intervals():
    gen = {"A": _probs([0, 1, 2, 3, 4, 5, 6, 7, 0, 0], [True] * 6 + [False] * 4),
           "B": _probs([0, 1, 2, 3, 4, 5, 6, 9, 9, 0], [True] * 10)}
    real = {"A": _probs(list(range(10)) * 2, [True] * 20), "B": _probs(list(range(10)) * 2, [True] * 19 + [False])}
    rng = np.random.default_rng(0)
    q = sq.sample_quality(gen, real, "A", rng.normal(size=(10, 3)), rng.normal(size=(20, 3)))
    agree, conf, largest, fd = q.measures
    assert agree.generated == pytest.approx(0.8) and agree.real == pytest.approx(1.0)
    assert agree.generated_ci == pytest.approx((beta.ppf(0.025, 8, 3), beta.ppf(0.975, 9, 2)))
    assert conf.generated == pytest.approx(0.6) and conf.real == pytest.approx(1.0)
    assert largest.generated == pytest.approx(0.3) and largest.real == pytest.approx(0.1)
    # targets: (a) 0.9 x real, (b) 0.8 x real, (c) 0.15; the interval decides
    assert agree.target == pytest.approx(0.9) and conf.target == pytest.approx(0.8) and largest.target == 0.15
    assert agree.verdict == "undecided" and largest.verdict == "undecided"
    assert fd.target is None and fd.verdict == "-"
    text = q.text()
    assert "(a) agreement of all classifiers" in text and "80.0%" in text and "judge of (b)-(d): A" in text
    with pytest.raises(ValueError, match="judge must be one of"):
        sq.sample_quality(gen, real, "C", rng.normal(size=(10, 3)), rng.normal(size=(20, 3)))
    with pytest.raises(ValueError, match="twice as many rows"):
        sq.sample_quality(gen, real, "A", rng.normal(size=(10, 3)), rng.normal(size=(10, 3)))


@pytest.mark.parametrize("lo, hi, higher, verdict", [(0.91, 0.95, True, "met"), (0.5, 0.89, True, "missed"),
                                                     (0.85, 0.95, True, "undecided"), (0.05, 0.12, False, "met"),
                                                     (0.16, 0.3, False, "missed"), (0.1, 0.2, False, "undecided")])
def test_measure_verdicts(lo, hi, higher, verdict):
    target = 0.9 if higher else 0.15
    m = sq.Measure("x", (lo + hi) / 2, (lo, hi), 1.0, (1.0, 1.0), target, higher)
    assert m.verdict == verdict


def test_last_linear_features_are_the_input_of_the_last_layer_and_leave_the_model_as_it_was():
    torch.manual_seed(0)
    net = LeNet(channels=1, image_size=28, width=4, hidden=16).double().train()
    x = torch.rand(7, 1, 28, 28, dtype=torch.float64)
    feats = sq.last_linear_features(net, x, batch_size=3)
    with torch.no_grad():
        net.eval()
        manual = net.classifier[:-1](net.features(x))
        net.train()
    torch.testing.assert_close(feats, manual)
    assert net.training and feats.shape == (7, 16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sq.measure_sample_quality({"a": net, "b": net}, x[:3], x, "a")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="nn.Linear"):
        sq.last_linear_features(torch.nn.Conv2d(1, 1, 3), x)


def _near_tie_model() -> torch.nn.Module:
    """A float64 linear model on 2 inputs whose logits 0 and 1 differ by 1e-9 * x[0] (class 1 ahead for x[0] > 0)
    and whose class 2 gets a largest probability of CONFIDENT + 1e-10 where x[1] = 1: both decisions, below
    float32's resolution, come out otherwise in float32."""
    lin = torch.nn.Linear(2, 3, dtype=torch.float64)
    conf = sq.CONFIDENT + 1e-10
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [1.0 + 1e-9, 0.0], [0.0, np.log(2 * conf / (1 - conf))]],
                                      dtype=torch.float64))
        lin.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), lin)


def test_working_dtype_keeps_the_decisions_of_the_models_own_dtype():
    model = _near_tie_model()
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    exact, exact_feats = sq.softmax_and_features(model, x)
    # float32 alone gets both decisions wrong: a tie (argmax 0) at the first row, confidence CONFIDENT at the third
    with torch.no_grad():
        p32 = torch.softmax(_near_tie_model().to(torch.float32)(x.float()), 1)
    assert int(p32[0].argmax()) == 0 and float(p32[2].max()) < sq.CONFIDENT
    fast, fast_feats = sq.softmax_and_features(model, x, working_dtype=torch.float32)
    assert fast.dtype == exact.dtype == torch.float64 and fast_feats.dtype == torch.float64
    assert torch.equal(fast.argmax(1), exact.argmax(1)) and int(fast[0].argmax()) == 1
    assert torch.equal(fast.max(1).values >= sq.CONFIDENT, exact.max(1).values >= sq.CONFIDENT)
    assert bool(fast[2].max() >= sq.CONFIDENT)
    # the rows far from every decision keep their float32 values; the re-made rows are the float64 ones
    assert torch.equal(fast[[0, 2]], exact[[0, 2]]) and not torch.equal(fast[[1, 3]], exact[[1, 3]])
    torch.testing.assert_close(fast, exact, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fast_feats, exact_feats)
    # a tolerance below float32's error lets the wrong confidence through: the re-check is what keeps it
    wrong, _ = sq.softmax_and_features(model, x, working_dtype=torch.float32, tolerance=1e-12)
    assert bool(wrong[2].max() < sq.CONFIDENT)
    with pytest.raises(ValueError, match="tolerance"):
        sq.softmax_and_features(model, x, working_dtype=torch.float32, tolerance=0.0)


def test_compare_intervals_claims_a_difference_only_without_overlap():
    c = compare_intervals((2.0, 1.8, 2.2), (1.0, 0.9, 1.1), (500, 500), ("LeNet", "ResNet-18"), "median ratio")
    assert c.verdict == "larger" and c.differs
    assert c.sentence.startswith("LeNet's median ratio is larger than ResNet-18's: 2 [1.8, 2.2] against 1 [0.9, 1.1]")
    assert "n = 500" in c.sentence
    c = compare_intervals((1.0, 0.9, 1.1), (2.0, 1.8, 2.2), (48, 12), ("A", "B"), "r_unc")
    assert c.verdict == "smaller" and "n = 48 and 12" in c.sentence
    c = compare_intervals((1.0, 0.9, 1.5), (1.2, 1.4, 2.0), (48, 48), ("A", "B"), "r_unc")
    assert c.verdict == "no difference detected" and not c.differs
    assert c.sentence.startswith("no difference detected at n = 48 between the r_unc of A")
    with pytest.raises(ValueError, match="low <= high"):
        compare_intervals((1.0, 2.0, 1.5), (1.0, 0.9, 1.1), (5, 5), ("A", "B"), "x")


def test_compare_quantiles_uses_order_statistic_intervals():
    rng = np.random.default_rng(3)
    far = compare_quantiles(rng.normal(5, 1, 400), rng.normal(0, 1, 400), names=("A", "B"), what="median")
    assert far.verdict == "larger"
    same = compare_quantiles(rng.normal(0, 1, 400), rng.normal(0, 1, 400), names=("A", "B"), what="median")
    assert same.verdict == "no difference detected"
    # failed attacks (inf) are order statistics: a sample mostly of inf has an infinite median
    inf = compare_quantiles(np.r_[np.ones(3), np.full(40, np.inf)], np.ones(43), names=("A", "B"))
    assert np.isinf(inf.first[0])
    with pytest.raises(ValueError, match="0.95"):
        compare_quantiles(np.ones(5), np.ones(5), level=0.9)
