"""Committed networks: half-precision round trip, the manifest, and a named error for every kind of mismatch."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from advbound import artifacts as art
from advbound import experiments as ex
from advbound.attacks import DeepFoolOptions
from advbound.data import synthetic_stand_in
from advbound.experiments.pipeline import obtain_networks

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "book" / "artifacts"


def tiny_config(**changes):
    cfg = ex.experiment_config("svhn", "ci")
    spec = ex.ClassifierSpec("2-Layer LeNet", "lenet", {"width": 2, "hidden": 8, "image_size": 32}, 1, 5e-3)
    base = dataclasses.replace(cfg, classifiers=(spec,), gan_width=4, disc_width=2, gan_epochs=1, n_train=64,
                               n_test=32, n_eval=8, attack=DeepFoolOptions(max_steps=5))
    return dataclasses.replace(base, **changes)


def random_networks(cfg, seed=0):
    torch.manual_seed(seed)
    gen, clfs = art.build_networks(cfg)
    return art.Networks(gen, clfs, [{"epoch": 1.0}], {k: [{"loss": 1.0}] for k in clfs})


@pytest.fixture()
def saved(tmp_path):
    cfg = tiny_config()
    nets = random_networks(cfg)
    folder = tmp_path / "svhn-ci-seed0"
    art.save_networks(folder, cfg, 0, nets, command="test", versions={"torch": torch.__version__}, machine="test")
    return cfg, nets, folder


def test_round_trip_is_the_half_precision_rounding(saved):
    cfg, nets, folder = saved
    loaded = art.load_networks(folder, cfg, 0, dtype=torch.float64)
    for original, back in [(nets.generator, loaded.generator)] + [
            (nets.classifiers[k], loaded.classifiers[k]) for k in nets.classifiers]:
        a, b = original.state_dict(), back.state_dict()
        assert set(a) == set(b)
        for name in a:
            if a[name].is_floating_point():
                assert b[name].dtype == torch.float64
                # float16 keeps 11 significant bits: relative error at most 2**-11 (normal numbers)
                expected = a[name].to(torch.float16).to(torch.float64)
                assert torch.equal(b[name], expected), name
            else:
                assert torch.equal(a[name], b[name]), name
        assert not back.training and not any(p.requires_grad for p in back.parameters())
    assert loaded.origin == str(folder)
    assert loaded.gan_history == [{"epoch": 1.0}]


def test_manifest_records_each_file(saved):
    cfg, _, folder = saved
    manifest = json.loads((folder / art.MANIFEST).read_text())
    assert manifest["training_config"] == cfg.training_dict()
    assert (manifest["dataset"], manifest["profile"], manifest["seed"]) == ("svhn", "ci", 0)
    assert manifest["storage_dtype"] == "float16" and manifest["command"] == "test"
    for name, entry in manifest["files"].items():
        path = folder / name
        assert entry["size"] == path.stat().st_size
        assert entry["sha256"] == art.sha256(path)
    assert manifest["total_size"] == sum(e["size"] for e in manifest["files"].values())


def test_a_changed_byte_is_refused_and_the_file_left_alone(saved):
    cfg, _, folder = saved
    path = folder / "2-layer-lenet.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(art.ArtifactError, match=r"2-layer-lenet\.pt has sha256"):
        art.load_networks(folder, cfg, 0)
    assert path.read_bytes() == bytes(data)


def test_a_truncated_or_replaced_file_is_refused(saved):
    cfg, _, folder = saved
    (folder / "dcgan.pt").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(art.ArtifactError, match=r"dcgan\.pt has \d+ bytes, the manifest says"):
        art.load_networks(folder, cfg, 0)


def test_a_missing_file_is_named(saved):
    cfg, _, folder = saved
    (folder / "dcgan.pt").unlink()
    with pytest.raises(art.ArtifactError, match=r"dcgan\.pt is missing"):
        art.load_networks(folder, cfg, 0)


def test_other_training_settings_are_listed(saved):
    cfg, _, folder = saved
    with pytest.raises(art.ArtifactError, match=r"another configuration:\n  gan_epochs: saved 1, current 2"):
        art.load_networks(folder, dataclasses.replace(cfg, gan_epochs=2), 0)


def test_analysis_settings_do_not_invalidate_the_networks(saved):
    cfg, _, folder = saved
    other = dataclasses.replace(cfg, n_eval=99, modulus_samples=7, analysis_dtype="float64",
                                attack=DeepFoolOptions(max_steps=3, candidates=3))
    art.load_networks(folder, other, 0)


@pytest.mark.parametrize(("change", "message"), [
    ({"seed": 1}, "are for seed 0, not 1"),
    ({"config": "cifar10"}, "are for dataset 'svhn', not 'cifar10'"),
])
def test_networks_of_another_run_are_refused(saved, change, message):
    cfg, _, folder = saved
    seed = change.get("seed", 0)
    if "config" in change:
        cfg = dataclasses.replace(cfg, dataset=change["config"])
    with pytest.raises(art.ArtifactError, match=message):
        art.load_networks(folder, cfg, seed)


def test_missing_or_unreadable_manifest(tmp_path, saved):
    cfg, _, folder = saved
    assert not art.has_artifacts(tmp_path / "nothing")
    with pytest.raises(art.ArtifactError, match="manifest.json is missing"):
        art.load_networks(tmp_path / "nothing", cfg, 0)
    (folder / art.MANIFEST).write_text("{not json")
    with pytest.raises(art.ArtifactError, match="not a readable manifest"):
        art.load_networks(folder, cfg, 0)
    (folder / art.MANIFEST).write_text(json.dumps({"format": 99, "files": {}}))
    with pytest.raises(art.ArtifactError, match="not a manifest of format 1"):
        art.load_networks(folder, cfg, 0)


def test_a_manifest_without_a_classifier_is_refused(saved):
    cfg, _, folder = saved
    manifest = json.loads((folder / art.MANIFEST).read_text())
    del manifest["files"]["2-layer-lenet.pt"]
    (folder / art.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(art.ArtifactError, match=r"lists no 2-layer-lenet\.pt"):
        art.load_networks(folder, cfg, 0)


def test_bad_dtype_is_named(saved):
    cfg, _, folder = saved
    with pytest.raises(ValueError, match="dtype must be a floating torch.dtype"):
        art.load_networks(folder, cfg, 0, dtype=torch.int64)


def test_obtain_networks_trains_writes_and_reads_back(tmp_path):
    cfg = tiny_config()
    train = synthetic_stand_in(64, name="svhn", seed=0)
    folder = tmp_path / "svhn-ci-seed0"
    logs = []
    # no manifest there: trained here, nothing written
    nets, timings = obtain_networks(cfg, 0, train, torch.device("cpu"), artifacts=folder, progress=False,
                                    log=logs.append)
    assert "gan_training_s" in timings and not art.has_artifacts(folder)
    assert any("no committed networks" in line for line in logs)
    # retrain: written, and what is analysed is exactly what a later load gives
    nets, _ = obtain_networks(cfg, 0, train, torch.device("cpu"), artifacts=folder, retrain=True, progress=False,
                              log=logs.append)
    assert art.has_artifacts(folder)
    again, timings = obtain_networks(cfg, 0, train, torch.device("cpu"), artifacts=folder, progress=False,
                                     log=logs.append)
    assert timings == {}
    for a, b in zip(nets.generator.state_dict().values(), again.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="retrain=True needs artifacts="):
        obtain_networks(cfg, 0, train, torch.device("cpu"), retrain=True)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "svhn", "cifar10"])
def test_committed_networks_verify_against_their_configuration(dataset):
    folder = art.artifact_folder(COMMITTED, dataset, "ci", 0)
    nets = art.load_networks(folder, ex.experiment_config(dataset, "ci"), 0)
    assert set(nets.classifiers) == {spec.key for spec in ex.experiment_config(dataset, "ci").classifiers}
    manifest = nets.manifest
    assert manifest["command"].startswith(f"python -m advbound artifacts --dataset {dataset} --profile ci --seed 0")


def test_committed_networks_fit_the_size_budget():
    """Networks and witnesses of the four data chapters: at most 40 MB in all (issue 17)."""
    total = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert 0 < total <= 40e6


# --------------------------------------------------------------------------------------------------
# Fetching a committed folder where the repository is not (Colab)
# --------------------------------------------------------------------------------------------------

def test_the_packaged_index_matches_the_committed_artifacts():
    """The package carries the sha256 of every committed folder's manifests (scripts/index_artifacts.py)."""
    assert art.artifact_index() == art.index_artifacts(COMMITTED), "run scripts/index_artifacts.py"
    assert set(art.artifact_index()) == {f"{d}-ci-seed0" for d in ("mnist", "fashion_mnist", "svhn", "cifar10")}


def _served(tmp_path, saved_folder):
    """A repository-like tree served by file://, holding ``saved_folder`` as book/artifacts/<name>."""
    served = tmp_path / "served"
    shutil.copytree(saved_folder, served / "book" / "artifacts" / saved_folder.name)
    return served, served.as_uri()


def test_fetch_checks_the_manifests_against_the_package_and_the_files_against_the_manifests(saved, tmp_path,
                                                                                           monkeypatch):
    cfg, _, folder = saved
    served, url = _served(tmp_path, folder)
    monkeypatch.setattr(art, "artifact_index", lambda: art.index_artifacts(folder.parent))
    target = tmp_path / "colab" / folder.name
    art.fetch_artifacts(target, url)
    nets = art.load_networks(target, cfg, 0)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert nets.origin == str(target)
    # a served network changed after the package was built: its manifest still matches, the file does not
    shutil.rmtree(target)
    victim = served / "book" / "artifacts" / folder.name / next(iter(json.loads((folder / "manifest.json")
                                                                                .read_text())["files"]))
    victim.write_bytes(victim.read_bytes()[:-1] + bytes([victim.read_bytes()[-1] ^ 1]))
    with pytest.raises(art.ArtifactError, match="the fetched copy is damaged"):
        art.fetch_artifacts(target, url)
    assert not any(target.iterdir())                           # nothing half-fetched is left to be loaded later
    # a served manifest that is not the one the package was built with
    manifest = served / "book" / "artifacts" / folder.name / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed": 0', '"seed": 0 '))
    with pytest.raises(art.ArtifactError, match="is not the file this package was built with"):
        art.fetch_artifacts(target, url)
    with pytest.raises(art.ArtifactError, match="could not fetch"):
        art.fetch_artifacts(tmp_path / "colab2" / folder.name, (tmp_path / "nowhere").as_uri())
    monkeypatch.setattr(art, "artifact_index", lambda: {})
    with pytest.raises(art.ArtifactError, match="carries no sha256 for the artifact folder"):
        art.fetch_artifacts(target, url)


def test_raw_url_of_a_github_repository():
    assert (art.raw_url("https://github.com/advbound/advbound", "abc123")
            == "https://raw.githubusercontent.com/advbound/advbound/abc123")
    with pytest.raises(art.ArtifactError, match="need a https://github.com/OWNER/NAME address and a commit"):
        art.raw_url("https://example.org/x", "abc")
