"""The generator's Jacobian ``J(z)`` and the pulled-back metric ``J^T J`` of the in-distribution attack.

``r_in`` measures a latent perturbation ``r`` by ``||g(z + r) - g(z)||_2 ~ ||J r||_2``: the Euclidean metric
of image space pulled back to the latent space.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.autograd import forward_ad as fwad

from .base import Metric, evaluates


@evaluates("generator")
def generator_gram(generator: Callable[[Tensor], Tensor], z: Tensor, *, max_chunk_elems: int = 2 ** 24) -> Tensor:
    """Pulled-back metric ``G(z) = J(z)^T J(z)`` per sample, shape (n, d, d), J the generator's Jacobian.

    Computed with forward-mode AD: the batch is replicated ``d`` times with the unit tangents, so one
    forward pass (chunked to about ``max_chunk_elems`` output numbers) gives every column of ``J``.
    """
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(f"z must be a floating-point tensor of shape (n, d); got {getattr(z, 'dtype', type(z))} "
                         f"{tuple(getattr(z, 'shape', ()))}")
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

