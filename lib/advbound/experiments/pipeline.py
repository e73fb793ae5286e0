"""The pipeline of the paper's Section 5: Tables 1 (SVHN) and 2 (CIFAR-10), and the same table on MNIST.

For one data set and one *profile* (``ci``: 2 CPU cores, minutes; ``colab``: a free Colab GPU; ``full``: the
paper's scale on one modern GPU, resumable), :func:`run_experiment`

1. loads the data (:func:`advbound.data.load_dataset`; the ``ci`` profile of SVHN / CIFAR-10 uses a
   **synthetic stand-in**, and every output then says so);
2. trains a DCGAN g with d = 100 and each classifier f of the table (optionally PGD adversarial training);
3. estimates a probabilistic modulus of continuity of g with failure probability ``delta``
   (:mod:`advbound.modulus_estimation`, our design for the unavailable supplement C.2);
4. draws ``z ~ N(0, I_d)``, labels ``g(z)`` with f (no ground truth needed, the paper's footnote 9), and
   measures per sample the distance to the best adversarial point of three searches
   (:func:`_searches`; or their committed and re-verified points, :mod:`advbound.witnesses`):
   ``r_Z`` (:func:`~advbound.attacks.latent_boundary_search` from latent DeepFool), ``r_in`` (the best point of
   :func:`~advbound.attacks.boundary_search` and latent DeepFool, measured as ``||g(z + r) - g(z)||``) and
   ``r_unc`` (:func:`~advbound.attacks.unconstrained_attack` on ``x = g(z)``, or the ``r_in`` point when that
   is closer);
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

Command line: ``python -m advbound experiment --dataset mnist --profile ci``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..artifacts import (
    ArtifactError,
    Networks,
    build_networks,
    freeze,
    has_artifacts,
    load_networks,
    save_networks,
    utc_timestamp,
)
from ..attacks import (
    best_of,
    boundary_search,
    deepfool,
    latent_boundary_search,
    latent_deepfool,
    unconstrained_attack,
)
from ..attacks.boundary import BOUNDARY_STEPS
from ..attacks.jacobian import generator_gram
from ..attacks.latent import _verify_points
from ..attacks.unconstrained import EXPLORE, FINALISTS, POLISH, STEPS, TARGETS
from ..bounds import TABLE_QUANTILE, expected_latent_norm
from ..data import STAND_IN, ImageData, load_dataset
from ..models import LATENT_DIM, DCGANDiscriminator, build_classifier, init_dcgan_weights
from ..modulus import check_seed
from ..modulus_estimation import default_radii, estimate_modulus
from ..portable import seeded_normal
from ..sample_quality import sample_quality, softmax_and_features, softmax_outputs
from ..training import predict, resolve_device, train_classifier, train_gan
from ..witnesses import (
    FORMAT,
    SEARCHES,
    WITNESS_MANIFEST,
    Witness,
    has_witnesses,
    load_witnesses,
    save_witnesses,
    verified_search,
    verified_unconstrained,
    witness_displacements,
)
from .profiles import ExperimentConfig, experiment_config
from .report import ClassifierResult, ExperimentResult, _checks, _tables


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
    seed = check_seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
    if threads is not None:
        torch.set_num_threads(int(threads))


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------

def _latent(n: int, seed: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` latent draws z ~ N(0, I_d), the same bits on every CPU (:mod:`advbound.portable`)."""
    return seeded_normal(n, LATENT_DIM, seed=seed, dtype=dtype, device=device)


#: samples per classifier kept with their adversarial images (the chapters' gallery)
EXAMPLES = 8
#: generated and real images shown side by side with the most accurate classifier's labels
GALLERY = 32


#: the working precision of the r_unc search (:func:`~advbound.attacks.unconstrained_attack`): its starts and
#: exploration run in float32, its last steps and every verification in the analysis dtype
UNCONSTRAINED_WORKING_DTYPE = torch.float32


def _searches(classifier: nn.Module, generator: nn.Module, z: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
              cfg: ExperimentConfig, gram: torch.Tensor | None, only: Collection[str] = tuple(SEARCHES)
              ) -> tuple[dict[str, Witness], dict[str, int]]:
    """Run the searches ``only`` (default: all three) on one batch and return their best points as witnesses
    (float16 displacements, rounded and re-verified: :func:`advbound.witnesses.witness_displacements`) and how
    many needed lengthening.

    * ``r_Z``: :func:`~advbound.attacks.latent_boundary_search` (the boundary search with the latent space's own
      metric) from latent DeepFool's point, the better of the two;
    * ``r_in``: :func:`~advbound.attacks.boundary_search` (the pulled-back metric ``J^T J``) from ``z`` and from
      latent DeepFool's point, and latent DeepFool itself: the point of smallest image distance;
    * ``r_unc``: :func:`~advbound.attacks.unconstrained_attack` on ``x = g(z)``, searching in float32
      (:data:`UNCONSTRAINED_WORKING_DTYPE`) and verifying in the analysis dtype."""
    opts = cfg.attack.kwargs()
    cand = opts["candidates"]
    runs: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = {}

    def latent_ok(w: torch.Tensor) -> torch.Tensor:
        return _verify_points(classifier, generator, z, w, x, labels)[2]

    def image_ok(point: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = classifier(point)
        return (logits.argmax(1) != labels) & torch.isfinite(logits).all(1)

    if {"r_z", "r_in"} & set(only):
        lat = latent_deepfool(classifier, generator, z, **opts)
    if "r_z" in only:
        r_z = latent_boundary_search(classifier, generator, z, latent=lat, candidates=cand,
                                     batched_grads=opts["batched_grads"])
        runs["r_z"] = (r_z.z_adv, z, r_z.success, latent_ok)
    if "r_in" in only:
        r_in = best_of(boundary_search(classifier, generator, z, latent=lat, gram=gram, candidates=cand,
                                       batched_grads=opts["batched_grads"]), lat)
        runs["r_in"] = (r_in.z_adv, z, r_in.success, latent_ok)
    if "r_unc" in only:
        unc = unconstrained_attack(classifier, x, candidates=cand, batched_grads=opts["batched_grads"],
                                   start=deepfool(classifier, x, **{**opts, "refine": True}), steps=STEPS,
                                   explore=EXPLORE, targets=TARGETS, polish=POLISH, finalists=FINALISTS,
                                   working_dtype=UNCONSTRAINED_WORKING_DTYPE)
        runs["r_unc"] = (unc.x_adv, x, unc.success, image_ok)

    out, pushed = {}, {}
    for name, (points, base, found, check) in runs.items():
        delta, ok, pushed[name] = witness_displacements(points, base, found, check)
        out[name] = (delta, ok)
    return out, pushed


def _attack(classifier: nn.Module, generator: nn.Module, z: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
            cfg: ExperimentConfig, gram: torch.Tensor | None = None, witness: dict[str, Witness] | None = None,
            name: str = "classifier", one_shot: int | None = None) -> dict[str, Any]:
    """r_Z, r_in, r_unc per sample (failed searches -> inf) and the adversarial examples, for ``x = g(z)`` with
    the classifier's ``labels``.  ``witness``: committed points of this batch (:mod:`advbound.witnesses`), used
    instead of searching; the searches it lacks (all, without it) run here (:func:`_searches`, ``gram``: the
    generator's pulled-back metric at ``z`` when already computed).  Either way every value is measured here from the
    rounded, re-verified point, so a run that searched prints what every run from its witnesses prints.
    ``one_shot``: re-run the one-shot estimates on the first ``one_shot`` samples of the batch only (None: all)."""
    pushed: dict[str, int] = {}
    witness = dict(witness or {})
    missing = [k for k in SEARCHES if k not in witness]
    if missing:
        searched, pushed = _searches(classifier, generator, z, x, labels, cfg, gram, only=missing)
        witness.update(searched)
    lat_z, lat_in = (verified_search(classifier, generator, z, *witness[k], name=f"{name} ({k})", method=k, x=x,
                                     labels=labels) for k in ("r_z", "r_in"))
    unc = verified_unconstrained(classifier, x, *witness["r_unc"], name=f"{name} (r_unc)", labels=labels)
    inf = torch.full_like(lat_z.latent_norms, math.inf)
    r_z = torch.where(lat_z.success, lat_z.latent_norms, inf)
    r_in = torch.where(lat_in.success, lat_in.image_distances, inf)
    r_att = torch.where(unc.success, unc.norms, inf)
    # any in-distribution adversarial point g(z_in) is also an unconstrained one, so r_unc <= r_in holds for
    # the true quantities; our estimate keeps the better of the two valid points
    r_unc = torch.minimum(r_att, r_in)
    success = {"r_z": float(lat_z.success.float().mean()), "r_in": float(lat_in.success.float().mean()),
               "r_unc": float(unc.success.float().mean())}
    # the one-shot estimates the stronger searches replace (DeepFool on x, latent DeepFool on z; the paper's
    # method, ref. [38]): re-run here, cheaply, so every chapter can say how far its numbers moved
    opts = cfg.attack.kwargs()
    n1 = z.shape[0] if one_shot is None else one_shot
    if n1 > 0:
        df = deepfool(classifier, x[:n1], **opts)
        ldf = latent_deepfool(classifier, generator, z[:n1], **opts)
        r_df_plain = torch.where(df.success, df.norms, inf[:n1])
        r_z_plain = torch.where(ldf.success, ldf.latent_norms, inf[:n1])
    else:
        r_df_plain = r_z_plain = inf[:0]
    # the gallery of the chapters: the first EXAMPLES samples with their three adversarial images
    k = EXAMPLES
    with torch.no_grad():
        x_in = generator(lat_in.z_adv[:k])
        x_lat = generator(lat_z.z_adv[:k])
    x_unc = torch.where((r_att[:k] <= r_in[:k]).view(-1, 1, 1, 1), unc.x_adv[:k], x_in)
    return {"r_z": r_z, "r_in": r_in, "r_unc": r_unc, "r_df": r_att, "r_deepfool": r_df_plain,
            "r_z_deepfool": r_z_plain, "success": success, "witnesses": witness,
            "pushed": pushed,
            "examples": {"x": x[:k], "x_latent": x_lat, "x_in": x_in, "x_unc": x_unc,
                         "labels": lat_z.labels[:k], "labels_latent": lat_z.adv_labels[:k],
                         "labels_in": predict(classifier, x_in), "labels_unc": predict(classifier, x_unc)}}


def _attack_batched(classifier: nn.Module, generator: nn.Module, z: torch.Tensor, images: list[torch.Tensor],
                    labels: list[torch.Tensor], cfg: ExperimentConfig, batch: int, *,
                    grams: list[torch.Tensor] | None = None, witnesses: dict[str, Witness] | None = None,
                    progress: bool = False, desc: str = "attacks") -> dict[str, Any]:
    """:func:`_attack` on consecutive batches of ``batch`` latent samples; ``images`` and ``labels``: ``g(z)``
    and the classifier's labels, one tensor per batch."""
    starts = range(0, z.shape[0], batch)
    parts = [_attack(classifier, generator, z[i:i + batch], images[i // batch], labels[i // batch], cfg,
                     None if grams is None else grams[i // batch],
                     None if witnesses is None else {m: (w[i:i + batch], f[i:i + batch])
                                                     for m, (w, f) in witnesses.items()}, desc,
                     None if cfg.n_one_shot is None else max(0, min(batch, cfg.n_one_shot - i)))
             for i in tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2)]
    out: dict[str, Any] = {k: torch.cat([p[k] for p in parts]).cpu().numpy()
                           for k in ("r_z", "r_in", "r_unc", "r_df", "r_deepfool", "r_z_deepfool")}
    sizes = np.array([p["r_z"].shape[0] for p in parts], dtype=float)
    out["success"] = {k: float(np.dot([p["success"][k] for p in parts], sizes) / sizes.sum())
                      for k in parts[0]["success"]}
    out["witnesses"] = {m: tuple(torch.cat([p["witnesses"][m][j] for p in parts]) for j in (0, 1)) for m in SEARCHES}
    out["pushed"] = {m: sum(p["pushed"].get(m, 0) for p in parts) for m in SEARCHES}
    out["examples"] = {k: v.detach().cpu() for k, v in parts[0]["examples"].items()}
    return out


#: Offsets added to the run's seed, one per independent random stream (classifier k is initialised from
#: ``seed + CLASSIFIER_SEED * (k + 1)`` and trained with data order ``seed + k``)
NORM_SEED, MODULUS_SEED, EVAL_SEED, GALLERY_SEED, QUALITY_SEED, CLASSIFIER_SEED = 101, 202, 303, 404, 505, 1000


@torch.no_grad()
def nearest_other_label_index(x: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, pool_labels: torch.Tensor,
                              batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image ``x_i`` with label ``labels_i``: the L2 distance to the nearest image of ``pool`` whose
    label differs (``inf`` if none does) and that image's index in ``pool`` (0 if none).  It sees ``x`` and
    the labels only, not the latent code of ``x``."""
    flat_pool = pool.flatten(1)
    dist, index = [], []
    for i in range(0, x.shape[0], batch):
        d = torch.cdist(x[i:i + batch].flatten(1), flat_pool)
        same = labels[i:i + batch, None] == pool_labels[None, :]
        best = d.masked_fill(same, math.inf).min(dim=1)
        dist.append(best.values)
        index.append(best.indices)
    if not dist:
        return torch.zeros(0, dtype=x.dtype), torch.zeros(0, dtype=torch.long)
    return torch.cat(dist), torch.cat(index)


def nearest_other_label(x: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, pool_labels: torch.Tensor,
                        batch: int = 256) -> np.ndarray:
    """For each image ``x_i`` with label ``labels_i``, the L2 distance to the nearest image of ``pool`` whose
    label differs (``inf`` if none does) (:func:`nearest_other_label_index`).

    Every generated image ``g(z')`` that the classifier labels differently is an in-distribution adversarial
    example of ``g(z)`` (take ``r = z' - z``), so this is an attack-free upper estimate of ``r_in``: the
    baseline against which the classifier-agnostic bound is non-vacuous or not."""
    dist, _ = nearest_other_label_index(x, labels, pool, pool_labels, batch)
    return dist.cpu().numpy()


def train_networks(cfg: ExperimentConfig, train: ImageData, seed: int, device: torch.device, *,
                   checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
                   log: Callable[[str], Any] = print,
                   only: Sequence[str] | None = None) -> tuple[Networks, dict[str, float]]:
    """Train the DCGAN and every classifier of ``cfg`` on ``train`` (float32), with per-network checkpoints
    in ``checkpoint_dir`` (resumable).  Returns the networks (in eval mode) and the training times.

    ``only`` names the networks to train (``"dcgan"`` and classifier keys; default: all); the others are
    returned untrained.  Every network has its own seeds, so networks trained in separate processes into one
    ``checkpoint_dir`` are the same as networks trained one after the other."""
    names = ["dcgan"] + [spec.key for spec in cfg.classifiers]
    if only is not None and (isinstance(only, str) or not set(only) <= set(names) or not only):
        raise ValueError(f"only must be a non-empty list of network names from {names}; got {only!r}")
    chosen = set(names if only is None else only)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    tag = " [SYNTHETIC STAND-IN]" if train.source == STAND_IN else ""
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    gen, clfs = build_networks(cfg, train.n_classes)
    disc = DCGANDiscriminator(cfg.channels, cfg.image_size, cfg.disc_width or cfg.gan_width)
    init_dcgan_weights(gen)
    init_dcgan_weights(disc)
    gan_hist: list[dict[str, float]] = []
    if "dcgan" in chosen:
        t = time.perf_counter()
        gan_hist = train_gan(gen, disc, train, epochs=cfg.gan_epochs, batch_size=cfg.gan_batch_size, seed=seed,
                             ema=cfg.gan_ema, augment=cfg.gan_augment, device=device,
                             checkpoint=None if ckdir is None else ckdir / "dcgan.pt",
                             progress=progress)
        timings["gan_training_s"] = time.perf_counter() - t
        log(f"DCGAN trained{tag} ({cfg.gan_epochs} epochs, {timings['gan_training_s']:.0f} s)")
    histories = {}
    for k, spec in enumerate(cfg.classifiers):
        if spec.key not in chosen:
            continue
        torch.manual_seed(seed + CLASSIFIER_SEED * (k + 1))
        clf = build_classifier(spec.arch, channels=cfg.channels, n_classes=train.n_classes, **spec.kwargs)
        t = time.perf_counter()
        histories[spec.key] = train_classifier(
            clf, train, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, optimizer=spec.optimizer,
            weight_decay=spec.weight_decay, seed=seed + k, adversarial=spec.adversarial, augment=spec.augment,
            device=device, progress=progress, checkpoint=None if ckdir is None else ckdir / f"{spec.key}.pt")
        clfs[spec.key] = clf
        timings[f"train_{spec.key}_s"] = time.perf_counter() - t
        log(f"{spec.label} trained{tag} ({spec.epochs} epochs, {timings[f'train_{spec.key}_s']:.0f} s)")
    nets = Networks(freeze(gen, torch.float32, device), {k: freeze(c, torch.float32, device) for k, c in clfs.items()},
                    gan_hist, histories)
    return nets, timings


def obtain_networks(cfg: ExperimentConfig, seed: int, train: ImageData, device: torch.device, *,
                    artifacts: str | os.PathLike | None = None, retrain: bool = False,
                    checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
                    log: Callable[[str], Any] = print) -> tuple[Networks, dict[str, float]]:
    """The trained networks of ``cfg`` in the analysis dtype ``cfg.dtype``.

    * ``artifacts`` names a folder such as ``book/artifacts/mnist-ci-seed0`` (:mod:`advbound.artifacts`).
      If it holds a manifest and ``retrain`` is false, the committed networks are loaded and verified
      (:class:`advbound.artifacts.ArtifactError` when they do not match ``cfg``); nothing is trained.
    * With ``retrain``, the networks are trained and written there (half precision, new manifest), and then
      read back, so that the analysis sees the same rounded weights as every later run that loads them.
    * Without artifacts (a Colab run, another profile) the networks are trained here, as they are.
    """
    if retrain and artifacts is None:
        raise ValueError("retrain=True needs artifacts= (the folder to write the retrained networks to)")
    folder = Path(artifacts) if artifacts is not None else None
    if folder is not None and has_artifacts(folder) and not retrain:
        nets = load_networks(folder, cfg, seed, dtype=cfg.dtype, device=device, n_classes=train.n_classes)
        sizes = sum(e["size"] for e in nets.manifest["files"].values())  # type: ignore[index]
        log(f"networks: loaded from {folder} ({len(nets.manifest['files'])} files, {sizes / 1e6:.1f} MB, "  # type: ignore[index]
            "sha256 verified; nothing trained)")
        return nets, {}
    if folder is not None and not retrain:
        log(f"networks: no committed networks in {folder}; training them here")
    nets, timings = train_networks(cfg, train, seed, device, checkpoint_dir=checkpoint_dir, progress=progress,
                                   log=log)
    if folder is not None and retrain:
        save_networks(folder, cfg, seed, nets, command=_artifacts_command(cfg, seed, folder), versions=_versions(),
                      machine=_device_name(device))
        log(f"networks: written to {folder} (half precision) and read back")
        loaded = load_networks(folder, cfg, seed, dtype=cfg.dtype, device=device, n_classes=train.n_classes)
        return loaded, timings
    nets.generator, nets.classifiers = (freeze(nets.generator, cfg.dtype, device),
                                        {k: freeze(c, cfg.dtype, device) for k, c in nets.classifiers.items()})
    return nets, timings


def run_experiment(dataset: str, profile: str = "ci", *, seed: int = 0, device: str | torch.device | None = None,
                   data_root: str | os.PathLike | None = None, download: bool = True,
                   checkpoint_dir: str | os.PathLike | None = None, artifacts: str | os.PathLike | None = None,
                   retrain: bool = False, reattack: bool | Collection[str] = False,
                   config: ExperimentConfig | None = None, attack_batch: int = 256, progress: bool = True,
                   log: Callable[[str], Any] = print) -> ExperimentResult:
    """Run the Section 5 pipeline for ``dataset`` at ``profile`` and return an :class:`ExperimentResult`.

    ``config`` overrides :func:`experiment_config`.  The networks come from :func:`obtain_networks`: committed
    ``artifacts`` when that folder holds them (``retrain`` to rewrite them), else trained here (with
    ``checkpoint_dir``, every training run saves and resumes its checkpoints there: an interrupted ``full``
    run continues where it stopped).  ``colab`` / ``full`` raise :class:`advbound.data.DataUnavailableError`
    when the real data cannot be had.

    The latent searches (latent DeepFool and the in-distribution boundary search, the expensive part of the
    analysis) are replaced by the committed witnesses of :mod:`advbound.witnesses` when the ``artifacts``
    folder holds witnesses found on the same networks with the same settings; each point is re-verified on the
    networks and its distances are measured here.  ``reattack`` (implied by ``retrain``) runs the searches and
    rewrites them; a collection of search names (:data:`~advbound.witnesses.SEARCHES`, e.g. ``["r_unc"]``)
    re-runs only those and keeps the committed witnesses of the others, which must have been found on the same
    networks with the same settings apart from those of the re-run searches (:data:`SETTING_USERS`).
    """
    cfg = config or experiment_config(dataset, profile)
    if cfg.dataset != dataset or cfg.profile != profile:
        raise ValueError(f"config is for ({cfg.dataset}, {cfg.profile}), not ({dataset}, {profile})")
    research = _research(reattack, retrain)
    if research and artifacts is None:
        raise ValueError("reattack needs artifacts= (the folder to write the witnesses to)")
    if 0 < len(research) < len(SEARCHES) and not (artifacts is not None and has_witnesses(artifacts)):
        raise ArtifactError(_nothing_to_keep(research, artifacts))
    seed = check_seed(seed)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    train, test = load_dataset(dataset, profile, root=data_root, download=download, seed=seed,
                               n_train=cfg.n_train, n_test=cfg.n_test)
    if train.shape != (cfg.channels, cfg.image_size, cfg.image_size):
        raise ValueError(f"data shape {train.shape} does not match the config's "
                         f"{(cfg.channels, cfg.image_size, cfg.image_size)}")
    log(f"data: train {train.describe()}; test {test.describe()}")
    data_tag = " [SYNTHETIC STAND-IN]" if train.source == STAND_IN else ""
    nets, timings = obtain_networks(cfg, seed, train, dev, artifacts=artifacts, retrain=retrain,
                                    checkpoint_dir=checkpoint_dir, progress=progress, log=log)
    gen, dtype = nets.generator, cfg.dtype

    # normalisers and the modulus of continuity
    with torch.no_grad():
        zn = _latent(cfg.n_norm, seed + NORM_SEED, dev, dtype)
        norms = torch.cat([gen(zn[i:i + 1000]).flatten(1).norm(dim=1) for i in range(0, cfg.n_norm, 1000)])
    e_img = float(norms.mean())
    e_z = expected_latent_norm(LATENT_DIM)
    t = time.perf_counter()
    est = estimate_modulus(gen, radii=default_radii(cfg.modulus_radii), n_samples=cfg.modulus_samples,
                           delta=cfg.delta, confidence=cfg.modulus_confidence, restarts=cfg.modulus_restarts,
                           steps=cfg.modulus_steps, seed=seed + MODULUS_SEED)
    timings["modulus_s"] = time.perf_counter() - t
    log(f"modulus estimated{data_tag}: {est.modulus!r} ({timings['modulus_s']:.0f} s)")

    # classifiers and their robustness on generated samples
    z_eval = _latent(cfg.n_eval, seed + EVAL_SEED, dev, dtype)
    # the generated images, once for all classifiers, in the attack batches
    with torch.no_grad():
        x_eval = [gen(z_eval[i:i + attack_batch]) for i in range(0, cfg.n_eval, attack_batch)]
    witnesses, witness_note = _committed_witnesses(cfg, seed, nets, artifacts, research, log)
    grams = None
    if witnesses is None:
        # the pulled-back metric J^T J at each z: the generator's alone, so computed once for all classifiers
        t = time.perf_counter()
        grams = [generator_gram(gen, z_eval[i:i + attack_batch]) for i in range(0, cfg.n_eval, attack_batch)]
        timings["generator_gram_s"] = time.perf_counter() - t
    results: list[ClassifierResult] = []
    found: dict[str, dict[str, Witness]] = {}
    pushed: dict[str, dict[str, int]] = {}
    # the pool of generated images for the sample-quality measures and the nearest-other-label distances
    with torch.no_grad():
        z_pool = _latent(cfg.n_quality, seed + QUALITY_SEED, dev, dtype)
        x_pool = torch.cat([gen(z_pool[i:i + 1000]) for i in range(0, cfg.n_quality, 1000)])
    x_test = test.floats().to(dev, dtype)
    probs_pool: dict[str, torch.Tensor] = {}
    probs_test: dict[str, torch.Tensor] = {}
    # each classifier's penultimate features, caught in the same pass: the judge's give the Fréchet distance;
    # computed in float32, with every label and confident label that float32 could change re-made in the
    # analysis dtype
    features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for spec in cfg.classifiers:
        clf = nets.classifiers[spec.key]
        (probs_test[spec.label], test_feats), (probs_pool[spec.label], pool_feats) = (
            softmax_and_features(clf, x, working_dtype=torch.float32) for x in (x_test, x_pool))
        features[spec.key] = (pool_feats, test_feats)
        err = float((probs_test[spec.label].argmax(1) != test.labels).double().mean())
        labels = [predict(clf, x) for x in x_eval]
        nearest = nearest_other_label(torch.cat(x_eval), torch.cat(labels).to(dev), x_pool,
                                      probs_pool[spec.label].argmax(1).to(dev))
        props = np.bincount(torch.cat(labels).cpu().numpy(), minlength=train.n_classes) / cfg.n_eval
        t = time.perf_counter()
        att = _attack_batched(clf, gen, z_eval, x_eval, labels, cfg, attack_batch, grams=grams, progress=progress,
                              desc=spec.label, witnesses=None if witnesses is None else witnesses[spec.key])
        timings[f"attacks_{spec.key}_s"] = time.perf_counter() - t
        found[spec.key] = att["witnesses"]
        pushed[spec.key] = att["pushed"]
        results.append(ClassifierResult(spec, err, props, att["r_z"], att["r_in"], att["r_unc"], att["r_df"],
                                        att["success"], att["examples"], nets.histories.get(spec.key, []),
                                        r_nearest=nearest, r_unc_deepfool=att["r_deepfool"],
                                        r_z_deepfool=att["r_z_deepfool"]))
        log(f"{spec.label}: error {err:.3f}{data_tag}, attacked in {timings[f'attacks_{spec.key}_s']:.0f} s")

    if artifacts is not None and research:
        kept = _kept_lengthened(artifacts, research)
        pushed = {key: {**kept.get(key, {}), **{m: n for m, n in counts.items() if m in research}}
                  for key, counts in pushed.items()}
        path = save_witnesses(artifacts, settings=_search_settings(cfg, seed), networks=_network_hashes(nets),
                              displacements=found, labels={s.key: s.label for s in cfg.classifiers},
                              command=_artifacts_command(cfg, seed, artifacts, keep_networks=True),
                              versions=_versions(), machine=_device_name(dev), pushed=pushed,
                              seconds={s.key: timings[f"attacks_{s.key}_s"] for s in cfg.classifiers})
        witness_note = (f"{', '.join(research)} searched here, the others committed, and written to {path.parent}"
                        if len(research) < len(SEARCHES) else f"searched here and written to {path.parent}")
        log(f"witnesses: {witness_note}")

    # do the samples look like the data? (advbound.sample_quality), judged by the most accurate classifier
    judge = min(results, key=lambda r: r.error_rate).spec
    n_fd = min(cfg.n_quality, len(test) // 2)
    pool_feats, test_feats = features.pop(judge.key)
    del features
    quality = sample_quality(probs_pool, probs_test, judge.label, pool_feats[:n_fd].double().numpy(),
                             test_feats[:2 * n_fd].double().numpy(), seed=seed + QUALITY_SEED)
    del x_test

    # table, bounds, checks
    normalisers = {"E||z||": e_z, "E||g(z)||": e_img}
    table, bounds_df, ci_low, ci_high = _tables(results, est, normalisers, train.n_classes, len(test))
    checks = _checks(results, bounds_df, table, ci_high)
    with torch.no_grad():
        generated = gen(_latent(GALLERY, seed + GALLERY_SEED, dev, dtype))
    judge_net = nets.classifiers[judge.key]
    gallery: dict[str, Any] = {"judge": judge.label}
    for kind, images in (("generated", generated), ("real", test.floats()[:GALLERY].to(dev, dtype))):
        probs = softmax_outputs(judge_net, images)
        gallery[kind] = images.float().cpu()
        gallery[f"{kind}_labels"], gallery[f"{kind}_confidence"] = probs.argmax(1), probs.max(1).values.float()
    generated = gallery["generated"]
    timings["total_s"] = time.perf_counter() - t0
    provenance = {
        "dataset": dataset, "profile": profile, "data": train.source, "data_origin": train.origin,
        "data_notes": train.notes, "device": _device_name(dev), "seed": int(seed),
        "networks": nets.origin, "latent_searches": witness_note, "analysis_dtype": cfg.analysis_dtype,
        "threads": torch.get_num_threads(), "versions": _versions(),
        "date": utc_timestamp(),
        "samples": {"train": len(train), "test": len(test), "latent_attacked": cfg.n_eval,
                    "norm_estimate": cfg.n_norm, "modulus": cfg.modulus_samples, "quality": cfg.n_quality,
                    "one_shot": min(cfg.n_eval, cfg.n_one_shot or cfg.n_eval)},
        "delta": cfg.delta, "quantile": TABLE_QUANTILE, "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "units": "L2 distances of images in [0, 1]; Z-space divided by E||z||_2, image space by the mean ||g(z)||_2",
    }
    return ExperimentResult(cfg, table, bounds_df, checks, provenance, results, est, normalisers, generated,
                            nets.gan_history, ci_low, ci_high, quality=quality, gallery=gallery)


def latent_search_results(cfg: ExperimentConfig, seed: int, nets: Networks, n: int, *,
                          artifacts: str | os.PathLike | None = None, log: Callable[[str], Any] = print
                          ) -> tuple[torch.Tensor, dict[str, dict[str, Any]]]:
    """The first ``n`` latent samples that :func:`run_experiment` attacks (seed ``seed + EVAL_SEED``, in the
    configuration's analysis dtype) and, per classifier label, the results of the pipeline's three searches
    there (:func:`_searches`), each re-verified on the networks: ``"r_z"`` and ``"r_in"``
    (:class:`~advbound.attacks.LatentAttackResult`: the latent boundary search for ``r_Z``, Remark 5, and the
    in-distribution boundary search for ``r_in``, Section 3, the book's estimates) and ``"r_unc"``
    (:class:`~advbound.attacks.AttackResult` of :func:`~advbound.attacks.unconstrained_attack`), so that another
    chapter reads the very values of the data chapter on these samples.

    With committed witnesses in ``artifacts`` for these networks (:mod:`advbound.witnesses`) the points are
    loaded and re-verified, not searched; otherwise the searches run here (seconds per sample and classifier on
    one CPU core)."""
    if isinstance(n, bool) or int(n) != n or not 1 <= n <= cfg.n_eval:
        raise ValueError(f"n must be an integer in [1, n_eval = {cfg.n_eval}]; got {n!r}")
    gen, dtype = nets.generator, cfg.dtype
    dev = next(gen.parameters()).device
    z = _latent(cfg.n_eval, seed + EVAL_SEED, dev, dtype)[:n]
    with torch.no_grad():
        x = gen(z)
    witnesses, _ = _committed_witnesses(cfg, seed, nets, artifacts, (), log)
    out: dict[str, dict[str, Any]] = {}
    for spec in cfg.classifiers:
        clf = nets.classifiers[spec.key]
        labels = predict(clf, x)
        if witnesses is None:
            found, _ = _searches(clf, gen, z, x, labels, cfg, None)
        else:
            found = {k: (delta[:n], ok[:n]) for k, (delta, ok) in witnesses[spec.key].items()}
        out[spec.label] = {k: verified_search(clf, gen, z, *found[k], name=f"{spec.label} ({k})", method=k, x=x,
                                              labels=labels) for k in ("r_z", "r_in")}
        out[spec.label]["r_unc"] = verified_unconstrained(clf, x, *found["r_unc"], name=f"{spec.label} (r_unc)",
                                                          labels=labels)
    return z, out


def _search_settings(cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    """What the boundary search's result depends on besides the networks (compared with committed witnesses)."""
    return {"n_eval": int(cfg.n_eval), "latent_seed": int(seed) + EVAL_SEED, "analysis_dtype": cfg.analysis_dtype,
            "attack": cfg.attack.kwargs(), "boundary_steps": BOUNDARY_STEPS, "witness_format": FORMAT,
            "unconstrained": {"steps": STEPS, "explore": EXPLORE, "targets": TARGETS, "polish": POLISH,
                              "finalists": FINALISTS,
                              "working_dtype": str(UNCONSTRAINED_WORKING_DTYPE).replace("torch.", "")}}


def _network_hashes(nets: Networks) -> dict[str, str]:
    files = (nets.manifest or {}).get("files", {})
    return {name: entry["sha256"] for name, entry in files.items()}


def _artifacts_command(cfg: ExperimentConfig, seed: int, folder: str | os.PathLike, *,
                       keep_networks: bool = False) -> str:
    """The command that (re)writes the artifacts in ``folder``: networks and witnesses, or with
    ``keep_networks`` the witnesses alone."""
    return (f"python -m advbound artifacts --dataset {cfg.dataset} --profile {cfg.profile} --seed {seed} "
            f"--out {Path(folder).parent}" + (" --keep-networks" if keep_networks else ""))


#: the search settings (:func:`_search_settings`) that only some searches depend on; every other setting is
#: used by all three
SETTING_USERS = {"boundary_steps": frozenset({"r_z", "r_in"}), "unconstrained": frozenset({"r_unc"})}


def _research(reattack: bool | Collection[str], retrain: bool) -> tuple[str, ...]:
    """The searches to run anew: all with ``retrain`` or ``reattack=True``, none with ``False``, else the named
    ones (checked), in the order of :data:`~advbound.witnesses.SEARCHES`."""
    if retrain or reattack is True:
        return tuple(SEARCHES)
    if reattack is False:
        return ()
    names = [reattack] if isinstance(reattack, str) else list(reattack)
    if not names or any(n not in SEARCHES for n in names):
        raise ValueError(f"reattack must be a bool or a non-empty collection of {tuple(SEARCHES)}; got {reattack!r}")
    return tuple(n for n in SEARCHES if n in names)


def _nothing_to_keep(research: Collection[str], artifacts: str | os.PathLike | None) -> str:
    return (f"reattack={list(research)} keeps the committed witnesses of the other searches, but {artifacts} holds "
            "no committed networks with witnesses; run every search (reattack=True, or --keep-networks without "
            "--searches)")


def _kept_lengthened(folder: str | os.PathLike, research: Collection[str]) -> dict[str, dict[str, int]]:
    """Per classifier key, the committed count of rounded points lengthened for each search not in
    ``research`` (from the witness manifest the kept witnesses came with)."""
    if len(research) == len(SEARCHES):
        return {}
    summary = json.loads((Path(folder) / WITNESS_MANIFEST).read_text())["classifiers"]
    return {key: {m: int(entry[m]["lengthened_after_rounding"]) for m in SEARCHES if m not in research}
            for key, entry in summary.items()}


def _committed_witnesses(cfg: ExperimentConfig, seed: int, nets: Networks, artifacts: str | os.PathLike | None,
                         research: Collection[str], log: Callable[[str], Any]
                         ) -> tuple[dict[str, dict[str, Witness]] | None, str]:
    """The committed witnesses of the searches for ``nets`` (None: run the searches) and a note for the
    provenance.  Only networks loaded from ``artifacts`` can have witnesses; the searches in ``research`` are
    left out (run anew), and the settings only they depend on (:data:`SETTING_USERS`) may differ."""
    if len(research) == len(SEARCHES):
        return None, "searched here"
    if research and (artifacts is None or nets.manifest is None or not has_witnesses(artifacts)):
        raise ArtifactError(_nothing_to_keep(research, artifacts))
    if artifacts is None or nets.manifest is None:
        return None, "searched here"
    if not has_witnesses(artifacts):
        log(f"witnesses: none committed in {artifacts}; running the searches here")
        return None, "searched here"
    shapes = {name: (cfg.n_eval, LATENT_DIM) if kind == "latent" else (cfg.n_eval, cfg.channels, cfg.image_size,
                                                                         cfg.image_size)
              for name, kind in SEARCHES.items()}
    ignore = [key for key, users in SETTING_USERS.items() if users <= set(research)]
    found = load_witnesses(artifacts, settings=_search_settings(cfg, seed), networks=_network_hashes(nets),
                           keys=[s.key for s in cfg.classifiers], shapes=shapes,
                           command=_artifacts_command(cfg, seed, artifacts, keep_networks=True), ignore=ignore)
    if research:
        found = {key: {m: w for m, w in per.items() if m not in research} for key, per in found.items()}
        log(f"witnesses: {', '.join(m for m in SEARCHES if m not in research)} loaded from {artifacts}; "
            f"{', '.join(research)} searched here")
        return found, f"committed witnesses from {artifacts} for the other searches, re-verified"
    log(f"witnesses: loaded from {artifacts} (sha256 verified; each point is re-verified on the networks)")
    return found, f"committed witnesses from {artifacts}, re-verified"


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
