"""Data loading: idx reader with md5 checks, the shared MNIST folder, the synthetic stand-in, profiles."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from advbound import data
from advbound.data import (
    STAND_IN,
    DataUnavailableError,
    find_shared_mnist_dir,
    load_dataset,
    pad_images,
    read_idx,
    synthetic_stand_in,
)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_md5(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte.gz"
    _write_idx(p, arr)
    md5 = hashlib.md5(p.read_bytes()).hexdigest()
    np.testing.assert_array_equal(read_idx(p, expected_md5=md5), arr)
    with pytest.raises(ValueError, match="md5"):
        read_idx(p, expected_md5="0" * 32)


def test_read_idx_corrupt_and_truncated(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="corrupt"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.gz")


def test_find_shared_mnist_dir_env(tmp_path, monkeypatch):
    for name in data.MNIST_MD5:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setenv(data.MNIST_DIR_ENV, str(tmp_path))
    assert find_shared_mnist_dir() == tmp_path
    # a corrupt file there is reported, not silently used
    with pytest.raises(ValueError, match="md5"):
        data.load_mnist_idx(tmp_path)


def test_mnist_dir_variable_is_never_ignored(tmp_path, monkeypatch):
    """A set ADVBOUND_MNIST_DIR that is missing, incomplete or empty is an error naming the variable, not a
    silent fallback to a download."""
    monkeypatch.setenv(data.MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailableError, match="ADVBOUND_MNIST_DIR=.*is not a folder"):
        load_dataset("mnist", "ci", download=False)
    monkeypatch.setenv(data.MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(DataUnavailableError, match="ADVBOUND_MNIST_DIR=.*lacks t10k-images"):
        load_dataset("mnist", "ci", download=False)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataUnavailableError, match="lacks t10k-labels-idx1-ubyte.gz"):
        find_shared_mnist_dir()
    monkeypatch.delenv(data.MNIST_DIR_ENV)
    assert find_shared_mnist_dir() is None


def test_mnist_download_error_does_not_mention_the_stand_in(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("mnist", "ci", root=tmp_path, download=False)
    assert "stand-in" not in str(info.value) and "ADVBOUND_MNIST_DIR" in str(info.value)


@pytest.mark.skipif(find_shared_mnist_dir() is None, reason="shared MNIST files not present")
def test_mnist_ci_split_is_real_and_fixed():
    train, test = load_dataset("mnist", "ci")
    assert (len(train), len(test)) == (8000, 2000)
    assert train.is_real and train.shape == (1, 28, 28)
    again, _ = load_dataset("mnist", "ci")
    assert torch.equal(train.labels, again.labels)
    assert "split 8000 train / 2000 test" in train.notes[0]


def test_stand_in_is_deterministic_and_labelled():
    a = synthetic_stand_in(50, name="svhn", seed=3)
    b = synthetic_stand_in(50, name="svhn", seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.source == STAND_IN and not a.is_real and "synthetic stand-in" in a.describe()
    assert a.shape == (3, 32, 32) and a.images.dtype == torch.uint8
    x, y = next(a.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (16, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1 and y.shape == (16,)


def test_ci_profile_uses_stand_in_and_real_profiles_fail_loudly(tmp_path):
    train, test = load_dataset("cifar10", "ci", n_train=40, n_test=20)
    assert train.source == STAND_IN and len(train) == 40 and len(test) == 20
    for profile in ("colab", "full"):
        with pytest.raises(DataUnavailableError, match="real SVHN"):
            load_dataset("svhn", profile, root=tmp_path, download=False)


def test_invalid_names_and_padding():
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("imagenet", "ci")
    with pytest.raises(ValueError, match="profile must be one of"):
        load_dataset("svhn", "huge")
    small = synthetic_stand_in(4, channels=1, image_size=28)
    assert pad_images(small, 32).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="size"):
        pad_images(small, 31)


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------------

def _write_raw_idx(path, array):
    """An idx file whose *content* md5 is returned (the archive's own md5 depends on the compressor)."""
    raw = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(raw)
    return hashlib.md5(raw).hexdigest()


def test_read_idx_checks_the_decompressed_content(tmp_path):
    """Debian recompressed Fashion-MNIST's archives: their own md5 differ, the content's must not."""
    arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    md5 = _write_raw_idx(a, arr)
    with gzip.open(b, "wb", compresslevel=9) as fh:  # the same content, compressed otherwise
        fh.write(gzip.decompress(a.read_bytes()))
    assert hashlib.md5(a.read_bytes()).hexdigest() != hashlib.md5(b.read_bytes()).hexdigest()
    for path in (a, b):
        np.testing.assert_array_equal(read_idx(path, expected_content_md5=md5), arr)
    arr[0, 0, 0] = 255
    _write_raw_idx(a, arr)
    with pytest.raises(ValueError, match="decompresses to content with md5"):
        read_idx(a, expected_content_md5=md5)


def test_fashion_mnist_dir_variable_is_never_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailableError, match="ADVBOUND_FASHION_MNIST_DIR=.*is not a folder.*Fashion-MNIST"):
        load_dataset("fashion_mnist", "ci", download=False)
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(DataUnavailableError, match="lacks train-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", "ci", download=False)
    for name in data.FASHION_MNIST_MD5:  # present but not the official files: the md5 check refuses them
        _write_raw_idx(tmp_path / name, np.zeros((2, 28, 28) if "images" in name else (2,)))
    with pytest.raises(DataUnavailableError, match="unusable Fashion-MNIST file: .*md5"):
        load_dataset("fashion_mnist", "ci", download=False)


def test_fashion_mnist_offline_without_files_names_the_data_set(tmp_path, monkeypatch):
    monkeypatch.delenv(data.FASHION_MNIST_DIR_ENV, raising=False)
    for profile in ("ci", "colab", "full"):
        with pytest.raises(DataUnavailableError, match="real Fashion-MNIST train set") as info:
            load_dataset("fashion_mnist", profile, root=tmp_path, download=False)
        assert "stand-in" not in str(info.value)


@pytest.mark.skipif(data.find_idx_dir(data.FASHION_MNIST_DIR_ENV, tuple(data.FASHION_MNIST_MD5), "Fashion-MNIST")
                    is None, reason="shared Fashion-MNIST files not present ($ADVBOUND_FASHION_MNIST_DIR unset)")
def test_fashion_mnist_official_split():
    train, test = load_dataset("fashion_mnist", "ci")
    assert (len(train), len(test)) == (60_000, 10_000) and train.is_real and train.shape == (1, 28, 28)
    # the official split is balanced: 6,000 / 1,000 images per class
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert data.CLASS_NAMES["fashion_mnist"][9] == "Ankle boot"
