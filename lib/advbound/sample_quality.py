"""Do the generated samples look like the data?  Four measures, each beside its value on real held-out images.

Theorem 1 holds for *any* generator, so a rough generator still gives a true bound; but the paper's claim is
about real image distributions, and a table computed on ambiguous, blob-like samples ``g(z)`` measures the
robustness of points that sit near every decision boundary.  So every data chapter measures (DESIGN.md,
"Generated samples must look like the data"), on ``g(z)`` and on real test images alike:

(a) **agreement**: the share of images on which all the chapter's classifiers give the same label;
(b) **confident share**: the share that the most accurate classifier labels with softmax confidence
    ``>= 0.9``;
(c) **largest class proportion**: the largest share of one label given by the most accurate classifier
    (10% for balanced classes; a generator that favours one class raises it);
(d) **Fréchet distance** between the two sets of images in the feature space of a classifier trained on real
    data (the input of the most accurate classifier's last linear layer), the construction of the FID
    (Heusel et al., NeurIPS 2017) with a chapter's own classifier in place of Inception, beside the distance
    between two disjoint real sets of the same size (its floor: what sampling alone gives).

Intervals: Clopper-Pearson for the proportions (a)-(c) (:func:`advbound.montecarlo.proportion_interval`; for
(c) the interval of the proportion of the class that is largest in the sample, which ignores that the class was
selected by the sample); for (d) a normal interval with a bootstrap standard error (:func:`frechet_interval`).
The targets of (a)-(c) are relative to the real-image value: (a) at least 0.9 x, (b) at least 0.8 x, (c) at most
0.15. A target counts as **met** when the whole 95% interval of the generated value is on the right side of it,
**missed** when the whole interval is on the wrong side, and **undecided** otherwise (the target's own sampling
error, through the real value, is not included: it is read as a fixed number).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .book import wrap
from .montecarlo import proportion_interval

#: softmax confidence above which a label counts as confident, measure (b)
CONFIDENT = 0.9
#: gap between the two largest logits (and distance of the largest probability to CONFIDENT) below which a
#: decision made in a working dtype is re-made in the model's own (softmax_and_features)
DECISION_TOLERANCE = 1e-3
#: targets of the measures, relative to the real-image value for (a) and (b), absolute for (c)
AGREEMENT_TARGET, CONFIDENT_TARGET, LARGEST_CLASS_TARGET = 0.9, 0.8, 0.15


def _probs_and_features(model: nn.Module, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model must contain an nn.Linear layer (its input is the feature space); "
                         f"{type(model).__name__} has none")
    caught: list[torch.Tensor] = []
    hook = linears[-1].register_forward_hook(lambda _m, inputs, _out: caught.append(inputs[0].detach().cpu()))
    try:
        probs = softmax_outputs(model, x, batch_size)
    finally:
        hook.remove()
    return probs, torch.cat(caught).flatten(1)


def softmax_and_features(model: nn.Module, x: torch.Tensor, batch_size: int = 500, *,
                         working_dtype: torch.dtype | None = None, tolerance: float = DECISION_TOLERANCE,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of ``model`` on the images ``x`` and the input of its last ``nn.Linear`` layer (the
    penultimate features, flattened), from one batched pass in eval mode without gradients; the model's mode
    is restored.  Both are returned on the CPU, in ``x``'s dtype.

    ``working_dtype`` (float32 for a float64 model: three times faster on a CPU) evaluates a copy of the model in
    that dtype, then re-evaluates in ``x``'s dtype every image whose decisions its rounding could change: a gap
    between the two largest logits below ``tolerance``, or a largest probability within ``tolerance`` of
    :data:`CONFIDENT`.  The labels (argmax) and the confident labels are then those of ``x``'s dtype: float32
    moves the logits of the book's networks by at most about 1e-5 against float64 (measured on every
    committed classifier and test set), a hundredth of the default tolerance.  Elsewhere the probabilities
    and features carry the working dtype's rounding (about 1e-7 relative)."""
    if working_dtype is None or working_dtype == x.dtype:
        return _probs_and_features(model, x, batch_size)
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0; got {tolerance!r}")
    fast = copy.deepcopy(model).to(working_dtype)
    probs, feats = (t.to(x.dtype) for t in _probs_and_features(fast, x.to(working_dtype), batch_size))
    top = probs.topk(min(2, probs.shape[1]), dim=1).values
    gap = top[:, 0].log() - top[:, -1].log() if top.shape[1] == 2 else torch.full_like(top[:, 0], math.inf)
    redo = ((gap < tolerance) | ((top[:, 0] - CONFIDENT).abs() < tolerance)).nonzero().flatten()
    if len(redo):
        probs[redo], feats[redo] = _probs_and_features(model, x[redo.to(x.device)], batch_size)
    return probs, feats


def last_linear_features(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The input of ``model``'s last ``nn.Linear`` layer for the images ``x`` (the penultimate features),
    computed in eval mode without gradients; the model's mode is restored."""
    return softmax_and_features(model, x, batch_size)[1]


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(s)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance squared between Gaussians fitted to the rows of ``a`` and ``b``:
    ``||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})`` (Dowson and Landau 1982;
    the FID of Heusel et al. 2017), computed with symmetric eigendecompositions in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"a and b must be (n, k) arrays with the same k and n >= 2; got {a.shape} and {b.shape}")
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _psd_sqrt(sa)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sb @ root), 0, None)).sum()
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa) + np.trace(sb) - 2 * cross)


def frechet_interval(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, n_boot: int = 200,
                     seed: int = 0) -> tuple[float, float]:
    """Normal interval ``FD +- z sd`` for :func:`frechet_distance` at these sample sizes, with ``sd`` the
    bootstrap standard error (both sets resampled ``n_boot`` times; Efron and Tibshirani, *An Introduction to the
    Bootstrap*, ch. 6 and 13).

    Why not the bootstrap's percentiles: the estimator is biased upwards (by about ``tr(S_a)/n_a + tr(S_b)/n_b``
    for Gaussians), and resampling with replacement adds that bias again, so percentile intervals sit above the
    estimate.  The interval here is for the expected value of the estimator at the same sizes, which is what a
    comparison with the real-versus-real value of the same size needs."""
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    rng = np.random.default_rng(seed)
    vals = [frechet_distance(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
            for _ in range(n_boot)]
    centre, half = frechet_distance(a, b), float(norm.ppf(0.5 + confidence / 2)) * float(np.std(vals, ddof=1))
    return max(0.0, centre - half), centre + half   # the estimator is never negative, nor its expectation


@dataclass(frozen=True)
class Measure:
    """One quality measure on generated and on real images, with 95% intervals and the target's verdict."""

    name: str
    generated: float
    generated_ci: tuple[float, float]
    real: float
    real_ci: tuple[float, float]
    target: float | None          # the value the generated measure must reach (None: no target)
    higher_is_better: bool

    @property
    def verdict(self) -> str:
        """``met`` / ``missed`` / ``undecided`` (the whole interval on one side of the target, or not); ``-``
        without a target."""
        if self.target is None:
            return "-"
        lo, hi = self.generated_ci
        if self.higher_is_better:
            return "met" if lo >= self.target else "missed" if hi < self.target else "undecided"
        return "met" if hi <= self.target else "missed" if lo > self.target else "undecided"


@dataclass
class SampleQuality:
    """The four measures of one generator against one chapter's real test images."""

    measures: list[Measure]
    judge: str            # the most accurate classifier (measures b-d)
    n_generated: int
    n_real: int

    def table(self) -> pd.DataFrame:
        """One row per measure: generated and real values with intervals, the target and its verdict."""
        def pct(v: float) -> str:
            return f"{100 * v:.1f}%"

        rows = {}
        for m in self.measures:
            fmt = (lambda v: f"{v:.3g}") if m.name.startswith("(d)") else pct
            rows[m.name] = {
                "g(z)": f"{fmt(m.generated)} [{fmt(m.generated_ci[0])}, {fmt(m.generated_ci[1])}]",
                "real test images": f"{fmt(m.real)} [{fmt(m.real_ci[0])}, {fmt(m.real_ci[1])}]",
                "target": "-" if m.target is None else ((">= " if m.higher_is_better else "<= ") + fmt(m.target)),
                "verdict": m.verdict,
            }
        return pd.DataFrame(rows).T

    def text(self) -> str:
        """The table as short lines (what the chapters print and nbval compares)."""
        lines = [f"sample quality: {self.n_generated} samples g(z) against {self.n_real} real test images; "
                 f"judge of (b)-(d): {self.judge}; [95% interval]"]
        for name, row in self.table().iterrows():
            lines.append(f"{name}:")
            lines.append(f"    g(z) {row['g(z)']}; real {row['real test images']}; target {row['target']}: "
                         f"{row['verdict']}")
        return wrap("\n".join(lines))

    def to_dict(self) -> dict[str, object]:
        return {"judge": self.judge, "n_generated": self.n_generated, "n_real": self.n_real,
                "measures": [{"name": m.name, "generated": m.generated, "generated_ci": list(m.generated_ci),
                              "real": m.real, "real_ci": list(m.real_ci), "target": m.target,
                              "verdict": m.verdict} for m in self.measures]}


def _proportion(k: int, n: int) -> tuple[float, tuple[float, float]]:
    return k / n, proportion_interval(k, n)


def sample_quality(probs_generated: Mapping[str, torch.Tensor], probs_real: Mapping[str, torch.Tensor], judge: str,
                   features_generated: np.ndarray, features_real: np.ndarray, *, seed: int = 0) -> SampleQuality:
    """Measures (a)-(d) of generated against real held-out images (see the module's docstring), from the
    classifiers' softmax outputs and the judge's features ((a) only with two classifiers or more).

    ``probs_generated`` / ``probs_real``: per classifier label, its class probabilities ``(n, K)`` on the
    generated and on the real images; ``judge``: the label of the most accurate classifier (for (b), (c) and
    the feature space of (d)); ``features_generated`` ``(n, k)`` and ``features_real`` ``(2 n, k)``: the
    judge's features of ``n`` generated images and of ``2 n`` real ones (two disjoint halves: the first is
    compared with the generated images, the second with the first for the real-versus-real floor)."""
    if set(probs_generated) != set(probs_real) or not probs_generated:
        raise ValueError("probs_generated and probs_real must hold the same classifiers (measure (a), their "
                         f"agreement, needs two); got {sorted(probs_generated)} and {sorted(probs_real)}")
    if judge not in probs_generated:
        raise ValueError(f"judge must be one of the classifiers {sorted(probs_generated)}; got {judge!r}")
    n = len(features_generated)
    if n < 2 or np.shape(features_real) != (2 * n, np.shape(features_generated)[1]):
        raise ValueError(f"features_real must hold twice as many rows as features_generated (n >= 2), with the "
                         f"same width; got {np.shape(features_generated)} and {np.shape(features_real)}")
    probs = {"gen": probs_generated, "real": probs_real}

    def agreement(kind: str) -> tuple[float, tuple[float, float]]:
        labels = torch.stack([p.argmax(1) for p in probs[kind].values()])
        return _proportion(int((labels == labels[0]).all(0).sum()), labels.shape[1])

    def confident(kind: str) -> tuple[float, tuple[float, float]]:
        p = probs[kind][judge]
        return _proportion(int((p.max(1).values >= CONFIDENT).sum()), p.shape[0])

    def largest(kind: str) -> tuple[float, tuple[float, float]]:
        p = probs[kind][judge]
        return _proportion(int(torch.bincount(p.argmax(1), minlength=p.shape[1]).max()), p.shape[0])

    measures: list[Measure] = []
    kinds: list[tuple[str, Callable[[str], tuple[float, tuple[float, float]]], float | None, bool]]
    kinds = [("(a) agreement of all classifiers", agreement, AGREEMENT_TARGET, True)] * (len(probs_generated) > 1)
    kinds += [(f"(b) confident labels (>= {CONFIDENT:g})", confident, CONFIDENT_TARGET, True),
              ("(c) largest class proportion", largest, None, False)]
    for name, fn, target, higher in kinds:
        (g, g_ci), (r, r_ci) = fn("gen"), fn("real")
        goal = LARGEST_CLASS_TARGET if target is None else target * r
        measures.append(Measure(name, g, g_ci, r, r_ci, goal, higher))
    gen = np.asarray(features_generated, dtype=np.float64)
    real_a, real_b = (np.asarray(features_real, dtype=np.float64)[k * n:(k + 1) * n] for k in (0, 1))
    measures.append(Measure("(d) Fréchet distance in the judge's features", frechet_distance(gen, real_a),
                            frechet_interval(gen, real_a, seed=seed), frechet_distance(real_b, real_a),
                            frechet_interval(real_b, real_a, seed=seed + 1), None, False))
    return SampleQuality(measures, judge, len(next(iter(probs_generated.values()))),
                         len(next(iter(probs_real.values()))))


def softmax_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities of ``model`` on ``x`` (eval mode, no gradients, batched; the mode is restored)."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return torch.cat([torch.softmax(model(x[i:i + batch_size]), dim=1)
                              for i in range(0, x.shape[0], batch_size)]).cpu()
    finally:
        model.train(was_training)


def measure_sample_quality(classifiers: Mapping[str, nn.Module], generated: torch.Tensor, real: torch.Tensor,
                           judge: str, *, seed: int = 0) -> SampleQuality:
    """:func:`sample_quality` from the models: ``classifiers`` by label, image batches ``generated`` and
    ``real`` (in the classifiers' dtype and device).  The Fréchet distances use ``n = min(len(generated),
    len(real) // 2)`` images of each set."""
    if judge not in classifiers:
        raise ValueError(f"judge must be one of the classifiers {sorted(classifiers)}; got {judge!r}")
    if generated.shape[1:] != real.shape[1:] or len(real) < 4 or len(generated) < 2:
        raise ValueError(f"generated and real must be image batches of the same shape (real >= 4 images); got "
                         f"{tuple(generated.shape)} and {tuple(real.shape)}")
    n = min(len(generated), len(real) // 2)
    gen_probs, gen_feats = softmax_and_features(classifiers[judge], generated)
    real_probs, real_feats = softmax_and_features(classifiers[judge], real)
    probs_generated = {k: gen_probs if k == judge else softmax_outputs(m, generated) for k, m in classifiers.items()}
    probs_real = {k: real_probs if k == judge else softmax_outputs(m, real) for k, m in classifiers.items()}
    return sample_quality(probs_generated, probs_real, judge, gen_feats[:n].double().numpy(),
                          real_feats[:2 * n].double().numpy(), seed=seed)


__all__ = [
    "AGREEMENT_TARGET",
    "CONFIDENT",
    "CONFIDENT_TARGET",
    "DECISION_TOLERANCE",
    "LARGEST_CLASS_TARGET",
    "Measure",
    "SampleQuality",
    "frechet_distance",
    "frechet_interval",
    "last_linear_features",
    "measure_sample_quality",
    "sample_quality",
    "softmax_and_features",
    "softmax_outputs",
]
