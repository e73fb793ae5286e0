"""Upper bounds on the Lipschitz constant of a network generator: a modulus omega(t) = L t (Remark 1) that
holds for every pair of latent points, unlike the estimated modulus of :mod:`advbound.modulus_estimation`.

A feed-forward network is a composition ``s_k o A_k o ... o s_1 o A_1`` of affine maps ``A_k`` and
activations ``s_k`` with Lipschitz constants ``c_k``, so

    Lip(g) <= prod_k ||A_k||_2 c_k.

Consecutive affine layers (``Linear``, convolutions, transposed convolutions, ``BatchNorm`` in eval mode,
``Flatten``/``Identity``) are merged into one block and the operator norm of the block is taken, which is
never larger than the product of its parts.  Activations: ReLU, Tanh, LeakyReLU with slope <= 1 (constant 1),
Sigmoid (1/4).  The DCGAN generator of :mod:`advbound.models` ends with ``(tanh + 1) / 2``, constant 1/2.

Each block's norm is given three ways:

* ``power``: power iteration on ``A^T A`` (``A^T`` by autograd), in float64, from a seeded random start.
  It approaches ``||A||_2`` **from below** and stops at a tolerance, so it is an *estimate*, not a bound: the
  product of these values is an estimate of the product of the block norms, possibly below it.
* ``certified``: a proven upper bound on ``||A||_2``, the smaller of (a) the exact largest singular value of
  the block's matrix (:func:`exact_block_norm`: the matrix is built column by column and the largest
  eigenvalue of its smaller Gram matrix taken, exact up to float64 rounding), computed when its cost
  ``min(m, n)^2 max(m, n)`` is below ``exact_max_flops``, and (b) for a (transposed) 2-d convolution followed
  by batch normalisation, the Fourier bound of :func:`conv_fourier_bound` (the norm of the same convolution
  made circular on a torus large enough that nothing wraps around).
* ``schur``: ``sqrt(||B||_1 ||B||_inf)`` for ``B`` the product of the entrywise absolute values of the
  block's factors (``|A| <= B`` entrywise).  Schur's test makes it an upper bound on ``||A||_2`` without any
  convergence question; it is much looser.  Where neither (a) nor (b) applies, ``certified`` is ``schur``.

The products ``certified`` and ``schur`` are certified upper bounds on the Lipschitz constant (up to float64
rounding), usually far above the generator's actual local stretch: the bound multiplies worst cases of
every layer.
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


@dataclass(frozen=True)
class BlockNorm:
    """The operator norm of one affine block, three ways (see the module docstring): ``power`` (an estimate
    from below), ``certified`` (a proven upper bound; ``method`` says which: ``"exact SVD"``, ``"Fourier"`` or
    ``"Schur"``) and ``schur`` (a looser proven upper bound)."""

    layers: str
    power: float
    certified: float
    schur: float
    method: str


@dataclass
class LipschitzBound:
    """Estimates and upper bounds of a network's Lipschitz constant (see the module docstring).

    ``power`` multiplies the power-iteration norms of the affine blocks (an *estimate*, approached from
    below), ``certified`` their certified norms (a proven upper bound) and ``schur`` their Schur-test bounds
    (a looser proven upper bound); all include the activations' constants and ``scale``.  ``blocks`` lists
    each block's :class:`BlockNorm`.
    """

    power: float
    schur: float
    scale: float = 1.0
    blocks: list[BlockNorm] = field(default_factory=list)
    certified: float = math.inf

    def modulus(self, which: str = "certified") -> LipschitzModulus:
        """The modulus omega(t) = L t (Remark 1) with L = ``certified`` (default: a valid modulus),
        ``schur`` (valid, looser) or ``power`` (an estimate, possibly below the Lipschitz constant)."""
        if which not in ("certified", "power", "schur"):
            raise ValueError(f"which must be 'certified', 'power' or 'schur'; got {which!r}")
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


def _linear_part(layers: list[nn.Module], input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(n_in, n_out) of the block's matrix."""
    with torch.no_grad():
        out = _run(layers, torch.zeros((1, *input_shape), dtype=torch.float64))
    return math.prod(input_shape), out[0].numel()


def exact_block_norm(layers: list[nn.Module], input_shape: tuple[int, ...], *, chunk: int = 512) -> float:
    """The exact ``||A||_2`` of the linear part ``A v = block(v) - block(0)`` of an affine block (layers in
    float64, eval mode): the matrix is built from the smaller side (columns ``A e_j`` by forward passes when
    there are fewer inputs than outputs, rows ``A^T e_i`` by backward passes otherwise), and ``||A||_2`` is the
    square root of the largest eigenvalue of the small Gram matrix (``torch.linalg.eigvalsh``, float64).
    Costs ``min(m, n)^2 max(m, n)`` operations and ``min(m, n) max(m, n)`` numbers of memory."""
    n_in, n_out = _linear_part(layers, input_shape)
    with torch.no_grad():
        offset = _run(layers, torch.zeros((1, *input_shape), dtype=torch.float64)).reshape(1, -1)
    parts = []
    if n_in <= n_out:
        for start in range(0, n_in, chunk):
            idx = torch.arange(start, min(start + chunk, n_in))
            basis = torch.zeros((idx.numel(), n_in), dtype=torch.float64)
            basis[torch.arange(idx.numel()), idx] = 1.0
            with torch.no_grad():
                parts.append(_run(layers, basis.reshape(-1, *input_shape)).reshape(idx.numel(), -1) - offset)
    else:
        for start in range(0, n_out, chunk):
            idx = torch.arange(start, min(start + chunk, n_out))
            basis = torch.zeros((idx.numel(), n_out), dtype=torch.float64)
            basis[torch.arange(idx.numel()), idx] = 1.0
            v = torch.zeros((idx.numel(), *input_shape), dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                out = _run(layers, v).reshape(idx.numel(), -1)
                (rows,) = torch.autograd.grad(out, v, grad_outputs=basis)
            parts.append(rows.reshape(idx.numel(), -1))
    small = torch.cat(parts)                      # (min(m, n), max(m, n)): A^T or A
    gram = small @ small.T
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


def _batchnorm_scale(layer: nn.modules.batchnorm._BatchNorm) -> Tensor:
    var = layer.running_var
    if var is None:
        raise ValueError("a BatchNorm layer without running statistics is not affine per sample")
    scale = 1.0 / torch.sqrt(var.double() + float(layer.eps))
    if layer.weight is not None:
        scale = scale * layer.weight.detach().double()
    return scale


def _polyphase_bound(weight: Tensor, size: tuple[int, int], stride: tuple[int, int], scale_in: Tensor,
                     scale_out: Tensor) -> float:
    """``max_w sigma_max`` of the polyphase symbol of ``diag(scale_out) T diag(scale_in)``, ``T`` the full
    (uncropped) transposed convolution with ``weight`` (in, out, kh, kw) and ``stride`` on inputs of ``size``,
    made circular on the smallest torus on which nothing wraps around (see :func:`conv_fourier_bound`)."""
    kh, kw = weight.shape[2:]
    sh, sw = stride
    torus = [n + -(-k // st) - 1 for n, k, st in zip(size, (kh, kw), stride, strict=True)]
    w = weight * scale_in[:, None, None, None] * scale_out[None, :, None, None]
    symbols = []
    for r1 in range(min(sh, kh)):
        for r2 in range(min(sw, kw)):
            coeffs = torch.fft.fft2(w[:, :, r1::sh, r2::sw], s=torus)     # (in, out, N1, N2)
            symbols.append(coeffs.permute(2, 3, 1, 0))                    # (N1, N2, out, in): y_r = M_r^T x
    stacked = torch.cat(symbols, dim=2)                        # (N1, N2, phases * out, in)
    return float(torch.linalg.matrix_norm(stacked, ord=2).max())


def conv_fourier_bound(layers: list[nn.Module], input_shape: tuple[int, ...]) -> float | None:
    """A proven upper bound on ``||A||_2`` for a block made of one ``Conv2d`` or ``ConvTranspose2d``
    (``groups = 1``, ``dilation = 1``, zero padding) followed by any number of ``BatchNorm2d`` (eval mode);
    ``None`` for any other block.

    A transposed convolution with stride ``s`` and padding ``p`` keeps a window (norm <= 1) of its *full*
    output, and each of the ``s x s`` phases ``u = s m + r`` of the full output is an ordinary convolution of
    the input with the sub-kernel ``W[:, :, r::s]`` (the polyphase decomposition).  On an ``N x N`` torus
    with ``N >= n + ceil(k / s) - 1`` nothing wraps around, so ``||A|| <= ||C||`` for the circular map ``C``,
    which the 2-d Fourier transform diagonalises: ``||C|| = max_w sigma_max(P(w))``, ``P(w)`` the stacked
    ``(s^2 c_out) x c_in`` matrices of sub-kernel Fourier coefficients at the torus frequencies ``w``
    (Sedghi, Gupta and Long, "The singular values of convolutional layers", ICLR 2019, for the circular
    case).  A (strided) convolution is the adjoint of the transposed convolution with the same weight, with
    the same norm.  Batch normalisation in eval mode is a per-channel scale ``D`` (its offset does not
    count), folded into the weight.
    """
    if not layers or not isinstance(layers[0], (nn.Conv2d, nn.ConvTranspose2d)):
        return None
    conv = layers[0]
    if not all(isinstance(m, nn.BatchNorm2d) for m in layers[1:]):
        return None
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str):
        return None
    if len(input_shape) != 3:
        raise ValueError(f"input_shape of a 2-d convolution must be (channels, height, width); got {input_shape}")
    weight = conv.weight.detach().double()          # ConvTranspose2d: (in, out, kh, kw); Conv2d: (out, in, kh, kw)
    bn = torch.ones(weight.shape[1] if isinstance(conv, nn.ConvTranspose2d) else weight.shape[0],
                    dtype=torch.float64)
    for layer in layers[1:]:
        assert isinstance(layer, nn.BatchNorm2d)
        bn = bn * _batchnorm_scale(layer)
    stride = (int(conv.stride[0]), int(conv.stride[1]))
    if isinstance(conv, nn.ConvTranspose2d):
        size = (int(input_shape[1]), int(input_shape[2]))
        return _polyphase_bound(weight, size, stride, torch.ones(weight.shape[0], dtype=torch.float64), bn)
    # Conv2d: the adjoint is the transposed convolution with the same weight, acting on the conv's output
    with torch.no_grad():
        out = _run([conv], torch.zeros((1, *input_shape), dtype=torch.float64)).shape[2:]
    return _polyphase_bound(weight, (int(out[0]), int(out[1])), stride, bn,
                            torch.ones(weight.shape[1], dtype=torch.float64))


def certified_block_norm(layers: list[nn.Module], input_shape: tuple[int, ...], *,
                         exact_max_flops: float = 1e10) -> tuple[float, str]:
    """A proven upper bound on ``||A||_2`` of an affine block and the method that gave it: the smallest of
    :func:`exact_block_norm` (when ``min(m, n)^2 max(m, n) <= exact_max_flops``), :func:`conv_fourier_bound`
    (when the block is a convolution with batch norms) and :func:`schur_norm_bound` (always)."""
    n_in, n_out = _linear_part(layers, input_shape)
    options = [(schur_norm_bound(layers, input_shape), "Schur")]
    fourier = conv_fourier_bound(layers, input_shape)
    if fourier is not None:
        options.append((fourier, "Fourier"))
    if min(n_in, n_out) ** 2 * max(n_in, n_out) <= exact_max_flops:
        options.append((exact_block_norm(layers, input_shape), "exact SVD"))
    return min(options)


def lipschitz_bound(network: nn.Module, input_shape: tuple[int, ...], *, scale: float = 1.0,
                    max_iter: int = 1000, tol: float = 1e-10, seed: int = 0,
                    exact_max_flops: float = 1e10) -> LipschitzBound:
    """Estimates and upper bounds of the Lipschitz constant of ``scale * network`` (an ``nn.Sequential`` of
    affine layers and 1-Lipschitz-type activations) for inputs of shape ``input_shape`` (without the batch
    dimension); see the module docstring and :class:`LipschitzBound`.

    The network is copied to float64 and used in eval mode (BatchNorm with its running statistics); it is not
    modified.  Raises ``ValueError`` naming a layer that is neither affine nor a known activation.
    """
    scale = real_scalar(scale, "scale")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be finite and > 0; got {scale!r}")
    net = copy.deepcopy(network).to(torch.float64)
    layers = _flatten(net)
    result = LipschitzBound(scale, scale, scale, certified=scale)
    shape = tuple(int(s) for s in input_shape)
    block: list[nn.Module] = []

    def close() -> None:
        nonlocal shape
        if not block:
            return
        p = power_iteration_norm(block, shape, max_iter=max_iter, tol=tol, seed=seed)
        s = schur_norm_bound(block, shape)
        c, method = certified_block_norm(block, shape, exact_max_flops=exact_max_flops)
        result.power *= p
        result.schur *= s
        result.certified *= c
        result.blocks.append(BlockNorm(" -> ".join(type(m).__name__ for m in block), p, c, s, method))
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
            result.certified *= const
        close()
    return result


def dcgan_lipschitz_bound(generator: nn.Module, **kwargs) -> LipschitzBound:
    """:func:`lipschitz_bound` of a :class:`~advbound.models.DCGANGenerator`: its ``net`` on inputs of shape
    (d, 1, 1), times 1/2 for the output map ``(tanh + 1) / 2``."""
    net, latent_dim = getattr(generator, "net", None), getattr(generator, "latent_dim", None)
    if not isinstance(net, nn.Sequential) or not isinstance(latent_dim, int):
        raise ValueError("generator must be a DCGANGenerator (with .net and .latent_dim)")
    return lipschitz_bound(net, (latent_dim, 1, 1), scale=0.5, **kwargs)


__all__ = ["BlockNorm", "LipschitzBound", "certified_block_norm", "conv_fourier_bound", "dcgan_lipschitz_bound",
           "exact_block_norm", "lipschitz_bound", "power_iteration_norm", "schur_norm_bound"]
