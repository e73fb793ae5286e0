"""Tests of advbound.attacks against closed forms written here (not the library's toy objects).

References used:
* multi-class affine classifier ``argmax(W x + b)``: the region of label ``y`` is the intersection of the
  half-spaces ``l_y >= l_j``, so ``r_unc(x) = min_j (l_y - l_j) / ||w_y - w_j||`` exactly;
* isometric latent-linear toy ``g(z) = A z`` (orthonormal columns) with an affine image classifier:
  ``||g(z + r) - g(z)|| = ||r||`` and the latent classifier is affine with rows ``A^T w_j``, so
  ``r_in = r_Z = min_j (l_y - l_j) / ||A^T (w_y - w_j)||``.
DeepFool's step adds the reference implementation's push of 1e-4 and multiplies the accumulated
perturbation by ``1 + overshoot``; on an affine classifier it stops after one step, so its norm is exactly
``(r + 1e-4) (1 + overshoot)``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbound.attacks import PUSH, deepfool, generator_gram, in_distribution_attack, latent_deepfool

DT = torch.float64


def affine(n_in: int, k: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, k).to(DT)
    for p in lin.parameters():
        p.requires_grad_(False)
    return lin


def affine_distance(lin: nn.Linear, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """min over the other classes j of (l_y - l_j) / ||w_y - w_j||, by brute force over j.

    ``rows`` (n, c) restricts j per sample (columns other than the label)."""
    with torch.no_grad():
        logits = lin(x)
        y = logits.argmax(1)
        out = torch.full((x.shape[0],), float("inf"), dtype=DT)
        w = lin.weight
        for i in range(x.shape[0]):
            js = range(w.shape[0]) if rows is None else rows[i].tolist()
            for j in js:
                if j == int(y[i]):
                    continue
                d = (logits[i, y[i]] - logits[i, j]) / (w[y[i]] - w[j]).norm()
                out[i] = min(out[i], d)
    return out


def verify(model, x_adv: torch.Tensor, labels: torch.Tensor, success: torch.Tensor) -> None:
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert torch.equal(pred != labels, success)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
@pytest.mark.parametrize("overshoot", [0.0, 0.02])
def test_deepfool_exact_on_affine(k: int, overshoot: float) -> None:
    lin = affine(12, k, seed=k)
    x = torch.randn(40, 12, dtype=DT, generator=torch.Generator().manual_seed(1))
    ref = affine_distance(lin, x)
    res = deepfool(lin, x, overshoot=overshoot)
    assert bool(res.success.all())
    assert torch.equal(res.steps, torch.ones_like(res.steps))
    torch.testing.assert_close(res.norms, (ref + PUSH) * (1 + overshoot), rtol=1e-10, atol=0)
    # without the known push and overshoot the distance is the exact minimum to 1e-4 relative
    assert float(((res.norms / (1 + overshoot) - PUSH) / ref - 1).abs().max()) < 1e-4
    verify(lin, res.x_adv, res.labels, res.success)
    torch.testing.assert_close(res.perturbation, res.x_adv - x)


@pytest.mark.parametrize("k", [3, 10])
def test_refine_recovers_exact_distance(k: int) -> None:
    lin = affine(12, k, seed=10 + k)
    x = torch.randn(30, 12, dtype=DT, generator=torch.Generator().manual_seed(2))
    ref = affine_distance(lin, x)
    res = deepfool(lin, x, overshoot=0.02, refine=True)
    assert bool(res.success.all())
    verify(lin, res.x_adv, res.labels, res.success)
    rel = res.norms / ref - 1
    assert float(rel.min()) >= -1e-12  # never below the true minimum (the point is valid)
    assert float(rel.max()) < 1e-4


def test_candidates_are_per_sample_top_k() -> None:
    lin = affine(8, 6, seed=3)
    x = torch.randn(50, 8, dtype=DT, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        top2 = lin(x).topk(2, dim=1).indices
    assert len(set(top2[:, 1].tolist())) > 1  # the runner-up class differs across the batch
    ref = affine_distance(lin, x, rows=top2)
    res = deepfool(lin, x, candidates=2, overshoot=0.0)
    assert bool(res.success.all())
    torch.testing.assert_close(res.norms, ref + PUSH, rtol=1e-10, atol=0)
    # all classes can only do better
    assert bool((deepfool(lin, x, overshoot=0.0).norms <= res.norms + 1e-12).all())


def test_point_on_the_boundary_moves() -> None:
    lin = affine(4, 2, seed=4)
    with torch.no_grad():
        w, b = lin.weight, lin.bias
        dw, db = w[0] - w[1], b[0] - b[1]
        x = torch.randn(3, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
        x = x - ((x @ dw + db) / dw.dot(dw))[:, None] * dw  # l_0 == l_1 up to rounding
        x = x + 1e-9 * dw / dw.norm()                         # label 0 at a distance of 1e-9
    res = deepfool(lin, x, overshoot=0.0)
    assert bool(res.success.all())
    assert float(res.norms.max()) < 2e-4 and float(res.norms.min()) >= PUSH


def test_finished_samples_are_dropped_and_results_verified() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5)).to(DT)
    sizes: list[int] = []
    net.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    x = torch.randn(64, 10, dtype=DT, generator=torch.Generator().manual_seed(5))
    res = deepfool(net, x, overshoot=0.02)
    assert bool(res.success.all())
    assert int(res.steps.max()) > 1
    assert min(sizes) < 64  # later steps ran on the unfinished samples only
    verify(net, res.x_adv, res.labels, res.success)
    ref = deepfool(net, x, overshoot=0.02, refine=True)
    verify(net, ref.x_adv, ref.labels, ref.success)
    assert bool((ref.norms <= res.norms * (1 + 1e-9)).all())
    batched = deepfool(net, x, overshoot=0.02, batched_grads=True)
    torch.testing.assert_close(batched.x_adv, res.x_adv)


def test_failure_is_reported_not_hidden() -> None:
    """A boundary outside the box cannot be reached: every sample must be reported as a failure, with its
    last iterate inside the box; moving the boundary inside the box makes every sample succeed."""
    torch.manual_seed(6)
    x = 1e-3 * (2 * torch.rand(20, 6, dtype=DT) - 1)
    far = nn.Linear(6, 2).to(DT)
    with torch.no_grad():  # logits (x_1 + 2e-3, 0): label 0 everywhere in the box, boundary at x_1 = -2e-3
        far.weight.zero_()
        far.weight[0, 0] = 1.0
        far.bias.copy_(torch.tensor([2e-3, 0.0], dtype=DT))
    res = deepfool(far, x, overshoot=0.0, max_steps=3, box=(-1e-3, 1e-3))
    verify(far, res.x_adv, res.labels, res.success)
    assert not bool(res.success.any())
    assert bool((res.steps == 3).all())
    assert float(res.x_adv.abs().max()) <= 1e-3
    with torch.no_grad():  # boundary at x_1 = -5e-4, inside the box: reachable from every sample
        far.bias.copy_(torch.tensor([5e-4, 0.0], dtype=DT))
    res = deepfool(far, x, overshoot=0.02, max_steps=3, box=(-1e-3, 1e-3))
    verify(far, res.x_adv, res.labels, res.success)
    assert bool(res.success.all())


def test_clipping_to_the_box_fails_some_samples_of_a_batch() -> None:
    """Boundary x_1 + x_2 = 1.5e-3 near a corner of the box [-1e-3, 1e-3]^6.  One DeepFool step moves both
    coordinates by ((c - x_1 - x_2) / sqrt(2) + PUSH) / sqrt(2); it crosses the boundary exactly when neither
    coordinate is clipped, i.e. when max(x_1, x_2) + (c - x_1 - x_2) / 2 + PUSH / sqrt(2) <= 1e-3."""
    c, lim = 1.5e-3, 1e-3
    net = nn.Linear(6, 2).to(DT)
    with torch.no_grad():  # logits (0, x_1 + x_2 - c): label 0 below the boundary
        net.weight.zero_()
        net.weight[1, :2] = 1.0
        net.bias.copy_(torch.tensor([0.0, -c], dtype=DT))
    x = torch.zeros(5, 6, dtype=DT)
    x[:, :2] = torch.tensor([[5e-4, 5e-4], [-9e-4, 9e-4], [0.0, 0.0], [9e-4, -5e-4], [2e-4, 4e-4]], dtype=DT)
    s = x[:, :2].sum(1)
    expected = x[:, :2].max(1).values + (c - s) / 2 + PUSH / 2**0.5 <= lim
    assert expected.tolist() == [True, False, True, False, True]  # each at least 7e-5 from the threshold
    res = deepfool(net, x, overshoot=0.0, max_steps=1, box=(-lim, lim))
    verify(net, res.x_adv, res.labels, res.success)
    assert torch.equal(res.success, expected)
    assert float(res.x_adv.abs().max()) <= lim
    # a clipped sample still moved towards the boundary, but stopped short of it
    failed = ~expected
    assert bool((res.x_adv[failed, :2].sum(1) > s[failed]).all() and (res.x_adv[failed, :2].sum(1) < c).all())


def test_box_must_contain_the_input() -> None:
    net = nn.Linear(3, 2).to(DT)
    with pytest.raises(ValueError, match=r"x must lie inside box"):
        deepfool(net, torch.full((2, 3), 2.0, dtype=DT), box=(0, 1))
    with pytest.raises(ValueError, match=r"box must be \(low, high\) with low < high"):
        deepfool(net, torch.zeros(2, 3, dtype=DT), box=(1, 0))


class IsometricLinear(nn.Module):
    def __init__(self, d: int, m: int, seed: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(m, d, dtype=DT, generator=torch.Generator().manual_seed(seed)))
        self.register_buffer("a", q)
        self.latent_dim = d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


@pytest.mark.parametrize("k", [2, 4])
def test_latent_and_in_distribution_exact_on_isometric_linear(k: int) -> None:
    d, m = 6, 20
    g = IsometricLinear(d, m, seed=k)
    f = affine(m, k, seed=20 + k)
    z = torch.randn(30, d, dtype=DT, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        logits = f(g(z))
        y = logits.argmax(1)
        wl = f.weight @ g.a                       # latent rows A^T w_j
        gaps = logits.gather(1, y[:, None]) - logits
        dn = (wl[y][:, None, :] - wl[None, :, :]).norm(dim=2)
        ratio = torch.where(torch.arange(k)[None, :] == y[:, None], torch.inf, gaps / dn)
        ref = ratio.min(1).values
    lat = latent_deepfool(f, g, z, overshoot=0.0)
    assert bool(lat.success.all())
    torch.testing.assert_close(lat.latent_norms, ref + PUSH, rtol=1e-9, atol=0)
    torch.testing.assert_close(lat.image_distances, ref + PUSH, rtol=1e-9, atol=0)
    # the pulled-back DeepFool search (boundary_steps=0) stops after one step, with the push
    ind = in_distribution_attack(f, g, z, overshoot=0.0, include_latent=False, boundary_steps=0)
    assert bool(ind.success.all())
    assert float((ind.image_distances / (ref + PUSH) - 1).abs().max()) < 1e-5
    both = in_distribution_attack(f, g, z, overshoot=0.02, refine=True, boundary_steps=0)
    assert bool(both.success.all())
    assert float((both.image_distances / ref - 1).abs().max()) < 1e-4
    assert set(both.method) <= {"pullback_deepfool", "latent_deepfool"}
    # the boundary search (the default) ends on the boundary: the minimum itself, whatever the overshoot
    for res in (in_distribution_attack(f, g, z, overshoot=0.0, include_latent=False),
                in_distribution_attack(f, g, z, overshoot=0.02)):
        assert bool(res.success.all())
        assert float((res.image_distances / ref - 1).abs().max()) < 1e-6
        assert set(res.method) <= {"boundary_from_z", "boundary_from_latent", "latent_deepfool"}
        with torch.no_grad():
            pred = f(g(res.z_adv)).argmax(1)
        assert torch.equal(pred != res.labels, res.success)
        torch.testing.assert_close(res.z_adv, z + res.latent_perturbation)


def test_generator_gram_matches_autograd_jacobian() -> None:
    torch.manual_seed(7)
    g = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 5)).to(DT)
    z = torch.randn(4, 3, dtype=DT)
    gram = generator_gram(g, z)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: g(v[None])[0], z[i])
        torch.testing.assert_close(gram[i], jac.T @ jac)


def test_unconstrained_never_exceeds_in_distribution_on_mlp_generator() -> None:
    """r_unc <= r_in (Section 3) on a toy run with a non-linear generator: estimates on every sample."""
    torch.manual_seed(8)
    g = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 16)).to(DT)
    f = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(DT)
    z = torch.randn(40, 4, dtype=DT)
    with torch.no_grad():
        x = g(z)
    r_in = in_distribution_attack(f, g, z, refine=True)
    r_unc = deepfool(f, x, refine=True)
    r_z = latent_deepfool(f, g, z, refine=True)
    assert bool(r_in.success.all()) and bool(r_unc.success.all())
    assert bool((r_unc.norms <= r_in.image_distances).all())
    # the in-distribution search keeps the better of its candidates, latent DeepFool included
    assert bool((r_in.image_distances <= r_z.image_distances * (1 + 1e-6)).all())


def test_bad_arguments_raise_value_errors() -> None:
    lin = affine(5, 4, seed=9)
    x = torch.randn(3, 5, dtype=DT)
    with pytest.raises(ValueError, match="overshoot"):
        deepfool(lin, x, overshoot=-0.1)
    with pytest.raises(ValueError, match="max_steps"):
        deepfool(lin, x, max_steps=0)
    for bad in (1, 5, 0):
        with pytest.raises(ValueError, match="candidates"):
            deepfool(lin, x, candidates=bad)
    with pytest.raises(ValueError, match="shape mismatch"):
        deepfool(lambda t: lin(t)[:2], x)
    with pytest.raises(ValueError, match="x"):
        deepfool(lin, torch.randn(5, dtype=DT))
    with pytest.raises(ValueError, match="device"):
        deepfool(affine(5, 4, seed=9).to("meta"), x)
    g = IsometricLinear(3, 5, seed=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        latent_deepfool(lin, g, torch.randn(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="ridge"):
        in_distribution_attack(lin, g, torch.randn(2, 3, dtype=DT), ridge=-1.0)
    with pytest.raises(ValueError, match="refine"):
        deepfool(lin, x, refine="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_stay_on_cuda() -> None:  # pragma: no cover - run where a GPU exists
    lin = affine(12, 5, seed=11).cuda()
    x = torch.randn(16, 12, dtype=DT, device="cuda")
    res = deepfool(lin, x, overshoot=0.0, refine=True)
    assert res.x_adv.is_cuda and res.norms.is_cuda
    ref = affine_distance(lin.cpu(), x.cpu())
    assert float((res.norms.cpu() / ref - 1).abs().max()) < 1e-4


def test_options_object_and_best_of() -> None:
    """DeepFoolOptions validates once for all attacks (numpy integers accepted); best_of keeps, per sample, the
    valid result with the smallest image distance."""
    import numpy as np

    from advbound.attacks import DeepFoolOptions, best_of

    opts = DeepFoolOptions(candidates=np.int64(3), max_steps=np.int32(7))
    assert opts.kwargs() == {"candidates": 3, "overshoot": 0.02, "max_steps": 7, "refine": False,
                             "batched_grads": False}
    for bad, name in ((dict(max_steps=0), "max_steps"), (dict(max_steps=2.0), "max_steps"),
                      (dict(overshoot=float("inf")), "overshoot"), (dict(candidates=1), "candidates"),
                      (dict(refine=1), "refine")):
        with pytest.raises(ValueError, match=name):
            DeepFoolOptions(**bad)
    gen = IsometricLinear(4, 6, seed=0)
    clf = nn.Linear(6, 3).to(DT)
    z = torch.randn(8, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    a = latent_deepfool(clf, gen, z, max_steps=1, overshoot=0.0)
    b = latent_deepfool(clf, gen, z, **DeepFoolOptions(overshoot=0.5).kwargs())
    best = best_of(a, b)
    inf = torch.tensor(float("inf"), dtype=DT)
    cost = torch.stack([torch.where(r.success, r.image_distances, inf) for r in (a, b)])
    assert torch.equal(torch.where(best.success, best.image_distances, inf), cost.min(dim=0).values)
    assert torch.equal(best.success, a.success | b.success)
    assert set(best.method) <= {"latent_deepfool"}
    with pytest.raises(ValueError, match="same latent batch"):
        best_of(a, latent_deepfool(clf, gen, z[:4]))
