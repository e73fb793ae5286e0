"""The Tables 1-2 pipeline end to end on a tiny synthetic stand-in (seconds), the paper's tables, checks."""

import contextlib
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from advbound import experiments as ex
from advbound.attacks import DeepFoolOptions
from advbound.data import STAND_IN, DataUnavailableError
from advbound.training import PGDConfig


def tiny_config(dataset="svhn"):
    cfg = ex.experiment_config(dataset, "ci")
    spec = ex.ClassifierSpec("2-Layer LeNet", "lenet", {"width": 2, "hidden": 8, "image_size": cfg.image_size}, 1, 5e-3)
    return dataclasses.replace(cfg, classifiers=(spec,), gan_width=4, disc_width=2, gan_epochs=1, n_train=128,
                               n_test=64, n_eval=12, n_one_shot=5, n_norm=50, modulus_samples=12, modulus_radii=5,
                               modulus_restarts=1, modulus_steps=2, modulus_confidence=None,
                               attack=DeepFoolOptions(max_steps=20))


@pytest.fixture(scope="module")
def tiny_result():
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    ex.set_determinism(0, threads=1)
    try:
        return ex.run_experiment("svhn", "ci", seed=0, config=tiny_config(), device="cpu", progress=False,
                                 log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def test_paper_tables():
    t1 = ex.paper_table("svhn")
    assert list(t1.index) == list(ex.ROWS)
    assert t1.loc["Robustness in the Z-space", ex.BOUND_COLUMN] == pytest.approx(16e-3)
    assert t1.loc["Unconstrained robustness", "ResNet-101"] == pytest.approx(1.4e-2)
    t2 = ex.paper_table("cifar10")
    assert t2.loc["Error rate", "Wide ResNet + Adv. training"] == pytest.approx(0.16)
    with pytest.raises(ValueError, match="no MNIST table"):
        ex.paper_table("mnist")


def test_quantile_with_failures():
    assert ex.quantile_with_failures(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.25) == pytest.approx(2.0)
    assert ex.quantile_with_failures(np.array([1.0, 2.0, math.inf, math.inf, math.inf]), 0.25) == pytest.approx(2.0)
    assert ex.quantile_with_failures(np.array([1.0, math.inf, math.inf, math.inf, math.inf]), 0.25) == math.inf


def test_profiles_exist_and_are_documented():
    for d in ("mnist", "svhn", "cifar10"):
        for p in ("ci", "colab", "full"):
            cfg = ex.experiment_config(d, p)
            assert cfg.expected_time and cfg.classifiers
    assert [c.label for c in ex.experiment_config("cifar10", "full").classifiers] == list(
        ex.PAPER_TABLES["cifar10"]["columns"])
    # only the third CIFAR-10 column is adversarially trained, with the default PGD of [10]
    assert [c.adversarial for c in ex.experiment_config("cifar10", "full").classifiers] == [None, None, PGDConfig()]
    with pytest.raises(ValueError, match="profile"):
        ex.experiment_config("svhn", "huge")


def test_pipeline_on_tiny_stand_in(tiny_result, tmp_path):
    res = tiny_result
    assert res.is_stand_in and res.provenance["data"] == STAND_IN
    assert list(res.table.index) == list(ex.ROWS) and "2-Layer LeNet" in res.table.columns
    # the paper's check value, and the pipeline's own checks
    assert res.checks["z_bound_is_paper_0.016"]
    assert res.checks["z_bound_equiprobable"] == pytest.approx(0.0158, abs=5e-5)
    c = res.classifiers[0]
    assert np.all(c.r_unc <= c.r_in)
    assert res.checks["per_classifier"]["2-Layer LeNet"]["r_unc_le_r_in_all_samples"]
    assert c.class_proportions.sum() == pytest.approx(1.0)
    # the bound with the measured proportions uses them, the image-space bound carries delta
    assert res.bounds.shape == (5, 1)
    assert res.modulus.delta == res.config.delta
    # provenance and JSON
    prov = res.provenance
    for key in ("profile", "data", "device", "seed", "versions", "date", "samples"):
        assert key in prov
    path = res.save(tmp_path / "r.json")
    loaded = json.loads(path.read_text())
    assert "SYNTHETIC STAND-IN" in loaded["title"] and loaded["provenance"]["samples"]["latent_attacked"] == 12
    assert path.with_suffix(".csv").exists()
    # display helpers say where numbers come from
    side = ex.side_by_side(res)
    assert ("paper", "ResNet-18") in side.columns and ("synthetic stand-in", "2-Layer LeNet") in side.columns


def test_plot_examples_shows_each_sample_and_its_three_perturbations(tiny_result):
    ex_ = tiny_result.classifiers[0].examples
    with _figure(ex.plot_examples(tiny_result, n=2)) as fig:
        axes = np.array(fig.axes).reshape(2, 4)
        assert any("SYNTHETIC STAND-IN" in t.get_text() for t in fig.texts)  # the suptitle
        for i in range(2):
            for j, (key, lab) in enumerate([("x", "labels"), ("x_latent", "labels_latent"), ("x_in", "labels_in"),
                                            ("x_unc", "labels_unc")]):
                shown = axes[i, j].get_images()[0].get_array()
                image = ex_[key][i].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()
                np.testing.assert_array_equal(shown, image)
                title = axes[i, j].get_title()
                assert f"label {int(ex_[lab][i])}" in title
                if j:  # the distance of the perturbed image to g(z)
                    assert title.endswith(f", {float((ex_[key][i] - ex_['x'][i]).norm()):.2f}")


def test_plot_robustness_draws_each_empirical_cdf_and_the_bounds(tiny_result):
    res = tiny_result
    c = res.classifiers[0]
    e_z, e_img = res.normalisers["E||z||"], res.normalisers["E||g(z)||"]
    with _figure(ex.plot_robustness(res)) as fig:
        assert len(fig.axes) == 3
        for ax, values, row, own_row in zip(fig.axes, (c.r_z / e_z, c.r_in / e_img, c.r_unc / e_img),
                                            ex.ROWS[1:4], (1, 3, 3), strict=True):
            assert ax.get_xscale() == "log"
            cdf = next(line for line in ax.get_lines() if line.get_label() == c.spec.label)
            np.testing.assert_allclose(cdf.get_xdata(), np.sort(values))
            np.testing.assert_allclose(cdf.get_ydata(), np.arange(1, values.size + 1) / values.size)
            bound = [line for line in ax.get_lines() if line.get_label() == "bound, 10 equiprobable classes"]
            assert len(bound) == 1 and bound[0].get_xdata()[0] == pytest.approx(res.table.loc[row, ex.BOUND_COLUMN])
            # the classifier's own bound (measured class proportions), dashed in its colour
            xs = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
            own = res.bounds.iloc[own_row][c.spec.label]
            assert xs == ([pytest.approx(own)] if np.isfinite(own) else [])
            # the 95% interval of the 25% quantile, drawn at the 25% level
            lo, hi = res.ci_low.loc[row, c.spec.label], res.ci_high.loc[row, c.spec.label]
            if np.isfinite(lo) and np.isfinite(hi):
                bars = [line for line in ax.get_lines() if list(line.get_ydata()) == [0.25, 0.25]]
                assert [list(b.get_xdata()) for b in bars] == [[pytest.approx(lo), pytest.approx(hi)]]


def test_plot_modulus_reads_the_bound_off_the_estimated_modulus(tiny_result):
    from advbound.bounds import TABLE_QUANTILE, latent_radius_quantile

    est = tiny_result.modulus
    with _figure(ex.plot_modulus(tiny_result)) as fig:
        (ax,) = fig.axes
        lines = {line.get_label(): line for line in ax.get_lines()}
        np.testing.assert_allclose(lines["omega (monotone)"].get_ydata(), est.modulus.values[1:])
        np.testing.assert_allclose(lines["median over z"].get_ydata(), np.median(est.increments[1:], axis=1))
        assert np.all(np.diff(lines["omega (monotone)"].get_ydata()) >= 0)
        t_star = latent_radius_quantile(TABLE_QUANTILE + est.delta, n_classes=10)
        (reading,) = [line for label, line in lines.items() if label.startswith("t* = ")]
        assert reading.get_xdata()[0] == pytest.approx(t_star)
        assert reading.get_ydata()[1] == pytest.approx(float(est.modulus(t_star)))


@contextlib.contextmanager
def _figure(fig):
    """The figure, closed afterwards (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    try:
        yield fig
    finally:
        plt.close(fig)


def test_real_profiles_fail_without_data(tmp_path):
    with pytest.raises(DataUnavailableError):
        ex.run_experiment("cifar10", "colab", data_root=tmp_path, download=False, progress=False)


def test_cli_experiment_prints_and_saves_json_and_csv(tiny_result, tmp_path, monkeypatch, capsys):
    from advbound import cli, experiments

    seen = {}

    def fake_run(dataset, profile, **kwargs):
        seen.update(kwargs, dataset=dataset, profile=profile)
        return tiny_result

    monkeypatch.setattr(experiments, "run_experiment", fake_run)
    out = tmp_path / "res.csv"  # a .csv name still gets both files: the JSON is not overwritten by the table
    assert cli.main(["experiment", "--dataset", "cifar10", "--profile", "ci", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC STAND-IN" in text
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["provenance"]["data"] == STAND_IN
    # the first header cell names the data: a stand-in table says so wherever the CSV goes (issue 18, item 4)
    assert (tmp_path / "res.csv").read_text().startswith("SVHN pipeline on a SYNTHETIC STAND-IN (not SVHN results),")
    assert seen["dataset"] == "cifar10" and seen["progress"] is False and seen["checkpoint_dir"] is None
    # default: under the output folder (here the working directory), never inside the package
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADVBOUND_OUTPUT", raising=False)
    assert cli.main(["experiment", "--dataset", "svhn", "--profile", "colab", "--quiet"]) == 0
    assert (tmp_path / "results" / "svhn-colab.json").is_file()
    assert seen["checkpoint_dir"] == Path("checkpoints") / "svhn-colab-seed0"


def test_rerun_resumes_from_checkpoints(tmp_path):
    """A second run with the same checkpoint folder loads the trained models (the full profile's resume)
    and reproduces the table."""
    import torch

    threads = torch.get_num_threads()
    cfg = dataclasses.replace(tiny_config("cifar10"), n_eval=6, modulus_samples=6)
    runs = []
    try:
        for _ in range(2):
            ex.set_determinism(0, threads=1)
            runs.append(ex.run_experiment("cifar10", "ci", seed=0, config=cfg, device="cpu", progress=False,
                                          checkpoint_dir=tmp_path, log=lambda *a: None))
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "dcgan.pt").exists() and (tmp_path / "2-layer-lenet.pt").exists()
    assert runs[0].table.equals(runs[1].table)
    assert runs[1].gan_history == runs[0].gan_history


def test_profiles_table_is_generated_from_the_configuration():
    from advbound.experiments import chapter

    for dataset in ("mnist", "svhn", "cifar10"):
        table = chapter.profiles_table(dataset)
        assert list(table.columns) == ["ci", "colab", "full"]
        for profile in table.columns:
            cfg = ex.experiment_config(dataset, profile)
            assert table.loc["latent samples attacked", profile] == f"{cfg.n_eval:,}"
            dcgan = table.loc["DCGAN", profile]
            assert dcgan.startswith(f"width {cfg.gan_width}, {cfg.gan_epochs} epochs")
            assert ("weights averaged" in dcgan) == (cfg.gan_ema is not None)
            assert ("DiffAugment" in dcgan) == bool(cfg.gan_augment)
            assert all(spec.label in table.loc["classifiers", profile] for spec in cfg.classifiers)
            assert table.loc["attacks", profile].endswith(cfg.analysis_dtype)


def test_chapter_texts_report_the_result(tiny_result):
    from advbound.bounds import TABLE_QUANTILE, latent_radius_quantile
    from advbound.experiments import chapter

    res = tiny_result
    text = chapter.check_text(res)
    c = res.checks["per_classifier"][res.classifiers[0].spec.label]
    assert f"= {c['z_quantile_over_measured_proportions_bound']:.2f} x its bound" in text
    assert "SYNTHETIC STAND-IN" in text
    gap = chapter.gap_text(res)
    r = res.classifiers[0]
    both = np.isfinite(r.r_in) & np.isfinite(r.r_unc) & (r.r_unc > 0)
    if both.any():
        assert f"median r_in / r_unc = {np.median(r.r_in[both] / r.r_unc[both]):.2f}" in gap
    # the paper's one-shot estimates are re-run on the first n_one_shot samples only, and said so
    assert len(r.r_unc_deepfool) == len(r.r_z_deepfool) == 5 == res.provenance["samples"]["one_shot"]
    assert "of the first 5 of 12 samples" in chapter.moved_text(res)
    with pytest.raises(ValueError, match="n_one_shot"):
        dataclasses.replace(tiny_config(), n_one_shot=0)
    mod = chapter.modulus_text(res)
    t_star = latent_radius_quantile(TABLE_QUANTILE + res.modulus.delta, n_classes=10)
    assert f"t* = {t_star:.4f}" in mod
    assert f"omega(t*) = {float(res.modulus.modulus(t_star)):.3g}" in mod


def test_check_text_refuses_a_broken_ordering(tiny_result):
    import copy

    from advbound.experiments import chapter

    broken = copy.deepcopy(tiny_result)
    label = broken.classifiers[0].spec.label
    broken.checks["per_classifier"][label]["r_unc_le_r_in_all_samples"] = False
    with pytest.raises(AssertionError, match=label):
        chapter.check_text(broken)


def test_key_numbers_carry_the_intervals(tiny_result):
    text = ex.key_numbers(tiny_result)
    label = tiny_result.classifiers[0].spec.label
    lo = tiny_result.ci_low.loc[ex.ROWS[0], label]
    assert "[95% confidence interval]" in text
    assert f"{100 * lo:.1f}%" in text  # the error rate's Clopper-Pearson lower end
