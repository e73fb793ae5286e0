"""Committed trained networks ("artifacts"): the weights a chapter analyses, with a manifest that proves them.

Training is the one part of the Section 5 pipeline whose result depends on the CPU: torch dispatches other
vector kernels on other processors, the last bits of each step differ, and training ends at other weights.  So
the ci profile's trained networks (the DCGAN and every classifier of a table) are committed, and the chapters
re-run only the analysis on them.

A folder ``ROOT/{dataset}-{profile}-seed{seed}/`` holds one file per network (``dcgan.pt``, ``lenet.pt``, ...:
its ``state_dict``, floating tensors in half precision) and ``manifest.json``, which records for each file its
sha256 and size, and for the whole folder the data set, profile, seed, the training part of the configuration
(:meth:`advbound.experiments.ExperimentConfig.training_dict`), the package versions and the command that wrote
it.  :func:`load_networks` checks all of it before a network is built, and raises :class:`ArtifactError`
naming what does not match; nothing is used silently.

Half precision: each weight is rounded to float16 when saved (relative change below 2**-11, about 5e-4) and the
rounded weights are the networks that every chapter analyses, on every machine, including the one that trained
them (see :func:`advbound.experiments.obtain_networks`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoints import _config_difference, atomic_write, load_checkpoint, save_checkpoint
from .modulus import check_seed

if TYPE_CHECKING:  # pragma: no cover
    from .experiments.profiles import ExperimentConfig

MANIFEST = "manifest.json"
FORMAT = 1
STORAGE_DTYPE = torch.float16
GENERATOR_FILE = "dcgan.pt"


class ArtifactError(RuntimeError):
    """Committed networks are missing, corrupt, or were trained with another configuration."""


@dataclass
class Networks:
    """A trained DCGAN and the classifiers of one table (keyed by :attr:`ClassifierSpec.key`), in eval mode
    with gradients off, and where they came from (``origin``: the artifact folder or ``"trained"``)."""

    generator: nn.Module
    classifiers: dict[str, nn.Module]
    gan_history: list[dict[str, float]] = field(default_factory=list)
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    origin: str = "trained"
    manifest: dict[str, Any] | None = None


def artifact_folder(root: str | os.PathLike, dataset: str, profile: str, seed: int) -> Path:
    """``root/{dataset}-{profile}-seed{seed}``: where the networks of one (data set, profile, seed) live."""
    return Path(root) / f"{dataset}-{profile}-seed{check_seed(seed)}"


def has_artifacts(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a manifest (its content is checked only by :func:`load_networks`)."""
    return (Path(folder) / MANIFEST).is_file()


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def utc_timestamp() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (manifests and provenance)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomically(target: Path, content: dict[str, Any]) -> Path:
    """Write ``content`` as indented JSON to ``target`` atomically (:func:`~advbound.checkpoints.atomic_write`:
    a temporary file of this writer's own, renamed over the target), so a reader never sees a half-written
    manifest and of concurrent writers the last complete one wins."""
    text = json.dumps(content, indent=1) + "\n"
    return atomic_write(target, lambda fh: fh.write(text.encode()))


def check_file(path: Path, entry: dict[str, Any], manifest_name: str, hint: str) -> None:
    """``path`` exists and has the ``size`` and ``sha256`` that its manifest ``entry`` records; else
    :class:`ArtifactError` naming the file, what differs, and ``hint`` (how to rewrite it)."""
    if not path.is_file():
        raise ArtifactError(f"{path} is missing (listed in {manifest_name}); {hint}")
    size = path.stat().st_size
    if size != entry.get("size"):
        raise ArtifactError(f"{path} has {size} bytes, the manifest says {entry.get('size')}: the file is "
                            f"damaged or was replaced (a Git LFS pointer?); {hint}")
    digest = sha256(path)
    if digest != entry.get("sha256"):
        raise ArtifactError(f"{path} has sha256 {digest[:16]}..., the manifest says "
                            f"{str(entry.get('sha256'))[:16]}...: the file is damaged or was replaced; {hint}")


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors rounded to float16 (kept in float32 where float16 would overflow); others unchanged."""
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            half = t.to(STORAGE_DTYPE)
            t = half if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(t).all()) else t.float()
        out[name] = t.clone()
    return out


def build_networks(config: ExperimentConfig, n_classes: int = 10) -> tuple[nn.Module, dict[str, nn.Module]]:
    """Untrained networks of ``config``: the DCGAN generator and each classifier (by key)."""
    from .models import LATENT_DIM, DCGANGenerator, build_classifier

    gen = DCGANGenerator(LATENT_DIM, config.channels, config.image_size, config.gan_width)
    clfs = {spec.key: build_classifier(spec.arch, channels=config.channels, n_classes=n_classes, **spec.kwargs)
            for spec in config.classifiers}
    return gen, clfs


def save_networks(folder: str | os.PathLike, config: ExperimentConfig, seed: int, networks: Networks, *,
                  command: str, versions: dict[str, str], machine: str) -> Path:
    """Write every network of ``networks`` to ``folder`` (half precision, each file atomically) and then the
    manifest (atomically, last: a folder whose manifest exists is complete).  Returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    parts = [(GENERATOR_FILE, "generator", "DCGAN generator", networks.generator, networks.gan_history)]
    parts += [(f"{spec.key}.pt", "classifier", spec.label, networks.classifiers[spec.key],
               networks.histories.get(spec.key, [])) for spec in config.classifiers]
    for name, role, label, module, history in parts:
        path = save_checkpoint(folder / name, _half(module.state_dict()))
        entries[name] = {"role": role, "label": label, "sha256": sha256(path), "size": path.stat().st_size,
                         "parameters": sum(p.numel() for p in module.parameters()),
                         "training_history": history}
    manifest = {
        "format": FORMAT, "dataset": config.dataset, "profile": config.profile, "seed": check_seed(seed),
        "storage_dtype": str(STORAGE_DTYPE).replace("torch.", ""),
        "training_config": config.training_dict(), "versions": versions, "machine": machine,
        "command": command, "created": utc_timestamp(),
        "total_size": sum(e["size"] for e in entries.values()), "files": entries,
    }
    return write_json_atomically(folder / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed manifest of ``folder``; :class:`ArtifactError` if it is missing or unreadable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"no trained networks at {Path(folder)}: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is not a readable manifest ({type(err).__name__}: {err})") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("files"), dict)):
        raise ArtifactError(f"{path} is not a manifest of format {FORMAT} (it needs 'format' and 'files')")
    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path} is damaged: its entry for {name!r} is {type(entry).__name__}, not an object "
                                "with the file's sha256 and size")
        if not isinstance(entry.get("training_history", []), list):
            raise ArtifactError(f"{path} is damaged: the training_history of {name!r} is "
                                f"{type(entry['training_history']).__name__}, not a list of epochs")
    return manifest


def _retrain_hint(manifest: dict[str, Any]) -> str:
    return (f"retrain with `python -m advbound artifacts --dataset {manifest.get('dataset')} --profile "
            f"{manifest.get('profile')} --seed {manifest.get('seed')}` (or `make artifacts`)")


def _check_manifest(manifest: dict[str, Any], folder: Path, config: ExperimentConfig, seed: int) -> None:
    expected = {"dataset": config.dataset, "profile": config.profile, "seed": check_seed(seed)}
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise ArtifactError(f"networks in {folder} are for {key} {manifest.get(key)!r}, not {value!r}")
    if manifest.get("training_config") != config.training_dict():
        raise ArtifactError(f"networks in {folder} were trained with another configuration:\n"
                            f"{_config_difference(manifest.get('training_config'), config.training_dict())}\n"
                            f"{_retrain_hint(manifest)}")
    needed = [GENERATOR_FILE] + [f"{spec.key}.pt" for spec in config.classifiers]
    missing = [name for name in needed if name not in manifest["files"]]
    if missing:
        raise ArtifactError(f"the manifest in {folder} lists no {', '.join(missing)}; {_retrain_hint(manifest)}")
    for name in needed:
        check_file(folder / name, manifest["files"][name], MANIFEST, _retrain_hint(manifest))


def _load_into(module: nn.Module, path: Path) -> None:
    state = load_checkpoint(path)
    own = module.state_dict()
    if set(state) != set(own) or any(tuple(state[k].shape) != tuple(own[k].shape) for k in own):
        raise ArtifactError(f"{path} does not fit the network built from the configuration (parameter names or "
                            "shapes differ)")
    dtype = next((t.dtype for t in own.values() if t.is_floating_point()), torch.float32)
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})


def freeze(module: nn.Module, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
    """``module`` in eval mode, converted to ``dtype`` on ``device``, with gradients off (analysis only)."""
    module = module.to(device=device, dtype=dtype).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_networks(folder: str | os.PathLike, config: ExperimentConfig, seed: int, *,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  n_classes: int = 10) -> Networks:
    """The committed networks of ``config`` and ``seed`` from ``folder``, verified against its manifest
    (configuration, every file's size and sha256) and converted to ``dtype`` on ``device``.

    Raises :class:`ArtifactError` when anything does not match; nothing is loaded then."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float64); got {dtype!r}")
    from .training import resolve_device

    device = resolve_device(device)
    seed = check_seed(seed)
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_manifest(manifest, folder, config, seed)
    gen, clfs = build_networks(config, n_classes)
    _load_into(gen, folder / GENERATOR_FILE)
    for key, clf in clfs.items():
        _load_into(clf, folder / f"{key}.pt")
    files = manifest["files"]
    return Networks(freeze(gen, dtype, device), {k: freeze(c, dtype, device) for k, c in clfs.items()},
                    list(files[GENERATOR_FILE].get("training_history", [])),
                    {k: list(files[f"{k}.pt"].get("training_history", [])) for k in clfs},
                    origin=str(folder), manifest=manifest)


# --------------------------------------------------------------------------------------------------
# Fetching the committed artifacts where the repository is not (Colab, a pip install)
# --------------------------------------------------------------------------------------------------

#: the sha256 of every committed artifact folder's manifests, shipped inside the package: a fetched folder is
#: trusted only if its manifests match these, and the manifests bind every other file by its own sha256
INDEX = Path(__file__).with_name("artifact_index.json")
#: environment variable naming where ``book/artifacts`` is fetched from instead of the repository on GitHub
#: (a URL whose ``/book/artifacts/<folder>/<file>`` serves the files; ``file://`` works, as in the tests)
ARTIFACTS_URL_ENV = "ADVBOUND_ARTIFACTS_URL"
#: the manifests of a folder, in the order they are fetched
MANIFESTS = (MANIFEST, "witnesses.json")


def artifact_index() -> dict[str, dict[str, str]]:
    """The packaged index: artifact folder name -> {manifest file name -> sha256}; empty when none is packaged."""
    if not INDEX.is_file():
        return {}
    try:
        index = json.loads(INDEX.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{INDEX} is not readable ({type(err).__name__}: {err}); reinstall the package") from None
    if not isinstance(index, dict):
        raise ArtifactError(f"{INDEX} is not an artifact index (a JSON object); reinstall the package")
    return index


def index_artifacts(root: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The index of the artifact folders under ``root`` (each folder with a manifest): what ``make artifacts``
    writes to :data:`INDEX` so that the package carries the sha256 of the committed manifests."""
    out = {}
    for folder in sorted(Path(root).iterdir()):
        if has_artifacts(folder):
            out[folder.name] = {name: sha256(folder / name) for name in MANIFESTS if (folder / name).is_file()}
    return out


def raw_url(repository_url: str, commit: str) -> str:
    """Where GitHub serves the files of ``repository_url`` at ``commit`` (``raw.githubusercontent.com``)."""
    prefix = "https://github.com/"
    if not repository_url.startswith(prefix) or not commit:
        raise ArtifactError(f"cannot fetch artifacts from {repository_url!r} at commit {commit!r}: need a "
                            f"https://github.com/OWNER/NAME address and a commit")
    return "https://raw.githubusercontent.com/" + repository_url[len(prefix):].rstrip("/") + f"/{commit}"


def _download(url: str, target: Path) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (http(s) or file, chosen above)
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ArtifactError(f"could not fetch {url} ({type(err).__name__}: {err})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def fetch_artifacts(folder: str | os.PathLike, base_url: str) -> Path:
    """Download the committed artifact folder ``folder`` (its name, e.g. ``mnist-ci-seed0``) from
    ``{base_url}/book/artifacts/{name}/`` into ``folder``, trusting nothing that the package cannot check.

    The manifests (``manifest.json``, ``witnesses.json``) must have the sha256 the installed package carries for
    them (:func:`artifact_index`; else :class:`ArtifactError`, and nothing is kept); every file they list is then
    fetched and must have the size and sha256 they record.  Loading checks them again
    (:func:`load_networks`, :func:`advbound.witnesses.load_witnesses`)."""
    folder = Path(folder)
    expected = artifact_index().get(folder.name)
    if not expected:
        raise ArtifactError(f"the installed package carries no sha256 for the artifact folder {folder.name!r}, so "
                            "a fetched copy could not be checked; train the networks instead (retrain=True)")
    base = f"{base_url.rstrip('/')}/book/artifacts/{folder.name}"
    fetched: list[Path] = []
    try:
        for name, digest in expected.items():
            _download(f"{base}/{name}", folder / name)
            fetched.append(folder / name)
            if sha256(folder / name) != digest:
                raise ArtifactError(f"{base}/{name} is not the file this package was built with (sha256 "
                                    f"{sha256(folder / name)[:16]}..., expected {digest[:16]}...): the source serves "
                                    "other artifacts than the commit this package was installed from")
        for name in expected:
            listed = json.loads((folder / name).read_text())
            entries = listed["files"] if name == MANIFEST else {listed["file"]: listed}
            for file, entry in entries.items():
                _download(f"{base}/{file}", folder / file)
                fetched.append(folder / file)
                check_file(folder / file, entry, name, "the fetched copy is damaged; fetch it again")
    except BaseException:
        for path in fetched:
            path.unlink(missing_ok=True)
        raise
    return folder


__all__ = [
    "ARTIFACTS_URL_ENV",
    "ArtifactError",
    "MANIFEST",
    "Networks",
    "artifact_folder",
    "artifact_index",
    "fetch_artifacts",
    "index_artifacts",
    "raw_url",
    "build_networks",
    "check_file",
    "freeze",
    "has_artifacts",
    "load_networks",
    "read_manifest",
    "save_networks",
    "sha256",
    "utc_timestamp",
    "write_json_atomically",
]
