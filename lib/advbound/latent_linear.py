"""Classifiers that are linear in the latent space (Remark 4, Section 6), and measures of how far a classifier
is from linear in image space.

Remark 4: when ``f o g`` splits the latent space into two half-spaces, the latent robustness ``r_Z`` meets
eq. (2) with equality, whatever the generator ``g``; Section 6 concludes that classifiers should have linear
decision boundaries in the latent space.  Such a classifier can be strongly non-linear in image space,
because ``g`` is.

* :class:`LatentClassifier`: ``f(x) = h(e(x))`` with ``h(z) = W z + b`` and ``e`` an inverse of the generator
  (the exact left inverse of :class:`~advbound.generators.InvertibleGenerator`, the projection ``z*(x)`` of
  eq. (5), or an encoder).  On the data, ``f(g(z)) = h(z)``; its exact ``r_Z`` is the distance from ``z`` to
  the nearest facet of its argmax cell (:meth:`LatentClassifier.latent_robustness`).
* :func:`fit_linear_classifier`: multinomial logistic regression with an L2 penalty, in float64 (L-BFGS on a
  strictly convex objective, hence one solution whatever the machine): ``h`` on labelled latent codes, or the
  best linear classifier on images (a linearity measure).
* :func:`decision_gradients` and :func:`direction_spread`: the unit image-space gradients of a classifier's
  decision margin over the data, and how much their directions vary (they are all parallel, up to sign,
  for a linear two-class classifier).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize
from torch import Tensor, nn

from .attacks.base import _check_output, evaluates
from .classifiers import AffineClassifier
from .modulus import as_array, integer_at_least, real_scalar


def _as_tensor(value: object, name: str) -> Tensor:
    """``value`` (a tensor, numpy array or nested sequence of real numbers) as a floating tensor; the
    floating dtype of a tensor or array is kept, other numbers become float64."""
    if isinstance(value, Tensor):
        out = value.detach()
    else:
        out = torch.from_numpy(np.array(as_array(value, name)))
    if not out.is_floating_point():
        out = out.to(torch.float64)
    return out


class LatentClassifier(nn.Module):
    """``x -> W e(x) + b``: a linear classifier ``h`` on the latent code ``e(x)`` of an image.

    Parameters
    ----------
    weight, bias : ``W`` (K, d) and ``b`` (K,) of ``h`` (K >= 2): tensors, numpy arrays or nested sequences.
    encoder : callable ``x (n, ...) -> z (n, d)``, an inverse of the generator on its range.

    ``forward(x)`` returns the logits of ``h`` at ``e(x)``; it is differentiable in ``x`` when the encoder is
    (an exact left inverse is; a projection found by optimisation is not).  :meth:`on_latent` evaluates
    ``h`` directly, which is ``f o g`` when ``e`` inverts ``g`` exactly.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, encoder: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        if not callable(encoder):
            raise ValueError(f"encoder must be a callable x -> z; got {type(encoder).__name__}")
        weight = _as_tensor(weight, "weight")
        self.head = AffineClassifier(weight, None if bias is None else _as_tensor(bias, "bias").to(weight.dtype))
        self.encoder = encoder
        self.latent_dim = int(weight.shape[1])
        self.n_classes = self.head.n_classes

    def on_latent(self, z: Tensor) -> Tensor:
        """The logits ``W z + b`` of ``h`` (that is, ``f o g`` at ``z`` for an exact inverse)."""
        return self.head(z)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        if not isinstance(z, Tensor) or z.shape != (x.shape[0], self.latent_dim):
            raise ValueError(f"encoder must return z of shape (n, {self.latent_dim}); got {getattr(z, 'shape', z)}")
        return self.head(z)

    def latent_robustness(self, z: Tensor) -> Tensor:
        """Exact ``r_Z`` at latent points ``z``: the distance to the nearest facet of the argmax cell of ``h``
        (:meth:`~advbound.classifiers.AffineClassifier.exact_robustness`)."""
        return self.head.exact_robustness(z)


@dataclass
class LinearFit:
    """Result of :func:`fit_linear_classifier`: ``weight`` (K, p), ``bias`` (K,), both float64 tensors,
    the penalised mean cross-entropy ``loss`` at the solution, the norm of its gradient ``grad_norm`` (0 at
    the exact optimum, for the standardised problem) and the training ``accuracy``."""

    weight: Tensor
    bias: Tensor
    loss: float
    grad_norm: float
    accuracy: float
    iterations: int

    def predict(self, features: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(np.asarray(features, dtype=np.float64)).flatten(1)
        return (x @ self.weight.T + self.bias).argmax(dim=1)


def _softmax_loss(params: np.ndarray, x: np.ndarray, onehot: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    n, p = x.shape
    k = onehot.shape[1]
    w, b = params[: k * p].reshape(k, p), params[k * p:]
    logits = x @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
    log_prob = logits - log_norm
    loss = -(onehot * log_prob).sum() / n + 0.5 * l2 * float((w * w).sum())
    resid = (np.exp(log_prob) - onehot) / n
    grad_w = resid.T @ x + l2 * w
    return loss, np.concatenate([grad_w.ravel(), resid.sum(axis=0)])


def fit_linear_classifier(features: Tensor | np.ndarray, labels: Tensor | np.ndarray, n_classes: int, *,
                          l2: float = 1e-3, max_iter: int = 2000, gtol: float = 1e-10) -> LinearFit:
    """Multinomial logistic regression: minimise over (W, b)

        (1/n) sum_i -log softmax(W x~_i + b)_{y_i} + (l2 / 2) ||W||_F^2,

    in float64 with L-BFGS, on standardised features x~ = (x - mean) / s, s the root mean square distance of
    the x_i to their mean (so ``l2`` does not depend on the units); the returned ``weight`` and ``bias`` act
    on the raw features.  For ``l2 > 0`` the objective is strictly convex in W, so the solution does not
    depend on the starting point or the machine beyond the tolerance ``gtol`` on the gradient (checked:
    ``grad_norm`` is returned).  ``features`` (n, ...) are flattened; ``labels`` are integers in [0, K).
    """
    x = as_array(features, "features").astype(np.float64)
    y = as_array(labels, "labels").ravel()
    k = integer_at_least(n_classes, "n_classes", 2)
    if x.ndim < 1 or x.shape[0] != y.size or y.size == 0:
        raise ValueError(f"features and labels must have the same number n >= 1 of rows; got features of shape "
                         f"{x.shape} and {y.size} labels")
    x = x.reshape(x.shape[0], -1)
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must be integers in [0, n_classes - 1] = [0, {k - 1}]")
    l2 = real_scalar(l2, "l2")
    if not (l2 > 0 and math.isfinite(l2)):
        raise ValueError(f"l2 (penalty) must be finite and > 0 (strict convexity); got {l2!r}")
    onehot = np.eye(k)[y]
    p = x.shape[1]
    # standardised features (x - mean) / scale, one scale for all features, so that l2 means the same
    # whatever the units of x; the solution is mapped back to the raw features at the end
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean())) or 1.0
    xs = (x - mean) / scale
    res = optimize.minimize(_softmax_loss, np.zeros(k * p + k), args=(xs, onehot, l2), jac=True, method="L-BFGS-B",
                            options={"maxiter": integer_at_least(max_iter, "max_iter", 1), "gtol": gtol,
                                     "ftol": 0.0, "maxcor": 20})
    loss, grad = _softmax_loss(res.x, xs, onehot, l2)
    ws = res.x[: k * p].reshape(k, p)
    w = torch.from_numpy(ws / scale)
    b = torch.from_numpy(res.x[k * p:] - ws @ mean / scale)
    fit = LinearFit(w, b, float(loss), float(np.linalg.norm(grad)), 0.0, int(res.nit))
    fit.accuracy = float((fit.predict(x).numpy() == y).mean())
    return fit


@evaluates("classifier")
def decision_gradients(classifier: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Unit image-space gradients of the decision margin ``l_y - l_j`` at each sample (y the predicted class,
    j the runner-up), shape (n, D) with D the number of pixels.

    A linear two-class classifier gives the same row (up to sign) everywhere; rows with a zero gradient are
    returned as zeros.  Like the attacks, the classifier runs in eval mode (BatchNorm's running statistics
    are neither used from the batch nor updated) and comes back as it was (:func:`~advbound.attacks.base.
    evaluates`).
    """
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor of shape (n, ...); got {getattr(x, 'shape', type(x))}")
    xa = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = _check_output(classifier(xa), x.shape[0], "classifier")
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise ValueError(f"classifier must return logits of shape (n, K >= 2); got {tuple(logits.shape)}")
        top2 = logits.topk(2, dim=1).indices
        margin = logits.gather(1, top2[:, :1]) - logits.gather(1, top2[:, 1:])
        (grad,) = torch.autograd.grad(margin.sum(), xa)
    grad = grad.flatten(1)
    norm = grad.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, grad / norm.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(grad))


@dataclass
class DirectionSpread:
    """How much a set of unit vectors ``u_i`` (directions, sign ignored) varies.

    ``principal_fraction`` is the largest eigenvalue of (1/n) sum_i u_i u_i^T: 1 when all are parallel, 1/D
    for D orthonormal ones.  ``mean_abs_cosine`` is the mean |cos| between each u_i and the principal
    eigenvector.  ``median_angle_deg`` is the median, over pairs i < j, of the angle between the lines
    spanned by u_i and u_j, in degrees (0 when all are parallel, 90 for orthogonal ones).
    """

    principal_fraction: float
    mean_abs_cosine: float
    median_angle_deg: float


def direction_spread(units: Tensor | np.ndarray) -> DirectionSpread:
    """The :class:`DirectionSpread` of the rows of ``units`` (normalised here; zero rows are refused)."""
    u = np.asarray(units.detach().cpu() if isinstance(units, Tensor) else units, dtype=np.float64)
    if u.ndim != 2 or u.shape[0] < 2:
        raise ValueError(f"units must have shape (n, D) with n >= 2; got {u.shape}")
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(u)):
        raise ValueError("units must be finite, non-zero vectors")
    u = u / norms
    _, s, vt = np.linalg.svd(u, full_matrices=False)
    cos_principal = np.abs(u @ vt[0])
    pairs = np.abs(u @ u.T)[np.triu_indices(u.shape[0], 1)]
    angles = np.degrees(np.arccos(np.clip(pairs, 0.0, 1.0)))
    return DirectionSpread(float(s[0] ** 2 / u.shape[0]), float(cos_principal.mean()), float(np.median(angles)))


__all__ = [
    "LatentClassifier",
    "LinearFit",
    "fit_linear_classifier",
    "decision_gradients",
    "DirectionSpread",
    "direction_spread",
]
