"""advbound.book: the output folder, figure exports, the chapters' shared set-up cell."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import matplotlib
import pytest

matplotlib.use("Agg")

from advbound import book  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.md"))


def test_output_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(book.OUTPUT_ENV, raising=False)
    assert book.output_dir() == Path(".")
    monkeypatch.setenv(book.OUTPUT_ENV, str(tmp_path / "env"))
    assert book.output_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert book.output_dir(tmp_path / "given") == tmp_path / "given"
    assert book.results_path("svhn", "full") == tmp_path / "env" / "results" / "svhn-full.json"
    assert book.checkpoint_dir("svhn", "full", 3) == tmp_path / "env" / "checkpoints" / "svhn-full-seed3"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="folder must be a directory"):
        book.output_dir(tmp_path / "file")


def test_publish_exports_pdf_and_png_without_creation_date(tmp_path, capsys):
    import matplotlib.pyplot as plt

    chapter = book.start("demo", seed=1, output=tmp_path)
    assert plt.rcParams["font.size"] == 11  # the book's style file was applied
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    chapter.publish(fig, "line")
    pdf, png = tmp_path / "figures" / "demo-line.pdf", tmp_path / "figures" / "demo-line.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"CreationDate" not in pdf.read_bytes()
    assert not plt.get_fignums()  # closed after showing
    with pytest.raises(ValueError, match="plain chapter name"):
        book.start("../x")


def test_every_chapter_uses_the_one_colab_cell_and_never_locates_the_repository():
    assert SOURCES
    for source in SOURCES:
        code = [c.source for c in jupytext.read(source).cells if c.cell_type == "code"]
        assert book.COLAB_CELL.strip() in [c.strip() for c in code], f"{source.name}: its set-up cell differs"
        text = "\n".join(code)
        for pattern in (r"pyproject\.toml", r"find_repo_root", r"\.parents\b", r"\bROOT\b"):
            assert not re.search(pattern, text), f"{source.name} locates the repository ({pattern})"


def test_glue_stores_python_numbers_for_the_text(capsys):
    """Numpy scalars are stored as plain numbers (myst-nb's {glue:text} formats float(text/plain))."""
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: shown.append((data, metadata))
    try:
        book.glue("value", np.float64(0.25))
        book.glue("count", np.int64(7))
    finally:
        InteractiveShell.clear_instance()
    texts = {m["scrapbook"]["name"]: d for d, m in shown}
    assert {k: next(v for key, v in d.items() if key.endswith("text/plain")) for k, d in texts.items()} == \
        {"value": "0.25", "count": "7"}


def test_claims_are_saved_per_chapter_and_read_back_in_reading_order(tmp_path):
    book.save_claims("mnist", [{"claim": "c1", "where": "Section 5", "verdict": "reproduced", "value": "1 [0, 2]",
                                "figure": "fig-mnist-gap"}], tmp_path)
    book.save_claims("isoperimetry", [{"claim": "c0", "where": "Theorem 1", "verdict": "holds", "value": "-"},
                                      {"claim": "c2", "where": "Fig. 2", "verdict": "not reproduced", "value": "x"}],
                     tmp_path)
    table = book.claims_frame(tmp_path, ["isoperimetry", "mnist"])
    assert list(table["the paper's claim"]) == ["c0", "c2", "c1"]
    assert table["shown in"].iloc[2] == '<a href="mnist.html#fig-mnist-gap">fig-mnist-gap</a>'
    assert table["shown in"].iloc[0] == "-"
    assert book.claims_summary(table) == ("3 claims of the paper checked in 2 chapters: 1 reproduced, "
                                          "1 not reproduced, 1 holds")
    with pytest.raises(ValueError, match="verdict must be one of"):
        book.save_claims("x", [{"claim": "c", "where": "w", "verdict": "probably", "value": "v"}], tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        book.save_claims("x", [{"claim": "c", "verdict": "holds"}], tmp_path)
    assert book.claims_summary(book.claims_frame(tmp_path / "empty")) == "no chapter has saved its claims here"
