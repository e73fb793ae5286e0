"""Tests of the pieces behind the chapter "What the theory allows": the invertible generator, classifiers
linear in the latent space and linearity measures, Lipschitz bounds of networks, Clopper-Pearson intervals,
the ray search, Theorem 2's check with an approximate inversion, and the r_in / r_unc gap figure."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from advbound import bounds
from advbound.attacks.ray import ray_search
from advbound.classifiers import AffineClassifier, ConeClassifier, half_space_classifier, sector_classifier
from advbound.generators import CircleGenerator, InvertibleGenerator, IsometricLinearGenerator
from advbound.latent_linear import LatentClassifier, decision_gradients, direction_spread, fit_linear_classifier
from advbound.lipschitz import dcgan_lipschitz_bound, lipschitz_bound, power_iteration_norm, schur_norm_bound
from advbound.models import DCGANGenerator, init_dcgan_weights
from advbound.montecarlo import class_proportions, probability_at_most, proportion_interval
from advbound.projection import ProjectionClassifier, theorem2_check

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- InvertibleGenerator -----------------------------------------------------------------------------

def test_invertible_generator_inverse_is_exact_on_the_range_and_lipschitz_bound_holds():
    g = InvertibleGenerator((5, 12, 30, 70), slope=0.2, seed=1)
    z = torch.randn(2000, 5, generator=_gen(0), dtype=DT)
    x = g(z)
    assert x.shape == (2000, 70)
    torch.testing.assert_close(g.inverse(x), z, atol=1e-9, rtol=0)
    # Lipschitz: the product of spectral norms bounds every pairwise ratio and every local stretch
    z2 = z + 0.3 * torch.randn(2000, 5, generator=_gen(1), dtype=DT)
    ratios = (g(z2) - x).norm(dim=1) / (z2 - z).norm(dim=1)
    assert float(ratios.max()) <= g.lipschitz_bound()
    jac = torch.func.vmap(torch.func.jacrev(lambda v: g(v[None])[0]))(z[:200])
    assert float(torch.linalg.matrix_norm(jac, 2).max()) <= g.lipschitz_bound()
    assert g.modulus.lipschitz == g.lipschitz_bound()


def test_invertible_generator_is_not_linear():
    """g(z1 + z2) - g(z1) - g(z2) + g(0) vanishes for an affine map; here it does not."""
    g = InvertibleGenerator((4, 10, 30), slope=0.2, seed=0)
    a, b = torch.randn(2, 100, 4, generator=_gen(2), dtype=DT)
    defect = (g(a + b) - g(a) - g(b) + g(torch.zeros_like(a))).norm(dim=1)
    assert float(defect.median()) > 1e-2


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=(5,)), "at least"),
    (dict(widths=(5, 4)), "non-decreasing"),
    (dict(widths=(5, 6), slope=0.0), "slope"),
    (dict(widths=(5, 6), slope=1.5), "slope"),
    (dict(widths=(0, 6)), "widths"),
])
def test_invertible_generator_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InvertibleGenerator(**kwargs)


# ---- LatentClassifier and Remark 4 ---------------------------------------------------------------------

def test_latent_half_space_meets_eq2_with_a_nonlinear_generator_and_sectors_lie_above():
    """Remark 4 with a non-linear g: f = h o g^{-1}, h a half-space; r_Z is exact and its distribution
    equals eq. (2) (within 3 standard errors); K = 3 sectors lie more than 5 standard errors above it."""
    d = 6
    g = InvertibleGenerator((d, 12, 24, 48), seed=3)
    z = torch.randn(200_000, d, generator=_gen(4), dtype=DT)
    x = g(z)
    normal = torch.tensor([0.6, -0.8, 0, 0, 0, 0], dtype=DT)
    half = half_space_classifier(normal, 0.3)
    f = LatentClassifier(half.weight, half.bias, g.inverse)
    labels = f(x).argmax(1)
    assert torch.equal(labels, f.on_latent(z).argmax(1))  # f(g(z)) = h(z)
    r = f.latent_robustness(z)
    torch.testing.assert_close(r, (z @ normal - 0.3).abs())
    t = np.array([0.05, 0.2, 0.5, 1.0])
    est, se = probability_at_most(r, t)
    bound = bounds.latent_probability_lower_bound(t, class_proportions(labels, 2))
    assert np.all(np.abs(est - bound) <= 3 * se)
    sectors = sector_classifier(3, dims=d)
    fs = LatentClassifier(sectors.weight, sectors.bias, g.inverse)
    rs = fs.latent_robustness(z)
    est3, se3 = probability_at_most(rs, t)
    bound3 = bounds.latent_probability_lower_bound(t, class_proportions(fs(x).argmax(1), 3))
    assert np.all(est3 - bound3 > 5 * se3)


def test_latent_classifier_checks_the_encoder_output():
    w = torch.eye(3, dtype=DT)[:2]
    clf = LatentClassifier(w, None, lambda x: x[:, :2])
    with pytest.raises(ValueError, match="encoder must return"):
        clf(torch.zeros(4, 3, dtype=DT))
    with pytest.raises(ValueError, match="encoder must be a callable"):
        LatentClassifier(w, None, "not callable")  # type: ignore[arg-type]


# ---- fit_linear_classifier --------------------------------------------------------------------------------

def test_fit_linear_classifier_is_a_stationary_point_and_ignores_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    w_true = rng.normal(size=(3, 5))
    y = (x @ w_true.T + rng.gumbel(size=(600, 3))).argmax(axis=1)
    fit = fit_linear_classifier(x, y, 3, l2=1e-3)
    assert fit.grad_norm < 1e-7
    # a small move of the solution in any direction increases the (convex) objective
    from advbound.latent_linear import _softmax_loss
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean()))
    ws = fit.weight.numpy() * scale
    params = np.concatenate([ws.ravel(), fit.bias.numpy() + ws @ mean / scale])
    onehot = np.eye(3)[y]
    base, _ = _softmax_loss(params, (x - mean) / scale, onehot, 1e-3)
    assert abs(base - fit.loss) < 1e-12
    for _ in range(5):
        step = 1e-3 * rng.normal(size=params.size)
        assert _softmax_loss(params + step, (x - mean) / scale, onehot, 1e-3)[0] > base
    # the same data in other units (and shifted) give the same classifier on the same points
    fit2 = fit_linear_classifier(1000 * x + 5, y, 3, l2=1e-3)
    assert torch.equal(fit2.predict(1000 * x + 5), fit.predict(x))
    # the true direction is recovered well (logit differences are linear in x)
    cos = np.dot((fit.weight[0] - fit.weight[1]).numpy(), w_true[0] - w_true[1])
    cos /= np.linalg.norm((fit.weight[0] - fit.weight[1]).numpy()) * np.linalg.norm(w_true[0] - w_true[1])
    assert cos > 0.95


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels=np.array([0, 1, 2])), "same number"),
    (dict(labels=np.array([0, 1, 5, 0])), "labels must be integers"),
    (dict(l2=0.0), "l2"),
    (dict(n_classes=1), "n_classes"),
])
def test_fit_linear_classifier_bad_arguments(kwargs, match):
    args = dict(features=np.zeros((4, 2)), labels=np.array([0, 1, 0, 1]), n_classes=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_linear_classifier(**args)


# ---- linearity measures -------------------------------------------------------------------------------

def test_decision_gradients_of_a_linear_classifier_are_parallel():
    w = torch.randn(2, 7, generator=_gen(5), dtype=DT)
    clf = AffineClassifier(w)
    x = torch.randn(50, 7, generator=_gen(6), dtype=DT)
    u = decision_gradients(clf, x)
    expected = (w[0] - w[1]) / (w[0] - w[1]).norm()
    torch.testing.assert_close((u @ expected).abs(), torch.ones(50, dtype=DT))
    spread = direction_spread(u)
    assert spread.principal_fraction == pytest.approx(1.0, abs=1e-12)
    assert spread.mean_abs_cosine == pytest.approx(1.0, abs=1e-12)
    assert spread.median_angle_deg < 1e-5


def test_direction_spread_closed_forms():
    eye = np.eye(6)
    spread = direction_spread(eye)
    assert spread.principal_fraction == pytest.approx(1 / 6)
    assert spread.median_angle_deg == pytest.approx(90.0)
    # two lines at 60 degrees, signs flipped: the angle between lines, not vectors
    u = np.array([[1.0, 0.0], [-0.5, -math.sqrt(3) / 2]])
    assert direction_spread(u).median_angle_deg == pytest.approx(60.0)
    # principal fraction of two unit vectors at angle a: (1 + |cos a|) / 2
    assert direction_spread(u).principal_fraction == pytest.approx(0.75)
    with pytest.raises(ValueError, match="non-zero"):
        direction_spread(np.array([[1.0, 0.0], [0.0, 0.0]]))


# ---- Lipschitz bounds ---------------------------------------------------------------------------------

def _explicit_matrix(layers: list[nn.Module], shape: tuple[int, ...]) -> torch.Tensor:
    def lin(v: torch.Tensor) -> torch.Tensor:
        out = v.reshape(1, *shape)
        for layer in layers:
            out = layer(out)
        return out.flatten()

    zero = torch.zeros(int(np.prod(shape)), dtype=DT)
    return torch.autograd.functional.jacobian(lin, zero)


def _random_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    g = _gen(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
        bn.weight.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))


def test_power_iteration_and_schur_against_the_explicit_matrix():
    torch.manual_seed(0)
    block = [nn.ConvTranspose2d(3, 4, 4, 2, 1, bias=True), nn.BatchNorm2d(4)]
    _random_bn(block[1], 1)
    block = [m.double().eval() for m in block]
    shape = (3, 4, 4)
    mat = _explicit_matrix(block, shape)
    exact = float(torch.linalg.matrix_norm(mat, 2))
    assert power_iteration_norm(block, shape, max_iter=5000, tol=1e-14) == pytest.approx(exact, rel=1e-8)
    schur = schur_norm_bound(block, shape)
    assert schur >= exact
    absmat = mat.abs()  # for a single conv + diagonal scaling, B = |A| exactly
    assert schur == pytest.approx(math.sqrt(float(absmat.sum(0).max()) * float(absmat.sum(1).max())), rel=1e-10)


# torch.func's forward-mode batch norm goes through torch.jit.script, which torch 2.14 marks deprecated
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_network_lipschitz_bound_dominates_local_and_pairwise_stretch():
    torch.manual_seed(1)
    gen = DCGANGenerator(latent_dim=6, channels=1, image_size=28, width=4)
    init_dcgan_weights(gen)
    for k, m in enumerate(gen.modules()):
        if isinstance(m, nn.BatchNorm2d):
            _random_bn(m, 10 + k)
    gen = gen.double().eval()
    bound = dcgan_lipschitz_bound(gen)
    assert len(bound.blocks) == 3 and bound.scale == 0.5
    assert bound.schur >= bound.power > 0
    z = torch.randn(64, 6, generator=_gen(2), dtype=DT)
    jac = torch.func.vmap(torch.func.jacfwd(lambda v: gen(v[None])[0].flatten()))(z)  # 6 inputs: forward mode
    local = float(torch.linalg.matrix_norm(jac.detach(), 2).max())
    z2 = z + 0.5 * torch.randn(64, 6, generator=_gen(3), dtype=DT)
    with torch.no_grad():
        pair = float(((gen(z2) - gen(z)).flatten(1).norm(dim=1) / (z2 - z).norm(dim=1)).max())
    assert bound.power >= local and bound.power >= pair
    # the network is not modified (still float64 parameters, same values)
    assert next(gen.parameters()).dtype == DT
    assert bound.modulus().lipschitz == bound.power and bound.modulus("schur").lipschitz == bound.schur


def test_lipschitz_bound_refuses_unknown_layers():
    with pytest.raises(ValueError, match="Softplus"):
        lipschitz_bound(nn.Sequential(nn.Linear(3, 3), nn.Softplus()), (3,))
    with pytest.raises(ValueError, match="scale"):
        lipschitz_bound(nn.Sequential(nn.Linear(3, 3)), (3,), scale=0.0)


# ---- Clopper-Pearson (montecarlo.proportion_interval) ----------------------------------------------------

def test_proportion_interval_closed_forms_and_coverage():
    lo, hi = proportion_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = proportion_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    # exact coverage: for every p on a grid, P(p in interval) >= 95% under Binomial(n, p)
    n = 25
    intervals = [proportion_interval(k, n) for k in range(n + 1)]
    for p in np.linspace(0.01, 0.99, 99):
        cover = sum(stats.binom.pmf(k, n, p) for k, (a, b) in enumerate(intervals) if a <= p <= b)
        assert cover >= 0.95 - 1e-12
    with pytest.raises(ValueError, match="successes"):
        proportion_interval(11, 10)
    with pytest.raises(ValueError, match="level"):
        proportion_interval(1, 10, level=1.0)


# ---- ray search ---------------------------------------------------------------------------------------

def test_ray_search_finds_the_half_space_crossing():
    normal = torch.tensor([1.0, 0.0], dtype=DT)
    clf = half_space_classifier(normal, 1.0)  # class 0 where x_1 >= 1
    x = torch.zeros(5, 2, dtype=DT)
    angles = torch.tensor([0.0, 0.3, 0.6, 1.0, 2.0], dtype=DT)
    u = torch.stack([angles.cos(), angles.sin()], dim=1)
    clean = clf.predict(x)

    def changed(points, rows):
        return clf.predict(points) != clean[rows]

    res = ray_search(changed, x, 3 * u, 4.0, grid=8, bisect=30)
    expected = 1.0 / angles.cos()
    reach = (expected > 0) & (expected <= 4.0)
    torch.testing.assert_close(res.t[reach], expected[reach], atol=1e-7, rtol=0)
    assert bool(torch.isinf(res.t[~reach]).all())
    assert bool(changed(res.points[reach], torch.nonzero(reach).flatten()).all())
    with pytest.raises(ValueError, match="non-zero"):
        ray_search(changed, x, torch.zeros_like(x), 1.0)
    with pytest.raises(ValueError, match="t_max"):
        ray_search(changed, x, u, -1.0)


# ---- Theorem 2's check ------------------------------------------------------------------------------

def test_theorem2_check_on_the_circle_with_exact_projection():
    """f~ labels the plane by angle (cones); the smallest change is the perpendicular to the nearest boundary
    ray, at distance sin(2 pi Delta) >= r_in / 2 = sin(pi Delta) (for Delta <= 1/4)."""
    from advbound.generators import circle_in_distribution_robustness

    circle = CircleGenerator()
    arcs = [0.0, 0.05, 0.12]
    f = ConeClassifier(arcs, shell=1.03)
    cones = ConeClassifier(arcs)
    proj = ProjectionClassifier(f, circle, 1, exact_projection=circle.project)
    # points within a quarter turn of an arc end (beyond, the nearest change of f~ is across the origin)
    turns = torch.cat([torch.linspace(0.13, 0.35, 20, dtype=DT), torch.linspace(0.77, 0.99, 20, dtype=DT)])[:, None]
    r_in = torch.from_numpy(circle_in_distribution_robustness(turns.numpy().ravel(), arcs))
    x = circle(turns)
    rays = circle(torch.tensor(arcs, dtype=DT)[:, None])  # unit directions of the boundary rays
    feet = (x @ rays.T).clamp_min(0)[..., None] * rays[None]  # nearest point of each ray
    dist = (feet - x[:, None]).norm(dim=2)
    nearest = feet[torch.arange(40), dist.argmin(1)]
    check = theorem2_check(proj, turns, r_in, [nearest - x, -x], grid=64, bisect=30)  # fine: thin cones near 0
    assert bool(check.agrees_on_data.all())
    assert float(check.residual_data.max()) < 1e-12
    torch.testing.assert_close(check.r_unc, cones.exact_robustness(x), atol=1e-6, rtol=0)
    assert bool(check.holds.all()) and bool(check.proof_step.all())
    assert bool((check.borrowed <= 2 * check.r_unc + 1e-9).all())
    assert float(check.ratio.min()) >= 0.5


def test_theorem2_check_reports_a_failing_inversion():
    """A projection that ignores x (always z* = 0) makes f~ constant: where f(x) differs from f(g(0)),
    every point "changes" the label, and the check flags the inversion (the proof's first step fails)."""
    g = IsometricLinearGenerator(2, 4, seed=0)
    f_lat = half_space_classifier(torch.tensor([1.0, 0.0], dtype=DT), 0.0)

    def f(x):
        return f_lat(g.project(x))

    bad = ProjectionClassifier(f, g, 2, exact_projection=lambda x: torch.zeros(x.shape[0], 2, dtype=DT))
    z = torch.tensor([[2.0, 0.0], [-1.5, 1.0]], dtype=DT)
    r_in = z[:, 0].abs()
    check = theorem2_check(bad, z, r_in, [torch.randn(2, 4, generator=_gen(0), dtype=DT)], grid=4, bisect=5)
    torch.testing.assert_close(check.residual_data, z.norm(dim=1))
    assert check.agrees_on_data.tolist() == [True, False]
    assert math.isinf(check.r_unc[0]) and bool(check.proof_step[0]) and bool(check.holds[0])
    assert float(check.r_unc[1]) == pytest.approx(1.5 / 4 / 2**5)
    assert not bool(check.holds[1]) and not bool(check.proof_step[1])
    assert float(check.residual_boundary[1]) > float(check.r_unc[1])


def test_projection_on_latent_and_extra_starts():
    circle = CircleGenerator()
    f = ConeClassifier([0.0, 0.3, 0.6])
    proj = ProjectionClassifier(f, circle, 1, restarts=1, steps=5, lr=0.01)
    z = torch.tensor([[0.4], [-0.3]], dtype=DT)
    torch.testing.assert_close(proj.on_latent(z), f(circle(z)))
    x = circle(z)
    _, res_plain = proj.project(x)
    _, res_warm = proj.project(x, starts=z[:, None, :])
    assert float(res_warm.max()) < 1e-12 < float(res_plain.min())
    with pytest.raises(ValueError, match="starts"):
        proj.project(x, starts=z)


# ---- the r_in / r_unc figure ----------------------------------------------------------------------------

def test_plot_gap_lists_each_classifier_with_its_median_ratio():
    import matplotlib

    matplotlib.use("Agg")
    from advbound.experiments import plot_gap

    r_unc = np.array([1.0, 1.0, 1.0, 2.0, np.inf])
    classifiers = [
        SimpleNamespace(spec=SimpleNamespace(label="A"), r_in=np.array([1.5, 3.0, 2.5, 2.0, 1.0]), r_unc=r_unc),
        SimpleNamespace(spec=SimpleNamespace(label="B"), r_in=np.array([1.0, 1.2, 1.1, 2.2, 5.0]), r_unc=r_unc),
    ]
    fig = plot_gap(SimpleNamespace(classifiers=classifiers, is_stand_in=True))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "A: median 2.00, 50% above 2 (n = 4)"
    assert labels[1] == "B: median 1.10, 0% above 2 (n = 4)"
    assert "STAND-IN" in fig.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_affine_minimal_perturbation_is_the_exact_robustness_and_changes_the_label():
    w = torch.randn(5, 4, generator=_gen(7), dtype=DT)
    b = torch.randn(5, generator=_gen(8), dtype=DT)
    clf = AffineClassifier(w, b)
    x = torch.randn(300, 4, generator=_gen(9), dtype=DT)
    move = clf.minimal_perturbation(x, overshoot=1e-6)
    torch.testing.assert_close(move.norm(dim=1), (1 + 1e-6) * clf.exact_robustness(x))
    assert bool((clf.predict(x + move) != clf.predict(x)).all())
    # brute force: no random move of the same length changes the label more cheaply than the exact distance
    r = clf.exact_robustness(x[:20])
    dirs = torch.randn(20, 2000, 4, generator=_gen(10), dtype=DT)
    dirs = dirs / dirs.norm(dim=2, keepdim=True)
    inside = x[:20, None] + 0.999 * r[:, None, None] * dirs
    assert bool((clf.predict(inside) == clf.predict(x[:20])[:, None]).all())


def test_projection_keeps_the_best_iterate():
    """Adam with a huge step overshoots from a start next to the solution; the best iterate is kept, so the
    returned residual is never larger than the start's."""
    g = IsometricLinearGenerator(3, 6, seed=1)
    z = torch.tensor([[0.3, -0.2, 0.5]], dtype=DT)
    x = g(z)
    start = z + 1e-3
    proj = ProjectionClassifier(lambda v: v[:, :2], g, 3, restarts=1, steps=3, lr=10.0)
    _, res = proj.project(x, starts=start[:, None, :])
    assert float(res) <= float((g(start) - x).norm()) + 1e-15


def test_theorem2_check_reach_and_bad_arguments():
    circle = CircleGenerator()
    f = ConeClassifier([0.0, 0.3, 0.6])
    proj = ProjectionClassifier(f, circle, 1, exact_projection=circle.project)
    z = torch.tensor([[0.1]], dtype=DT)
    x = circle(z)
    away = circle(torch.tensor([[0.0]], dtype=DT)) - x  # the chord to the label change at 0
    r_in = away.norm(dim=1)
    short = theorem2_check(proj, z, r_in, [away], grid=2, bisect=0, reach=0.9)
    assert math.isinf(short.r_unc[0])  # the boundary ray is only reached at the chord's end
    longer = theorem2_check(proj, z, r_in, [away], grid=2, bisect=0, reach=65 / 64)
    assert float(longer.r_unc[0]) == pytest.approx(65 / 64 * float(r_in[0]))
    with pytest.raises(ValueError, match="reach"):
        theorem2_check(proj, z, r_in, [away], reach=0.0)
    with pytest.raises(ValueError, match="r_in"):
        theorem2_check(proj, z, torch.zeros(1, dtype=DT), [away])
    with pytest.raises(ValueError, match="directions"):
        theorem2_check(proj, z, r_in, [])
