"""Training of the Section 5 models: the DCGAN generator g and the classifiers f of Tables 1-2, optionally
with PGD adversarial training (Madry et al. [10], the last column of Table 2).

Reproducibility and interruption:

* every source of randomness is seeded from ``seed`` and the epoch number (shuffling, initial weights via
  the caller, PGD random starts, GAN noise), so a resumed run continues exactly as an uninterrupted one;
* a checkpoint (:mod:`advbound.checkpoints`) is written atomically after every epoch; a run given an
  existing checkpoint of the same configuration (recipe, data, parameter shapes) resumes from it, and any
  other file raises :class:`~advbound.checkpoints.CheckpointError` before anything is loaded;
* a non-finite loss stops the run with :class:`TrainingDivergedError` before that step is taken, so the last
  checkpoint (of the last finite epoch) is never overwritten by diverged weights.

Global state: the training functions seed the global torch RNG (dropout, PGD random starts, augmentation,
GAN noise) inside :func:`torch.random.fork_rng`, so the caller's RNG state is the same after the call as
before it.  They move the models to ``device``, train them in place and leave them in eval mode.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .attacks.base import _module_device, _module_dtype, eval_mode
from .checkpoints import CheckpointError, _architecture, _resume, load_checkpoint, save_checkpoint
from .data import ImageData
from .modulus import check_seed


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite (the step was not taken; earlier checkpoints are intact)."""


def _is_whole(value: Any) -> bool:
    """An integer, or a float with an integer value (numpy scalars included; bools excluded)."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
            and float(value).is_integer())


def latent_dimension(generator: nn.Module) -> int:
    """The generator's ``latent_dim`` (the d of z ~ N(0, I_d)), checked to be an integer >= 1."""
    d: Any = getattr(generator, "latent_dim", None)
    if not _is_whole(d) or d < 1:
        raise ValueError(f"generator must have an integer attribute latent_dim >= 1 (the d of z ~ N(0, I_d)); "
                         f"got {getattr(generator, 'latent_dim', '<absent>')!r}")
    return int(d)


def resolve_device(device: str | torch.device | None = None, name: str = "device") -> torch.device:
    """``device`` if given, else CUDA when available, else CPU.

    A given device must be one this machine can run on: the CPU, an existing CUDA device (a driver and a GPU
    present), or MPS where available.  Anything else (a typo, ``"meta"``, ``"cuda"`` without a driver,
    ``"cuda:3"`` on a one-GPU machine) raises ``ValueError`` naming ``name``, before any work starts."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be a torch.device or a string such as 'cpu', 'cuda' or 'cuda:1'; "
                         f"got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {dev} was asked for but CUDA is not available on this machine (no driver or "
                             "no GPU); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {dev} does not exist; this machine has {torch.cuda.device_count()} CUDA "
                             "device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{name}: {dev} was asked for but MPS is not available on this machine; use cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be cpu, cuda, cuda:N or mps (a device that computes); got {str(device)!r}")
    return dev


def _finite_loss(loss: torch.Tensor, what: str, epoch: int, batch: int) -> float:
    """``loss`` as a float, or :class:`TrainingDivergedError` when it is NaN or infinite."""
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingDivergedError(f"{what} became {value} at epoch {epoch + 1}, batch {batch + 1}; the step was "
                                    "not taken and no checkpoint was written for this epoch (try a smaller lr)")
    return value


@contextmanager
def _private_global_rng(device: torch.device) -> Iterator[None]:
    """Seed the global torch RNG freely inside; the caller's RNG state (CPU, and ``device`` if CUDA) comes back."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def _save_epoch(ckpt: Path | None, config: dict[str, Any], epoch: int, history: list[dict[str, float]],
                parts: dict[str, Any]) -> None:
    if ckpt is not None:
        save_checkpoint(ckpt, {"config": config, "epoch": epoch, "history": history,
                               **{name: obj.state_dict() for name, obj in parts.items()}})


# --------------------------------------------------------------------------------------------------
# PGD (Madry et al. [10])
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PGDConfig:
    """Projected gradient descent attack for adversarial training [10]: ``steps`` steps of size
    ``step_size`` inside the ``norm`` ball of radius ``eps`` (``"linf"``, as in [10], or ``"l2"``), from a
    uniform random start; images stay in ``[0, 1]``.  Defaults: CIFAR-10's 8/255, 2/255, 7 steps."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 7
    norm: str = "linf"
    random_start: bool = True

    def __post_init__(self) -> None:
        # plain Python values: the configuration is saved in checkpoints, which hold plain data only
        for name in ("eps", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
                raise ValueError(f"{name} must be finite and > 0; got {value!r}")
            object.__setattr__(self, name, float(value))
        if not _is_whole(self.steps) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1; got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2'; got {self.norm!r}")
        if not isinstance(self.random_start, bool):
            raise ValueError(f"random_start must be True or False; got {self.random_start!r}")


def _batch_norms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.ndim - 1)))


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: PGDConfig = PGDConfig()) -> torch.Tensor:
    """Adversarial examples maximising the cross-entropy of ``model`` within the ``config`` ball around
    ``x`` (batched; uses the global torch RNG for the random start).  ``model`` runs in eval mode and is given
    back in the mode it came in (:func:`advbound.attacks.base.eval_mode`)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be a floating-point tensor (n, ...) of images in [0, 1]; got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1] or y.is_floating_point():
        raise ValueError(f"y must be an integer label tensor of shape ({x.shape[0]},); got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if not isinstance(config, PGDConfig):
        raise ValueError(f"config must be a PGDConfig; got {type(config).__name__}")
    with eval_mode(model):
        return _pgd(model, x, y, config)


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: PGDConfig) -> torch.Tensor:
    delta = torch.zeros_like(x)
    if config.random_start:
        if config.norm == "linf":
            delta.uniform_(-config.eps, config.eps)
        else:
            delta.normal_()
            radius = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype)
            delta = delta / _batch_norms(delta) * radius * config.eps
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(int(config.steps)):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if config.norm == "linf":
                delta = (delta + config.step_size * grad.sign()).clamp(-config.eps, config.eps)
            else:
                delta = delta + config.step_size * grad / _batch_norms(grad)
                delta = delta * (config.eps / _batch_norms(delta)).clamp(max=1.0)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


# --------------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------------

AUGMENTATIONS = (None, "crop", "crop_flip")


def augment_batch(x: torch.Tensor, kind: str | None, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR/SVHN training augmentation, vectorised over the batch (global torch RNG):
    ``"crop"``: zero-pad by ``pad`` and take a random crop of the original size; ``"crop_flip"``: the same
    and a horizontal flip with probability 1/2; ``None``: unchanged."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}; got {kind!r}")
    if kind is None:
        return x
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a batch of images (n, C, H, W); got shape {tuple(getattr(x, 'shape', ()))}")
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,)).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if kind == "crop_flip":
        flip = (torch.rand(n) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)


def _progress(iterable, total: int, desc: str, enabled: bool):
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def _check_training_args(data: Any, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    if not _is_whole(epochs) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1; got {epochs!r}")
    if not _is_whole(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be finite and > 0; got {lr!r}")
    check_seed(seed)
    if len(data) == 0:
        raise ValueError(f"data must hold at least one training image; got an empty data set ({data.describe()})")


def train_classifier(model: nn.Module, data: ImageData, *, epochs: int, batch_size: int = 128,
                     lr: float = 0.05, optimizer: str = "sgd", weight_decay: float = 5e-4, seed: int = 0,
                     adversarial: PGDConfig | None = None, augment: str | None = None,
                     device: str | torch.device | None = None, checkpoint: str | os.PathLike | None = None,
                     progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` on ``data`` by cross-entropy with a cosine learning-rate schedule.

    ``optimizer`` is ``"sgd"`` (momentum 0.9, Nesterov) or ``"adam"``.  With ``adversarial`` set, each
    mini-batch is replaced by its PGD adversarial examples (Madry et al. [10]); ``augment`` applies
    :func:`augment_batch` (random crops, and flips for CIFAR-10) first.  With ``checkpoint`` (a file path)
    set, the state is saved after every epoch and an existing checkpoint of the same configuration (recipe,
    data and architecture: the parameter shapes) is resumed.  Returns the per-epoch history (mean loss,
    training accuracy on the batches seen).

    ``model`` is moved to the device, trained in place and left in eval mode.  The global torch RNG is
    seeded per epoch for dropout, augmentation and PGD starts, inside :func:`torch.random.fork_rng`: the
    caller's RNG state is unchanged by the call.  A NaN or infinite loss raises :class:`TrainingDivergedError`.
    """
    _check_training_args(data, epochs, batch_size, lr, seed)
    epochs, batch_size = int(epochs), int(batch_size)
    if adversarial is not None and not isinstance(adversarial, PGDConfig):
        raise ValueError(f"adversarial must be None or a PGDConfig; got {type(adversarial).__name__}")
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
            or not 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {optimizer!r}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}; got {augment!r}")
    dev = resolve_device(device)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    config = {"kind": "classifier", "model": type(model).__name__, "data": data.describe(), "epochs": int(epochs),
              "batch_size": int(batch_size), "lr": float(lr), "optimizer": optimizer,
              "weight_decay": float(weight_decay), "seed": int(seed),
              "adversarial": None if adversarial is None else asdict(adversarial)}
    if augment is not None:  # (absent when None, so older checkpoints keep matching)
        config["augment"] = augment
    config["architecture"] = _architecture(model)
    parts = {"model": model, "optimizer": opt, "scheduler": sched}
    ckpt, start, history = _resume(checkpoint, config, dev, parts)
    with _private_global_rng(dev):
        for epoch in range(start, epochs):
            torch.manual_seed(int(seed) * 7_919 + epoch)  # PGD random starts, dropout
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            n_batches = math.ceil(len(data) / batch_size)
            batches = data.batches(batch_size, shuffle=True, generator=_epoch_generator(seed, epoch), device=dev)
            desc = f"{type(model).__name__} epoch {epoch + 1}/{epochs}"
            for b, (x, y) in enumerate(_progress(batches, n_batches, desc, progress)):
                x = augment_batch(x, augment)
                if adversarial is not None:
                    x = pgd_attack(model, x, y, adversarial)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                total_loss += _finite_loss(loss, "the training loss", epoch, b) * y.numel()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct += int((logits.argmax(1) == y).sum())
                seen += y.numel()
            sched.step()
            history.append({"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen})
            _save_epoch(ckpt, config, epoch + 1, history, parts)
    model.eval()
    return history


def _model_device(model: nn.Module) -> torch.device:
    return _module_device(model) or torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Labels ``argmax f(x)`` for float images in ``[0, 1]`` (batched, on the model's device and converted to
    its floating dtype).

    ``model`` runs in eval mode and is given back in the mode it came in."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor (n, ...) in [0, 1]; got "
                         f"{getattr(images, 'dtype', type(images).__name__)}")
    if not _is_whole(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    dev, size = _model_device(model), int(batch_size)
    dtype = _module_dtype(model) or images.dtype
    with eval_mode(model):
        out = [model(images[i:i + size].to(dev, dtype)).argmax(1).cpu() for i in range(0, images.shape[0], size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def error_rate(model: nn.Module, data: ImageData, batch_size: int = 500) -> float:
    """Fraction of ``data`` misclassified by ``model`` (the "Error rate" row of Tables 1-2), with the images
    converted to the model's floating dtype.

    ``model`` runs in eval mode and is given back in the mode it came in."""
    if len(data) == 0:
        raise ValueError(f"data must hold at least one image to measure an error rate; got {data.describe()}")
    if not _is_whole(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    dev = _model_device(model)
    dtype = _module_dtype(model) or torch.float32
    wrong = 0
    with eval_mode(model):
        for x, y in data.batches(int(batch_size), device=dev):
            wrong += int((model(x.to(dtype)).argmax(1) != y).sum())
    return wrong / len(data)


# --------------------------------------------------------------------------------------------------
# DCGAN
# --------------------------------------------------------------------------------------------------

#: the augmentations :func:`diff_augment` knows (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
#: Training", NeurIPS 2020: the policy for small data sets is translation + cutout)
DIFF_AUGMENTATIONS = ("translation", "cutout")


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] = DIFF_AUGMENTATIONS) -> torch.Tensor:
    """Differentiable augmentation of a batch of images in ``[0, 1]`` (global torch RNG), applied to real and
    generated images alike before the discriminator, so that it cannot memorise a small training set while the
    generator still learns the un-augmented distribution (Zhao et al., NeurIPS 2020):

    * ``"translation"``: shift each image by a whole number of pixels in ``[-s/8, s/8]`` in both directions
      (``s`` the image side), filling with 0;
    * ``"cutout"``: set a square of side ``s/2`` at a random position of each image to 0.

    Both are gathers and masks, so gradients flow to the generated images."""
    unknown = [p for p in policy if p not in DIFF_AUGMENTATIONS]
    if unknown:
        raise ValueError(f"policy must be made of {DIFF_AUGMENTATIONS}; got {policy!r}")
    n, _, h, w = x.shape
    dev = x.device
    if "translation" in policy:
        shift = max(1, h // 8)
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,)).to(dev)
        dx = torch.randint(0, 2 * shift + 1, (n,)).to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None],
                   torch.arange(x.shape[1], device=dev)[None, :, None, None], rows, cols]
    if "cutout" in policy:
        size = h // 2
        cy = torch.randint(0, h - size + 1, (n,)).to(dev)
        cx = torch.randint(0, w - size + 1, (n,)).to(dev)
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        inside = (((ys[None, :] >= cy[:, None]) & (ys[None, :] < cy[:, None] + size))[:, :, None]
                  & ((xs[None, :] >= cx[:, None]) & (xs[None, :] < cx[:, None] + size))[:, None, :])
        x = x * (~inside)[:, None].to(x.dtype)
    return x


def _ema_update(average: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """One step of an exponential moving average of ``model``'s parameters into ``average`` (decay warmed up
    as ``min(decay, (1 + step) / (10 + step))``); buffers (batch-norm statistics) are copied."""
    rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for pa, p in zip(average.parameters(), model.parameters(), strict=True):
            pa.lerp_(p, rate)
        for ba, b in zip(average.buffers(), model.buffers(), strict=True):
            ba.copy_(b)


def train_gan(generator: nn.Module, discriminator: nn.Module, data: ImageData, *, epochs: int,
              batch_size: int = 64, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), seed: int = 0,
              ema: float | None = None, augment: tuple[str, ...] | None = None,
              device: str | torch.device | None = None, checkpoint: str | os.PathLike | None = None,
              progress: bool = True) -> list[dict[str, float]]:
    """Train a DCGAN [30] (non-saturating GAN loss, Adam(lr, betas)) on the images of ``data``.

    ``generator.latent_dim`` gives d; z ~ N(0, I_d) as in the paper.  With ``ema`` (a decay in (0, 1), e.g.
    0.999) an exponential moving average of the generator's weights is kept during training (Yazici et al.,
    "The unusual effectiveness of averaging in GAN training", ICLR 2019) and becomes the returned generator:
    averaging smooths the oscillation of the adversarial game and gives sharper, more stable samples at no
    training cost.  With ``augment`` (a policy of :func:`diff_augment`, e.g. ``("translation", "cutout")``),
    real and generated images are augmented before every pass through the discriminator (Zhao et al., NeurIPS
    2020), which keeps the discriminator from memorising a small training set.  Checkpointing and resume as in
    :func:`train_classifier` (the configuration holds both networks' parameter shapes; the average is part of
    the checkpoint).  Returns per-epoch mean discriminator and generator losses.  As in :func:`train_classifier`,
    the caller's global RNG state is unchanged, both networks are left in eval mode, and a NaN or infinite loss
    raises :class:`TrainingDivergedError`.
    """
    _check_training_args(data, epochs, batch_size, lr, seed)
    if ema is not None and (isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 < ema < 1):
        raise ValueError(f"ema must be None or a decay in (0, 1), e.g. 0.999; got {ema!r}")
    if augment is not None and (isinstance(augment, str) or not set(augment) <= set(DIFF_AUGMENTATIONS)
                                or not augment):
        raise ValueError(f"augment must be None or a non-empty tuple from {DIFF_AUGMENTATIONS}; got {augment!r}")
    aug = (lambda t: diff_augment(t, tuple(augment))) if augment else (lambda t: t)
    epochs, batch_size = int(epochs), int(batch_size)
    d = latent_dimension(generator)
    dev = resolve_device(device)
    generator.to(dev)
    discriminator.to(dev)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    config = {"kind": "dcgan", "generator": repr(generator.output_shape) if hasattr(generator, "output_shape") else "",
              "data": data.describe(), "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
              "betas": [float(b) for b in betas], "seed": int(seed), "latent_dim": d,
              "architecture": {"generator": _architecture(generator), "discriminator": _architecture(discriminator)}}
    parts: dict[str, Any] = {"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d}
    average = None
    if augment:  # (absent when None, so older checkpoints keep matching)
        config["augment"] = list(augment)
    if ema is not None:
        config["ema"] = float(ema)
        average = copy.deepcopy(generator)
        parts["ema_generator"] = average
    ckpt, start, history = _resume(checkpoint, config, dev, parts)
    step = start * math.ceil(len(data) / batch_size)
    with _private_global_rng(dev):
        for epoch in range(start, epochs):
            torch.manual_seed(int(seed) * 7_919 + epoch)
            generator.train()
            discriminator.train()
            sums = {"d_loss": 0.0, "g_loss": 0.0}
            n_batches = math.ceil(len(data) / batch_size)
            batches = data.batches(batch_size, shuffle=True, generator=_epoch_generator(seed, epoch), device=dev)
            for b, (real, _) in enumerate(_progress(batches, n_batches, f"DCGAN epoch {epoch + 1}/{epochs}", progress)):
                n = real.shape[0]
                fake = generator(torch.randn(n, d, device=dev))
                ones, zeros = torch.ones(n, device=dev), torch.zeros(n, device=dev)
                d_loss = (F.binary_cross_entropy_with_logits(discriminator(aug(real)), ones)
                          + F.binary_cross_entropy_with_logits(discriminator(aug(fake.detach())), zeros))
                sums["d_loss"] += _finite_loss(d_loss, "the discriminator loss", epoch, b) * n
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                g_loss = F.binary_cross_entropy_with_logits(discriminator(aug(fake)), ones)
                sums["g_loss"] += _finite_loss(g_loss, "the generator loss", epoch, b) * n
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                if average is not None:
                    _ema_update(average, generator, float(ema), step)
                step += 1
            history.append({"epoch": epoch + 1, **{k: v / len(data) for k, v in sums.items()}})
            _save_epoch(ckpt, config, epoch + 1, history, parts)
    if average is not None:
        generator.load_state_dict(average.state_dict())
    generator.eval()
    discriminator.eval()
    return history


__all__ = [
    "CheckpointError",
    "TrainingDivergedError",
    "AUGMENTATIONS",
    "PGDConfig",
    "augment_batch",
    "diff_augment",
    "error_rate",
    "load_checkpoint",
    "pgd_attack",
    "predict",
    "resolve_device",
    "save_checkpoint",
    "train_classifier",
    "train_gan",
]
