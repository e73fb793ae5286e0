"""A minimum-norm L2 attack for ``r_unc``: DeepFool's points, then a walk along the decision boundary.

``r_unc(x0) = min ||x - x0||_2`` subject to ``f(x) != y`` is the distance from ``x0`` to the adversarial
region ``{x : h(x) > 0}``, ``h(x) = max_{j != y} l_j(x) - l_y(x)`` the classifier's margin.  DeepFool
(Moosavi-Dezfooli et al., CVPR 2016; the paper's ref. [38]) linearises ``h`` once per step and stops at the
first label change, so on curved boundaries (adversarially trained networks) its point can lie well above
the minimum.  :func:`unconstrained_attack` starts from DeepFool's points and runs sequential quadratic
programming on the boundary (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Ch. 18), one forward and
one backward pass per step, like DDN (Rony et al., CVPR 2019) and FMN (Pintor et al., NeurIPS 2021).

The boundary walk (:func:`_boundary_walk`), per sample:

* at the iterate ``x`` with ``e = x - x0`` and ``a = grad h`` (``h`` the margin, or ``l_j - l_y`` for a walk
  aimed at class ``j``) the quadratic program ``min_delta e . delta + (b / 2) ||delta||^2`` s.t.
  ``h + a . delta >= t`` has the solution ``delta = (mu a - e) / b``,
  ``mu = max(0, (b (t - h) + a . e) / ||a||^2)``: the normal part of the step reaches the linearised boundary
  (plus ``t``), the tangential part is ``-e_tan / b``;
* ``b`` models the Hessian of the Lagrangian ``||e||^2 / 2 - mu h`` (``1 + (distance) x (curvature of the
  boundary)`` seen from ``x0``): ``b = 1`` makes the step the projection of ``x0`` onto the linearised
  boundary, DeepFool's fixed point iteration at the boundary, which oscillates where the boundary curves
  more strongly than the distance to it.  ``b`` is the Barzilai-Borwein secant ``s . yv / s . s`` of the
  accepted step ``s`` and the change ``yv`` of the Lagrangian's gradient (Barzilai & Borwein, IMA J. Numer.
  Anal. 8, 1988), safeguarded to ``[B_MIN, B_MAX]`` and kept when the most likely other class changes;
* a trust region (the step is scaled to at most a radius that shrinks to a quarter of a rejected step and
  doubles after a full accepted one) and the l1 merit ``||e||^2 / 2 + nu max(0, -h)`` (``nu`` twice the
  largest multiplier; Nocedal & Wright Ch. 15, 18) decide whether a trial point is accepted;
* the target ``t = tau ||e|| ||a||`` aims a fraction ``tau`` of the distance beyond the linearised boundary;
  ``tau`` shrinks after an accepted step that landed on the adversarial side and grows after one that fell
  short, as in :mod:`advbound.attacks.boundary`;
* every evaluated point whose label differs from ``y`` is a valid adversarial point; the closest one is
  kept.  A sample whose step has become shorter than ``STOP`` times its distance leaves the batch.

The minimum of the distance on the boundary is not unique: different classes, and different points of one
class's boundary, are local minima.  The walk finds one, so :func:`unconstrained_attack` runs it from
several starts (DeepFool's point and DeepFool aimed at each of the most likely classes), continues the best
few and finishes the best one (successive halving, Jamieson & Talwalkar, AISTATS 2016: a short walk ranks the
starts, and the ranking is noisy, so more than one goes on).

Working precision (``working_dtype``).  Choosing among the starts needs distances to a few digits, not to
sixteen (the idea of mixed-precision iterative refinement: do the bulk of the work in low precision and
correct in high precision; Carson & Higham, SIAM J. Sci. Comput. 40, 2018): with
``working_dtype=torch.float32`` on a float64 problem, the targeted starts, the exploration and all but the
last ``polish`` boundary steps run on a float32 copy of the model (about four times cheaper per step on a
CPU, more on a GPU); the last ``polish`` steps, the refinement and the verification of every
returned point run in the dtype of ``x`` on the model itself.  A point found in working precision is only a
candidate: it counts if the model, in the dtype of ``x``, gives it another label (where none does, the
closest is lengthened slightly until it does, :func:`_lengthened`, and refined back to the boundary).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .base import (
    DeepFoolOptions,
    _as_int,
    _box,
    _check_differentiable,
    _check_input,
    _check_logits,
    _flat_norm,
    _identity_metric,
    evaluates,
)
from .deepfool import AttackResult, _deepfool_loop, _finite_rows, _l2_cost, deepfool
from .refine import _margin, _refine

#: defaults of :func:`unconstrained_attack`: boundary steps of the selected starts, of every start, the number
#: of targeted starts, and of the selected starts' steps those that the best one walks alone, in the dtype of
#: ``x`` (``benchmarks/bench_runc.py``: the point of its quality-against-steps curve chosen for issue 21)
STEPS, EXPLORE, TARGETS, POLISH = 40, 15, 4, 10
#: the number of explored starts that walk on in phase 3 (the best of them gets the last ``POLISH`` steps)
FINALISTS = 3
#: the DeepFool settings of the targeted starts (the pipeline's)
OVERSHOOT, DEEPFOOL_STEPS = 0.02, 50
#: safeguards of the Barzilai-Borwein curvature ``b`` (1 is the projection step)
B_MIN, B_MAX = 0.25, 64.0
#: target fraction of the distance beyond the linearised boundary: start, factor, bounds
TAU, TAU_UP, TAU_MIN, TAU_MAX = 1e-3, 3.0, 1e-6, 0.03
#: a sample stops when its step is shorter than ``STOP`` times its distance (it has converged)
STOP = 1e-5


def _margin_and_gradient(fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, shape: torch.Size,
                         target: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """At the flat points ``x``: the margin ``h`` (:func:`~advbound.attacks.refine._margin`, or
    ``l_target - l_y``), its gradient (flat), the most likely other class, and whether the logits are finite
    (one forward, one backward)."""
    xa = x.view(-1, *shape).requires_grad_(True)
    logits = fn(xa)
    margin = _margin(logits, y)
    if target is not None:
        aimed = logits.gather(1, target[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]
        margin = torch.where(target == y, margin, aimed)
    (a,) = torch.autograd.grad(margin.sum(), xa)
    with torch.no_grad():
        j = logits.detach().scatter(1, y[:, None], -math.inf).argmax(1)
        fin = torch.isfinite(logits.detach()).all(1)
    return margin.detach(), a.flatten(1), j, fin


@torch.enable_grad()
def _boundary_walk(fn: Callable[[Tensor], Tensor], x0: Tensor, start: Tensor, y: Tensor, steps: int,
                   box: tuple[float, float] | None, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
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
    h, a, j, fin = _margin_and_gradient(fn, x, y, shape, target)
    e = x - x0f
    dist = _flat_norm(e)
    fin = fin & torch.isfinite(dist) & torch.isfinite(a).all(1)
    best_d = torch.where((h > 0) & fin, dist, torch.full_like(dist, math.inf))
    best = x.clone()
    b = torch.ones_like(dist)
    tau = torch.full_like(dist, TAU)
    radius = torch.where(fin, dist, torch.zeros_like(dist))
    nu = torch.zeros_like(dist)
    active = fin.clone()
    for _ in range(steps):
        with torch.no_grad():
            aa = (a * a).sum(1)
            aim = tau * dist * aa.sqrt()
            mu = ((b * (aim - h) + (a * e).sum(1)) / aa.clamp_min(tiny)).clamp_min(0)
            step = (mu[:, None] * a - e) / b[:, None]
            length = _flat_norm(step)
            step = step * (radius / length.clamp_min(tiny)).clamp_max(1)[:, None]
            step = torch.where((fin & (aa > 0))[:, None], step, torch.zeros_like(step))
            # a sample whose step has become negligible has converged: it leaves the batch
            active = active & (_flat_norm(step) > STOP * dist)
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                break
            x_t = x + step
            if box is not None:
                x_t = x_t.clamp(*box)
            nu = torch.maximum(nu, 2 * mu)
            merit = 0.5 * dist ** 2 + nu * (-h).clamp_min(0)
        h_s, a_s, j_s, fin_s = _margin_and_gradient(fn, x_t[idx], y[idx], shape,
                                                    None if target is None else target[idx])
        with torch.no_grad():
            h_t, a_t, j_t = h.clone(), a.clone(), j.clone()
            fin_t = torch.zeros_like(fin)
            h_t[idx], a_t[idx], j_t[idx], fin_t[idx] = h_s, a_s, j_s, fin_s
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


def _closest_valid(fn: Callable[[Tensor], Tensor], x0: Tensor, y: Tensor, points: list[Tensor]) -> Tensor:
    """Per sample, the closest of ``points`` whose label (re-evaluated here) differs from ``y`` with finite
    logits; the first of ``points`` where none is valid.  Ties keep the earlier point."""
    view = (-1,) + (1,) * (x0.dim() - 1)
    out = points[0]
    with torch.no_grad():
        logits = fn(out)
        best_d = torch.where((logits.argmax(1) != y) & torch.isfinite(logits).all(1) & _finite_rows(out),
                             _flat_norm(out - x0), torch.full((x0.shape[0],), math.inf, dtype=x0.dtype,
                                                              device=x0.device))
        for p in points[1:]:
            logits = fn(p)
            d = _flat_norm(p - x0)
            closer = (logits.argmax(1) != y) & torch.isfinite(logits).all(1) & _finite_rows(p) & (d < best_d)
            out = torch.where(closer.view(view), p, out)
            best_d = torch.where(closer, d, best_d)
    return out


#: factors by which a point found in working precision is lengthened (from ``x0``) until the model, in the
#: dtype of ``x0``, confirms it; the refinement then shrinks it back to the boundary
LENGTHEN = (1 + 2.0 ** -20, 1 + 2.0 ** -14, 1 + 2.0 ** -8, 1.1)


def _lengthened(fn: Callable[[Tensor], Tensor], x0: Tensor, y: Tensor, points: Tensor,
                box: tuple[float, float] | None) -> Tensor:
    """``points`` where ``fn`` gives them a label other than ``y``; elsewhere the first of the lengthenings
    ``x0 + f (point - x0)``, ``f`` in :data:`LENGTHEN` (clipped to ``box``), that it does (else the point).

    A point at the boundary in working precision (float32 logits carry ~1e-7 relative rounding) can sit on
    the clean side in the dtype of ``x0``; a slightly longer one is adversarial there."""
    out = points.clone()
    with torch.no_grad():
        logits = fn(out)
        bad = torch.nonzero(~((logits.argmax(1) != y) & torch.isfinite(logits).all(1))).flatten()
        for factor in LENGTHEN:
            if bad.numel() == 0:
                break
            trial = x0[bad] + factor * (out[bad] - x0[bad])
            if box is not None:
                trial = trial.clamp(*box)
            lg = fn(trial)
            now = (lg.argmax(1) != y[bad]) & torch.isfinite(lg).all(1) & _finite_rows(trial)
            out[bad[now]] = trial[now]
            bad = bad[~now]
    return out


def _working_copy(model: Callable[[Tensor], Tensor], x0: Tensor, dtype: torch.dtype | None
                  ) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The model and the inputs of the search in working precision: ``model`` and ``x0`` themselves where
    ``dtype`` is None or the dtype of ``x0``, else a copy of the module and the inputs in ``dtype``."""
    if dtype is None or dtype == x0.dtype:
        return model, x0
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"working_dtype must be None or a floating torch.dtype; got {dtype!r}")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"working_dtype={dtype} needs model to be a torch.nn.Module (it is copied in that dtype); "
                         f"got {type(model).__name__}")
    return copy.deepcopy(model).to(dtype), x0.to(dtype)


@torch.enable_grad()
def _targeted_starts(fn: Callable[[Tensor], Tensor], x0: Tensor, y: Tensor, classes: Tensor,
                     box: tuple[float, float] | None) -> tuple[Tensor, Tensor]:
    """DeepFool towards each class of ``classes`` (n, k): the DeepFool loop with the candidates ``(y, j)``,
    all ``k n`` runs in one batch (rank-major).  Returns the points (k n, ...) and the steps (n,) summed over
    the classes."""
    n, k = classes.shape
    cand = torch.stack([y.repeat(k), classes.T.reshape(-1)], 1)
    points, steps = _deepfool_loop(fn, x0.repeat(k, *([1] * (x0.dim() - 1))), cand, overshoot=OVERSHOOT,
                                   max_steps=DEEPFOOL_STEPS, box=box, metric=_identity_metric, batched_grads=False)
    return points, steps.view(k, n).sum(0)


@evaluates("model")
def unconstrained_attack(model: Callable[[Tensor], Tensor], x: Tensor, *, steps: int = STEPS,
                         explore: int = EXPLORE, targets: int = TARGETS, candidates: int | None = None,
                         start: AttackResult | None = None, box: Sequence[float] | None = None,
                         batched_grads: bool = False, working_dtype: torch.dtype | None = None,
                         polish: int = POLISH, finalists: int = FINALISTS) -> AttackResult:
    """Minimum-norm L2 attack: an upper estimate of ``r_unc(x)`` (Section 3) that reaches the minimum more
    closely than :func:`~advbound.attacks.deepfool` on curved boundaries (adversarially trained networks).

    1. Starts: DeepFool with refinement (``candidates``, overshoot 0.02, 50 steps, ``refine=True``; or the
       given ``start``), and DeepFool *towards* each of the ``targets`` most likely other classes of the
       clean logits (candidates ``(y, j)``: each reaches the boundary of one class; different classes are the
       usual different local minima of the distance on the boundary).
    2. Exploration: ``explore`` steps of the boundary SQP (module docstring) from every start, the targeted
       ones on the margin ``l_j - l_y`` of their class, the first on ``max_{j != y} l_j - l_y``.
    3. Per sample, the ``finalists`` starts whose walks found the closest valid points go on for
       ``steps - polish`` more steps, and the best of them for the last ``polish`` (the selection runs in
       working precision, the last steps in the dtype of ``x``).
    4. The closest valid point found is shrunk back to the boundary (:func:`~advbound.attacks.refine._refine`)
       and, per sample, the closest re-verified point of all phases (the start's included) is returned, so
       the result is never farther than ``start`` / DeepFool with refinement.

    One boundary step costs one forward and one backward pass, so the search costs about
    ``(targets + 1) * explore + finalists * (steps - polish) + polish`` of them per sample plus the DeepFool
    starts.  With a ``working_dtype`` (module docstring) all but ``polish`` of them run on a copy of the model
    in that dtype.

    Parameters
    ----------
    model, x, box, batched_grads : as in :func:`~advbound.attacks.deepfool`.
    steps : >= 0 boundary steps of the selected starts (phase 3).
    explore : >= 0 boundary steps of every start (phase 2); with ``explore = 0`` the first start goes on.
    finalists : >= 1 starts that go on after the exploration (at most ``targets + 1``).
    targets : >= 0 targeted starts (at most ``K - 1`` are used).
    candidates : candidate classes of the untargeted DeepFool start (None: all K, or k in [2, K]).
    start : a :func:`~advbound.attacks.deepfool` result on the same ``x`` (refined or not) to use as the
        untargeted start instead of running DeepFool (which, with a ``working_dtype``, runs in that dtype).
    working_dtype : None (everything in the dtype of ``x``) or a floating dtype for the search on a copy of
        ``model`` (an ``nn.Module``); every returned point is verified on ``model`` in the dtype of ``x``.
    polish : >= 0 of the ``steps`` of phase 3 (its last ones) that the best finalist walks alone, in the dtype
        of ``x``.

    ``steps`` of the result counts, per sample, the DeepFool steps of its starts plus its boundary steps.
    """
    DeepFoolOptions(candidates=candidates)            # checks candidates (also when a start is given)
    steps = _as_int(steps, "steps", 0)
    explore = _as_int(explore, "explore", 0)
    targets = _as_int(targets, "targets", 0)
    polish = _as_int(polish, "polish", 0)
    finalists = _as_int(finalists, "finalists", 1)
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
    work, xw = _working_copy(model, x0, working_dtype)
    if start is None:
        start = deepfool(work, xw, candidates=candidates, refine=True, box=box, batched_grads=batched_grads)
    elif not torch.equal(start.labels, y) or not torch.allclose(start.x_adv - start.perturbation, x0):
        raise ValueError("start must come from an attack on x: its clean points (x_adv - perturbation) or labels "
                         "differ from x and the model's labels on x")
    n = x0.shape[0]
    reps = (1,) * (x0.dim() - 1)
    k = min(targets, n_classes - 1)
    # rows of the exploration: the untargeted start, then one block per targeted class (rank-major)
    starts, target, df_steps = start.x_adv.detach().to(xw.dtype), y, start.steps.clone()
    if k > 0:
        classes = torch.topk(logits0, k + 1, dim=1).indices[:, 1:]
        aimed, aimed_steps = _targeted_starts(work, xw, y, classes, clip)
        starts, target = torch.cat([starts, aimed]), torch.cat([y, classes.T.reshape(-1)])
        df_steps = df_steps + aimed_steps
    found = [start.x_adv.detach().to(x0.dtype)]
    rows = torch.arange(n, device=x0.device)
    finalists = min(finalists, k + 1) if explore > 0 else 1
    if explore > 0:
        walked, walked_d = _boundary_walk(work, xw.repeat(k + 1, *reps), starts, y.repeat(k + 1), explore, clip,
                                          target=target)
        # the finalists: the starts whose walks came closest (stable: the untargeted start first on ties)
        order = walked_d.view(k + 1, n).argsort(dim=0, stable=True)[:finalists]
        chosen = walked.view(k + 1, n, *x0.shape[1:])[order, rows].flatten(0, 1)
        target = target.view(k + 1, n)[order, rows].flatten()
        found.append(chosen[:n].to(x0.dtype))
    else:
        chosen, target = starts[:n], y
    # phase 3: the finalists in working precision, then the best of them for the last ``polish`` steps on the
    # model itself
    last = min(polish, steps)
    if steps - last > 0:
        chosen, chosen_d = _boundary_walk(work, xw.repeat(finalists, *reps), chosen, y.repeat(finalists), steps - last,
                                          clip, target=target)
        pick = chosen_d.view(finalists, n).argmin(0)
        chosen = chosen.view(finalists, n, *x0.shape[1:])[pick, rows]
        target = target.view(finalists, n)[pick, rows]
        found.append(chosen.to(x0.dtype))
    else:
        chosen, target = chosen[:n], target[:n]
    chosen = chosen.to(x0.dtype)
    if last > 0:
        chosen, _ = _boundary_walk(model, x0, chosen, y, last, clip, target=target)
        found.append(chosen)
    best = _closest_valid(model, x0, y, found)
    if work is not model:
        best = _lengthened(model, x0, y, best, clip)
    with torch.no_grad():
        logits_b = model(best)
    m_b = _margin(logits_b, y)
    ok = (m_b > 0) & torch.isfinite(logits_b).all(1)
    found.append(_refine(model, x0, best, y, ok, _margin(logits0, y), m_b, metric=_identity_metric, cost=_l2_cost,
                         box=clip))
    x_adv = _closest_valid(model, x0, y, [best, found[-1]])
    with torch.no_grad():
        logits_adv = model(x_adv)
    adv_labels = logits_adv.argmax(1)
    success = (adv_labels != y) & _finite_rows(x_adv) & torch.isfinite(logits_adv).all(1)
    perturbation = x_adv - x0
    walk_steps = (k + 1) * explore + steps
    return AttackResult(x_adv=x_adv, perturbation=perturbation, norms=_flat_norm(perturbation), success=success,
                        steps=df_steps + walk_steps, labels=y, adv_labels=adv_labels)
