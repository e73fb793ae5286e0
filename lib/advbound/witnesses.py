"""Committed witnesses of the three robustness estimates: the adversarial points the searches found.

Every robustness value of a table is an *upper* estimate certified by a point: an adversarial example whose
label differs from the clean one.  For ``r_Z`` and ``r_in`` that point is a latent vector ``w`` with
``f(g(w)) != f(g(z))``, and ``r_Z(z) <= ||w - z||_2``, ``r_in(g(z)) <= ||g(w) - g(z)||_2``; for ``r_unc`` it is
an image ``x'`` with ``f(x') != f(x)``, and ``r_unc(x) <= ||x' - x||_2``.  Finding the points is the expensive
part of the analysis (the boundary searches in the latent space, :func:`advbound.attacks.latent_boundary_search`
and :func:`advbound.attacks.boundary_search`, and the boundary walk of
:func:`advbound.attacks.unconstrained_attack`: tens of gradient steps per sample); checking one is a forward
pass.

So the ci profile commits, next to its trained networks (:mod:`advbound.artifacts`), the best point of each
search (:data:`SEARCHES`) for every attacked latent sample and classifier: ``witnesses.pt`` holds, per
classifier and search, the displacement of each point from its clean point (``w - z``, or ``x' - x`` with
``x = g(z)``) in float16 and whether the search found a valid point; ``witnesses.json`` records the sha256
and size of that file, the sha256 of each network they were computed on, the search settings (number of latent
samples, their seed, the attacks' options and steps), versions, machine and the command.

Why displacements in float16: the clean points are recomputed exactly in every run (portable latent draws,
:mod:`advbound.portable`, and the committed generator), and a displacement is as short as the robustness it
certifies, so half precision keeps its relative precision (``2**-11``) and the files small (about 0.8 MB per
classifier for 500 MNIST-sized images).  Rounding may move a point that sat just beyond the boundary back
across it, so :func:`witness_displacements` re-verifies every rounded point and lengthens a failing one by
``2**-10`` at a time until it is adversarial again (by up to 4x for the tiniest displacements, whose
coordinates float16 stores as subnormals); the points that needed it are counted in the manifest.

A chapter re-runs everything else (the modulus, the error rates, the sample quality) and *re-verifies* every
witness (:func:`verified_search`, :func:`verified_unconstrained`): it evaluates the networks at the point,
raises :class:`ArtifactError` if a point said to be adversarial is not, and measures the distances itself.  A
printed robustness value is thus always the distance of a point verified in that run; the run that searches
(``reattack=True``, ``python -m advbound artifacts ... --keep-networks``) takes its numbers from the same rounded
and verified points, so it prints what every later run prints.  ``tests/test_witnesses.py`` re-runs the
searches on some committed samples and finds the same points (for ``r_unc``, whose search runs in float32,
points at the same distance to within a few thousandths).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .artifacts import ArtifactError, check_file, sha256, utc_timestamp, write_json_atomically
from .attacks import AttackResult, LatentAttackResult
from .attacks.latent import _latent_result, _verify_points
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint

WITNESS_FILE = "witnesses.pt"
WITNESS_MANIFEST = "witnesses.json"
FORMAT = 2
#: the committed searches and the space of their points: the best point found for ``r_Z`` (latent), for
#: ``r_in`` (latent, judged by its image distance) and for ``r_unc`` (image)
SEARCHES = {"r_z": "latent", "r_in": "latent", "r_unc": "image"}
#: how the displacements are stored
STORAGE_DTYPE = torch.float16
#: the factor by which a rounded displacement that lost its label change is lengthened, and how often at most
PUSH, MAX_PUSHES = 1 + 2.0 ** -10, 32
#: then, for displacements whose coordinates lie in float16's subnormal range (below ``6.1e-5``, where the
#: rounding error is no longer relative to the value), coarser lengthenings ``2 ** (j / 8)``, ``j = 1 .. 16``
COARSE_PUSHES = tuple(2.0 ** (j / 8) for j in range(1, 17))

Witness = tuple[Tensor, Tensor]   # displacements (n, ...) in float16 and found flags (n,)


def has_witnesses(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a witness manifest (its content is checked by :func:`load_witnesses`)."""
    return (Path(folder) / WITNESS_MANIFEST).is_file()


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
def witness_displacements(points: Tensor, base: Tensor, found: Tensor,
                          is_adversarial: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, int]:
    """What is committed of a search's points: ``points - base`` in float16 (zero where nothing was found), the
    found flags, and how many rounded points had to be lengthened to stay adversarial.

    ``is_adversarial(p)`` says, per row, whether the point ``p`` (in ``base``'s dtype) is a valid adversarial
    point.  A found point whose rounded displacement is not is lengthened by :data:`PUSH` until it is (at most
    :data:`MAX_PUSHES` times), then, from its unrounded displacement, by :data:`COARSE_PUSHES` (the first
    stage stalls on subnormal coordinates: ``1 + 2**-10`` times one rounds back to it); a point that still
    fails is marked not found, which only makes the committed estimate more conservative."""
    found = _flags(found).to(base.device)
    exact = torch.where(found.view(-1, *([1] * (base.dim() - 1))), points.detach() - base.detach(),
                        torch.zeros_like(base))
    delta = exact.to(STORAGE_DTYPE)
    ok = is_adversarial(base + delta.to(base.dtype)) | ~found
    pushed = ~ok
    for step in range(MAX_PUSHES + len(COARSE_PUSHES)):
        if bool(ok.all()):
            break
        if step < MAX_PUSHES:
            delta[~ok] = (delta[~ok].to(base.dtype) * PUSH).to(STORAGE_DTYPE)
        else:
            delta[~ok] = (exact[~ok] * COARSE_PUSHES[step - MAX_PUSHES]).to(STORAGE_DTYPE)
        ok = is_adversarial(base + delta.to(base.dtype)) | ~found
    found = found & ok
    delta[~found] = 0
    return delta.cpu(), found.cpu(), int((pushed & found).sum())


def save_witnesses(folder: str | os.PathLike, *, settings: Mapping[str, Any], networks: Mapping[str, str],
                   displacements: Mapping[str, Mapping[str, Witness]], labels: Mapping[str, str], command: str,
                   versions: Mapping[str, str], machine: str, seconds: Mapping[str, float],
                   pushed: Mapping[str, Mapping[str, int]] | None = None) -> Path:
    """Write ``displacements`` (per classifier key and search of :data:`SEARCHES`: float16 displacements
    ``(n, ...)`` and found flags ``(n,)``, from :func:`witness_displacements`) to ``folder/witnesses.pt`` and
    then, atomically and last, ``witnesses.json``.

    ``settings``: what the searches depended on besides the networks (compared exactly on loading);
    ``networks``: file name -> sha256 of each network the searches ran on; ``labels``: classifier key -> label
    (for the messages); ``seconds``: the search time per classifier; ``pushed``: per key and search, how many
    rounded points were lengthened."""
    folder = Path(folder)
    state: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for key, per_search in displacements.items():
        state[key], summary[key] = {}, {"label": labels.get(key, key), "search_s": round(float(seconds.get(key, 0)), 1)}
        for search in SEARCHES:
            if search not in per_search:
                raise ValueError(f"displacements[{key!r}] has no {search!r} witnesses (needed: {tuple(SEARCHES)})")
            delta, found = per_search[search]
            if delta.dtype != STORAGE_DTYPE or found.shape != delta.shape[:1]:
                raise ValueError(f"displacements[{key!r}][{search!r}] must be {STORAGE_DTYPE} displacements (n, ...) "
                                 f"and found flags (n,); got {delta.dtype} {tuple(delta.shape)} and "
                                 f"{tuple(found.shape)}")
            state[key][search] = {"delta": delta.detach().cpu().contiguous(),
                                  "found": _flags(found).detach().cpu().contiguous()}
            summary[key][search] = {"samples": int(found.numel()), "found": int(found.sum()),
                                    "lengthened_after_rounding": int((pushed or {}).get(key, {}).get(search, 0))}
    path = save_checkpoint(folder / WITNESS_FILE, state)
    manifest = {
        "format": FORMAT, "file": WITNESS_FILE, "sha256": sha256(path), "size": path.stat().st_size,
        "storage": ("per classifier and search: the displacement of the found point from the clean point "
                    "(latent w - z for r_z and r_in, image x' - x for r_unc), float16, and found flags (bool, n)"),
        "searches": dict(SEARCHES), "settings": json.loads(json.dumps(dict(settings))), "networks": dict(networks),
        "classifiers": summary, "versions": dict(versions), "machine": machine, "command": command,
        "created": utc_timestamp(),
    }
    return write_json_atomically(folder / WITNESS_MANIFEST, manifest)


def _hint(command: str) -> str:
    return f"re-run the searches with `{command}` (or the chapter's reattack=True)"


def load_witnesses(folder: str | os.PathLike, *, settings: Mapping[str, Any], networks: Mapping[str, str],
                   keys: list[str], shapes: Mapping[str, tuple[int, ...]], command: str,
                   ignore: Collection[str] = ()) -> dict[str, dict[str, Witness]]:
    """The committed witnesses of ``folder``, checked against its ``witnesses.json`` (format, file size and
    sha256, the networks' sha256, the search ``settings`` but the keys in ``ignore``) and against the expected
    classifier ``keys`` and the displacement shape of each search (``shapes[search]``, e.g. ``(500, 100)`` for
    latent points).  Raises :class:`ArtifactError` naming what does not match; ``command`` is the command that
    rewrites them."""
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
    wanted = json.loads(json.dumps({k: v for k, v in settings.items() if k not in ignore}))
    found_settings = manifest.get("settings")
    have: dict[str, Any] = found_settings if isinstance(found_settings, dict) else {}
    if {k: v for k, v in have.items() if k not in ignore} != wanted:
        diff = ", ".join(f"{k}: {have.get(k)!r} there, {v!r} here" for k, v in wanted.items() if have.get(k) != v)
        raise ArtifactError(f"the witnesses in {folder} come from another search ({diff or 'other settings'}); "
                            f"{_hint(command)}")
    path = folder / WITNESS_FILE
    check_file(path, manifest, WITNESS_MANIFEST, _hint(command))
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise ArtifactError(f"{err}; {_hint(command)}") from None
    out: dict[str, dict[str, Witness]] = {}
    for key in keys:
        out[key] = {}
        for search in SEARCHES:
            entry = state.get(key, {}).get(search) if isinstance(state.get(key), dict) else None
            shape = tuple(shapes[search])
            if (not isinstance(entry, dict) or not isinstance(entry.get("delta"), Tensor)
                    or not isinstance(entry.get("found"), Tensor) or tuple(entry["delta"].shape) != shape
                    or entry["delta"].dtype != STORAGE_DTYPE or entry["found"].shape != shape[:1]
                    or entry["found"].dtype != torch.bool):
                raise ArtifactError(f"{path} holds no {search} witnesses of shape {shape} ({STORAGE_DTYPE}) for the "
                                    f"classifier {key!r}; {_hint(command)}")
            out[key][search] = (entry["delta"], entry["found"])
    return out


def _check_found(found: Tensor, valid: Tensor, name: str) -> None:
    bad = found & ~valid
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ArtifactError(f"witness {i} of {name} does not change the label ({int(bad.sum())} of {int(found.sum())} "
                            "such points): the witnesses do not fit these networks")


def _check_shapes(delta: Tensor, found: Tensor, base: Tensor, what: str) -> Tensor:
    if not isinstance(delta, Tensor) or not isinstance(found, Tensor):
        raise ValueError(f"delta and found must be tensors; got {type(delta).__name__} and {type(found).__name__}")
    if delta.shape != base.shape or found.shape != base.shape[:1]:
        raise ValueError(f"delta must have {what}'s shape {tuple(base.shape)} and found ({base.shape[0]},); got "
                         f"{tuple(delta.shape)} and {tuple(found.shape)}")
    return _flags(found).to(base.device)


@torch.no_grad()
def verified_search(classifier: Callable[[Tensor], Tensor], generator: Callable[[Tensor], Tensor], z: Tensor,
                    delta: Tensor, found: Tensor, *, name: str = "classifier", method: str = "witness",
                    x: Tensor | None = None, labels: Tensor | None = None) -> LatentAttackResult:
    """The latent search result that committed displacements stand for, re-verified on the models.

    Each point ``w = z + delta`` is evaluated in ``z``'s dtype: every one marked ``found`` must change the label
    ``f(g(z))`` (else :class:`ArtifactError` names the first sample that does not), and its latent and image
    distances ``||w - z||_2`` (an ``r_Z`` estimate) and ``||g(w) - g(z)||_2`` (an ``r_in`` estimate) are
    measured here.  Samples not marked ``found`` are unsuccessful.  ``name`` appears in the error; ``method`` is
    the result's ``method`` per sample; ``x = g(z)`` and its ``labels`` may be passed when already computed."""
    found = _check_shapes(delta, found, z, "z")
    z = z.detach()
    z_adv = z + delta.to(device=z.device, dtype=z.dtype)
    y, adv_labels, valid, x, x_adv = _verify_points(classifier, generator, z, z_adv, x, labels)
    _check_found(found, valid, name)
    return _latent_result(generator, z, z_adv, found, torch.zeros_like(y), y, adv_labels, [method] * z.shape[0],
                          images=(x, x_adv))


@torch.no_grad()
def verified_unconstrained(classifier: Callable[[Tensor], Tensor], x: Tensor, delta: Tensor, found: Tensor, *,
                           name: str = "classifier", labels: Tensor | None = None) -> AttackResult:
    """The unconstrained attack's result that committed displacements stand for, re-verified: each image
    ``x' = x + delta`` marked ``found`` must change the label ``f(x)`` (else :class:`ArtifactError`), and
    ``||x' - x||_2`` (an ``r_unc`` estimate) is measured here, in ``x``'s dtype."""
    found = _check_shapes(delta, found, x, "x")
    x = x.detach()
    pert = delta.to(device=x.device, dtype=x.dtype)
    x_adv = x + pert
    y = classifier(x).argmax(dim=1) if labels is None else labels.to(x.device)
    logits = classifier(x_adv)
    adv_labels = logits.argmax(dim=1)
    valid = (adv_labels != y) & torch.isfinite(logits).all(dim=1) & torch.isfinite(x_adv.flatten(1)).all(dim=1)
    _check_found(found, valid, name)
    return AttackResult(x_adv=x_adv, perturbation=pert, norms=pert.flatten(1).norm(dim=1), success=found,
                        steps=torch.zeros_like(y), labels=y, adv_labels=adv_labels)


__all__ = [
    "FORMAT",
    "SEARCHES",
    "STORAGE_DTYPE",
    "WITNESS_FILE",
    "WITNESS_MANIFEST",
    "has_witnesses",
    "load_witnesses",
    "save_witnesses",
    "verified_search",
    "verified_unconstrained",
    "witness_displacements",
]
