#!/usr/bin/env python
"""Execute the jupytext sources in notebooks/ into the published notebooks in book/.

For each ``notebooks/NAME.md`` (MyST markdown, jupytext):

1. jupytext converts it to a notebook with the ``python3`` kernel;
2. papermill executes it with ``cwd=book/`` (so figures land in ``book/figures/``), injecting the
   parameters ``profile``, ``seed``, ``repository_url`` (read from ``_config.yml``: the one place the
   repository address is written) and ``commit`` (:func:`build_commit`, the commit the page is built from):
   the Colab set-up cell installs the package at that commit and a data chapter fetches that commit's
   committed networks, so a rerun on Colab reproduces the page;
3. volatile metadata (papermill timestamps and durations, per-cell execution times, absolute paths) is
   removed, so re-running an unchanged notebook gives a small diff;
4. after every figure (a code cell with ``mystnb: figure: name``) a Markdown cell is added with the figure's
   PDF and PNG download links and a one-line citation (:func:`figure_citation`: the book's citation from
   ``CITATION.cff``, the chapter, the figure's number and its anchor on the published site), so every figure of
   every chapter is citable without typing its links;
5. the result is written to ``book/NAME.ipynb``.

Any error stops the run with a non-zero exit status and names the notebook and the failing cell; the
partially executed notebook is kept at ``book/NAME.failed.ipynb`` for inspection.

Usage:  python scripts/execute_notebooks.py [--profile ci|colab|full] [--seed 0] notebooks/*.md
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
KERNEL = "python3"


def repository_url() -> str:
    """The repository address from _config.yml (``repository: url:``)."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    try:
        return str(config["repository"]["url"])
    except (KeyError, TypeError):
        raise SystemExit("_config.yml has no repository.url; the Colab install cell needs it") from None


#: what the book's numbers depend on: a page may record the commit it was built from only when these are committed
BUILD_INPUTS = ("lib", "pyproject.toml", "book/artifacts")


def build_commit(allow_dirty: bool = False) -> str | None:
    """``git rev-parse HEAD``, the commit the pages are built from.  The library and the committed artifacts
    must be committed (:data:`BUILD_INPUTS`), else the commit would not reproduce the page: ``SystemExit``,
    unless ``allow_dirty`` (then ``None``: the Colab cell installs the default branch).  ``None`` outside a
    git checkout."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *BUILD_INPUTS], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if dirty:
        if allow_dirty:
            print("warning: uncommitted changes in " + ", ".join(BUILD_INPUTS) + ": the pages record no commit "
                  "(Colab installs the default branch)", file=sys.stderr)
            return None
        raise SystemExit("uncommitted changes in " + ", ".join(BUILD_INPUTS) + ":\n" + dirty + "\ncommit them "
                         "first (the pages record the commit they are built from), or pass --allow-dirty")
    return head.stdout.strip()


def to_notebook(source: Path):
    """Read a jupytext source into an nbformat notebook bound to the python3 kernel."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)  # the pairing information belongs to the source, not the output
    return nb


def strip_volatile(nb) -> None:
    """Remove what changes on every run without changing what the notebook says.

    Cell ids (random in jupytext and papermill) become a hash of the cell's type and source, numbered
    when two cells are identical, so re-executing an unchanged source reproduces the same file.
    """
    pm = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {"parameters": pm.get("parameters", {})}
    seen: dict[str, int] = {}
    for cell in nb.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell["id"] = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type == "code" and "injected-parameters" in cell.metadata.get("tags", []):
            # papermill's copy of the parameters: kept in the notebook (it records how the outputs were
            # produced, and Colab users see it), left off the website, where each chapter prints its
            # profile and seed in its setup cell.
            tags = cell.metadata.setdefault("tags", [])
            if "remove-cell" not in tags:
                tags.append("remove-cell")


def site_url(url: str) -> str:
    """The address GitHub Pages publishes the book at for the repository ``url``
    (``https://github.com/OWNER/NAME`` -> ``https://OWNER.github.io/NAME/``)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", url)
    if not match:
        raise SystemExit(f"repository.url must be https://github.com/OWNER/NAME; got {url!r}")
    return f"https://{match.group(1).lower()}.github.io/{match.group(2)}/"


def figure_citation(chapter: str, title: str, figure: str, url: str) -> str:
    """The Markdown added after a figure: download links and how to cite it (the book as ``CITATION.cff``
    names it, the chapter, the figure's number and its anchor)."""
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    authors = ", ".join(a.get("name") or f"{a.get('given-names', '')} {a.get('family-names', '')}".strip()
                        for a in cff["authors"])
    stem = figure.removeprefix("fig-")
    anchor = f"{site_url(url)}book/{chapter}.html#{figure}"
    return (f"Download {{numref}}`{figure}`: {{download}}`PDF <figures/{stem}.pdf>`, "
            f"{{download}}`PNG <figures/{stem}.png>`. Cite this figure: {authors}, *{cff['title']}*, version "
            f"{cff['version']}, chapter \"{title}\", {{numref}}`{figure}`, <{anchor}>.")


def add_figure_citations(nb, chapter: str, url: str) -> None:
    """Insert :func:`figure_citation` after every figure cell of ``nb`` (tagged ``figure-citation``)."""
    import nbformat

    title = next((line[2:].strip() for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                  if line.startswith("# ")), chapter)
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name") if cell.cell_type == "code" else None
        if name:
            cells.append(nbformat.v4.new_markdown_cell(figure_citation(chapter, title, name, url),
                                                       metadata={"tags": ["figure-citation"]}))
    nb.cells = cells


def execute(source: Path, profile: str, seed: int, url: str, timeout: int, out_dir: Path = BOOK,
            commit: str | None = None) -> float:
    import nbformat
    import papermill as pm

    name = source.stem
    out = out_dir / f"{name}.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src_nb = Path(tmp) / f"{name}.ipynb"
        running = Path(tmp) / f"{name}.out.ipynb"  # papermill saves here after every cell
        nbformat.write(to_notebook(source), src_nb)
        try:
            pm.execute_notebook(
                str(src_nb), str(running),
                parameters={"profile": profile, "seed": seed, "repository_url": url, "commit": commit},
                kernel_name=KERNEL, cwd=str(BOOK), progress_bar=False, log_output=False,
                execution_timeout=timeout, report_mode=False,
            )
        except pm.PapermillExecutionError as err:
            shutil.copyfile(running, failed)
            print(f"FAILED  {source}: cell {err.exec_count}: {err.ename}: {err.evalue}", file=sys.stderr)
            print(f"        partial output kept in {failed}", file=sys.stderr)
            raise SystemExit(1) from None
        nb = nbformat.read(running, as_version=4)
    add_figure_citations(nb, name, url)
    strip_volatile(nb)
    nbformat.write(nb, out)
    failed.unlink(missing_ok=True)  # a stale failure from an earlier run
    return time.perf_counter() - start


def _run(source: Path, settings: tuple) -> float:
    """Execute one notebook (in a worker process) and report it."""
    profile, seed, url, timeout, out_dir, commit = settings
    print(f"executing {source} (profile={profile}, seed={seed}) ...", flush=True)
    seconds = execute(source, profile, seed, url, timeout, out_dir, commit)
    print(f"  wrote {out_dir / source.stem}.ipynb in {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="jupytext sources, e.g. notebooks/*.md")
    parser.add_argument("--profile", default="ci", choices=["ci", "colab", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks executed at the same time (each kernel runs its chapter on one thread)")
    parser.add_argument("--out-dir", type=Path, default=BOOK,
                        help="where the executed notebooks go (default book/; the kernel still runs in book/, "
                             "so figures and results land there: use git to restore them)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="execute although lib/, pyproject.toml or book/artifacts have uncommitted changes (the "
                             "pages then record no commit)")
    args = parser.parse_args(argv)

    missing = [s for s in args.sources if not s.is_file()]
    if missing:
        parser.error("no such source: " + ", ".join(map(str, missing)))
    BOOK.mkdir(exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (BOOK / "figures").mkdir(exist_ok=True)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1; got {args.jobs}")
    sources = [s.resolve() for s in args.sources]
    settings = (args.profile, args.seed, repository_url(), args.timeout, args.out_dir.resolve(),
                build_commit(args.allow_dirty))
    start = time.perf_counter()
    # one worker process per running notebook: papermill changes the process's working folder for the whole
    # execution, so two executions must not share a process; started in the order given (longest first)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        total = sum(pool.map(_run, sources, [settings] * len(sources)))
    print(f"executed {len(args.sources)} notebook(s) in {time.perf_counter() - start:.1f} s "
          f"({total:.1f} s of kernel time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
