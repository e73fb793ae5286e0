"""Robustness estimates by attack: r_unc, r_Z and r_in of the paper's Section 3 and Remark 5.

For ``x = g(z)`` and a classifier ``f`` the paper defines

* unconstrained robustness   ``r_unc(x) = min_r ||r||_2``               s.t. ``f(x + r) != f(x)``;
* latent robustness (Rem. 5) ``r_Z(z)   = min_r ||r||_2``               s.t. ``f(g(z + r)) != f(g(z))``;
* in-distribution robustness ``r_in(x)  = min_r ||g(z + r) - g(z)||_2`` s.t. ``f(g(z + r)) != f(g(z))``.

Every function here returns a *valid* adversarial point (re-verified by evaluating the model on it), so
each reported norm is an upper estimate of the true minimum: smaller is better.  Samples for which no
label change was found within ``max_steps`` have ``success == False``; their norms are those of the last
iterate and must not be read as robustness values.

The engine is DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016; the paper's ref. [38]), batched:

* ``y`` is the label predicted at the clean input; candidate classes are, per sample, all classes or the
  top-``k`` classes by the clean logits (fixed at the start, as in the reference implementation);
* at the current iterate ``x_i`` each candidate ``j`` is linearised, ``h_j(x) = l_j(x) - l_y(x)`` with
  gradient ``w_j``; the class with the smallest ``|h_j| / ||w_j||`` is chosen and the step is
  ``r_i = (|h_j| / ||w_j|| + 1e-4) * w_j / ||w_j||`` -- the ``1e-4`` *push* of the reference code, so that a
  point sitting exactly on a boundary still moves;
* **overshoot**: steps are accumulated, ``r_tot = sum_i r_i``, and the next iterate is
  ``x_{i+1} = x_0 + (1 + overshoot) * r_tot`` -- the overshoot multiplies the *accumulated* perturbation at
  every step, as in the reference implementation (not once at the end, and not each step separately);
  the returned perturbation is therefore ``(1 + overshoot) * r_tot`` (then clipped to ``bounds`` if given);
* samples whose label has changed are dropped from all further forward/backward passes.

``refine=True`` then shrinks each successful perturbation (see :func:`_refine`): a boundary search
(regula falsi on the classifier's margin) on the scale of the perturbation along the segment
``x_0 -> x_adv``, followed by a few boundary
projections (linearise the adversarial class at the boundary point, project ``x_0`` onto that hyperplane,
keep the new point only if it is valid and closer).  A refined point is used only if it is re-verified.

The latent and in-distribution attacks run the same loop on ``z -> f(g(z))``; the in-distribution attack
measures steps in the pulled-back metric ``J^T J`` of the generator (see :func:`in_distribution_attack`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad as fwad

#: the reference implementation's push added to the linearised distance at every step
PUSH = 1e-4

Metric = Callable[[Tensor], Callable[[Tensor], Tensor]]
CostFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------

@dataclass
class AttackResult:
    """Per-sample result of an image-space attack (estimate of ``r_unc``).

    ``x_adv`` has the input's shape; ``perturbation = x_adv - x``; ``norms`` its L2 norm per sample;
    ``success`` whether ``model(x_adv)`` predicts a label other than ``labels`` (re-verified);
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


@dataclass
class LatentAttackResult:
    """Per-sample result of a latent attack (estimates of ``r_Z`` and ``r_in``).

    ``z_adv = z + latent_perturbation``; ``latent_norms = ||latent_perturbation||_2`` (the ``r_Z``
    estimate); ``image_distances = ||g(z_adv) - g(z)||_2`` (the ``r_in`` estimate); ``success`` is
    re-verified on ``f(g(z_adv))``.  ``method`` names, per sample, which search produced the point.
    """

    z_adv: Tensor
    latent_perturbation: Tensor
    latent_norms: Tensor
    image_distances: Tensor
    success: Tensor
    steps: Tensor
    labels: Tensor
    adv_labels: Tensor
    method: Optional[list[str]] = None


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

def _module_device(module: Callable) -> Optional[torch.device]:
    if isinstance(module, nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return None


def _check_options(overshoot: float, max_steps: int, refine: bool) -> None:
    if not isinstance(overshoot, (int, float)) or not (overshoot >= 0) or overshoot == float("inf"):
        raise ValueError(f"overshoot must be a finite number >= 0; got {overshoot!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1; got {max_steps!r}")
    if not isinstance(refine, bool):
        raise ValueError(f"refine must be True or False; got {refine!r}")


def _check_input(name: str, x: Tensor, module: Callable, module_name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor with a leading batch dimension; got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 1 and a feature dimension; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    device = _module_device(module)
    if device is not None and device != x.device:
        raise ValueError(f"{name} is on {x.device} but {module_name}'s parameters are on {device}; "
                         f"move them to the same device")


def _check_logits(logits: Tensor, n: int, who: str) -> int:
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ValueError(f"{who} must return logits of shape (n, K) = ({n}, K) for a batch of {n}; "
                         f"got {tuple(logits.shape)} (shape mismatch)")
    if logits.shape[1] < 2:
        raise ValueError(f"{who} must return at least K = 2 logits per sample; got {logits.shape[1]}")
    return int(logits.shape[1])


def _candidate_table(logits0: Tensor, candidates: Optional[int]) -> Tensor:
    """Per-sample candidate classes, shape (n, k), column 0 the predicted label (ordered by clean logits)."""
    n_classes = logits0.shape[1]
    if candidates is None:
        k = n_classes
    else:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or not 2 <= candidates <= n_classes:
            raise ValueError(f"candidates must be None (all classes) or an integer in [2, K] = [2, {n_classes}]; "
                             f"got {candidates!r}")
        k = candidates
    # per sample (each row separately), never over the batch
    return torch.topk(logits0, k, dim=1).indices


def _bounds(bounds: Optional[Sequence[float]]) -> Optional[tuple[float, float]]:
    if bounds is None:
        return None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high; got {bounds!r}")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# The batched DeepFool loop (shared by the image, latent and in-distribution attacks)
# --------------------------------------------------------------------------------------------------

def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _identity_metric(x: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda a: a


def _difference_gradients(h: Tensor, x: Tensor, batched: bool) -> Tensor:
    """Gradients of the columns of ``h`` (n, c) with respect to ``x`` (n, ...), returned as (n, c, D).

    Rows of ``h`` depend only on the matching row of ``x`` (a classifier evaluated sample-wise), so the
    gradient of a column's sum is the per-sample gradient.  ``batched`` uses one vmapped backward
    (``is_grads_batched``) over the columns; otherwise one backward per column on the shared graph.
    """
    c = h.shape[1]
    if batched and c > 1:
        eye = torch.eye(c, dtype=h.dtype, device=h.device)
        cot = eye[:, None, :].expand(c, h.shape[0], c)
        (g,) = torch.autograd.grad(h, x, grad_outputs=cot, is_grads_batched=True)
        return g.flatten(2).transpose(0, 1)
    out = []
    for j in range(c):
        (g,) = torch.autograd.grad(h[:, j].sum(), x, retain_graph=j + 1 < c)
        out.append(g.flatten(1))
    return torch.stack(out, dim=1)


def _predict(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    with torch.no_grad():
        return fn(x).argmax(dim=1)


def _deepfool_loop(fn: Callable[[Tensor], Tensor], x0: Tensor, cand: Tensor, *, overshoot: float,
                   max_steps: int, bounds: Optional[tuple[float, float]], metric: Metric,
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
    steps = torch.zeros(n, dtype=torch.long, device=x0.device)
    active = torch.arange(n, device=x0.device)
    n_cand = cand.shape[1]
    for it in range(max_steps + 1):
        if active.numel() == 0:
            break
        xa = x_cur[active].view(-1, *shape).requires_grad_(True)
        logits = fn(xa)
        still = logits.argmax(dim=1) == cand[active, 0]
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
        h = h.detach()
        solved = metric(x_cur[active].view(-1, *shape))(grads)
        s2 = (grads * solved).sum(dim=-1)
        dist = torch.where(s2 > 0, h.abs() / s2.clamp_min(1e-30).sqrt(), torch.full_like(h, float("inf")))
        best_dist, best = dist.min(dim=1)
        ok = torch.isfinite(best_dist)
        if not bool(ok.all()):
            # zero gradient for every candidate: no DeepFool direction exists; give up on these samples
            active, best_dist, best, solved, s2 = (t[ok] for t in (active, best_dist, best, solved, s2))
            if active.numel() == 0:
                break
        idx = best[:, None, None].expand(-1, 1, solved.shape[-1])
        direction = solved.gather(1, idx)[:, 0]
        s_best = s2.gather(1, best[:, None])[:, 0].sqrt()
        r_tot[active] += ((best_dist + PUSH) / s_best)[:, None] * direction
        x_new = x0f[active] + (1.0 + overshoot) * r_tot[active]
        if bounds is not None:
            x_new = x_new.clamp(*bounds)
        x_cur[active] = x_new.detach()
        steps[active] += 1
    return x_cur.view_as(x0).detach(), steps


def _along(x0: Tensor, t: Tensor, direction: Tensor, bounds: Optional[tuple[float, float]]) -> Tensor:
    """Points ``x0 + t * direction`` (per-sample scale ``t``), clipped to ``bounds`` when given."""
    point = x0 + t.view(-1, *([1] * (x0.dim() - 1))) * direction
    return point if bounds is None else point.clamp(*bounds)


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} l_j - l_y`` per sample: > 0 exactly when the label has changed (ties count as unchanged)."""
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - logits.gather(1, y[:, None])[:, 0]


def _margin_at(fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return _margin(fn(x), y)


def _boundary_search(fn: Callable[[Tensor], Tensor], x0: Tensor, direction: Tensor, y: Tensor, lo: Tensor,
                     m_lo: Tensor, hi: Tensor, m_hi: Tensor, iters: int,
                     bounds: Optional[tuple[float, float]]) -> Tensor:
    """Shrink ``hi`` towards the boundary along ``x0 + t * direction`` by regula falsi (Illinois variant).

    Invariant: the margin (see :func:`_margin`) is ``m_lo <= 0`` at ``t = lo`` and ``m_hi > 0`` at ``t = hi``
    (valid), so ``hi`` is always a valid scale.  The secant point is nudged by ``1e-6`` of the bracket
    towards ``hi`` so that, on a locally linear model, one evaluation lands on the valid side.
    """
    side = torch.zeros_like(lo)  # +1: hi moved last time, -1: lo moved last time
    for _ in range(iters):
        denom = (m_hi - m_lo).clamp_min(1e-30)
        t = hi - m_hi * (hi - lo) / denom
        t = torch.minimum(torch.maximum(t + 1e-6 * (hi - lo), lo + 1e-3 * (hi - lo)), hi)
        m_t = _margin_at(fn, _along(x0, t, direction, bounds), y)
        valid = m_t > 0
        # Illinois: halve the stale end's margin when the same end is kept twice in a row
        m_lo = torch.where(valid & (side > 0), 0.5 * m_lo, m_lo)
        m_hi = torch.where(~valid & (side < 0), 0.5 * m_hi, m_hi)
        hi, m_hi = torch.where(valid, t, hi), torch.where(valid, m_t, m_hi)
        lo, m_lo = torch.where(valid, lo, t), torch.where(valid, m_lo, m_t)
        side = torch.where(valid, torch.ones_like(side), -torch.ones_like(side))
    return hi


def _refine(fn: Callable[[Tensor], Tensor], x0: Tensor, x_adv: Tensor, y: Tensor, ok: Tensor, m0: Tensor,
            m_adv: Tensor, *, metric: Metric, cost: CostFn, bounds: Optional[tuple[float, float]],
            search_iters: int = 3, projections: int = 2) -> Tensor:
    """Shrink valid perturbations toward the decision boundary, never returning an invalid point.

    ``m0`` and ``m_adv`` are the margins (:func:`_margin`) at ``x0`` and ``x_adv``.

    1. Boundary search (regula falsi, :func:`_boundary_search`) on the scale ``t`` of ``p = x_adv - x0``
       along the segment ``x0 + t p``, ``t in [0, 1]`` (``t = 1`` is valid, ``t = 0`` is not).
    2. Up to ``projections`` times: at the current boundary point ``x_b`` with adversarial class ``j``,
       linearise ``h = l_j - l_y`` (gradient ``a``) and project ``x0`` onto ``{h(x_b) + a.(x - x_b) = 0}`` in
       the metric ``M``: ``q = (a.(x_b - x0) - h(x_b)) M^{-1} a / (a^T M^{-1} a)``, whose norm never exceeds
       that of ``x_b - x0``.  Along the direction of ``q`` the scale ``(1 + 1e-6) ||q||`` is tried first, else
       the boundary is searched between it and the current norm; the point is kept only if it is valid and
       ``cost`` decreased.  Samples that did not improve are dropped from further projections.
    Only rows with ``ok`` are touched.
    """
    out = x_adv.clone()
    idx = torch.nonzero(ok).flatten()
    if idx.numel() == 0:
        return out
    view = (-1,) + (1,) * (x0.dim() - 1)
    x0s, ys = x0[idx], y[idx]
    p = x_adv[idx] - x0s
    norm_p = _flat_norm(p).clamp_min(1e-30)
    u = p / norm_p.view(view)
    t = _boundary_search(fn, x0s, u, ys, torch.zeros_like(norm_p), m0[idx], norm_p, m_adv[idx], search_iters,
                         bounds)
    best = _along(x0s, t, u, bounds)
    best_cost = cost(best, x0s)
    act = torch.arange(idx.numel(), device=x0.device)   # rows still improving
    for _ in range(projections):
        if act.numel() == 0:
            break
        xa0, ya, cur_pt = x0s[act], ys[act], best[act]
        xb = cur_pt.detach().requires_grad_(True)
        logits = fn(xb)
        j = logits.argmax(dim=1)
        h = logits.gather(1, j[:, None]) - logits.gather(1, ya[:, None])
        (a,) = torch.autograd.grad(h.sum(), xb)
        a = a.flatten(1)
        solved = metric(cur_pt.detach())(a[:, None, :])[:, 0]
        s2 = (a * solved).sum(dim=1)
        coef = ((a * (cur_pt - xa0).flatten(1)).sum(dim=1) - h[:, 0].detach()) / s2.clamp_min(1e-30)
        q = (coef[:, None] * solved).view_as(xa0)
        norm_q = _flat_norm(q)
        usable = (s2 > 0) & (j != ya) & (norm_q > 0)
        dirn = q / norm_q.clamp_min(1e-30).view(view)
        cur = _flat_norm(cur_pt - xa0)
        first = torch.minimum(norm_q * (1.0 + 1e-6), cur)
        m_first = _margin_at(fn, _along(xa0, first, dirn, bounds), ya)
        t_new = first.clone()
        valid = usable & (m_first > 0)
        need = torch.nonzero(usable & ~valid).flatten()
        if need.numel() > 0:
            m_cur = _margin_at(fn, _along(xa0[need], cur[need], dirn[need], bounds), ya[need])
            ok_cur = m_cur > 0
            sel = need[ok_cur]
            if sel.numel() > 0:
                t_new[sel] = _boundary_search(fn, xa0[sel], dirn[sel], ya[sel], first[sel], m_first[sel], cur[sel],
                                              m_cur[ok_cur], search_iters - 1, bounds)
                valid[sel] = True
        cand = _along(xa0, t_new, dirn, bounds)
        cand_cost = cost(cand, xa0)
        better = valid & (cand_cost < best_cost[act])
        rows = act[better]
        best[rows] = cand[better].detach()
        best_cost[rows] = cand_cost[better]
        act = rows
    out[idx] = best.detach()
    return out


def _run(fn: Callable[[Tensor], Tensor], x: Tensor, candidates: Optional[int], overshoot: float, max_steps: int,
         refine: bool, bounds: Optional[tuple[float, float]], metric: Metric, cost: CostFn, who: str,
         batched_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """DeepFool + optional refinement + verification; returns (x_adv, success, steps, labels, adv_labels)."""
    x0 = x.detach()
    with torch.no_grad():
        logits0 = fn(x0)
    _check_logits(logits0, x0.shape[0], who)
    cand = _candidate_table(logits0, candidates)
    y = cand[:, 0]
    x_adv, steps = _deepfool_loop(fn, x0, cand, overshoot=overshoot, max_steps=max_steps, bounds=bounds,
                                  metric=metric, batched_grads=batched_grads)
    with torch.no_grad():
        logits_adv = fn(x_adv)
    adv_labels = logits_adv.argmax(dim=1)
    success = adv_labels != y
    if refine and bool(success.any()):
        m_adv = _margin(logits_adv, y)
        ok = success & (m_adv > 0)
        refined = _refine(fn, x0, x_adv, y, ok, _margin(logits0, y), m_adv, metric=metric, cost=cost,
                          bounds=bounds)
        ref_labels = _predict(fn, refined)
        keep = (ref_labels != y) & success
        view = (-1,) + (1,) * (x0.dim() - 1)
        x_adv = torch.where(keep.view(view), refined, x_adv)
        adv_labels = torch.where(keep, ref_labels, adv_labels)
    return x_adv, success, steps, y, adv_labels


# --------------------------------------------------------------------------------------------------
# Public attacks
# --------------------------------------------------------------------------------------------------

def deepfool(model: Callable[[Tensor], Tensor], x: Tensor, *, candidates: Optional[int] = None,
             overshoot: float = 0.02, max_steps: int = 50, refine: bool = False,
             bounds: Optional[Sequence[float]] = None, batched_grads: bool = False) -> AttackResult:
    """Batched L2 DeepFool (ref. [38]) on ``model``: an upper estimate of ``r_unc(x)`` (Section 3).

    Parameters
    ----------
    model : callable returning logits of shape (n, K) for inputs of shape (n, ...); evaluated sample-wise
        (put BatchNorm/Dropout in eval mode).
    x : inputs (n, ...), on the model's device (CUDA works when both are there).
    candidates : None for all K classes, or an integer k in [2, K]: the top-k classes of each sample's clean
        logits (per sample), the first being the predicted label.
    overshoot : >= 0; iterates are ``x_0 + (1 + overshoot) * r_tot`` with ``r_tot`` the accumulated steps
        (reference implementation), so the returned perturbation is ``(1 + overshoot) r_tot``.
    max_steps : >= 1 DeepFool steps per sample.
    refine : shrink each successful perturbation back toward the boundary (boundary search along the segment and
        boundary projections, see :func:`_refine`); invalid refined points are never returned.
    bounds : optional (low, high) box onto which every iterate is clipped (e.g. (0, 1) for images); the
        paper's r_unc is unconstrained, so the default is no clipping.
    batched_grads : compute the candidate gradients with one vmapped backward instead of one backward per
        candidate (same numbers; which is faster depends on the model and device).
    """
    _check_options(overshoot, max_steps, refine)
    _check_input("x", x, model, "model")
    box = _bounds(bounds)
    x_adv, success, steps, y, adv_labels = _run(
        model, x, candidates, float(overshoot), max_steps, refine, box, _identity_metric,
        lambda a, b: _flat_norm(a - b), "model", batched_grads)
    perturbation = x_adv - x.detach()
    return AttackResult(x_adv=x_adv, perturbation=perturbation, norms=_flat_norm(perturbation), success=success,
                        steps=steps, labels=y, adv_labels=adv_labels)


class _Composed(nn.Module):
    """``z -> classifier(generator(z))``."""

    def __init__(self, classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor]):
        super().__init__()
        self.classifier = classifier
        self.generator = generator

    def forward(self, z: Tensor) -> Tensor:
        return self.classifier(self.generator(z))


def _check_latent(classifier: Callable, generator: Callable, z: Tensor) -> None:
    _check_input("z", z, generator, "generator")
    if z.dim() != 2:
        raise ValueError(f"z must have shape (n, d); got {tuple(z.shape)} (shape mismatch)")
    dev = _module_device(classifier)
    if dev is not None and dev != z.device:
        raise ValueError(f"z is on {z.device} but classifier's parameters are on {dev}; move them to the same device")
    latent_dim = getattr(generator, "latent_dim", None)
    if isinstance(latent_dim, int) and latent_dim != z.shape[1]:
        raise ValueError(f"z has {z.shape[1]} latent coordinates but generator.latent_dim = {latent_dim} "
                         f"(shape mismatch)")


def _image_distance(generator: Callable[[Tensor], Tensor], z_adv: Tensor, z: Tensor) -> Tensor:
    with torch.no_grad():
        return _flat_norm(generator(z_adv) - generator(z))


def _latent_result(generator: Callable[[Tensor], Tensor], z: Tensor, z_adv: Tensor, success: Tensor, steps: Tensor,
                   y: Tensor, adv_labels: Tensor, method: Optional[list[str]]) -> LatentAttackResult:
    pert = z_adv - z.detach()
    return LatentAttackResult(z_adv=z_adv, latent_perturbation=pert, latent_norms=_flat_norm(pert),
                              image_distances=_image_distance(generator, z_adv, z.detach()), success=success,
                              steps=steps, labels=y, adv_labels=adv_labels, method=method)


def latent_deepfool(classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor], z: Tensor, *,
                    candidates: Optional[int] = None, overshoot: float = 0.02, max_steps: int = 50,
                    refine: bool = False, batched_grads: bool = False) -> LatentAttackResult:
    """DeepFool on ``f o g`` with respect to ``z``: an upper estimate of ``r_Z`` (Remark 5).

    Same options as :func:`deepfool` (no box: the latent space is all of ``R^d``).  Also reports the image
    distance ``||g(z + r) - g(z)||_2`` of the found latent perturbation, itself an upper estimate of r_in.
    """
    _check_options(overshoot, max_steps, refine)
    _check_latent(classifier, generator, z)
    fn = _Composed(classifier, generator)
    z_adv, success, steps, y, adv_labels = _run(
        fn, z, candidates, float(overshoot), max_steps, refine, None, _identity_metric,
        lambda a, b: _flat_norm(a - b), "classifier(generator(z))", batched_grads)
    return _latent_result(generator, z, z_adv, success, steps, y, adv_labels,
                          ["latent_deepfool"] * z.shape[0])


def generator_gram(generator: Callable[[Tensor], Tensor], z: Tensor, *, max_chunk_elems: int = 2 ** 24) -> Tensor:
    """Pulled-back metric ``G(z) = J(z)^T J(z)`` per sample, shape (n, d, d), J the generator's Jacobian.

    Computed with forward-mode AD: the batch is replicated ``d`` times with the unit tangents, so one
    forward pass (chunked to about ``max_chunk_elems`` output numbers) gives every column of ``J``.
    """
    n, d = z.shape
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    grams = []
    with torch.no_grad():
        m = generator(z[:1]).numel()
    chunk = max(1, max_chunk_elems // max(1, m * d))
    for start in range(0, n, chunk):
        zc = z[start:start + chunk].detach()
        c = zc.shape[0]
        with torch.no_grad(), fwad.dual_level(), warnings.catch_warnings():
            # torch's first use of forward AD scripts its decompositions and warns about torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            dual = fwad.make_dual(zc.repeat_interleave(d, dim=0), eye.repeat(c, 1))
            tangent = fwad.unpack_dual(generator(dual)).tangent
        jt = tangent.reshape(c, d, -1)            # rows are J^T
        grams.append(jt @ jt.transpose(1, 2))
    return torch.cat(grams)


def _pullback_metric(generator: Callable[[Tensor], Tensor], ridge: float) -> Metric:
    """Metric ``M = J^T J + lambda I`` (``lambda = ridge * trace(J^T J) / d``), solved by batched Cholesky."""

    def metric(z: Tensor) -> Callable[[Tensor], Tensor]:
        gram = generator_gram(generator, z)
        d = gram.shape[-1]
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
        reg = gram + (ridge * scale)[:, None, None] * torch.eye(d, dtype=gram.dtype, device=gram.device)
        chol, info = torch.linalg.cholesky_ex(reg)
        if bool((info != 0).any()):
            bad = info != 0
            reg[bad] = reg[bad] + (1e-6 * scale[bad])[:, None, None] * torch.eye(d, dtype=gram.dtype, device=gram.device)
            chol = torch.linalg.cholesky(reg)

        def solve(a: Tensor) -> Tensor:
            # a: (n, c, d) -> M^{-1} a along the last axis
            return torch.cholesky_solve(a.transpose(1, 2), chol).transpose(1, 2)

        return solve

    return metric


def in_distribution_attack(classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor], z: Tensor,
                           *, candidates: Optional[int] = None, overshoot: float = 0.02, max_steps: int = 50,
                           refine: bool = False, ridge: float = 1e-6, include_latent: bool = True,
                           batched_grads: bool = False) -> LatentAttackResult:
    """In-distribution attack: an upper estimate of ``r_in(x) = min_r ||g(z + r) - g(z)||`` s.t. a label change.

    Method (our design; the paper only says the perturbations were computed with ref. [38]):

    * **pulled-back DeepFool** -- DeepFool steps in ``z`` where each step solves the linearised problem
      ``min_r ||J r||_2`` s.t. ``h_j + a_j . r = 0`` (``J`` the generator's Jacobian at the iterate,
      ``a_j = J^T grad_x h_j`` the latent gradient), i.e. the DeepFool step in the metric
      ``M = J^T J + lambda I`` with a small ridge ``lambda`` (relative to ``trace(J^T J)/d``), solved per
      sample by Cholesky;
    * with ``include_latent``, plain latent DeepFool (the ``r_Z`` search) as a second candidate;
    * per sample, the *valid* candidate with the smallest image distance ``||g(z_adv) - g(z)||`` is kept
      (``method`` says which).  With ``refine`` both searches are refined, the cost being the image distance.
    """
    _check_options(overshoot, max_steps, refine)
    _check_latent(classifier, generator, z)
    if not (isinstance(ridge, (int, float)) and ridge >= 0):
        raise ValueError(f"ridge must be a number >= 0; got {ridge!r}")
    fn = _Composed(classifier, generator)

    def image_cost(za: Tensor, zb: Tensor) -> Tensor:
        return _image_distance(generator, za, zb)

    z_adv, success, steps, y, adv_labels = _run(
        fn, z, candidates, float(overshoot), max_steps, refine, None, _pullback_metric(generator, float(ridge)),
        image_cost, "classifier(generator(z))", batched_grads)
    method = ["pullback_deepfool"] * z.shape[0]
    if include_latent:
        other = latent_deepfool(classifier, generator, z, candidates=candidates, overshoot=overshoot,
                                max_steps=max_steps, refine=refine, batched_grads=batched_grads)
        mine = image_cost(z_adv, z.detach())
        take = other.success & (~success | (other.image_distances < mine))
        z_adv = torch.where(take[:, None], other.z_adv, z_adv)
        steps = torch.where(take, other.steps, steps)
        adv_labels = torch.where(take, other.adv_labels, adv_labels)
        success = success | other.success
        method = ["latent_deepfool" if t else m for t, m in zip(take.tolist(), method)]
    return _latent_result(generator, z, z_adv, success, steps, y, adv_labels, method)
