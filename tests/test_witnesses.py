"""Committed witnesses of the latent searches (latent DeepFool and the boundary search): they are what the
searches find, every one is re-verified, and a damaged, stale or foreign witness file is refused with a named
error."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from advbound import artifacts as art
from advbound import experiments as ex
from advbound import witnesses as wit
from advbound.attacks import boundary_search, latent_deepfool
from advbound.experiments.pipeline import EVAL_SEED, _latent, _network_hashes, _search_settings
from advbound.models import LATENT_DIM

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "book" / "artifacts"


def committed(dataset):
    cfg = ex.experiment_config(dataset, "ci")
    folder = art.artifact_folder(COMMITTED, dataset, "ci", 0)
    nets = art.load_networks(folder, cfg, 0, dtype=torch.float64)
    return cfg, folder, nets


def load(cfg, folder, nets, **changes):
    kwargs = dict(settings=_search_settings(cfg, 0), networks=_network_hashes(nets),
                  keys=[s.key for s in cfg.classifiers], n=cfg.n_eval, dim=LATENT_DIM, command="REDO")
    kwargs.update(changes)
    return wit.load_witnesses(folder, **kwargs)


# the searches from scratch on the first few committed samples (about 0.1-1.5 s per sample and classifier)
@pytest.mark.parametrize("dataset, k", [("mnist", 3), ("svhn", 2), ("cifar10", 2)])
def test_committed_witnesses_are_what_the_search_finds(dataset, k):
    cfg, folder, nets = committed(dataset)
    points = load(cfg, folder, nets)
    z = _latent(cfg.n_eval, EVAL_SEED, torch.device("cpu"), torch.float64)[:k]
    opts = cfg.attack.kwargs()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for spec in cfg.classifiers:
            clf = nets.classifiers[spec.key]
            lat = latent_deepfool(clf, nets.generator, z, **opts)
            found = boundary_search(clf, nets.generator, z, latent=lat, candidates=opts["candidates"])
            for search, result in zip(wit.SEARCHES, (lat, found), strict=True):
                w, ok = wit.witness_points(result, z)
                committed_w, committed_ok = points[spec.key][search]
                assert torch.equal(ok, committed_ok[:k]), (spec.label, search)
                # float64 end to end; other CPUs may differ in the last bits only
                torch.testing.assert_close(w, committed_w[:k], rtol=1e-7, atol=1e-9, msg=f"{spec.label} {search}")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dataset", ["mnist", "svhn", "cifar10"])
def test_committed_witnesses_verify_and_record_their_search(dataset):
    cfg, folder, nets = committed(dataset)
    points = load(cfg, folder, nets)
    manifest = json.loads((folder / wit.WITNESS_MANIFEST).read_text())
    assert manifest["settings"]["n_eval"] == cfg.n_eval >= 500
    assert manifest["command"].startswith(f"python -m advbound artifacts --dataset {dataset} --profile ci")
    z = _latent(cfg.n_eval, EVAL_SEED, torch.device("cpu"), torch.float64)[:32]
    for spec in cfg.classifiers:
        for search in wit.SEARCHES:
            w, found = points[spec.key][search]
            assert manifest["classifiers"][spec.key][search]["found"] == int(found.sum())
            res = wit.verified_search(nets.classifiers[spec.key], nets.generator, z, w[:32], found[:32],
                                      name=spec.label)
            assert torch.equal(res.success, found[:32])
            assert bool((res.adv_labels != res.labels)[found[:32]].all())
            # the distances are measured here, from the point
            expected = (nets.generator(w[:32]) - nets.generator(z)).flatten(1).norm(dim=1)
            torch.testing.assert_close(res.image_distances, expected, rtol=1e-12, atol=0)
            torch.testing.assert_close(res.latent_norms, (w[:32] - z).norm(dim=1), rtol=1e-12, atol=0)


def test_a_point_that_does_not_change_the_label_is_refused():
    cfg, folder, nets = committed("mnist")
    z = _latent(8, EVAL_SEED, torch.device("cpu"), torch.float64)
    clf = nets.classifiers["2-layer-lenet"]
    # z itself is never adversarial: claiming it was found must fail, naming the sample
    found = torch.zeros(8, dtype=torch.bool)
    found[5] = True
    with pytest.raises(art.ArtifactError, match="witness 5 of LeNet does not change the label"):
        wit.verified_search(clf, nets.generator, z, z.clone(), found, name="LeNet")
    # unclaimed points are simply unsuccessful
    res = wit.verified_search(clf, nets.generator, z, z.clone(), torch.zeros(8, dtype=torch.bool))
    assert not bool(res.success.any())
    with pytest.raises(ValueError, match="points must have z's shape"):
        wit.verified_search(clf, nets.generator, z, z[:, :10], found)


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
        load(fewer, folder, nets, settings=_search_settings(fewer, 0), n=100)
    with pytest.raises(art.ArtifactError, match="latent_seed"):
        load(cfg, folder, nets, settings=_search_settings(cfg, 1))
    with pytest.raises(art.ArtifactError, match="no latent_deepfool witnesses of shape .* for the classifier 'vgg'"):
        load(cfg, folder, nets, keys=["vgg"])


def test_the_pipeline_writes_then_reuses_its_witnesses(tmp_path):
    from test_artifacts import tiny_config

    cfg = tiny_config(n_eval=6)
    folder = tmp_path / "svhn-ci-seed0"
    logs = []
    kwargs = dict(config=cfg, device="cpu", progress=False, log=logs.append, artifacts=folder)
    with pytest.raises(ValueError, match="reattack=True needs artifacts="):
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
    # sample 2 claimed at z itself, which never changes the label
    state[key]["boundary_search"]["points"][2] = _latent(6, EVAL_SEED, torch.device("cpu"), torch.float64)[2]
    state[key]["boundary_search"]["found"][2] = True
    torch.save(state, folder / wit.WITNESS_FILE)
    manifest.update(sha256=art.sha256(folder / wit.WITNESS_FILE), size=(folder / wit.WITNESS_FILE).stat().st_size)
    (folder / wit.WITNESS_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(art.ArtifactError, match=r"witness 2 of 2-Layer LeNet \(boundary_search\) does not change"):
        ex.run_experiment("svhn", "ci", **kwargs)
    for a, b in zip(first.classifiers, again.classifiers, strict=True):
        for name in ("r_z", "r_in", "r_unc", "r_unc_deepfool"):
            assert (getattr(a, name) == getattr(b, name)).all(), name
    # another analysis setting: the stale witnesses are refused, not silently searched around
    with pytest.raises(art.ArtifactError, match="another search"):
        ex.run_experiment("svhn", "ci", **dict(kwargs, config=dataclasses.replace(cfg, n_eval=5)))
