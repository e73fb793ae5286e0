"""A minimum-norm L2 attack for ``r_unc``: DeepFool's point, then a walk along the decision boundary.

``r_unc(x0) = min ||x - x0||_2`` subject to ``f(x) != y`` is the distance from ``x0`` to the adversarial
region ``{x : h(x) > 0}``, ``h(x) = max_{j != y} l_j(x) - l_y(x)`` the classifier's margin.  DeepFool
(Moosavi-Dezfooli et al., CVPR 2016; the paper's ref. [38]) linearises ``h`` once per step and stops at the
first label change, so on curved boundaries (adversarially trained networks) its point can lie well above
the minimum.  :func:`unconstrained_attack` starts from DeepFool's refined point and runs sequential quadratic
programming on the boundary (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Ch. 18), one forward and
one backward pass per step, like DDN (Rony et al., CVPR 2019) and FMN (Pintor et al., NeurIPS 2021):

* at the iterate ``x`` with ``e = x - x0``, the most likely other class ``j`` and ``a = grad h_j`` solve the
  quadratic program ``min_delta e . delta + (b / 2) ||delta||^2`` s.t. ``h_j + a . delta >= t``, in closed
  form ``delta = (mu a - e) / b`` with ``mu = max(0, (b (t - h_j) + a . e) / ||a||^2)``;
* ``b`` is a scalar model of the Hessian of the Lagrangian ``||e||^2 / 2 - mu h_j``, i.e. of the boundary's
  curvature seen from ``x0``: ``b = 1`` makes the step the projection of ``x0`` onto the linearised boundary
  (the fixed point iteration of DeepFool at the boundary, which oscillates when the boundary curves more
  than the distance to it); ``b`` is updated by the Barzilai-Borwein secant ``b = s . yv / s . s`` with
  ``s`` the step and ``yv`` the change of the Lagrangian's gradient (Barzilai & Borwein, IMA J. Numer.
  Anal. 1988), safeguarded to ``[B_MIN, B_MAX]``, and kept when the class ``j`` changes;
* the target ``t = tau ||e|| ||a||`` aims a fraction ``tau`` of the distance beyond the linearised boundary;
  ``tau`` shrinks after a step that landed on the adversarial side and grows after one that fell short, as in
  :mod:`advbound.attacks.boundary`;
* every iterate whose label differs from ``y`` is a valid adversarial point; per sample the closest one is
  kept, then shrunk back to the boundary by :func:`advbound.attacks.refine._refine`, and re-verified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .base import (
    _as_int,
    _box,
    _check_differentiable,
    _check_input,
    _check_logits,
    _flat_norm,
    _identity_metric,
    evaluates,
)
from .deepfool import AttackResult, _l2_cost, deepfool
from .refine import _margin, _refine

#: default number of boundary steps of :func:`unconstrained_attack`
STEPS = 60
#: safeguards of the Barzilai-Borwein curvature ``b`` (1 is the projection step)
B_MIN, B_MAX = 0.25, 64.0
#: target fraction of the distance beyond the linearised boundary: start, factor, bounds
TAU, TAU_UP, TAU_MIN, TAU_MAX = 1e-3, 3.0, 1e-6, 0.03


def _margin_and_gradient(fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                         shape: torch.Size) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """At the flat points ``x``: the margin ``h`` (:func:`~advbound.attacks.refine._margin`), its gradient
    (flat), the most likely other class, and whether the logits are finite (one forward, one backward)."""
    xa = x.view(-1, *shape).requires_grad_(True)
    logits = fn(xa)
    margin = _margin(logits, y)
    (a,) = torch.autograd.grad(margin.sum(), xa)
    with torch.no_grad():
        j = logits.detach().scatter(1, y[:, None], -math.inf).argmax(1)
        fin = torch.isfinite(logits.detach()).all(1)
    return margin.detach(), a.flatten(1), j, fin


@torch.enable_grad()
def _boundary_walk(fn: Callable[[Tensor], Tensor], x0: Tensor, start: Tensor, y: Tensor, steps: int,
                   box: tuple[float, float] | None) -> tuple[Tensor, Tensor]:
    """Run the boundary SQP of the module docstring from ``start``; returns the closest valid iterate per
    sample (``start`` where none was valid) and its distance (``inf`` where none was valid).

    Each step evaluates one trial point (one forward and one backward pass).  A trial point is accepted when
    it does not increase the l1 merit ``||e||^2 / 2 + nu max(0, -h)`` (``nu`` twice the largest multiplier so
    far; Nocedal & Wright Ch. 15), otherwise the walk stays where it was and the trust radius shrinks to a
    quarter of the rejected step; an accepted step that used the whole radius doubles it.
    """
    shape = x0.shape[1:]
    x0f = x0.detach().flatten(1)
    x = start.detach().flatten(1).clone()
    dtype = x0.dtype
    tiny = torch.finfo(dtype).tiny
    h, a, j, fin = _margin_and_gradient(fn, x, y, shape)
    e = x - x0f
    dist = _flat_norm(e)
    fin = fin & torch.isfinite(dist) & torch.isfinite(a).all(1)
    best_d = torch.where((h > 0) & fin, dist, torch.full_like(dist, math.inf))
    best = x.clone()
    b = torch.ones_like(dist)
    tau = torch.full_like(dist, TAU)
    radius = torch.where(fin, dist, torch.zeros_like(dist))
    nu = torch.zeros_like(dist)
    for _ in range(steps):
        with torch.no_grad():
            aa = (a * a).sum(1)
            target = tau * dist * aa.sqrt()
            mu = ((b * (target - h) + (a * e).sum(1)) / aa.clamp_min(tiny)).clamp_min(0)
            step = (mu[:, None] * a - e) / b[:, None]
            length = _flat_norm(step)
            step = step * (radius / length.clamp_min(tiny)).clamp_max(1)[:, None]
            step = torch.where((fin & (aa > 0))[:, None], step, torch.zeros_like(step))
            x_t = x + step
            if box is not None:
                x_t = x_t.clamp(*box)
            nu = torch.maximum(nu, 2 * mu)
            merit = 0.5 * dist ** 2 + nu * (-h).clamp_min(0)
        h_t, a_t, j_t, fin_t = _margin_and_gradient(fn, x_t, y, shape)
        with torch.no_grad():
            e_t = x_t - x0f
            dist_t = _flat_norm(e_t)
            fin_t = fin_t & torch.isfinite(dist_t) & torch.isfinite(a_t).all(1)
            valid = (h_t > 0) & fin_t
            better = valid & (dist_t < best_d)
            best = torch.where(better[:, None], x_t, best)
            best_d = torch.where(better, dist_t, best_d)
            accept = fin_t & (0.5 * dist_t ** 2 + nu * (-h_t).clamp_min(0) <= merit)
            taken = x_t - x
            taken_len = _flat_norm(taken)
            # Barzilai-Borwein curvature of the Lagrangian along the accepted step (same class only)
            ss = taken_len ** 2
            sy = ss - mu * (taken * (a_t - a)).sum(1)
            bb = accept & (j_t == j) & (ss > 0)
            b = torch.where(bb, (sy / ss.clamp_min(tiny)).clamp(B_MIN, B_MAX), b)
            tau = torch.where(accept, torch.where(valid, (tau / TAU_UP).clamp_min(TAU_MIN),
                                                  (tau * TAU_UP).clamp_max(TAU_MAX)), tau)
            full = taken_len >= 0.99 * radius
            radius = torch.where(accept, torch.where(full, 2 * radius, radius), 0.25 * taken_len)
            keep = accept[:, None]
            x, e, a = torch.where(keep, x_t, x), torch.where(keep, e_t, e), torch.where(keep, a_t, a)
            h, j, dist = torch.where(accept, h_t, h), torch.where(accept, j_t, j), torch.where(accept, dist_t, dist)
            fin = torch.where(accept, fin_t, fin)
    return best.view_as(x0), best_d


@evaluates("model")
def unconstrained_attack(model: Callable[[Tensor], Tensor], x: Tensor, *, steps: int = STEPS,
                         candidates: int | None = None, start: AttackResult | None = None,
                         box: Sequence[float] | None = None, batched_grads: bool = False) -> AttackResult:
    """Minimum-norm L2 attack: an upper estimate of ``r_unc(x)`` (Section 3) closer to the minimum than
    :func:`~advbound.attacks.deepfool` on curved boundaries.

    DeepFool with refinement (``candidates``, overshoot 0.02, 50 steps, ``refine=True``), or the given
    ``start``, then ``steps`` steps of the boundary SQP of :mod:`advbound.attacks.unconstrained` (one forward
    and one backward pass each), keeping per sample the closest verified adversarial point.

    Parameters
    ----------
    model, x, box, batched_grads : as in :func:`~advbound.attacks.deepfool`.
    steps : >= 0 boundary steps after the DeepFool start (0 returns the refined DeepFool point).
    candidates : candidate classes of the DeepFool start (None: all K).
    start : a :func:`~advbound.attacks.deepfool` result on the same ``x`` to start from (its ``x_adv``),
        instead of running DeepFool; its points are kept where the walk finds nothing closer.

    ``steps`` of the result counts DeepFool's steps plus the boundary steps.
    """
    steps = _as_int(steps, "steps", 0)
    _check_input("x", x, model, "model")
    clip = _box(box, x, "x")
    x0 = x.detach()
    if start is not None and (not isinstance(start, AttackResult) or start.x_adv.shape != x0.shape
                              or start.x_adv.dtype != x0.dtype or start.x_adv.device != x0.device):
        raise ValueError(f"start must be the AttackResult of an attack on x (shape {tuple(x0.shape)}, dtype "
                         f"{x0.dtype}, device {x0.device}); got {type(start).__name__}")
    with torch.no_grad():
        logits0 = model(x0)
    n_classes = _check_logits(logits0, x0.shape[0], "model")
    _check_differentiable(model, x0, n_classes, "model", "x")
    y = logits0.argmax(1)
    if start is None:
        start = deepfool(model, x0, candidates=candidates, refine=True, box=box, batched_grads=batched_grads)
    elif not torch.equal(start.labels, y) or not torch.allclose(start.x_adv - start.perturbation, x0):
        raise ValueError("start must come from an attack on x: its clean points (x_adv - perturbation) or labels "
                         "differ from x and the model's labels on x")
    x_adv = start.x_adv.detach()
    walk_steps = 0
    if steps > 0:
        walked, walked_d = _boundary_walk(model, x0, x_adv, y, steps, clip)
        with torch.no_grad():
            logits_w = model(walked)
        m_w = _margin(logits_w, y)
        ok = torch.isfinite(walked_d) & (m_w > 0) & torch.isfinite(logits_w).all(1)
        refined = _refine(model, x0, walked, y, ok, _margin(logits0, y), m_w, metric=_identity_metric,
                          cost=_l2_cost, box=clip)
        walked = torch.where(ok.view(-1, *([1] * (x0.dim() - 1))), refined, walked)
        walk_steps = steps
        # keep the start's point where it is valid and closer (or the walk found nothing)
        with torch.no_grad():
            start_ok = (model(x_adv).argmax(1) != y) & torch.isfinite(x_adv.flatten(1)).all(1)
            walk_ok = (model(walked).argmax(1) != y) & torch.isfinite(walked.flatten(1)).all(1)
        closer = walk_ok & (~start_ok | (_flat_norm(walked - x0) < _flat_norm(x_adv - x0)))
        x_adv = torch.where(closer.view(-1, *([1] * (x0.dim() - 1))), walked, x_adv)
    with torch.no_grad():
        logits_adv = model(x_adv)
    adv_labels = logits_adv.argmax(1)
    success = (adv_labels != y) & torch.isfinite(x_adv.flatten(1)).all(1) & torch.isfinite(logits_adv).all(1)
    perturbation = x_adv - x0
    return AttackResult(x_adv=x_adv, perturbation=perturbation, norms=_flat_norm(perturbation), success=success,
                        steps=start.steps + walk_steps, labels=y, adv_labels=adv_labels)
