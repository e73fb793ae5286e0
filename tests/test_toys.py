"""Toy generators and latent classifiers with exact robustness; Remark 4 by Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from advbound.bounds import latent_bound, theorem1_bound
from advbound.classifiers import (AffineClassifier, BallClassifier, CheckerboardClassifier, SlabClassifier,
                                  half_space_classifier)
from advbound.generators import CircleGenerator, IsometricLinearGenerator, TorusGenerator
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


def _brute_force_distance(clf, x: torch.Tensor, radius: float, n_dir: int = 720, n_rad: int = 600) -> torch.Tensor:
    """Smallest radius along a dense fan of 2-D directions where the label changes (to grid precision)."""
    angles = torch.linspace(0, 2 * math.pi, n_dir + 1, dtype=torch.float64)[:-1]
    dirs = torch.stack((torch.cos(angles), torch.sin(angles)), 1)
    radii = torch.linspace(0, radius, n_rad + 1, dtype=torch.float64)[1:]
    out = []
    for xi in x:
        label = clf.predict(xi[None])[0]
        pts = xi + radii[:, None, None] * dirs[None]  # (n_rad, n_dir, 2)
        changed = (clf.predict(pts.reshape(-1, 2)).reshape(n_rad, n_dir) != label).any(dim=1)
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
