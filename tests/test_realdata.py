"""The real-data path without network: tiny SVHN, CIFAR-10 and MNIST files in the exact on-disk formats that
torchvision reads, written here into temporary folders, then loaded and run through the ``colab`` and
``full`` profiles end to end (at a tiny scale, see ``tinyconfig.py``) through the data root.

Checksums.  torchvision checks the md5 of every SVHN ``.mat`` file and every CIFAR-10 pickle against the
published values each time it loads them; the library keeps that check and has no switch to turn it off.
The fixtures are not the published files, so the tests register the fixtures' own md5 in torchvision's
tables of expected checksums (``monkeypatch``, undone after each test): torchvision's check still runs on
every fixture file, and still rejects a modified one.  Without that registration the fixtures are rejected
like any file that is not the published one (a test below), so a user's real files are verified.  MNIST's
raw files are checked by torchvision only when it downloads them (its md5 covers the archives).
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from torchvision.datasets.utils import calculate_md5

import advbound
from advbound import cli
from advbound import experiments as ex
from advbound.data import DISPLAY_NAMES, REAL, DataUnavailableError, load_dataset
from advbound.experiments import pipeline
from tinyconfig import tiny

SIZES = {"svhn": (48, 24), "cifar10": (50, 20), "mnist": (40, 20), "fashion_mnist": (40, 20)}
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images (N, C, H, W) (asymmetric, so any transposition or flip shows) and labels covering
    every class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10)
    return images, labels


def write_svhn(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``<split>_32x32.mat`` as published: ``X`` is (H, W, C, N) uint8 (MATLAB's layout), ``y`` is (N, 1)
    with the digit 0 labelled 10."""
    scipy.io.savemat(root / f"{split}_32x32.mat", {"X": np.transpose(images, (2, 3, 1, 0)),
                                                   "y": np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]})


def write_cifar10(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    """``cifar-10-batches-py/``: five training batches, ``test_batch`` and ``batches.meta``, pickles of dicts
    whose ``data`` rows are the red, green and blue planes of one image (3072 bytes)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)

    for k, idx in enumerate(np.array_split(np.arange(len(train[1])), 5), start=1):
        dump(f"data_batch_{k}", {"batch_label": f"training batch {k} of 5", "labels": train[1][idx].tolist(),
                                 "data": train[0][idx].reshape(len(idx), 3072)})
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "labels": test[1].tolist(),
                        "data": test[0].reshape(len(test[1]), 3072)})
    dump("batches.meta", {"label_names": CIFAR_NAMES, "num_cases_per_batch": len(test[1]), "num_vis": 3072})


def _idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                folder: str = "MNIST") -> None:
    """``MNIST/raw/`` (``FashionMNIST/raw/`` for Fashion-MNIST): the four idx files, uncompressed (big-endian
    header, then the bytes)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def write_fixture(dataset: str, root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a tiny copy of ``dataset`` under ``root``; return the images (N, C, H, W) and labels written."""
    root.mkdir(parents=True, exist_ok=True)
    channels, size = (1, 28) if dataset in ("mnist", "fashion_mnist") else (3, 32)
    n_train, n_test = SIZES[dataset]
    data = {"train": _images(n_train, channels, size, seed), "test": _images(n_test, channels, size, seed + 1)}
    if dataset == "svhn":
        for split, (images, labels) in data.items():
            write_svhn(root, split, images, labels)
    elif dataset == "cifar10":
        write_cifar10(root, data["train"], data["test"])
    else:
        write_mnist(root, data["train"], data["test"], "MNIST" if dataset == "mnist" else "FashionMNIST")
    return data


def register_checksums(monkeypatch, dataset: str, root: Path) -> None:
    """Make torchvision expect the fixture files' md5 instead of the published files' (see the module
    docstring); torchvision still checks every file."""
    if dataset == "svhn":
        table = {split: [url, name, calculate_md5(root / name)]
                 for split, (url, name, _) in torchvision.datasets.SVHN.split_list.items() if (root / name).exists()}
        monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", table)
    elif dataset == "cifar10":
        cls = torchvision.datasets.CIFAR10
        folder = root / cls.base_folder
        for attr in ("train_list", "test_list"):
            monkeypatch.setattr(cls, attr, [[name, calculate_md5(folder / name)] for name, _ in getattr(cls, attr)])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": calculate_md5(folder / cls.meta["filename"])})


@pytest.mark.parametrize("dataset", ["svhn", "cifar10", "mnist", "fashion_mnist"])
def test_fixtures_load_as_written(dataset, tmp_path, monkeypatch):
    written = write_fixture(dataset, tmp_path)
    register_checksums(monkeypatch, dataset, tmp_path)
    for profile in ("colab", "full"):
        train, test = load_dataset(dataset, profile, root=tmp_path, download=False)
        for split, data in (("train", train), ("test", test)):
            images, labels = written[split]
            assert data.source == REAL and data.name == dataset and str(tmp_path) in data.origin
            assert torch.equal(data.images, torch.from_numpy(images)), f"{dataset} {split}: pixels moved"
            assert torch.equal(data.labels, torch.from_numpy(labels).long()), f"{dataset} {split}: labels differ"
    if dataset == "svhn":  # the file says 10 where the digit is 0
        y = scipy.io.loadmat(tmp_path / "train_32x32.mat")["y"].ravel()
        assert (y == 10).any() and not (y == 0).any() and (train.labels == 0).sum() == (y == 10).sum()


@pytest.mark.parametrize("dataset", ["svhn", "cifar10"])
def test_files_that_are_not_the_published_ones_are_rejected(dataset, tmp_path, monkeypatch):
    """Without the fixtures' checksums registered, torchvision's md5 check rejects them, as it would any
    file that is not the published one; with them registered, a changed byte is still caught."""
    write_fixture(dataset, tmp_path)
    with pytest.raises(DataUnavailableError, match=f"real {DISPLAY_NAMES[dataset]} train set.*corrupted"):
        load_dataset(dataset, "colab", root=tmp_path, download=False)
    register_checksums(monkeypatch, dataset, tmp_path)
    load_dataset(dataset, "colab", root=tmp_path, download=False)
    victim = tmp_path / ("test_32x32.mat" if dataset == "svhn" else "cifar-10-batches-py/test_batch")
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(DataUnavailableError, match=f"real {DISPLAY_NAMES[dataset]} (train|test) set.*corrupted"):
        load_dataset(dataset, "colab", root=tmp_path, download=False)


def _package_files() -> dict[str, int]:
    folder = Path(advbound.__file__).parent
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def restore_torch_state():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.mark.parametrize("dataset", ["svhn", "cifar10", "mnist", "fashion_mnist"])
def test_full_profile_end_to_end_through_the_command_line(dataset, tmp_path, monkeypatch, capsys,
                                                          restore_torch_state):
    """``python -m advbound experiment --profile full --data-root ...`` on the fixture, with the profile's
    networks shrunk (tinyconfig): results and checkpoints under the output folder, nothing inside the package."""
    write_fixture(dataset, tmp_path / "files")
    register_checksums(monkeypatch, dataset, tmp_path / "files")
    monkeypatch.setattr(pipeline, "experiment_config", lambda name, profile: tiny(name, profile))
    monkeypatch.chdir(tmp_path)
    before = _package_files()
    argv = ["experiment", "--dataset", dataset, "--profile", "full", "--data-root", "files", "--output", "out",
            "--no-download", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "STAND-IN" not in printed.upper()
    saved = json.loads((tmp_path / "out" / "results" / f"{dataset}-full.json").read_text())
    prov = saved["provenance"]
    assert (prov["profile"], prov["data"]) == ("full", REAL) and "files" in prov["data_origin"]
    assert prov["samples"]["train"] == SIZES[dataset][0]
    ckpts = sorted(p.name for p in (tmp_path / "out" / "checkpoints" / f"{dataset}-full-seed0").iterdir())
    assert ckpts == sorted(["dcgan.pt"] + [f"{s.key}.pt" for s in tiny(dataset, "full").classifiers])
    assert _package_files() == before, "the run wrote inside the installed package"


@pytest.mark.parametrize("dataset", ["mnist"])  # the colab profile differs from full by its sizes only
def test_colab_profile_end_to_end_through_the_library(dataset, tmp_path, monkeypatch, restore_torch_state):
    write_fixture(dataset, tmp_path / "files")
    register_checksums(monkeypatch, dataset, tmp_path / "files")
    ex.set_determinism(0, threads=1)
    res = ex.run_experiment(dataset, "colab", config=tiny(dataset, "colab"), data_root=tmp_path / "files",
                            download=False, checkpoint_dir=tmp_path / "ck", device="cpu", progress=False,
                            log=lambda *a: None)
    assert res.provenance["data"] == REAL and not res.is_stand_in
    assert res.provenance["samples"] == {**res.provenance["samples"], "train": SIZES[dataset][0],
                                         "test": SIZES[dataset][1]}
    assert list(res.table.columns)[1:] == [s.label for s in tiny(dataset, "colab").classifiers]
    assert (tmp_path / "ck" / "dcgan.pt").is_file()
