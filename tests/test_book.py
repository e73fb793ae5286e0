"""Checks of the book pipeline: notebooks/NAME.md (jupytext source) -> book/NAME.ipynb (papermill output).

nbval itself (``pytest book --nbval-lax``) re-executes the committed notebooks and compares the cells
marked ``# NBVAL_CHECK_OUTPUT``.  It cannot notice a notebook that was never executed, one whose code no
longer matches its source, or a figure that was not exported; these tests do, and one of them makes sure
that nbval really fails when a checked number changes.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SOURCES = sorted((ROOT / "notebooks").glob("*.md"))
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"

pytestmark = pytest.mark.skipif(not SOURCES, reason="no notebooks/*.md yet")


def _executed(source: Path) -> Path:
    return BOOK / f"{source.stem}.ipynb"


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _is_checked(cell) -> bool:
    lines = [line.strip() for line in cell.source.splitlines()]
    return CHECK_MARK in lines or "nbval-check-output" in cell.metadata.get("tags", [])


def _read(source: Path):
    path = _executed(source)
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run scripts/execute_notebooks.py {source.relative_to(ROOT)}")
    return nbformat.read(path, as_version=4)


@pytest.fixture(params=SOURCES, ids=[s.stem for s in SOURCES])
def source(request) -> Path:
    return request.param


def test_executed_notebook_has_outputs(source):
    """(a) Every code cell was executed and the notebook carries outputs (nbval passes empty notebooks)."""
    nb = _read(source)
    cells = _code_cells(nb)
    unexecuted = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
    assert not unexecuted, f"code cells {unexecuted} of {source.stem}.ipynb were never executed"
    assert sum(len(c.outputs) for c in cells) > 0, f"{source.stem}.ipynb has no outputs"
    checked = [c for c in cells if _is_checked(c)]
    assert checked, f"{source.stem}.ipynb has no cell marked {CHECK_MARK!r}: nbval would check nothing"
    assert all(c.outputs for c in checked), f"a checked cell of {source.stem}.ipynb has no output"
    errors = [o for c in cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, f"{source.stem}.ipynb stores an error output: {errors[0].get('ename')}"


def test_executed_code_matches_source(source):
    """(b) The committed notebook was produced from the current source: same code cells (else its outputs
    are stale) and same text (else the website shows old prose)."""
    nb = _read(source)
    executed = [(c.cell_type, c.source.strip()) for c in nb.cells
                if not {"injected-parameters", "figure-citation"} & set(c.metadata.get("tags", []))]
    expected = [(c.cell_type, c.source.strip()) for c in jupytext.read(source).cells]
    hint = f"re-run scripts/execute_notebooks.py {source.relative_to(ROOT)}"
    code = [s for t, s in executed if t == "code"], [s for t, s in expected if t == "code"]
    assert code[0] == code[1], f"book/{source.stem}.ipynb is stale: its code differs from its source; {hint}"
    assert executed == expected, f"book/{source.stem}.ipynb is stale: its text differs from its source; {hint}"


def test_parameters_cell(source):
    """(c) A `parameters`-tagged cell assigns profile and seed (papermill injects after it)."""
    cells = [c for c in _code_cells(jupytext.read(source)) if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{source.name} needs exactly one code cell tagged 'parameters'"
    names = {t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    assert {"profile", "seed"} <= names, f"the parameters cell of {source.name} assigns {sorted(names)}"
    injected = [c for c in _code_cells(_read(source)) if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected, f"book/{source.stem}.ipynb was not executed by papermill (no injected parameters)"


def test_figures_are_exported(source):
    """Every named figure fig-<chapter>-<name> is also saved as figures/<chapter>-<name>.{pdf,png}."""
    nb = _read(source)
    for cell in _code_cells(nb):
        name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name")
        if name:
            stem = name.removeprefix("fig-")
            for ext in ("pdf", "png"):
                assert (BOOK / "figures" / f"{stem}.{ext}").is_file(), f"missing book/figures/{stem}.{ext}"


def test_every_figure_is_citable(source):
    """Every named figure is followed by its download links (PDF, PNG) and a one-line citation with its
    anchor on the published site (written by scripts/execute_notebooks.py)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from execute_notebooks import repository_url, site_url

    nb = _read(source)
    for i, cell in enumerate(nb.cells):
        name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name") if cell.cell_type == "code" else None
        if not name:
            continue
        assert name.startswith(f"fig-{source.stem}-"), f"{name}: figure names start with fig-{source.stem}-"
        after = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        assert after is not None and "figure-citation" in after.metadata.get("tags", []), f"{name} has no citation"
        stem = name.removeprefix("fig-")
        for piece in (f"{{download}}`PDF <figures/{stem}.pdf>`", f"{{download}}`PNG <figures/{stem}.png>`",
                      f"{{numref}}`{name}`", f"<{site_url(repository_url())}book/{source.stem}.html#{name}>",
                      "Cite this figure:"):
            assert piece in after.source, f"{name}: the citation lacks {piece}"


def _toc_files(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["file"]] if "file" in node else []
        found += [node["root"]] if "root" in node else []
        return found + [f for v in node.values() for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in _toc_files(v)]
    return []


def test_toc_lists_every_notebook():
    """(e) Every notebooks/*.md appears in _toc.yml as book/NAME."""
    listed = {re.sub(r"\.(ipynb|md)$", "", f) for f in _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))}
    missing = [s.name for s in SOURCES if f"book/{s.stem}" not in listed]
    assert not missing, f"_toc.yml does not list {missing}"


def test_toc_order():
    """The chapters appear in the book's reading order (those not written yet are skipped)."""
    order = ["intro", "claims", "isoperimetry", "circle", "tightness", "attacks", "mnist", "fashion_mnist", "svhn",
             "cifar10", "theory_allows", "references"]
    listed = [Path(f).stem for f in _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))]
    known = [name for name in listed if name in order]
    assert known == sorted(known, key=order.index), f"_toc.yml order {known} differs from {order}"


def test_nbval_fails_when_a_checked_number_changes(tmp_path):
    """(d) Corrupt one number in a checked output of a committed notebook; nbval must then fail."""
    preferred = [s for s in SOURCES if s.stem == "isoperimetry"] or SOURCES  # isoperimetry: ~10 s on 2 cores
    nb = _read(preferred[0])
    for cell in _code_cells(nb):
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        match = re.search(r"\d\.\d{3}", text) if _is_checked(cell) else None
        if match:
            break
    else:
        pytest.fail(f"{preferred[0].stem}.ipynb has no checked output with a number to corrupt")
    original = match.group(0)
    corrupted = original[:-1] + str((int(original[-1]) + 1) % 10)
    for out in cell.outputs:
        if out.get("output_type") == "stream" and original in out["text"]:
            out["text"] = out["text"].replace(original, corrupted, 1)
            break
    target = tmp_path / f"{preferred[0].stem}.ipynb"
    nbformat.write(nb, target)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-x", "-q", "-p", "no:cacheprovider", str(target)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"nbval passed a notebook whose checked output was changed:\n{report[-2000:]}"
    assert "failed" in report and corrupted in report, f"nbval failed for another reason:\n{report[-2000:]}"
    shutil.rmtree(tmp_path / "figures", ignore_errors=True)
