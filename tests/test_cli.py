"""The command line of the foundation issue: ``python -m advbound bound ...``."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("args, name", [
    (["--classes", "0", "--quantile", "0.25"], "--classes"),
    (["--class-probs", "0.5,0.6", "--quantile", "0.25"], "--class-probs"),
    (["--class-probs", "0.5,x", "--quantile", "0.25"], "--class-probs"),
    (["--classes", "10", "--quantile", "1.5"], "--quantile"),
    (["--classes", "10", "--quantile", "0.25", "--lipschitz", "-1"], "--lipschitz"),
    (["--classes", "10", "--quantile", "0.25", "--delta", "1.2"], "--delta"),
    (["--classes", "10", "--quantile", "0.8", "--delta", "0.3"], "--delta"),
])
def test_cli_bad_arguments_exit_nonzero_with_one_line_naming_the_argument(args, name):
    proc = _run("bound", "--latent-dim", "100", *args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert name in lines[0]
    assert proc.stdout == ""


def test_cli_missing_latent_dim():
    proc = _run("bound", "--classes", "10", "--quantile", "0.25")
    assert proc.returncode != 0 and "--latent-dim" in proc.stderr


def test_import_is_torch_free_and_submodules_load_lazily():
    code = ("import sys, advbound; assert 'torch' not in sys.modules; "
            "f = advbound.attacks.deepfool; assert 'torch' in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        import advbound
        advbound.nonexistent  # noqa: B018
