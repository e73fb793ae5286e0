"""Shared plumbing of the attacks: argument checks, evaluation mode, per-sample norms, the identity metric.

Every public attack validates its arguments here, so bad input gets one clear error naming the argument,
and runs its models through :func:`eval_mode`, so a user's model leaves an attack as it came in.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

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


def _module_device(module: Callable) -> torch.device | None:
    if isinstance(module, nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for buffer in module.buffers():
            return buffer.device
    return None


def _module_dtype(module: Callable) -> torch.dtype | None:
    if isinstance(module, nn.Module):
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return None


@contextmanager
def eval_mode(*models: Any) -> Iterator[None]:
    """Run the ``nn.Module`` among ``models`` in evaluation mode with frozen parameters, then give every
    submodule back its own mode and every parameter its own ``requires_grad``.

    In evaluation mode BatchNorm uses its running statistics and never updates them (nor
    ``num_batches_tracked``), and Dropout is the identity, so each sample is classified on its own and
    deterministically, as the attacks assume.  Inside, no parameter requires grad, so a backward pass (the
    attacks differentiate with respect to their inputs only) never reaches, nor accumulates into, the
    parameters' ``.grad``.  On exit each submodule's ``training`` flag and each parameter's ``requires_grad``
    are restored exactly (a model with some submodules frozen in eval mode keeps them so), also when the body
    raises.  Objects that are not modules (plain functions) are left alone: put the modules they call in eval
    mode.
    """
    saved: dict[int, tuple[nn.Module, bool]] = {}
    params: dict[int, tuple[nn.Parameter, bool]] = {}
    tops = [m for m in models if isinstance(m, nn.Module)]
    for top in tops:
        for sub in top.modules():
            saved.setdefault(id(sub), (sub, sub.training))
        for param in top.parameters():
            params.setdefault(id(param), (param, param.requires_grad))
    try:
        for top in tops:
            top.eval()
        for param, _ in params.values():
            param.requires_grad_(False)
        yield
    finally:
        for sub, flag in saved.values():
            sub.training = flag
        for param, flag in params.values():
            param.requires_grad_(flag)


_F = TypeVar("_F", bound=Callable[..., Any])


def _usable_tensor(value: Any) -> Any:
    """An inference tensor (made under ``torch.inference_mode``) as a normal tensor with the same values;
    anything else unchanged.  Autograd refuses inference tensors, and the attacks differentiate through
    their inputs."""
    if isinstance(value, Tensor) and value.is_inference():
        return value.clone()
    return value


def evaluates(*names: str) -> Callable[[_F], _F]:
    """Decorator of every attack: call the function with its arguments ``names`` (models) in
    :func:`eval_mode`, and its tensor arguments made under ``torch.inference_mode`` as normal tensors.

    Calling an attack *inside* ``torch.inference_mode()`` raises a ``RuntimeError`` saying so: no gradient
    can be computed there."""

    def wrap(fn: _F) -> _F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if torch.is_inference_mode_enabled():
                raise RuntimeError(f"{fn.__name__} cannot run inside torch.inference_mode(): it needs gradients "
                                   "with respect to its inputs; call it outside that block (tensors made there "
                                   "are accepted)")
            bound = signature.bind_partial(*args, **kwargs)
            for key, value in bound.arguments.items():
                bound.arguments[key] = _usable_tensor(value)
            with eval_mode(*(bound.arguments.get(name) for name in names)):
                return fn(*bound.args, **bound.kwargs)

        return inner  # type: ignore[return-value]

    return wrap


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

    candidates: int | None = None
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


def _rescaled(grads: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Linearised constraints ``h + w . r = 0`` (gradients ``w`` along the last axis of ``grads``, values ``h``)
    divided by ``max_i |w_i|`` wherever ``||w||^2`` overflows (or underflows to 0) in the dtype; elsewhere
    unchanged (nothing is divided).

    A DeepFool step ``-h M^{-1} w / (w^T M^{-1} w)`` and distance ``|h| / sqrt(w^T M^{-1} w)`` do not change
    when ``h`` and ``w`` are scaled together, so logits scaled by 1e20 in float32 (squared gradient norms
    about 1e40, above float32's 3.4e38) give the steps of the unscaled model instead of overflowing."""
    sq = grads.square().sum(dim=-1)
    big = grads.abs().amax(dim=-1)
    bad = (~torch.isfinite(sq) | ((sq == 0) & (big > 0))) & torch.isfinite(big) & (big > 0)
    if not bool(bad.any()):
        return grads, h
    scale = torch.where(bad, big, torch.ones_like(big))
    return grads / scale[..., None], h / scale


def _check_module_matches(name: str, x: Tensor, module: Callable, module_name: str) -> None:
    """``x`` must sit on the device of ``module``'s parameters and have their floating dtype."""
    device = _module_device(module)
    if device is not None and device != x.device:
        raise ValueError(f"{name} is on {x.device} but {module_name}'s parameters are on {device}; "
                         f"move them to the same device")
    dtype = _module_dtype(module)
    if dtype is not None and dtype != x.dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but {module_name}'s parameters are {dtype}; convert one of "
                         f"them (e.g. {name}.to({dtype}) or {module_name}.to({x.dtype}))")


def _check_input(name: str, x: Tensor, module: Callable, module_name: str) -> None:
    if not callable(module):
        raise ValueError(f"{module_name} must be callable (an nn.Module or a function); got {type(module).__name__}")
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor with a leading batch dimension; got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 1 and a feature dimension; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    bad = torch.nonzero(~torch.isfinite(x.detach().flatten(1)).all(dim=1)).flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise ValueError(f"{name} must be finite; {len(bad)} of its {x.shape[0]} samples contain NaN or inf "
                         f"(rows {shown}): remove or replace them")
    _check_module_matches(name, x, module, module_name)


def _check_output(out: Any, n: int, who: str) -> Tensor:
    """``out`` (what ``who`` returned for a batch of ``n``) must be a floating tensor with ``n`` rows."""
    if not isinstance(out, Tensor):
        raise ValueError(f"{who} must return a torch.Tensor; got {type(out).__name__} (for a model that returns "
                         f"several outputs, pass a function that picks the logits, e.g. lambda x: model(x)[0])")
    if out.dim() < 1 or out.shape[0] != n:
        transposed = out.dim() == 2 and out.shape[1] == n and out.shape[0] > 1
        hint = " (transposed? logits must have shape (n, K))" if transposed else ""
        raise ValueError(f"{who} must return one row per sample (a batch of {n} gives {n} rows); "
                         f"got shape {tuple(out.shape)} (shape mismatch){hint}")
    if not out.is_floating_point():
        raise ValueError(f"{who} must return floating-point values; got dtype {out.dtype}")
    return out


def _check_generator(generator: Callable[[Tensor], Tensor], classifier: Callable, z: Tensor) -> None:
    """The generator's output on one latent sample must be a tensor the classifier can take."""
    if not callable(classifier):
        raise ValueError(f"classifier must be callable (an nn.Module or a function); got {type(classifier).__name__}")
    with torch.no_grad():
        out = _check_output(generator(z[:1].detach()), 1, "generator")
    _check_module_matches("generator(z)", out, classifier, "classifier")


def _check_differentiable(fn: Callable[[Tensor], Tensor], x0: Tensor, n_classes: int, who: str, name: str) -> None:
    """One sample through ``fn`` with gradients: logits of shape (1, K) with an autograd graph back to the input.

    A batch of one also catches logits returned transposed, (K, n), when n happens to equal K.
    """
    xa = x0[:1].detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _check_output(fn(xa), 1, who)
        if _check_logits(logits, 1, who) != n_classes:
            raise ValueError(f"{who} returned {n_classes} logits per sample for a batch of {x0.shape[0]} but "
                             f"{logits.shape[1]} for a batch of 1: it must return logits of shape (n, K) "
                             f"(are they transposed?)")
        if logits.requires_grad:
            (grad,) = torch.autograd.grad(logits.sum(), xa, allow_unused=True)
        else:
            grad = None
    if grad is None:
        raise ValueError(f"{who} has no autograd graph back to its input {name}: its logits do not depend "
                         f"differentiably on {name} (a .detach(), .numpy() or torch.no_grad() inside?); the attacks "
                         f"need the gradients of the logits with respect to {name}")


def _check_logits(logits: Tensor, n: int, who: str) -> int:
    _check_output(logits, n, who)
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ValueError(f"{who} must return logits of shape (n, K) = ({n}, K) for a batch of {n}; "
                         f"got {tuple(logits.shape)} (shape mismatch)")
    if logits.shape[1] < 2:
        raise ValueError(f"{who} must return at least K = 2 logits per sample; got {logits.shape[1]}")
    return int(logits.shape[1])


def _candidate_table(logits0: Tensor, candidates: int | None) -> Tensor:
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


def _box(box: Sequence[float] | None, x: Tensor, name: str) -> tuple[float, float] | None:
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
