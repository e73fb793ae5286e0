#!/usr/bin/env python
"""Compare the outputs of the nbval-checked cells (``# NBVAL_CHECK_OUTPUT``) of executed notebooks.

Two ways to name what to compare:

* ``--git REV book/mnist.ipynb ...``: each notebook in the working tree against its version at git ``REV``;
* ``--dirs A B mnist ...``: ``A/mnist.ipynb`` against ``B/mnist.ipynb`` (for example two executions under
  different ``ATEN_CPU_CAPABILITY`` settings).

Prints every checked cell whose text output differs and exits with status 1 if any does.  Only the text that
nbval compares is looked at (stream output and ``text/plain`` results), not images.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import nbformat

MARK = "# NBVAL_CHECK_OUTPUT"


def checked_texts(nb) -> list[tuple[str, str]]:
    """(first source line, concatenated text output) of each checked code cell, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code" or MARK not in [s.strip() for s in cell.source.splitlines()]:
            continue
        text = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                text.append(o.get("text", ""))
            elif "data" in o:
                text.append(o["data"].get("text/plain", ""))
            elif o.get("output_type") == "error":
                text.append(f"ERROR {o.get('ename')}: {o.get('evalue')}")
        lines = [s for s in cell.source.splitlines() if s.strip() and s.strip() != MARK]
        out.append((lines[0] if lines else "", "".join(text)))
    return out


def compare(name: str, a, b) -> int:
    ca, cb = checked_texts(a), checked_texts(b)
    bad = 0
    if len(ca) != len(cb):
        print(f"{name}: {len(ca)} vs {len(cb)} checked cells")
        return 1
    for i, ((src, ta), (_, tb)) in enumerate(zip(ca, cb, strict=True)):
        if ta != tb:
            bad += 1
            print(f"--- {name}, checked cell {i} ({src[:60]!r})")
            for la, lb in zip(ta.splitlines(), tb.splitlines(), strict=False):  # extra lines: counted below
                if la != lb:
                    print(f"  - {la}\n  + {lb}")
            if len(ta.splitlines()) != len(tb.splitlines()):
                print(f"  ({len(ta.splitlines())} vs {len(tb.splitlines())} lines)")
    print(f"{name}: {len(ca)} checked cells, {bad} differ")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--git", metavar="REV")
    g.add_argument("--dirs", nargs=2, metavar=("A", "B"), type=Path)
    p.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    bad = 0
    for name in args.names:
        if args.git:
            old = subprocess.run(["git", "show", f"{args.git}:{name}"], check=True, capture_output=True, text=True)
            bad += compare(name, nbformat.reads(old.stdout, as_version=4), nbformat.read(name, as_version=4))
        else:
            stem = Path(name).stem
            bad += compare(stem, nbformat.read(args.dirs[0] / f"{stem}.ipynb", as_version=4),
                           nbformat.read(args.dirs[1] / f"{stem}.ipynb", as_version=4))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
