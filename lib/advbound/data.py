"""Image data for the experiments of the paper's Section 5 (Tables 1-2) and the MNIST chapter.

Three kinds of source, always recorded in :attr:`ImageData.source` so that every number computed from the
data can say where it came from:

* ``"real"`` through torchvision (SVHN [37], CIFAR-10 [39], MNIST) with a data root and a download switch;
* ``"real"`` MNIST and Fashion-MNIST read from the official idx ``.gz`` files (checked against their md5), used by
  the MNIST chapter when ``$ADVBOUND_MNIST_DIR`` names their folder (see :func:`find_shared_mnist_dir`) and by
  the Fashion-MNIST chapter when ``$ADVBOUND_FASHION_MNIST_DIR`` does (:func:`find_idx_dir`);
* ``"synthetic stand-in"``: a deterministic synthetic data set of the same shape as SVHN / CIFAR-10, used only
  by the ``ci`` profile, where the real data cannot be downloaded.  Numbers computed from it exercise the
  pipeline and are **not** results about SVHN or CIFAR-10.

The ``colab`` and ``full`` profiles never fall back to the stand-in: when the real data cannot be had,
:func:`load_dataset` raises :class:`DataUnavailableError`.

Images are stored as ``uint8`` tensors ``(N, C, H, W)`` and served as floats in ``[0, 1]``, the range of
:class:`advbound.models.DCGANGenerator`'s outputs.

Where the files are: ``root`` when given (the command line's ``--data-root``), else ``$ADVBOUND_DATA``, else
``data/`` under the output folder (:func:`default_data_root`), laid out as torchvision writes them
(``train_32x32.mat`` / ``test_32x32.mat``; ``cifar-10-batches-py/``; ``MNIST/raw/``; ``FashionMNIST/raw/``).

Checksums: torchvision checks every SVHN ``.mat`` file and CIFAR-10 pickle against its published md5 each
time it loads one, and this module keeps that check (there is no switch to skip it); a file that is not the
published one raises :class:`DataUnavailableError`.  MNIST's raw files are checked by torchvision when it
downloads them; the idx ``.gz`` files of ``$ADVBOUND_MNIST_DIR`` are checked here (:data:`MNIST_MD5`), and
those of ``$ADVBOUND_FASHION_MNIST_DIR`` by the md5 of their *decompressed* content
(:data:`FASHION_MNIST_MD5`: Debian's package ``dataset-fashion-mnist`` recompressed the official archives, so
their own md5 differ from the published ones while the idx files inside are the official ones).
The test suite's tiny copies in the same formats register their own md5 with torchvision for the duration
of a test instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .modulus import check_seed
from .portable import normal

REAL = "real"
STAND_IN = "synthetic stand-in"
DATASETS = ("mnist", "fashion_mnist", "svhn", "cifar10")
PROFILES = ("ci", "colab", "full")
#: how the book and the messages name each data set
DISPLAY_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "svhn": "SVHN", "cifar10": "CIFAR-10"}
#: the class names, in label order (MNIST's are its digits)
CLASS_NAMES = {
    "mnist": tuple(str(k) for k in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "svhn": tuple(str(k) for k in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

#: Sizes of the official training splits (SVHN: the "train" split, without "extra", as in the paper).
TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "svhn": 73_257, "cifar10": 50_000}

#: md5 of the official MNIST test files (DESIGN.md, "Data available here").
MNIST_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_DIR_ENV = "ADVBOUND_MNIST_DIR"

#: md5 of the *decompressed* official Fashion-MNIST idx files (Xiao, Rasul, Vollgraf 2017; MIT licence), the
#: official 60,000 / 10,000 split (DESIGN.md, "Data available here")
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_MNIST_DIR_ENV = "ADVBOUND_FASHION_MNIST_DIR"

#: ci-profile split of the 10k MNIST test set (the only MNIST files available in CI).
MNIST_CI_TRAIN = 8000
MNIST_CI_SPLIT_SEED = 0


def uses_stand_in(name: str, profile: str) -> bool:
    """Whether :func:`load_dataset` serves the synthetic stand-in for ``name`` at ``profile`` (the ci profile of
    SVHN and CIFAR-10, the data sets that cannot be downloaded where the book is built)."""
    return profile == "ci" and name in ("svhn", "cifar10")


class DataUnavailableError(RuntimeError):
    """The real data requested (colab / full profiles, or MNIST) cannot be found or downloaded."""


@dataclass
class ImageData:
    """Images ``(N, C, H, W)`` as uint8 with integer labels, their data set name and source."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    source: str
    origin: str = ""
    n_classes: int = 10
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},); got {tuple(self.labels.shape)}")
        if self.source not in (REAL, STAND_IN):
            raise ValueError(f"source must be {REAL!r} or {STAND_IN!r}; got {self.source!r}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def is_real(self) -> bool:
        return self.source == REAL

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images (all, or ``images[index]``) as float32 in ``[0, 1]``."""
        imgs = self.images if index is None else self.images[index]
        return imgs.float().div_(255.0)

    def subset(self, index: torch.Tensor | slice) -> ImageData:
        return ImageData(self.images[index], self.labels[index], self.name, self.source, self.origin,
                         self.n_classes, list(self.notes))

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images in [0, 1], labels)`` mini-batches on ``device`` (vectorised, no DataLoader)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield self.floats(idx).to(device), self.labels[idx].to(device)

    def describe(self) -> str:
        c, h, w = self.shape
        return f"{self.name} ({self.source}, {len(self)} images {c}x{h}x{w}{', ' + self.origin if self.origin else ''})"


# --------------------------------------------------------------------------------------------------
# MNIST from the official idx files
# --------------------------------------------------------------------------------------------------

def read_idx(path: str | os.PathLike, *, expected_md5: str | None = None,
             expected_content_md5: str | None = None) -> np.ndarray:
    """Read an idx file (``.gz`` or raw) as a numpy uint8 array; check the md5 of the file (``expected_md5``)
    or of its decompressed content (``expected_content_md5``) when given.

    Raises ``ValueError`` for a file that is corrupt, truncated or not the expected one.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"idx file not found: {p}")
    if expected_md5 is not None:
        from torchvision.datasets.utils import calculate_md5

        got = calculate_md5(p)
        if got != expected_md5:
            raise ValueError(f"{p} has md5 {got}, expected {expected_md5}: the file is corrupt or not the "
                             "official MNIST file; replace it (torchvision.datasets.MNIST downloads it)")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{p} could not be decompressed ({err}): the file is corrupt") from err
    if expected_content_md5 is not None:
        got = hashlib.md5(raw).hexdigest()
        if got != expected_content_md5:
            raise ValueError(f"{p} decompresses to content with md5 {got}, expected {expected_content_md5}: the "
                             "file is corrupt or not the official one; replace it (torchvision downloads it)")
    if len(raw) < 4:
        raise ValueError(f"{p} is too short to be an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{p} is not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise ValueError(f"{p} is truncated: header says {dims}, body has {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def find_idx_dir(env: str, files: Sequence[str], what: str) -> Path | None:
    """The folder named by the environment variable ``env`` holding the idx ``files`` of ``what`` (a data set's
    name); ``None`` when the variable is unset.

    When it is set, the folder must hold every file: a missing folder or file raises
    :class:`DataUnavailableError` naming the variable (never a silent fallback to a download).
    """
    value = os.environ.get(env)
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise DataUnavailableError(f"{env}={value!r} is not a folder; it must name the folder holding the "
                                   f"{what} files {', '.join(files)} (unset it to load {what} through torchvision)")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise DataUnavailableError(f"{env}={value!r} lacks {', '.join(missing)} (official {what} files); add them "
                                   f"or unset the variable to load {what} through torchvision")
    return folder


def find_shared_mnist_dir() -> Path | None:
    """The folder named by ``$ADVBOUND_MNIST_DIR`` holding the official MNIST test files (:func:`find_idx_dir`)."""
    return find_idx_dir(MNIST_DIR_ENV, tuple(MNIST_MD5), "MNIST")


def load_mnist_idx(folder: str | os.PathLike, *, verify: bool = True) -> ImageData:
    """The 10k MNIST test images and labels from the official idx ``.gz`` files in ``folder``."""
    folder = Path(folder)
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz",
                      expected_md5=MNIST_MD5["t10k-images-idx3-ubyte.gz"] if verify else None)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz",
                      expected_md5=MNIST_MD5["t10k-labels-idx1-ubyte.gz"] if verify else None)
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise ValueError(f"unexpected MNIST test shapes {images.shape} / {labels.shape}")
    return ImageData(torch.from_numpy(images)[:, None], torch.from_numpy(labels.astype(np.int64)),
                     "mnist", REAL, f"official idx files in {folder}")


def load_fashion_mnist_idx(folder: str | os.PathLike, *, verify: bool = True) -> tuple[ImageData, ImageData]:
    """Fashion-MNIST's official training (60,000) and test (10,000) sets from the idx ``.gz`` files in
    ``folder``, each file checked against the md5 of its decompressed content (:data:`FASHION_MNIST_MD5`)."""
    folder = Path(folder)
    parts = []
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        arrays = []
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            name = f"{split}-{kind}-ubyte.gz"
            arr = read_idx(folder / name, expected_content_md5=FASHION_MNIST_MD5[name] if verify else None)
            if arr.shape != shape:
                raise ValueError(f"{folder / name} has shape {arr.shape}, expected {shape}")
            arrays.append(arr)
        parts.append(ImageData(torch.from_numpy(arrays[0])[:, None], torch.from_numpy(arrays[1].astype(np.int64)),
                               "fashion_mnist", REAL, f"official {split} idx files in {folder}"))
    return parts[0], parts[1]


# --------------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------------

def default_data_root() -> Path:
    """``$ADVBOUND_DATA`` if set, else ``data/`` under the output folder (:func:`advbound.book.output_dir`:
    ``$ADVBOUND_OUTPUT`` or the working directory)."""
    env = os.environ.get("ADVBOUND_DATA")
    if env:
        return Path(env)
    from .book import output_dir

    return output_dir() / "data"


def torchvision_dataset(name: str, *, train: bool, root: str | os.PathLike | None = None,
                        download: bool = False) -> ImageData:
    """SVHN (train/test splits, not 'extra', as in the paper), CIFAR-10, MNIST or Fashion-MNIST through
    torchvision.

    Raises :class:`DataUnavailableError` with the reason when the files are absent and cannot be
    downloaded (no network, ``download=False``) or are corrupt.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}; got {name!r}")
    import torchvision

    root = Path(root) if root is not None else default_data_root()
    split = "train" if train else "test"
    try:
        if name == "svhn":
            ds = torchvision.datasets.SVHN(str(root), split=split, download=download)
            images, labels = torch.from_numpy(ds.data), torch.from_numpy(np.asarray(ds.labels))
        elif name == "cifar10":
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            labels = torch.as_tensor(ds.targets)
        else:
            cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
            ds = cls(str(root), train=train, download=download)
            images, labels = ds.data[:, None].contiguous(), ds.targets
    except Exception as err:  # torchvision raises RuntimeError / URLError / OSError here
        hint = {"mnist": "the ci profile reads the official MNIST test files from $ADVBOUND_MNIST_DIR when it is set",
                "fashion_mnist": f"the ci profile reads the official idx files from ${FASHION_MNIST_DIR_ENV} when "
                                 "it is set"}.get(name, "only the ci profile runs without it, on a labelled synthetic "
                                                        "stand-in")
        raise DataUnavailableError(
            f"the real {DISPLAY_NAMES[name]} {split} set could not be loaded from {root} (download={download}): "
            f"{err}. "
            f"It needs internet access or a data root holding the files ({hint}).") from err
    labels = labels.long() % 10  # SVHN labels are already 0-9 in torchvision; keep the invariant
    return ImageData(images, labels, name, REAL, f"torchvision {name} {split} split in {root}")


# --------------------------------------------------------------------------------------------------
# The synthetic stand-in (ci profile of the SVHN and CIFAR-10 chapters)
# --------------------------------------------------------------------------------------------------

#: the class templates of each data set's stand-in (distinct, so the two stand-in chapters differ)
STAND_IN_TEMPLATE_SEEDS = {"svhn": 1234, "cifar10": 4321}


def synthetic_stand_in(n: int, *, name: str = "cifar10", channels: int = 3, image_size: int = 32,
                       n_classes: int = 10, seed: int = 0, template_seed: int | None = None,
                       noise: float = 0.45) -> ImageData:
    """A deterministic **synthetic stand-in** data set of SVHN / CIFAR-10 shape (NOT real data).

    Each class has a smooth random colour template (drawn once from ``template_seed``, so train and test
    stand-ins share it; by default a seed of its own per ``name``, so the SVHN and CIFAR-10 stand-ins differ);
    an image is ``(1 - noise) * template + noise * (smooth random field)`` plus a
    little pixel noise, clipped to ``[0, 1]``.  The classes overlap enough that classifiers make errors.
    Only the ci profile uses it; every output derived from it is labelled ``"synthetic stand-in"``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n!r}")
    if not (0.0 <= noise <= 1.0):
        raise ValueError(f"noise must be in [0, 1]; got {noise!r}")
    if template_seed is None:
        template_seed = STAND_IN_TEMPLATE_SEEDS.get(name, 1234)
    tmpl_gen = torch.Generator().manual_seed(check_seed(template_seed, "template_seed"))
    templates = _smooth_field(n_classes, channels, image_size, tmpl_gen)
    gen = torch.Generator().manual_seed(check_seed(seed))
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    field_ = _smooth_field(n, channels, image_size, gen)
    pixel = 0.05 * normal(n, channels, image_size, image_size, generator=gen, dtype=torch.float64)
    # float64 throughout (portable draws, advbound.portable), so the uint8 images are the same on every CPU
    imgs = ((1 - noise) * templates[labels] + noise * field_ + pixel).clamp_(0, 1)
    return ImageData((imgs * 255).round().to(torch.uint8), labels, name, STAND_IN,
                     f"synthetic stand-in (seed {seed}), not {name}", n_classes)


def _smooth_field(n: int, channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(n, channels, 4, 4, generator=gen, dtype=torch.float64)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------------
# One entry point per (data set, profile)
# --------------------------------------------------------------------------------------------------

def load_dataset(name: str, profile: str = "ci", *, root: str | os.PathLike | None = None,
                 download: bool = True, seed: int = 0, n_train: int | None = None, n_test: int | None = None,
                 pad_to: int | None = None) -> tuple[ImageData, ImageData]:
    """Train and test data for a chapter.

    * ``svhn`` / ``cifar10``: ``ci`` -> the synthetic stand-in (``n_train`` / ``n_test`` images, default
      2000 / 500); ``colab`` / ``full`` -> the real data through torchvision, or :class:`DataUnavailableError`.
    * ``mnist``: ``ci`` -> the real 10k MNIST test set split into 8000 train / 2000 test images (fixed
      split), read from ``$ADVBOUND_MNIST_DIR`` when set (:func:`find_shared_mnist_dir`), else from
      torchvision's test split (the same images); ``colab`` / ``full`` -> torchvision's 60k / 10k splits.
    * ``fashion_mnist``: every profile -> the official 60k / 10k splits; ``ci`` reads them from
      ``$ADVBOUND_FASHION_MNIST_DIR`` when set, every other case through torchvision (download); offline without
      the files :class:`DataUnavailableError` names Fashion-MNIST.

    ``n_train`` / ``n_test`` cap the sizes (first images of a fixed shuffle); ``pad_to=32`` zero-pads MNIST.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}; got {name!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}; got {profile!r}")
    seed = check_seed(seed)
    if name == "mnist" and profile == "ci":
        folder = find_shared_mnist_dir()
        if folder is not None:
            try:
                data = load_mnist_idx(folder)
            except (ValueError, OSError) as err:  # a corrupt, truncated or foreign file: the one-line error
                raise DataUnavailableError(f"{MNIST_DIR_ENV}={str(folder)!r} holds an unusable file: {err} (or unset "
                                           "the variable to load MNIST through torchvision)") from None
        else:
            data = torchvision_dataset("mnist", train=False, root=root, download=download)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(MNIST_CI_SPLIT_SEED))
        train, test = data.subset(order[:MNIST_CI_TRAIN]), data.subset(order[MNIST_CI_TRAIN:])
        note = (f"MNIST test set (10k) split {MNIST_CI_TRAIN} train / {len(data) - MNIST_CI_TRAIN} test "
                f"(seed {MNIST_CI_SPLIT_SEED}); the 60k training set is not used in the ci profile")
        train.notes.append(note)
        test.notes.append(note)
    elif name == "fashion_mnist" and profile == "ci":
        folder = find_idx_dir(FASHION_MNIST_DIR_ENV, tuple(FASHION_MNIST_MD5), "Fashion-MNIST")
        if folder is not None:
            try:
                train, test = load_fashion_mnist_idx(folder)
            except (ValueError, OSError) as err:  # a corrupt, truncated or foreign file: the one-line error
                raise DataUnavailableError(f"{FASHION_MNIST_DIR_ENV}={str(folder)!r} holds an unusable Fashion-MNIST "
                                           f"file: {err} (or unset the variable to load Fashion-MNIST through "
                                           "torchvision)") from None
        else:
            train = torchvision_dataset(name, train=True, root=root, download=download)
            test = torchvision_dataset(name, train=False, root=root, download=download)
    elif uses_stand_in(name, profile):
        train = synthetic_stand_in(n_train or 2000, name=name, seed=seed)
        test = synthetic_stand_in(n_test or 500, name=name, seed=seed + 1)
    else:
        train = torchvision_dataset(name, train=True, root=root, download=download)
        test = torchvision_dataset(name, train=False, root=root, download=download)
    train, test = _cap(train, n_train, seed), _cap(test, n_test, seed + 1)
    if pad_to is not None:
        train, test = pad_images(train, pad_to), pad_images(test, pad_to)
    return train, test


def _cap(data: ImageData, n: int | None, seed: int) -> ImageData:
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise ValueError(f"n_train / n_test must be >= 1; got {n!r}")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[:n])


def pad_images(data: ImageData, size: int) -> ImageData:
    """Zero-pad images symmetrically to ``size x size`` (MNIST 28 -> 32 for the 32x32 DCGAN)."""
    h = data.images.shape[-1]
    if size < h or (size - h) % 2:
        raise ValueError(f"size must be >= {h} with an even difference; got {size!r}")
    p = (size - h) // 2
    out = data.subset(slice(None))
    out.images = F.pad(data.images, (p, p, p, p))
    return out


__all__ = [
    "REAL",
    "STAND_IN",
    "DATASETS",
    "PROFILES",
    "MNIST_MD5",
    "TRAIN_SIZES",
    "MNIST_DIR_ENV",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_DIR_ENV",
    "DISPLAY_NAMES",
    "CLASS_NAMES",
    "find_idx_dir",
    "uses_stand_in",
    "load_fashion_mnist_idx",
    "DataUnavailableError",
    "ImageData",
    "read_idx",
    "find_shared_mnist_dir",
    "load_mnist_idx",
    "default_data_root",
    "torchvision_dataset",
    "synthetic_stand_in",
    "load_dataset",
    "pad_images",
]
