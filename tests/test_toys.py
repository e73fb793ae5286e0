"""Toy generators and latent classifiers with exact robustness; Remark 4 by Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from advbound.bounds import latent_bound, theorem1_bound
from advbound.classifiers import (
    AffineClassifier,
    BallClassifier,
    CheckerboardClassifier,
    ConeClassifier,
    SlabClassifier,
    distance_to_two_half_spaces,
    half_space_classifier,
    joint_fooling_distance,
    sector_classifier,
)
from advbound.generators import (
    CircleGenerator,
    IsometricLinearGenerator,
    TorusGenerator,
    circle_in_distribution_robustness,
    circle_label_changes,
    torus_sine_sum_in_distribution_robustness,
    wrapped_normal_cell_probabilities,
)
from advbound.montecarlo import class_proportions, probability_at_most

N_MC = 400_000
ETAS = np.array([0.05, 0.2, 0.5, 1.0, 1.5])


def _latent_samples(d: int, seed: int) -> torch.Tensor:
    return torch.randn(N_MC, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_remark4_isometric_generator_and_half_space_attain_eq2():
    """Remark 4: g isometric, f o g a latent half-space -> P(r_in <= eta) equals eq. (2) (3 standard errors).

    r_in is computed in image space: f is an image-space linear classifier, and for an isometric linear g
    the in-distribution distance ||g(z + r) - g(z)|| = ||r||, so r_in is the distance from z to f o g's
    boundary; we evaluate it through the image-space classifier restricted to the range of g.
    """
    d, m = 6, 15
    g = IsometricLinearGenerator(d, m, seed=3, offset=True)
    normal = torch.tensor([0.6, -0.8, 0, 0, 0, 0], dtype=torch.float64)
    threshold = 0.4
    # the image-space classifier f(x) = [normal . A^T (x - b) >= threshold]
    latent = half_space_classifier(normal, threshold)
    f = AffineClassifier(latent.weight @ g.matrix.T, latent.bias - latent.weight @ g.matrix.T @ g.offset)
    z = _latent_samples(d, 0)
    x = g(z)
    labels = f.predict(x)
    np.testing.assert_array_equal(labels.numpy(), latent.predict(z).numpy())
    r_in = latent.exact_robustness(z)
    p_exact = np.array([stats.norm.sf(threshold), stats.norm.cdf(threshold)])  # |normal| = 1
    emp, se = probability_at_most(r_in, ETAS)
    bound = theorem1_bound(ETAS, class_probs=p_exact, modulus=g.modulus)
    assert np.all(np.abs(emp - bound) <= 3 * se), (emp, bound, se)


@pytest.mark.parametrize("name", ["slabs", "ball", "checkerboard"])
def test_nonlinear_latent_partitions_lie_above_eq2(name):
    """Partitions that are not half-spaces are strictly more vulnerable than eq. (2) says (Remark 4)."""
    d = 4
    z = _latent_samples(d, 1)
    if name == "slabs":  # three equiprobable slabs
        clf = SlabClassifier(torch.eye(d, dtype=torch.float64)[0], stats.norm.ppf([1 / 3, 2 / 3]))
        probs = np.full(3, 1 / 3)
    elif name == "ball":
        radius = math.sqrt(stats.chi2.ppf(0.5, d))  # median radius: two classes of probability 1/2
        clf = BallClassifier(radius)
        probs = np.array([0.5, 0.5])
    else:
        clf = CheckerboardClassifier(2)
        probs = np.array([0.5, 0.5])
    np.testing.assert_allclose(class_proportions(clf.predict(z), len(probs)), probs, atol=4e-3)
    emp, se = probability_at_most(clf.exact_robustness(z), ETAS)
    bound = latent_bound(ETAS, class_probs=probs)
    assert np.all(emp > bound + 3 * se), (name, emp, bound)


def _brute_force_distance(clf, x: torch.Tensor, radius: float, n_dir: int = 720, n_rad: int = 600,
                          other=None) -> torch.Tensor:
    """Smallest radius along a dense fan of 2-D directions where the label changes (to grid precision);
    with ``other``, where the labels of both classifiers change."""
    angles = torch.linspace(0, 2 * math.pi, n_dir + 1, dtype=torch.float64)[:-1]
    dirs = torch.stack((torch.cos(angles), torch.sin(angles)), 1)
    radii = torch.linspace(0, radius, n_rad + 1, dtype=torch.float64)[1:]
    out = []
    for xi in x:
        pts = (xi + radii[:, None, None] * dirs[None]).reshape(-1, 2)  # (n_rad * n_dir, 2)
        moved = clf.predict(pts) != clf.predict(xi[None])[0]
        if other is not None:
            moved &= other.predict(pts) != other.predict(xi[None])[0]
        changed = moved.reshape(n_rad, n_dir).any(dim=1)
        out.append(radii[changed.nonzero()[0, 0]] if changed.any() else torch.tensor(math.inf))
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_affine_exact_robustness_against_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    clf = AffineClassifier(torch.randn(5, 2, generator=gen, dtype=torch.float64),
                           torch.randn(5, generator=gen, dtype=torch.float64))
    x = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    exact = clf.exact_robustness(x)
    brute = _brute_force_distance(clf, x, radius=float(exact.max()) * 1.5 + 0.1)
    step = (float(exact.max()) * 1.5 + 0.1) / 600
    assert torch.all(brute >= exact - 1e-12)
    assert torch.all(brute <= exact + step + exact * 1e-4)  # angular + radial grid precision


def test_slab_ball_checkerboard_robustness_against_brute_force():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    for clf in (SlabClassifier(torch.tensor([1.0, 1.0], dtype=torch.float64), [-0.5, 0.3, 1.0]),
                BallClassifier(1.1), CheckerboardClassifier(2)):
        exact = clf.exact_robustness(x)
        brute = _brute_force_distance(clf, x, radius=3.0)
        assert torch.all(brute >= exact - 1e-12), type(clf).__name__
        assert torch.all(brute <= exact + 3.0 / 600 + exact * 1e-4), type(clf).__name__
        np.testing.assert_array_equal(clf.predict(x).numpy(), clf(x).argmax(-1).numpy())


def test_generators_project_exactly_onto_their_range():
    gen = torch.Generator().manual_seed(0)
    g = IsometricLinearGenerator(4, 9, seed=1, offset=True)
    z = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(g.project(g(z)), z)
    x = torch.randn(50, 9, generator=gen, dtype=torch.float64)
    zs = g.project(x)  # the residual is orthogonal to the range
    torch.testing.assert_close((x - g(zs)) @ g.matrix, torch.zeros(50, 4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(g.matrix.T @ g.matrix, torch.eye(4, dtype=torch.float64))

    circle = CircleGenerator()
    x = 3.0 * torch.randn(200, 2, generator=gen, dtype=torch.float64)
    zs = circle.project(x)
    grid = torch.linspace(-0.5, 0.5, 20001, dtype=torch.float64)[:, None]
    dense = torch.cdist(x, circle(grid)).min(dim=1).values
    torch.testing.assert_close((x - circle(zs[:, None] if zs.ndim == 1 else zs)).norm(dim=1), dense, atol=1e-6, rtol=0)

    torus = TorusGenerator(3)
    z = torch.rand(20, 3, generator=gen, dtype=torch.float64) - 0.5
    torch.testing.assert_close(torus.project(torus(z)), z)


def test_toy_bad_inputs():
    with pytest.raises(ValueError, match="last dimension 3"):
        TorusGenerator(3)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="latent_dim"):
        IsometricLinearGenerator(5, 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        SlabClassifier(torch.ones(2), [0.5, 0.1])
    with pytest.raises(ValueError, match="radius"):
        BallClassifier(-1.0)
    with pytest.raises(ValueError, match="weight"):
        AffineClassifier(torch.ones(1, 3))


# ---------------------------------------------------------------- sectors, cones, Theorem 3's joint distance

def test_sector_classifier_labels_by_angle_and_is_exact():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    for k, phase in ((2, 0.0), (3, 0.3), (4, 0.1 + math.pi / 4), (7, -1.0)):
        clf = sector_classifier(k, phase)
        turns = torch.remainder((torch.atan2(x[:, 1], x[:, 0]) - phase) / (2 * math.pi) + 0.5 / k, 1.0)
        torch.testing.assert_close(clf.predict(x), (turns * k).floor().long())
        exact = clf.exact_robustness(x[:10])
        brute = _brute_force_distance(clf, x[:10], radius=3.0)
        assert torch.all(brute >= exact - 1e-12) and torch.all(brute <= exact + 3.0 / 600 + exact * 1e-4)
    wide = sector_classifier(5, 0.0, dims=6)
    assert wide.weight.shape == (5, 6) and torch.all(wide.weight[:, 2:] == 0)


def test_cone_classifier_with_and_without_shell_against_brute_force():
    gen = torch.Generator().manual_seed(3)
    ang = 2 * math.pi * torch.rand(12, generator=gen, dtype=torch.float64)
    rad = 0.2 + torch.rand(12, generator=gen, dtype=torch.float64)
    x = torch.stack((rad * torch.cos(ang), rad * torch.sin(ang)), 1)
    # brute force on a polar grid (it contains the apex, which a fan of directions from x misses): a point
    # of another cone at radius rho <= 1.5 has a grid point of that cone within 1.5/600 + 1.5 * 2 pi / 3000
    # (every exact distance here is below 1.3, so the nearest point lies within that radius)
    ang_g, rad_g = torch.meshgrid(torch.arange(3000, dtype=torch.float64) * 2 * math.pi / 3000,
                                  torch.linspace(0, 1.5, 601, dtype=torch.float64), indexing="ij")
    polar = torch.stack((rad_g * torch.cos(ang_g), rad_g * torch.sin(ang_g)), -1).reshape(-1, 2)
    for clf in (ConeClassifier([0.0, 0.05, 0.12]), ConeClassifier([0.1, 0.6]),
                ConeClassifier([0.0, 0.05, 0.12], shell=1.3)):
        exact = clf.exact_robustness(x)
        lab, lab_x = clf.predict(polar), clf.predict(x)
        brute = torch.stack([torch.cdist(x[i:i + 1], polar[lab != lab_x[i]]).min() for i in range(len(x))])
        assert torch.all(brute >= exact - 1e-12), clf.boundaries
        assert exact.max() < 1.3
        assert torch.all(brute <= exact + 1.5 / 600 + 3 * math.pi / 3000), clf.boundaries
        np.testing.assert_array_equal(clf(x).argmax(-1).numpy(), clf.predict(x).numpy())
    cones = ConeClassifier([0.0, 0.05, 0.12])
    turns = torch.tensor([0.01, 0.06, 0.5, 0.99], dtype=torch.float64) * 2 * math.pi
    on_circle = torch.stack((torch.cos(turns), torch.sin(turns)), 1)
    torch.testing.assert_close(cones.predict(on_circle), torch.tensor([0, 1, 2, 2]))
    with pytest.raises(ValueError, match="inside the shell"):
        ConeClassifier([0.0, 0.5], shell=1.0).exact_robustness(torch.tensor([[2.0, 0.0]], dtype=torch.float64))


def test_distance_to_two_half_spaces_against_a_dense_grid():
    gen = torch.Generator().manual_seed(4)
    axis = torch.linspace(-3, 3, 121, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    step = 6 / 120 * math.sqrt(3) / 2
    for _ in range(4):
        c1, c2 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
        e1, e2 = torch.randn(2, generator=gen, dtype=torch.float64).tolist()
        y = torch.randn(15, 3, generator=gen, dtype=torch.float64)
        exact = distance_to_two_half_spaces(y, c1, e1, c2, e2)
        inside = grid[(grid @ c1 <= e1) & (grid @ c2 <= e2)]
        brute = torch.cdist(y, inside).min(dim=1).values
        assert torch.all(exact <= brute + 1e-12) and torch.all(brute - exact <= step + 1e-12)
    # opposite normals with an empty intersection
    e = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert math.isinf(distance_to_two_half_spaces(torch.zeros(1, 3, dtype=torch.float64), e, -1.0, -e, -1.0))


def test_joint_fooling_distance_against_brute_force():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    f, h = sector_classifier(4, math.pi / 4), sector_classifier(4, math.pi / 4 + 0.1)
    rnd = AffineClassifier(torch.randn(3, 2, generator=gen, dtype=torch.float64),
                           torch.randn(3, generator=gen, dtype=torch.float64))
    for a, b in ((f, h), (f, rnd)):
        exact = joint_fooling_distance(a, b, x)
        brute = _brute_force_distance(a, x, radius=4.0, other=b)
        assert torch.all(brute >= exact - 1e-12)
        assert torch.all(brute <= exact + 4.0 / 600 + exact * 1e-3)
        assert torch.all(exact >= torch.maximum(a.exact_robustness(x), b.exact_robustness(x)) - 1e-12)
    torch.testing.assert_close(joint_fooling_distance(f, f, x), f.exact_robustness(x))


# ---------------------------------------------------------------- the circle and the torus

def test_wrapped_normal_cell_probabilities_against_mpmath():
    import mpmath as mp

    m = 64
    w = wrapped_normal_cell_probabilities(m)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    for k in (0, 5, 31, 63):
        with mp.workdps(30):
            lo, hi = mp.mpf(k) / m, mp.mpf(k + 1) / m
            ref = mp.nsum(lambda j, lo=lo, hi=hi: mp.ncdf(hi + j) - mp.ncdf(lo + j), [-mp.inf, mp.inf])
        assert w[k] == pytest.approx(float(ref), rel=1e-11)
    assert np.allclose(w, w[::-1], rtol=1e-10)  # z -> -z maps cell k to cell m - 1 - k


def test_circle_in_distribution_robustness_against_brute_force():
    rng = np.random.default_rng(0)
    m = 400
    labels = np.searchsorted(np.sort(rng.uniform(size=4)), (np.arange(m) + 0.5) / m) % 3
    centres = (np.arange(m) + 0.5) / m
    r_in = circle_in_distribution_robustness(centres, circle_label_changes(labels))
    # brute force: the nearest centre with another label, minus half a cell (the change sits between cells)
    circ = np.abs((centres[:, None] - centres[None, :] + 0.5) % 1.0 - 0.5)
    nearest = np.where(labels[:, None] != labels[None, :], circ, np.inf).min(axis=1) - 0.5 / m
    np.testing.assert_allclose(r_in, 2 * np.sin(np.pi * nearest), atol=1e-12)
    # with exact arc ends: the chord in the plane to the nearest differently labelled circle point
    ends = np.array([0.0, 0.05, 0.12])
    u = rng.uniform(size=30)
    dense = (np.arange(200_000) + 0.5) / 200_000
    lab = lambda t: np.searchsorted(ends, np.mod(t, 1.0), side="right")  # noqa: E731
    pts = np.column_stack([np.cos(2 * np.pi * dense), np.sin(2 * np.pi * dense)])
    brute = [np.min(np.linalg.norm(pts[lab(dense) != lab(t)] - [np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], axis=1))
             for t in u]
    np.testing.assert_allclose(circle_in_distribution_robustness(u, ends), brute, atol=2 * np.pi / 200_000)
    assert np.isinf(circle_in_distribution_robustness(u, [])).all()


def test_torus_sine_sum_r_in_is_the_circle_formula_for_one_circle():
    z = np.random.default_rng(1).normal(size=(500, 1))
    np.testing.assert_allclose(torus_sine_sum_in_distribution_robustness(z),
                               circle_in_distribution_robustness(z[:, 0], [0.0, 0.5]), atol=1e-9)


def test_torus_sine_sum_r_in_against_a_dense_torus_grid():
    """d = 2: the nearest grid point of the torus image with the other label (grid step 1/1000 turn, so the
    grid distance exceeds the exact one by at most 2 pi sqrt(2) / 2000 = 0.0044)."""
    g = TorusGenerator(2)
    n_grid = 1000
    axis = (np.arange(n_grid) + 0.5) / n_grid
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    img = g(torch.tensor(grid)).numpy()
    s_grid = np.sin(2 * np.pi * grid).sum(axis=1)
    z = np.random.default_rng(2).normal(size=(12, 2))
    exact = torus_sine_sum_in_distribution_robustness(z)
    x = g(torch.tensor(z)).numpy()
    for i in range(len(z)):
        other = (s_grid >= 0) != (np.sin(2 * np.pi * z[i]).sum() >= 0)
        brute = np.min(np.linalg.norm(img[other] - x[i], axis=1))
        assert exact[i] <= brute + 1e-9
        assert brute - exact[i] <= 2 * np.pi * math.sqrt(2) / (2 * n_grid)


def test_torus_sine_sum_r_in_is_below_every_local_optimum():
    """d = 5: constrained local minimisation from 20 random starts never finds a smaller move to S = 0."""
    from scipy import optimize

    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 5))
    exact = torus_sine_sum_in_distribution_robustness(z)
    for i, theta in enumerate(2 * np.pi * z):
        cost = lambda t: np.sum(4 * np.sin((t - theta) / 2) ** 2)  # noqa: B023,E731
        cons = {"type": "eq", "fun": lambda t: np.sin(t).sum()}
        found = [optimize.minimize(cost, theta + rng.normal(scale=1.0, size=5), constraints=[cons], method="SLSQP")
                 for _ in range(20)]
        best = min(math.sqrt(r.fun) for r in found if r.success and abs(np.sin(r.x).sum()) < 1e-8)
        assert exact[i] <= best + 1e-6
        assert best <= exact[i] + 1e-4  # and the local search does reach it


def test_toys_accept_numpy_integers_and_name_bad_sizes():
    assert TorusGenerator(np.int64(3)).latent_dim == 3
    assert IsometricLinearGenerator(np.int64(3), np.int32(5)).image_dim == 5
    assert sector_classifier(np.int64(4), np.float32(0.1)).n_classes == 4
    assert wrapped_normal_cell_probabilities(np.int64(8)).size == 8
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="latent_dim"):
            TorusGenerator(bad)
    with pytest.raises(ValueError, match="n_classes"):
        sector_classifier(1)
