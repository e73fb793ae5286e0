"""Command line: ``python -m advbound bound ...`` prints the classifier-agnostic bound as one JSON object.

Example (the paper's Table 1 check value)::

    python -m advbound bound --latent-dim 100 --classes 10 --quantile 0.25

``python -m advbound experiment --dataset svhn --profile full`` runs one of Tables 1-2 end to end
(see :func:`advbound.experiments.main`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

from . import __version__
from .bounds import class_probabilities, expected_latent_norm, latent_radius_quantile
from .modulus import IdentityModulus, LipschitzModulus


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr naming the argument, and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"advbound: error: {message}\n")
        raise SystemExit(2)


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1; got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1; got {value}")
        return value
    return parse


def _float_in(name: str, lo: float, hi: float, lo_open: bool, hi_open: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"{name} must be in {interval}; got {text}")
        return value
    return parse


def _probabilities(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--class-probs must be comma-separated numbers; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="advbound", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"advbound {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    b = sub.add_parser("bound", help="upper bound on a quantile of robustness (Theorem 1, eq. (2))",
                       description="Smallest eta with P(r <= eta) >= Q guaranteed by Theorem 1 for any classifier.")
    b.add_argument("--latent-dim", type=_positive_int("--latent-dim"), required=True, help="latent dimension d")
    classes = b.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", type=_positive_int("--classes"), help="K equiprobable classes")
    classes.add_argument("--class-probs", type=_probabilities, help="class probabilities p1,p2,... summing to 1")
    b.add_argument("--quantile", type=_float_in("--quantile", 0, 1, True, True), required=True,
                   help="target probability Q in (0, 1) (0.25 in Tables 1-2)")
    b.add_argument("--lipschitz", type=_float_in("--lipschitz", 0, math.inf, True, True), default=None,
                   help="Lipschitz constant L of g: report the image-space radius eta = L t (else latent)")
    b.add_argument("--delta", type=_float_in("--delta", 0, 1, False, True), default=0.0,
                   help="failure probability of a probabilistic modulus, added to Q (default 0)")
    sub.add_parser("experiment", add_help=False,
                   help="run a Table 1-2 pipeline: python -m advbound experiment --dataset {mnist,svhn,cifar10} ...")
    return parser


def bound_command(args: argparse.Namespace) -> dict:
    """Theorem 1 inverted: eta = omega(t*) with t* the smallest latent radius where eq. (2) >= Q + delta."""
    try:
        probs = class_probabilities(args.class_probs, args.classes)
    except ValueError as exc:
        arg = "--class-probs" if args.class_probs is not None else "--classes"
        raise SystemExit(f"advbound: error: argument {arg}: {exc}") from None
    if args.quantile + args.delta >= 1.0:
        raise SystemExit(f"advbound: error: argument --delta: --quantile + --delta must be < 1; "
                         f"got {args.quantile:g} + {args.delta:g}")
    modulus = IdentityModulus() if args.lipschitz is None else LipschitzModulus(args.lipschitz)
    t_star = latent_radius_quantile(args.quantile + args.delta, probs)
    eta = float(modulus(t_star)) if math.isfinite(t_star) else math.inf
    norm = expected_latent_norm(args.latent_dim)
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["experiment"]:  # heavy imports (torch, torchvision) only for this subcommand
        from .experiments import main as experiment_main
        return experiment_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "bound":
        result = bound_command(args)
        # JSON has no infinity: an uncertified radius is reported as null
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
