"""Committed witnesses of the latent and in-distribution robustness: the points the latent searches found.

Every robustness value of a table is an *upper* estimate certified by a point: an adversarial example whose
label differs from the clean one.  For ``r_Z`` and ``r_in`` that point is a latent vector ``w`` with
``f(g(w)) != f(g(z))``, and ``r_Z(z) <= ||w - z||_2``, ``r_in(g(z)) <= ||g(w) - g(z)||_2``.  Finding ``w``
is the expensive part of the analysis (the boundary search of :func:`advbound.attacks.boundary_search`: 30
sequential-quadratic-programming steps from two starts, about 0.2-1.5 s per sample and classifier on one
CPU core in float64; latent DeepFool, :func:`advbound.attacks.latent_deepfool`, about 0.02-0.07 s); checking
it is one forward pass.

So the ci profile commits, next to its trained networks (:mod:`advbound.artifacts`), the point of each
latent search (:data:`SEARCHES`) for each attacked latent sample and classifier (``witnesses.pt``: per
classifier and search the points ``w`` in float64, bit for bit as the search left them, and whether the search
found a valid point), with ``witnesses.json``: the sha256 and size of that file, the sha256 of each network
they were computed on, the search settings (number of latent samples, their seed, the attack options, the
number of steps), versions, machine and the command.

A chapter then re-runs everything else (the modulus, the error rates, DeepFool in image space) and
*re-verifies* every witness (:func:`verified_search`): it recomputes ``g(w)`` and the label ``f(g(w))`` on the
loaded networks, raises :class:`ArtifactError` if a point said to be adversarial is not, and measures
``||w - z||_2`` and ``||g(w) - g(z)||_2`` itself.  A printed ``r_Z`` or ``r_in`` is thus always the distance
of a point verified in that run; what the committed file saves is only the search that found the point.
``tests/test_witnesses.py`` re-runs the searches on some of the committed samples and finds the same points.
``reattack=True`` (:func:`advbound.experiments.run_experiment`, the chapters' parameter) or
``python -m advbound artifacts ... --keep-networks`` re-runs them for every sample and rewrites the witnesses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .artifacts import ArtifactError, check_file, sha256, utc_timestamp, write_json_atomically
from .attacks import LatentAttackResult
from .attacks.latent import _latent_result, _verify_points
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint

WITNESS_FILE = "witnesses.pt"
WITNESS_MANIFEST = "witnesses.json"
FORMAT = 1
#: the committed searches: latent DeepFool (the r_Z estimate, also a start and a candidate of the r_in search)
#: and the best point of the boundary searches (:func:`advbound.attacks.boundary_search`)
SEARCHES = ("latent_deepfool", "boundary_search")


def has_witnesses(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a witness manifest (its content is checked by :func:`load_witnesses`)."""
    return (Path(folder) / WITNESS_MANIFEST).is_file()


def witness_points(result: LatentAttackResult, z: Tensor) -> tuple[Tensor, Tensor]:
    """What is committed of a latent search's result at ``z``: the points ``w`` (float64; ``z`` itself where
    no valid point was found) and the found flags."""
    found = result.success.detach().cpu().bool()
    points = torch.where(found[:, None].to(z.device), result.z_adv.detach(), z.detach())
    return points.cpu().double(), found


def save_witnesses(folder: str | os.PathLike, *, settings: Mapping[str, Any], networks: Mapping[str, str],
                   points: Mapping[str, Mapping[str, tuple[Tensor, Tensor]]], labels: Mapping[str, str],
                   command: str, versions: Mapping[str, str], machine: str, seconds: Mapping[str, float]) -> Path:
    """Write ``points`` (per classifier key and search of :data:`SEARCHES`: points (n, d) and found flags
    (n,)) to ``folder/witnesses.pt`` and then, atomically and last, ``witnesses.json``.

    ``settings``: what the search depended on besides the networks (compared exactly on loading);
    ``networks``: file name -> sha256 of each network the search ran on; ``labels``: classifier key -> label
    (for the messages); ``seconds``: the search time per classifier."""
    folder = Path(folder)
    state: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for key, per_search in points.items():
        state[key], summary[key] = {}, {"label": labels.get(key, key), "search_s": round(float(seconds.get(key, 0)), 1)}
        for search in SEARCHES:
            if search not in per_search:
                raise ValueError(f"points[{key!r}] has no {search!r} witnesses (needed: {SEARCHES})")
            w, found = per_search[search]
            if w.dim() != 2 or found.shape != w.shape[:1]:
                raise ValueError(f"points[{key!r}][{search!r}] must be points (n, d) and found flags (n,); got "
                                 f"{tuple(w.shape)} and {tuple(found.shape)}")
            state[key][search] = {"points": w.detach().cpu().double().contiguous(),
                                  "found": found.detach().cpu().bool().contiguous()}
            summary[key][search] = {"samples": int(found.numel()), "found": int(found.sum())}
    path = save_checkpoint(folder / WITNESS_FILE, state)
    manifest = {
        "format": FORMAT, "file": WITNESS_FILE, "sha256": sha256(path), "size": path.stat().st_size,
        "storage": "per classifier and search: the latent points w (float64, n x d) and found flags (bool, n)",
        "settings": json.loads(json.dumps(dict(settings))), "networks": dict(networks), "classifiers": summary,
        "versions": dict(versions), "machine": machine, "command": command,
        "created": utc_timestamp(),
    }
    return write_json_atomically(folder / WITNESS_MANIFEST, manifest)


def _hint(command: str) -> str:
    return f"re-run the search with `{command}` (or the chapter's reattack=True)"


def load_witnesses(folder: str | os.PathLike, *, settings: Mapping[str, Any], networks: Mapping[str, str],
                   keys: list[str], n: int, dim: int, command: str) -> dict[str, dict[str, tuple[Tensor, Tensor]]]:
    """The committed witnesses of ``folder``, checked against its ``witnesses.json`` (format, file size and
    sha256, the networks' sha256, the search ``settings``) and against the expected ``keys``, ``n`` samples of
    dimension ``dim``.  Raises :class:`ArtifactError` naming what does not match; ``command`` is the command
    that rewrites them (quoted in the message)."""
    folder = Path(folder)
    mpath = folder / WITNESS_MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{mpath} is not a readable witness manifest ({type(err).__name__}: {err}); "
                            f"{_hint(command)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} is not a witness manifest of format {FORMAT}; {_hint(command)}")
    if manifest.get("networks") != dict(networks):
        raise ArtifactError(f"the witnesses in {folder} were found on other networks (their sha256 differ from "
                            f"the committed networks'); {_hint(command)}")
    wanted = json.loads(json.dumps(dict(settings)))
    if manifest.get("settings") != wanted:
        have = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
        diff = ", ".join(f"{k}: {have.get(k)!r} there, {v!r} here" for k, v in wanted.items() if have.get(k) != v)
        raise ArtifactError(f"the witnesses in {folder} come from another search ({diff or 'other settings'}); "
                            f"{_hint(command)}")
    path = folder / WITNESS_FILE
    check_file(path, manifest, WITNESS_MANIFEST, _hint(command))
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise ArtifactError(f"{err}; {_hint(command)}") from None
    out: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    for key in keys:
        out[key] = {}
        for search in SEARCHES:
            entry = state.get(key, {}).get(search) if isinstance(state.get(key), dict) else None
            if (not isinstance(entry, dict) or not isinstance(entry.get("points"), Tensor)
                    or not isinstance(entry.get("found"), Tensor) or entry["points"].shape != (n, dim)
                    or entry["found"].shape != (n,) or entry["found"].dtype != torch.bool):
                raise ArtifactError(f"{path} holds no {search} witnesses of shape ({n}, {dim}) for the classifier "
                                    f"{key!r}; {_hint(command)}")
            out[key][search] = (entry["points"].double(), entry["found"])
    return out


def _flags(found: Tensor) -> Tensor:
    """``found`` as a bool tensor: bool, or integers that are all 0 or 1 (converted); else ``ValueError``
    (an integer tensor used as a mask would index rows instead of selecting them)."""
    if found.dtype == torch.bool:
        return found
    if not found.is_floating_point() and not found.is_complex() and bool(((found == 0) | (found == 1)).all()):
        return found.bool()
    raise ValueError(f"found must be a bool tensor (or integers 0/1) marking the samples whose point is a found "
                     f"adversarial point; got dtype {found.dtype}")


@torch.no_grad()
def verified_search(classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor], z: Tensor,
                    points: Tensor, found: Tensor, *, name: str = "classifier", method: str = "witness",
                    x: Tensor | None = None, labels: Tensor | None = None) -> LatentAttackResult:
    """The search result that committed witnesses stand for, re-verified on the models.

    Each point ``w`` is evaluated: every one marked ``found`` must change the label ``f(g(z))`` (else
    :class:`ArtifactError` names the first sample that does not), and its latent and image distances
    ``||w - z||_2`` (the ``r_Z`` estimate) and ``||g(w) - g(z)||_2`` (the ``r_in`` estimate) are measured here,
    in ``z``'s dtype.  Samples not marked ``found`` are unsuccessful (``success`` False), as the search left
    them.  ``name`` appears in the error; ``method`` is the result's ``method`` per sample; ``x = g(z)`` and
    its ``labels`` ``f(g(z))`` may be passed when already computed."""
    if not isinstance(points, Tensor) or not isinstance(found, Tensor):
        raise ValueError(f"points and found must be tensors; got {type(points).__name__} and {type(found).__name__}")
    if points.shape != z.shape or found.shape != z.shape[:1]:
        raise ValueError(f"points must have z's shape {tuple(z.shape)} and found ({z.shape[0]},); got "
                         f"{tuple(points.shape)} and {tuple(found.shape)}")
    found = _flags(found).to(z.device)
    z = z.detach()
    z_adv = points.to(device=z.device, dtype=z.dtype)
    y, adv_labels, valid, x, x_adv = _verify_points(classifier, generator, z, z_adv, x, labels)
    bad = found & ~valid
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ArtifactError(f"witness {i} of {name} does not change the label of g(z) ({int(bad.sum())} of "
                            f"{int(found.sum())} such points): the witnesses do not fit these networks")
    return _latent_result(generator, z, z_adv, found, torch.zeros_like(y), y, adv_labels, [method] * z.shape[0],
                          images=(x, x_adv))


__all__ = [
    "SEARCHES",
    "WITNESS_FILE",
    "WITNESS_MANIFEST",
    "has_witnesses",
    "load_witnesses",
    "save_witnesses",
    "verified_search",
    "witness_points",
]
