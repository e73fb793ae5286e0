"""Experiment profiles: what a run of the Section 5 pipeline trains and measures.

``ci`` (2 CPU cores, minutes), ``colab`` (a free Colab GPU) and ``full`` (the paper's scale on one modern GPU,
resumable).  :func:`experiment_config` gives the :class:`ExperimentConfig` of a (data set, profile) pair;
override fields with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..attacks import DeepFoolOptions
from ..data import DATASETS, PROFILES
from ..training import PGDConfig


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
    #: the DeepFool settings shared by the three attacks (candidates: all classes, or the top-k per sample)
    attack: DeepFoolOptions = field(default_factory=DeepFoolOptions)
    expected_time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
                                    gan_epochs=5, n_eval=100, attack=DeepFoolOptions(candidates=4),
                                    expected_time="about 2 minutes on one CPU core")
        return ExperimentConfig(dataset, profile, channels, size, specs, gan_width=32, disc_width=16, gan_epochs=8,
                                attack=DeepFoolOptions(candidates=4),
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
                            modulus_restarts=8, modulus_steps=20, modulus_confidence=0.95,
                            attack=DeepFoolOptions(refine=True),
                            expected_time=("several hours on one H100 (not measured in this project: no GPU "
                                           "was available to time it); resumable from checkpoints"))
