"""Committed witnesses of the three searches (r_Z, r_in, r_unc): they are what the searches find, every one is
re-verified, rounding them to float16 keeps them adversarial, and a damaged, stale or foreign witness file is refused
with a named error."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from advbound import artifacts as art
from advbound import experiments as ex
from advbound import witnesses as wit
from advbound.experiments.pipeline import EVAL_SEED, _latent, _network_hashes, _search_settings, _searches
from advbound.models import LATENT_DIM

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "book" / "artifacts"


def committed(dataset):
    cfg = ex.experiment_config(dataset, "ci")
    folder = art.artifact_folder(COMMITTED, dataset, "ci", 0)
    nets = art.load_networks(folder, cfg, 0, dtype=torch.float64)
    return cfg, folder, nets


def load(cfg, folder, nets, **changes):
    shapes = {name: (cfg.n_eval, LATENT_DIM) if kind == "latent" else (cfg.n_eval, cfg.channels, cfg.image_size,
                                                                         cfg.image_size)
              for name, kind in wit.SEARCHES.items()}
    kwargs = dict(settings=_search_settings(cfg, 0), networks=_network_hashes(nets),
                  keys=[s.key for s in cfg.classifiers], shapes=shapes, command="REDO")
    kwargs.update(changes)
    return wit.load_witnesses(folder, **kwargs)


def _batch(cfg, nets, k, key):
    z = _latent(cfg.n_eval, EVAL_SEED, torch.device("cpu"), torch.float64)[:k]
    clf = nets.classifiers[key]
    with torch.no_grad():
        x = nets.generator(z)
        labels = clf(x).argmax(1)
    return z, x, labels, clf


# the searches from scratch on the first few committed samples (a few seconds per sample and classifier)
@pytest.mark.parametrize("dataset, k", [("mnist", 2), ("fashion_mnist", 2), ("svhn", 1), ("cifar10", 1)])
def test_committed_witnesses_are_what_the_searches_find(dataset, k):
    cfg, folder, nets = committed(dataset)
    points = load(cfg, folder, nets)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for spec in cfg.classifiers:
            z, x, labels, clf = _batch(cfg, nets, k, spec.key)
            found, _ = _searches(clf, nets.generator, z, x, labels, cfg, None)
            for search in wit.SEARCHES:
                delta, ok = found[search]
                committed_delta, committed_ok = points[spec.key][search]
                assert torch.equal(ok, committed_ok[:k]), (spec.label, search)
                if search == "r_unc":
                    # this search picks its starts and walks in float32, whose last bits depend on the batch
                    # size and the CPU's kernels, so it ends at nearby points of the boundary: their distances
                    # agree (measured: within 4e-3 on these samples, also with ATEN_CPU_CAPABILITY=default and
                    # oneDNN at SSE4.1), their coordinates not to float16 precision
                    torch.testing.assert_close(delta.double().flatten(1).norm(dim=1),
                                               committed_delta[:k].double().flatten(1).norm(dim=1), rtol=2e-2,
                                               atol=0, msg=f"{spec.label} {search}")
                    continue
                # float64 searches, rounded to float16: other CPUs may differ in the last bits, which rounding
                # can carry over to the next float16 value (relative 2**-10)
                torch.testing.assert_close(delta.double(), committed_delta[:k].double(), rtol=2 ** -9, atol=1e-6,
                                           msg=f"{spec.label} {search}")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "svhn", "cifar10"])
def test_committed_witnesses_verify_and_record_their_search(dataset):
    cfg, folder, nets = committed(dataset)
    points = load(cfg, folder, nets)
    manifest = json.loads((folder / wit.WITNESS_MANIFEST).read_text())
    # 500 samples per classifier on real data (issue 17); the synthetic stand-ins, which only exercise the
    # pipeline, attack fewer (advbound.experiments.profiles.CI_SAMPLES)
    assert manifest["settings"]["n_eval"] == cfg.n_eval >= (500 if dataset in ("mnist", "fashion_mnist") else 200)
    assert manifest["format"] == wit.FORMAT == 2
    assert manifest["command"].startswith(f"python -m advbound artifacts --dataset {dataset} --profile ci")
    for spec in cfg.classifiers:
        z, x, labels, clf = _batch(cfg, nets, 32, spec.key)
        for search, kind in wit.SEARCHES.items():
            delta, found = points[spec.key][search]
            assert manifest["classifiers"][spec.key][search]["found"] == int(found.sum())
            assert delta.dtype == torch.float16 and not bool(delta[~found].any())
            if kind == "latent":
                res = wit.verified_search(clf, nets.generator, z, delta[:32], found[:32], name=spec.label)
                w = z + delta[:32].double()
                # the distances are measured here, from the point
                expected = (nets.generator(w) - nets.generator(z)).flatten(1).norm(dim=1)
                torch.testing.assert_close(res.image_distances, expected, rtol=1e-12, atol=0)
                torch.testing.assert_close(res.latent_norms, delta[:32].double().norm(dim=1), rtol=1e-12, atol=0)
            else:
                res = wit.verified_unconstrained(clf, x, delta[:32], found[:32], name=spec.label, labels=labels)
                torch.testing.assert_close(res.norms, delta[:32].double().flatten(1).norm(dim=1), rtol=1e-12, atol=0)
            assert torch.equal(res.success, found[:32])
            assert bool((res.adv_labels != res.labels)[found[:32]].all())


def test_a_point_that_does_not_change_the_label_is_refused():
    cfg, folder, nets = committed("mnist")
    z, x, labels, clf = _batch(cfg, nets, 8, "2-layer-lenet")
    # z itself is never adversarial (a zero displacement): claiming it was found must fail, naming the sample
    found = torch.zeros(8, dtype=torch.bool)
    found[5] = True
    zero = torch.zeros_like(z, dtype=torch.float16)
    with pytest.raises(art.ArtifactError, match="witness 5 of LeNet does not change the label"):
        wit.verified_search(clf, nets.generator, z, zero, found, name="LeNet")
    with pytest.raises(art.ArtifactError, match="witness 5 of LeNet does not change the label"):
        wit.verified_unconstrained(clf, x, torch.zeros_like(x, dtype=torch.float16), found, name="LeNet")
    # unclaimed points are simply unsuccessful
    res = wit.verified_search(clf, nets.generator, z, zero, torch.zeros(8, dtype=torch.bool))
    assert not bool(res.success.any())
    with pytest.raises(ValueError, match="delta must have z's shape"):
        wit.verified_search(clf, nets.generator, z, zero[:, :10], found)


def test_rounding_to_float16_keeps_every_point_adversarial():
    """A point just beyond a boundary may fall back across it when its displacement is rounded: it is
    lengthened by 2**-10 at a time until it is adversarial again, and counted."""
    torch.manual_seed(0)
    n, d = 200, 50
    normal = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    base = torch.randn(n, d, dtype=torch.float64)
    offset = 0.3 + (base @ normal).abs()            # the boundary {x . normal = offset} beyond every base point
    # the exact projections onto the boundary, a hair beyond it: rounding moves about half of them back
    points = base + ((offset - base @ normal) * (1 + 1e-9))[:, None] * normal

    def adversarial(p):
        return p @ normal > offset

    assert bool(adversarial(points).all())
    delta, found, pushed = wit.witness_displacements(points, base, torch.ones(n, dtype=torch.bool), adversarial)
    assert delta.dtype == torch.float16 and bool(found.all()) and 0 < pushed < n
    assert bool(adversarial(base + delta.double()).all())
    # the price: at most a few float16 steps of the displacement's length
    ratio = delta.double().norm(dim=1) / (points - base).norm(dim=1)
    assert float(ratio.max()) < 1 + 2 ** -6 and float(ratio.min()) > 1 - 2 ** -9
    # a point that is not adversarial at any length along its displacement is marked not found, never kept
    away = base - 0.5 * normal
    delta, found, pushed = wit.witness_displacements(away, base, torch.ones(n, dtype=torch.bool), adversarial)
    assert not bool(found.any()) and pushed == 0 and not bool(delta.any())
    with pytest.raises(ValueError, match="found must be a bool tensor"):
        wit.witness_displacements(points, base, torch.ones(n), adversarial)


def test_tiny_displacements_stored_as_float16_subnormals_stay_adversarial():
    """Displacements of norm 1e-4 over 3072 coordinates (about 2e-6 each: float16 subnormals, spacing 6e-8) lose
    about a percent of their length to rounding, and 1 + 2**-10 times a subnormal rounds back to it; the
    lengthening starts again from the unrounded displacement and grows coarser, so every point stays found."""
    torch.manual_seed(1)
    n, d = 40, 3072
    normal = torch.nn.functional.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)   # one boundary per row
    base = torch.randn(n, d, dtype=torch.float64)
    offset = (base * normal).sum(1) + 1e-4           # the boundary 1e-4 beyond every base point
    points = base + (1e-4 * (1 + 1e-9)) * normal

    def adversarial(p):
        return (p * normal).sum(1) > offset

    delta, found, pushed = wit.witness_displacements(points, base, torch.ones(n, dtype=torch.bool), adversarial)
    assert float(delta.abs().max()) < 6.1e-5         # the case is the subnormal one
    assert bool(found.all()) and pushed > 0
    assert bool(adversarial(base + delta.double()).all())
    ratio = delta.double().norm(dim=1) / 1e-4
    assert float(ratio.max()) <= 4 and float(ratio.min()) > 0.98


@pytest.fixture()
def copied(tmp_path):
    cfg, folder, nets = committed("mnist")
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return cfg, target, nets


def test_a_changed_byte_a_missing_file_and_an_unreadable_manifest_are_refused(copied):
    cfg, folder, nets = copied
    path = folder / wit.WITNESS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(art.ArtifactError,
                       match=r"witnesses.pt has sha256 .*, the manifest says .*: the file is damaged.*REDO"):
        load(cfg, folder, nets)
    path.unlink()
    with pytest.raises(art.ArtifactError, match="witnesses.pt is missing"):
        load(cfg, folder, nets)
    (folder / wit.WITNESS_MANIFEST).write_text("{not json")
    with pytest.raises(art.ArtifactError, match="not a readable witness manifest"):
        load(cfg, folder, nets)


def test_witnesses_of_other_networks_or_another_search_are_refused(copied):
    cfg, folder, nets = copied
    other = dict(_network_hashes(nets), **{"resnet-18.pt": "0" * 64})
    with pytest.raises(art.ArtifactError, match="found on other networks"):
        load(cfg, folder, nets, networks=other)
    fewer = dataclasses.replace(cfg, n_eval=100)
    with pytest.raises(art.ArtifactError, match=r"another search \(n_eval: 500 there, 100 here\).*REDO"):
        load(fewer, folder, nets, settings=_search_settings(fewer, 0))
    with pytest.raises(art.ArtifactError, match="latent_seed"):
        load(cfg, folder, nets, settings=_search_settings(cfg, 1))
    with pytest.raises(art.ArtifactError, match="no r_z witnesses of shape .* for the classifier 'vgg'"):
        load(cfg, folder, nets, keys=["vgg"])


def test_the_pipeline_writes_then_reuses_its_witnesses(tmp_path):
    from test_artifacts import tiny_config

    cfg = tiny_config(n_eval=6)
    folder = tmp_path / "svhn-ci-seed0"
    logs = []
    kwargs = dict(config=cfg, device="cpu", progress=False, log=logs.append, artifacts=folder)
    with pytest.raises(ValueError, match="reattack needs artifacts="):
        ex.run_experiment("svhn", "ci", config=cfg, reattack=True, progress=False, log=logs.append)
    first = ex.run_experiment("svhn", "ci", retrain=True, **kwargs)
    assert wit.has_witnesses(folder) and first.provenance["latent_searches"].startswith("searched here and written")
    again = ex.run_experiment("svhn", "ci", **kwargs)
    assert again.provenance["latent_searches"].startswith("committed witnesses")
    assert "generator_gram_s" not in again.provenance["timings_s"]
    # a tampered point is caught when the chapter re-verifies it (the file's sha256 is recomputed to match)
    state = torch.load(folder / wit.WITNESS_FILE, weights_only=True)
    manifest = json.loads((folder / wit.WITNESS_MANIFEST).read_text())
    key = next(iter(state))
    # sample 2 claimed at z itself (a zero displacement), which never changes the label
    state[key]["r_in"]["delta"][2] = 0
    state[key]["r_in"]["found"][2] = True
    torch.save(state, folder / wit.WITNESS_FILE)
    manifest.update(sha256=art.sha256(folder / wit.WITNESS_FILE), size=(folder / wit.WITNESS_FILE).stat().st_size)
    (folder / wit.WITNESS_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(art.ArtifactError, match=r"witness 2 of 2-Layer LeNet \(r_in\) does not change"):
        ex.run_experiment("svhn", "ci", **kwargs)
    for a, b in zip(first.classifiers, again.classifiers, strict=True):
        for name in ("r_z", "r_in", "r_unc", "r_unc_attack"):
            assert (getattr(a, name) == getattr(b, name)).all(), name
    # another analysis setting: the stale witnesses are refused, not silently searched around
    with pytest.raises(art.ArtifactError, match="another search"):
        ex.run_experiment("svhn", "ci", **dict(kwargs, config=dataclasses.replace(cfg, n_eval=5)))


def test_latent_search_results_are_the_pipelines_values(tmp_path):
    """experiments.latent_search_results gives another chapter the data chapter's own r_Z, r_in and r_unc on
    the first n attacked samples: from the committed witnesses, the very values of run_experiment; without
    them, the searches run and every point is valid."""
    from test_artifacts import tiny_config

    cfg = tiny_config(n_eval=6)
    folder = tmp_path / "svhn-ci-seed0"
    quiet = dict(config=cfg, device="cpu", progress=False, log=lambda _: None, artifacts=folder)
    ex.run_experiment("svhn", "ci", retrain=True, **quiet)
    again = ex.run_experiment("svhn", "ci", **quiet)
    nets = art.load_networks(folder, cfg, 0, dtype=cfg.dtype)
    z, found = ex.latent_search_results(cfg, 0, nets, 4, artifacts=folder, log=lambda _: None)
    assert z.shape == (4, nets.generator.latent_dim)
    for c in again.classifiers:
        got = found[c.spec.label]
        np.testing.assert_array_equal(got["r_z"].latent_norms.numpy(), c.r_z[:4])
        np.testing.assert_array_equal(got["r_in"].image_distances.numpy(), c.r_in[:4])
        np.testing.assert_array_equal(torch.minimum(got["r_unc"].norms, got["r_in"].image_distances).numpy(),
                                      c.r_unc[:4])
    _, searched = ex.latent_search_results(cfg, 0, nets, 2, artifacts=None, log=lambda _: None)
    assert all(bool(r[k].success.all()) for r in searched.values() for k in ("r_z", "r_in", "r_unc"))
    with pytest.raises(ValueError, match="n must be"):
        ex.latent_search_results(cfg, 0, nets, 7, artifacts=folder)


def test_a_partial_search_reruns_only_the_named_search_and_keeps_the_others(tmp_path, monkeypatch):
    """reattack=["r_unc"] after a change of the unconstrained attack's settings: r_z and r_in keep their
    committed points and counts byte for byte, r_unc is searched anew under the new settings, and the stale
    file is refused before and accepted after."""
    from advbound.experiments import pipeline
    from test_artifacts import tiny_config

    cfg = tiny_config(n_eval=6)
    folder = tmp_path / "svhn-ci-seed0"
    logs: list[str] = []
    kwargs = dict(config=cfg, device="cpu", progress=False, log=logs.append, artifacts=folder)
    # with nothing committed there is nothing to keep: refused before any training, not searched in full
    with pytest.raises(art.ArtifactError, match="keeps the committed witnesses of the other searches"):
        ex.run_experiment("svhn", "ci", reattack=["r_unc"], **kwargs)
    assert not folder.exists()
    first = ex.run_experiment("svhn", "ci", retrain=True, **kwargs)
    before = torch.load(folder / wit.WITNESS_FILE, weights_only=True)
    manifest_before = json.loads((folder / wit.WITNESS_MANIFEST).read_text())
    for bad in ([], ["r_x"], "everything"):
        with pytest.raises(ValueError, match="reattack must be a bool or a non-empty collection"):
            ex.run_experiment("svhn", "ci", reattack=bad, **kwargs)
    monkeypatch.setattr(pipeline, "STEPS", 3)          # another unconstrained search: the file is stale
    with pytest.raises(art.ArtifactError, match=r"another search \(unconstrained: .*'steps': 40"):
        ex.run_experiment("svhn", "ci", **kwargs)
    # a partial search cannot hide another change (here the number of latent samples)
    with pytest.raises(art.ArtifactError, match="n_eval"):
        ex.run_experiment("svhn", "ci", reattack=["r_unc"], **dict(kwargs, config=dataclasses.replace(cfg, n_eval=5)))
    partial = ex.run_experiment("svhn", "ci", reattack=["r_unc"], **kwargs)
    assert partial.provenance["latent_searches"].startswith("r_unc searched here, the others committed")
    after = torch.load(folder / wit.WITNESS_FILE, weights_only=True)
    manifest = json.loads((folder / wit.WITNESS_MANIFEST).read_text())
    assert manifest["settings"]["unconstrained"]["steps"] == 3
    assert {k: v for k, v in manifest["settings"].items() if k != "unconstrained"} == \
        {k: v for k, v in manifest_before["settings"].items() if k != "unconstrained"}
    for key in before:
        for search in ("r_z", "r_in"):
            assert torch.equal(after[key][search]["delta"], before[key][search]["delta"]), (key, search)
            assert torch.equal(after[key][search]["found"], before[key][search]["found"]), (key, search)
            assert (manifest["classifiers"][key][search]["lengthened_after_rounding"]
                    == manifest_before["classifiers"][key][search]["lengthened_after_rounding"])
    # the new file is what a plain run now loads, and it prints the committed r_z and r_in values
    again = ex.run_experiment("svhn", "ci", **kwargs)
    assert again.provenance["latent_searches"].startswith("committed witnesses")
    for a, b, c in zip(first.classifiers, partial.classifiers, again.classifiers, strict=True):
        for name in ("r_z", "r_in"):
            assert (getattr(a, name) == getattr(b, name)).all() and (getattr(b, name) == getattr(c, name)).all()
        assert (b.r_unc == c.r_unc).all() and np.isfinite(c.r_unc).all()
