"""Monte Carlo estimates with their standard errors, for checking the bounds against sampled robustness."""

from __future__ import annotations

import numpy as np
import torch


def probability_at_most(robustness: np.ndarray | torch.Tensor, eta: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical P(r <= eta) for each eta, with the binomial standard error sqrt(p (1 - p) / n)."""
    r = robustness.detach().cpu().numpy() if isinstance(robustness, torch.Tensor) else np.asarray(robustness)
    r = r.ravel()
    if r.size == 0:
        raise ValueError("robustness must contain at least one sample")
    e = np.atleast_1d(np.asarray(eta, dtype=float))
    p = (r[None, :] <= e[:, None]).mean(axis=1)
    return p, np.sqrt(p * (1.0 - p) / r.size)


def class_proportions(labels: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """Empirical class probabilities p_i = P(f(g(z)) = i) from sampled labels."""
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.size == 0:
        raise ValueError("labels must contain at least one sample")
    if lab.min() < 0 or lab.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes - 1}]")
    return np.bincount(lab.ravel().astype(np.int64), minlength=n_classes) / lab.size


__all__ = ["probability_at_most", "class_proportions"]
