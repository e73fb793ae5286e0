"""Training checkpoints: atomic writes, safe reads, and resuming only what fits.

* :func:`save_checkpoint` writes through :func:`atomic_write`: to a temporary file of its own in the target's
  folder (``NAME.<random>.tmp``, unique per writer), then renamed over the target (``os.replace``), so a reader
  never sees a half-written file, an interrupted write leaves the previous checkpoint intact, and of two
  processes saving the same file at once the last complete write wins;
* :func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``: tensors and plain containers
  only, nothing else is ever unpickled; an unreadable file raises :class:`CheckpointError` and is left as it is;
* resuming (used by :mod:`advbound.training`) first checks the whole checkpoint -- the configuration,
  including the parameter shapes of the networks, every part present, an epoch in ``[1, epochs]`` with one
  history row per epoch -- and loads all parts or none.
"""

from __future__ import annotations

import copy
import os
import secrets
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, incomplete, or belongs to a different configuration."""


def atomic_write(target: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Create or replace the file ``target`` atomically with what ``write(fh)`` writes to a binary file.

    ``write`` fills a new temporary file ``NAME.<16 random hex digits>.tmp`` in the target's folder (created
    with ``O_EXCL``, so two writers never share one, and with the usual permissions), which is flushed to disk
    and renamed over ``target`` with ``os.replace``: a reader sees the previous file or the new one, complete,
    never a part; of concurrent writers the last one to finish wins.  If anything fails the temporary file is
    removed and ``target`` is left as it was.  The target's folder is created if needed; an ``OSError`` (a
    parent that is a file, a read-only folder, a full disk) is raised again with a message naming ``target``.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        while tmp is None:
            candidate = target.with_name(f"{target.name}.{secrets.token_hex(8)}.tmp")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:  # pragma: no cover - 64 random bits collided
                continue
            tmp = candidate
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        above = next((p for p in target.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            reason = f"{above} is a file, not a folder"
        raise OSError(err.errno, f"{target} could not be written: {reason}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return target


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (``torch.save``) to ``path`` atomically (:func:`atomic_write`).

    Raises :class:`CheckpointError` naming ``path`` when it cannot be written (a parent that is a file, a
    read-only folder) or when ``state`` holds an object that ``torch.save`` cannot pickle; no file is left
    behind then, and an existing checkpoint at ``path`` is unchanged."""
    path = Path(path)
    try:
        return atomic_write(path, lambda fh: torch.save(state, fh))
    except OSError as err:
        raise CheckpointError(f"checkpoint {err.strerror}") from None
    except Exception as err:  # pickling: PicklingError, AttributeError, TypeError, ...
        raise CheckpointError(f"checkpoint {path} was not written: the state holds an object torch.save cannot "
                              f"store ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None


def _unreadable_reason(err: Exception) -> str:
    """Why ``torch.load`` failed, in one line, without torch's advice to load the file unsafely."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        # keep only the unpickler's finding (e.g. "Unsupported operand 224" or an unsupported global)
        text = text.split("WeightsUnpickler error:", 1)[1]
        for advice in ("Please use", "Check the documentation"):
            text = text.split(advice, 1)[0]
        return f"it holds data other than tensors and plain containers ({' '.join(text.split())[:160]})"
    first = " ".join(text.split())[:160] or "no message"
    return f"{type(err).__name__}: {first}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: tensors and plain data
    only; nothing else is ever unpickled).  Raises :class:`CheckpointError` when it is missing or cannot be
    read; the file is left as it is."""
    path = _checkpoint_path(path)
    if isinstance(map_location, (str, torch.device)):
        from .training import resolve_device

        resolve_device(map_location, "map_location")  # a device this machine has: never blame the file for it
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is an empty file; delete it to retrain from scratch")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, unpickling error, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint of this library "
                              f"({_unreadable_reason(err)}); it was not loaded: delete it to retrain from "
                              "scratch") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict of states")
    return state


def _checkpoint_path(checkpoint: str | os.PathLike) -> Path:
    """``checkpoint`` as a file path: a non-empty name that is not a folder (nor ends with a separator)."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError("checkpoint must be a file path (str or os.PathLike) or None; "
                         f"got {type(checkpoint).__name__}")
    text = os.fspath(checkpoint)
    if isinstance(text, bytes) or text.strip() == "":
        raise ValueError(f"checkpoint must be a non-empty file path or None; got {checkpoint!r}")
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise ValueError(f"checkpoint must name a file, not a folder; got {text!r} "
                         f"(e.g. {os.path.join(text, 'model.pt')!r})")
    return Path(text)


def _architecture(module: nn.Module) -> dict[str, list[int]]:
    """The module's parameter and buffer shapes by name: two models with the same code and widths agree."""
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    if not isinstance(config, dict) or not config:
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _config_difference(saved: Any, current: dict[str, Any]) -> str:
    """The settings in which two configurations differ, one per line (parameter shapes: a count and examples)."""
    if not isinstance(saved, dict):
        return f"  saved configuration: {saved!r}"
    a, b = _flat(saved), _flat(current)
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    shapes = [k for k in differ if k.startswith("architecture.")]
    lines = [f"  {k}: saved {a.get(k, '<absent>')!r}, current {b.get(k, '<absent>')!r}" for k in differ
             if k not in shapes]
    if shapes:
        shown = "; ".join(f"{k[len('architecture.'):]}: saved {a.get(k, '<absent>')}, current {b.get(k, '<absent>')}"
                          for k in shapes[:3])
        lines.append(f"  architecture: {len(shapes)} parameter shape(s) differ, e.g. {shown}")
    return "\n".join(lines)


def _check_state(state: dict[str, Any], config: dict[str, Any], path: Path, parts: dict[str, Any]) -> None:
    """A checkpoint of this ``config``, complete, with an epoch in [1, epochs] and one history row per epoch."""
    if state.get("config") != config:
        raise CheckpointError(f"checkpoint {path} was written by a different configuration:\n"
                              f"{_config_difference(state.get('config'), config)}\n"
                              "use another checkpoint file or delete it to retrain")
    missing = [key for key in ("epoch", "history", *parts) if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: it lacks {', '.join(missing)}; nothing was "
                              "loaded: delete it to retrain")
    epoch, history, epochs = state["epoch"], state["history"], config["epochs"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise CheckpointError(f"checkpoint {path} records epoch {epoch!r}, outside [1, {epochs}] for this "
                              "configuration; nothing was loaded: delete it to retrain")
    if not isinstance(history, list) or len(history) != epoch:
        raise CheckpointError(f"checkpoint {path} records epoch {epoch} but a history of "
                              f"{len(history) if isinstance(history, list) else type(history).__name__} "
                              "entries; nothing was loaded: delete it to retrain")


def _resume(checkpoint: str | os.PathLike | None, config: dict[str, Any], device: torch.device,
            parts: dict[str, Any]) -> tuple[Path | None, int, list[dict[str, float]]]:
    """Load ``parts`` (name -> object with ``load_state_dict``) from an existing checkpoint of the same
    ``config``; return the checkpoint path, the epoch to start from and the history so far.

    All or nothing: the checkpoint is checked first, and if a part still fails to load, every part is put
    back as it was before :class:`CheckpointError` is raised."""
    ckpt = _checkpoint_path(checkpoint) if checkpoint is not None else None
    if ckpt is None or not ckpt.exists():
        return ckpt, 0, []
    state = load_checkpoint(ckpt, device)
    _check_state(state, config, ckpt, parts)
    before = {name: copy.deepcopy(obj.state_dict()) for name, obj in parts.items()}
    try:
        for name, obj in parts.items():
            obj.load_state_dict(state[name])
    except Exception as err:
        for name, obj in parts.items():
            obj.load_state_dict(before[name])
        raise CheckpointError(f"checkpoint {ckpt} does not fit the current objects "
                              f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); nothing was loaded: "
                              "delete it to retrain") from None
    return ckpt, state["epoch"], list(state["history"])


__all__ = ["CheckpointError", "atomic_write", "load_checkpoint", "save_checkpoint"]
