"""Batched L2 DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016; the paper's ref. [38]).

The loop shared by the image, latent and in-distribution attacks:

* ``y`` is the label predicted at the clean input; candidate classes are, per sample, all classes or the
  top-``k`` classes by the clean logits (fixed at the start, as in the reference implementation);
* at the current iterate ``x_i`` each candidate ``j`` is linearised, ``h_j(x) = l_j(x) - l_y(x)`` with
  gradient ``w_j``; the class with the smallest ``|h_j| / ||w_j||`` is chosen and the step is
  ``r_i = (|h_j| / ||w_j|| + 1e-4) * w_j / ||w_j||`` -- the ``1e-4`` *push* of the reference code, so that a
  point sitting exactly on a boundary still moves;
* **overshoot**: steps are accumulated, ``r_tot = sum_i r_i``, and the next iterate is
  ``x_{i+1} = x_0 + (1 + overshoot) * r_tot`` -- the overshoot multiplies the *accumulated* perturbation at
  every step, as in the reference implementation (not once at the end, and not each step separately);
  the returned perturbation is therefore ``(1 + overshoot) * r_tot`` (then clipped to ``box`` if given);
* samples whose label has changed are dropped from all further forward/backward passes.

Every returned point is re-verified by evaluating the model on it (``success``); ``refine`` shrinks the
found perturbations back to the boundary (:mod:`advbound.attacks.refine`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import (
    CostFn,
    DeepFoolOptions,
    Metric,
    _box,
    _candidate_table,
    _check_differentiable,
    _check_input,
    _check_logits,
    _flat_norm,
    _identity_metric,
    _predict,
    _rescaled,
    evaluates,
)
from .refine import _margin, _refine

#: the reference implementation's push added to the linearised distance at every step
PUSH = 1e-4


@dataclass
class AttackResult:
    """Per-sample result of an image-space attack (estimate of ``r_unc``).

    ``x_adv`` has the input's shape; ``perturbation = x_adv - x``; ``norms`` its L2 norm per sample;
    ``success`` whether ``model(x_adv)`` predicts a label other than ``labels`` (re-verified; a point or logits
    with NaN or inf, e.g. after an overflow, never count as a success);
    ``steps`` the number of DeepFool steps taken; ``labels`` / ``adv_labels`` the predictions at ``x`` and
    ``x_adv``.
    """

    x_adv: Tensor
    perturbation: Tensor
    norms: Tensor
    success: Tensor
    steps: Tensor
    labels: Tensor
    adv_labels: Tensor



def _difference_gradients(h: Tensor, x: Tensor, batched: bool) -> Tensor:
    """Gradients of the columns of ``h`` (n, c) with respect to ``x`` (n, ...), returned as (n, c, D).

    Rows of ``h`` depend only on the matching row of ``x`` (a classifier evaluated sample-wise), so the
    gradient of a column's sum is the per-sample gradient.  ``batched`` uses one vmapped backward
    (``is_grads_batched``) over the columns; otherwise one backward per column on the shared graph.
    """
    c = h.shape[1]
    if batched and c > 1:
        eye = torch.eye(c).to(h)
        cot = eye[:, None, :].expand(c, h.shape[0], c)
        (g,) = torch.autograd.grad(h, x, grad_outputs=cot, is_grads_batched=True)
        return g.flatten(2).transpose(0, 1)
    out = []
    for j in range(c):
        (g,) = torch.autograd.grad(h[:, j].sum(), x, retain_graph=j + 1 < c)
        out.append(g.flatten(1))
    return torch.stack(out, dim=1)


def _deepfool_loop(fn: Callable[[Tensor], Tensor], x0: Tensor, cand: Tensor, *, overshoot: float,
                   max_steps: int, box: tuple[float, float] | None, metric: Metric,
                   batched_grads: bool) -> tuple[Tensor, Tensor]:
    """Run DeepFool from ``x0``; returns the last iterates and the step counts.

    ``metric(x_active)`` returns a solver ``a -> M^{-1} a`` (per sample, applied along the last axis of
    ``a`` of shape (n, c, D)); the linearised problem ``min ||r||_M s.t. h_j + a_j . r = 0`` has the
    solution ``r = -h_j M^{-1} a_j / (a_j^T M^{-1} a_j)`` at distance ``|h_j| / sqrt(a_j^T M^{-1} a_j)``.
    With ``M = I`` this is the DeepFool step of ref. [38].
    """
    n = x0.shape[0]
    shape = x0.shape[1:]
    x0f = x0.detach().flatten(1)
    r_tot = torch.zeros_like(x0f)
    x_cur = x0f.clone()
    steps = torch.zeros_like(x0f[:, 0], dtype=torch.long)
    active = torch.arange(n, device=x0.device)
    n_cand = cand.shape[1]
    overflow: set[int] = set()   # samples stopped by non-finite numbers
    for it in itertools.count():  # ends at max_steps, or earlier when no sample is left
        xa = x_cur[active].view(-1, *shape).requires_grad_(True)
        logits = fn(xa)
        # a non-finite iterate or logit ends the sample's search (verification then reports no success)
        finite = torch.isfinite(logits.detach()).all(dim=1) & torch.isfinite(x_cur[active]).all(dim=1)
        overflow.update(active[~finite].tolist())
        still = (logits.argmax(dim=1) == cand[active, 0]) & finite
        if it == max_steps:
            break
        if not bool(still.all()):
            n_done = int((~still).sum())
            active = active[still]
            if active.numel() == 0:
                break
            # Cost model: a fresh forward on the survivors (~1 pass) against backward passes wasted on
            # finished rows (~2 passes per candidate per finished row).
            if 2 * n_done * (n_cand - 1) >= active.numel():
                xa = x_cur[active].view(-1, *shape).requires_grad_(True)
                logits = fn(xa)
            else:
                # keep the graph of the whole previous batch; zero cotangents on the finished rows
                logits = logits[still]
        ca = cand[active]
        h = logits.gather(1, ca[:, 1:]) - logits.gather(1, ca[:, :1])
        grads = _difference_gradients(h, xa, batched_grads)
        if grads.shape[0] != h.shape[0]:
            grads = grads[still]
        grads, h = _rescaled(grads, h.detach())  # no overflow of ||w||^2 (scale-free step)
        solved = metric(x_cur[active].view(-1, *shape))(grads)
        s2 = (grads * solved).sum(dim=-1)
        usable = (s2 > 0) & torch.isfinite(s2) & torch.isfinite(h)
        dist = torch.where(usable, h.abs() / s2.clamp_min(1e-30).sqrt(), torch.full_like(h, math.inf))
        best_dist, best = dist.min(dim=1)
        ok = torch.isfinite(best_dist)
        if not bool(ok.all()):
            # zero (or non-finite) gradient for every candidate: no DeepFool direction exists; give up on these
            overflow.update(active[~ok & ~torch.isfinite(grads).flatten(1).all(dim=1)].tolist())
            active, best_dist, best, solved, s2 = (t[ok] for t in (active, best_dist, best, solved, s2))
            if active.numel() == 0:
                break
        rows = torch.arange(best.shape[0], device=best.device)
        direction, s_best = solved[rows, best], s2[rows, best].sqrt()
        r_tot[active] += ((best_dist + PUSH) / s_best)[:, None] * direction
        x_new = x0f[active] + (1.0 + overshoot) * r_tot[active]
        if box is not None:
            x_new = x_new.clamp(*box)
        x_cur[active] = x_new.detach()
        steps[active] += 1
    if overflow:
        warnings.warn(f"DeepFool: {len(overflow)} of {n} samples met non-finite logits or gradients (a "
                      f"floating-point overflow in {x0.dtype}?); their search stopped there and they are reported "
                      "unsuccessful: rescale the model's logits (or use float64)", RuntimeWarning, stacklevel=2)
    return x_cur.view_as(x0).detach(), steps



def _finite_rows(t: Tensor) -> Tensor:
    return torch.isfinite(t.flatten(1)).all(dim=1)


@torch.enable_grad()
def _run(fn: Callable[[Tensor], Tensor], x: Tensor, opts: DeepFoolOptions, box: tuple[float, float] | None,
         metric: Metric, cost: CostFn, who: str, name: str = "x") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """DeepFool + optional refinement + verification; returns (x_adv, success, steps, labels, adv_labels).

    Callers run it under :func:`~advbound.attacks.base.eval_mode`; gradients are enabled inside, also when the
    caller is under ``torch.no_grad()``.  A success is a finite point with finite logits and another label.
    """
    x0 = x.detach()
    with torch.no_grad():
        logits0 = fn(x0)
    n_classes = _check_logits(logits0, x0.shape[0], who)
    _check_differentiable(fn, x0, n_classes, who, name)
    cand = _candidate_table(logits0, opts.candidates)
    y = cand[:, 0]
    x_adv, steps = _deepfool_loop(fn, x0, cand, overshoot=opts.overshoot, max_steps=opts.max_steps, box=box,
                                  metric=metric, batched_grads=opts.batched_grads)
    with torch.no_grad():
        logits_adv = fn(x_adv)
    adv_labels = logits_adv.argmax(dim=1)
    success = (adv_labels != y) & _finite_rows(x_adv) & _finite_rows(logits_adv)
    if opts.refine and bool(success.any()):
        m_adv = _margin(logits_adv, y)
        ok = success & (m_adv > 0)
        refined = _refine(fn, x0, x_adv, y, ok, _margin(logits0, y), m_adv, metric=metric, cost=cost, box=box)
        ref_labels = _predict(fn, refined)
        keep = (ref_labels != y) & success
        view = (-1,) + (1,) * (x0.dim() - 1)
        x_adv = torch.where(keep.view(view), refined, x_adv)
        adv_labels = torch.where(keep, ref_labels, adv_labels)
    return x_adv, success, steps, y, adv_labels


def _l2_cost(a: Tensor, b: Tensor) -> Tensor:
    return _flat_norm(a - b)


@evaluates("model")
def deepfool(model: Callable[[Tensor], Tensor], x: Tensor, *, candidates: int | None = None,
             overshoot: float = 0.02, max_steps: int = 50, refine: bool = False,
             box: Sequence[float] | None = None, batched_grads: bool = False) -> AttackResult:
    """Batched L2 DeepFool (ref. [38]) on ``model``: an upper estimate of ``r_unc(x)`` (Section 3).

    Parameters
    ----------
    model : callable returning logits of shape (n, K) for inputs of shape (n, ...).  An ``nn.Module`` is
        attacked in eval mode (BatchNorm on its running statistics, no Dropout) and given back in the mode it
        came in, its buffers and parameters' ``.grad`` untouched; a plain function must put the modules it
        calls in eval mode itself.
    x : finite inputs (n, ...), on the model's device and of its parameters' dtype (CUDA works when both are
        there).
    candidates : None for all K classes, or an integer k in [2, K]: the top-k classes of each sample's clean
        logits (per sample), the first being the predicted label.
    overshoot : >= 0; iterates are ``x_0 + (1 + overshoot) * r_tot`` with ``r_tot`` the accumulated steps
        (reference implementation), so the returned perturbation is ``(1 + overshoot) r_tot``.
    max_steps : >= 1 DeepFool steps per sample.
    refine : shrink each successful perturbation back toward the boundary (boundary search along the segment
        and boundary projections, see :func:`advbound.attacks.refine._refine`); invalid refined points are
        never returned.
    box : optional (low, high) onto which every iterate is clipped (e.g. (0, 1) for images); ``x`` must lie
        inside it.  The paper's r_unc is unconstrained, so the default is no clipping.
    batched_grads : compute the candidate gradients with one vmapped backward instead of one backward per
        candidate (same numbers; which is faster depends on the model and device).

    The settings can be passed as one object: ``deepfool(model, x, **DeepFoolOptions(...).kwargs())``.
    """
    opts = DeepFoolOptions(candidates, overshoot, max_steps, refine, batched_grads)
    _check_input("x", x, model, "model")
    clip = _box(box, x, "x")
    x_adv, success, steps, y, adv_labels = _run(model, x, opts, clip, _identity_metric, _l2_cost, "model")
    perturbation = x_adv - x.detach()
    return AttackResult(x_adv=x_adv, perturbation=perturbation, norms=_flat_norm(perturbation), success=success,
                        steps=steps, labels=y, adv_labels=adv_labels)
