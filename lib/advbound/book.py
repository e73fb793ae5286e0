"""The chapters' plumbing: where a chapter writes, the figure style, citable figure exports.

Everything a chapter writes (figures, results, checkpoints, downloaded data) goes under one *output folder*:
the folder given by the chapter, else ``$ADVBOUND_OUTPUT``, else the working directory.  Nothing here looks for
the repository, so a chapter runs the same in the repository (papermill runs it with ``book/`` as the working
directory), on Colab (``/content``) and in any empty folder.

A chapter starts with::

    chapter = advbound.book.start("circle", seed=seed)
    ...
    chapter.publish(fig, "cdf")          # figures/circle-cdf.{pdf,png}, shown once in the notebook
    glue("median", value)                # for {glue:text}`median:.3f` in the text

Its first cell installs the package on Colab (and does nothing elsewhere); see :data:`COLAB_CELL`.
"""

from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: environment variable naming the output folder (default: the working directory)
OUTPUT_ENV = "ADVBOUND_OUTPUT"
#: environment variable holding a pip spec that the Colab cell installs instead of the repository at the commit the
#: page was built from
PIP_SPEC_ENV = "ADVBOUND_PIP_SPEC"
#: the matplotlib style of the book's figures
STYLE = Path(__file__).with_name("advbound.mplstyle")

#: The set-up cell every chapter starts with (after its ``parameters`` cell, which holds ``repository_url`` and
#: ``commit``, both written by ``make notebooks``).
COLAB_CELL = '''\
import os, sys
if "google.colab" in sys.modules:  # Colab: install the package at the commit this page was built from
    %pip install -q "{os.environ.get('ADVBOUND_PIP_SPEC') or 'git+' + repository_url + '@' + (commit or 'main')}"
'''


def output_dir(folder: str | os.PathLike | None = None) -> Path:
    """The output folder: ``folder`` if given, else ``$ADVBOUND_OUTPUT``, else the working directory.

    It is created if needed.  Relative paths stay relative (to the working directory), so printed paths do not
    depend on where a machine keeps its files.
    """
    if folder is None:
        folder = os.environ.get(OUTPUT_ENV) or "."
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"folder must be a directory; {str(path)!r} is a file")
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_path(dataset: str, profile: str, folder: str | os.PathLike | None = None) -> Path:
    """``<output folder>/results/<dataset>-<profile>.json``: where an experiment's results are saved; runs on a
    synthetic stand-in (:func:`advbound.data.uses_stand_in`) say so in the name,
    ``<dataset>-<profile>-synthetic-stand-in.json``."""
    from .data import uses_stand_in

    tag = "-synthetic-stand-in" if uses_stand_in(dataset, profile) else ""
    return output_dir(folder) / "results" / f"{dataset}-{profile}{tag}.json"


#: the suffixes a results path may end with; both name the same pair of files
RESULT_SUFFIXES = (".json", ".csv")


def result_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """The files a results path names, ``(NAME.json, NAME.csv)``: the one rule for every ``--out`` (an
    experiment's results and a dry run alike).

    A final ``.json`` or ``.csv`` is dropped first (``run``, ``run.json`` and ``run.csv`` all name
    ``run.json`` and ``run.csv``); any other suffix is part of the name (``model.v1`` gives ``model.v1.json``,
    never ``model.json``).  A path that is an existing folder or ends with a separator, and a pair member that
    is an existing folder, raise ``ValueError``: name a file inside the folder instead (e.g. ``folder/run``).
    Nothing is created here."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a results path must be a non-empty file name; got {path!r}")
    base = Path(text)
    if text.endswith(("/", os.sep)) or base.is_dir():
        raise ValueError(f"{text!r} is a folder; name a file in it, e.g. {os.path.join(text, 'results')!r} "
                         "(NAME.json and NAME.csv are written)")
    if base.suffix.lower() in RESULT_SUFFIXES:
        base = base.with_suffix("")
    pair = (base.with_name(base.name + ".json"), base.with_name(base.name + ".csv"))
    for target in pair:
        if target.is_dir():
            raise ValueError(f"{str(target)!r} is a folder, so the results cannot be written there; name another "
                             "file")
    return pair


def checkpoint_dir(dataset: str, profile: str, seed: int, folder: str | os.PathLike | None = None) -> Path:
    """``<output folder>/checkpoints/<dataset>-<profile>-seed<seed>``: training checkpoints (resumable)."""
    from .modulus import check_seed

    return output_dir(folder) / "checkpoints" / f"{dataset}-{profile}-seed{check_seed(seed)}"


def use_style() -> None:
    """Apply the book's matplotlib style (:data:`STYLE`)."""
    import matplotlib.pyplot as plt

    plt.style.use(str(STYLE))


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed Python's, numpy's and torch's global generators; optionally fix torch's CPU thread count."""
    import numpy as np

    from .modulus import check_seed

    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(int(threads))


def save_figure(fig: Any, chapter: str, name: str, folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Save ``fig`` as ``<output folder>/figures/<chapter>-<name>.pdf`` and ``.png`` (citable exports; the PDF
    carries no creation date, so re-running an unchanged chapter leaves it unchanged)."""
    figures = output_dir(folder) / "figures"
    figures.mkdir(exist_ok=True)
    pdf, png = figures / f"{chapter}-{name}.pdf", figures / f"{chapter}-{name}.png"
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    fig.savefig(png, bbox_inches="tight", dpi=200)
    return pdf, png


def publish(fig: Any, chapter: str, name: str, folder: str | os.PathLike | None = None) -> None:
    """Export ``fig`` (:func:`save_figure`), show it once as the cell's output, and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    save_figure(fig, chapter, name, folder)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    display(Image(data=buf.getvalue()))


#: printed lines are wrapped to this many characters, so that no output runs past the book's content column
TEXT_WIDTH = 100


def wrap(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` with every line longer than ``width`` wrapped; continuation lines are indented four spaces
    deeper than the line they continue (so a wrapped block still reads as one item)."""
    import textwrap

    out = []
    for line in text.splitlines():
        indent = line[:len(line) - len(line.lstrip())]
        out.append(textwrap.fill(line, width, initial_indent="", subsequent_indent=indent + "    ",
                                 break_long_words=False, break_on_hyphens=False) if len(line) > width else line)
    return "\n".join(out)


def glue(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` for the book's text, where ``{glue:text}`name:.3f``` shows it, so that no
    number the code computes is typed by hand.  Numpy scalars become Python numbers first (myst-nb formats
    the stored text, which numpy 2 writes as ``np.float64(...)``).  Without myst-nb (e.g. on Colab, where the
    book is not built) nothing is stored."""
    try:
        from myst_nb import glue as store
    except ImportError:
        return
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    store(name, value, display=False)


#: the verdicts a claim can carry (the Section 5 findings use the first three; checks of a theorem the fourth)
VERDICTS = ("reproduced", "not reproduced", "undecided at this sample size", "holds", "does not hold",
            "illustrated on a synthetic stand-in", "not tested")


def save_claims(chapter: str, claims: list[dict[str, Any]], folder: str | os.PathLike | None = None) -> Path:
    """Record the paper's claims that ``chapter`` tests, each a dict with ``claim`` (the paper's statement),
    ``where`` (its place in the paper), ``verdict`` (one of :data:`VERDICTS`, computed by the chapter from its
    numbers), ``value`` (the number and its interval, as text) and ``figure`` (the label of the figure or table
    that shows it, or None), in ``<output folder>/results/claims-<chapter>.json``; the book's page "The paper's
    claims, checked" lists every chapter's file (:func:`claims_frame`)."""
    import json

    rows = []
    for c in claims:
        missing = {"claim", "where", "verdict", "value"} - set(c)
        if missing:
            raise ValueError(f"claim {c!r} lacks {sorted(missing)}")
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {c['verdict']!r}")
        rows.append({"chapter": chapter, "figure": c.get("figure"), **c})
    from .checkpoints import atomic_write

    path = output_dir(folder) / "results" / f"claims-{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rows, indent=1) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path


def claims_frame(folder: str | os.PathLike, order: list[str] | None = None) -> Any:
    """Every ``results/claims-*.json`` under ``folder`` as one table (chapters in ``order`` first), with a link
    to each chapter's figure or page."""
    import json

    import pandas as pd

    files = sorted(Path(folder).glob("results/claims-*.json"))
    rows = [row for f in files for row in json.loads(f.read_text())]
    rank = {name: i for i, name in enumerate(order or [])}
    rows.sort(key=lambda r: rank.get(r["chapter"], len(rank)))
    table = pd.DataFrame([{
        "chapter": f'<a href="{r["chapter"]}.html">{r["chapter"]}</a>',
        "the paper's claim": r["claim"], "where in the paper": r["where"], "verdict": r["verdict"],
        "measured [95% interval]": r["value"],
        "shown in": (f'<a href="{r["chapter"]}.html#{r["figure"]}">{r["figure"]}</a>' if r.get("figure") else "-"),
    } for r in rows])
    return table


def claims_summary(table: Any) -> str:
    """How many claims the table of :func:`claims_frame` holds, by verdict, as one wrapped line."""
    if not len(table):
        return "no chapter has saved its claims here"
    counts = table["verdict"].value_counts()
    parts = [f"{int(counts[v])} {v}" for v in VERDICTS if v in counts]
    return wrap(f"{len(table)} claims of the paper checked in {table['chapter'].nunique()} chapters: "
                + ", ".join(parts))


@dataclass(frozen=True)
class Chapter:
    """A running chapter: its name (the prefix of its figure files) and its output folder."""

    name: str
    output: Path

    def publish(self, fig: Any, name: str) -> None:
        """Export and show a figure as ``figures/<chapter>-<name>.{pdf,png}`` (see :func:`publish`)."""
        publish(fig, self.name, name, self.output)

    def claims(self, claims: list[dict[str, Any]]) -> Path:
        """Record the claims this chapter tests (:func:`save_claims`)."""
        return save_claims(self.name, claims, self.output)

    def path(self, *parts: str) -> Path:
        """A path under the output folder (parent folders are created)."""
        p = self.output.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def start(name: str, *, seed: int = 0, threads: int | None = None,
          output: str | os.PathLike | None = None) -> Chapter:
    """Begin a chapter: seed the global generators, fix torch's thread count if asked, apply the figure
    style, and return the :class:`Chapter` with its output folder (see :func:`output_dir`)."""
    if not name or any(c in name for c in "/\\"):
        raise ValueError(f"name must be a plain chapter name (no path separators); got {name!r}")
    seed_everything(seed, threads)
    use_style()
    return Chapter(name, output_dir(output))


__all__ = [
    "COLAB_CELL",
    "OUTPUT_ENV",
    "PIP_SPEC_ENV",
    "STYLE",
    "RESULT_SUFFIXES",
    "TEXT_WIDTH",
    "Chapter",
    "VERDICTS",
    "checkpoint_dir",
    "claims_frame",
    "claims_summary",
    "save_claims",
    "glue",
    "output_dir",
    "publish",
    "results_path",
    "save_figure",
    "seed_everything",
    "start",
    "use_style",
    "wrap",
]
