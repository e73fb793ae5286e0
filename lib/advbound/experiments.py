"""The pipeline of the paper's Section 5: Tables 1 (SVHN) and 2 (CIFAR-10), and the same table on MNIST.

For one data set and one *profile* (``ci``: 2 CPU cores, minutes; ``colab``: a free Colab GPU; ``full``: the
paper's scale on one modern GPU, resumable), :func:`run_experiment`

1. loads the data (:func:`advbound.data.load_dataset`; the ``ci`` profile of SVHN / CIFAR-10 uses a
   **synthetic stand-in**, and every output then says so);
2. trains a DCGAN g with d = 100 and each classifier f of the table (optionally PGD adversarial training);
3. estimates a probabilistic modulus of continuity of g with failure probability ``delta``
   (:mod:`advbound.modulus_estimation`, our design for the unavailable supplement C.2);
4. draws ``z ~ N(0, I_d)``, labels ``g(z)`` with f (no ground truth needed, the paper's footnote 9), and
   measures per sample, with the attacks of :mod:`advbound.attacks`:
   ``r_Z`` (latent DeepFool), ``r_in`` (best valid point of the pulled-back in-distribution attack and of
   latent DeepFool, measured as ``||g(z + r) - g(z)||``) and ``r_unc`` (DeepFool on ``x = g(z)``);
5. reports the 25% quantile (:data:`advbound.bounds.TABLE_QUANTILE`) of each *normalised* robustness
   (``r_Z / E||z||_2``, ``r_in / E||g(z)||``, ``r_unc / E||g(z)||``) next to the upper bounds of Theorem 1:
   in Z-space with omega the identity, both for 10 equiprobable classes (the paper's column) and with the
   class proportions measured on ``f(g(z))``; in image space through the estimated modulus, solving the
   bound at ``q + delta``;
6. runs the checks: the Z-space bound is the paper's 0.016; the measured Z-space quantile lies below its
   bound; ``r_unc <= r_in`` for every sample (see :class:`ExperimentResult.checks`).

Distances are in pixel units of images in ``[0, 1]`` (the generators' and classifiers' range).
A failed attack (no label change found) counts as ``+inf`` robustness, so reported quantiles stay upper
estimates.

Command line: ``python -m advbound.experiments --dataset mnist --profile ci`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import __version__
from .attacks import deepfool, in_distribution_attack, latent_deepfool
from .bounds import TABLE_QUANTILE, class_probabilities, expected_latent_norm, robustness_quantile_bound
from .data import DATASETS, PROFILES, REAL, STAND_IN, ImageData, find_repo_root, load_dataset
from .models import LATENT_DIM, DCGANDiscriminator, DCGANGenerator, build_classifier, init_dcgan_weights
from .modulus_estimation import ModulusEstimate, default_radii, estimate_modulus
from .training import PGDConfig, error_rate, predict, resolve_device, train_classifier, train_gan

ROWS = ("Error rate", "Robustness in the Z-space", "In-distribution robustness", "Unconstrained robustness")
BOUND_COLUMN = "Upper bound on robustness"

#: The paper's Tables 1 and 2 (25% quantiles of normalised robustness; error rates as fractions).
PAPER_TABLES: dict[str, dict[str, Any]] = {
    "svhn": {
        "caption": "Table 1 of the paper (SVHN)",
        "bound": [None, 16e-3, 36e-2, 36e-2],
        "columns": {
            "2-Layer LeNet": [0.11, 6.1e-3, 3.3e-2, 0.39e-2],
            "ResNet-18": [0.048, 6.1e-3, 3.1e-2, 1.1e-2],
            "ResNet-101": [0.042, 6.6e-3, 3.1e-2, 1.4e-2],
        },
    },
    "cifar10": {
        "caption": "Table 2 of the paper (CIFAR-10)",
        "bound": [None, 0.016, 0.10, 0.10],
        "columns": {
            "VGG": [0.055, 2.5e-3, 4.8e-3, 0.23e-3],
            "Wide ResNet": [0.039, 3.0e-3, 5.9e-3, 0.20e-3],
            "Wide ResNet + Adv. training": [0.16, 3.6e-3, 8.3e-3, 2.0e-3],
        },
    },
}


def paper_table(dataset: str) -> pd.DataFrame:
    """The paper's table for ``dataset`` (``"svhn"`` -> Table 1, ``"cifar10"`` -> Table 2) as a DataFrame."""
    if dataset not in PAPER_TABLES:
        raise ValueError(f"dataset must be one of {sorted(PAPER_TABLES)} (the paper has no MNIST table); got {dataset!r}")
    t = PAPER_TABLES[dataset]
    cols = {BOUND_COLUMN: t["bound"], **t["columns"]}
    return pd.DataFrame(cols, index=list(ROWS))


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierSpec:
    """One column of a table: a classifier architecture, its size and its training recipe."""

    label: str
    arch: str
    kwargs: dict[str, Any]
    epochs: int
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 128
    weight_decay: float = 0.0
    adversarial: PGDConfig | None = None
    augment: str | None = None       # "crop" / "crop_flip" (advbound.training.augment_batch) or None

    @property
    def key(self) -> str:
        return self.label.lower().replace(" + ", "-").replace(" ", "-").replace(".", "")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run of :func:`run_experiment` depends on (besides seed, device and paths)."""

    dataset: str
    profile: str
    channels: int
    image_size: int
    classifiers: tuple[ClassifierSpec, ...]
    gan_width: int
    gan_epochs: int
    gan_batch_size: int = 64
    disc_width: int | None = None    # discriminator width (default: gan_width)
    n_train: int | None = None
    n_test: int | None = None
    n_eval: int = 64                 # latent samples attacked per classifier
    n_norm: int = 2000               # samples for the estimate of E||g(z)||
    modulus_samples: int = 64
    modulus_radii: int = 10
    modulus_restarts: int = 2
    modulus_steps: int = 5
    modulus_confidence: float | None = None
    delta: float = 0.05
    attack_steps: int = 50
    candidates: int | None = None    # DeepFool candidate classes: all (None) or the top-k per sample
    overshoot: float = 0.02
    refine: bool = False
    expected_time: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classifiers"] = [asdict(c) for c in self.classifiers]
        return out


def _ci_pgd() -> PGDConfig:
    return PGDConfig(eps=8 / 255, step_size=4 / 255, steps=2)


def _specs(dataset: str, profile: str, channels: int, size: int) -> tuple[ClassifierSpec, ...]:
    small = profile == "ci"
    if dataset == "cifar10":
        if small:
            small_kw = dict(lr=3e-3, batch_size=64)
            return (ClassifierSpec("VGG", "vgg", {"layout": "vgg11", "width_scale": 1 / 8}, 3, **small_kw),
                    ClassifierSpec("Wide ResNet", "wide_resnet", {"depth": 10, "widen": 1}, 3, **small_kw),
                    ClassifierSpec("Wide ResNet + Adv. training", "wide_resnet", {"depth": 10, "widen": 1}, 3,
                                   adversarial=_ci_pgd(), **small_kw))
        depth, widen = (16, 4) if profile == "colab" else (28, 10)
        epochs = 15 if profile == "colab" else 100
        sgd = dict(lr=0.1, optimizer="sgd", weight_decay=5e-4, augment="crop_flip")
        return (ClassifierSpec("VGG", "vgg", {"layout": "vgg16"}, epochs, **sgd),
                ClassifierSpec("Wide ResNet", "wide_resnet", {"depth": depth, "widen": widen}, epochs, **sgd),
                ClassifierSpec("Wide ResNet + Adv. training", "wide_resnet", {"depth": depth, "widen": widen},
                               epochs, adversarial=PGDConfig(), **sgd))
    lenet = {"image_size": size}
    if small:
        lenet_kw = {**lenet, "width": 8, "hidden": 64}
        res = [ClassifierSpec("2-Layer LeNet", "lenet", lenet_kw, 3, 2e-3),
               ClassifierSpec("ResNet-18", "resnet18", {"width": 8}, 2 if dataset == "mnist" else 3, 3e-3,
                              batch_size=64)]
        if dataset == "svhn":
            res.append(ClassifierSpec("ResNet-101", "resnet101", {"width": 2}, 3, 3e-3, batch_size=64))
        return tuple(res)
    epochs = 15 if profile == "colab" else 40
    sgd = dict(lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="crop" if dataset == "svhn" else None)
    res = [ClassifierSpec("2-Layer LeNet", "lenet", lenet, epochs, **sgd),
           ClassifierSpec("ResNet-18", "resnet18", {}, epochs, **sgd)]
    if dataset == "svhn":
        res.append(ClassifierSpec("ResNet-101", "resnet101", {}, epochs, **sgd))
    return tuple(res)


def experiment_config(dataset: str, profile: str = "ci") -> ExperimentConfig:
    """The configuration of ``dataset`` (``mnist``, ``svhn``, ``cifar10``) at ``profile`` (``ci``,
    ``colab``, ``full``).  Override fields with ``dataclasses.replace``."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}; got {profile!r}")
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    specs = _specs(dataset, profile, channels, size)
    if profile == "ci":
        if dataset == "mnist":
            return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=32, disc_width=16,
                                    gan_epochs=5, n_eval=100, candidates=4,
                                    expected_time="about 2 minutes on one CPU core")
        return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=32, disc_width=16, gan_epochs=8,
                                candidates=4,
                                n_train=2000, n_test=500, n_eval=48, n_norm=1000, modulus_samples=48,
                                modulus_radii=8, expected_time="about 2 minutes on one CPU core")
    if profile == "colab":
        return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=64, gan_epochs=10,
                                n_eval=500, n_norm=5000, modulus_samples=500, modulus_radii=14,
                                modulus_restarts=4, modulus_steps=10, modulus_confidence=0.9,
                                expected_time=("about 1-2 hours on a free Colab T4 (not measured in this "
                                               "project: no GPU was available to time it)"))
    return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=64, gan_epochs=25,
                            n_eval=2000, n_norm=20000, modulus_samples=2000, modulus_radii=16,
                            modulus_restarts=8, modulus_steps=20, modulus_confidence=0.95, refine=True,
                            expected_time=("several hours on one H100 (not measured in this project: no GPU "
                                           "was available to time it); resumable from checkpoints"))


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------

def quantile_with_failures(values: np.ndarray, q: float = TABLE_QUANTILE) -> float:
    """Linear-interpolated ``q`` quantile where failed attacks are ``+inf`` (then the result may be inf)."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        return math.nan
    pos = q * (v.size - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    if not math.isfinite(v[hi]):
        return math.inf
    return float(v[lo] + (pos - lo) * (v[hi] - v[lo]))


@dataclass
class ClassifierResult:
    """Per-classifier measurements (arrays are per latent sample)."""

    spec: ClassifierSpec
    error_rate: float
    class_proportions: np.ndarray
    r_z: np.ndarray
    r_in: np.ndarray
    r_unc: np.ndarray
    r_unc_deepfool: np.ndarray
    success: dict[str, float]
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: the table, the bounds, the checks and the provenance."""

    config: ExperimentConfig
    table: pd.DataFrame
    bounds: pd.DataFrame
    checks: dict[str, Any]
    provenance: dict[str, Any]
    classifiers: list[ClassifierResult]
    modulus: ModulusEstimate
    normalisers: dict[str, float]
    generated: torch.Tensor
    gan_history: list[dict[str, float]] = field(default_factory=list)

    @property
    def is_stand_in(self) -> bool:
        return self.provenance["data"] == STAND_IN

    def to_json_dict(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, (np.floating, np.integer, np.bool_)):
                return clean(x.item())
            return x

        per = {c.spec.label: {"error_rate": c.error_rate, "class_proportions": c.class_proportions.tolist(),
                              "attack_success": c.success, "training_history": c.history}
               for c in self.classifiers}
        return clean({
            "title": _title(self.config.dataset, self.provenance["data"]),
            "provenance": self.provenance,
            "table": {col: dict(zip(self.table.index, self.table[col].tolist())) for col in self.table.columns},
            "bounds": {col: dict(zip(self.bounds.index, self.bounds[col].tolist())) for col in self.bounds.columns},
            "checks": self.checks,
            "normalisers": self.normalisers,
            "modulus": self.modulus.to_dict(),
            "classifiers": per,
            "gan_history": self.gan_history,
            "config": self.config.to_dict(),
        })

    def save(self, path: str | os.PathLike) -> Path:
        """Write the results JSON (provenance included) atomically; also ``<stem>.csv`` with the table."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)
        self.table.to_csv(path.with_suffix(".csv"))
        return path


def _title(dataset: str, data: str) -> str:
    names = {"mnist": "MNIST", "svhn": "SVHN", "cifar10": "CIFAR-10"}
    if data == STAND_IN:
        return f"{names[dataset]} pipeline on a SYNTHETIC STAND-IN (not {names[dataset]} results)"
    return f"{names[dataset]} (real data)"


def _versions() -> dict[str, str]:
    import scipy
    import torchvision

    return {"advbound": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__}


def set_determinism(seed: int, threads: int | None = 1) -> None:
    """Seed torch / numpy, request deterministic kernels (warn-only where none exists) and fix the CPU
    thread count, so a profile re-run on the same machine prints the same numbers.

    One thread by default: the ci networks are tiny, and on a shared 2-core machine two OpenMP threads were
    measured 15-60x slower per training step than one (threads spinning while the other core is busy)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
    if threads is not None:
        torch.set_num_threads(int(threads))


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------

def _latent(n: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(int(seed))).to(device)


def _attack(classifier: nn.Module, generator: nn.Module, z: torch.Tensor, cfg: ExperimentConfig) -> dict[str, Any]:
    """r_Z, r_in, r_unc per sample (failed attacks -> inf) and the adversarial examples."""
    opts = dict(overshoot=cfg.overshoot, max_steps=cfg.attack_steps, refine=cfg.refine, candidates=cfg.candidates)
    lat = latent_deepfool(classifier, generator, z, **opts)
    ind = in_distribution_attack(classifier, generator, z, include_latent=False, **opts)
    with torch.no_grad():
        x = generator(z)
    unc = deepfool(classifier, x, **opts)
    inf = torch.full_like(lat.latent_norms, math.inf)
    r_z = torch.where(lat.success, lat.latent_norms, inf)
    # r_in: the best valid point of both latent searches, measured in image space
    d_lat = torch.where(lat.success, lat.image_distances, inf)
    d_ind = torch.where(ind.success, ind.image_distances, inf)
    take_lat = d_lat < d_ind
    r_in = torch.minimum(d_lat, d_ind)
    z_in = torch.where(take_lat[:, None], lat.z_adv, ind.z_adv)
    r_df = torch.where(unc.success, unc.norms, inf)
    # any in-distribution adversarial point g(z_in) is also an unconstrained one, so r_unc <= r_in holds for
    # the true quantities; our estimate keeps the better of the two valid points
    r_unc = torch.minimum(r_df, r_in)
    with torch.no_grad():
        x_in = generator(z_in)
        x_lat = generator(lat.z_adv)
    x_unc = torch.where((r_df <= r_in).view(-1, 1, 1, 1), unc.x_adv, x_in)
    success = {"latent_deepfool": float(lat.success.float().mean()),
               "in_distribution": float((r_in < math.inf).float().mean()),
               "deepfool": float(unc.success.float().mean())}
    return {"r_z": r_z, "r_in": r_in, "r_unc": r_unc, "r_df": r_df, "success": success,
            "examples": {"x": x, "x_latent": x_lat, "x_in": x_in, "x_unc": x_unc,
                         "labels": lat.labels, "labels_latent": lat.adv_labels,
                         "labels_in": predict(classifier, x_in), "labels_unc": predict(classifier, x_unc)}}


def _attack_batched(classifier: nn.Module, generator: nn.Module, z: torch.Tensor, cfg: ExperimentConfig,
                    batch: int) -> dict[str, Any]:
    parts = [_attack(classifier, generator, z[i:i + batch], cfg) for i in range(0, z.shape[0], batch)]
    out: dict[str, Any] = {k: torch.cat([p[k] for p in parts]).cpu().numpy() for k in ("r_z", "r_in", "r_unc", "r_df")}
    sizes = np.array([p["r_z"].shape[0] for p in parts], dtype=float)
    out["success"] = {k: float(np.dot([p["success"][k] for p in parts], sizes) / sizes.sum())
                      for k in parts[0]["success"]}
    out["examples"] = {k: v[:8].detach().cpu() for k, v in parts[0]["examples"].items()}
    return out


def run_experiment(dataset: str, profile: str = "ci", *, seed: int = 0, device: str | torch.device | None = None,
                   data_root: str | os.PathLike | None = None, download: bool = True,
                   checkpoint_dir: str | os.PathLike | None = None, config: ExperimentConfig | None = None,
                   attack_batch: int = 256, progress: bool = True, log=print) -> ExperimentResult:
    """Run the Section 5 pipeline for ``dataset`` at ``profile`` and return an :class:`ExperimentResult`.

    ``config`` overrides :func:`experiment_config`.  With ``checkpoint_dir`` every training run saves and
    resumes its checkpoints there (``full`` profile: an interrupted run continues where it stopped).
    ``colab`` / ``full`` raise :class:`advbound.data.DataUnavailableError` when the real data cannot be had.
    """
    cfg = config or experiment_config(dataset, profile)
    if cfg.dataset != dataset or cfg.profile != profile:
        raise ValueError(f"config is for ({cfg.dataset}, {cfg.profile}), not ({dataset}, {profile})")
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    train, test = load_dataset(dataset, profile, root=data_root, download=download, seed=seed,
                               n_train=cfg.n_train, n_test=cfg.n_test)
    if train.shape != (cfg.channels, cfg.image_size, cfg.image_size):
        raise ValueError(f"data shape {train.shape} does not match the config's "
                         f"{(cfg.channels, cfg.image_size, cfg.image_size)}")
    log(f"data: train {train.describe()}; test {test.describe()}")
    data_tag = " [SYNTHETIC STAND-IN]" if train.source == STAND_IN else ""
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    # 1. the generator
    torch.manual_seed(seed)
    gen = DCGANGenerator(LATENT_DIM, cfg.channels, cfg.image_size, cfg.gan_width)
    disc = DCGANDiscriminator(cfg.channels, cfg.image_size, cfg.disc_width or cfg.gan_width)
    init_dcgan_weights(gen)
    init_dcgan_weights(disc)
    t = time.perf_counter()
    gan_hist = train_gan(gen, disc, train, epochs=cfg.gan_epochs, batch_size=cfg.gan_batch_size, seed=seed,
                         device=dev, checkpoint=None if ckdir is None else ckdir / "dcgan.pt", progress=progress)
    timings["gan_training_s"] = time.perf_counter() - t
    gen.eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    log(f"DCGAN trained{data_tag} ({cfg.gan_epochs} epochs, {timings['gan_training_s']:.0f} s)")

    # 2. normalisers and the modulus of continuity
    with torch.no_grad():
        zn = _latent(cfg.n_norm, seed + 101, dev)
        norms = torch.cat([gen(zn[i:i + 1000]).flatten(1).norm(dim=1) for i in range(0, cfg.n_norm, 1000)])
    e_img = float(norms.mean())
    e_z = expected_latent_norm(LATENT_DIM)
    t = time.perf_counter()
    est = estimate_modulus(gen, radii=default_radii(cfg.modulus_radii), n_samples=cfg.modulus_samples,
                           delta=cfg.delta, confidence=cfg.modulus_confidence, restarts=cfg.modulus_restarts,
                           steps=cfg.modulus_steps, seed=seed + 202)
    timings["modulus_s"] = time.perf_counter() - t
    log(f"modulus estimated{data_tag}: {est.modulus!r} ({timings['modulus_s']:.0f} s)")

    # 3. classifiers and their robustness on generated samples
    z_eval = _latent(cfg.n_eval, seed + 303, dev)
    results: list[ClassifierResult] = []
    for k, spec in enumerate(cfg.classifiers):
        torch.manual_seed(seed + 1000 * (k + 1))
        clf = build_classifier(spec.arch, channels=cfg.channels, n_classes=train.n_classes, **spec.kwargs)
        t = time.perf_counter()
        hist = train_classifier(clf, train, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                                optimizer=spec.optimizer, weight_decay=spec.weight_decay, seed=seed + k,
                                adversarial=spec.adversarial, augment=spec.augment, device=dev, progress=progress,
                                checkpoint=None if ckdir is None else ckdir / f"{spec.key}.pt")
        timings[f"train_{spec.key}_s"] = time.perf_counter() - t
        for p in clf.parameters():
            p.requires_grad_(False)
        err = error_rate(clf, test)
        with torch.no_grad():
            labels = torch.cat([predict(clf, gen(z_eval[i:i + 1000])) for i in range(0, cfg.n_eval, 1000)])
        props = np.bincount(labels.numpy(), minlength=train.n_classes) / cfg.n_eval
        t = time.perf_counter()
        att = _attack_batched(clf, gen, z_eval, cfg, attack_batch)
        timings[f"attacks_{spec.key}_s"] = time.perf_counter() - t
        results.append(ClassifierResult(spec, err, props, att["r_z"], att["r_in"], att["r_unc"], att["r_df"],
                                        att["success"], att["examples"], hist))
        log(f"{spec.label}: error {err:.3f}{data_tag}, trained in {timings[f'train_{spec.key}_s']:.0f} s, "
            f"attacked in {timings[f'attacks_{spec.key}_s']:.0f} s")

    # 4. table, bounds, checks
    normalisers = {"E||z||": e_z, "E||g(z)||": e_img}
    table, bounds_df = _tables(results, est, normalisers, train.n_classes)
    checks = _checks(results, bounds_df, table, normalisers)
    with torch.no_grad():
        generated = gen(_latent(16, seed + 404, dev)).cpu()
    timings["total_s"] = time.perf_counter() - t0
    provenance = {
        "dataset": dataset, "profile": profile, "data": train.source, "data_origin": train.origin,
        "data_notes": train.notes, "device": _device_name(dev), "seed": int(seed),
        "threads": torch.get_num_threads(), "versions": _versions(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "samples": {"train": len(train), "test": len(test), "latent_attacked": cfg.n_eval,
                    "norm_estimate": cfg.n_norm, "modulus": cfg.modulus_samples},
        "delta": cfg.delta, "quantile": TABLE_QUANTILE, "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "units": "L2 distances of images in [0, 1]; Z-space divided by E||z||_2, image space by the mean ||g(z)||_2",
    }
    return ExperimentResult(cfg, table, bounds_df, checks, provenance, results, est, normalisers, generated, gan_hist)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _tables(results: Sequence[ClassifierResult], est: ModulusEstimate, normalisers: dict[str, float],
            n_classes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    q = TABLE_QUANTILE
    e_z, e_img = normalisers["E||z||"], normalisers["E||g(z)||"]
    z_bound = robustness_quantile_bound(q, n_classes=n_classes) / e_z
    img_bound = robustness_quantile_bound(q, n_classes=n_classes, modulus=est.modulus) / e_img
    cols: dict[str, list[float]] = {BOUND_COLUMN: [math.nan, z_bound, img_bound, img_bound]}
    bounds: dict[str, list[float]] = {}
    for r in results:
        cols[r.spec.label] = [r.error_rate, quantile_with_failures(r.r_z, q) / e_z,
                              quantile_with_failures(r.r_in, q) / e_img, quantile_with_failures(r.r_unc, q) / e_img]
        probs = class_probabilities(r.class_proportions)
        bounds[r.spec.label] = [
            z_bound, robustness_quantile_bound(q, class_probs=probs) / e_z,
            img_bound, robustness_quantile_bound(q, class_probs=probs, modulus=est.modulus) / e_img,
            float(probs.max()),
        ]
    table = pd.DataFrame(cols, index=list(ROWS))
    bounds_df = pd.DataFrame(bounds, index=["Z-space bound, 10 equiprobable classes",
                                            "Z-space bound, measured class proportions",
                                            f"Image-space bound, equiprobable (estimated omega, delta = {est.delta:g})",
                                            f"Image-space bound, measured proportions (estimated omega, delta = {est.delta:g})",
                                            "Largest measured class proportion"])
    return table, bounds_df


def _checks(results: Sequence[ClassifierResult], bounds_df: pd.DataFrame, table: pd.DataFrame,
            normalisers: dict[str, float]) -> dict[str, Any]:
    z_bound = float(table.loc[ROWS[1], BOUND_COLUMN])
    checks: dict[str, Any] = {
        "z_bound_equiprobable": z_bound,
        "z_bound_is_paper_0.016": round(z_bound, 3) == 0.016,
        "per_classifier": {},
    }
    for r in results:
        measured_z = float(table.loc[ROWS[1], r.spec.label])
        both = np.isfinite(r.r_in) & np.isfinite(r.r_unc_deepfool)
        checks["per_classifier"][r.spec.label] = {
            "z_quantile_below_equiprobable_bound": bool(measured_z <= z_bound),
            "z_quantile_below_measured_proportions_bound": bool(measured_z <= float(bounds_df.loc[bounds_df.index[1], r.spec.label])),
            "r_unc_le_r_in_all_samples": bool(np.all(r.r_unc <= r.r_in)),
            # informative only: the image-space bound rests on the *estimated* modulus (see modulus_estimation)
            "in_distribution_quantile_below_image_bound": bool(
                float(table.loc[ROWS[2], r.spec.label]) <= float(bounds_df.loc[bounds_df.index[3], r.spec.label])),
            "deepfool_alone_le_r_in_fraction": float(np.mean(r.r_unc_deepfool[both] <= r.r_in[both])) if both.any() else math.nan,
            "ratio_r_in_over_r_unc_median": float(np.median(r.r_in[both] / r.r_unc[both])) if both.any() else math.nan,
        }
    return checks


# --------------------------------------------------------------------------------------------------
# Display helpers (used by the chapters)
# --------------------------------------------------------------------------------------------------

def format_table(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Numbers as strings with ``digits`` significant figures (error rates as percentages); ``-`` for NaN."""
    def fmt(v: float, row: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if math.isinf(v):
            return "inf (attack failed)"
        if row == ROWS[0]:
            return f"{100 * v:.{max(digits - 1, 1)}f}%"
        return f"{v:.{digits}g}" if v >= 1e-2 else f"{v:.{digits - 1}e}"
    return pd.DataFrame({c: [fmt(float(v) if v is not None else math.nan, row) for row, v in zip(table.index, table[c])]
                         for c in table.columns}, index=table.index)


def side_by_side(result: ExperimentResult) -> pd.DataFrame:
    """Our table next to the paper's (for SVHN and CIFAR-10), columns labelled with their source."""
    ours_label = "synthetic stand-in" if result.is_stand_in else f"ours, {result.provenance['profile']}"
    ours = format_table(result.table)
    ours.columns = pd.MultiIndex.from_tuples([(ours_label, c) for c in ours.columns])
    if result.config.dataset not in PAPER_TABLES:
        return ours
    paper = format_table(paper_table(result.config.dataset))
    paper.columns = pd.MultiIndex.from_tuples([("paper", c) for c in paper.columns])
    return pd.concat([paper, ours], axis=1)


def plot_examples(result: ExperimentResult, classifier: int = 0, n: int = 4):
    """Generated samples and their three perturbed versions: latent (r_Z), in-distribution (r_in) and
    unconstrained (r_unc), with the classifier's labels.  Returns a matplotlib figure."""
    import matplotlib.pyplot as plt

    ex = result.classifiers[classifier].examples
    n = min(n, ex["x"].shape[0])
    cols = [("x", "labels", "g(z)"), ("x_latent", "labels_latent", "g(z + r), latent"),
            ("x_in", "labels_in", "in-distribution"), ("x_unc", "labels_unc", "unconstrained")]
    fig, axes = plt.subplots(n, 4, figsize=(6.4, 1.7 * n), squeeze=False)
    for i in range(n):
        for j, (key, lab, title) in enumerate(cols):
            img = ex[key][i].clamp(0, 1).permute(1, 2, 0).numpy()
            ax = axes[i, j]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            dist = "" if j == 0 else f", {(ex[key][i] - ex['x'][i]).norm():.2f}"
            ax.set_title(f"{title if i == 0 else ''}\nlabel {int(ex[lab][i])}{dist}", fontsize=7)
            ax.axis("off")
    if result.is_stand_in:
        fig.suptitle("SYNTHETIC STAND-IN data (not real-data results)", color="crimson", fontsize=9)
    fig.tight_layout()
    return fig


def plot_robustness(result: ExperimentResult):
    """Empirical CDFs of the normalised robustness (Z-space, in-distribution, unconstrained) per classifier,
    with the 25% level and the upper bounds of Theorem 1 (dashed)."""
    import matplotlib.pyplot as plt

    e_z, e_img = result.normalisers["E||z||"], result.normalisers["E||g(z)||"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    kinds = [("r_z", e_z, ROWS[1], "Z-space  $r_Z / E\\|z\\|$"), ("r_in", e_img, ROWS[2], "in-distribution  $r_{in} / E\\|g(z)\\|$"),
             ("r_unc", e_img, ROWS[3], "unconstrained  $r_{unc} / E\\|g(z)\\|$")]
    for ax, (attr, norm, row, title) in zip(axes, kinds):
        for c in result.classifiers:
            v = np.sort(getattr(c, attr) / norm)
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=c.spec.label)
        b = float(result.table.loc[row, BOUND_COLUMN])
        if math.isfinite(b):
            ax.axvline(b, ls="--", color="k", lw=1, label="upper bound (25%)")
        ax.axhline(TABLE_QUANTILE, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("fraction of samples")
    axes[0].legend(fontsize=7)
    if result.is_stand_in:
        fig.suptitle("SYNTHETIC STAND-IN data (not real-data results)", color="crimson", fontsize=10)
    fig.tight_layout()
    return fig


def publish(fig, chapter: str, name: str, folder: str | os.PathLike = "figures") -> None:
    """Save ``fig`` as ``<folder>/<chapter>-<name>.{pdf,png}`` (citable exports) and display it once."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{chapter}-{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    fig.savefig(out / f"{chapter}-{name}.png", bbox_inches="tight", dpi=200)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    display(Image(data=buf.getvalue()))


def key_numbers(result: ExperimentResult, digits: int = 2) -> str:
    """The table's numbers and the checks as rounded text (what the book's nbval checks compare)."""
    tag = " [SYNTHETIC STAND-IN, not real data]" if result.is_stand_in else " [real data]"
    lines = [f"{_title(result.config.dataset, result.provenance['data'])}, profile {result.provenance['profile']}, "
             f"seed {result.provenance['seed']}"]
    ftab = format_table(result.table, digits)
    fb = format_table(result.bounds.iloc[:4], digits)
    # one value per line, so the page needs no sideways scrolling; the data label heads every block
    for frame, rows in ((ftab, ROWS), (fb, fb.index)):
        for row in rows:
            lines.append(f"{row}{tag}:")
            lines.extend(f"    {c} = {frame.loc[row, c]}" for c in frame.columns)
    ch = result.checks
    lines.append(f"check: Z-space bound (10 equiprobable classes, d = 100) = {ch['z_bound_equiprobable']:.4f}, "
                 f"rounds to the paper's 0.016: {ch['z_bound_is_paper_0.016']}")
    for label, c in ch["per_classifier"].items():
        lines.append(f"check {label}:")
        lines.append(f"    measured Z-space 25% quantile below the equiprobable bound: "
                     f"{c['z_quantile_below_equiprobable_bound']}")
        lines.append(f"    ... below the measured-proportions bound: {c['z_quantile_below_measured_proportions_bound']}")
        lines.append(f"    r_unc <= r_in for every sample: {c['r_unc_le_r_in_all_samples']}")
        lines.append(f"    in-distribution 25% quantile below the image-space bound (estimated omega): "
                     f"{c['in_distribution_quantile_below_image_bound']}")
    return "\n".join(lines)


def plot_modulus(result: ExperimentResult):
    """The estimated modulus omega(t) of the generator (the (1 - delta) quantile over z of the ascent
    estimates, made monotone), the median of the same estimates, and how the image-space bound is read off:
    the latent root t* of eq. (2) at q + delta (10 equiprobable classes) mapped to omega(t*)."""
    import matplotlib.pyplot as plt

    from .bounds import latent_radius_quantile

    est = result.modulus
    t = est.radii[1:]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(t, np.median(est.increments[1:], axis=1), "o-", color="grey", ms=3, label="median over z")
    ax.plot(t, est.raw[1:], "x", color="C1", label=f"{1 - est.delta:.0%} quantile over z")
    ax.plot(t, est.modulus.values[1:], "-", color="C0", lw=2, label="omega (monotone)")
    n_classes = len(result.classifiers[0].class_proportions)
    t_star = latent_radius_quantile(TABLE_QUANTILE + est.delta, n_classes=n_classes)
    eta = float(est.modulus(t_star))
    floor = 0.5 * float(np.min(np.median(est.increments[1:], axis=1)))
    ax.plot([t_star, t_star, t[0]], [floor, eta, eta], "k--", lw=1,
            label=f"t* = {t_star:.3f}, omega(t*) = {eta:.3g} ({n_classes} equiprobable classes)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent radius t")
    ax.set_ylabel("image distance (pixels in [0, 1])")
    ax.legend(fontsize=7)
    if result.is_stand_in:
        ax.set_title("SYNTHETIC STAND-IN generator (not real data)", color="crimson", fontsize=9)
    fig.tight_layout()
    return fig


def default_results_path(dataset: str, profile: str) -> Path:
    """``<repo root>/book/results/<dataset>-<profile>.json`` (or ``./results/...`` outside the repo)."""
    root = find_repo_root()
    base = root / "book" / "results" if root is not None else Path("results")
    return base / f"{dataset}-{profile}.json"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m advbound.experiments --dataset svhn --profile full``: run one table, print it, save the
    results JSON (default ``book/results/<dataset>-<profile>.json``)."""
    parser = argparse.ArgumentParser(prog="advbound.experiments", description=main.__doc__)
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--profile", choices=PROFILES, default="ci")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--data-root", default=None, help="torchvision data folder (default: <repo>/data)")
    parser.add_argument("--no-download", action="store_true", help="do not download the real data")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="save/resume training here (default for colab/full: <repo>/checkpoints/<dataset>-<profile>-seed<seed>)")
    parser.add_argument("--out", default=None, help="results JSON path")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    ckdir = args.checkpoint_dir
    if ckdir is None and args.profile != "ci":
        root = find_repo_root() or Path.cwd()
        ckdir = root / "checkpoints" / f"{args.dataset}-{args.profile}-seed{args.seed}"
    # the ci profile's tiny networks run fastest (and reproducibly) on one CPU thread
    set_determinism(args.seed, threads=1 if args.profile == "ci" else None)
    res = run_experiment(args.dataset, args.profile, seed=args.seed, device=args.device, data_root=args.data_root,
                         download=not args.no_download, checkpoint_dir=ckdir, progress=not args.quiet)
    print(_title(args.dataset, res.provenance["data"]))
    print(side_by_side(res).to_string())
    print(json.dumps(res.to_json_dict()["checks"], indent=1))
    path = res.save(args.out or default_results_path(args.dataset, args.profile))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = [
    "BOUND_COLUMN",
    "PAPER_TABLES",
    "ROWS",
    "ClassifierResult",
    "ClassifierSpec",
    "ExperimentConfig",
    "ExperimentResult",
    "default_results_path",
    "experiment_config",
    "format_table",
    "key_numbers",
    "publish",
    "main",
    "paper_table",
    "plot_examples",
    "plot_modulus",
    "plot_robustness",
    "quantile_with_failures",
    "run_experiment",
    "set_determinism",
    "side_by_side",
]
