"""Upper bounds on the Lipschitz constant of a network generator: a modulus omega(t) = L t (Remark 1) that
holds for every pair of latent points, unlike the estimated modulus of :mod:`advbound.modulus_estimation`.

A feed-forward network is a composition ``s_k o A_k o ... o s_1 o A_1`` of affine maps ``A_k`` and
activations ``s_k`` with Lipschitz constants ``c_k``, so

    Lip(g) <= prod_k ||A_k||_2 c_k.

Consecutive affine layers (``Linear``, convolutions, transposed convolutions, ``BatchNorm`` in eval mode,
``Flatten``/``Identity``) are merged into one block and the operator norm of the block is taken, which is
never larger than the product of its parts.  Activations: ReLU, Tanh, LeakyReLU with slope <= 1 (constant 1),
Sigmoid (1/4).  The DCGAN generator of :mod:`advbound.models` ends with ``(tanh + 1) / 2``, constant 1/2.

Each block's norm is given two ways:

* ``power``: power iteration on ``A^T A`` (``A^T`` by autograd), in float64, from a seeded random start.
  It approaches ``||A||_2`` from below; it is run until the relative change is below ``tol``.
* ``schur``: ``sqrt(||B||_1 ||B||_inf)`` for ``B`` the product of the entrywise absolute values of the
  block's factors (``|A| <= B`` entrywise).  Schur's test makes it an upper bound on ``||A||_2`` without any
  convergence question; it is looser.

Both products are upper bounds on the Lipschitz constant (the first up to the power iteration's tolerance),
usually far above the generator's actual local stretch: the bound multiplies worst cases of every layer.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .attacks.base import eval_mode
from .modulus import LipschitzModulus, check_seed, integer_at_least, real_scalar

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
           nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Flatten, nn.Unflatten, nn.Identity)


def _activation_constant(module: nn.Module) -> float | None:
    if isinstance(module, (nn.ReLU, nn.Tanh)):
        return 1.0
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(float(module.negative_slope)))
    if isinstance(module, nn.Sigmoid):
        return 0.25
    return None


@dataclass
class LipschitzBound:
    """Upper bounds on a network's Lipschitz constant (see the module docstring).

    ``power`` multiplies the power-iteration norms of the affine blocks, ``schur`` their Schur-test bounds;
    both include the activations' constants and ``scale``.  ``blocks`` lists per block its layer names and
    the two norms.
    """

    power: float
    schur: float
    scale: float = 1.0
    blocks: list[tuple[str, float, float]] = field(default_factory=list)

    def modulus(self, which: str = "power") -> LipschitzModulus:
        """The modulus omega(t) = L t with L = ``power`` or ``schur``."""
        if which not in ("power", "schur"):
            raise ValueError(f"which must be 'power' or 'schur'; got {which!r}")
        return LipschitzModulus(getattr(self, which))


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten(child)]
    return [module]


def _run(layers: list[nn.Module], x: Tensor) -> Tensor:
    for layer in layers:
        x = layer(x)
    return x


def power_iteration_norm(layers: list[nn.Module], input_shape: tuple[int, ...], *, max_iter: int = 1000,
                         tol: float = 1e-10, seed: int = 0) -> float:
    """``||A||_2`` of the linear part ``A v = block(v) - block(0)`` of an affine block (layers in float64,
    eval mode), by power iteration on ``A^T A`` from a seeded Gaussian start; stops when the estimate changes
    by less than ``tol`` (relative) or after ``max_iter`` steps."""
    gen = torch.Generator().manual_seed(check_seed(seed))
    v = torch.randn((1, *input_shape), generator=gen, dtype=torch.float64)
    v = v / v.norm()
    with torch.no_grad():
        offset = _run(layers, torch.zeros_like(v))
    sigma = 0.0
    for _ in range(integer_at_least(max_iter, "max_iter", 1)):
        va = v.detach().requires_grad_(True)
        with torch.enable_grad():
            av = _run(layers, va) - offset
            (atav,) = torch.autograd.grad(av, va, grad_outputs=av.detach())
        new = float(av.detach().norm())
        norm = atav.norm()
        if norm == 0:
            return 0.0
        v = atav / norm
        if abs(new - sigma) <= tol * new:
            return new
        sigma = new
    return sigma


def _absolute_copy(layers: list[nn.Module]) -> list[nn.Module]:
    """The same layers with every linear factor replaced by its entrywise absolute value and no offset."""
    out = copy.deepcopy(layers)
    with torch.no_grad():
        for layer in out:
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                if layer.running_mean is None:
                    raise ValueError("a BatchNorm layer without running statistics is not affine per sample")
                layer.running_mean.zero_()
            weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
            if isinstance(weight, Tensor):
                weight.abs_()
            if isinstance(bias, Tensor):
                bias.zero_()
    return out


def schur_norm_bound(layers: list[nn.Module], input_shape: tuple[int, ...]) -> float:
    """``sqrt(max row sum * max column sum)`` of ``B``, the product of the absolute values of the block's
    linear factors: an upper bound on ``||A||_2`` (Schur's test, since ``|A| <= B`` entrywise)."""
    absl = _absolute_copy(layers)
    ones = torch.ones((1, *input_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        rows = _run(absl, ones)
        (cols,) = torch.autograd.grad(rows, ones, grad_outputs=torch.ones_like(rows))
    return math.sqrt(float(rows.detach().max()) * float(cols.max()))


def lipschitz_bound(network: nn.Module, input_shape: tuple[int, ...], *, scale: float = 1.0,
                    max_iter: int = 1000, tol: float = 1e-10, seed: int = 0) -> LipschitzBound:
    """Upper bounds on the Lipschitz constant of ``scale * network`` (an ``nn.Sequential`` of affine layers
    and 1-Lipschitz-type activations) for inputs of shape ``input_shape`` (without the batch dimension).

    The network is copied to float64 and used in eval mode (BatchNorm with its running statistics); it is not
    modified.  Raises ``ValueError`` naming a layer that is neither affine nor a known activation.
    """
    scale = real_scalar(scale, "scale")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be finite and > 0; got {scale!r}")
    net = copy.deepcopy(network).to(torch.float64)
    layers = _flatten(net)
    result = LipschitzBound(scale, scale, scale)
    shape = tuple(int(s) for s in input_shape)
    block: list[nn.Module] = []

    def close() -> None:
        nonlocal shape
        if not block:
            return
        p = power_iteration_norm(block, shape, max_iter=max_iter, tol=tol, seed=seed)
        s = schur_norm_bound(block, shape)
        result.power *= p
        result.schur *= s
        result.blocks.append((" -> ".join(type(m).__name__ for m in block), p, s))
        with torch.no_grad():
            shape = tuple(_run(block, torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])
        block.clear()

    with eval_mode(net), torch.no_grad():
        for layer in layers:
            if isinstance(layer, _AFFINE):
                block.append(layer)
                continue
            const = _activation_constant(layer)
            if const is None:
                raise ValueError(f"lipschitz_bound: layer {type(layer).__name__} is neither affine nor a known "
                                 "activation (ReLU, LeakyReLU, Tanh, Sigmoid)")
            close()
            result.power *= const
            result.schur *= const
        close()
    return result


def dcgan_lipschitz_bound(generator: nn.Module, **kwargs) -> LipschitzBound:
    """:func:`lipschitz_bound` of a :class:`~advbound.models.DCGANGenerator`: its ``net`` on inputs of shape
    (d, 1, 1), times 1/2 for the output map ``(tanh + 1) / 2``."""
    net, latent_dim = getattr(generator, "net", None), getattr(generator, "latent_dim", None)
    if not isinstance(net, nn.Sequential) or not isinstance(latent_dim, int):
        raise ValueError("generator must be a DCGANGenerator (with .net and .latent_dim)")
    return lipschitz_bound(net, (latent_dim, 1, 1), scale=0.5, **kwargs)


__all__ = ["LipschitzBound", "lipschitz_bound", "dcgan_lipschitz_bound", "power_iteration_norm", "schur_norm_bound"]
