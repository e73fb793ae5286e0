"""The project's adversarial suite, second round (issue 20): a case per defect found by a fresh adversarial user.

Categories (the section headings below):

* silently wrong or state-changing results, items 1-9 of the issue: reused latent results, parameter
  gradients, the projection classifier's batch dependence, BatchNorm statistics, subnormal class
  probabilities, NaN arguments, integer found flags, non-integral seeds, ``--out`` paths;
* raw third-party exceptions that became named errors (or correct results): tensors, ``None`` and ragged
  input to the bounds, inference tensors, numpy weights, empty data, tuple outputs, damaged manifests,
  devices, checkpoints, a corrupt MNIST file;
* concurrent writers of one checkpoint or manifest, with a reader that must always see a complete file;
* DeepFool on logits large enough to overflow float32.

Expected values come from mpmath, closed forms, or the models evaluated here; never from the code under test.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import advbound
from advbound import artifacts, bounds, checkpoints, cli, data, uniform_prior, witnesses
from advbound.attacks import deepfool, in_distribution_attack, latent_deepfool, latent_penalty_attack
from advbound.latent_linear import LatentClassifier, decision_gradients, fit_linear_classifier
from advbound.projection import ProjectionClassifier
from test_bounds import _mp_eq2, _mp_quantile

DT = torch.float64
ROOT = Path(__file__).resolve().parents[1]
MNIST_ARTIFACTS = ROOT / "book" / "artifacts" / "mnist-ci-seed0"


def _mlp(n_in: int, n_out: int, *, seed: int, bn: bool = False, width: int = 16) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(n_in, width)]
    if bn:
        layers.append(nn.BatchNorm1d(width))
    layers += [nn.Tanh(), nn.Linear(width, n_out)]
    return nn.Sequential(*layers).to(DT)


def _x(n: int, d: int, seed: int, dtype: torch.dtype = DT) -> torch.Tensor:
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ==================================================================================================
# Item 1: a reused latent result must come from this z, and every reported value is re-measured
# ==================================================================================================

def test_latent_result_of_another_batch_is_refused():
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    za, zb = _x(6, 3, 3), _x(6, 3, 4)
    other = latent_deepfool(clf, gen, zb, max_steps=20)
    with pytest.raises(ValueError, match="latent was computed for other latent points than z"):
        in_distribution_attack(clf, gen, za, latent=other, boundary_steps=2)


def test_reused_latent_result_is_reverified_and_remeasured():
    """A result of this z whose numbers were changed (smaller distances, a success at a point with the clean
    label) reports only what its points give on the models."""
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    z = _x(8, 3, 5)
    lat = latent_deepfool(clf, gen, z, max_steps=30)
    assert bool(lat.success.all())
    forged = copy.deepcopy(lat)
    forged.image_distances = lat.image_distances * 0.01
    forged.latent_norms = lat.latent_norms * 0.01
    res = in_distribution_attack(clf, gen, z, latent=forged, boundary_steps=0, max_steps=2)
    with torch.no_grad():
        measured = (gen(res.z_adv) - gen(z)).flatten(1).norm(dim=1)
        labels = clf(gen(res.z_adv)).argmax(1)
    torch.testing.assert_close(res.image_distances, measured, rtol=1e-12, atol=0)
    torch.testing.assert_close(res.latent_norms, (res.z_adv - z).norm(dim=1), rtol=1e-12, atol=0)
    assert torch.equal(res.success, labels != clf(gen(z)).argmax(1))


def test_a_forged_success_at_the_clean_point_is_not_reported():
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    z = _x(4, 3, 6)
    lat = latent_deepfool(clf, gen, z, max_steps=30)
    forged = copy.deepcopy(lat)
    forged.z_adv = z.clone()                    # no label change there
    forged.latent_perturbation = torch.zeros_like(z)
    forged.image_distances = torch.zeros(4, dtype=DT)
    res = in_distribution_attack(clf, gen, z, latent=forged, boundary_steps=0, max_steps=1, include_latent=True)
    assert bool((res.image_distances[res.success] > 0).all())
    assert "latent_deepfool" not in [m for m, s in zip(res.method, res.success.tolist(), strict=True) if s]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_pipelines_own_reuse_passes_the_origin_check(dtype):
    """boundary_search(latent=latent_deepfool(z)) at the same z: the check allows the rounding of z_adv - r."""
    from advbound.attacks import boundary_search

    clf, gen = _mlp(5, 3, seed=1).to(dtype), _mlp(3, 5, seed=2).to(dtype)
    z = _x(16, 3, 7, dtype) * 30  # large coordinates: the rounding of z_adv - (z_adv - z) is largest
    lat = latent_deepfool(clf, gen, z, max_steps=10)
    boundary_search(clf, gen, z, latent=lat, steps=1)


# ==================================================================================================
# Item 2: no attack touches the parameters' .grad or requires_grad
# ==================================================================================================

def _grad_state(model: nn.Module) -> list:
    return [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()]


def _same_grad_state(model: nn.Module, before: list) -> bool:
    after = _grad_state(model)
    return all(ra == rb and ((ga is None and gb is None) or (ga is not None and gb is not None and torch.equal(ga, gb)))
               for (ra, ga), (rb, gb) in zip(after, before, strict=True))


@pytest.mark.parametrize("preset", ["none", "user grads"])
def test_penalty_attack_leaves_parameter_gradients_alone(preset):
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    gen[0].bias.requires_grad_(False)  # a user who froze one parameter
    if preset == "user grads":
        for p in list(clf.parameters()) + list(gen.parameters()):
            p.grad = torch.randn_like(p)
    before = (_grad_state(clf), _grad_state(gen))
    res = latent_penalty_attack(clf, gen, _x(4, 3, 8), rounds=2, steps=3)
    assert res.z_adv.shape == (4, 3)
    assert _same_grad_state(clf, before[0]) and _same_grad_state(gen, before[1])


def test_parameter_flags_come_back_when_an_attack_raises():
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    before = (_grad_state(clf), _grad_state(gen))
    with pytest.raises(ValueError, match="rounds"):
        latent_penalty_attack(clf, gen, _x(4, 3, 8), rounds=0)
    assert _same_grad_state(clf, before[0]) and _same_grad_state(gen, before[1])


# ==================================================================================================
# Item 3: the projection classifier is a function of its input
# ==================================================================================================

class _DoubleWell(nn.Module):
    """g(z) = z^2 - 1 on R: x = 0.5 has the two preimages +-sqrt(1.5), found from starts of either sign."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z ** 2 - 1


def test_projection_label_does_not_depend_on_the_batch():
    proj = ProjectionClassifier(lambda z: torch.cat([z, -z], 1), _DoubleWell(), 1, restarts=2, steps=150, lr=0.05,
                                latent=True)
    x = torch.full((8, 1), 0.5, dtype=DT)
    labels = proj(x).argmax(1)
    alone = torch.cat([proj(x[i:i + 1]).argmax(1) for i in range(8)])
    assert torch.equal(labels, alone)
    assert len(set(labels.tolist())) == 1  # identical inputs, identical labels
    mixed = torch.cat([torch.linspace(-0.9, 3.0, 5, dtype=DT)[:, None], x[:1]])
    assert torch.equal(proj(mixed).argmax(1)[-1:], labels[:1])


# ==================================================================================================
# Item 4: decision_gradients on a train-mode model
# ==================================================================================================

def test_decision_gradients_keep_batchnorm_statistics_and_match_eval_mode():
    model = _mlp(6, 3, seed=3, bn=True)
    with torch.no_grad():
        model(_x(32, 6, 9) * 2 + 1)  # non-trivial running statistics
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x(10, 6, 10)
    got = decision_gradients(model, x)
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    ref = decision_gradients(copy.deepcopy(model).eval(), x)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_decision_gradients_name_a_tuple_output():
    with pytest.raises(ValueError, match="classifier must return a torch.Tensor; got tuple"):
        decision_gradients(lambda x: (x[:, :2], x), _x(3, 4, 1))


# ==================================================================================================
# Item 5: tiny and subnormal class probabilities, against mpmath
# ==================================================================================================

def test_the_issues_two_values():
    assert bounds.quantile_upper_bound(0.25, [1e-320, 1.0]) == pytest.approx(37.5946, abs=1e-4)
    got = bounds.latent_probability_lower_bound(31.5, [1e-320, 1.0])
    assert got == pytest.approx(float(_mp_eq2(31.5, [1e-320, 1.0])), rel=1e-10)
    assert got == pytest.approx(6.478e-12, rel=1e-3)


def test_cli_bound_with_a_subnormal_class(capsys):
    assert cli.main(["bound", "--latent-dim", "100", "--class-probs", "1e-320,1", "--quantile", "0.25"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latent_radius"] == pytest.approx(_mp_quantile(0.25, [1e-320, 1.0]), rel=1e-10)


# ==================================================================================================
# Item 6: NaN is refused
# ==================================================================================================

NAN = float("nan")


@pytest.mark.parametrize("call, name", [
    (lambda: uniform_prior.cube_distance_to_half_space([[0.0, 0.0]], [1.0, 1.0], NAN), "offset"),
    (lambda: uniform_prior.cube_distance_to_half_space([[0.0, 0.0]], [1.0, NAN], 0.5), "normal"),
    (lambda: uniform_prior.cube_half_space_robustness([[0.0, 0.0]], [1.0, 1.0], NAN), "offset"),
    (lambda: uniform_prior.cube_half_space_robustness([[0.0, 0.0]], [NAN, 1.0], 0.5), "normal"),
    (lambda: uniform_prior.cube_half_space_robustness([[NAN, 0.0]], [1.0, 1.0], 0.5), "u must lie"),
    (lambda: uniform_prior.cube_slab_robustness([[0.0, 0.0]], [1.0, 1.0], NAN, 1.0), "low must be a finite"),
    (lambda: bounds.class_probabilities([0.5, 0.6], atol=NAN), "atol"),
    (lambda: bounds.class_probabilities([0.5, 0.5], atol=-1e-3), "atol"),
    (lambda: bounds.class_probabilities([0.5, 0.5], atol=math.inf), "atol"),
], ids=["distance offset", "distance normal", "robustness offset", "robustness normal", "robustness u", "slab low",
        "atol nan", "atol negative", "atol inf"])
def test_nan_arguments_get_a_named_error(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ==================================================================================================
# Item 7: verified_search found flags
# ==================================================================================================

def _witness_case():
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    z = _x(5, 3, 11)
    lat = latent_deepfool(clf, gen, z, max_steps=30)
    assert bool(lat.success.all())
    return clf, gen, z, lat.z_adv - z  # what a witness file stores: the displacement from z


def test_integer_found_flags_give_a_boolean_mask():
    clf, gen, z, delta = _witness_case()
    found = torch.tensor([1, 0, 1, 1, 0])
    res = witnesses.verified_search(clf, gen, z, delta, found)
    assert res.success.dtype == torch.bool and res.success.tolist() == [True, False, True, True, False]
    assert res.image_distances[res.success].shape == (3,)


@pytest.mark.parametrize("found", [torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor([2, 0, 1, 1, 0]),
                                   [True, False, True, True, False]], ids=["float", "integer 2", "list"])
def test_other_found_flags_are_refused(found):
    clf, gen, z, delta = _witness_case()
    with pytest.raises(ValueError, match="found"):
        witnesses.verified_search(clf, gen, z, delta, found)


# ==================================================================================================
# Item 8: a seed is an integer, everywhere
# ==================================================================================================

def _seed_calls(seed):
    from advbound import book, generators, lipschitz, modulus_estimation, portable
    from advbound.experiments import dryrun, pipeline

    gen = generators.IsometricLinearGenerator(2, 3)
    return {
        "artifact_folder": lambda: artifacts.artifact_folder("x", "mnist", "ci", seed),
        "checkpoint_dir": lambda: book.checkpoint_dir("mnist", "ci", seed, "out-not-created"),
        "seed_everything": lambda: book.seed_everything(seed),
        "seeded_normal": lambda: portable.seeded_normal(2, 3, seed=seed),
        "set_determinism": lambda: pipeline.set_determinism(seed, threads=None),
        "run_experiment": lambda: pipeline.run_experiment("mnist", "ci", seed=seed, progress=False),
        "dry_run": lambda: dryrun.dry_run("mnist", "ci", seed=seed, probe_batch=1, repeats=0),
        "synthetic_stand_in": lambda: data.synthetic_stand_in(4, seed=seed),
        "template_seed": lambda: data.synthetic_stand_in(4, template_seed=seed),
        "load_dataset": lambda: data.load_dataset("svhn", "ci", seed=seed, n_train=4, n_test=4),
        "local_increments": lambda: modulus_estimation.local_increments(gen, torch.zeros(2, 2, dtype=DT), 0.1,
                                                                        seed=seed),
        "estimate_modulus": lambda: modulus_estimation.estimate_modulus(gen, n_samples=8, radii=[0.0, 1.0],
                                                                        seed=seed),
        "power_iteration": lambda: lipschitz.power_iteration_norm([nn.Linear(2, 2)], (2,), seed=seed),
        "IsometricLinearGenerator": lambda: generators.IsometricLinearGenerator(2, 3, seed=seed),
        "InvertibleGenerator": lambda: generators.InvertibleGenerator([2, 3], seed=seed),
    }


@pytest.mark.parametrize("seed", [0.9, "zero", True, -1], ids=["0.9", "zero", "True", "-1"])
@pytest.mark.parametrize("where", list(_seed_calls(0)))
def test_non_integral_seeds_are_refused_everywhere(where, seed, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        _seed_calls(seed)[where]()
    torch.set_rng_state(rng)


@pytest.mark.skipif(not (MNIST_ARTIFACTS / "manifest.json").is_file(), reason="needs the committed MNIST networks")
def test_load_networks_does_not_round_a_seed_to_zero():
    from advbound.experiments import experiment_config

    cfg = experiment_config("mnist", "ci")
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got 0.9"):
        artifacts.load_networks(MNIST_ARTIFACTS, cfg, 0.9)


# ==================================================================================================
# Item 9: one rule for every --out
# ==================================================================================================

@pytest.mark.parametrize("given, written", [
    ("run", ("run.json", "run.csv")), ("run.json", ("run.json", "run.csv")), ("run.CSV", ("run.json", "run.csv")),
    ("model.v1", ("model.v1.json", "model.v1.csv")), ("a.b.c", ("a.b.c.json", "a.b.c.csv")),
])
def test_result_files_keep_every_suffix_but_json_and_csv(given, written, tmp_path):
    from advbound.book import result_files

    assert result_files(tmp_path / given) == tuple(tmp_path / w for w in written)


def _dry_run_cli(out: str, tiny_dry_run, monkeypatch, capsys) -> tuple[int | str | None, str]:
    from advbound.experiments import dryrun

    monkeypatch.setattr(dryrun, "dry_run", lambda *a, **k: tiny_dry_run)
    try:
        status: int | str | None = cli.main(["experiment", "--dataset", "mnist", "--dry-run", "--quiet", "--out", out])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out + captured.err + (status if isinstance(status, str) else "")


def test_dry_run_out_with_a_dotted_name_never_replaces_another_file(tmp_path, tiny_dry_run, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.json").write_text("the user's own file")
    status, _ = _dry_run_cli("d/model.v1", tiny_dry_run, monkeypatch, capsys)
    assert status == 0
    assert (tmp_path / "d" / "model.json").read_text() == "the user's own file"
    assert json.loads((tmp_path / "d" / "model.v1.json").read_text())["dataset"] == "cifar10"
    assert (tmp_path / "d" / "model.v1.csv").is_file()


def test_dry_run_out_naming_a_folder_is_refused_and_writes_nothing(tmp_path, tiny_dry_run, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    status, message = _dry_run_cli("runs", tiny_dry_run, monkeypatch, capsys)
    assert status != 0 and "argument --out" in message and "is a folder" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and not any((tmp_path / "runs").iterdir())


def test_experiment_results_follow_the_same_rule(tmp_path, tiny_dry_run):
    """ExperimentResult.save and DryRun.save write the same two names for the same --out."""
    from advbound.experiments import ExperimentResult

    assert ExperimentResult.save.__doc__ and "result_files" in ExperimentResult.save.__doc__
    path = tiny_dry_run.save(tmp_path / "model.v1")
    assert path == tmp_path / "model.v1.json" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.v1.csv", "model.v1.json"]
    with pytest.raises(ValueError, match="is a folder"):
        tiny_dry_run.save(tmp_path)


# ==================================================================================================
# Raw exceptions that became named errors (or correct results)
# ==================================================================================================

def test_requires_grad_tensors_are_read_as_numbers():
    p = torch.tensor([0.2, 0.3, 0.5], dtype=DT, requires_grad=True)
    eta = torch.tensor(1.0, dtype=DT, requires_grad=True)
    assert bounds.probability_lower_bound(eta, p) == bounds.probability_lower_bound(1.0, [0.2, 0.3, 0.5])
    assert bounds.quantile_upper_bound(0.25, p) == bounds.quantile_upper_bound(0.25, [0.2, 0.3, 0.5])


@pytest.mark.parametrize("call, pattern", [
    (lambda: bounds.class_probabilities([[0.5], [0.25, 0.25]]), "class_probs must be .*rectangular"),
    (lambda: bounds.probability_lower_bound(None, n_classes=10), "eta .* got None"),
    (lambda: bounds.latent_probability_lower_bound(None, n_classes=10), "t .* got None"),
    (lambda: bounds.class_probabilities(None, None), "exactly one"),
    (lambda: bounds.probability_lower_bound([[1.0], [1.0, 2.0]], n_classes=3), "eta .*rectangular"),
], ids=["ragged class_probs", "eta None", "t None", "no probabilities", "ragged eta"])
def test_bad_bound_input_is_named(call, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        call()


def test_inference_tensors_are_attacked_like_normal_ones():
    clf, gen = _mlp(5, 3, seed=1), _mlp(3, 5, seed=2)
    x, z = _x(4, 5, 12), _x(4, 3, 13)
    with torch.inference_mode():
        xi, zi = x.clone(), z.clone()
    assert xi.is_inference() and zi.is_inference()
    assert torch.equal(deepfool(clf, xi, max_steps=10).x_adv, deepfool(clf, x, max_steps=10).x_adv)
    assert torch.equal(latent_deepfool(clf, gen, zi, max_steps=10).z_adv,
                       latent_deepfool(clf, gen, z, max_steps=10).z_adv)
    assert torch.equal(in_distribution_attack(clf, gen, zi, max_steps=5, boundary_steps=2).z_adv,
                       in_distribution_attack(clf, gen, z, max_steps=5, boundary_steps=2).z_adv)


def test_an_attack_inside_inference_mode_says_so():
    clf = _mlp(5, 3, seed=1)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"deepfool cannot run inside torch.inference_mode"):
        deepfool(clf, _x(4, 5, 12))


def test_latent_classifier_takes_numpy_weights():
    w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    from_numpy = LatentClassifier(w, np.array([0.1, 0.0, 0.0]), lambda x: x)
    from_torch = LatentClassifier(torch.from_numpy(w), torch.tensor([0.1, 0.0, 0.0], dtype=DT), lambda x: x)
    z = _x(6, 2, 14)
    assert torch.equal(from_numpy(z), from_torch(z))
    torch.testing.assert_close(from_numpy(z), z @ torch.from_numpy(w).T + torch.tensor([0.1, 0.0, 0.0], dtype=DT))


@pytest.mark.parametrize("features, labels", [(np.zeros((0, 3)), np.zeros(0, dtype=int)),
                                              (np.zeros(0), np.zeros(0, dtype=int))], ids=["(0, 3)", "(0,)"])
def test_fit_linear_classifier_on_empty_data_is_named(features, labels):
    with pytest.raises(ValueError, match="features and labels must have the same number n >= 1 of rows"):
        fit_linear_classifier(features, labels, 2)


def _manifest_folder(tmp_path: Path, change) -> Path:
    folder = tmp_path / "nets"
    folder.mkdir()
    manifest = {"format": 1, "dataset": "mnist", "profile": "ci", "seed": 0,
                "files": {"dcgan.pt": {"sha256": "0" * 64, "size": 1, "training_history": []}}}
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("change, pattern", [
    (lambda m: m["files"].update({"dcgan.pt": "abc"}), "entry for 'dcgan.pt' is str"),
    (lambda m: m["files"]["dcgan.pt"].update({"training_history": None}), "training_history of 'dcgan.pt' is NoneType"),
], ids=["file entry is a string", "training_history is null"])
def test_damaged_manifests_raise_artifact_error(change, pattern, tmp_path):
    folder = _manifest_folder(tmp_path, change)
    with pytest.raises(artifacts.ArtifactError, match=pattern):
        artifacts.read_manifest(folder)


def test_witness_settings_that_are_a_list_raise_artifact_error(tmp_path):
    (tmp_path / witnesses.WITNESS_MANIFEST).write_text(json.dumps({"format": witnesses.FORMAT,
                                                                   "networks": {"a.pt": "1"}, "settings": [1, 2]}))
    with pytest.raises(artifacts.ArtifactError, match="another search"):
        witnesses.load_witnesses(tmp_path, settings={"n_eval": 3}, networks={"a.pt": "1"}, keys=[],
                                 shapes={"r_z": (1, 1), "r_in": (1, 1), "r_unc": (1, 1, 1, 1)}, command="cmd")


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@no_cuda
def test_cuda_without_a_driver_is_named_before_any_work(tmp_path):
    from advbound.experiments import experiment_config, run_experiment

    with pytest.raises(ValueError, match="device: cuda was asked for but CUDA is not available"):
        artifacts.load_networks(tmp_path, experiment_config("mnist", "ci"), 0, device="cuda")
    with pytest.raises(ValueError, match="device: cuda was asked for"):
        run_experiment("mnist", "ci", device="cuda", progress=False)


@pytest.mark.parametrize("device", ["meta", "cuda:99"])
def test_cli_device_that_cannot_compute_is_one_line(device, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["experiment", "--dataset", "mnist", "--device", device, "--quiet"])
    message = str(stop.value.code)
    assert message.startswith("advbound: error: argument --device") and device in message
    assert "\n" not in message and list(tmp_path.iterdir()) == []


# ---- checkpoints -------------------------------------------------------------------------------

def test_unpicklable_state_leaves_no_temporary_file_and_the_old_checkpoint(tmp_path):
    path = checkpoints.save_checkpoint(tmp_path / "model.pt", {"epoch": 1})
    with pytest.raises(checkpoints.CheckpointError, match=r"model.pt was not written: the state holds an object"):
        checkpoints.save_checkpoint(path, {"epoch": 2, "fn": lambda: 0})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert checkpoints.load_checkpoint(path) == {"epoch": 1}


def test_a_parent_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(checkpoints.CheckpointError, match=r"file is a file, not a folder"):
        checkpoints.save_checkpoint(tmp_path / "file" / "sub" / "model.pt", {"epoch": 1})


def test_an_unwritable_folder_is_named_with_the_path(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.save_checkpoint(tmp_path / "ro" / "model.pt", {"epoch": 1})
    assert str(tmp_path / "ro" / "model.pt") in str(info.value) and "Permission denied" in str(info.value)
    assert list((tmp_path / "ro").iterdir()) == []


@no_cuda
def test_map_location_cuda_on_a_cpu_machine_does_not_blame_the_file(tmp_path):
    path = checkpoints.save_checkpoint(tmp_path / "model.pt", {"w": torch.ones(2)})
    with pytest.raises(ValueError, match="map_location: cuda was asked for but CUDA is not available") as info:
        checkpoints.load_checkpoint(path, map_location="cuda")
    assert "corrupt" not in str(info.value) and "delete" not in str(info.value)
    assert path.is_file()


def test_a_corrupt_mnist_file_is_one_line_from_the_cli(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in data.MNIST_MD5:
        (folder / name).write_bytes(b"not an idx file")
    monkeypatch.setenv(data.MNIST_DIR_ENV, str(folder))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["experiment", "--dataset", "mnist", "--profile", "ci", "--quiet", "--device", "cpu"])
    message = str(stop.value.code)
    assert message.startswith("advbound: error: ADVBOUND_MNIST_DIR=") and "md5" in message and "\n" not in message


# ==================================================================================================
# Concurrency: two writers of the same file, and a reader that must always see a complete file
# ==================================================================================================

WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from advbound.checkpoints import save_checkpoint
    from advbound.artifacts import write_json_atomically
    kind, target, writer, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    failures = 0
    for i in range(n):
        try:
            if kind == "checkpoint":
                save_checkpoint(target, {"writer": writer, "i": i, "data": torch.full((4096,), float(i))})
            else:
                write_json_atomically(target, {"writer": writer, "i": i, "data": [i] * 4096})
        except Exception as err:
            failures += 1
            print(type(err).__name__, err, file=sys.stderr)
    print(failures)
""")
WRITES_PER_PROCESS = 150


def _complete(kind: str, path: Path) -> bool:
    """Whether ``path`` holds one whole write (its payload matches its counter)."""
    if kind == "checkpoint":
        state = checkpoints.load_checkpoint(path)
        return bool((state["data"] == float(state["i"])).all()) and state["data"].numel() == 4096
    content = json.loads(path.read_text())
    return content["data"] == [content["i"]] * 4096


@pytest.mark.parametrize("kind", ["checkpoint", "manifest"])
def test_two_writers_and_a_reader(kind, tmp_path):
    target = tmp_path / ("model.pt" if kind == "checkpoint" else "manifest.json")
    lib = str(Path(advbound.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([lib, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target), str(k), str(WRITES_PER_PROCESS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in (0, 1)]
    reads = incomplete = 0
    while any(p.poll() is None for p in procs):
        if target.exists():
            try:
                ok = _complete(kind, target)
            except (checkpoints.CheckpointError, json.JSONDecodeError, FileNotFoundError, KeyError):
                ok = False
            reads += 1
            incomplete += not ok
    outputs = [p.communicate(timeout=60) for p in procs]
    failures = [int(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert failures == [0, 0], [err[-2000:] for _, err in outputs]
    assert incomplete == 0 and reads > 0, (reads, incomplete)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind
    assert _complete(kind, target)


# ==================================================================================================
# DeepFool where float32 overflows
# ==================================================================================================

class _Scaled(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def test_logits_scaled_by_1e20_give_the_unscaled_points():
    """The decision boundaries do not change with the scale: DeepFool finds the same points (float32)."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = _x(6, 5, 15, torch.float32)
    ref = deepfool(model, x, refine=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = deepfool(_Scaled(model, 1e20), x, refine=True)
    assert bool(ref.success.all()) and torch.equal(big.success, ref.success)
    torch.testing.assert_close(big.norms, ref.norms, rtol=1e-4, atol=0)


def test_logits_that_overflow_are_named_in_a_warning():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = _x(6, 5, 15, torch.float32)
    with pytest.warns(RuntimeWarning, match=r"6 of 6 samples met non-finite logits or gradients .*overflow"):
        res = deepfool(_Scaled(model, 1e39), x)
    assert not bool(res.success.any())
