"""Benchmark: how close are the r_in, r_Z and r_unc estimates to their minimum, on the MNIST ci networks?

Every robustness value in the tables is the distance of an adversarial point that an attack found, an upper
estimate of the true minimum.  This script measures, per sample, how far above the best point of slower,
stronger searches the pipeline's estimates lie:

* ``r_in``: :func:`advbound.attacks.in_distribution_attack` as the pipeline calls it (with the latent
  DeepFool result passed in), in its default form (the boundary search in ``z``) and with
  ``boundary_steps=0`` (the pulled-back DeepFool search that preceded it, timed with the Gram matrix
  computed as it was then); references: :func:`advbound.attacks.latent_penalty_attack` (a Carlini-Wagner
  style penalty search in ``z`` with a search over the penalty weight), from ``r = 0`` and from random starts;
* ``r_Z``: :func:`advbound.attacks.latent_deepfool`; references: the same penalty search on ``||r||``;
* ``r_unc``: :func:`advbound.attacks.deepfool` with the pipeline's settings, without and with ``refine``;
  reference: foolbox 3.3.4's DDN (Rony et al. 2019) with 1000 steps, unboxed like the pipeline's attack.

Per sample the ratio estimate / best reference is reported (median, 90th percentile, share above 1.1), with
the 25% quantile (the tables' statistic) of each estimate; the best *known* point also counts the
estimates themselves.  ``--gram`` adds the timing of :func:`advbound.attacks.generator_gram`
(``vmap(jacfwd)``) against the forward-AD pass on the repeated batch it replaced.

The networks are the committed ci networks of the MNIST chapter (``book/artifacts/mnist-ci-seed0``).
Run ``python benchmarks/bench_rin.py --quick`` (CPU, a few minutes) or without ``--quick`` (all 100 samples
and both classifiers, more restarts; meant for a GPU).  Results go to ``book/results/bench_rin[-quick].json``
and ``.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd import forward_ad as fwad

import advbound.attacks.jacobian as jacobian
from advbound.attacks import deepfool, in_distribution_attack, latent_deepfool, latent_penalty_attack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attacks import machine_info  # noqa: E402  (the same machine description as the attack benchmark)

#: the pipeline's DeepFool settings in the ci profile
ATTACK = {"candidates": 4, "overshoot": 0.02, "max_steps": 50, "refine": False}
#: seed of the pipeline's attacked latent samples (run seed 0 + 303)
LATENT_SEED = 303


# --------------------------------------------------------------------------------------------------
# Networks and samples
# --------------------------------------------------------------------------------------------------

def load_networks(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The committed MNIST ci networks (seed 0) that the MNIST chapter analyses, verified against their manifest."""
    from advbound.artifacts import load_networks as load_artifacts
    from advbound.experiments import experiment_config

    nets = load_artifacts(folder, experiment_config("mnist", "ci"), 0, dtype=dtype)
    return nets.generator, dict(nets.classifiers)


def latent_samples(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The first ``n`` of the latent samples the ci pipeline attacks (the same bits on every CPU)."""
    from advbound.models import LATENT_DIM
    from advbound.portable import seeded_normal

    return seeded_normal(n, LATENT_DIM, seed=LATENT_SEED, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# The Gram matrix as computed before vmap(jacfwd)
# --------------------------------------------------------------------------------------------------

def gram_repeated_batch(generator: Callable[[Tensor], Tensor], z: Tensor, *, max_chunk_elems: int = 2 ** 24) -> Tensor:
    """``J^T J`` by one forward-AD pass on the batch repeated ``d`` times with the unit tangents."""
    n, d = z.shape
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    with torch.no_grad():
        m = generator(z[:1]).numel()
    chunk = max(1, max_chunk_elems // max(1, m * d))
    grams = []
    for start in range(0, n, chunk):
        zc = z[start:start + chunk].detach()
        with torch.no_grad(), fwad.dual_level(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            dual = fwad.make_dual(zc.repeat_interleave(d, dim=0), eye.repeat(zc.shape[0], 1))
            jt = fwad.unpack_dual(generator(dual)).tangent.reshape(zc.shape[0], d, -1)
        grams.append(jt @ jt.transpose(1, 2))
    return torch.cat(grams)


@contextlib.contextmanager
def old_gram() -> Iterator[None]:
    """Run the pulled-back DeepFool search with the Gram matrix computed as before."""
    saved = jacobian.generator_gram
    jacobian.generator_gram = gram_repeated_batch
    try:
        yield
    finally:
        jacobian.generator_gram = saved


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile where failures are ``+inf`` (then it may be inf), as in the tables."""
    v = np.sort(np.asarray(values, dtype=float))
    pos = q * (v.size - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    if not math.isfinite(v[hi]):
        return math.inf
    return float(v[lo] + (pos - lo) * (v[hi] - v[lo]))


def verified_distances(classifier: nn.Module, generator: nn.Module, z: Tensor, z_adv: Tensor, kind: str) -> np.ndarray:
    """Distances of latent points re-verified in ``z``'s dtype: ``||g(z_adv) - g(z)||`` (``image``) or
    ``||z_adv - z||`` (``latent``), ``inf`` where the label did not change."""
    z_adv = z_adv.to(z)
    with torch.no_grad():
        x0, xa = generator(z), generator(z_adv)
        ok = classifier(xa).argmax(1) != classifier(x0).argmax(1)
        dist = (xa - x0).flatten(1).norm(dim=1) if kind == "image" else (z_adv - z).norm(dim=1)
    return torch.where(ok, dist, torch.full_like(dist, math.inf)).cpu().numpy()


def image_distances(model: nn.Module, x: Tensor, x_adv: Tensor) -> np.ndarray:
    with torch.no_grad():
        ok = model(x_adv).argmax(1) != model(x).argmax(1)
        dist = (x_adv - x).flatten(1).norm(dim=1)
    return torch.where(ok, dist, torch.full_like(dist, math.inf)).cpu().numpy()


def summarise(est: np.ndarray, ref: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """Per-sample ratios of an estimate to the best reference (samples the references solved) and to the
    best known point, with the 25% quantiles."""
    solved = np.isfinite(ref)
    ratio = est[solved] / ref[solved]
    to_known = est[np.isfinite(known)] / known[np.isfinite(known)]
    return {"success_rate": float(np.isfinite(est).mean()), "samples_compared": int(solved.sum()),
            "median_ratio": quantile(ratio, 0.5), "p90_ratio": quantile(ratio, 0.9),
            "share_above_1.1": float((ratio > 1.1).mean()), "share_below_1": float((ratio < 1).mean()),
            "median_ratio_to_best_known": quantile(to_known, 0.5), "p90_ratio_to_best_known": quantile(to_known, 0.9),
            "q25": quantile(est, 0.25), "q25_best_reference": quantile(ref, 0.25),
            "q25_best_known": quantile(known, 0.25)}


def penalty_references(classifier: nn.Module, generator: nn.Module, z: Tensor, distance: str, ref_dtype: torch.dtype,
                       restarts: int, rounds: int, steps: int, seed: int,
                       second_lr: bool = True) -> dict[str, tuple[np.ndarray, float]]:
    """The penalty search from ``r = 0`` (at two learning rates with ``second_lr``) and from ``restarts``
    random starts, run in ``ref_dtype`` and re-verified in ``z``'s dtype; per search the distances and seconds."""
    clf, gen = (copy.deepcopy(m_).to(ref_dtype) for m_ in (classifier, generator))
    zr = z.to(ref_dtype)
    gen_rs = torch.Generator().manual_seed(seed)
    runs: dict[str, dict[str, Any]] = {"penalty lr=0.01": {"lr": 0.01}}
    if second_lr:
        runs["penalty lr=0.003"] = {"lr": 0.003}
    for k in range(restarts):
        init = 0.02 * torch.randn(z.shape, generator=gen_rs).to(zr)
        runs[f"penalty lr=0.01 random start {k + 1}"] = {"lr": 0.01, "init": init}
    out = {}
    for name, kw in runs.items():
        res, sec = timed(lambda kw=kw: latent_penalty_attack(clf, gen, zr, distance=distance, rounds=rounds,
                                                             steps=steps, **kw), z.device)
        out[name] = (verified_distances(classifier, generator, z, res.z_adv, distance), sec)
    return out


def run_ddn(model: nn.Module, x: Tensor, steps: int) -> Tensor:
    import foolbox as fb
    labels = model(x).argmax(1)
    # an unboxed search, like the pipeline's DeepFool: the box is far from every point the attack visits
    fmodel = fb.PyTorchModel(model, bounds=(-1.0, 2.0), device=x.device)
    raw, _, _ = fb.attacks.DDNAttack(steps=steps)(fmodel, x, fb.criteria.Misclassification(labels), epsilons=None)
    return raw


def bench_classifier(classifier: nn.Module, generator: nn.Module, z: Tensor, args: argparse.Namespace) -> dict:
    """Every estimate and reference for one classifier; returns per-sample distances, seconds and summaries."""
    dev = z.device
    times: dict[str, list[float]] = {"latent_deepfool": [], "in_distribution (boundary search)": [],
                                      "in_distribution (pulled-back DeepFool, before)": []}
    est: dict[str, np.ndarray] = {}
    # warm-up on two samples (first calls of forward-mode AD and vmap carry one-off costs)
    warm = latent_deepfool(classifier, generator, z[:2], **ATTACK)
    in_distribution_attack(classifier, generator, z[:2], latent=warm, **ATTACK)
    with old_gram():
        in_distribution_attack(classifier, generator, z[:2], latent=warm, boundary_steps=0, **ATTACK)
    for rep in range(args.repeats):
        lat, sec = timed(lambda: latent_deepfool(classifier, generator, z, **ATTACK), dev)
        times["latent_deepfool"].append(sec)

        def new(lat: Any = lat) -> Any:
            return in_distribution_attack(classifier, generator, z, latent=lat, **ATTACK)

        def before(lat: Any = lat) -> Any:
            with old_gram():
                return in_distribution_attack(classifier, generator, z, latent=lat, boundary_steps=0, **ATTACK)

        order = [("in_distribution (boundary search)", new), ("in_distribution (pulled-back DeepFool, before)", before)]
        for name, fn in (order if rep % 2 == 0 else order[::-1]):
            res, sec = timed(fn, dev)
            times[name].append(sec)
            est[name] = verified_distances(classifier, generator, z, res.z_adv, "image")
        est["latent_deepfool"] = verified_distances(classifier, generator, z, lat.z_adv, "latent")
        est["latent_deepfool (image distance)"] = verified_distances(classifier, generator, z, lat.z_adv, "image")
    # the quick run: one learning rate, and r_Z (close to its references in every run so far) without restarts
    print("  attacks timed: " + ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in times.items()), flush=True)
    refs = {kind: penalty_references(classifier, generator, z, kind, args.ref_dtype,
                                     0 if kind == "latent" and args.quick else args.restarts, args.rounds, args.steps,
                                     seed=args.seed + 1, second_lr=not args.quick)
            for kind in ("image", "latent")}
    print("  references: " + ", ".join(f"{kind} {name} {sec:.0f} s" for kind, runs in refs.items()
                                       for name, (_, sec) in runs.items()), flush=True)
    with torch.no_grad():
        x = generator(z)
    unc: dict[str, tuple[np.ndarray, float]] = {}
    for name, fn in (("deepfool", lambda: deepfool(classifier, x, **ATTACK).x_adv),
                     ("deepfool + refine", lambda: deepfool(classifier, x, **{**ATTACK, "refine": True}).x_adv),
                     (f"foolbox DDN, {args.ddn_steps} steps", lambda: run_ddn(classifier, x, args.ddn_steps))):
        x_adv, sec = timed(fn, dev)
        unc[name] = (image_distances(classifier, x, x_adv), sec)
    rows = []
    groups = {"r_in": (["in_distribution (boundary search)", "in_distribution (pulled-back DeepFool, before)",
                        "latent_deepfool (image distance)"], refs["image"]),
              "r_Z": (["latent_deepfool"], refs["latent"])}
    for quantity, (names, ref_runs) in groups.items():
        best_ref = np.min([d for d, _ in ref_runs.values()], axis=0)
        known = np.min([best_ref] + [est[n] for n in names], axis=0)
        for name in names:
            sec = statistics.median(times[name.split(" (image")[0]])
            rows.append({"quantity": quantity, "method": name, "seconds": sec, **summarise(est[name], best_ref, known)})
        for name, (dist, sec) in ref_runs.items():
            rows.append({"quantity": quantity, "method": name, "seconds": sec, "reference": True,
                         **summarise(dist, best_ref, known)})
    ddn = [k for k in unc if k.startswith("foolbox")][0]
    known = np.min([d for d, _ in unc.values()], axis=0)
    for name, (dist, sec) in unc.items():
        rows.append({"quantity": "r_unc", "method": name, "seconds": sec, "reference": name == ddn,
                     **summarise(dist, unc[ddn][0], known)})
    per_sample = {**{k: v.tolist() for k, v in est.items()},
                  **{f"r_in {k}": d.tolist() for k, (d, _) in refs["image"].items()},
                  **{f"r_Z {k}": d.tolist() for k, (d, _) in refs["latent"].items()},
                  **{f"r_unc {k}": d.tolist() for k, (d, _) in unc.items()}}
    return {"rows": rows, "all_seconds": times, "per_sample": per_sample}


def bench_gram(generator: nn.Module, n: int, repeats: int, device: torch.device) -> list[dict]:
    """Seconds of ``generator_gram`` (vmap(jacfwd)) and of the repeated-batch forward-AD pass, alternating."""
    rows = []
    for dtype in (torch.float32, torch.float64):
        gen = copy.deepcopy(generator).to(dtype)
        z = latent_samples(n, dtype).to(device)
        fns = {"vmap(jacfwd)": lambda gen=gen, z=z: jacobian.generator_gram(gen, z),
               "repeated batch": lambda gen=gen, z=z: gram_repeated_batch(gen, z)}
        ref = fns["repeated batch"]()
        diff = float((fns["vmap(jacfwd)"]() - ref).abs().max() / ref.abs().max())
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                times[name].append(timed(fn, device)[1])
        for name, t in times.items():
            rows.append({"dtype": str(dtype).replace("torch.", ""), "method": name, "n": n,
                         "seconds": statistics.median(t), "all_seconds": t, "max_relative_difference": diff})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CPU run: 2-layer LeNet, 50 samples, penalty searches in float32 at one learning rate, "
                         "one random start")
    ap.add_argument("--n", type=int, default=None, help="latent samples (default 100; 50 with --quick)")
    ap.add_argument("--classifiers", default=None, help="comma list of keys (default: all; 2-layer-lenet with --quick)")
    ap.add_argument("--restarts", type=int, default=None, help="random starts of the penalty search (1 quick, 3 full)")
    ap.add_argument("--rounds", type=int, default=7, help="penalty-weight rounds of each penalty search")
    ap.add_argument("--steps", type=int, default=300, help="Adam steps per round")
    ap.add_argument("--ddn-steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of the pipeline's attacks (median)")
    ap.add_argument("--gram", action="store_true", help="also time generator_gram against the repeated batch")
    ap.add_argument("--dtype", default="float64", help="dtype of the attacks under test (the pipeline's: float64)")
    ap.add_argument("--ref-dtype", default=None, help="dtype of the penalty searches (float32 quick, else --dtype)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared machine, more threads than free cores make timings "
                         "erratic)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--networks", default=str(ROOT / "book" / "artifacts" / "mnist-ci-seed0"),
                    help="folder of the committed MNIST ci networks")
    ap.add_argument("--out", default=str(ROOT / "book" / "results"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.n = args.n or (50 if args.quick else 100)
    args.restarts = args.restarts if args.restarts is not None else (1 if args.quick else 3)
    args.ref_dtype = getattr(torch, args.ref_dtype or ("float32" if args.quick else args.dtype))
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    info = machine_info(device)
    print("machine:", json.dumps(info), flush=True)
    generator, classifiers = load_networks(Path(args.networks), dtype)
    keys = (args.classifiers or ("2-layer-lenet" if args.quick else ",".join(classifiers))).split(",")
    generator = generator.to(device)
    z = latent_samples(args.n, dtype).to(device)
    results: dict[str, Any] = {}
    for key in keys:
        t0 = time.perf_counter()
        results[key] = bench_classifier(classifiers[key].to(device), generator, z, args)
        print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
        for r in results[key]["rows"]:
            print(f"  {r['quantity']:5} {r['method']:48} {r['seconds']:8.2f}s median {r['median_ratio']:.4f} "
                  f"p90 {r['p90_ratio']:.4f} >1.1 {r['share_above_1.1']:.2f} q25 {r['q25']:.4f}", flush=True)
    gram = bench_gram(generator, min(args.n, 50), 3, device) if args.gram else None
    for r in gram or []:
        print(f"  gram {r['dtype']} {r['method']:14} n={r['n']} {r['seconds']:.2f}s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_rin-quick" if args.quick else "bench_rin"
    settings = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in vars(args).items()
                if k not in ("out", "networks")}
    payload = {"command": " ".join([Path(sys.executable).name, "benchmarks/bench_rin.py"] + sys.argv[1:]),
               "machine": info, "settings": {**settings, "attack": ATTACK, "latent_seed": LATENT_SEED},
               "classifiers": results, "gram": gram}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    keys_csv = ["classifier", "quantity", "method", "seconds", "success_rate", "samples_compared", "median_ratio",
                "p90_ratio", "share_above_1.1", "share_below_1", "median_ratio_to_best_known",
                "p90_ratio_to_best_known", "q25", "q25_best_reference", "q25_best_known"]
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys_csv, extrasaction="ignore")
        w.writeheader()
        for key, res in results.items():
            w.writerows({"classifier": key, **r} for r in res["rows"])
    print(f"wrote {out / stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
