"""Publishing: one repository address for the launch buttons, the citation file, the package metadata and the
Colab set-up cells; the GitHub workflows that test and publish the book, linted with actionlint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _url() -> str:
    return _config()["repository"]["url"]


def test_config_names_a_github_repository_and_colab_launch_buttons():
    """Jupyter Book builds each chapter's Colab button from repository.url, branch and path_to_book; Colab
    opens notebooks from GitHub, so the address must be a plain https://github.com/OWNER/NAME."""
    config = _config()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", _url()) and not _url().endswith(".git")
    assert config["repository"]["branch"] == "main"
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_citation_and_package_metadata_name_the_same_repository():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["repository-code"] == _url()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Repository"] == _url()
    assert citation["version"] == project["version"]


def test_executed_chapters_install_from_the_configured_repository():
    """The committed notebooks are what the launch buttons open on Colab: the address papermill injected into
    each (its set-up cell installs from it) must be the configured one, or the chapter is stale."""
    notebooks = sorted((ROOT / "book").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        params = nbformat.read(path, as_version=4).metadata["papermill"]["parameters"]
        assert params["repository_url"] == _url(), f"{path.name}: re-execute it (make notebooks)"


def _actionlint() -> str:
    exe = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert exe, "actionlint is missing: install the test extra (pip install -e '.[test]')"
    return exe


def test_workflows_pass_actionlint():
    assert {p.name for p in WORKFLOWS} == {"test.yml", "pages.yml"}
    run = subprocess.run([_actionlint(), "-no-color", *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """The linter is not a formality: an unknown runner label and an undefined expression context fail."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latst\n    steps:\n"
                   "      - run: echo ${{ github.nonexistent_context }}\n")
    run = subprocess.run([_actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert run.returncode == 1 and "ubuntu-latst" in run.stdout


def _steps(workflow: Path) -> list[dict]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step for job in jobs.values() for step in job.get("steps", [])]


def test_test_workflow_runs_the_readme_test_command_on_push_and_pull_request():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.M), "the README's test command changed"
    workflow = ROOT / ".github" / "workflows" / "test.yml"
    triggers = yaml.safe_load(workflow.read_text())[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    assert [s["run"] for s in _steps(workflow) if "run" in s] == ["make test"]


def test_pages_workflow_builds_the_book_and_deploys_it_from_main():
    workflow = ROOT / ".github" / "workflows" / "pages.yml"
    text = yaml.safe_load(workflow.read_text())
    assert text[True]["push"]["branches"] == ["main"]
    assert {"pages": "write", "id-token": "write"}.items() <= text["permissions"].items()
    steps = _steps(workflow)
    assert [s["run"] for s in steps if "run" in s] == ["make html"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in steps)


@pytest.mark.parametrize("target", ["html", "test"])
def test_makefile_targets_the_workflows_call_exist(target):
    assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M)
