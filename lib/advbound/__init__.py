"""advbound: the executable companion to "Adversarial vulnerability for any classifier"
(A. Fawzi, H. Fawzi, O. Fawzi, NeurIPS 2018).

The bounds (Theorems 1, 3, 4) live in :mod:`advbound.bounds`, moduli of continuity in
:mod:`advbound.modulus`, toy generators and latent classifiers with exact quantities in
:mod:`advbound.generators` and :mod:`advbound.classifiers`.
"""

from .bounds import (
    TABLE_QUANTILE,
    balanced_bound,
    balanced_probability_lower_bound,
    balanced_quantile_upper_bound,
    class_probabilities,
    equiprobable_bound,
    equiprobable_mean_upper_bound,
    equiprobable_probability_lower_bound,
    equiprobable_quantile_upper_bound,
    expected_latent_norm,
    expected_latent_robustness_bound,
    latent_bound,
    latent_mean_upper_bound,
    latent_probability_lower_bound,
    latent_quantile_upper_bound,
    latent_radius_quantile,
    mean_upper_bound,
    probability_lower_bound,
    quantile_upper_bound,
    robustness_quantile_bound,
    theorem1_bound,
    theorem4_bound,
    theorem4_equiprobable_bound,
    transfer_bound,
    transfer_probability_lower_bound,
)
from .modulus import (
    AffineModulus,
    EmpiricalModulus,
    IdentityModulus,
    LipschitzModulus,
    Modulus,
    ModulusNotConcaveError,
    RescaledModulus,
)

__version__ = "0.1.0"

# Submodules that need torch are imported on first use (``advbound.attacks.deepfool(...)``), so that
# ``import advbound`` and the ``bound`` command line stay fast and torch-free.
_LAZY_SUBMODULES = frozenset({"attacks", "projection", "generators", "classifiers", "montecarlo", "models",
                              "isoperimetry", "uniform_prior", "latent_linear", "lipschitz",
                              "data", "training", "checkpoints", "modulus_estimation", "experiments", "book", "cli"})


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'advbound' has no attribute {name!r}")

__all__ = [
    "TABLE_QUANTILE",
    # lower bounds on P(r <= eta)
    "probability_lower_bound",
    "latent_probability_lower_bound",
    "balanced_probability_lower_bound",
    "equiprobable_probability_lower_bound",
    "transfer_probability_lower_bound",
    # upper bounds on a quantile / the mean of the robustness
    "quantile_upper_bound",
    "latent_quantile_upper_bound",
    "balanced_quantile_upper_bound",
    "equiprobable_quantile_upper_bound",
    "mean_upper_bound",
    "latent_mean_upper_bound",
    "equiprobable_mean_upper_bound",
    "class_probabilities",
    "expected_latent_norm",
    # earlier names of the same functions
    "balanced_bound",
    "equiprobable_bound",
    "expected_latent_robustness_bound",
    "latent_bound",
    "latent_radius_quantile",
    "robustness_quantile_bound",
    "theorem1_bound",
    "theorem4_bound",
    "theorem4_equiprobable_bound",
    "transfer_bound",
    "AffineModulus",
    "EmpiricalModulus",
    "IdentityModulus",
    "LipschitzModulus",
    "Modulus",
    "ModulusNotConcaveError",
    "RescaledModulus",
    "__version__",
]
