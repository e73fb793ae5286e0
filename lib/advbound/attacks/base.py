"""Shared plumbing of the attacks: argument checks, per-sample norms, the identity metric.

Every public attack validates its arguments here, so bad input gets one clear error naming the argument.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

#: ``metric(x)`` returns a solver ``a -> M^{-1} a`` applied along the last axis (see ``_deepfool_loop``)
Metric = Callable[[Tensor], Callable[[Tensor], Tensor]]
#: ``cost(x_adv, x0)``: the per-sample distance an attack minimises (L2 in its own space, or in image space)
CostFn = Callable[[Tensor, Tensor], Tensor]


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _identity_metric(x: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda a: a


def _predict(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    with torch.no_grad():
        return fn(x).argmax(dim=1)


def _module_device(module: Callable) -> Optional[torch.device]:
    if isinstance(module, nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return None


def _as_int(value: Any, name: str, low: int) -> int:
    """``value`` as a Python int >= ``low`` (numpy integers accepted, bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DeepFoolOptions:
    """The DeepFool settings shared by :func:`deepfool`, :func:`latent_deepfool` and
    :func:`in_distribution_attack` (one object, so a pipeline runs its three attacks alike).

    ``candidates``: None (all K classes) or k >= 2, the top-k classes of each sample's clean logits;
    ``overshoot`` >= 0 (finite); ``max_steps`` >= 1; ``refine``: shrink each found perturbation back to the
    boundary; ``batched_grads``: one vmapped backward for all candidates (same numbers).
    Pass them on with ``attack(..., **options.kwargs())``.
    """

    candidates: Optional[int] = None
    overshoot: float = 0.02
    max_steps: int = 50
    refine: bool = False
    batched_grads: bool = False

    def __post_init__(self) -> None:
        if self.candidates is not None:
            object.__setattr__(self, "candidates", _as_int(self.candidates, "candidates", 2))
        ov = self.overshoot
        if isinstance(ov, bool) or not isinstance(ov, numbers.Real) or not (0 <= float(ov) < float("inf")):
            raise ValueError(f"overshoot must be a finite number >= 0; got {ov!r}")
        object.__setattr__(self, "overshoot", float(ov))
        object.__setattr__(self, "max_steps", _as_int(self.max_steps, "max_steps", 1))
        for flag in ("refine", "batched_grads"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


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


def _box(box: Optional[Sequence[float]], x: Tensor, name: str) -> Optional[tuple[float, float]]:
    """Validate a ``(low, high)`` box and check that the clean input ``x`` lies inside it."""
    if box is None:
        return None
    try:
        lo, hi = (float(b) for b in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be a pair (low, high) of numbers; got {box!r}") from None
    if not lo < hi:
        raise ValueError(f"box must be (low, high) with low < high; got {box!r}")
    x_lo, x_hi = float(x.min()), float(x.max())
    if x_lo < lo or x_hi > hi:
        raise ValueError(f"{name} must lie inside box = ({lo:g}, {hi:g}); its values range over "
                         f"[{x_lo:g}, {x_hi:g}]")
    return lo, hi
