"""Tests of the in-distribution boundary search and of the latent penalty search, against closed forms.

References used:
* linear generator ``g(z) = A z + c`` (any full-rank ``A``) and an affine classifier ``argmax(W x + b)``: a
  latent step ``r`` moves the image by ``A r``, which ranges over the column space of ``A``, so
  ``r_in = min_j (l_y - l_j) / ||P (w_y - w_j)||`` with ``P`` the orthogonal projector onto that space, and
  ``r_Z = min_j (l_y - l_j) / ||A^T (w_y - w_j)||``;
* the torus generator with the sine-sum classifier ``sign(sum_k sin 2 pi z_k)``: the exact global ``r_in`` of
  :func:`advbound.generators.torus_sine_sum_in_distribution_robustness` (itself checked against a dense grid
  in ``test_toys.py``).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from advbound.attacks import (
    DeepFoolOptions,
    generator_gram,
    in_distribution_attack,
    latent_deepfool,
    latent_penalty_attack,
)
from advbound.generators import TorusGenerator, torus_sine_sum_in_distribution_robustness

DT = torch.float64
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rin.py"


class Linear(nn.Module):
    """``g(z) = A z + c``, the singular values of ``A`` from ``10^-spread`` to ``10^spread`` (with the default,
    two decades: the metric ``A^T A`` is far from the identity)."""

    def __init__(self, d: int, m: int, seed: int, spread: float = 1.0, gain: float = 1.0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        u, _ = torch.linalg.qr(torch.randn(m, d, dtype=DT, generator=gen))
        v, _ = torch.linalg.qr(torch.randn(d, d, dtype=DT, generator=gen))
        sing = torch.logspace(-spread, spread, d, dtype=DT)
        self.a = nn.Parameter(gain * u @ torch.diag(sing) @ v.T, requires_grad=False)
        self.c = nn.Parameter(torch.randn(m, dtype=DT, generator=gen), requires_grad=False)
        self.latent_dim = d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T + self.c


class SineSum(nn.Module):
    """Two logits ``(-S, S)``, ``S = sum_k x_{2k+1}`` = the sum of the sines for the torus generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 1::2].sum(1)
        return torch.stack([-s, s], 1)


def affine(m: int, k: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(m, k).to(DT).requires_grad_(False)


def linear_closed_forms(g: Linear, f: nn.Linear, z: torch.Tensor, k_cand: int | None = None) -> tuple:
    """(r_in, r_Z) by the formulas in the module docstring, over all classes or the top ``k_cand``."""
    with torch.no_grad():
        logits = f(g(z))
    order = logits.argsort(dim=1, descending=True)
    y = order[:, 0]
    keep = order[:, 1:] if k_cand is None else order[:, 1:k_cand]
    q, _ = torch.linalg.qr(g.a)
    w = f.weight
    diff = w[y][:, None, :] - w[keep]                                  # (n, c, m): w_y - w_j
    gap = logits.gather(1, y[:, None]) - logits.gather(1, keep)        # l_y - l_j
    r_in = (gap / (diff @ q).norm(dim=2)).min(1).values
    r_z = (gap / (diff @ g.a).norm(dim=2)).min(1).values
    return r_in, r_z


def latent_norm_of_r_in_minimiser(g: Linear, f: nn.Linear, z: torch.Tensor) -> torch.Tensor:
    """||r|| of the latent step that attains r_in (all classes): the image step ``-gap P u / ||P u||^2``
    along ``u = w_y - w_j`` for the best ``j``, pulled back by the pseudo-inverse of ``A``."""
    with torch.no_grad():
        logits = f(g(z))
    y = logits.argmax(1)
    q, _ = torch.linalg.qr(g.a)
    pu = (f.weight[y][:, None, :] - f.weight[None, :, :]) @ q @ q.T      # (n, k, m)
    gap = logits.gather(1, y[:, None]) - logits
    dist = torch.where(torch.arange(logits.shape[1])[None, :] == y[:, None], torch.inf, gap / pu.norm(dim=2))
    j = dist.argmin(1)
    rows = torch.arange(len(y))
    step = gap[rows, j][:, None] * pu[rows, j] / pu[rows, j].norm(dim=1, keepdim=True) ** 2
    return (step @ torch.linalg.pinv(g.a).T).norm(dim=1)


@pytest.mark.parametrize("k, cand", [(2, None), (5, None), (6, 3)])
def test_boundary_search_exact_on_a_linear_generator(k: int, cand: int | None) -> None:
    g, f = Linear(5, 12, seed=k), affine(12, k, seed=30 + k)
    z = torch.randn(25, 5, dtype=DT, generator=torch.Generator().manual_seed(k))
    r_in, _ = linear_closed_forms(g, f, z, cand)
    res = in_distribution_attack(f, g, z, candidates=cand)
    assert bool(res.success.all())
    assert float((res.image_distances / r_in - 1).abs().max()) < 1e-6   # aims at least 1e-6 beyond
    # the old pulled-back DeepFool search is exact too, up to its push and overshoot
    old = in_distribution_attack(f, g, z, candidates=cand, boundary_steps=0, include_latent=False)
    assert float((old.image_distances / r_in - 1).max()) > 1e-3


def test_boundary_search_on_the_torus_reaches_the_global_minimum() -> None:
    """A non-linear generator with a known global r_in: on the 3- and 8-torus the search is exact to 1e-6 on
    most samples (a sample may end in a local minimum), never below the minimum, and far better than the
    pulled-back DeepFool search."""
    for d, allowed in ((3, 0.05), (8, 0.0)):
        g, f = TorusGenerator(d), SineSum()
        z = torch.rand(100, d, dtype=DT, generator=torch.Generator().manual_seed(d))
        exact = torch.from_numpy(torus_sine_sum_in_distribution_robustness(z.numpy()))
        res = in_distribution_attack(f, g, z)
        assert bool(res.success.all())
        ratio = res.image_distances / exact
        assert float(ratio.min()) > 1 - 1e-9
        assert float(ratio.median()) < 1 + 1e-6
        assert float((ratio > 1 + 1e-4).double().mean()) <= allowed
        old = in_distribution_attack(f, g, z, boundary_steps=0)
        assert float((old.image_distances / exact).median()) > 1.02


def mlp_pair(seed: int, dtype: torch.dtype = DT) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 16)).to(dtype).requires_grad_(False)
    f = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(dtype).requires_grad_(False)
    return f, g


def test_batch_consistency_verification_and_pipeline_call() -> None:
    """Each sample's result does not depend on the rest of the batch; every success is re-verified; the
    pipeline's call (latent result passed in, shared options) gives the same points."""
    f, g = mlp_pair(1)
    z = torch.randn(12, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    opts = DeepFoolOptions(candidates=3).kwargs()
    full = in_distribution_attack(f, g, z, **opts)
    halves = [in_distribution_attack(f, g, part, **opts) for part in (z[:5], z[5:])]
    torch.testing.assert_close(full.z_adv, torch.cat([h.z_adv for h in halves]), rtol=1e-9, atol=1e-12)
    assert full.method == halves[0].method + halves[1].method
    with torch.no_grad():
        pred = f(g(full.z_adv)).argmax(1)
    assert torch.equal(pred != full.labels, full.success) and bool(full.success.all())
    torch.testing.assert_close(full.image_distances, (g(full.z_adv) - g(z)).norm(dim=1))
    lat = latent_deepfool(f, g, z, **opts)
    assert torch.equal(in_distribution_attack(f, g, z, latent=lat, **opts).z_adv, full.z_adv)
    # the best of its candidates: never worse than latent DeepFool's image distance
    assert bool((full.image_distances <= lat.image_distances).all())


def test_float32_and_float64() -> None:
    """The dtype follows the inputs; float32 finds the float64 distances to float32 accuracy on most samples."""
    z = torch.randn(16, 4, dtype=DT, generator=torch.Generator().manual_seed(3))
    out = {}
    for dtype in (torch.float32, torch.float64):
        f, g = mlp_pair(4, dtype)
        res = in_distribution_attack(f, g, z.to(dtype))
        assert res.z_adv.dtype == dtype and res.image_distances.dtype == dtype
        assert bool(res.success.all())
        with torch.no_grad():
            assert bool((f(g(res.z_adv)).argmax(1) != res.labels).all())
        out[dtype] = res.image_distances.double()
    rel = (out[torch.float32] / out[torch.float64] - 1).abs()
    assert float(rel.median()) < 1e-3


def test_generator_gram_chunks_agree() -> None:
    f, g = mlp_pair(5)
    z = torch.randn(7, 4, dtype=DT)
    torch.testing.assert_close(generator_gram(g, z, max_chunk_elems=1), generator_gram(g, z), rtol=1e-12, atol=0)


def test_penalty_search_reaches_the_closed_forms() -> None:
    """Two classes: the adversarial region is a half-space and the problem convex, so a penalty search has
    no local minimum to stop in (with more classes it may settle in the half-space of a farther class).
    Adam's steps in z are about lr per coordinate: with a generator's gain of 10 (singular values 5 to 20)
    and z of scale 0.1 the minimal latent perturbations are tenths, as on the MNIST networks."""
    g, f = Linear(4, 10, seed=7, spread=0.3, gain=10.0), affine(10, 2, seed=8)
    z = 0.1 * torch.randn(10, 4, dtype=DT, generator=torch.Generator().manual_seed(9))
    r_in, r_z = linear_closed_forms(g, f, z)
    img = latent_penalty_attack(f, g, z, distance="image", rounds=5, steps=600)
    lat = latent_penalty_attack(f, g, z, distance="latent", rounds=5, steps=600)
    # the regime it is built for: minimal latent perturbations below 0.5 (larger ones take more steps)
    near = (latent_norm_of_r_in_minimiser(g, f, z) < 0.5, r_z < 0.5)
    for res, exact, got, sel in ((img, r_in, img.image_distances, near[0]), (lat, r_z, lat.latent_norms, near[1])):
        assert set(res.method) == {"penalty"} and int(sel.sum()) >= 5
        with torch.no_grad():
            assert torch.equal(f(g(res.z_adv)).argmax(1) != res.labels, res.success)
        assert bool(res.success[sel].all())
        assert float((got[res.success] / exact[res.success]).min()) > 1 - 1e-9
        assert float((got[sel] / exact[sel]).max()) < 1.01


def test_bad_arguments_are_named() -> None:
    f, g = mlp_pair(6)
    z = torch.randn(3, 4, dtype=DT)
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="boundary_steps"):
            in_distribution_attack(f, g, z, boundary_steps=bad)
    with pytest.raises(ValueError, match="latent"):
        in_distribution_attack(f, g, z, latent=latent_deepfool(f, g, z[:2]))
    for kwargs, name in ((dict(distance="pixels"), "distance"), (dict(rounds=0), "rounds"), (dict(steps=1.5), "steps"),
                         (dict(lr=0.0), "lr"), (dict(c_init=math.inf), "c_init"), (dict(kappa=-1.0), "kappa"),
                         (dict(init=torch.zeros(3, 5, dtype=DT)), "init"),
                         (dict(init=torch.full((3, 4), math.nan, dtype=DT)), "init")):
        with pytest.raises(ValueError, match=name):
            latent_penalty_attack(f, g, z, **kwargs)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rin", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_pieces_on_the_linear_toy() -> None:
    """The benchmark's references, ratios and old Gram matrix on a case with known answers."""
    bench = _bench()
    g, f = Linear(4, 10, seed=11, spread=0.3, gain=10.0), affine(10, 2, seed=12)
    z = 0.1 * torch.randn(8, 4, dtype=DT, generator=torch.Generator().manual_seed(13))
    r_in, _ = linear_closed_forms(g, f, z)
    refs = bench.penalty_references(f, g, z, "image", torch.float64, restarts=1, rounds=4, steps=300, seed=0)
    assert set(refs) == {"penalty lr=0.01", "penalty lr=0.003", "penalty lr=0.01 random start 1"}
    best = np.min([d for d, _ in refs.values()], axis=0)
    near = (latent_norm_of_r_in_minimiser(g, f, z) < 0.5).numpy()
    assert near.sum() >= 4
    np.testing.assert_allclose(best[near], r_in.numpy()[near], rtol=5e-2)
    assert (best >= r_in.numpy() * (1 - 1e-9)).all()
    ours = bench.verified_distances(f, g, z, in_distribution_attack(f, g, z).z_adv, "image")
    row = bench.summarise(ours, best, np.minimum(ours, best))
    assert row["median_ratio"] <= 1.0 and row["success_rate"] == 1.0 and row["samples_compared"] == 8
    assert row["median_ratio_to_best_known"] == pytest.approx(1.0, abs=1e-12)
    # failures are +inf: they count in the ratios and push quantiles to inf
    failed = ours.copy()
    failed[:5] = np.inf
    assert math.isinf(bench.summarise(failed, best, best)["median_ratio"])
    assert bench.quantile(np.array([1.0, 2.0, 3.0, np.inf]), 0.25) == pytest.approx(1.75)
    torch.testing.assert_close(bench.gram_repeated_batch(g, z), generator_gram(g, z))
    # unverifiable points count as failures
    assert np.isinf(bench.verified_distances(f, g, z, z, "latent")).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_boundary_search_on_cuda() -> None:  # pragma: no cover - run where a GPU exists
    g, f = Linear(5, 12, seed=3), affine(12, 4, seed=4)
    z = torch.randn(20, 5, dtype=DT, generator=torch.Generator().manual_seed(5))
    r_in, _ = linear_closed_forms(g, f, z)
    res = in_distribution_attack(f.cuda(), g.cuda(), z.cuda())
    assert res.z_adv.is_cuda and res.image_distances.is_cuda and bool(res.success.all())
    assert float((res.image_distances.cpu() / r_in - 1).abs().max()) < 1e-6


def test_latent_classifier_searches_match_the_composed_classifier() -> None:
    """latent_classifier=True: the classifier takes latent codes, ``h(w)``.  On a linear generator with an
    affine latent classifier ``h(w) = V w + b``, the composed image classifier ``f(x) = V A^+ (x - c) + b`` has
    ``f o g = h``, so both searches have the same closed forms: ``r_in = min_j gap_j / sqrt(a_j^T (A^T A)^{-1}
    a_j)`` (``a_j = v_y - v_j``) and ``r_Z = min_j gap_j / ||a_j||``."""
    g = Linear(5, 12, seed=7)
    torch.manual_seed(8)
    h = nn.Linear(5, 4).to(DT).requires_grad_(False)
    z = torch.randn(30, 5, dtype=DT, generator=torch.Generator().manual_seed(9))
    logits = h(z)
    y = logits.argmax(1)
    a = h.weight[y][:, None, :] - h.weight[None, :, :]                    # (n, K, d)
    gap = logits.gather(1, y[:, None]) - logits
    inv = torch.linalg.inv(g.a.T @ g.a)
    own = torch.arange(4)[None, :] == y[:, None]
    r_in = torch.where(own, torch.inf, gap / torch.einsum("nkd,de,nke->nk", a, inv, a).sqrt()).min(1).values
    r_z = torch.where(own, torch.inf, gap / a.norm(dim=2)).min(1).values
    res = in_distribution_attack(h, g, z, latent_classifier=True)
    assert bool(res.success.all()) and torch.equal(res.labels, y)
    assert float((res.image_distances / r_in - 1).abs().max()) < 1e-6
    lat = latent_deepfool(h, g, z, latent_classifier=True, refine=True)
    assert float((lat.latent_norms / r_z - 1).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="latent_classifier"):
        in_distribution_attack(h, g, z, latent_classifier=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):  # the latent classifier must take z as it is
        in_distribution_attack(h.float(), g, z, latent_classifier=True)
