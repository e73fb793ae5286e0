"""Command line: ``python -m advbound bound ...`` prints the classifier-agnostic bound as one JSON object.

Example (the paper's Table 1 check value)::

    python -m advbound bound --latent-dim 100 --classes 10 --quantile 0.25

``python -m advbound experiment --dataset svhn --profile full`` runs one of Tables 1-2 end to end
(:func:`advbound.experiments.run_experiment`), prints the table and saves the results JSON and CSV under the
output folder (``--output``, else ``$ADVBOUND_OUTPUT``, else the working directory).  With ``--dry-run`` it
trains nothing and prints what the profile's training costs (:mod:`advbound.experiments.dryrun`).  With
``--artifacts book/artifacts`` it analyses the committed networks instead of training them.

``python -m advbound artifacts --dataset mnist --profile ci --out book/artifacts`` trains a table's networks
and writes them, with their manifest, as the committed artifacts (:mod:`advbound.artifacts`), then runs the
table's analysis on them and writes the in-distribution boundary search's witnesses beside them
(:mod:`advbound.witnesses`); ``--keep-networks`` re-runs only the searches, and ``--searches r_unc`` (with
``--keep-networks``) only the named ones, keeping the committed witnesses of the others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .bounds import class_probabilities, expected_latent_norm, latent_radius_quantile
from .modulus import IdentityModulus, LipschitzModulus


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr naming the argument, and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"advbound: error: {message}\n")
        raise SystemExit(2)


#: the most classes the ``bound`` command takes: eq. (2) is summed class by class (80 MB at this size)
MAX_CLASSES = 10_000_000


def _positive_int(name: str, maximum: int | None = None):
    allowed = "an integer >= 1" if maximum is None else f"an integer in [1, {maximum:,}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}; got {text!r}") from None
        if value < 1 or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}; got {value}")
        return value
    return parse


def _float_in(name: str, lo: float, hi: float, lo_open: bool, hi_open: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {text!r}") from None
        above_lo = value > lo if lo_open else value >= lo
        below_hi = value < hi if hi_open else value <= hi
        ok = math.isfinite(value) and above_lo and below_hi
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"{name} must be in {interval}; got {text}")
        return value
    return parse


def _non_negative_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 0; got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 0; got {value}")
        return value
    return parse


def _fail(message: str) -> SystemExit:
    """The command line's error exit: one line ``advbound: error: ...`` on stderr, status 1, no traceback."""
    return SystemExit(f"advbound: error: {message}")


def _probabilities(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--class-probs must be comma-separated numbers; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="advbound", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"advbound {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    b = sub.add_parser("bound", allow_abbrev=False, help="upper bound on a quantile of robustness (Theorem 1, eq. (2))",
                       description="Smallest eta with P(r <= eta) >= Q guaranteed by Theorem 1 for any classifier.")
    b.add_argument("--latent-dim", type=_positive_int("--latent-dim"), required=True, help="latent dimension d")
    classes = b.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", type=_positive_int("--classes", MAX_CLASSES), help="K equiprobable classes")
    classes.add_argument("--class-probs", type=_probabilities, help="class probabilities p1,p2,... summing to 1")
    b.add_argument("--quantile", type=_float_in("--quantile", 0, 1, True, True), required=True,
                   help="target probability Q in (0, 1) (0.25 in Tables 1-2)")
    b.add_argument("--lipschitz", type=_float_in("--lipschitz", 0, math.inf, True, True), default=None,
                   help="Lipschitz constant L of g: report the image-space radius eta = L t (else latent)")
    b.add_argument("--delta", type=_float_in("--delta", 0, 1, False, True), default=0.0,
                   help="failure probability of a probabilistic modulus, added to Q (default 0)")
    e = sub.add_parser("experiment", allow_abbrev=False, help="run one of Tables 1-2 end to end",
                       description="Train (or load) the generator and classifiers of a table, attack them, print "
                                   "the table with its bounds, and save the results JSON and CSV.")
    _network_arguments(e)
    e.add_argument("--artifacts", default=None,
                   help="folder of committed networks (e.g. book/artifacts): load <dataset>-<profile>-seed<seed>/ "
                        "from it when it exists, else train (default: always train)")
    e.add_argument("--retrain", action="store_true",
                   help="with --artifacts: train anyway and rewrite the networks and their manifest there")
    e.add_argument("--reattack", action="store_true",
                   help="with --artifacts: run the in-distribution boundary search anyway and rewrite its "
                        "witnesses there (advbound.witnesses)")
    e.add_argument("--output", default=None,
                   help="output folder for results/, checkpoints/, data/ (default: $ADVBOUND_OUTPUT, else .)")
    e.add_argument("--no-download", action="store_true", help="do not download the real data")
    e.add_argument("--checkpoint-dir", default=None,
                   help="save/resume training here (default for colab/full: "
                        "<output>/checkpoints/<dataset>-<profile>-seed<seed>)")
    e.add_argument("--out", default=None,
                   help="results path; NAME.json and NAME.csv are written "
                        "(default: <output>/results/<dataset>-<profile>)")
    e.add_argument("--dry-run", action="store_true",
                   help="no data, no training: measure one step of every network at the profile's sizes on "
                        "synthetic batches (parameters, FLOPs, memory, time) and project the training time on "
                        "one GPU (advbound.experiments.dryrun); with --out, also save it as JSON and CSV")
    a = sub.add_parser("artifacts", allow_abbrev=False,
                       help="train a table's networks, search its witnesses, and write both as artifacts",
                       description="Train the DCGAN and the classifiers of a table and write them, in half precision "
                                   "with a manifest (sha256, size, configuration, versions, command), to "
                                   "OUT/<dataset>-<profile>-seed<seed>/ (advbound.artifacts); then run the table's "
                                   "analysis on them and write the in-distribution boundary search's points "
                                   "(witnesses.pt and witnesses.json, advbound.witnesses) beside them.")
    _network_arguments(a)
    a.add_argument("--out", default="artifacts", help="artifact root folder (default: ./artifacts)")
    a.add_argument("--keep-networks", action="store_true",
                   help="do not train: re-run only the boundary search on the committed networks in OUT")
    a.add_argument("--searches", action="append", default=None, choices=("r_z", "r_in", "r_unc"),
                   help="with --keep-networks: re-run only this search (repeatable) and keep the committed "
                        "witnesses of the others (found with the same settings but this search's own)")
    a.add_argument("--checkpoint-dir", default=None,
                   help="save/resume every network's training here (one checkpoint per network and epoch)")
    a.add_argument("--only", action="append", default=None, metavar="NETWORK",
                   help="with --checkpoint-dir: train only this network (dcgan or a classifier key; repeatable) "
                        "into the checkpoints and stop, writing nothing to OUT: networks trained in parallel "
                        "processes are then picked up by one run without --only")
    return parser


def _network_arguments(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS

    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--profile", choices=("ci", "colab", "full"), default="ci")
    p.add_argument("--seed", type=_non_negative_int("--seed"), default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--data-root", default=None,
                   help="torchvision data folder (default: $ADVBOUND_DATA, else <output>/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def artifacts_command(args: argparse.Namespace) -> int:
    """Train the networks of one table and write them with their manifest (:mod:`advbound.artifacts`), then run
    the analysis on them and write the boundary search's witnesses (:mod:`advbound.witnesses`)."""
    from .artifacts import ArtifactError, artifact_folder, has_artifacts
    from .data import DataUnavailableError
    from .experiments import run_experiment, set_determinism
    from .training import CheckpointError, TrainingDivergedError
    from .witnesses import SEARCHES

    _check_device(args.device)
    _usable_folder(Path(args.out), "--out")
    folder = artifact_folder(args.out, args.dataset, args.profile, args.seed)
    if args.keep_networks and not has_artifacts(folder):
        raise _fail(f"argument --keep-networks: {folder} holds no committed networks (manifest.json)")
    if args.searches is not None and not args.keep_networks:
        raise _fail("argument --searches: needs --keep-networks (retrained networks need every search anew)")
    if args.only is not None and args.checkpoint_dir is None:
        raise _fail("argument --only: needs --checkpoint-dir (where the trained network's checkpoint is kept)")
    if args.checkpoint_dir is not None:
        _usable_folder(Path(args.checkpoint_dir), "--checkpoint-dir")
    set_determinism(args.seed, threads=1 if args.profile == "ci" else None)
    try:
        if args.only is not None:
            return _train_only(args)
        run_experiment(args.dataset, args.profile, seed=args.seed, device=args.device, data_root=args.data_root,
                       artifacts=folder, retrain=not args.keep_networks, reattack=args.searches or True,
                       progress=not args.quiet, checkpoint_dir=args.checkpoint_dir)
    except (DataUnavailableError, CheckpointError, TrainingDivergedError, ArtifactError) as err:
        raise _fail(str(err)) from None
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        print(f"{folder / name}: {entry['size'] / 1e6:.2f} MB, {entry['parameters']:,} parameters, "
              f"sha256 {entry['sha256'][:16]}...")
    print(f"manifest: {folder / 'manifest.json'} ({manifest['total_size'] / 1e6:.2f} MB in all)")
    witnesses = json.loads((folder / "witnesses.json").read_text())
    print(f"witnesses: {folder / 'witnesses.pt'} ({witnesses['size'] / 1e6:.2f} MB); points found:")
    for c in witnesses["classifiers"].values():
        print(f"  {c['label']}: " + ", ".join(f"{k} {c[k]['found']}/{c[k]['samples']}" for k in SEARCHES))
    return 0


def _train_only(args: argparse.Namespace) -> int:
    """``artifacts --only NETWORK --checkpoint-dir DIR``: train the named networks of the table into DIR."""
    from .data import load_dataset
    from .experiments import experiment_config
    from .experiments.pipeline import train_networks
    from .training import resolve_device

    cfg = experiment_config(args.dataset, args.profile)
    names = ["dcgan"] + [spec.key for spec in cfg.classifiers]
    unknown = [n for n in args.only if n not in names]
    if unknown:
        raise _fail(f"argument --only: {', '.join(unknown)} is not a network of this table; choose from {names}")
    train, _ = load_dataset(args.dataset, args.profile, root=args.data_root, seed=args.seed, n_train=cfg.n_train,
                            n_test=cfg.n_test)
    train_networks(cfg, train, args.seed, resolve_device(args.device), checkpoint_dir=args.checkpoint_dir,
                   progress=not args.quiet, only=args.only)
    print(f"trained {', '.join(args.only)} into {args.checkpoint_dir}; run again without --only to write the "
          "artifacts")
    return 0


def bound_command(args: argparse.Namespace) -> dict:
    """Theorem 1 inverted: eta = omega(t*) with t* the smallest latent radius where eq. (2) >= Q + delta."""
    try:
        probs = class_probabilities(args.class_probs, args.classes)
    except ValueError as exc:
        arg = "--class-probs" if args.class_probs is not None else "--classes"
        raise _fail(f"argument {arg}: {exc}") from None
    if args.quantile + args.delta >= 1.0:
        raise _fail(f"argument --delta: --quantile + --delta must be < 1; got {args.quantile:g} + {args.delta:g}")
    modulus = IdentityModulus() if args.lipschitz is None else LipschitzModulus(args.lipschitz)
    t_star = latent_radius_quantile(args.quantile + args.delta, probs)
    eta = float(modulus(t_star)) if math.isfinite(t_star) else math.inf
    try:
        norm = expected_latent_norm(args.latent_dim)
    except (ValueError, OverflowError) as exc:
        raise _fail(f"argument --latent-dim: {exc}") from None
    return {
        "eta": eta,
        "normalized": eta / norm,
        "space": "latent" if args.lipschitz is None else "image",
        "latent_radius": t_star,
        "expected_latent_norm": norm,
        "quantile": args.quantile,
        "delta": args.delta,
        "lipschitz": args.lipschitz,
        "n_classes": int(probs.size),
        "latent_dim": args.latent_dim,
        "theorem": "Theorem 1, eq. (2)",
    }


def _check_device(text: str | None) -> None:
    """``--device`` must name a device this machine computes on (:func:`advbound.training.resolve_device`)."""
    import torch

    from .training import resolve_device

    if text is None:
        return
    try:
        torch.device(text)
    except RuntimeError:
        raise _fail(f"argument --device: expected cpu, cuda or cuda:N; got {text!r}") from None
    try:
        resolve_device(text, "argument --device")
    except ValueError as err:
        raise _fail(str(err)) from None


def _usable_folder(path: Path, arg: str) -> None:
    """Fail now, not after a long run, if the folder ``path`` could not be created or written to.

    Nothing is created here: the nearest existing ancestor must be a writable folder (and ``path`` itself, if
    it exists, a folder)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    needed = "" if existing == path else f" (needed for {str(path)!r})"
    if not existing.is_dir():
        raise _fail(f"argument {arg}: {str(existing)!r} is a file, not a folder{needed}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _fail(f"argument {arg}: the folder {str(existing)!r} is not writable{needed}")


def experiment_command(args: argparse.Namespace) -> int:
    """Run one table (:func:`advbound.experiments.run_experiment`), print it and save its results.

    Every path and the device are checked before the run starts; the library's named errors (missing data,
    an unusable checkpoint, a diverged training) are printed as one line, without a traceback.
    """
    import json as _json

    from . import book
    from .artifacts import ArtifactError, artifact_folder
    from .data import DataUnavailableError
    from .experiments import run_experiment, set_determinism, side_by_side
    from .experiments.report import _title
    from .training import CheckpointError, TrainingDivergedError

    _check_device(args.device)
    output = Path(args.output if args.output is not None else os.environ.get(book.OUTPUT_ENV) or ".")
    _usable_folder(output, "--output" if args.output is not None else f"--output (${book.OUTPUT_ENV})")
    if args.out:
        try:  # the one rule of every --out (results and dry run): NAME.json and NAME.csv
            json_path, _ = book.result_files(args.out)
        except ValueError as err:
            raise _fail(f"argument --out: {err}") from None
        _usable_folder(json_path.parent, "--out")
    if args.checkpoint_dir is not None:
        _usable_folder(Path(args.checkpoint_dir), "--checkpoint-dir")
    if args.retrain and args.artifacts is None:
        raise _fail("argument --retrain: needs --artifacts (the folder to write the retrained networks to)")
    if args.reattack and args.artifacts is None:
        raise _fail("argument --reattack: needs --artifacts (the folder to write the witnesses to)")
    if args.artifacts is not None:
        _usable_folder(Path(args.artifacts), "--artifacts")
    if args.dry_run:
        from .experiments.dryrun import dry_run

        report = dry_run(args.dataset, args.profile, seed=args.seed, device=args.device or "cpu",
                         log=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)))
        print(report.summary())
        if args.out:
            print(f"dry run written to {report.save(args.out)}")
        return 0
    # the checks passed: now the output folder may be created
    try:
        out = Path(args.out) if args.out else book.results_path(args.dataset, args.profile, args.output)
        ckdir = args.checkpoint_dir
        if ckdir is None and args.profile != "ci":
            ckdir = book.checkpoint_dir(args.dataset, args.profile, args.seed, args.output)
        data_root = args.data_root if args.data_root is not None else (
            None if args.output is None else book.output_dir(args.output) / "data")
    except OSError as err:
        raise _fail(f"argument --output: cannot create {str(err.filename or output)!r} "
                    f"({err.strerror or type(err).__name__})") from None
    # the ci profile's tiny networks run fastest (and reproducibly) on one CPU thread
    set_determinism(args.seed, threads=1 if args.profile == "ci" else None)
    try:
        arts = (None if args.artifacts is None
                else artifact_folder(args.artifacts, args.dataset, args.profile, args.seed))
        res = run_experiment(args.dataset, args.profile, seed=args.seed, device=args.device, data_root=data_root,
                             download=not args.no_download, checkpoint_dir=ckdir, artifacts=arts,
                             retrain=args.retrain, reattack=args.reattack, progress=not args.quiet)
    except (DataUnavailableError, CheckpointError, TrainingDivergedError, ArtifactError) as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        again = " (run the same command again to resume from the checkpoints)" if ckdir is not None else ""
        sys.stderr.write(f"advbound: interrupted{again}\n")
        raise SystemExit(130) from None
    print(_title(args.dataset, res.provenance["data"]))
    print(side_by_side(res).to_string())
    print(_json.dumps(res.to_json_dict()["checks"], indent=1))
    path = res.save(out)
    print(f"results written to {path} and {path.with_suffix('.csv')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "experiment":  # heavy imports (torch, torchvision) only for these subcommands
        return experiment_command(args)
    if args.command == "artifacts":
        return artifacts_command(args)
    if args.command == "bound":
        result = bound_command(args)
        # JSON has no infinity: an uncertified radius is reported as null
        finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
        print(json.dumps(finite))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
