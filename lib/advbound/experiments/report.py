"""Results of the Section 5 pipeline: the paper's tables, our tables with their bounds and checks,
rounded text for the book, and the results JSON with provenance.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch

from ..book import result_files, wrap
from ..bounds import TABLE_QUANTILE, class_probabilities, robustness_quantile_bound
from ..checkpoints import atomic_write
from ..data import DISPLAY_NAMES, STAND_IN
from ..modulus_estimation import ModulusEstimate
from ..montecarlo import proportion_interval, quantile_interval, quantile_with_failures
from ..sample_quality import SampleQuality
from .profiles import ClassifierSpec, ExperimentConfig

ROWS = ("Error rate", "Robustness in the Z-space", "In-distribution robustness", "Unconstrained robustness")
BOUND_COLUMN = "Upper bound on robustness"
#: level of the table's confidence intervals
CONFIDENCE = 0.95

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
        raise ValueError(f"dataset must be one of {sorted(PAPER_TABLES)} (the paper has no MNIST table); "
                         f"got {dataset!r}")
    t = PAPER_TABLES[dataset]
    cols = {BOUND_COLUMN: t["bound"], **t["columns"]}
    return pd.DataFrame(cols, index=list(ROWS))


@dataclass
class ClassifierResult:
    """Per-classifier measurements (arrays are per latent sample)."""

    spec: ClassifierSpec
    error_rate: float
    class_proportions: np.ndarray
    r_z: np.ndarray
    r_in: np.ndarray
    r_unc: np.ndarray
    r_unc_attack: np.ndarray
    success: dict[str, float]
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    #: per sample, the distance from g(z) to the nearest generated image of another label (an attack-free upper
    #: estimate of r_in, :func:`advbound.experiments.pipeline.nearest_other_label`)
    r_nearest: np.ndarray | None = None
    #: per sample, the one-shot estimates that the stronger searches replace: DeepFool on x = g(z) for r_unc and
    #: latent DeepFool for r_Z (the paper's method), to say how far the table moved
    r_unc_deepfool: np.ndarray | None = None
    r_z_deepfool: np.ndarray | None = None

    @property
    def gap_ratio(self) -> np.ndarray:
        """``r_in / r_unc`` on the samples where both attacks succeeded (Theorem 2's factor 2 is its scale)."""
        both = np.isfinite(self.r_in) & np.isfinite(self.r_unc) & (self.r_unc > 0)
        return self.r_in[both] / self.r_unc[both]


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
    #: 95% confidence intervals of the table's entries (same index and columns; NaN where none applies):
    #: order-statistic intervals for the quantiles, Clopper-Pearson for the error rates
    ci_low: pd.DataFrame | None = None
    ci_high: pd.DataFrame | None = None
    #: do the generated samples look like the data (advbound.sample_quality)
    quality: SampleQuality | None = None
    #: generated and real test images with the most accurate classifier's labels and confidences (the "judge")
    gallery: dict[str, Any] = field(default_factory=dict)

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
            "table": _frame_dict(self.table),
            "confidence_level": CONFIDENCE,
            "table_ci_low": _frame_dict(self.ci_low),
            "table_ci_high": _frame_dict(self.ci_high),
            "bounds": _frame_dict(self.bounds),
            "checks": self.checks,
            "sample_quality": None if self.quality is None else self.quality.to_dict(),
            "normalisers": self.normalisers,
            "modulus": self.modulus.to_dict(),
            "classifiers": per,
            "gan_history": self.gan_history,
            "config": self.config.to_dict(),
        })

    def save(self, path: str | os.PathLike) -> Path:
        """Write the results JSON (provenance included) and the table as CSV, each atomically, to the two files
        that ``path`` names (:func:`advbound.book.result_files`: ``run``, ``run.json`` and ``run.csv`` all
        write ``run.json`` and ``run.csv``; ``model.v1`` writes ``model.v1.json``).  The CSV's first header
        cell names the data, so a stand-in's table says so wherever it goes.  Returns the JSON path."""
        json_path, csv_path = result_files(path)
        csv_text = self.table.rename_axis(_title(self.config.dataset, self.provenance["data"])).to_csv()
        for target, text in ((json_path, json.dumps(self.to_json_dict(), indent=1, sort_keys=False) + "\n"),
                             (csv_path, csv_text)):
            atomic_write(target, partial(_write_bytes, data=text.encode()))
        return json_path


def _write_bytes(fh: IO[bytes], data: bytes) -> None:
    fh.write(data)


def _frame_dict(frame: pd.DataFrame | None) -> dict[str, Any] | None:
    if frame is None:
        return None
    return {col: dict(zip(frame.index, frame[col].tolist(), strict=True)) for col in frame.columns}


def _title(dataset: str, data: str) -> str:
    names = DISPLAY_NAMES
    if data == STAND_IN:
        return f"{names[dataset]} pipeline on a SYNTHETIC STAND-IN (not {names[dataset]} results)"
    return f"{names[dataset]} (real data)"


def _tables(results: Sequence[ClassifierResult], est: ModulusEstimate, normalisers: dict[str, float],
            n_classes: int, n_test: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The table (point estimates), its bounds, and the lower and upper ends of 95% intervals."""
    q = TABLE_QUANTILE
    e_z, e_img = normalisers["E||z||"], normalisers["E||g(z)||"]
    z_bound = robustness_quantile_bound(q, n_classes=n_classes) / e_z
    img_bound = robustness_quantile_bound(q, n_classes=n_classes, modulus=est.modulus) / e_img
    nan4 = [math.nan] * 4
    cols: dict[str, list[float]] = {BOUND_COLUMN: [math.nan, z_bound, img_bound, img_bound]}
    lows: dict[str, list[float]] = {BOUND_COLUMN: nan4}
    highs: dict[str, list[float]] = {BOUND_COLUMN: nan4}
    bounds: dict[str, list[float]] = {}
    for r in results:
        samples = ((r.r_z, e_z), (r.r_in, e_img), (r.r_unc, e_img))
        cols[r.spec.label] = [r.error_rate] + [quantile_with_failures(v, q) / e for v, e in samples]
        err_ci = proportion_interval(int(round(r.error_rate * n_test)), n_test, CONFIDENCE)
        cis = [err_ci] + [tuple(x / e for x in quantile_interval(v, q, CONFIDENCE)) for v, e in samples]
        lows[r.spec.label] = [c[0] for c in cis]
        highs[r.spec.label] = [c[1] for c in cis]
        probs = class_probabilities(r.class_proportions)
        bounds[r.spec.label] = [
            z_bound, robustness_quantile_bound(q, class_probs=probs) / e_z,
            img_bound, robustness_quantile_bound(q, class_probs=probs, modulus=est.modulus) / e_img,
            float(probs.max()),
        ]
    index = list(ROWS)
    table, low, high = (pd.DataFrame(c, index=index) for c in (cols, lows, highs))
    bounds_df = pd.DataFrame(bounds, index=["Z-space bound, 10 equiprobable classes",
                                            "Z-space bound, measured class proportions",
                                            f"Image-space bound, equiprobable (estimated omega, delta = {est.delta:g})",
                                            "Image-space bound, measured proportions "
                                            f"(estimated omega, delta = {est.delta:g})",
                                            "Largest measured class proportion"])
    return table, bounds_df, low, high


def _checks(results: Sequence[ClassifierResult], bounds_df: pd.DataFrame, table: pd.DataFrame,
            high: pd.DataFrame) -> dict[str, Any]:
    """What must hold (the bound's value), what holds by construction (``r_unc <= r_in``), and the statistical
    comparisons of measured quantiles with the bounds, as margins: ``*_ci_high_over_bound`` is the upper end
    of the quantile's 95% interval divided by the bound (below 1: the whole interval lies below the bound).
    The measured quantiles are attacks' upper estimates on finitely many samples, so these are evidence, not
    theorem checks."""
    z_bound = float(table.loc[ROWS[1], BOUND_COLUMN])
    checks: dict[str, Any] = {
        "z_bound_equiprobable": z_bound,
        "z_bound_is_paper_0.016": round(z_bound, 3) == 0.016,
        "per_classifier": {},
    }
    for r in results:
        label = r.spec.label
        measured_z = float(table.loc[ROWS[1], label])
        z_own = float(bounds_df.loc[bounds_df.index[1], label])
        img_own = float(bounds_df.loc[bounds_df.index[3], label])
        both = np.isfinite(r.r_in) & np.isfinite(r.r_unc_attack)
        checks["per_classifier"][label] = {
            "z_quantile_below_equiprobable_bound": bool(measured_z <= z_bound),
            "z_quantile_below_measured_proportions_bound": bool(measured_z <= z_own),
            "z_quantile_over_measured_proportions_bound": measured_z / z_own,
            "z_ci_high_over_measured_proportions_bound": float(high.loc[ROWS[1], label]) / z_own,
            # informative only: the image-space bound rests on the *estimated* modulus (see modulus_estimation)
            "in_distribution_quantile_below_image_bound": bool(float(table.loc[ROWS[2], label]) <= img_own),
            "in_distribution_ci_high_over_image_bound": float(high.loc[ROWS[2], label]) / img_own,
            # by construction (the smaller of two valid points is kept): not a finding
            "r_unc_le_r_in_all_samples": bool(np.all(r.r_unc <= r.r_in)),
            "attack_alone_le_r_in_fraction": (float(np.mean(r.r_unc_attack[both] <= r.r_in[both]))
                                                if both.any() else math.nan),
            "ratio_r_in_over_r_unc_median": (float(np.median(r.r_in[both] / r.r_unc[both]))
                                             if both.any() else math.nan),
        }
    return checks


def _fmt(v: float, row: str, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf (attack failed)" if v > 0 else "-inf"
    if row == ROWS[0]:
        return f"{100 * v:.{max(digits - 1, 1)}f}%"
    return f"{v:.{digits}g}" if v >= 1e-2 else f"{v:.{digits - 1}e}"


def format_table(table: pd.DataFrame, digits: int = 2, low: pd.DataFrame | None = None,
                 high: pd.DataFrame | None = None) -> pd.DataFrame:
    """Numbers as strings with ``digits`` significant figures (error rates as percentages); ``-`` for NaN.
    With ``low`` / ``high`` (frames of the same shape), each entry is followed by its interval ``[lo, hi]``."""
    def cell(col: str, row: str) -> str:
        text = _fmt(float(table.loc[row, col]), row, digits)
        if low is None or high is None or text == "-":
            return text
        lo, hi = float(low.loc[row, col]), float(high.loc[row, col])
        if math.isnan(lo) or math.isnan(hi):
            return text
        return f"{text} [{_fmt(lo, row, digits)}, {_fmt(hi, row, digits)}]"
    return pd.DataFrame({c: [cell(c, row) for row in table.index] for c in table.columns}, index=table.index)


def side_by_side(result: ExperimentResult) -> pd.DataFrame:
    """Our table (with 95% intervals) next to the paper's (for SVHN and CIFAR-10), columns labelled with
    their source.  Below it, each classifier's own bounds (Theorem 1 with the class proportions it produces on
    ``g(z)``; the paper's column assumes 10 equiprobable classes, the smallest bound over all proportions) and
    its largest class proportion: a measured quantile above the equiprobable column is no contradiction when
    it lies below its own."""
    ours_label = "synthetic stand-in" if result.is_stand_in else f"ours, {result.provenance['profile']}"
    ours = format_table(result.table, 2, result.ci_low, result.ci_high)
    # Theorem 1 with each classifier's own class proportions: the bound that its measured quantiles must respect
    # (larger than the equiprobable column when the proportions are unequal)
    own = format_table(result.bounds.iloc[[1, 3]], 2).rename(index=dict(zip(result.bounds.index[[1, 3]],
                                                                               OWN_ROWS[:2], strict=True)))
    own[BOUND_COLUMN] = "-"
    largest = result.bounds.iloc[4]
    own.loc[OWN_ROWS[2]] = {BOUND_COLUMN: "-", **{c: f"{100 * largest[c]:.0f}%" for c in result.bounds.columns}}
    ours = pd.concat([ours, own[ours.columns]])
    ours.columns = pd.MultiIndex.from_tuples([(ours_label, c) for c in ours.columns])
    if result.config.dataset not in PAPER_TABLES:
        return ours
    paper = format_table(paper_table(result.config.dataset))
    paper.columns = pd.MultiIndex.from_tuples([("paper", c) for c in paper.columns])
    return pd.concat([paper, ours], axis=1).fillna("-")


#: the rows :func:`side_by_side` adds below the table: each classifier's own bounds and its largest class
OWN_ROWS = ("Z-space bound, this classifier's class proportions",
            "Image-space bound, this classifier's class proportions",
            "Largest class proportion of g(z)")


def _percent_below(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "no finite upper end (too many failed attacks)"
    gap = abs(1 - ratio)
    text = f"{100 * gap:.0f}%" if gap >= 0.1 else f"{100 * gap:.1f}%"  # one more digit near the bound
    return f"{text} below the bound" if ratio <= 1 else f"{text} ABOVE the bound"


def key_numbers(result: ExperimentResult, digits: int = 2) -> str:
    """The table's numbers with their 95% intervals, the bounds and the checks as rounded text (what the
    book's nbval checks compare: every number at the precision its interval supports)."""
    tag = " [SYNTHETIC STAND-IN, not real data]" if result.is_stand_in else " [real data]"
    n = result.provenance["samples"]
    lines = [f"{_title(result.config.dataset, result.provenance['data'])}, profile {result.provenance['profile']}, "
             f"seed {result.provenance['seed']}",
             f"25% quantiles over {n['latent_attacked']} latent samples, error rates over {n['test']} test images; "
             f"[95% confidence interval]"]
    ftab = format_table(result.table, digits, result.ci_low, result.ci_high)
    fb = format_table(result.bounds.iloc[:4], digits)
    # one value per line, so the page needs no sideways scrolling; the data label heads every block
    for frame, rows in ((ftab, ROWS), (fb, fb.index)):
        for row in rows:
            lines.append(f"{row}{tag}:")
            lines.extend(f"    {c} = {frame.loc[row, c]}" for c in frame.columns)
    ch = result.checks
    lines.append(f"Z-space bound (10 equiprobable classes, d = 100) = {ch['z_bound_equiprobable']:.4f}, "
                 f"rounds to the paper's 0.016: {ch['z_bound_is_paper_0.016']}")
    for label, c in ch["per_classifier"].items():
        lines.append(f"{label}:")
        lines.append("    Z-space: upper end of the 95% interval of the measured quantile is "
                     f"{_percent_below(c['z_ci_high_over_measured_proportions_bound'])} "
                     "(the bound with this classifier's class proportions)")
        lines.append("    in distribution: upper end of the 95% interval is "
                     f"{_percent_below(c['in_distribution_ci_high_over_image_bound'])} (estimated omega)")
    return wrap("\n".join(lines))
