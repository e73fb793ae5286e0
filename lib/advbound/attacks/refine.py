"""Refinement: shrink a valid adversarial perturbation back to the decision boundary.

Used by every attack with ``refine=True``: a boundary search (regula falsi on the classifier's margin) on the
scale of the perturbation along the segment ``x_0 -> x_adv``, then a few boundary projections (linearise the
adversarial class at the boundary point, project ``x_0`` onto that hyperplane in the attack's metric, keep the
new point only if it is valid and closer).  A refined point is used only if it is re-verified.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import CostFn, Metric, _flat_norm, _rescaled


def _along(x0: Tensor, t: Tensor, direction: Tensor, box: tuple[float, float] | None) -> Tensor:
    """Points ``x0 + t * direction`` (per-sample scale ``t``), clipped to ``box`` when given."""
    point = x0 + t.view(-1, *([1] * (x0.dim() - 1))) * direction
    return point if box is None else point.clamp(*box)


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} l_j - l_y`` per sample: > 0 exactly when the label has changed (ties count as unchanged)."""
    others = logits.scatter(1, y[:, None], -math.inf)
    return others.max(dim=1).values - logits.gather(1, y[:, None])[:, 0]


def _margin_at(fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return _margin(fn(x), y)


def _boundary_search(fn: Callable[[Tensor], Tensor], x0: Tensor, direction: Tensor, y: Tensor, lo: Tensor,
                     m_lo: Tensor, hi: Tensor, m_hi: Tensor, iters: int,
                     box: tuple[float, float] | None) -> Tensor:
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
        m_t = _margin_at(fn, _along(x0, t, direction, box), y)
        valid = m_t > 0
        # Illinois: halve the stale end's margin when the same end is kept twice in a row
        m_lo = torch.where(valid & (side > 0), 0.5 * m_lo, m_lo)
        m_hi = torch.where(~valid & (side < 0), 0.5 * m_hi, m_hi)
        hi, m_hi = torch.where(valid, t, hi), torch.where(valid, m_t, m_hi)
        lo, m_lo = torch.where(valid, lo, t), torch.where(valid, m_lo, m_t)
        side = torch.where(valid, torch.ones_like(side), -torch.ones_like(side))
    return hi


def _refine(fn: Callable[[Tensor], Tensor], x0: Tensor, x_adv: Tensor, y: Tensor, ok: Tensor, m0: Tensor,
            m_adv: Tensor, *, metric: Metric, cost: CostFn, box: tuple[float, float] | None,
            search_iters: int = 3, projections: int = 2) -> Tensor:
    """Shrink valid perturbations toward the decision boundary, never returning an invalid point.

    ``m0`` and ``m_adv`` are the margins (:func:`_margin`) at ``x0`` and ``x_adv``.

    1. Boundary search (regula falsi, :func:`_boundary_search`) on the scale ``t`` of ``p = x_adv - x0``
       along the segment ``x0 + t p``, ``t in [0, 1]`` (``t = 1`` is valid, ``t = 0`` is not).
    2. Up to ``projections`` times: at the current boundary point ``x_b`` with adversarial class ``j``,
       linearise ``h = l_j - l_y`` (gradient ``a``) and project ``x0`` onto ``{h(x_b) + a.(x - x_b) = 0}`` in
       the metric ``M``: ``q = (a.(x_b - x0) - h(x_b)) M^{-1} a / (a^T M^{-1} a)``, whose norm never exceeds
       that of ``x_b - x0``.  Along the direction of ``q`` (clipped to ``box``) the scale ``(1 + 1e-6) ||q||``
       is tried first, else the boundary is searched between it and the current norm; the point found is
       evaluated again and kept only if it is valid and ``cost`` decreased.  Samples that did not improve are
       dropped from further projections.
    Only rows with ``ok`` are touched.  The segment of step 1 lies in ``box`` (a convex set holding both ends),
    so it needs no clipping.
    """
    out = x_adv.clone()
    idx = torch.nonzero(ok).flatten()
    if idx.numel() == 0:
        return out
    view = (-1,) + (1,) * (x0.dim() - 1)
    x0s, ys = x0[idx], y[idx]
    p = x_adv[idx] - x0s
    zero = torch.zeros_like(m0[idx])
    t = _boundary_search(fn, x0s, p, ys, zero, m0[idx], zero + 1, m_adv[idx], search_iters, None)
    best = _along(x0s, t, p, None)
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
        a, h_j = _rescaled(a.flatten(1), h[:, 0].detach())  # no overflow of ||a||^2 (the projection is scale-free)
        solved = metric(cur_pt.detach())(a[:, None, :])[:, 0]
        s2 = (a * solved).sum(dim=1)
        coef = ((a * (cur_pt - xa0).flatten(1)).sum(dim=1) - h_j) / s2.clamp_min(1e-30)
        q = (coef[:, None] * solved).view_as(xa0)
        norm_q = _flat_norm(q)
        # a zero gradient or projection gives dirn = 0 (or NaN): its candidates fail the check below
        dirn = q / norm_q.clamp_min(1e-30).view(view)
        cur = _flat_norm(cur_pt - xa0)
        first = torch.minimum(norm_q * (1.0 + 1e-6), cur)
        m_first = _margin_at(fn, _along(xa0, first, dirn, box), ya)
        t_new = first.clone()
        need = torch.nonzero(~(m_first > 0)).flatten()
        if need.numel() > 0:
            m_cur = _margin_at(fn, _along(xa0[need], cur[need], dirn[need], box), ya[need])
            ok_cur = m_cur > 0
            sel = need[ok_cur]
            if sel.numel() > 0:
                t_new[sel] = _boundary_search(fn, xa0[sel], dirn[sel], ya[sel], first[sel], m_first[sel], cur[sel],
                                              m_cur[ok_cur], search_iters - 1, box)
        cand = _along(xa0, t_new, dirn, box)
        valid = _margin_at(fn, cand, ya) > 0  # the point itself, evaluated again
        cand_cost = cost(cand, xa0)
        better = valid & (cand_cost < best_cost[act])
        rows = act[better]
        best[rows] = cand[better].detach()
        best_cost[rows] = cand_cost[better]
        act = rows
    out[idx] = best.detach()
    return out

