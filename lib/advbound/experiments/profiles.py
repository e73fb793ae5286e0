"""Experiment profiles: what a run of the Section 5 pipeline trains and measures.

``ci`` (2 CPU cores, minutes), ``colab`` (a free Colab GPU) and ``full`` (the paper's scale on one modern GPU,
resumable).  :func:`experiment_config` gives the :class:`ExperimentConfig` of a (data set, profile) pair;
override fields with ``dataclasses.replace``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..attacks import DeepFoolOptions
from ..data import DATASETS, PROFILES
from ..training import PGDConfig

#: latent samples attacked per classifier in the ci profile.  The in-distribution boundary search in float64
#: costs about 0.2-0.6 s per sample and classifier on one CPU core for MNIST and up to 1.6 s on the 32x32
#: stand-ins, so its points are committed as witnesses (:mod:`advbound.witnesses`) and a chapter re-runs
#: only the cheap attacks and the verification: about 0.06 s per sample and classifier.  Three searches per
#: sample (r_Z, r_in, r_unc) cost about 1-4 s per sample and classifier on one core, so the stand-ins, whose
#: numbers only exercise the pipeline, attack fewer samples than the real-data chapters (500, issue 17)
CI_SAMPLES = {"mnist": 500, "fashion_mnist": 500, "svhn": 200, "cifar10": 200}
#: samples on which the ci chapters re-run the paper's one-shot DeepFool estimates (to say how far the searches
#: moved them): in the portable CPU kernel of the tests, these re-runs cost as much as the rest of a chapter
CI_ONE_SHOT = 100


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
    #: decay of the exponential moving average of the generator's weights (advbound.training.train_gan); None:
    #: the last iterate, as in the original DCGAN recipe
    gan_ema: float | None = None
    #: differentiable augmentation of the discriminator's inputs (advbound.training.diff_augment); None: none
    gan_augment: tuple[str, ...] | None = None
    n_train: int | None = None
    n_test: int | None = None
    n_eval: int = 64                 # latent samples attacked per classifier
    #: of those, how many (the first) the paper's one-shot estimates (DeepFool, latent DeepFool) are re-run on,
    #: to say how far the stronger searches moved them; None: all
    n_one_shot: int | None = None
    n_norm: int = 2000               # samples for the estimate of E||g(z)||
    n_quality: int = 2000            # generated samples for the sample-quality measures (advbound.sample_quality)
    modulus_samples: int = 64
    modulus_radii: int = 10
    modulus_restarts: int = 2
    modulus_steps: int = 5
    modulus_confidence: float | None = None
    delta: float = 0.05
    #: the DeepFool settings shared by the three attacks (candidates: all classes, or the top-k per sample)
    attack: DeepFoolOptions = field(default_factory=DeepFoolOptions)
    #: floating type of the analysis (modulus, error rates, attacks): "float64" makes the printed numbers the
    #: same on every CPU (float32 kernels differ in their last bits between instruction sets)
    analysis_dtype: str = "float32"
    expected_time: str = ""

    def __post_init__(self) -> None:
        if self.analysis_dtype not in ("float32", "float64"):
            raise ValueError(f"analysis_dtype must be 'float32' or 'float64'; got {self.analysis_dtype!r}")
        if isinstance(self.n_eval, bool) or int(self.n_eval) != self.n_eval or self.n_eval < 1:
            raise ValueError(f"n_eval (latent samples attacked) must be an integer >= 1; got {self.n_eval!r}")
        if self.n_one_shot is not None and (isinstance(self.n_one_shot, bool) or int(self.n_one_shot) !=
                                            self.n_one_shot or self.n_one_shot < 1):
            raise ValueError(f"n_one_shot (samples the one-shot estimates are re-run on) must be None or an "
                             f"integer >= 1; got {self.n_one_shot!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The analysis dtype as a torch dtype."""
        return getattr(torch, self.analysis_dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training_dict(self) -> dict[str, Any]:
        """The settings that determine the trained networks (data, architectures, training recipes): two
        configurations with the same ``training_dict`` and seed train the same networks, whatever their
        analysis settings (samples, attacks, modulus estimation)."""
        full = self.to_dict()
        fields = TRAINING_FIELDS + tuple(k for k in OPTIONAL_TRAINING_FIELDS if full[k] is not None)
        # as JSON has it (tuples become lists), so a manifest's copy compares equal
        return json.loads(json.dumps({k: full[k] for k in fields}))


#: the fields of :class:`ExperimentConfig` that training depends on (the rest is analysis)
TRAINING_FIELDS = ("dataset", "profile", "channels", "image_size", "classifiers", "gan_width", "gan_epochs",
                   "gan_batch_size", "disc_width", "n_train", "n_test")
#: training fields recorded only when set (so that manifests written before they existed still match)
OPTIONAL_TRAINING_FIELDS = ("gan_ema", "gan_augment")


def _ci_pgd() -> PGDConfig:
    return PGDConfig(eps=8 / 255, step_size=4 / 255, steps=2)


#: PGD of the adversarially trained classifier of the MNIST and Fashion-MNIST tables (Madry et al. [10], L-inf,
#: the norm of the paper's Table 2 column; 0.1 is the radius usually taken for Fashion-MNIST, a third of
#: Madry's 0.3 for MNIST, chosen so that the small ci networks keep their accuracy)
GRAYSCALE_PGD = PGDConfig(eps=0.1, step_size=0.025, steps=7)


def _specs(dataset: str, profile: str, channels: int, size: int) -> tuple[ClassifierSpec, ...]:
    small = profile == "ci"
    if dataset == "cifar10":
        if small:
            small_kw: dict[str, Any] = dict(lr=3e-3, batch_size=64)
            return (ClassifierSpec("VGG", "vgg", {"layout": "vgg11", "width_scale": 1 / 8}, 3, **small_kw),
                    ClassifierSpec("Wide ResNet", "wide_resnet", {"depth": 10, "widen": 1}, 3, **small_kw),
                    ClassifierSpec("Wide ResNet + Adv. training", "wide_resnet", {"depth": 10, "widen": 1}, 3,
                                   adversarial=_ci_pgd(), **small_kw))
        depth, widen = (16, 4) if profile == "colab" else (28, 10)
        epochs = 15 if profile == "colab" else 100
        sgd: dict[str, Any] = dict(lr=0.1, optimizer="sgd", weight_decay=5e-4, augment="crop_flip")
        return (ClassifierSpec("VGG", "vgg", {"layout": "vgg16"}, epochs, **sgd),
                ClassifierSpec("Wide ResNet", "wide_resnet", {"depth": depth, "widen": widen}, epochs, **sgd),
                ClassifierSpec("Wide ResNet + Adv. training", "wide_resnet", {"depth": depth, "widen": widen},
                               epochs, adversarial=PGDConfig(), **sgd))
    if dataset in ("mnist", "fashion_mnist"):
        return _grayscale_specs(dataset, profile)
    lenet = {"image_size": size}
    if small:
        lenet_kw = {**lenet, "width": 8, "hidden": 64}
        res = [ClassifierSpec("2-Layer LeNet", "lenet", lenet_kw, 3, 2e-3),
               ClassifierSpec("ResNet-18", "resnet18", {"width": 8}, 3, 3e-3, batch_size=64)]
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


def _grayscale_specs(dataset: str, profile: str) -> tuple[ClassifierSpec, ...]:
    """MNIST and Fashion-MNIST: a 2-layer LeNet, a ResNet-18, and the same LeNet adversarially trained (PGD,
    as in the last column of the paper's Table 2), so that the effect of adversarial training is read on one
    architecture.  ci: the 8,000 MNIST / 60,000 Fashion-MNIST training images, Adam, small widths."""
    if profile == "ci":
        lenet = {"image_size": 28, "width": 16, "hidden": 128}
        mnist = dataset == "mnist"
        ci_epochs = (10, 6, 10) if mnist else (8, 4, 6)
        return (ClassifierSpec("2-Layer LeNet", "lenet", lenet, ci_epochs[0], 2e-3),
                ClassifierSpec("ResNet-18", "resnet18", {"width": 8}, ci_epochs[1], 3e-3, batch_size=64),
                ClassifierSpec("2-Layer LeNet + Adv. training", "lenet", lenet, ci_epochs[2], 2e-3,
                               adversarial=GRAYSCALE_PGD))
    epochs = 15 if profile == "colab" else 40
    sgd: dict[str, Any] = dict(lr=0.05, optimizer="sgd", weight_decay=5e-4)
    lenet = {"image_size": 28}
    return (ClassifierSpec("2-Layer LeNet", "lenet", lenet, epochs, **sgd),
            ClassifierSpec("ResNet-18", "resnet18", {}, epochs, **sgd),
            ClassifierSpec("2-Layer LeNet + Adv. training", "lenet", lenet, epochs, adversarial=GRAYSCALE_PGD, **sgd))


#: confidence with which the ci profiles' estimated modulus holds at every grid radius (an order statistic of the
#: increments, advbound.modulus_estimation): a plain empirical quantile of 64 samples falls below the true
#: quantile with probability about 1/2, so delta would be paid for only nominally
CI_MODULUS_CONFIDENCE = 0.9

#: DCGAN epochs of the grayscale ci profiles (8,000 MNIST images, 60,000 Fashion-MNIST images)
GRAYSCALE_GAN_EPOCHS = {"mnist": 61, "fashion_mnist": 15}
#: differentiable augmentation of the DCGAN discriminator's inputs (advbound.training.diff_augment): not used.  Tried
#: for MNIST's 8,000 images, it was behind the plain recipe after 16 epochs (classifier agreement on g(z) 54% against
#: 63%, confident labels 49% against 54%) and the CPU budget did not allow following both further
GRAYSCALE_GAN_AUGMENT: dict[str, tuple[str, ...] | None] = {"mnist": None, "fashion_mnist": None}


def experiment_config(dataset: str, profile: str = "ci") -> ExperimentConfig:
    """The configuration of ``dataset`` (``mnist``, ``fashion_mnist``, ``svhn``, ``cifar10``) at ``profile`` (``ci``,
    ``colab``, ``full``).  Override fields with ``dataclasses.replace``."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}; got {profile!r}")
    grayscale = dataset in ("mnist", "fashion_mnist")
    channels, size = (1, 28) if grayscale else (3, 32)
    specs = _specs(dataset, profile, channels, size)
    if profile == "ci":
        if grayscale:
            # a DCGAN of the usual width, trained longer and with averaged weights: its samples must be
            # recognisable (advbound.sample_quality), which the width-32, 5-epoch generator's were not
            mnist = dataset == "mnist"
            return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=64, disc_width=64,
                                    gan_epochs=GRAYSCALE_GAN_EPOCHS[dataset], gan_ema=0.999,
                                    gan_augment=GRAYSCALE_GAN_AUGMENT[dataset],
                                    n_eval=CI_SAMPLES[dataset], n_one_shot=CI_ONE_SHOT,
                                    attack=DeepFoolOptions(candidates=4), analysis_dtype="float64",
                                    modulus_samples=128,
                                    modulus_confidence=CI_MODULUS_CONFIDENCE,
                                    expected_time=(f"training about {'30' if mnist else '90'} minutes on one CPU "
                                                   "core; the analysis of the committed networks 1-2 minutes "
                                                   "with the committed witnesses, 10-20 minutes searching anew "
                                                   "(reattack)"))
        return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=32, disc_width=16, gan_epochs=8,
                                attack=DeepFoolOptions(candidates=4), analysis_dtype="float64",
                                n_train=2000, n_test=500, n_eval=CI_SAMPLES[dataset], n_one_shot=CI_ONE_SHOT,
                                n_norm=1000, modulus_samples=96,
                                modulus_radii=8, modulus_confidence=CI_MODULUS_CONFIDENCE,
                                expected_time=("training about 5 minutes on one CPU core; the analysis of "
                                               "the committed networks 1-2 minutes with the committed "
                                               "witnesses, 20-30 minutes searching anew (reattack)"))
    ema = 0.999 if grayscale else None
    if profile == "colab":
        return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=64, gan_epochs=10, gan_ema=ema,
                                n_eval=500, n_norm=5000, modulus_samples=500, modulus_radii=14,
                                modulus_restarts=4, modulus_steps=10, modulus_confidence=0.9,
                                expected_time=("about 1-2 hours on a free Colab T4 (an estimate, not a "
                                               "measurement; `--dry-run` projects it from measured FLOPs)"))
    return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=64, gan_epochs=25, gan_ema=ema,
                            n_eval=2000, n_norm=20000, modulus_samples=2000, modulus_radii=16,
                            modulus_restarts=8, modulus_steps=20, modulus_confidence=0.95,
                            attack=DeepFoolOptions(refine=True),
                            expected_time=("hours on one modern GPU (projected from measured FLOPs by "
                                           "`--dry-run`, not measured); resumable from checkpoints"))
