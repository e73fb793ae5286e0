"""What the three data chapters (MNIST, SVHN / Table 1, CIFAR-10 / Table 2) share: one code path, so the
chapters differ only in their prose and parameters.

* :func:`run_chapter` runs the pipeline as a chapter does (one CPU thread in ci, the committed networks when
  they are there, checkpoints for the long profiles);
* :func:`setup_text`, :func:`check_text` and :func:`profiles_table` print what the chapters show;
  :func:`check_text` asserts what must hold and states the rest as measurements with their margins.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, book
from ..artifacts import artifact_folder
from ..data import DATASETS, PROFILES
from .pipeline import run_experiment, set_determinism
from .profiles import ExperimentConfig, experiment_config
from .report import ExperimentResult


def run_chapter(dataset: str, profile: str = "ci", seed: int = 0, *, artifacts: str | os.PathLike | None = "artifacts",
                retrain: bool = False, reattack: bool = False, data_root: str | os.PathLike | None = None,
                repository_url: str | None = None, commit: str | None = None) -> ExperimentResult:
    """The pipeline as a data chapter runs it.

    The networks come from ``artifacts/{dataset}-{profile}-seed{seed}/`` when that folder holds them
    (relative to the working folder: ``book/`` when the book is built), are retrained and rewritten there with
    ``retrain``, and are trained here otherwise (other profiles), with resumable checkpoints under the output
    folder (:func:`advbound.book.checkpoint_dir`) for ``colab`` / ``full``.  The committed witnesses of the
    searches in that folder are re-verified and used (:mod:`advbound.witnesses`); ``reattack`` runs the
    searches and rewrites them.  The ci profile runs on one CPU thread (the printed numbers are compared by
    nbval).

    Where the folder is absent (Colab, an empty working folder) and ``commit`` names the commit the page was
    built from, the committed folder is fetched from ``repository_url`` at that commit (or from
    ``$ADVBOUND_ARTIFACTS_URL``) and checked against the sha256 the installed package carries
    (:func:`advbound.artifacts.fetch_artifacts`), so the chapter analyses the networks the page shows."""
    from ..artifacts import ARTIFACTS_URL_ENV, artifact_index, fetch_artifacts, has_artifacts, raw_url

    set_determinism(seed, threads=1 if profile == "ci" else None)
    checkpoints = None if profile == "ci" else book.checkpoint_dir(dataset, profile, seed)
    folder = None if artifacts is None else artifact_folder(artifacts, dataset, profile, seed)
    if (folder is not None and not retrain and not has_artifacts(folder) and commit
            and folder.name in artifact_index()):
        source = os.environ.get(ARTIFACTS_URL_ENV) or raw_url(repository_url or "", commit)
        print(f"fetching the committed networks and witnesses of {folder.name} from {source}")
        fetch_artifacts(folder, source)
    return run_experiment(dataset, profile, seed=seed, checkpoint_dir=checkpoints, artifacts=folder,
                          retrain=retrain, reattack=reattack, data_root=data_root, progress=False)


def start(dataset: str, profile: str = "ci", seed: int = 0) -> book.Chapter:
    """Begin a data chapter (:func:`advbound.book.start`), silence torch's user warnings (deterministic-kernel
    notices), and print :func:`setup_text`."""
    warnings.filterwarnings("ignore", category=UserWarning)
    chapter = book.start(dataset, seed=seed)
    print(setup_text(dataset, profile, seed))
    return chapter


def _classifier_text(config: ExperimentConfig) -> str:
    return ", ".join(f"{c.label} ({c.arch} {c.kwargs}, {c.epochs} epochs)" for c in config.classifiers)


def setup_text(dataset: str, profile: str, seed: int) -> str:
    """The chapter's first printed lines: version, profile, seed, expected time and the classifiers."""
    config = experiment_config(dataset, profile)
    lines = [f"advbound {__version__}, profile={profile}, seed={seed}, expected time: {config.expected_time}",
             f"classifiers: {_classifier_text(config)}"]
    return book.wrap("\n".join(lines))


def check_text(result: ExperimentResult) -> str:
    """Assert what must hold, and return the measured comparisons as text.

    Asserted: the equiprobable Z-space bound is the paper's 0.016 (a property of eq. (2) alone), and every
    reported adversarial point was re-verified on the model by the attacks (their ``success`` flags); the
    per-sample ``r_unc <= r_in`` holds by construction (the smaller of two valid points is kept) and is
    asserted as a consistency check, not reported as a finding.  Everything else is a measurement: an attack's
    upper estimate on finitely many samples, printed with its margin."""
    checks = result.checks
    assert checks["z_bound_is_paper_0.016"], checks["z_bound_equiprobable"]
    tag = "SYNTHETIC STAND-IN" if result.is_stand_in else "real data"
    lines = [f"Z-space bound for 10 equiprobable classes, d = 100: {checks['z_bound_equiprobable']:.4f} "
             "(the paper's 0.016)"]
    for r in result.classifiers:
        c = checks["per_classifier"][r.spec.label]
        assert c["r_unc_le_r_in_all_samples"], r.spec.label  # by construction, not a finding
        ratio = c["z_quantile_over_measured_proportions_bound"]
        lines.append(f"{r.spec.label} [{tag}]: measured Z-space 25% quantile = {ratio:.2f} x its bound "
                     f"(upper end of the 95% interval: {c['z_ci_high_over_measured_proportions_bound']:.2f} x); "
                     f"the unconstrained attack alone no farther than the in-distribution point on "
                     f"{c['attack_alone_le_r_in_fraction']:.0%} of the samples")
    return book.wrap("\n".join(lines))


def modulus_text(result: ExperimentResult) -> str:
    """How the estimated omega enters the image-space bound, and what its linear interpolation between grid
    radii means: the latent root t* of eq. (2) (at q + delta, 10 equiprobable classes) usually falls between
    two grid radii, where omega is interpolated, not measured.  Since a modulus is non-decreasing, the value at
    the next grid radius is the bound that uses measured radii only."""
    from ..bounds import TABLE_QUANTILE, latent_radius_quantile

    est = result.modulus
    e_img = result.normalisers["E||g(z)||"]
    n_classes = len(result.classifiers[0].class_proportions)
    t_star = float(latent_radius_quantile(TABLE_QUANTILE + est.delta, n_classes=n_classes))
    radii = est.modulus.radii
    k = int(np.searchsorted(radii, t_star))
    omega = float(est.modulus(t_star))
    lines = [f"delta = {est.delta:g}, latent samples = {est.n_samples}, confidence correction = "
             f"{est.confidence if est.confidence else 'none (plain empirical quantile)'}",
             f"E||z||_2 = {result.normalisers['E||z||']:.3f}, mean ||g(z)||_2 = {e_img:.3f}",
             f"t* = {t_star:.4f} (eq. (2) at probability {TABLE_QUANTILE + est.delta:g}, {n_classes} equiprobable "
             f"classes); omega(t*) = {omega:.3g}, image-space bound = {omega / e_img:.3g}"]
    if 0 < k < radii.size:
        nxt = float(est.modulus.values[k])
        lines.append(f"t* lies between the grid radii {radii[k - 1]:.3g} and {radii[k]:.3g}, where omega is "
                     f"interpolated linearly; at the next grid radius omega = {nxt:.3g}, so a bound that uses "
                     f"measured radii only would be {nxt / e_img:.3g} ({nxt / omega - 1:+.0%})")
    return book.wrap("\n".join(lines))


def gap_text(result: ExperimentResult) -> str:
    """Per classifier, the median of ``r_in / r_unc`` with its 95% order-statistic interval and the fraction
    of samples above Theorem 2's factor 2 with its Clopper-Pearson interval (samples where both attacks
    succeeded)."""
    from ..montecarlo import compare_quantiles, proportion_interval, quantile_interval

    tag = "SYNTHETIC STAND-IN" if result.is_stand_in else "real data"
    lines = []
    for r in result.classifiers:
        ratio = r.gap_ratio
        if ratio.size == 0:
            lines.append(f"{r.spec.label} [{tag}]: no sample where both attacks succeeded")
            continue
        lo, hi = quantile_interval(ratio, 0.5)
        above = int(np.sum(ratio > 2))
        plo, phi = proportion_interval(above, ratio.size)
        lines.append(f"{r.spec.label} [{tag}]: median r_in / r_unc = {np.median(ratio):.2f} [{lo:.2f}, {hi:.2f}]; "
                     f"above 2 on {above / ratio.size:.0%} [{plo:.0%}, {phi:.0%}] of {ratio.size} samples")
    ratios = {r.spec.label: r.gap_ratio for r in result.classifiers}
    first = result.classifiers[0].spec.label
    for label, ratio in ratios.items():
        if label != first and ratio.size and ratios[first].size:
            lines.append(compare_quantiles(ratio, ratios[first], 0.5, names=(label, first),
                                           what="median r_in / r_unc").sentence)
    return book.wrap("\n".join(lines))


def findings_table(result: ExperimentResult) -> pd.DataFrame:
    """The four Section 5 observations (:mod:`advbound.experiments.findings`): claim, our criterion, verdict."""
    from .findings import section5_findings

    rows = {f"({f.key})": {"the paper's observation": f.claim, "criterion (ours)": f.criterion,
                           "verdict here": f.verdict} for f in section5_findings(result)}
    return pd.DataFrame(rows).T


def differences(result: ExperimentResult) -> Any:
    """Where this chapter's answer to the paper's Section 5 observations differs from the paper, and why it may
    (:func:`advbound.experiments.findings.why_it_may_differ`), as a Markdown list."""
    from IPython.display import Markdown

    from .findings import why_it_may_differ

    items = why_it_may_differ(result)
    return Markdown("\n".join(f"- {item}" for item in items) if items else
                    "Every observation that this chapter tests is reproduced.")


def summary(result: ExperimentResult) -> Any:
    """The chapter's findings in a few sentences, written by code from the measurements (so prose and numbers
    cannot disagree), as Markdown for the page's first screen."""
    from IPython.display import Markdown

    from ..data import DISPLAY_NAMES
    from .findings import section5_findings

    n = result.provenance["samples"]["latent_attacked"]
    data = ("**a synthetic stand-in**, not real data" if result.is_stand_in
            else f"real {DISPLAY_NAMES[result.config.dataset]} images")
    parts = [f"On {data} (profile `{result.config.profile}`, {n} latent samples per classifier, 95% intervals):"]
    if result.quality is not None:
        verdicts = [m for m in result.quality.measures if m.target is not None]
        met = sum(m.verdict == "met" for m in verdicts)
        a = result.quality.measures[0]
        parts.append(f"the generator's samples meet {met} of the {len(verdicts)} sample-quality targets ({a.name[4:]}: "
                     f"{100 * a.generated:.0f}% [{100 * a.generated_ci[0]:.0f}%, {100 * a.generated_ci[1]:.0f}%] of "
                     f"them, against {100 * a.real:.0f}% of real test images);")
    findings = section5_findings(result)
    by_verdict: dict[str, list[str]] = {}
    for f in findings:
        by_verdict.setdefault(f.verdict, []).append(f"({f.key})")
    said = [f"{', '.join(keys)} {verdict}" for verdict, keys in by_verdict.items()]
    parts.append("of the paper's four Section 5 observations, " + "; ".join(said) + ".")
    return Markdown(" ".join(parts))


def chapter_claims(result: ExperimentResult) -> list[dict[str, Any]]:
    """The paper's claims this data chapter tests, for the page "The paper's claims, checked": the four Section
    5 observations (:mod:`advbound.experiments.findings`), the value of the Z-space bound, and whether the
    generated samples reach the sample-quality targets.  On a synthetic stand-in every verdict is
    "illustrated on a synthetic stand-in": nothing there tests the paper."""
    from .findings import section5_findings

    ds = result.config.dataset
    stand_in = result.is_stand_in

    def verdict(v: str) -> str:
        return "illustrated on a synthetic stand-in" if stand_in else v

    figures = {"i": "robustness", "ii": "robustness", "iii": "gap", "iv": "robustness"}
    claims: list[dict[str, Any]] = [{"claim": f.claim, "where": "Section 5", "verdict": verdict(f.verdict),
               "value": " ".join(f.evidence[0].split()) if f.evidence else "-",
               "figure": f"fig-{ds}-{figures[f.key]}"} for f in section5_findings(result)]
    z = result.checks["z_bound_equiprobable"]
    claims.append({"claim": "the Z-space bound for 10 equiprobable classes and d = 100 is 16 x 10^-3",
                   "where": "Tables 1-2", "verdict": "holds" if result.checks["z_bound_is_paper_0.016"] else
                   "does not hold", "value": f"{z:.4f} (eq. (2), no sampling)", "figure": None})
    if result.quality is not None:
        met = [m for m in result.quality.measures if m.target is not None]
        n_met = sum(m.verdict == "met" for m in met)
        claims.append({"claim": "the generator models the data (the book's precondition for reading Section 5 on "
                                "real images; the paper assumes it)", "where": "Section 5 (assumed)",
                       "verdict": verdict("holds" if n_met == len(met) else "does not hold"),
                       "value": f"{n_met} of {len(met)} sample-quality targets met",
                       "figure": f"fig-{ds}-samples"})
    return claims


def moved_text(result: ExperimentResult) -> str:
    """How far the stronger searches moved ``r_unc`` and ``r_Z`` from the paper's one-shot DeepFool: per
    classifier, the 25% quantiles with their intervals (compared under the book's rule) and the median and 90th
    percentile of the per-sample ratio DeepFool / stronger search (>= 1: the stronger search found a closer
    point)."""
    from ..montecarlo import compare_quantiles
    from .findings import one_shot_ratio

    lines = []
    for r in result.classifiers:
        for what, new, old, scale, search in (
                ("r_unc", r.r_unc, r.r_unc_deepfool, result.normalisers["E||g(z)||"], "unconstrained_attack"),
                ("r_Z", r.r_z, r.r_z_deepfool, result.normalisers["E||z||"], "latent_boundary_search")):
            if old is None:
                continue
            new, ratio = one_shot_ratio(new, old)
            if ratio.size == 0:
                lines.append(f"{r.spec.label}, {what}: no sample where both searches succeeded")
                continue
            cmp = compare_quantiles(old / scale, new / scale, 0.25, names=("DeepFool", search),
                                    what=f"normalised 25% quantile of {what}")
            lines.append(f"{r.spec.label}, {what}: DeepFool / {search} per sample: median "
                         f"{np.median(ratio):.3f}, 90th percentile {np.quantile(ratio, 0.9):.3f} "
                         f"({ratio.size} of the first {len(old)} of {len(r.r_unc)} samples); {cmp.sentence}")
    return book.wrap("\n".join(lines))


def save_results(result: ExperimentResult) -> str:
    """Save the results JSON and CSV under the output folder (:func:`advbound.book.results_path`) and the
    chapter's claims (:func:`chapter_claims`, :func:`advbound.book.save_claims`), and return a short account of
    where they went and what they rest on (data, networks, searches, dtype, seed, date)."""
    book.save_claims(result.config.dataset, chapter_claims(result))
    path = result.save(book.results_path(result.config.dataset, result.config.profile))
    prov = result.provenance
    lines = [f"results and provenance saved to {path} (and {path.with_suffix('.csv').name})"]
    lines += [f"{k}: {prov[k]}" for k in ("data", "data_origin", "networks", "latent_searches", "analysis_dtype",
                                          "seed", "date")]
    lines.append(f"samples: {prov['samples']}")
    return book.wrap("\n".join(lines))


def full_profile_text(dataset: str) -> str:
    """What the ``full`` profile of ``dataset`` costs, from a dry run at its real sizes (FLOPs counted, nothing
    timed or trained: the same on every machine)."""
    from .dryrun import dry_run

    return dry_run(dataset, "full", probe_batch=1, repeats=0).summary().split("\n", 1)[1]


def _profile_row(config: ExperimentConfig) -> dict[str, Any]:
    from ..data import DISPLAY_NAMES

    name = DISPLAY_NAMES[config.dataset]
    data = ("MNIST test set" if config.dataset == "mnist" and config.profile == "ci"
            else f"{name}, official files ($ADVBOUND_FASHION_MNIST_DIR) or torchvision"
            if config.dataset == "fashion_mnist" and config.profile == "ci"
            else "synthetic stand-in" if config.profile == "ci"
            else f"{name} via torchvision (download)")
    split = (f"{config.n_train:,} / {config.n_test:,}" if config.n_train else
             "8,000 / 2,000" if config.dataset == "mnist" and config.profile == "ci" else "official splits")
    omega = (f"{config.modulus_samples} samples x {config.modulus_radii} radii"
             + (f", {config.modulus_confidence:.0%} order-statistic correction" if config.modulus_confidence else ""))
    return {
        "data (train / test)": f"{data}, {split}",
        "DCGAN": f"width {config.gan_width}, {config.gan_epochs} epochs"
                 + (f", weights averaged (EMA {config.gan_ema:g})" if config.gan_ema else "")
                 + (f", DiffAugment ({' + '.join(config.gan_augment)})" if config.gan_augment else ""),
        "classifiers": _classifier_text(config),
        "latent samples attacked": f"{config.n_eval:,}",
        "omega": omega,
        "attacks": (f"{config.attack.max_steps} steps, "
                    + ("all classes" if config.attack.candidates is None
                       else f"top {config.attack.candidates} classes")
                    + f"{', refined' if config.attack.refine else ''}, {config.analysis_dtype}"),
        "expected time": config.expected_time,
    }


def profiles_table(dataset: str) -> pd.DataFrame:
    """The chapter's "Profiles" table, generated from :func:`experiment_config` (so it cannot contradict it)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")
    return pd.DataFrame({p: _profile_row(experiment_config(dataset, p)) for p in PROFILES})


__all__ = [
    "differences",
    "chapter_claims",
    "check_text",
    "findings_table",
    "full_profile_text",
    "gap_text",
    "modulus_text",
    "moved_text",
    "profiles_table",
    "run_chapter",
    "save_results",
    "setup_text",
    "start",
    "summary",
]
