"""Robustness estimates by attack: r_unc, r_Z and r_in of the paper's Section 3 and Remark 5.

For ``x = g(z)`` and a classifier ``f`` the paper defines

* unconstrained robustness   ``r_unc(x) = min_r ||r||_2``               s.t. ``f(x + r) != f(x)``;
* latent robustness (Rem. 5) ``r_Z(z)   = min_r ||r||_2``               s.t. ``f(g(z + r)) != f(g(z))``;
* in-distribution robustness ``r_in(x)  = min_r ||g(z + r) - g(z)||_2`` s.t. ``f(g(z + r)) != f(g(z))``.

Every attack returns a *valid* adversarial point (re-verified by evaluating the model on it), so each
reported norm is an upper estimate of the true minimum: smaller is better.  Samples for which no label
change was found within ``max_steps`` have ``success == False``; their norms are those of the last iterate
and must not be read as robustness values.

Modules: :mod:`~advbound.attacks.deepfool` (the batched DeepFool loop and :func:`deepfool`),
:mod:`~advbound.attacks.refine` (shrinking a perturbation back to the boundary),
:mod:`~advbound.attacks.unconstrained` (:func:`unconstrained_attack`, DeepFool then a boundary walk, for r_unc),
:mod:`~advbound.attacks.latent` (:func:`latent_deepfool`, :func:`in_distribution_attack`, :func:`boundary_search`,
:func:`best_of`, :func:`latent_boundary_search`),
:mod:`~advbound.attacks.boundary` (the boundary search in ``z`` behind :func:`in_distribution_attack`),
:mod:`~advbound.attacks.penalty` (:func:`latent_penalty_attack`, a slow penalty search used as a reference),
:mod:`~advbound.attacks.jacobian` (:func:`generator_gram`, the pulled-back metric), and
:mod:`~advbound.attacks.base` (:class:`DeepFoolOptions` and the argument checks).
"""

from .base import DeepFoolOptions
from .deepfool import PUSH, AttackResult, deepfool
from .jacobian import generator_gram
from .latent import (
    LatentAttackResult,
    best_of,
    boundary_search,
    in_distribution_attack,
    latent_boundary_search,
    latent_deepfool,
)
from .penalty import latent_penalty_attack
from .unconstrained import unconstrained_attack

__all__ = [
    "PUSH",
    "AttackResult",
    "DeepFoolOptions",
    "LatentAttackResult",
    "best_of",
    "boundary_search",
    "deepfool",
    "generator_gram",
    "in_distribution_attack",
    "latent_boundary_search",
    "latent_deepfool",
    "latent_penalty_attack",
    "unconstrained_attack",
]
