"""Static checks: ruff (pycodestyle, pyflakes, import order, bugbear, pyupgrade) over the Python sources and
mypy over the library, both configured in pyproject.toml.  Each must report nothing; each is also shown to
reject a planted finding, so that a misconfiguration that checks no file cannot pass unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["lib", "tests", "benchmarks", "scripts"]


def _tool(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", name, *args], cwd=cwd, capture_output=True, text=True)
    assert "No module named" not in run.stderr, f"{name} is missing: install the test extra (pip install -e '.[test]')"
    return run


def test_ruff_reports_nothing():
    run = _tool("ruff", "check", "--no-fix", "--output-format", "concise", *LINTED)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_reports_nothing_on_the_library():
    run = _tool("mypy", "--no-error-summary")  # the files come from [tool.mypy] in pyproject.toml
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_checkers_reject_planted_findings(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom typing import Optional\n\n\ndef f(x: Optional[int]) -> int:\n    return 'a'\n")
    ruff = _tool("ruff", "check", "--no-fix", "--output-format", "concise", "--config", str(ROOT / "pyproject.toml"),
                 str(bad), cwd=tmp_path)
    assert ruff.returncode == 1 and "F401" in ruff.stdout and "UP045" in ruff.stdout, ruff.stdout + ruff.stderr
    mypy = _tool("mypy", "--no-error-summary", "--config-file", str(ROOT / "pyproject.toml"), str(bad), cwd=tmp_path)
    assert mypy.returncode == 1 and "Incompatible return value type" in mypy.stdout, mypy.stdout + mypy.stderr
