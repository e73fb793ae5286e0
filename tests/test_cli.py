"""The command line: ``python -m advbound bound ...`` and ``python -m advbound experiment ...``.

The error cases run in-process (``main(argv)``); one test runs the module as a program."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from advbound.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advbound", *args], capture_output=True, text=True, timeout=120)


def test_cli_prints_the_papers_check_value():
    proc = _run("bound", "--latent-dim", "100", "--classes", "10", "--quantile", "0.25")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert f"{out['normalized']:.3g}" == "0.0158"
    assert out["space"] == "latent"


def test_cli_lipschitz_and_delta(capsys):
    assert main(["bound", "--latent-dim", "100", "--classes", "10", "--quantile", "0.25"]) == 0
    base = json.loads(capsys.readouterr().out)
    assert main(["bound", "--latent-dim", "100", "--class-probs", "0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1",
                 "--quantile", "0.25", "--lipschitz", "3"]) == 0
    img = json.loads(capsys.readouterr().out)
    assert img["space"] == "image"
    assert img["eta"] == pytest.approx(3 * base["eta"], rel=1e-9)
    assert main(["bound", "--latent-dim", "100", "--classes", "10", "--quantile", "0.25", "--delta", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["eta"] > base["eta"]


def test_cli_single_class_has_no_finite_bound(capsys):
    assert main(["bound", "--latent-dim", "10", "--classes", "1", "--quantile", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["eta"] is None


def _error(argv: list[str], capsys) -> tuple[int, str]:
    """Run the command line in-process on ``argv``, which must fail; return its exit status and message.

    Usage errors exit with status 2 after one line on stderr; the library's named errors raise
    ``SystemExit("advbound: error: ...")``, which Python prints on stderr with status 1."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    code = info.value.code
    return (1, code) if isinstance(code, str) else (code, captured.err)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advbound: "), text
    assert "Traceback" not in text
    return lines[0]


BOUND = ["bound", "--latent-dim", "100"]
BAD_ARGUMENTS = {
    "classes 0": (BOUND + ["--classes", "0", "--quantile", "0.25"], "--classes"),
    "classes 1e11": (BOUND + ["--classes", "100000000000", "--quantile", "0.25"], "--classes"),
    "classes ten": (BOUND + ["--classes", "ten", "--quantile", "0.25"], "--classes"),
    "class-probs sum 1.1": (BOUND + ["--class-probs", "0.5,0.6", "--quantile", "0.25"], "--class-probs"),
    "class-probs not a number": (BOUND + ["--class-probs", "0.5,x", "--quantile", "0.25"], "--class-probs"),
    "class-probs nan": (BOUND + ["--class-probs", "nan,1", "--quantile", "0.25"], "--class-probs"),
    "class-probs empty items": (BOUND + ["--class-probs", ",,", "--quantile", "0.25"], "--class-probs"),
    "classes and class-probs": (BOUND + ["--classes", "3", "--class-probs", "0.5,0.5", "--quantile", "0.25"],
                                "--class-probs"),
    "quantile 1.5": (BOUND + ["--classes", "10", "--quantile", "1.5"], "--quantile"),
    "quantile nan": (BOUND + ["--classes", "10", "--quantile", "nan"], "--quantile"),
    "lipschitz -1": (BOUND + ["--classes", "10", "--quantile", "0.25", "--lipschitz", "-1"], "--lipschitz"),
    "lipschitz inf": (BOUND + ["--classes", "10", "--quantile", "0.25", "--lipschitz", "inf"], "--lipschitz"),
    "delta 1.2": (BOUND + ["--classes", "10", "--quantile", "0.25", "--delta", "1.2"], "--delta"),
    "quantile + delta >= 1": (BOUND + ["--classes", "10", "--quantile", "0.8", "--delta", "0.3"], "--delta"),
    "latent-dim 0": (["bound", "--latent-dim", "0", "--classes", "10", "--quantile", "0.25"], "--latent-dim"),
    "latent-dim 1e3": (["bound", "--latent-dim", "1e3", "--classes", "10", "--quantile", "0.25"], "--latent-dim"),
    "latent-dim 10^400": (["bound", "--latent-dim", "1" + "0" * 400, "--classes", "10", "--quantile", "0.25"],
                          "--latent-dim"),
    "latent-dim missing": (["bound", "--classes", "10", "--quantile", "0.25"], "--latent-dim"),
    "prefix --lat": (["bound", "--lat", "5", "--latent-dim", "100", "--classes", "10", "--quantile", "0.25"], "--lat"),
    "prefix --latent": (["bound", "--latent", "5", "--classes", "10", "--quantile", "0.25"], "--latent"),
    "no command": ([], "command"),
    "dataset imagenet": (["experiment", "--dataset", "imagenet"], "--dataset"),
    "prefix --data": (["experiment", "--data", "mnist"], "--data"),
    "profile big": (["experiment", "--dataset", "mnist", "--profile", "big"], "--profile"),
    "seed -1": (["experiment", "--dataset", "mnist", "--seed", "-1"], "--seed"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS), ids=list(BAD_ARGUMENTS))
def test_bad_arguments_exit_nonzero_with_one_line_naming_the_argument(case, capsys, fake_run):
    """In-process: a usage error is one line on stderr that names the argument, and nothing on stdout.
    (argparse's prefix matching is off: ``--lat 5`` is refused rather than read as ``--latent-dim 5``.)"""
    args, name = BAD_ARGUMENTS[case]
    status, message = _error(args, capsys)
    assert status != 0
    assert name in _one_line(message)


@pytest.fixture()
def fake_run(monkeypatch, tmp_path):
    """``run_experiment`` replaced: records its calls and raises what the test puts in ``raises``; the test
    runs in an empty working directory, so that nothing can be written elsewhere."""
    from advbound import experiments

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADVBOUND_OUTPUT", raising=False)

    calls: list[dict] = []
    raises: list[BaseException] = []

    def run(dataset, profile, **kwargs):
        calls.append(dict(kwargs, dataset=dataset, profile=profile))
        if raises:
            raise raises[0]
        raise AssertionError("this test expects an error")

    monkeypatch.setattr(experiments, "run_experiment", run)
    return calls, raises


def _experiment(*args: str) -> list[str]:
    return ["experiment", "--dataset", "mnist", "--profile", "ci", "--quiet", *args]


@pytest.mark.parametrize("args, pattern", [
    (["--device", "banana"], "argument --device: expected cpu, cuda or cuda:N; got 'banana'"),
    (["--device", "cuda:99"], "argument --device: cuda:99"),
    (["--output", "{file}"], "argument --output: .*is a file, not a folder"),
    (["--out", "{file}/results"], "argument --out: .*is a file, not a folder"),
    (["--checkpoint-dir", "{file}"], "argument --checkpoint-dir: .*is a file, not a folder"),
], ids=["device banana", "device cuda:99", "output is a file", "out below a file", "checkpoint-dir is a file"])
def test_experiment_checks_device_and_paths_before_the_run(args, pattern, tmp_path, fake_run, capsys):
    (tmp_path / "file").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    status, message = _error(_experiment(*args), capsys)
    assert status == 1 and re.search(pattern, _one_line(message))
    assert fake_run[0] == []  # refused before any training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # and before creating any folder


def test_experiment_prints_the_librarys_named_errors_alone(tmp_path, fake_run, capsys):
    from advbound.data import DataUnavailableError
    from advbound.training import CheckpointError, TrainingDivergedError

    calls, raises = fake_run
    for err in (DataUnavailableError("real svhn data is not available: ADVBOUND_DATA=/x has no copy"),
                CheckpointError("checkpoint c.pt was written by a different configuration"),
                TrainingDivergedError("the training loss became nan at epoch 2, batch 3")):
        raises[:] = [err]
        status, message = _error(_experiment("--output", str(tmp_path)), capsys)
        assert status == 1 and _one_line(message) == f"advbound: error: {err}"
    raises[:] = [KeyboardInterrupt()]
    status, message = _error(_experiment("--output", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ck")), capsys)
    assert status == 130 and "resume" in _one_line(message)
    assert len(calls) == 4


def test_import_is_torch_free_and_submodules_load_lazily():
    code = ("import sys, advbound; assert 'torch' not in sys.modules; "
            "f = advbound.attacks.deepfool; assert 'torch' in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        import advbound
        advbound.nonexistent  # noqa: B018


def test_experiment_names_the_output_variable_when_it_points_at_a_file(tmp_path, fake_run, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ADVBOUND_OUTPUT", str(tmp_path / "file" / "sub"))
    status, message = _error(_experiment(), capsys)
    assert status == 1 and "argument --output ($ADVBOUND_OUTPUT)" in _one_line(message) and "is a file" in message
    assert fake_run[0] == []


def test_reattack_and_keep_networks_need_a_folder_of_networks(tmp_path, fake_run, capsys):
    status, message = _error(_experiment("--reattack"), capsys)
    assert status == 1 and _one_line(message) == ("advbound: error: argument --reattack: needs --artifacts (the "
                                                  "folder to write the witnesses to)")
    status, message = _error(["artifacts", "--dataset", "svhn", "--out", str(tmp_path), "--keep-networks"], capsys)
    assert status == 1 and re.search(r"argument --keep-networks: .*svhn-ci-seed0 holds no committed networks",
                                     _one_line(message))
    assert fake_run[0] == []


def test_artifacts_command_trains_and_searches_or_only_searches(tmp_path, fake_run, capsys):
    from advbound.artifacts import ArtifactError

    calls, raises = fake_run
    raises[:] = [ArtifactError("the witnesses do not fit these networks")]
    status, message = _error(["artifacts", "--dataset", "mnist", "--out", str(tmp_path), "--quiet"], capsys)
    assert status == 1 and _one_line(message) == "advbound: error: the witnesses do not fit these networks"
    (tmp_path / "mnist-ci-seed0").mkdir()
    (tmp_path / "mnist-ci-seed0" / "manifest.json").write_text("{}")
    _error(["artifacts", "--dataset", "mnist", "--out", str(tmp_path), "--keep-networks", "--quiet"], capsys)
    _error(["artifacts", "--dataset", "mnist", "--out", str(tmp_path), "--keep-networks", "--searches", "r_unc",
            "--quiet"], capsys)
    assert [(c["retrain"], c["reattack"]) for c in calls] == [(True, True), (False, True), (False, ["r_unc"])]
    assert all(str(c["artifacts"]).endswith("mnist-ci-seed0") for c in calls)
    # retrained networks need every search anew
    status, message = _error(["artifacts", "--dataset", "mnist", "--out", str(tmp_path), "--searches", "r_unc"],
                             capsys)
    assert status == 1 and "argument --searches: needs --keep-networks" in _one_line(message)
    assert len(calls) == 3


def test_the_searches_option_offers_the_committed_searches():
    from advbound.cli import build_parser
    from advbound.witnesses import SEARCHES

    artifacts = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()
                     if any(o.dest == "searches" for o in a._actions))
    option = next(o for o in artifacts._actions if o.dest == "searches")
    assert tuple(option.choices) == tuple(SEARCHES)


def test_artifacts_command_reports_what_it_wrote(tmp_path, fake_run, monkeypatch, capsys):
    """After a run, the files of the manifest and, per classifier, how many points each search found."""
    from advbound import experiments

    folder = tmp_path / "mnist-ci-seed0"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"total_size": 3_000_000, "files": {
        "dcgan.pt": {"size": 2_000_000, "parameters": 1234, "sha256": "ab" * 32}}}))
    searches = {"r_z": {"samples": 5, "found": 5}, "r_in": {"samples": 5, "found": 4},
                "r_unc": {"samples": 5, "found": 3}}
    (folder / "witnesses.json").write_text(json.dumps({"size": 1_500_000, "classifiers": {
        "lenet": {"label": "2-Layer LeNet", **searches}}}))
    monkeypatch.setattr(experiments, "run_experiment", lambda *a, **k: None)
    assert main(["artifacts", "--dataset", "mnist", "--out", str(tmp_path), "--keep-networks", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("dcgan.pt: 2.00 MB, 1,234 parameters, sha256 abababababababab...")
    assert out[-1] == "  2-Layer LeNet: r_z 5/5, r_in 4/5, r_unc 3/5"
