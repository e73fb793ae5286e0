"""Every chapter run as on Colab: the package installed from a wheel by the chapter's own set-up cell, an empty
working folder, no repository, no ``../shared``, no network and no data.

The simulation:

* a wheel is built from this checkout (``pip wheel``, no dependencies);
* a stub ``google.colab`` package is importable, and an IPython start-up file imports it in the kernel (as
  Colab does), so each chapter's set-up cell sees Colab and runs its ``%pip install``; ``$ADVBOUND_PIP_SPEC``
  names the wheel, and pip installs it, without dependencies or index, into a throwaway folder on the
  kernel's ``PYTHONPATH`` (``PIP_TARGET``), never into the project's environment;
* the same start-up file cuts the kernel's network (DNS and TCP connections fail at once);
* each chapter runs with papermill in a new empty folder.

Then the theory chapters (ci profile) run to the end; the SVHN and CIFAR-10 chapters with ``profile = "colab"``,
and the MNIST and Fashion-MNIST chapters without ``$ADVBOUND_MNIST_DIR`` / ``$ADVBOUND_FASHION_MNIST_DIR``, run up
to their data load and stop there with :class:`advbound.data.DataUnavailableError` naming the data set. Every
chapter must have imported ``advbound`` from the wheel, written its outputs under its working folder, and left the
installed package exactly as pip wrote it (checked against the installed ``RECORD``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from advbound.data import DISPLAY_NAMES
from kernels import makefile_variable, portable_kernel_spec

ROOT = Path(__file__).resolve().parents[1]
THEORY = ("isoperimetry", "circle", "tightness", "attacks")
#: theory chapters whose checked outputs do not depend on the checkout (the attacks chapter prints the committed
#: benchmark results of book/results/, absent on Colab): compared with the page here, not by nbval
COMPARED_HERE = ("isoperimetry", "circle", "tightness")
SUMMARY = ("claims",)  # pages that read what the other chapters saved: they run, and draw no figure
#: data chapters and the profile each runs with (MNIST's ci profile also needs real data; theory_allows needs the
#: MNIST networks, which it trains when they are not committed beside it)
DATA = {"svhn": "colab", "cifar10": "colab", "mnist": "ci", "fashion_mnist": "ci", "theory_allows": "ci"}
DATA_LOAD = "run_chapter("  # the call that loads the data in a data chapter
LOADS = {"theory_allows": ("load_dataset(", "mnist")}  # chapters that load data otherwise: (call, data set)
PROBE = "COLAB-PROBE "

STARTUP = '''\
"""Colab, simulated: its kernel has google.colab imported; this machine has no network."""
import socket

import google.colab  # noqa: F401


def _no_network(*args, **kwargs):
    raise socket.gaierror("no network in the Colab simulation")


_connect = socket.socket.connect


def _connect_local_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError("no network in the Colab simulation")
    return _connect(self, address)


socket.getaddrinfo = _no_network
socket.socket.connect = _connect_local_only
'''


def test_every_chapter_is_simulated():
    assert set(THEORY) | set(SUMMARY) | set(DATA) == {p.stem for p in (ROOT / "notebooks").glob("*.md")}


def _checked_texts(nb) -> list[tuple[str, str]]:
    """The outputs nbval compares (scripts/checked_outputs.py)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    from checked_outputs import checked_texts

    return checked_texts(nb)


def test_every_page_is_compared_once_by_nbval_or_here():
    """`make test` hands nbval every page but those whose checked outputs this file compares (the theory
    chapters that read nothing from the checkout, re-executed whole on simulated Colab, and the MNIST chapter's
    Colab rerun): each page once."""
    here = set(makefile_variable("NBVAL_BY_COLAB").split())
    assert here == {f"book/{name}.ipynb" for name in (*COMPARED_HERE, "mnist")}
    order = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "print-test-order"],
                           capture_output=True, text=True, check=True).stdout.split()
    pages = {f"book/{p.name}" for p in (ROOT / "book").glob("*.ipynb") if not p.name.endswith(".failed.ipynb")}
    nbval = {p for p in order if p.endswith(".ipynb")}
    assert nbval | here == pages and not nbval & here


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built from a copy (so no build files land in the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(base / "dist"), str(src)], check=True, capture_output=True, text=True)
    (whl,) = (base / "dist").glob("advbound-*.whl")
    return whl


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """The stub ``google.colab`` and the IPython start-up folder shared by the simulated kernels."""
    base = tmp_path_factory.mktemp("colab")
    stub = base / "stub"
    (stub / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package
    (stub / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s module (tests only)."""\n')
    startup = base / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(STARTUP)
    return stub, base / "ipython"


def _notebook(name: str):
    """The chapter as papermill gets it, with a probe cell that reports where advbound came from: at the end,
    or, in a data chapter, just before its data load, where the chapter is cut."""
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.md")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    probe = nbformat.v4.new_code_cell(
        "import json as _json, sys as _sys, advbound as _advbound\n"
        f"print({PROBE!r} + _json.dumps({{'file': _advbound.__file__, 'colab': 'google.colab' in _sys.modules}}))")
    if name in DATA:
        call = LOADS.get(name, (DATA_LOAD, name))[0]
        cut = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and call in c.source)
        nb.cells = nb.cells[:cut] + [probe, nb.cells[cut]]
    else:
        nb.cells.append(probe)
    return nb


def _kernel_env(stub: Path, ipython: Path, site: Path, spec: Path) -> dict[str, str]:
    """The simulated Colab kernel's environment; it runs torch on the portable CPU kernels, as nbval does, so
    the checked outputs it prints are compared with the page's (:func:`test_chapter_runs_on_simulated_colab`)."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "IPYTHONDIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADVBOUND_", "PIP_")) and k not in drop}
    env.update(portable_kernel_spec().env)
    env.update(PYTHONPATH=f"{stub}{os.pathsep}{site}", IPYTHONDIR=str(ipython), ADVBOUND_PIP_SPEC=str(spec),
               PIP_TARGET=str(site), PIP_NO_DEPS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")  # two kernels share two cores
    return env


def _installed_exactly_as_recorded(site: Path) -> None:
    """Every file of the installed package is in pip's RECORD, with its hash (pip lists the bytecode it compiled
    without one): nothing was written there."""
    (record,) = site.glob("advbound-*.dist-info/RECORD")
    with open(record, newline="") as fh:
        hashes = {row[0]: row[1] for row in csv.reader(fh) if row}
    files = sorted(p for p in (site / "advbound").rglob("*") if p.is_file())
    assert files
    for path in files:
        rel = path.relative_to(site).as_posix()
        assert rel in hashes, f"{rel} was written inside the installed package"
        if not hashes[rel]:
            assert path.suffix == ".pyc", rel
            continue
        algo, digest = hashes[rel].split("=", 1)
        got = base64.urlsafe_b64encode(hashlib.new(algo, path.read_bytes()).digest()).rstrip(b"=").decode()
        assert got == digest, f"{rel} was modified inside the installed package"


def _run_chapter(name: str, wheel: Path, colab: tuple[Path, Path], folder: Path) -> dict:
    """Execute one chapter with papermill in ``folder/content`` (empty), pip installing into ``folder/site``."""
    stub, ipython = colab
    work, site = folder / "content", folder / "site"
    work.mkdir(parents=True)
    site.mkdir()
    src, out = folder / f"{name}.ipynb", folder / f"{name}.out.ipynb"
    nbformat.write(_notebook(name), src)
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    run = subprocess.run(
        [sys.executable, "-m", "papermill", str(src), str(out), "-k", "python3", "--cwd", str(work),
         "-p", "profile", DATA.get(name, "ci"), "-p", "seed", "0", "-p", "repository_url", url,
         "--no-progress-bar", "--execution-timeout", "900"],
        env=_kernel_env(stub, ipython, site, wheel), capture_output=True, text=True, timeout=1200)
    return {"returncode": run.returncode, "stderr": run.stderr, "notebook": out, "work": work, "site": site}


@pytest.fixture(scope="module")
def runs(wheel, colab, tmp_path_factory) -> dict[str, dict]:
    """All chapters, two at a time (the chapters run single-threaded; CI has two cores)."""
    base = tmp_path_factory.mktemp("chapters")
    names = THEORY + SUMMARY + tuple(DATA)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run_chapter, name, wheel, colab, base / name) for name in names}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", THEORY + SUMMARY + tuple(DATA))
def test_chapter_runs_on_simulated_colab(name, runs):
    run = runs[name]
    site, stderr = run["site"], run["stderr"][-3000:]
    nb = nbformat.read(run["notebook"], as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    lines = [line for o in outputs for line in "".join(o.get("text", "")).splitlines()]
    probes = [json.loads(line[len(PROBE):]) for line in lines if line.startswith(PROBE)]
    assert probes, f"{name} stopped before importing advbound:\n{stderr}"
    (probe,) = probes
    assert probe["colab"], "google.colab was not imported in the kernel"
    assert Path(probe["file"]).resolve().is_relative_to(site.resolve()), (
        f"advbound came from {probe['file']}, not from the wheel installed by the set-up cell")
    if name in DATA:
        assert run["returncode"] != 0 and len(errors) == 1, stderr
        assert errors[0].ename == "DataUnavailableError", (errors[0].ename, errors[0].evalue)
        named = DISPLAY_NAMES[LOADS.get(name, (DATA_LOAD, name))[1]]
        assert f"real {named} " in errors[0].evalue, errors[0].evalue
    else:
        assert run["returncode"] == 0 and not errors, stderr
        if name not in SUMMARY:
            assert sorted((run["work"] / "figures").glob(f"{name}-*.png")), f"{name} wrote no figure in its folder"
        if name in COMPARED_HERE:
            # re-executed whole here, on the portable CPU kernels: its checked outputs are compared with the
            # page's here, in place of a second execution by nbval (Makefile: NBVAL_BY_COLAB)
            page = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
            assert _checked_texts(nb) == _checked_texts(page), f"{name}: the checked outputs differ from the page"
    _installed_exactly_as_recorded(site)


# --------------------------------------------------------------------------------------------------
# A rerun on Colab reproduces the page: the package at the page's commit, its committed networks fetched
# --------------------------------------------------------------------------------------------------

SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _torchvision_mnist(root: Path) -> Path:
    """``root/MNIST/raw/`` as torchvision leaves it after a download: the official test files (from ../shared),
    decompressed; the training files are empty (the ci profile reads only the test split)."""
    import gzip

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for kind in ("images-idx3", "labels-idx1"):
        (raw / f"t10k-{kind}-ubyte").write_bytes(gzip.decompress((SHARED_MNIST / f"t10k-{kind}-ubyte.gz").read_bytes()))
        (raw / f"train-{kind}-ubyte").write_bytes(b"")
    return root


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="no ../shared MNIST files")
def test_a_colab_rerun_of_a_data_chapter_prints_the_checked_outputs_of_the_page(wheel, colab, tmp_path):
    """The MNIST chapter on simulated Colab, in an empty folder, offline: it installs the wheel, finds no
    networks beside it, fetches the committed folder of the page's commit from a file:// copy of the repository
    (checked against the sha256 the package carries), reads MNIST through torchvision's layout, and prints
    exactly the checked outputs of the committed page."""
    stub, ipython = colab
    work, site = tmp_path / "content", tmp_path / "site"
    work.mkdir()
    site.mkdir()
    data = _torchvision_mnist(tmp_path / "data")
    src, out = tmp_path / "mnist.ipynb", tmp_path / "mnist.out.ipynb"
    nb = jupytext.read(ROOT / "notebooks" / "mnist.md")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    page = nbformat.read(ROOT / "book" / "mnist.ipynb", as_version=4)
    params = page.metadata["papermill"]["parameters"]
    env = _kernel_env(stub, ipython, site, wheel)
    env["ADVBOUND_ARTIFACTS_URL"] = ROOT.as_uri()   # the repository, served as files
    run = subprocess.run(
        [sys.executable, "-m", "papermill", str(src), str(out), "-k", "python3", "--cwd", str(work),
         "-p", "profile", "ci", "-p", "seed", "0", "-p", "repository_url", params["repository_url"],
         "-r", "commit", params["commit"], "-r", "data_root", str(data), "--no-progress-bar"],
        env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    rerun = nbformat.read(out, as_version=4)
    assert (work / "artifacts" / "mnist-ci-seed0" / "manifest.json").is_file()   # fetched, not trained
    assert _checked_texts(rerun) == _checked_texts(page)
    _installed_exactly_as_recorded(site)
