"""The paper's Section 5 observations as criteria on measured intervals (advbound.experiments.findings), on
results built from chosen robustness samples, so that each verdict is known in advance."""

import dataclasses
import types

import numpy as np
import pytest

from advbound import experiments as ex
from advbound.experiments import findings as fd
from advbound.experiments.report import ClassifierResult, ExperimentResult, _checks, _tables
from advbound.modulus import LipschitzModulus
from advbound.training import PGDConfig

E_Z, E_IMG, L = 9.95, 9.0, 3.0
N = 400


def _spec(label, arch="lenet", adversarial=None):
    return ex.ClassifierSpec(label, arch, {"width": 4}, 1, adversarial=adversarial)


def _result(per_classifier, nearest=None):
    """An ExperimentResult whose classifiers have the given (spec, r_z, r_in, r_unc) samples."""
    est = types.SimpleNamespace(modulus=LipschitzModulus(L), delta=0.05)
    results = [ClassifierResult(spec, 0.05, np.full(10, 0.1), rz, rin, runc, runc, {}, r_nearest=nearest)
               for spec, rz, rin, runc in per_classifier]
    table, bounds, low, high = _tables(results, est, {"E||z||": E_Z, "E||g(z)||": E_IMG}, 10, 1000)
    cfg = dataclasses.replace(ex.experiment_config("mnist", "ci"), classifiers=tuple(r.spec for r in results))
    prov = {"data": "real", "samples": {"latent_attacked": N}, "profile": "ci"}
    return ExperimentResult(cfg, table, bounds, _checks(results, bounds, table, high), prov, results, est,
                            {"E||z||": E_Z, "E||g(z)||": E_IMG}, None, ci_low=low, ci_high=high)


def _around(centre, spread=0.02, n=N, seed=0):
    """A sample whose 25% quantile is close to ``centre`` (uniform on centre * [1 - s, 1 + s] shifted)."""
    rng = np.random.default_rng(seed)
    return centre * (1 + spread * (rng.uniform(-1, 1, n) + 0.5))


def test_latent_order_verdicts():
    bound = 0.0158 * E_Z  # the equiprobable latent bound in latent units (normalised 0.0158)
    inside = _result([(_spec("A"), _around(0.4 * bound), _around(1.0), _around(0.5))])
    assert fd.latent_order(inside).verdict == fd.REPRODUCED
    far = _result([(_spec("A"), _around(0.01 * bound), _around(1.0), _around(0.5))])
    assert fd.latent_order(far).verdict == fd.NOT_REPRODUCED
    # straddling the edge 0.1 of the band: the interval decides nothing
    edge = _result([(_spec("A"), _around(0.1 * bound, spread=0.5), _around(1.0), _around(0.5))])
    assert fd.latent_order(edge).verdict == fd.UNDECIDED
    assert "r_Z quantile / bound" in fd.latent_order(inside).evidence[0]


def test_image_order_verdicts_and_the_nearest_other_label_baseline():
    probe = _result([(_spec("A"), _around(0.1), _around(1.0), _around(0.5))], nearest=_around(1e3))
    bound = float(probe.table.loc[ex.ROWS[2], ex.BOUND_COLUMN]) * E_IMG
    # choose r_in at a tenth of the bound: about one order of magnitude below it
    res = _result([(_spec("A"), _around(0.1), _around(bound / 10), _around(0.5))], nearest=_around(10 * bound))
    f = fd.image_order(res)
    assert f.verdict == fd.REPRODUCED, f.evidence
    # a generated image of another label nearer than the bound: the bound is vacuous for this classifier
    res = _result([(_spec("A"), _around(0.1), _around(bound / 10), _around(0.5))], nearest=_around(bound / 2))
    assert fd.image_order(res).verdict == fd.NOT_REPRODUCED
    # r_in at the bound itself: not an order of magnitude below it
    res = _result([(_spec("A"), _around(0.1), _around(bound), _around(0.5))], nearest=_around(10 * bound))
    assert fd.image_order(res).verdict == fd.NOT_REPRODUCED


def test_gap_shrinks_verdicts():
    def res(lenet_ratio, resnet_ratio):
        r_in = _around(1.0, spread=0.1, seed=1)
        return _result([(_spec("2-Layer LeNet"), _around(0.1), r_in, r_in / _around(lenet_ratio, seed=2)),
                        (_spec("ResNet-18", "resnet18"), _around(0.1), r_in, r_in / _around(resnet_ratio, seed=3))])

    assert fd.gap_shrinks(res(6.0, 2.2)).verdict == fd.REPRODUCED
    assert fd.gap_shrinks(res(1.4, 1.45)).verdict == fd.NOT_REPRODUCED  # no large gap for the LeNet
    assert fd.gap_shrinks(res(3.0, 4.0)).verdict == fd.NOT_REPRODUCED  # the gap grows
    f = fd.gap_shrinks(res(3.0, 3.0))
    assert f.verdict == fd.UNDECIDED and "no difference detected at n = 400" in f.evidence[1]
    only = _result([(_spec("VGG", "vgg"), _around(0.1), _around(1.0), _around(0.5))])
    assert fd.gap_shrinks(only).verdict == fd.NOT_TESTED


def test_adversarial_training_verdicts():
    pgd = PGDConfig(eps=0.1, step_size=0.025, steps=7)
    probe = _result([(_spec("A"), _around(0.1), _around(1.0), _around(0.5))])
    bound = float(probe.table.loc[ex.ROWS[2], ex.BOUND_COLUMN]) * E_IMG

    def res(factor, adv_r_in):
        return _result([(_spec("LeNet"), _around(0.1), _around(bound / 20), _around(bound / 40, seed=4)),
                        (_spec("LeNet + Adv.", adversarial=pgd), _around(0.1), _around(adv_r_in),
                         _around(factor * bound / 40, seed=5))])

    assert fd.adversarial_training(res(5.0, bound / 10)).verdict == fd.REPRODUCED
    assert fd.adversarial_training(res(1.2, bound / 10)).verdict == fd.NOT_REPRODUCED  # not marked
    assert fd.adversarial_training(res(5.0, bound / 1.2)).verdict == fd.NOT_REPRODUCED  # not below the bound
    no_twin = _result([(_spec("A", "resnet18"), _around(0.1), _around(1.0), _around(0.5)),
                       (_spec("B", adversarial=pgd), _around(0.1), _around(1.0), _around(0.5))])
    assert fd.adversarial_training(no_twin).verdict == fd.NOT_TESTED


def test_findings_text_labels_the_data():
    res = _result([(_spec("A"), _around(0.1), _around(1.0), _around(0.5))])
    text = ex.findings_text(res)
    assert "[real data; 95% intervals; 400 latent samples]" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 100  # wrapped for the book's content column
    assert text.count("\n(") == 4 and "(iv)" in text and "NOT TESTED" in text
    res.provenance["data"] = "synthetic stand-in"
    assert "SYNTHETIC STAND-IN" in ex.findings_text(res)


@pytest.mark.parametrize("verdicts, combined", [([fd.REPRODUCED] * 2, fd.REPRODUCED),
                                                 ([fd.REPRODUCED, fd.UNDECIDED], fd.UNDECIDED),
                                                 ([fd.UNDECIDED, fd.NOT_REPRODUCED], fd.NOT_REPRODUCED),
                                                 ([], fd.NOT_TESTED)])
def test_combine(verdicts, combined):
    assert fd._combine(verdicts) == combined


def test_why_it_may_differ_names_only_the_observations_not_reproduced_with_the_runs_own_numbers():
    pgd = PGDConfig(eps=0.1, step_size=0.025, steps=7)
    probe = _result([(_spec("A"), _around(0.1), _around(1.0), _around(0.5))])
    bound = float(probe.table.loc[ex.ROWS[2], ex.BOUND_COLUMN]) * E_IMG
    res = _result([(_spec("LeNet"), _around(0.4 * 0.0158 * E_Z), _around(bound / 10), _around(bound / 40, seed=4)),
                   (_spec("LeNet + Adv.", adversarial=pgd), _around(0.4 * 0.0158 * E_Z, seed=2),
                    _around(bound / 10, seed=3), _around(1.2 * bound / 40, seed=5))])
    res.classifiers[0].r_unc_deepfool = 1.5 * res.classifiers[0].r_unc    # DeepFool 50% farther on every sample
    verdicts = {f.key: f.verdict for f in fd.section5_findings(res)}
    items = fd.why_it_may_differ(res)
    expected = [k for k, v in verdicts.items() if v in (fd.NOT_REPRODUCED, fd.UNDECIDED)]
    assert [item.split(")")[0].lstrip("(") for item in items] == expected
    assert verdicts["iv"] == fd.NOT_REPRODUCED and verdicts["i"] == fd.REPRODUCED    # the chosen samples
    iv = next(item for item in items if item.startswith("(iv)"))
    assert "LeNet + Adv.: L-inf PGD, eps 0.1, 7 steps, 1 epochs" in iv
    assert fd._moved(res, "r_unc", "r_unc_deepfool") == "LeNet 1.50"    # the adversarial one has no DeepFool run
