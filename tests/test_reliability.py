"""Reliability of the attacks, the projection classifier, prediction and modulus estimation.

* A model given in train mode (Dropout, BatchNorm) is attacked as in eval mode and comes back exactly as it
  went in: the same ``training`` flag on every submodule, bitwise the same buffers (BatchNorm's running
  statistics and ``num_batches_tracked``) and parameters, and ``.grad`` as it was.
* Non-finite inputs are refused with an error naming the argument; a non-finite point is never a success.
* Unusual models (a tuple or dict output, transposed logits, no autograd graph, another dtype) get an error
  naming the argument.

The expected results are computed here, on copies of the models put in eval mode by hand, or in closed form
(affine classifiers: ``r = min_j (l_y - l_j) / ||w_y - w_j||``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from advbound.attacks import DeepFoolOptions, best_of, deepfool, generator_gram, in_distribution_attack, latent_deepfool
from advbound.data import synthetic_stand_in
from advbound.modulus_estimation import estimate_modulus, local_increments
from advbound.projection import ProjectionClassifier
from advbound.training import error_rate, predict

DT = torch.float64


def _mlp(n_in: int, n_out: int, *, bn: bool = False, dropout: bool = False, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(n_in, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers.append(nn.Tanh())
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(16, n_out))
    model = nn.Sequential(*layers).to(DT)
    if bn:  # non-trivial running statistics, then train mode again
        with torch.no_grad():
            for s in range(3):
                model(torch.randn(32, n_in, dtype=DT, generator=torch.Generator().manual_seed(100 + s)) * 2 + 1)
    return model.train()


def _snapshot(model: nn.Module) -> dict:
    return {"modes": [m.training for m in model.modules()],
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()]}


def _assert_unchanged(model: nn.Module, snap: dict) -> None:
    assert [m.training for m in model.modules()] == snap["modes"]
    state = model.state_dict()
    assert state.keys() == snap["state"].keys()
    for key, value in snap["state"].items():
        assert torch.equal(state[key], value), key
    for p, g in zip(model.parameters(), snap["grads"], strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def _eval_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


def _x(n: int, d: int, seed: int, dtype=DT) -> torch.Tensor:
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Item 1: models in train mode come back untouched
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dropout", "batchnorm"])
def test_deepfool_on_a_train_mode_model_equals_eval_mode_and_leaves_it_untouched(kind):
    model = _mlp(6, 4, bn=kind == "batchnorm", dropout=kind == "dropout")
    for p in model.parameters():  # the user's own gradients, from a training step of theirs
        p.grad = torch.randn_like(p)
    snap = _snapshot(model)
    x = _x(24, 6, 1)
    rng = torch.get_rng_state()
    res = deepfool(model, x, max_steps=20, refine=True)
    ref = deepfool(_eval_copy(model), x, max_steps=20, refine=True)
    _assert_unchanged(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.success, ref.success)
    assert torch.equal(res.steps, ref.steps) and bool(res.success.all())
    # every reported success is a real label change of the eval-mode model
    with torch.no_grad():
        assert torch.equal(_eval_copy(model)(res.x_adv).argmax(1) != res.labels, res.success)


def test_mixed_modes_are_restored_exactly_even_when_the_attack_raises():
    model = _mlp(6, 4, bn=True, dropout=True)
    model[1].eval()  # a user who froze BatchNorm but trains the rest
    snap = _snapshot(model)
    deepfool(model, _x(8, 6, 2), max_steps=5)
    _assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="candidates"):
        deepfool(model, _x(8, 6, 2), candidates=9)
    _assert_unchanged(model, snap)


def test_latent_attacks_and_gram_leave_train_mode_models_untouched():
    clf = _mlp(5, 3, dropout=True, seed=1)
    gen = _mlp(3, 5, bn=True, seed=2)
    snaps = (_snapshot(clf), _snapshot(gen))
    z = _x(10, 3, 3)
    lat = latent_deepfool(clf, gen, z, max_steps=10)
    ind = in_distribution_attack(clf, gen, z, max_steps=10)
    gram = generator_gram(gen, z)
    _assert_unchanged(clf, snaps[0])
    _assert_unchanged(gen, snaps[1])
    clf_e, gen_e = _eval_copy(clf), _eval_copy(gen)
    assert torch.equal(lat.z_adv, latent_deepfool(clf_e, gen_e, z, max_steps=10).z_adv)
    assert torch.equal(ind.z_adv, in_distribution_attack(clf_e, gen_e, z, max_steps=10).z_adv)
    assert torch.equal(gram, generator_gram(gen_e, z))


def test_projection_classifier_fills_no_grad_and_keeps_statistics_and_rng():
    clf = _mlp(5, 3, dropout=True, seed=4)
    gen = _mlp(3, 5, bn=True, seed=5)
    snaps = (_snapshot(clf), _snapshot(gen))
    proj = ProjectionClassifier(clf, gen, 3, restarts=2, steps=30, lr=0.05)
    x = _x(6, 5, 6)
    rng = torch.get_rng_state()
    logits = proj(x)
    z, res = proj.project(x)
    _assert_unchanged(clf, snaps[0])
    _assert_unchanged(gen, snaps[1])
    assert torch.equal(torch.get_rng_state(), rng)
    ref = ProjectionClassifier(_eval_copy(clf), _eval_copy(gen), 3, restarts=2, steps=30, lr=0.05)
    assert torch.equal(logits, ref(x))
    assert torch.equal(z, ref.project(x)[0])


def test_predict_error_rate_and_modulus_estimation_give_the_model_back_in_its_mode():
    data = synthetic_stand_in(20, channels=1, image_size=4, n_classes=3, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(8, 3))
    snap = _snapshot(model)
    labels = predict(model, data.floats(), batch_size=7)
    err = error_rate(model, data, batch_size=7)
    _assert_unchanged(model, snap)
    ref = _eval_copy(model)
    with torch.no_grad():
        expected = ref(data.floats()).argmax(1)
    assert torch.equal(labels, expected)
    assert err == int((expected != data.labels).sum()) / len(data)
    gen = _mlp(3, 5, bn=True, seed=7)
    gen.latent_dim = 3
    snap = _snapshot(gen)
    estimate_modulus(gen, radii=[0.0, 0.5], n_samples=4, restarts=1, steps=1, device="cpu")
    local_increments(gen, _x(3, 3, 8), 0.3, restarts=1, steps=1)
    _assert_unchanged(gen, snap)


# --------------------------------------------------------------------------------------------------
# Items 5 and 7: non-finite inputs and points
# --------------------------------------------------------------------------------------------------

def _with_bad_row(x: torch.Tensor, row: int, value: float) -> torch.Tensor:
    x = x.clone()
    x[row, 0] = value
    return x


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("attack", ["deepfool", "latent_deepfool", "in_distribution_attack"])
def test_a_non_finite_input_is_refused_with_its_name(attack, value):
    clf, gen = nn.Linear(5, 3).to(DT), nn.Linear(3, 5).to(DT)
    if attack == "deepfool":
        with pytest.raises(ValueError, match=r"x must be finite; 1 of its 6 samples .*rows 2"):
            deepfool(clf, _with_bad_row(_x(6, 5, 0), 2, value))
    else:
        fn = latent_deepfool if attack == "latent_deepfool" else in_distribution_attack
        with pytest.raises(ValueError, match=r"z must be finite; 1 of its 6 samples .*rows 2"):
            fn(clf, gen, _with_bad_row(_x(6, 3, 0), 2, value))


def test_non_finite_logits_end_only_their_own_sample():
    """A model that overflows on some samples: those report no success, the others are unaffected."""
    lin = nn.Linear(5, 3).to(DT)

    def model(x: torch.Tensor) -> torch.Tensor:
        return lin(x) * torch.where(x[:, :1] > 1.0, torch.tensor(float("nan"), dtype=DT), torch.ones((), dtype=DT))

    x = _x(12, 5, 9)
    bad = x[:, 0] > 1.0
    assert 0 < int(bad.sum()) < 12
    res = deepfool(model, x)
    good = deepfool(model, x[~bad])
    assert not bool(res.success[bad].any())
    assert torch.equal(res.x_adv[~bad], good.x_adv) and torch.equal(res.success[~bad], good.success)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_overshoot_never_reports_a_non_finite_success(dtype):
    lin = nn.Linear(5, 3).to(dtype)
    gen = nn.Linear(3, 5).to(dtype)
    res = deepfool(lin, _x(16, 5, 10, dtype), overshoot=1e40)
    ind = in_distribution_attack(lin, gen, _x(16, 3, 11, dtype), overshoot=1e40, boundary_steps=0)
    # the boundary search does not use the overshoot: it still finds points on the boundary
    sqp = in_distribution_attack(lin, gen, _x(16, 3, 11, dtype), overshoot=1e40)
    for point, ok, labels, fn in ((res.x_adv, res.success, res.labels, lin),
                                  (ind.z_adv, ind.success, ind.labels, lambda z: lin(gen(z))),
                                  (sqp.z_adv, sqp.success, sqp.labels, lambda z: lin(gen(z)))):
        assert bool(torch.isfinite(point[ok]).all())
        with torch.no_grad():
            assert bool((fn(point[ok]).argmax(1) != labels[ok]).all())
    assert bool(sqp.success.all()) and set(sqp.method) <= {"boundary_from_z", "boundary_from_latent"}
    if dtype == torch.float32:  # 1e40 overflows float32: nothing can be reported
        assert not bool(res.success.any()) and not bool(ind.success.any())
    else:  # float64 holds the far-away points, which are valid adversarial examples
        assert bool(res.success.all())


# --------------------------------------------------------------------------------------------------
# Items 8 and beyond: bad or unusual arguments, each with a named error or a correct result
# --------------------------------------------------------------------------------------------------

LIN = nn.Linear(5, 3).to(DT)
GEN = nn.Linear(3, 5).to(DT)
X = _x(6, 5, 12)
Z = _x(6, 3, 13)


def _transposed(x):
    return LIN(x).T


def _no_grad_model(x):
    with torch.no_grad():
        return LIN(x)


ATTACK_ERRORS = {
    "x numpy": (lambda: deepfool(LIN, X.numpy()), "x must be a torch.Tensor"),
    "x 1-D": (lambda: deepfool(LIN, X[0]), "x must have shape"),
    "x empty batch": (lambda: deepfool(LIN, X[:0]), "x must have shape"),
    "x integer": (lambda: deepfool(LIN, X.long()), "x must be a floating-point"),
    "x float32 for a float64 model": (lambda: deepfool(LIN, X.float()), "x has dtype torch.float32 but model"),
    "model returns tuple": (lambda: deepfool(lambda x: (LIN(x), x), X),
                            "model must return a torch.Tensor; got tuple"),
    "model returns dict": (lambda: deepfool(lambda x: {"logits": LIN(x)}, X),
                           "model must return a torch.Tensor; got dict"),
    "logits 1-D": (lambda: deepfool(lambda x: LIN(x)[:, 0], X), "model must return logits of shape"),
    "one logit": (lambda: deepfool(lambda x: LIN(x)[:, :1], X), "at least K = 2 logits"),
    "transposed logits n != K": (lambda: deepfool(_transposed, X), "model .*transposed"),
    "transposed logits n == K": (lambda: deepfool(_transposed, X[:3]), "model .*transposed"),
    "model detaches": (lambda: deepfool(lambda x: LIN(x).detach(), X),
                       "model has no autograd graph back to its input x"),
    "model under no_grad": (lambda: deepfool(_no_grad_model, X), "model has no autograd graph"),
    "input unused": (lambda: deepfool(lambda x: LIN(torch.zeros_like(x)), X), "model has no autograd graph"),
    "integer logits": (lambda: deepfool(lambda x: (LIN(x) * 100).long(), X), "model must return floating-point"),
    "candidates 1": (lambda: deepfool(LIN, X, candidates=1), "candidates"),
    "candidates K + 1": (lambda: deepfool(LIN, X, candidates=4), "candidates"),
    "max_steps 0": (lambda: deepfool(LIN, X, max_steps=0), "max_steps"),
    "max_steps True": (lambda: deepfool(LIN, X, max_steps=True), "max_steps"),
    "max_steps 2.5": (lambda: deepfool(LIN, X, max_steps=2.5), "max_steps"),
    "overshoot negative": (lambda: deepfool(LIN, X, overshoot=-0.1), "overshoot"),
    "overshoot nan": (lambda: deepfool(LIN, X, overshoot=float("nan")), "overshoot"),
    "overshoot string": (lambda: deepfool(LIN, X, overshoot="0.02"), "overshoot"),
    "box reversed": (lambda: deepfool(LIN, X, box=(1, 0)), "box"),
    "box one number": (lambda: deepfool(LIN, X, box=(0,)), "box"),
    "box with nan": (lambda: deepfool(LIN, X, box=(float("nan"), 1)), "box"),
    "x outside box": (lambda: deepfool(LIN, X, box=(0, 1)), "x must lie inside box"),
    "refine string": (lambda: deepfool(LIN, X, refine="yes"), "refine"),
    "batched_grads int": (lambda: DeepFoolOptions(batched_grads=1), "batched_grads"),
    "z 3-D": (lambda: latent_deepfool(LIN, GEN, Z[:, :, None]), "z must have shape"),
    "z float32 for a float64 generator": (lambda: latent_deepfool(LIN, GEN, Z.float()), "z has dtype"),
    "generator returns tuple": (lambda: latent_deepfool(LIN, lambda z: (GEN(z),), Z),
                                "generator must return a torch.Tensor"),
    "generator output of another dtype": (lambda: latent_deepfool(LIN, lambda z: GEN(z).float(), Z),
                                          "generator\\(z\\) has dtype torch.float32 but classifier"),
    "generator detaches": (lambda: in_distribution_attack(LIN, lambda z: GEN(z).detach(), Z),
                           "no autograd graph back to its input z"),
    "model None": (lambda: deepfool(None, X), "model must be callable"),
    "classifier not callable": (lambda: latent_deepfool(3, GEN, Z), "classifier must be callable"),
    "generator None": (lambda: in_distribution_attack(LIN, None, Z), "generator must be callable"),
    "generator changes the batch size": (lambda: latent_deepfool(LIN, lambda z: GEN(z[:1]), Z),
                                         "classifier\\(generator\\(z\\)\\) must return one row per sample"),
    "gram of a 1-D z": (lambda: generator_gram(GEN, Z[0]), "z must be a floating-point tensor of shape \\(n, d\\)"),
    "ridge negative": (lambda: in_distribution_attack(LIN, GEN, Z, ridge=-1.0), "ridge"),
    "best_of of nothing": (lambda: best_of(), "at least one"),
    "projection restarts 0": (lambda: ProjectionClassifier(LIN, GEN, 3, restarts=0), "restarts"),
    "projection lr nan": (lambda: ProjectionClassifier(LIN, GEN, 3, lr=float("nan")), "lr"),
    "projection seed string": (lambda: ProjectionClassifier(LIN, GEN, 3, seed="a"), "seed"),
    "projection classifier not callable": (lambda: ProjectionClassifier(3, GEN, 3), "classifier must be a callable"),
    "projection integer x": (lambda: ProjectionClassifier(LIN, GEN, 3).project(X.long()), "floating-point"),
    "projection float32 x": (lambda: ProjectionClassifier(LIN, GEN, 3).project(X.float()), "x has dtype"),
    "predict integer images": (lambda: predict(LIN, X.long()), "images must be a floating-point"),
    "predict batch_size 0": (lambda: predict(LIN, X, batch_size=0), "batch_size"),
}


@pytest.mark.parametrize("case", list(ATTACK_ERRORS), ids=list(ATTACK_ERRORS))
def test_bad_argument_gets_a_named_error(case):
    call, pattern = ATTACK_ERRORS[case]
    with pytest.raises(ValueError, match=pattern):
        call()


def _affine_reference(x: torch.Tensor) -> torch.Tensor:
    """Exact r_unc of the affine classifier LIN, by brute force over the classes."""
    with torch.no_grad():
        logits = LIN(x)
    y = logits.argmax(1)
    w = LIN.weight.detach()
    return torch.stack([min((logits[i, y[i]] - logits[i, j]) / (w[y[i]] - w[j]).norm()
                            for j in range(3) if j != int(y[i])) for i in range(x.shape[0])])


def _exact(res, x: torch.Tensor, overshoot: float = 0.02) -> bool:
    ref = (_affine_reference(x) + 1e-4) * (1 + overshoot)
    return bool(res.success.all()) and torch.allclose(res.norms, ref, rtol=1e-9, atol=0)


def _under_no_grad(check):
    with torch.no_grad():
        return check()


def _constant_logits(x):
    return LIN(x) * 0.0


UNUSUAL_BUT_VALID = {
    "batch of one": lambda: _exact(deepfool(LIN, X[:1]), X[:1]),
    "numpy integers for max_steps and candidates": lambda: _exact(
        deepfool(LIN, X, max_steps=np.int64(5), candidates=np.int32(3)), X),
    "x requiring grad": lambda: (lambda x: _exact(deepfool(LIN, x), X) and x.grad is None)(X.clone().requires_grad_()),
    "a plain function as model": lambda: _exact(deepfool(lambda t: LIN(t), X), X),
    "called under torch.no_grad()": lambda: _under_no_grad(lambda: _exact(deepfool(LIN, X), X)),
    "latent attack under torch.no_grad()": lambda: _under_no_grad(
        lambda: bool(latent_deepfool(LIN, GEN, Z, max_steps=20).success.all())),
    "constant logits (no adversarial point exists)": lambda: not bool(deepfool(_constant_logits, X).success.any()),
    "overshoot 0": lambda: _exact(deepfool(LIN, X, overshoot=0.0), X, overshoot=0.0),
    "box containing x": lambda: _exact(deepfool(LIN, X, box=(-100, 100)), X),
    "projection numpy integer restarts and float32 lr": lambda: ProjectionClassifier(
        LIN, GEN, 3, restarts=np.int64(2), steps=np.int64(3), lr=np.float32(0.05)).restarts == 2,
    "predict with a parameterless model": lambda: torch.equal(predict(nn.Flatten(), X), X.argmax(1)),
    "predict on an empty batch": lambda: predict(LIN, X[:0]).shape == (0,),
}


@pytest.mark.parametrize("case", list(UNUSUAL_BUT_VALID), ids=list(UNUSUAL_BUT_VALID))
def test_unusual_but_valid_input_gives_the_correct_result(case):
    assert UNUSUAL_BUT_VALID[case]()


def test_projection_handles_a_non_finite_sample_on_its_own():
    """The same batch with row 2 finite or NaN: the other rows' projections are bitwise the same."""
    x = _x(5, 5, 14)
    proj = ProjectionClassifier(LIN, GEN, 3, restarts=2, steps=20)
    z_nan, res_nan = proj.project(_with_bad_row(x, 2, float("nan")))
    z_ref, res_ref = proj.project(x)
    keep = torch.tensor([0, 1, 3, 4])
    assert bool(torch.isnan(res_nan[2])) and math.isfinite(float(res_ref.max()))
    assert torch.equal(z_nan[keep], z_ref[keep]) and torch.equal(res_nan[keep], res_ref[keep])
