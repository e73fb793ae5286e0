"""A profile's configuration scaled down to seconds on a CPU, keeping what makes it that profile.

The classifiers keep their labels, training recipe (optimiser, learning rate, weight decay, augmentation,
PGD adversarial training) and architecture family, but take the ci profile's widths, one epoch and small
batches; the DCGAN, the modulus estimation and the attacks are shrunk likewise.  The profile's other
settings (the modulus' confidence level, refined attacks) are kept; the attacks take 3 candidate classes
and 3 steps.
"""

from __future__ import annotations

import dataclasses

from advbound import experiments as ex


def tiny(dataset: str, profile: str) -> ex.ExperimentConfig:
    cfg = ex.experiment_config(dataset, profile)
    small = {spec.label: spec.kwargs for spec in ex.experiment_config(dataset, "ci").classifiers}
    specs = tuple(
        dataclasses.replace(spec, kwargs=small[spec.label], epochs=1, batch_size=16,
                            adversarial=None if spec.adversarial is None
                            else dataclasses.replace(spec.adversarial, steps=1))
        for spec in cfg.classifiers)
    # with a confidence level the modulus needs enough samples for its order statistic (80 >= 72 for 3 radii)
    return dataclasses.replace(cfg, classifiers=specs, gan_width=4, disc_width=2, gan_epochs=1, gan_batch_size=16,
                               n_eval=3, n_norm=32, modulus_samples=80, modulus_radii=3, modulus_restarts=1,
                               modulus_steps=1, attack=dataclasses.replace(cfg.attack, max_steps=3, candidates=3))
