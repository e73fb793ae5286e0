"""Figures of the data chapters: examples of perturbed samples, robustness distributions, the modulus."""

from __future__ import annotations

import math

import numpy as np

from ..bounds import TABLE_QUANTILE
from ..montecarlo import dkw_half_width
from .report import BOUND_COLUMN, ROWS, ExperimentResult


def plot_examples(result: ExperimentResult, classifier: int = 0, n: int = 4):
    """Generated samples and their three perturbed versions: latent (r_Z), in-distribution (r_in) and
    unconstrained (r_unc), with the classifier's labels.  Returns a matplotlib figure."""
    import matplotlib.pyplot as plt

    ex = result.classifiers[classifier].examples
    n = min(n, ex["x"].shape[0])
    cols = [("x", "labels", "g(z)"), ("x_latent", "labels_latent", "g(z + r), latent"),
            ("x_in", "labels_in", "in-distribution"), ("x_unc", "labels_unc", "unconstrained")]
    fig, axes = plt.subplots(n, 4, figsize=(6.4, 1.7 * n), squeeze=False)
    for i in range(n):
        for j, (key, lab, title) in enumerate(cols):
            img = ex[key][i].clamp(0, 1).permute(1, 2, 0).numpy()
            ax = axes[i, j]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            dist = "" if j == 0 else f", {(ex[key][i] - ex['x'][i]).norm():.2f}"
            ax.set_title(f"{title if i == 0 else ''}\nlabel {int(ex[lab][i])}{dist}", fontsize=7)
            ax.axis("off")
    if result.is_stand_in:
        fig.suptitle("SYNTHETIC STAND-IN data (not real-data results)", color="crimson", fontsize=9)
    fig.tight_layout()
    return fig


def plot_samples(result: ExperimentResult, rows: int = 4, cols: int = 8):
    """Real test images (left) and generated samples ``g(z)`` (right), each titled with the most accurate
    classifier's label and its softmax confidence: can a reader recognise the generated ones?"""
    import matplotlib.pyplot as plt

    from ..data import CLASS_NAMES

    gal = result.gallery
    names = CLASS_NAMES[result.config.dataset]
    n = min(rows * cols, gal["real"].shape[0], gal["generated"].shape[0])
    fig = plt.figure(figsize=(11, 1.45 * rows + 0.5))
    panels = [fig.subfigures(1, 2, wspace=0.04)[k] for k in (0, 1)]  # type: ignore[index]
    for panel, kind, title in ((panels[0], "real", "real test images"), (panels[1], "generated", "generated g(z)")):
        axes = panel.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k >= n:
                continue
            img = gal[kind][k].clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{names[int(gal[f'{kind}_labels'][k])]} {float(gal[f'{kind}_confidence'][k]):.2f}",
                         fontsize=6.5)
        panel.suptitle(f"{title} (labels: {gal['judge']})", fontsize=9)
    if result.is_stand_in:
        fig.text(0.5, 0.0, "SYNTHETIC STAND-IN data (not real-data results)", color="crimson", ha="center",
                 fontsize=9)
    return fig


def plot_robustness(result: ExperimentResult):
    """Empirical CDFs of the normalised robustness (Z-space, in-distribution, unconstrained) per classifier.

    Each curve carries a simultaneous 95% band (Dvoretzky-Kiefer-Wolfowitz, half-width
    ``sqrt(log(2 / 0.05) / (2 n))``) and, at the 25% level, the 95% interval of its quantile (the bar).  The
    dashed line in a classifier's colour is the upper bound of Theorem 1 on its 25% quantile with its own
    measured class proportions; the black dotted line is the bound for 10 equiprobable classes (the paper's
    column), which is the smallest over all class proportions."""
    import matplotlib.pyplot as plt

    e_z, e_img = result.normalisers["E||z||"], result.normalisers["E||g(z)||"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    kinds = [("r_z", e_z, ROWS[1], 1, "Z-space  $r_Z / E\\|z\\|$"),
             ("r_in", e_img, ROWS[2], 3, "in-distribution  $r_{in} / E\\|g(z)\\|$"),
             ("r_unc", e_img, ROWS[3], 3, "unconstrained  $r_{unc} / E\\|g(z)\\|$")]
    for ax, (attr, norm, row, bound_row, title) in zip(axes, kinds, strict=True):
        for k, c in enumerate(result.classifiers):
            colour = f"C{k}"
            v = np.sort(getattr(c, attr) / norm)
            ecdf = np.arange(1, v.size + 1) / v.size
            half = dkw_half_width(v.size)
            ax.step(v, ecdf, where="post", color=colour, label=c.spec.label)
            ax.fill_between(v, np.clip(ecdf - half, 0, 1), np.clip(ecdf + half, 0, 1), step="post", color=colour,
                            alpha=0.15, lw=0)
            if result.ci_low is not None and result.ci_high is not None:
                lo, hi = float(result.ci_low.loc[row, c.spec.label]), float(result.ci_high.loc[row, c.spec.label])
                if math.isfinite(lo) and math.isfinite(hi):
                    ax.plot([lo, hi], [TABLE_QUANTILE] * 2, color=colour, lw=3, alpha=0.8, solid_capstyle="butt")
            own = float(result.bounds.iloc[bound_row][c.spec.label])
            if math.isfinite(own):
                ax.axvline(own, ls="--", color=colour, lw=1)
        b = float(result.table.loc[row, BOUND_COLUMN])
        if math.isfinite(b):
            ax.axvline(b, ls=":", color="k", lw=1.2, label="bound, 10 equiprobable classes")
        ax.axhline(TABLE_QUANTILE, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("fraction of samples")
    axes[0].legend(fontsize=7)
    if result.is_stand_in:
        fig.suptitle("SYNTHETIC STAND-IN data (not real-data results)", color="crimson", fontsize=10)
    fig.tight_layout()
    return fig


def plot_modulus(result: ExperimentResult):
    """The estimated modulus omega(t) of the generator (the (1 - delta) quantile over z of the ascent
    estimates, made monotone), the median of the same estimates, and how the image-space bound is read off:
    the latent root t* of eq. (2) at q + delta (10 equiprobable classes) mapped to omega(t*)."""
    import matplotlib.pyplot as plt

    from ..bounds import latent_radius_quantile

    est = result.modulus
    t = est.radii[1:]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(t, np.median(est.increments[1:], axis=1), "o-", color="grey", ms=3, label="median over z")
    ax.plot(t, est.raw[1:], "x", color="C1", label=f"{1 - est.delta:.0%} quantile over z")
    ax.plot(t, est.modulus.values[1:], "-", color="C0", lw=2, label="omega (monotone)")
    n_classes = len(result.classifiers[0].class_proportions)
    t_star = latent_radius_quantile(TABLE_QUANTILE + est.delta, n_classes=n_classes)
    eta = float(est.modulus(t_star))
    floor = 0.5 * float(np.min(np.median(est.increments[1:], axis=1)))
    ax.plot([t_star, t_star, t[0]], [floor, eta, eta], "k--", lw=1,
            label=f"t* = {t_star:.3f}, omega(t*) = {eta:.3g} ({n_classes} equiprobable classes)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent radius t")
    ax.set_ylabel("image distance (pixels in [0, 1])")
    ax.legend(fontsize=7)
    if result.is_stand_in:
        ax.set_title("SYNTHETIC STAND-IN generator (not real data)", color="crimson", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gap(result: ExperimentResult):
    """The distribution of ``r_in / r_unc`` for each classifier (empirical CDF over the samples where both
    attacks succeeded), with the ratio 1 (``r_unc <= r_in`` always) and the factor 2 of Theorem 2 marked: the
    projection classifier of eq. (5) has ``r_in / r_unc <= 2``, so a classifier whose ratios lie right of 2
    could gain unconstrained robustness by projecting onto the generator's range.  Returns a matplotlib
    figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    highest = 2.0
    for k, c in enumerate(result.classifiers):
        r_in, r_unc = np.asarray(c.r_in, dtype=float), np.asarray(c.r_unc, dtype=float)
        ok = np.isfinite(r_in) & np.isfinite(r_unc) & (r_unc > 0)
        if not ok.any():
            continue
        ratio = np.sort(r_in[ok] / r_unc[ok])
        above = float(np.mean(ratio > 2.0))
        ax.step(ratio, np.arange(1, ratio.size + 1) / ratio.size, where="post", color=f"C{k}",
                label=f"{c.spec.label}: median {np.median(ratio):.2f}, {above:.0%} above 2 (n = {ratio.size})")
        highest = max(highest, float(ratio[-1]))
    ax.axvline(1.0, color="grey", lw=1, label=r"$r_{unc} = r_{in}$")
    ax.axvline(2.0, color="k", ls="--", lw=1.5, label=r"factor 2 of Theorem 2 ($r_{in} = 2 r_{unc}$)")
    ax.set_xscale("log")
    ax.set_xlim(0.9, 1.1 * highest)
    ax.xaxis.set_major_locator(FixedLocator([t for t in (1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200) if t <= highest * 1.1]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(r"$r_{in} / r_{unc}$ (per generated sample)")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=7, loc="lower right")
    if result.is_stand_in:
        ax.set_title("SYNTHETIC STAND-IN data (not real-data results)", color="crimson", fontsize=9)
    fig.tight_layout()
    return fig
