"""Boundary search in the latent space: sequential quadratic programming for ``r_in`` and ``r_Z`` (Section 3).

``r_in(x) = min_r ||g(z + r) - g(z)||_2`` subject to a label change is a smooth objective
``phi(w) = ||g(w) - g(z)||^2 / 2`` minimised over the adversarial region ``{w : h_j(w) >= 0 for some j}``,
``h_j = l_j - l_y`` the logit differences of ``f o g``.  From a starting point ``w_0`` every step solves,
for each candidate class ``j``, the quadratic program

    ``min_delta  grad_phi . delta + delta^T B delta / 2``   s.t.  ``h_j(w) + a_j . delta >= t``

(``a_j = grad h_j`` at ``w``, ``B`` a model of the Hessian of the Lagrangian, ``t`` a small target margin),
in closed form: ``delta = mu B^{-1} a_j - B^{-1} grad_phi`` with
``mu = max(0, (t - h_j + a_j^T B^{-1} grad_phi) / (a_j^T B^{-1} a_j))``, and takes the class whose
program has the smallest value.  This is sequential quadratic programming (Nocedal & Wright, *Numerical
Optimization*, 2nd ed., Ch. 18) on the union of the half-spaces: at ``w_0 = z`` (``grad_phi = 0``) the
first step is the DeepFool step measured in the metric ``B``.

* ``B`` starts as the pulled-back metric ``J^T J`` of the generator at ``z`` (one Jacobian) plus a ridge,
  and is then updated by damped BFGS steps on the Lagrangian's gradient (Powell's damping, Nocedal &
  Wright Ch. 18), so no further Jacobian is computed;
* the gradients ``grad_phi = J^T (g(w) - g(z))`` and ``a_j`` are exact (backward passes), so the fixed
  points are exact first-order points of the problem; only the curvature model is approximate;
* step acceptance: a step that increases the sample's l1 merit ``phi + nu * max(0, -max_j h_j)``
  (``nu`` twice the largest multiplier so far; Nocedal & Wright Ch. 15) is undone and retried with a
  larger Levenberg-Marquardt ridge on ``B``;
* every iterate that the classifier labels differently from ``y`` is a valid adversarial point; per
  sample the valid iterate with the smallest image distance is returned.

With ``distance="latent"`` the objective is ``phi(w) = ||w - z||^2 / 2``, the Euclidean metric of the latent
space (``r_Z``, the paper's Remark 5), and ``B`` starts as the identity, the exact Hessian of ``phi``: the same
steps then follow the boundary of ``f o g`` in ``z`` (:func:`~advbound.attacks.latent_boundary_search`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .deepfool import _difference_gradients
from .jacobian import _cholesky

#: default number of steps of :func:`boundary_sqp` per start in :func:`~advbound.attacks.in_distribution_attack`
BOUNDARY_STEPS = 30
#: the first steps aim ``TARGET`` times the current image distance beyond the linearised boundary (in the
#: metric ``B``); the fraction is multiplied by ``TARGET_UP`` after an accepted step that fell short (up to
#: ``TARGET_MAX``) and divided by it after one that landed on the adversarial side (down to ``TARGET_MIN``)
TARGET, TARGET_UP, TARGET_MIN, TARGET_MAX = 1e-3, 3.0, 1e-6, 0.03
#: the Levenberg-Marquardt ridge (relative to ``trace(B) / d``) starts at 0; a rejected step sets it to
#: ``DAMP_START`` or multiplies it by ``DAMP_UP``, an accepted one divides it by ``DAMP_DOWN``
DAMP_START, DAMP_UP, DAMP_DOWN = 1e-3, 10.0, 3.0


def _bfgs(b: Tensor, s: Tensor, yv: Tensor) -> Tensor:
    """Damped BFGS update of the batch ``b`` (n, d, d) with steps ``s`` and gradient changes ``yv`` (n, d)."""
    tiny = torch.finfo(b.dtype).tiny
    bs = (b @ s[:, :, None])[:, :, 0]
    sbs = (s * bs).sum(1)
    sy = (s * yv).sum(1)
    theta = torch.where(sy >= 0.2 * sbs, torch.ones_like(sy), 0.8 * sbs / (sbs - sy).clamp_min(tiny))
    r = theta[:, None] * yv + (1 - theta)[:, None] * bs
    sr = (s * r).sum(1)
    ok = (sbs > 0) & (sr > 0) & torch.isfinite(sr)
    upd = r[:, :, None] * r[:, None, :] / sr.clamp_min(tiny)[:, None, None] \
        - bs[:, :, None] * bs[:, None, :] / sbs.clamp_min(tiny)[:, None, None]
    return torch.where(ok[:, None, None], b + upd, b)


def boundary_sqp(classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor], z: Tensor,
                 start: Tensor, cand: Tensor, metric0: Tensor, *, steps: int,
                 batched_grads: bool = False, distance: str = "image",
                 latent_classifier: bool = False) -> tuple[Tensor, Tensor]:
    """Run the boundary search from ``start`` (n, d); returns the best valid points (n, d) and their
    distances (``inf`` where no iterate was valid).

    ``cand`` (n, k): candidate classes per sample, column 0 the clean label ``y``; ``metric0`` (n, d, d): the
    initial curvature model (``J^T J`` at ``z`` plus a ridge for ``r_in``).  ``distance="image"`` minimises
    ``phi(w) = ||g(w) - g(z)||^2 / 2`` (``r_in``); ``distance="latent"`` minimises ``||w - z||^2 / 2``, the
    Euclidean metric of the latent space (``r_Z``, Remark 5), whose Hessian is the identity (pass it as
    ``metric0``).  Callers put the models in evaluation mode.  ``latent_classifier``: the labels are
    ``classifier(w)`` (a classifier of latent codes) instead of ``classifier(generator(w))``.
    """
    if distance not in ("image", "latent"):
        raise ValueError(f"distance must be 'image' or 'latent'; got {distance!r}")
    z0 = z.detach()
    n, d = z0.shape
    y = cand[:, 0]
    with torch.no_grad():
        x0 = generator(z0).flatten(1) if distance == "image" else z0
    eye = torch.eye(d, dtype=z0.dtype, device=z0.device)
    b = metric0.clone()
    scale = b.diagonal(dim1=1, dim2=2).mean(1).clamp_min(torch.finfo(z0.dtype).tiny)
    damp = torch.zeros(n, dtype=z0.dtype, device=z0.device)     # Levenberg-Marquardt ridge, relative to scale
    tau = torch.full((n,), TARGET, dtype=z0.dtype, device=z0.device)
    best = start.detach().clone()
    best_cost = torch.full((n,), math.inf, dtype=z0.dtype, device=z0.device)
    w = start.detach().clone()
    state: dict[str, Tensor] = {}
    for it in range(steps + 1):
        wr = w.detach().requires_grad_(True)
        with torch.enable_grad():
            img = generator(wr)
            logits = classifier(wr if latent_classifier else img)
            e = (img.flatten(1) if distance == "image" else wr) - x0
            phi = 0.5 * (e * e).sum(1)
            h = logits.gather(1, cand[:, 1:]) - logits.gather(1, cand[:, :1])
        with torch.no_grad():
            dist = e.detach().norm(dim=1)
            fin = torch.isfinite(logits.detach()).all(1) & torch.isfinite(dist)
            valid = (logits.detach().argmax(1) != y) & fin
            better = valid & (dist < best_cost)
            best = torch.where(better[:, None], w, best)
            best_cost = torch.where(better, dist, best_cost)
        if it == steps:
            break
        grads = _difference_gradients(torch.cat([phi[:, None], h], 1), wr, batched_grads)
        gphi, a = grads[:, 0].detach(), grads[:, 1:].detach()
        h = h.detach()
        with torch.no_grad():
            viol = (-h.max(1).values).clamp_min(0)
            if state:
                # l1 merit phi + nu * violation, with the weight nu fixed when the step was taken
                merit = phi.detach() + state["nu"] * viol
                worse = ~(merit <= state["merit"]) | ~fin
                # damped BFGS on the Lagrangian's gradient, with the class and multiplier of the step taken
                j, mu = state["j"], state["mu"]
                a_j = a.gather(1, j[:, None, None].expand(-1, 1, d))[:, 0]
                yv = (gphi - state["gphi"]) - mu[:, None] * (a_j - state["a_j"])
                ok = fin & torch.isfinite(yv).all(1)
                b = torch.where(ok[:, None, None], _bfgs(b, w - state["w"], torch.where(ok[:, None], yv, 0 * yv)), b)
                # a worse step is undone and retried with a larger ridge
                damp = torch.where(worse, torch.where(damp > 0, damp * DAMP_UP, torch.full_like(damp, DAMP_START)),
                                   damp / DAMP_DOWN)
                # an accepted step that aimed beyond the boundary but landed short: aim further next time
                tau = torch.where(worse, tau, torch.where(valid, (tau / TARGET_UP).clamp_min(TARGET_MIN),
                                                          (tau * TARGET_UP).clamp_max(TARGET_MAX)))
                keep = worse[:, None]
                w = torch.where(keep, state["w"], w)
                gphi = torch.where(keep, state["gphi"], gphi)
                a = torch.where(keep[:, :, None], state["a"], a)
                h = torch.where(keep, state["h"], h)
                phi_now = torch.where(worse, state["phi"], phi.detach())
                dist = torch.where(worse, state["dist"], dist)
                viol = torch.where(worse, state["viol"], viol)
                nu = state["nu"]
            else:
                phi_now = phi.detach()
                nu = torch.zeros_like(dist)
            chol = _cholesky(b + (damp * scale)[:, None, None] * eye)
            ba = torch.cholesky_solve(a.transpose(1, 2), chol).transpose(1, 2)      # (n, c, d)
            bg = torch.cholesky_solve(gphi[:, :, None], chol)[:, :, 0]              # (n, d)
            aba = (a * ba).sum(-1).clamp_min(torch.finfo(z0.dtype).tiny)
            abg = (a * bg[:, None, :]).sum(-1)
            target = tau[:, None] * dist[:, None] * aba.sqrt()
            mu_all = ((target - h + abg) / aba).clamp_min(0)
            delta = mu_all[:, :, None] * ba - bg[:, None, :]
            value = 0.5 * ((gphi[:, None, :] * delta).sum(-1) + mu_all * (target - h))
            usable = (a.abs().sum(-1) > 0) & torch.isfinite(value) & torch.isfinite(delta).all(-1)
            value = torch.where(usable, value, torch.full_like(value, math.inf))
            j = value.argmin(1)
            pick = j[:, None, None].expand(-1, 1, d)
            step = delta.gather(1, pick)[:, 0]
            step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
            mu = mu_all.gather(1, j[:, None])[:, 0]
            nu = torch.maximum(nu, 2 * mu)
            state = {"w": w, "gphi": gphi, "a": a, "h": h, "phi": phi_now, "dist": dist, "viol": viol,
                     "merit": phi_now + nu * viol, "nu": nu, "j": j, "mu": mu, "a_j": a.gather(1, pick)[:, 0]}
            w = w + step
    return best, best_cost
