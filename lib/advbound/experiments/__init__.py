"""The pipeline of the paper's Section 5: Tables 1 (SVHN) and 2 (CIFAR-10), and the same table on MNIST.

:mod:`~advbound.experiments.profiles` (what each profile trains and measures),
:mod:`~advbound.experiments.pipeline` (:func:`run_experiment`),
:mod:`~advbound.experiments.report` (tables, bounds, checks, results JSON) and
:mod:`~advbound.experiments.plots` (the chapters' figures).  Command line:
``python -m advbound experiment --dataset svhn --profile full``.
"""

from .findings import findings_text, section5_findings
from .pipeline import latent_search_results, nearest_other_label_index, obtain_networks, run_experiment, set_determinism
from .plots import plot_examples, plot_gap, plot_modulus, plot_robustness, plot_samples
from .profiles import ClassifierSpec, ExperimentConfig, experiment_config
from .report import (
                       BOUND_COLUMN,
                       PAPER_TABLES,
                       ROWS,
                       ClassifierResult,
                       ExperimentResult,
                       format_table,
                       key_numbers,
                       paper_table,
                       quantile_with_failures,
                       side_by_side,
)

__all__ = [
    "BOUND_COLUMN",
    "PAPER_TABLES",
    "ROWS",
    "ClassifierResult",
    "ClassifierSpec",
    "ExperimentConfig",
    "ExperimentResult",
    "experiment_config",
    "findings_text",
    "section5_findings",
    "plot_samples",
    "format_table",
    "key_numbers",
    "latent_search_results",
    "nearest_other_label_index",
    "obtain_networks",
    "paper_table",
    "plot_examples",
    "plot_gap",
    "plot_modulus",
    "plot_robustness",
    "quantile_with_failures",
    "run_experiment",
    "set_determinism",
    "side_by_side",
]
