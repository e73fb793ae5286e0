"""Results of the Section 5 pipeline: the paper's tables, our tables with their bounds and checks,
rounded text for the book, and the results JSON with provenance.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..bounds import TABLE_QUANTILE, class_probabilities, robustness_quantile_bound
from ..data import STAND_IN
from ..modulus_estimation import ModulusEstimate
from .profiles import ClassifierSpec, ExperimentConfig

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
        """Write the results JSON (provenance included) atomically to ``path`` with a ``.json`` suffix, and the
        table beside it with a ``.csv`` suffix (``--out run.csv`` writes ``run.json`` and ``run.csv``).
        Returns the JSON path."""
        base = Path(path)
        if base.suffix.lower() in (".json", ".csv"):
            base = base.with_suffix("")
        json_path, csv_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".csv")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        for target, text in ((json_path, json.dumps(self.to_json_dict(), indent=1, sort_keys=False) + "\n"),
                             (csv_path, self.table.to_csv())):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, target)
        return json_path


def _title(dataset: str, data: str) -> str:
    names = {"mnist": "MNIST", "svhn": "SVHN", "cifar10": "CIFAR-10"}
    if data == STAND_IN:
        return f"{names[dataset]} pipeline on a SYNTHETIC STAND-IN (not {names[dataset]} results)"
    return f"{names[dataset]} (real data)"


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
