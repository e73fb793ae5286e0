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

import math

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


# ---------------------------------------------------------------- branches named by mutation testing (issue 20)

class Ramp(nn.Module):
    """Two classes on R^3 decided by x_0 alone: l_1 = 0 and l_0 = 1 - 3 relu(x_0) + 2 relu(x_0 - 0.2).

    For x_0 < 0, l_0 = 1 is flat (zero gradient: DeepFool has no direction); on (0, 0.2) l_1 - l_0 = 3 x_0 - 1;
    beyond 0.2 it is x_0 - 0.6, so the boundary is x_0 = 0.6.  With overshoot 0.02, a start at 0.3 crosses in
    one step (0.3 + 1.02 (0.3 + 1e-4) = 0.606); a start at 0.1 first aims at 1/3 along the steeper slope, lands
    at 0.338 (still label 0), and crosses at the second step (0.1 + 1.02 (0.4957) = 0.606)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l0 = 1 - 3 * torch.relu(x[:, 0]) + 2 * torch.relu(x[:, 0] - 0.2)
        return torch.stack([l0, torch.zeros_like(l0)], dim=1)


def _ramp_points(*x0: float) -> torch.Tensor:
    x = torch.zeros(len(x0), 3, dtype=DT)
    x[:, 0] = torch.tensor(x0, dtype=DT)
    x[:, 1:] = 0.5  # the other coordinates play no part
    return x


def test_zero_gradient_samples_give_up_alone() -> None:
    x = _ramp_points(-0.5, 0.3, -0.1, 0.1)
    res = deepfool(Ramp(), x)
    assert res.success.tolist() == [False, True, False, True]
    assert res.steps.tolist() == [0, 1, 0, 2]
    assert torch.equal(res.x_adv[[0, 2]], x[[0, 2]])  # no step at all where no direction exists
    torch.testing.assert_close(res.norms[1], torch.tensor(1.02 * (0.3 + PUSH), dtype=DT), rtol=1e-12, atol=0)
    for i in (1, 3):  # the samples that moved are not affected by the ones that gave up
        alone = deepfool(Ramp(), x[i:i + 1])
        torch.testing.assert_close(res.x_adv[i:i + 1], alone.x_adv, rtol=1e-14, atol=0)


class Ramp3(Ramp):
    """:class:`Ramp` with a third class whose logit is -10 everywhere (a candidate with a zero gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        two = super().forward(x)
        return torch.cat([two, torch.full_like(two[:, :1], -10.0)], dim=1)


@pytest.mark.parametrize("model, starts, sizes", [
    # 2 finished x (2 - 1) candidates x 2 >= 1 survivor: a fresh forward on the survivor
    (Ramp, (0.3, 0.3, 0.1), [3, 1, 3, 3, 1, 1, 3]),
    # 2 x 1 x 1 >= 2 survivors (equality): fresh
    (Ramp, (0.3, 0.1, 0.1), [3, 1, 3, 3, 2, 2, 3]),
    # 2 x 1 x 1 < 3: the previous graph is reused, no extra forward
    (Ramp, (0.3, 0.1, 0.1, 0.1), [4, 1, 4, 4, 3, 4]),
    # 2 x 2 x 1 >= 3: fresh
    (Ramp, (0.3, 0.3, 0.1, 0.1, 0.1), [5, 1, 5, 5, 3, 3, 5]),
    # three candidates: 2 x 1 x 2 >= 3: fresh
    (Ramp3, (0.3, 0.1, 0.1, 0.1), [4, 1, 4, 4, 3, 3, 4]),
    # 2 x 1 x 1 < 5: reuse
    (Ramp, (0.3, 0.1, 0.1, 0.1, 0.1, 0.1), [6, 1, 6, 6, 5, 6]),
])
def test_finished_samples_cost_one_forward_or_reuse_the_graph(model, starts, sizes) -> None:
    """Forward passes, in order: the clean logits, the one-sample differentiability check, one per DeepFool
    iteration on the active samples, plus a fresh one on the survivors when the backward passes that the
    finished rows would waste (about 2 per finished row and candidate class) reach the survivors' count,
    and the verification of the returned points."""
    net = model()
    seen: list[int] = []
    net.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = _ramp_points(*starts)
    res = deepfool(net, x)
    assert seen == sizes
    assert bool(res.success.all()) and res.steps.tolist() == [1 if s == 0.3 else 2 for s in starts]
    assert res.steps.dtype == torch.long
    for i in range(len(starts)):  # either branch gives each sample the numbers it gets alone
        torch.testing.assert_close(res.x_adv[i:i + 1], deepfool(model(), x[i:i + 1]).x_adv, rtol=1e-14, atol=0)


@pytest.mark.parametrize("batched", [False, True])
def test_batched_grads_use_one_vmapped_backward(batched: bool, monkeypatch) -> None:
    """With batched_grads, each DeepFool iteration computes the gradients of all its candidate differences in
    one backward (is_grads_batched); without, one backward per candidate.  The points are the same."""
    lin = affine(5, 3, seed=14)  # two candidate differences per sample
    x = torch.randn(4, 5, dtype=DT, generator=torch.Generator().manual_seed(14))
    calls: list[bool] = []
    real = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(bool(kwargs.get("is_grads_batched", False)))
        return real(*args, **kwargs)

    reference = deepfool(lin, x, overshoot=0.0)
    monkeypatch.setattr(torch.autograd, "grad", counting)
    res = deepfool(lin, x, overshoot=0.0, batched_grads=batched)
    # one differentiability check, then (affine: one iteration) one batched or two plain backwards
    assert calls == ([False, True] if batched else [False, False, False])
    torch.testing.assert_close(res.x_adv, reference.x_adv, rtol=1e-14, atol=0)


class Overflowing(nn.Module):
    """Two classes, l = (1, l_1) with l_1 = x_0 + x_2 sqrt(|x_0|), times 10^(40 x_1), x_1 and x_2 detached:
    x_1 = 1 makes the logits infinite in float32; x_2 = 1 at x_0 = 0 makes the gradient of l_1 infinite
    (0 x inf) while the logits stay finite.  Rows never mix, so the other samples are ordinary: l_1 - l_0 =
    x_0 - 1, at distance 1 - x_0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l1 = x[:, 0] + x[:, 2].detach() * torch.sqrt(x[:, 0].abs())
        scale = 10.0 ** (40 * x[:, 1].detach())
        return torch.stack([torch.ones_like(l1), l1], dim=1) * scale[:, None]


def test_overflow_is_named_and_ends_only_its_own_sample() -> None:
    x = torch.tensor([[0.5, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.0, 0.0]])
    with pytest.warns(RuntimeWarning, match=r"DeepFool: 2 of 4 samples met non-finite logits or gradients .*float32"):
        res = deepfool(Overflowing(), x)
    assert res.success.tolist() == [True, False, False, True]
    torch.testing.assert_close(res.norms[[0, 3]], torch.tensor([0.5, 0.8]).add(PUSH).mul(1.02), rtol=1e-5, atol=0)


def test_ordinary_runs_and_zero_gradients_raise_no_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deepfool(affine(5, 3, seed=15), torch.randn(6, 5, dtype=DT))
        res = deepfool(Ramp(), _ramp_points(-0.5, 0.3))  # a sample with no direction gives up, silently
    assert res.success.tolist() == [False, True]


def _half_plane(c: float) -> nn.Linear:
    """Two classes on R^2: label 1 where x_0 + x_1 > c."""
    lin = nn.Linear(2, 2).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=DT))
        lin.bias.copy_(torch.tensor([0.0, -c], dtype=DT))
    return lin


def test_refined_points_stay_in_the_box() -> None:
    """From (0.1, 0.95) the nearest point of {x_0 + x_1 >= 1.2} is (0.225, 1.075), outside the box [0, 1]^2; in
    the box it is (0.2, 1.0), at distance sqrt(0.1^2 + 0.05^2); from (0.15, 0.98) it is (0.2, 1.0) again, while
    the unclipped projection (0.185, 1.015) would leave the box."""
    lin = _half_plane(1.2)
    x = torch.tensor([[0.1, 0.95], [0.15, 0.98]], dtype=DT)
    res = deepfool(lin, x, refine=True, box=(0.0, 1.0))
    assert bool(res.success.all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    exact = torch.tensor([(0.1 ** 2 + 0.05 ** 2) ** 0.5, (0.05 ** 2 + 0.02 ** 2) ** 0.5], dtype=DT)
    assert bool((res.norms >= exact * (1 - 1e-12)).all()) and bool((res.norms <= exact * 1.05).all())
    plain = deepfool(lin, x, box=(0.0, 1.0))
    assert float(res.norms[0]) < float(plain.norms[0])


def test_refined_labels_are_those_of_the_refined_points() -> None:
    """A large overshoot carries DeepFool's points past a second boundary, into a third class; refinement
    brings them back next to the first one, and the labels reported are those of the returned points."""
    lin = affine(2, 3, seed=12)
    x = torch.randn(200, 2, dtype=DT, generator=torch.Generator().manual_seed(12))
    plain = deepfool(lin, x, overshoot=3.0)
    res = deepfool(lin, x, overshoot=3.0, refine=True)
    with torch.no_grad():
        assert torch.equal(res.adv_labels, lin(res.x_adv).argmax(1))
        assert torch.equal(plain.adv_labels, lin(plain.x_adv).argmax(1))
    assert bool((res.adv_labels != plain.adv_labels).any())  # the case this test is about occurs
    assert bool((res.norms <= plain.norms).all())


def test_an_invalid_refined_point_is_never_returned(monkeypatch) -> None:
    """If refinement returned a point with the clean label, the DeepFool point and its label are kept."""
    import importlib

    deepfool_module = importlib.import_module("advbound.attacks.deepfool")  # the module, not the function
    lin = affine(6, 4, seed=13)
    x = torch.randn(10, 6, dtype=DT, generator=torch.Generator().manual_seed(13))
    plain = deepfool(lin, x)
    monkeypatch.setattr(deepfool_module, "_refine", lambda fn, x0, *args, **kwargs: x0.clone())
    res = deepfool(lin, x, refine=True)
    assert torch.equal(res.x_adv, plain.x_adv) and torch.equal(res.adv_labels, plain.adv_labels)
    assert torch.equal(res.success, plain.success)


def _illinois(margin, lo: float, m_lo: float, hi: float, m_hi: float, iters: int) -> float:
    """Regula falsi, Illinois variant, as the refinement documents it, on a scalar margin: the secant point,
    nudged by 1e-6 of the bracket towards the valid end and kept at least 1e-3 of it above the invalid end;
    the margin at the stale end is halved when the same end moved twice in a row."""
    side = 0
    for _ in range(iters):
        t = hi - m_hi * (hi - lo) / max(m_hi - m_lo, 1e-30)
        t = min(max(t + 1e-6 * (hi - lo), lo + 1e-3 * (hi - lo)), hi)
        m_t = margin(t)
        if m_t > 0:
            m_lo = 0.5 * m_lo if side > 0 else m_lo
            hi, m_hi, side = t, m_t, 1
        else:
            m_hi = 0.5 * m_hi if side < 0 else m_hi
            lo, m_lo, side = t, m_t, -1
    return hi


MARGINS = {
    # lo moves: the secant point falls short of the root (0.5225) of a convex margin
    "cubic": lambda t: t ** 3 + t / 10 - 0.2,
    # hi moves twice in a row (a concave margin): the stale end's margin is halved
    "sqrt": lambda t: math.sqrt(t) - 0.5,
    # a plateau of ties (margin exactly 0 on [0.2, 0.7)): a tie is not a label change
    "plateau": lambda t: -0.2 if t < 0.2 else (0.0 if t < 0.7 else t - 0.7),
    # a margin steep at the valid end: the secant point is within 1e-3 of the bracket from lo
    "steep": lambda t: t ** 9 - 1e-9,
    # just below 0 up to 5e-4, then a steep climb: the secant point (1e-12 + the 1e-6 nudge) falls short of the root,
    # the floor of 1e-3 of the bracket above lo lifts it past the root, onto the valid side
    "cliff": lambda t: 1000 * (t - 5e-4) if t >= 5e-4 else -1e-9,
}


@pytest.mark.parametrize("iters", [1, 2, 3, 6])
@pytest.mark.parametrize("name", list(MARGINS))
def test_boundary_search_is_the_documented_regula_falsi(name: str, iters: int) -> None:
    """Along x_0 = t the logits (0, margin(x_0)) have that margin; from the bracket [0, 1] the search shrinks
    the valid end towards the boundary exactly as the scalar method does, and never onto an invalid point."""
    from advbound.attacks.refine import _boundary_search

    margin = MARGINS[name]

    def fn(x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor([margin(float(v)) for v in x[:, 0]], dtype=DT)
        return torch.stack([torch.zeros_like(m), m], dim=1)

    x0 = torch.zeros(1, 2, dtype=DT)
    u = torch.tensor([[1.0, 0.0]], dtype=DT)
    y = torch.zeros(1, dtype=torch.long)
    one = torch.ones(1, dtype=DT)
    got = _boundary_search(fn, x0, u, y, 0 * one, margin(0.0) * one, one, margin(1.0) * one, iters, None)
    ref = _illinois(margin, 0.0, margin(0.0), 1.0, margin(1.0), iters)
    assert float(got[0]) == pytest.approx(ref, rel=1e-14)
    assert margin(ref) > 0 and ref <= 1.0


@pytest.mark.parametrize("inside", [True, False])
def test_refinement_reaches_the_nearest_point_of_a_curved_boundary(inside: bool) -> None:
    """Two classes split by the ellipse x_0^2 / 4 + x_1^2 = 1 (logits 3 and 3 +- (x_0^2 / 4 + x_1^2 - 1) / 10, so
    neither logit is 0 and gradients are short).  DeepFool follows the gradient, which does not point at the
    nearest boundary point; refinement (search along the segment, then projections onto the linearised
    boundary, searched again where the projection falls short) brings the distance within 3e-4 of the exact one
    (1e-3 from outside), found here by minimising over the ellipse's angle.  From outside, the adversarial region
    is the convex ellipse, so every projection falls short and the search after it is needed."""
    sign = 1.0 if inside else -1.0

    def fn(x: torch.Tensor) -> torch.Tensor:
        q = x[:, 0] ** 2 / 4 + x[:, 1] ** 2 - 1
        return torch.stack([torch.full_like(q, 3.0), 3.0 + sign * q / 10], dim=1)

    if inside:
        x = torch.tensor([[0.0, 0.8], [1.5, 0.4], [1.0, 0.7], [-1.7, 0.3], [0.6, -0.85], [0.5, 0.3]], dtype=DT)
    else:
        x = torch.tensor([[0.0, 1.2], [1.9, 0.5], [1.2, 1.0], [-2.3, 0.2], [0.6, -1.1], [2.2, -0.1]], dtype=DT)
    angles = torch.linspace(0, 2 * math.pi, 400_001, dtype=DT)
    ellipse = torch.stack([2 * torch.cos(angles), torch.sin(angles)], dim=1)
    exact = torch.cdist(x, ellipse).min(dim=1).values
    plain = deepfool(fn, x)
    res = deepfool(fn, x, refine=True)
    assert bool(res.success.all())
    with torch.no_grad():
        assert torch.equal(fn(res.x_adv).argmax(1), res.adv_labels) and bool((res.adv_labels != res.labels).all())
    assert bool((res.norms >= exact * (1 - 1e-9)).all())     # valid points: never closer than the boundary
    assert bool((res.norms <= exact * (1 + (3e-4 if inside else 1e-3))).all())
    assert bool((res.norms < plain.norms).all())
    if inside:  # DeepFool alone is 8% to 100% too far there (from outside, 0.1% to 0.7%)
        assert bool((plain.norms > exact * 1.08).all())


class _Ellipse(nn.Module):
    """The two classes of the ellipse test as a module (forward passes can be counted); ``sign`` -1 puts the
    adversarial class inside."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x[:, 0] ** 2 / 4 + x[:, 1] ** 2 - 1
        return torch.stack([torch.full_like(q, 3.0), 3.0 + self.sign * q / 10], dim=1)


@pytest.mark.parametrize("sign, point, extra", [(1.0, [0.0, 0.8], 10), (1.0, [1.5, 0.4], 10), (-1.0, [1.9, 0.5], 16)])
def test_refinement_does_the_documented_work(sign: float, point: list, extra: int) -> None:
    """Forward passes that refinement adds for one sample: 3 for the boundary search along the segment, then for
    each of the 2 projections 1 (gradient at the boundary point) + 1 (the projection's scale) + 1 (the point
    re-checked), and, where the projection falls short (the adversarial region inside the convex ellipse),
    1 (the current scale) + 2 (the search between them, one iteration fewer); then 1 for the labels:
    3 + 2 x 3 + 1 = 10 from inside, 3 + 2 x 6 + 1 = 16 from outside."""
    model = _Ellipse(sign)
    seen: list[int] = []
    model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = torch.tensor([point], dtype=DT)
    deepfool(model, x)
    plain = len(seen)
    seen.clear()
    assert bool(deepfool(model, x, refine=True).success.all())
    assert len(seen) - plain == extra


# ---------------------------------------------------------------- second mutation round (issue 20)

def test_deepfool_on_one_dimensional_inputs() -> None:
    """x of shape (n, 1): the exact distance |l_0 - l_1| / |w_0 - w_1| of an affine classifier on the line."""
    lin = affine(1, 2, seed=16)
    x = torch.randn(7, 1, dtype=DT, generator=torch.Generator().manual_seed(16))
    res = deepfool(lin, x, overshoot=0.0)
    assert bool(res.success.all()) and res.steps.tolist() == [1] * 7
    torch.testing.assert_close(res.norms, affine_distance(lin, x) + PUSH, rtol=1e-10, atol=0)


def test_a_batch_where_no_sample_has_a_direction() -> None:
    """Every start of :class:`Ramp` with x_0 < 0 sees flat logits: all give up at once, silently, unmoved."""
    import warnings

    x = _ramp_points(-0.5, -0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = deepfool(Ramp(), x)
    assert res.success.tolist() == [False, False] and res.steps.tolist() == [0, 0]
    assert torch.equal(res.x_adv, x)


@pytest.mark.parametrize("batched", [False, True])
def test_one_candidate_difference_needs_no_vmapped_backward(batched: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two classes: one difference l_1 - l_0 per sample, whose gradient is one plain backward either way."""
    lin = affine(5, 2, seed=17)
    x = torch.randn(4, 5, dtype=DT, generator=torch.Generator().manual_seed(17))
    calls: list[bool] = []
    real = torch.autograd.grad

    def counting(*args: object, **kwargs: object) -> tuple[torch.Tensor, ...]:
        calls.append(bool(kwargs.get("is_grads_batched", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    res = deepfool(lin, x, overshoot=0.0, batched_grads=batched)
    assert calls == [False, False]  # the differentiability check, then the one iteration of an affine model
    monkeypatch.undo()
    torch.testing.assert_close(res.norms, affine_distance(lin, x) + PUSH, rtol=1e-10, atol=0)


class Escaping(nn.Module):
    """Two classes on R^2: l_0 = 1, l_1 = w min(x_0, 1e300), w = 1e-308 where x_1 > 0 (detached), else 1.

    From x_0 = 0 with w = 1: the boundary x_0 = 1, crossed in one step.  With w = 1e-308 the boundary lies at 1e308,
    and one step with overshoot 1 lands at 2e308 = inf, where the logits are still finite (l_1 = 1e-8): the iterate,
    not the logits, is what overflowed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.where(x[:, 1].detach() > 0, torch.full_like(x[:, 1], 1e-308), torch.ones_like(x[:, 1]))
        l1 = w * x[:, 0].clamp(max=1e300)
        return torch.stack([torch.ones_like(l1), l1], dim=1)


def test_an_iterate_that_overflows_ends_only_its_own_sample() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=DT)
    with pytest.warns(RuntimeWarning, match=r"DeepFool: 1 of 2 samples met non-finite"):
        res = deepfool(Escaping(), x, overshoot=1.0)
    assert res.success.tolist() == [False, True] and res.steps.tolist() == [1, 1]
    assert math.isinf(float(res.x_adv[0, 0]))
    torch.testing.assert_close(res.norms[1], torch.tensor(2 * (1 + PUSH), dtype=DT), rtol=1e-12, atol=0)


class FlatOrSteep(nn.Module):
    """Two classes on R^3: l_0 = 1, l_1 = relu(x_0) + x_2 sqrt(|x_0|) (x_2 detached).  At x_0 < 0 with x_2 = 0 the
    gradient is 0 (no direction, an ordinary give-up); at x_0 = 0 with x_2 = 1 it is not finite (0 x inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l1 = torch.relu(x[:, 0]) + x[:, 2].detach() * torch.sqrt(x[:, 0].abs())
        return torch.stack([torch.ones_like(l1), l1], dim=1)


def test_only_non_finite_gradients_count_as_overflow() -> None:
    """In one iteration a zero gradient and a non-finite one both give up; only the second is named."""
    x = torch.tensor([[-0.5, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0]], dtype=DT)
    with pytest.warns(RuntimeWarning, match=r"DeepFool: 1 of 3 samples met non-finite"):
        res = deepfool(FlatOrSteep(), x)
    assert res.success.tolist() == [False, False, True] and res.steps.tolist() == [0, 0, 1]


def test_refinement_searches_the_projection_ray_inside_the_box() -> None:
    """Label 1 where x_0 / 2 + x_1 > 1.2, box [0, 1]^2.  From (0.95, 0.3) and (0.9, 0.1) the projection onto the
    line leaves the box (x_0 > 1), so the nearest adversarial point of the box is (1, 0.7), on its face.  Given a
    poor adversarial point (the search along the segment to it stops at distance 0.75 and 0.93), the projection
    step must judge the points of its ray after clipping them to the box: clipped at the projection's own length
    they are not adversarial, and a search between that length and the current distance, on clipped points,
    reaches (1, 0.7)."""
    from advbound.attacks.base import _identity_metric
    from advbound.attacks.deepfool import _l2_cost
    from advbound.attacks.refine import _margin, _refine

    lin = nn.Linear(2, 2).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [0.5, 1.0]], dtype=DT))
        lin.bias.copy_(torch.tensor([0.0, -1.2], dtype=DT))
    x0 = torch.tensor([[0.95, 0.3], [0.9, 0.1]], dtype=DT)
    x_adv = torch.tensor([[0.5, 1.0], [0.6, 1.0]], dtype=DT)
    y = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        m0, m_adv = _margin(lin(x0), y), _margin(lin(x_adv), y)
    out = _refine(lin, x0, x_adv, y, torch.ones(2, dtype=torch.bool), m0, m_adv, metric=_identity_metric,
                  cost=_l2_cost, box=(0.0, 1.0))
    with torch.no_grad():
        assert bool((_margin(lin(out), y) > 0).all())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.7], [1.0, 0.7]], dtype=DT), rtol=0, atol=1e-6)
