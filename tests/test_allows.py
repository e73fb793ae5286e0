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
from advbound.classifiers import (
    AffineClassifier,
    ConeClassifier,
    MergedClassifier,
    half_space_classifier,
    sector_classifier,
)
from advbound.generators import CircleGenerator, InvertibleGenerator, IsometricLinearGenerator, SplitGenerator
from advbound.latent_linear import LatentClassifier, decision_gradients, direction_spread, fit_linear_classifier
from advbound.lipschitz import (
    certified_block_norm,
    conv_fourier_bound,
    dcgan_lipschitz_bound,
    exact_block_norm,
    lipschitz_bound,
    power_iteration_norm,
    schur_norm_bound,
)
from advbound.models import DCGANGenerator, init_dcgan_weights
from advbound.montecarlo import class_proportions, probability_at_most, proportion_interval
from advbound.projection import ProjectionClassifier, radius_scan, theorem2_check, theorem2_checks

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
    # certified: at least the local and pairwise stretch, and no tighter than the estimate (per block)
    assert bound.certified >= local and bound.certified >= pair
    assert bound.schur >= bound.certified >= bound.power * (1 - 1e-9)
    for block in bound.blocks:
        assert block.schur >= block.certified >= block.power * (1 - 1e-9)
    # the network is not modified (still float64 parameters, same values)
    assert next(gen.parameters()).dtype == DT
    assert bound.modulus().lipschitz == bound.certified and bound.modulus("schur").lipschitz == bound.schur
    assert bound.modulus("power").lipschitz == bound.power
    with pytest.raises(ValueError, match="which"):
        bound.modulus("exact")


def _random_block(kind: str, seed: int) -> tuple[list[nn.Module], tuple[int, ...]]:
    torch.manual_seed(seed)
    blocks = {
        "convT s2": ([nn.ConvTranspose2d(3, 4, 4, 2, 1), nn.BatchNorm2d(4)], (3, 5, 5)),
        "convT s2 op1": ([nn.ConvTranspose2d(3, 4, 3, 2, 1, output_padding=1)], (3, 6, 5)),
        "convT 1x1 input": ([nn.ConvTranspose2d(6, 4, 7, 1, 0), nn.BatchNorm2d(4)], (6, 1, 1)),
        "conv s2": ([nn.Conv2d(3, 5, 4, 2, 1), nn.BatchNorm2d(5)], (3, 10, 10)),
        "conv s(2,1)": ([nn.Conv2d(3, 5, 3, (2, 1), 0)], (3, 9, 8)),
        "conv s1 pad": ([nn.Conv2d(3, 4, 3, 1, 1)], (3, 12, 12)),
    }
    block, shape = blocks[kind]
    for k, m in enumerate(block):
        if isinstance(m, nn.BatchNorm2d):
            _random_bn(m, seed + k)
    return [m.double().eval() for m in block], shape


@pytest.mark.parametrize("kind", ["convT s2", "convT s2 op1", "convT 1x1 input", "conv s2", "conv s(2,1)",
                                  "conv s1 pad"])
def test_certified_block_norms_against_the_explicit_matrix(kind):
    """exact_block_norm is the largest singular value of the block's matrix (built independently by
    autograd's jacobian, SVD by torch.linalg.matrix_norm); the Fourier bound is never below it; the power
    iteration never above it (beyond its tolerance)."""
    block, shape = _random_block(kind, 3)
    exact = float(torch.linalg.matrix_norm(_explicit_matrix(block, shape), 2))
    assert exact_block_norm(block, shape) == pytest.approx(exact, rel=1e-10)
    assert exact_block_norm(block, shape, chunk=7) == pytest.approx(exact, rel=1e-10)  # chunked the same
    fourier = conv_fourier_bound(block, shape)
    assert fourier is not None and fourier >= exact * (1 - 1e-12)
    assert power_iteration_norm(block, shape) <= exact * (1 + 1e-9)
    value, method = certified_block_norm(block, shape)
    assert method == "exact SVD" and value == pytest.approx(exact, rel=1e-10)
    value, method = certified_block_norm(block, shape, exact_max_flops=0)  # too costly: the Fourier bound
    assert method == "Fourier" and value == fourier


def test_fourier_bound_closed_forms():
    """A 1x1 convolution is the same c_out x c_in matrix at every pixel: its norm is that matrix's largest
    singular value, and the Fourier bound equals it.  For a single-channel convolution on a large image the
    bound approaches the exact norm, max |K^(w)| over all frequencies (here 1 + 2 * 0.5 = 2 for the kernel
    [0.5, 1, 0.5] in each direction squared: 4)."""
    conv = nn.Conv2d(3, 2, 1, bias=False).double().eval()
    w = conv.weight.detach()[:, :, 0, 0]
    assert conv_fourier_bound([conv], (3, 6, 6)) == pytest.approx(float(torch.linalg.matrix_norm(w, 2)), rel=1e-12)
    smooth = nn.Conv2d(1, 1, 3, padding=1, bias=False).double().eval()
    with torch.no_grad():
        smooth.weight.copy_(torch.outer(torch.tensor([0.5, 1.0, 0.5]), torch.tensor([0.5, 1.0, 0.5]))[None, None])
    bound = conv_fourier_bound([smooth], (1, 40, 40))
    exact = float(torch.linalg.matrix_norm(_explicit_matrix([smooth], (1, 40, 40)), 2))
    assert exact <= bound <= 4.0 + 1e-12 and bound == pytest.approx(4.0, rel=1e-12) and exact > 3.95


def test_fourier_bound_declines_other_blocks():
    assert conv_fourier_bound([nn.Linear(3, 3).double()], (3,)) is None
    assert conv_fourier_bound([nn.Conv2d(4, 4, 3, groups=2).double()], (4, 6, 6)) is None
    assert conv_fourier_bound([nn.Conv2d(2, 2, 3, dilation=2).double()], (2, 9, 9)) is None
    assert conv_fourier_bound([nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular").double()], (2, 6, 6)) is None
    assert conv_fourier_bound([nn.Conv2d(2, 2, 3).double(), nn.ReLU()], (2, 6, 6)) is None
    lin = [nn.Linear(5, 3).double()]
    value, method = certified_block_norm(lin, (5,), exact_max_flops=0)
    assert method == "Schur" and value == schur_norm_bound(lin, (5,))


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


# ---- footnote 4: a disconnected support, omega(0) > 0 ------------------------------------------------------

def test_split_generator_modulus_and_exact_r_in_by_brute_force():
    """g(z) = z + c sign(z_1) e_1.  (a) omega(t) = t + 2c is valid on random pairs and approached across the
    cut; no Lipschitz constant holds.  (b) r_in of f(x) = [x_1 >= 0] is |z_1| + 2c: brute force over a dense
    grid of latent points of the other class (d = 2).  (c) P(r_in <= eta) = eq. (2) with the affine modulus
    (two classes of probability 1/2): Monte Carlo within 4 standard errors, and the closed form
    2 Phi(eta - 2c) - 1 equals the library's bound."""
    c = 0.4
    g = SplitGenerator(2, gap=c)
    z = torch.randn(4000, 2, generator=_gen(5), dtype=DT)
    z2 = z + 0.3 * torch.randn(4000, 2, generator=_gen(6), dtype=DT)
    dist = (g(z) - g(z2)).norm(dim=1)
    assert bool((dist <= (z - z2).norm(dim=1) + 2 * c + 1e-12).all())
    tiny = torch.tensor([[1e-9, 0.3]], dtype=DT), torch.tensor([[-1e-9, 0.3]], dtype=DT)
    jump = float((g(tiny[0]) - g(tiny[1])).norm())
    assert jump == pytest.approx(2 * c + 2e-9, rel=1e-9)                    # omega(0+) = 2c: no Lipschitz bound
    assert float(g.modulus(2e-9)) == pytest.approx(2e-9 + 2 * c) and float(g.modulus.inverse(2 * c)) == 0.0
    # (b) brute force: the nearest generated point with the other label
    grid = torch.stack(torch.meshgrid(torch.linspace(-4, 4, 801, dtype=DT), torch.linspace(-4, 4, 801, dtype=DT),
                                      indexing="ij"), -1).reshape(-1, 2)
    gx = g(grid)
    pts = torch.tensor([[0.7, -0.2], [-1.3, 0.5], [0.05, 1.0]], dtype=DT)
    for p in pts:
        x = g(p[None])[0]
        other = (gx[:, 0] >= 0) != (x[0] >= 0)
        brute = float((gx[other] - x).norm(dim=1).min())
        assert brute == pytest.approx(float(g.half_space_in_distribution_robustness(p[None])[0]), abs=0.011)
    # (c) the distribution equals eq. (2) with omega(t) = t + 2c
    r = g.half_space_in_distribution_robustness(z)
    eta = np.array([0.5, 1.0, 1.5, 2.5])
    est, se = probability_at_most(r, eta)
    bound = bounds.probability_lower_bound(eta, [0.5, 0.5], modulus=g.modulus)
    np.testing.assert_allclose(bound, 2 * stats.norm.cdf(np.maximum(eta - 2 * c, 0)) - 1, atol=1e-14)
    assert np.all(np.abs(est - bound) <= 4 * se + 1e-12)
    with pytest.raises(ValueError, match="gap"):
        SplitGenerator(2, gap=-1.0)


def test_normalized_lipschitz_is_footnote_5():
    """L' = L E||z|| / E||g(z)||; for g = a z (E||g(z)|| = a E||z||, L = a) it is 1 whatever a."""
    e = bounds.expected_latent_norm(100)
    assert bounds.normalized_lipschitz(3.0, 100, 3.0 * e) == pytest.approx(1.0, rel=1e-15)
    assert bounds.normalized_lipschitz(48.8, 100, 9.05) == pytest.approx(48.8 * e / 9.05, rel=1e-15)
    with pytest.raises(ValueError, match="mean_image_norm"):
        bounds.normalized_lipschitz(1.0, 100, 0.0)


# ---- Remark 2: merged classes ----------------------------------------------------------------------------

def test_merged_classifier_labels_and_robustness_never_decrease():
    """The merged label is the group of the original label; on an affine toy the exact distance to the
    merged classifier's boundary (min over facets between different groups) is >= the original one."""
    f = AffineClassifier(torch.randn(6, 3, generator=_gen(7), dtype=DT), torch.randn(6, generator=_gen(8), dtype=DT))
    merged = MergedClassifier(f, [[0, 3], [1, 2, 5], [4]])
    x = torch.randn(500, 3, generator=_gen(9), dtype=DT)
    lab, mlab = f(x).argmax(1), merged(x).argmax(1)
    assert torch.equal(mlab, merged.merge_labels(lab)) and merged.n_classes == 3
    # DeepFool on the merged classifier finds points that also change the original label
    from advbound.attacks import deepfool

    res = deepfool(merged, x, refine=True)
    assert bool(res.success.all())
    assert bool((f(res.x_adv).argmax(1) != lab).all())
    assert bool((res.norms >= f.exact_robustness(x) - 1e-9).all())
    for bad in ([[0, 1, 2, 3, 4, 5]], [[0, 1], [1, 2, 3, 4, 5]], [[0, 1], []], [[0, 1], [2, 3, 4, 6]]):
        with pytest.raises(ValueError, match="groups"):
            MergedClassifier(f, bad)


# ---- Theorem 3: one perturbation for two classifiers ------------------------------------------------------

def test_common_change_search_against_joint_fooling_distance():
    """Two affine classifiers: the exact smallest common perturbation (joint_fooling_distance) lies below
    every found one; along the direction of the exact minimiser the search finds it to the bisection step."""
    from advbound.attacks.ray import common_change_search
    from advbound.classifiers import joint_fooling_distance

    f = half_space_classifier(torch.tensor([1.0, 0.0], dtype=DT), 0.0)
    h = half_space_classifier(torch.tensor([0.6, 0.8], dtype=DT), 0.2)
    x = torch.randn(200, 2, generator=_gen(11), dtype=DT)
    exact = joint_fooling_distance(f, h, x)
    dirs = [torch.randn(200, 2, generator=_gen(12 + k), dtype=DT) for k in range(3)]
    found = common_change_search([f, h], x, dirs, 10.0, grid=16, bisect=20)
    ok = torch.isfinite(found.t)
    assert bool(ok.any()) and bool((found.t[ok] >= exact[ok] - 1e-9).all())
    assert bool((f.predict(found.points[ok]) != f.predict(x[ok])).all())
    assert bool((h.predict(found.points[ok]) != h.predict(x[ok])).all())
    # the direction of the nearest point of the common region: there the search is exact
    target = _nearest_common_point(f, h, x)
    torch.testing.assert_close((target - x).norm(dim=1), exact, atol=1e-12, rtol=1e-12)
    best = common_change_search([f, h], x, [target - x], 10.0, grid=64, bisect=30)
    assert bool(torch.isfinite(best.t).all())
    assert float((best.t - exact).abs().max()) <= 10.0 / 64 / 2**30 + 1e-12


def _nearest_common_point(f: AffineClassifier, h: AffineClassifier, x: torch.Tensor) -> torch.Tensor:
    """For two half-space classifiers in the plane: the nearest point with both labels changed is the foot
    of the perpendicular on one boundary line when it lies on the other line's far side, else the lines'
    intersection (closed forms, computed here independently of joint_fooling_distance)."""
    lines = []
    for clf in (f, h):
        w, b = clf.weight[1] - clf.weight[0], clf.bias[1] - clf.bias[0]     # boundary w . y + b = 0
        lines.append((w, b))
    side = [torch.sign(x @ w + b) for w, b in lines]
    cands = []
    for k, (w, b) in enumerate(lines):
        foot = x - ((x @ w + b) / (w @ w))[:, None] * w
        w2, b2 = lines[1 - k]
        ok = torch.sign(foot @ w2 + b2) == -side[1 - k]
        cands.append(torch.where(ok[:, None], foot, torch.full_like(foot, math.inf)))
    mat = torch.stack([lines[0][0], lines[1][0]])
    vertex = torch.linalg.solve(mat, -torch.stack([lines[0][1], lines[1][1]]))
    cands.append(vertex.expand_as(x))
    stack = torch.stack(cands)                                          # (3, n, 2)
    dist = (stack - x).norm(dim=2)
    return stack[dist.argmin(0), torch.arange(x.shape[0])]


# ---- Theorem 2 with several classifiers and a blind inversion ---------------------------------------------

def test_theorem2_checks_batched_equal_separate_calls_and_blind_inversion_is_batch_free():
    """theorem2_checks projects the points of all classifiers together; the results equal separate
    theorem2_check calls, and f~(x) does not depend on the batch x is evaluated in (shared random starts)."""
    circle = CircleGenerator()
    fs = [ConeClassifier([0.0, 0.05, 0.12]), ConeClassifier([0.3, 0.7])]
    projs = [ProjectionClassifier(f, circle, 1, restarts=3, steps=60, lr=0.05, seed=4) for f in fs]
    turns = torch.linspace(0.2, 0.95, 9, dtype=DT)[:, None]
    x = circle(turns)
    z_one = torch.stack([projs[0].project(x[i:i + 1])[0][0] for i in range(9)])
    z_all, _ = projs[0].project(x)
    torch.testing.assert_close(z_all, z_one, atol=1e-12, rtol=0)
    r_in = [torch.full((9,), 0.3, dtype=DT), torch.full((9,), 0.5, dtype=DT)]
    dirs = [[-x, torch.flip(x, [1])], [torch.flip(x, [1])]]
    together = theorem2_checks(projs, turns, r_in, dirs, grid=4, bisect=6, reach=2.0)
    for k, proj in enumerate(projs):
        alone = theorem2_check(proj, turns, r_in[k], dirs[k], grid=4, bisect=6, reach=2.0)
        for name in ("r_unc", "residual_data", "residual_boundary", "borrowed", "agrees_on_data", "points"):
            torch.testing.assert_close(getattr(together[k], name), getattr(alone, name), equal_nan=True)
    with pytest.raises(ValueError, match="share"):
        theorem2_checks([projs[0], ProjectionClassifier(fs[1], circle, 1, restarts=2)], turns, r_in, dirs)


def test_radius_scan_on_the_circle_with_exact_projection():
    """Cones on the circle with the exact projection: along the tangent direction the label of f~ changes
    where the angle of x + t u crosses the nearest boundary ray, at t = tan(2 pi Delta) (Delta the turn to
    that ray): the scan reports the first grid radius at or beyond it, and the one before it lies below."""
    circle = CircleGenerator()
    arcs = [0.0, 0.3, 0.6]
    projs = [ProjectionClassifier(ConeClassifier(arcs), circle, 1, exact_projection=circle.project),
             ProjectionClassifier(ConeClassifier([0.1, 0.5]), circle, 1, exact_projection=circle.project)]
    turns = torch.tensor([[0.05], [0.25], [0.33]], dtype=DT)
    x = circle(turns)
    tangent = torch.stack([-x[:, 1], x[:, 0]], 1)          # counter-clockwise
    radii = [0.1 * k for k in range(1, 31)]
    scan = radius_scan(projs, turns, tangent, radii)
    assert bool(scan.premise.all()) and float(scan.residual.max()) < 1e-12
    for k, cuts in enumerate(([0.0, 0.3, 0.6], [0.1, 0.5])):
        ahead = torch.tensor([min((c - float(t)) % 1.0 for c in cuts) for t in turns.flatten()], dtype=DT)
        exact = torch.where(ahead < 0.25, torch.tan(2 * math.pi * ahead), torch.full_like(ahead, math.inf))
        found, below = scan.change_radius()[k], scan.last_unchanged()[k]
        assert bool(((below < exact) & (exact <= found)).all()), (k, found, exact)
    with pytest.raises(ValueError, match="radii"):
        radius_scan(projs, turns, tangent, [0.2, 0.1])
