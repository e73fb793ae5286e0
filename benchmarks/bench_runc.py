"""Benchmark: r_unc near its minimum (issue 21), and r_Z against its penalty reference.

**r_unc.**  Per sample, the L2 norm of the closest verified adversarial point of each attack, against the
per-sample best of all of them (any valid point is an upper estimate of ``r_unc``, so the best-of is the
smallest known value).  Run side by side in one process, on the same batch:

* :func:`advbound.attacks.deepfool` with the pipeline's ci settings (candidates 4, overshoot 0.02, 50 steps),
  without and with ``refine`` (the r_unc of the book before issue 21);
* :func:`advbound.attacks.unconstrained_attack` (``candidates=4`` like the pipeline) at its defaults and at
  other step budgets (the quality-against-steps curve in the JSON); on a float64 batch with the pipeline's
  float32 working precision (``working_dtype``: search on a float32 copy, last steps and verification in
  float64), and at two budgets without it;
* foolbox 3.3.4's DDN (Rony et al., CVPR 2019) and FMN-L2 (Pintor et al., NeurIPS 2021), 1000 steps each,
  bounds (-1, 2): the comparison is unboxed like the pipeline's r_unc (no pixel gets near those bounds).  On
  a float64 batch DDN also runs on a float32 copy of the model and batch (its points verified in float64),
  so that the time of our float32 search can be read against a float32 DDN as well (``time_vs_ddn_float32``);
* APGD has no minimum-norm variant in foolbox 3.3.4, torchattacks 3.5.1, ART 1.20 or adv-lib 0.2.8 (only
  fixed-epsilon APGD; AttackBench wraps it in a search over epsilon, which is not a library attack): not run.

Models:

* ``robust-cnn``: a small CNN adversarially trained on real MNIST (the ci split: 8000 training images of the
  official test set, ``advbound.data.load_dataset('mnist', 'ci')``) with L2 PGD (eps 1.5, step 0.5, 7 steps;
  Madry et al.), 15 epochs of Adam.  Its weights are committed (``benchmarks/robust_cnn_mnist.pt``, checked
  against :data:`ROBUST_SHA256`) and loaded with ``weights_only=True``; ``--retrain`` trains them again
  (about 6 CPU-minutes on one core).  Attacked on the first ``--n`` correctly classified held-out images
  of the ci split, in float32 (the dtype it was trained in and the peers' own);
* ``2-layer-lenet`` / ``resnet-18``: the committed MNIST ci networks of the MNIST chapter
  (``book/artifacts/mnist-ci-seed0``), attacked where the pipeline attacks them, at ``g(z)`` for the
  chapter's latent samples (seed 303), in float64 (the pipeline's dtype);
* ``--artifacts DIR --classifier KEY``: any committed chapter's classifier (its manifest names the data set
  and profile), e.g. the Fashion-MNIST chapter's adversarially trained one, also at ``g(z)`` in float64.

**r_Z** (``--rz``): on the committed MNIST ci networks, :func:`advbound.attacks.latent_deepfool` (the book's
r_Z) and :func:`advbound.attacks.latent_boundary_search` started from it, against the independent penalty
reference of ``benchmarks/bench_rin.py`` (:func:`advbound.attacks.latent_penalty_attack` with
``distance="latent"``, 7 rounds x 300 Adam steps from ``r = 0``, in float32, re-verified in float64), on the
first ``--rz-n`` latent samples; per-sample ratios to the reference.  Also the seconds per sample of both new
searches (float64, one thread), for the decision between re-running them in the chapters and committing
their points.

Output: ``book/results/bench_runc[-quick].json`` (settings, machine, per model the rows, the curve and the
per-sample norms) and ``.csv`` (the rows).  Timings come from a shared machine: compare them only within a
model (same batch, same process).
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advbound.attacks import (
    deepfool,
    latent_boundary_search,
    latent_deepfool,
    unconstrained_attack,
)
from advbound.attacks.unconstrained import EXPLORE, FINALISTS, POLISH, STEPS, TARGETS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attacks import machine_info  # noqa: E402
from bench_rin import (  # noqa: E402
    latent_samples,
    load_networks,
    penalty_references,
    quantile,
    summarise,
    timed,
    verified_distances,
)

#: the pipeline's DeepFool settings in the ci profile
ATTACK = {"candidates": 4, "overshoot": 0.02, "max_steps": 50}
#: the committed robust CNN and the sha256 of its file
ROBUST_FILE = Path(__file__).resolve().parent / "robust_cnn_mnist.pt"
ROBUST_SHA256 = "9b4dcfb4bda09b77cf120d23bfa88c869342cd023092f771805723f36468dac1"
#: its training recipe (advbound.training.train_classifier with an L2 PGD adversary)
ROBUST_RECIPE = {"epochs": 15, "batch_size": 128, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "seed": 0,
                 "pgd": {"eps": 1.5, "step_size": 0.5, "steps": 7, "norm": "l2"}}
#: (targets, explore, steps, finalists, float32 search) budgets of unconstrained_attack for the
#: quality-against-steps curve, the default (the pipeline's) first; the float32 search (``working_dtype``) only
#: on float64 batches; ``polish`` at its default throughout
CURVE = [(TARGETS, EXPLORE, STEPS, FINALISTS, True), (0, 0, 20, 1, True), (2, 10, 30, 1, True),
         (3, 15, 40, 2, True), (TARGETS, EXPLORE, STEPS, 1, True), (4, 30, 100, 3, True),
         (TARGETS, EXPLORE, STEPS, FINALISTS, False), (2, 10, 30, 1, False)]


# --------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------

def robust_cnn() -> nn.Module:
    """Two 5x5 conv + max-pool layers (16, 32 channels) and two dense layers (100 hidden units), for 28x28."""
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_robust_cnn(path: Path) -> dict[str, Any]:
    """Train :func:`robust_cnn` by L2 PGD adversarial training on the MNIST ci split and save its weights."""
    from advbound.data import load_dataset
    from advbound.training import PGDConfig, error_rate, train_classifier

    train, test = load_dataset("mnist", "ci")
    torch.manual_seed(ROBUST_RECIPE["seed"])
    model = robust_cnn()
    t0 = time.perf_counter()
    history = train_classifier(model, train, epochs=ROBUST_RECIPE["epochs"], batch_size=ROBUST_RECIPE["batch_size"],
                               lr=ROBUST_RECIPE["lr"], optimizer=ROBUST_RECIPE["optimizer"],
                               weight_decay=ROBUST_RECIPE["weight_decay"], seed=ROBUST_RECIPE["seed"],
                               adversarial=PGDConfig(**ROBUST_RECIPE["pgd"]), device="cpu", progress=False)
    seconds = time.perf_counter() - t0
    torch.save(model.state_dict(), path)
    info = {"seconds": seconds, "history": history, "held_out_accuracy": 1 - error_rate(model, test),
            "sha256": sha256(path)}
    print(f"trained the robust CNN in {seconds:.0f} s: held-out accuracy {info['held_out_accuracy']:.4f}, "
          f"sha256 {info['sha256']}", flush=True)
    return info


def load_robust_cnn(retrain: bool) -> tuple[nn.Module, dict[str, Any]]:
    info: dict[str, Any] = {"file": str(ROBUST_FILE.relative_to(ROOT)), "recipe": ROBUST_RECIPE}
    if retrain or not ROBUST_FILE.exists():
        info["training"] = train_robust_cnn(ROBUST_FILE)
    elif sha256(ROBUST_FILE) != ROBUST_SHA256:
        raise SystemExit(f"{ROBUST_FILE} does not match its sha256 {ROBUST_SHA256}; run with --retrain")
    model = robust_cnn()
    model.load_state_dict(torch.load(ROBUST_FILE, weights_only=True))
    return model.eval().requires_grad_(False), info


def robust_inputs(model: nn.Module, n: int, dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
    """The first ``n`` correctly classified held-out images of the MNIST ci split, and the accuracy on all."""
    from advbound.data import load_dataset

    _, test = load_dataset("mnist", "ci")
    x, labels = test.floats().to(dtype), test.labels
    with torch.no_grad():
        pred = model.to(dtype)(x).argmax(1)
    right = pred == labels
    return x[right][:n], {"held_out_images": len(test), "held_out_accuracy": float(right.double().mean())}


def artifact_networks(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The generator and classifiers of any committed chapter folder (data set and profile from its manifest)."""
    if folder.resolve() == (ROOT / "book" / "artifacts" / "mnist-ci-seed0").resolve():
        return load_networks(folder, dtype)
    from advbound.artifacts import load_networks as load_artifacts
    from advbound.artifacts import read_manifest
    from advbound.experiments import experiment_config

    manifest = read_manifest(folder)
    nets = load_artifacts(folder, experiment_config(manifest["dataset"], manifest["profile"]), manifest["seed"],
                          dtype=dtype)
    return nets.generator, dict(nets.classifiers)


# --------------------------------------------------------------------------------------------------
# r_unc
# --------------------------------------------------------------------------------------------------

def foolbox_attack(name: str, steps: int) -> Callable[[nn.Module, Tensor], Tensor]:
    def run(model: nn.Module, x: Tensor) -> Tensor:
        import foolbox as fb
        with torch.no_grad():
            labels = model(x).argmax(1)
        fmodel = fb.PyTorchModel(model, bounds=(-1.0, 2.0), device=x.device)
        attack = fb.attacks.DDNAttack(steps=steps) if name == "ddn" else fb.attacks.L2FMNAttack(steps=steps)
        raw, _, _ = attack(fmodel, x, fb.criteria.Misclassification(labels), epsilons=None)
        return raw
    return run


def norms_of(model: nn.Module, x: Tensor, x_adv: Tensor) -> np.ndarray:
    """Verified L2 norms (``inf`` where the label did not change), re-evaluated on the model."""
    with torch.no_grad():
        ok = (model(x_adv).argmax(1) != model(x).argmax(1)) & torch.isfinite(x_adv.flatten(1)).all(1)
        dist = (x_adv - x).flatten(1).norm(dim=1)
    return torch.where(ok, dist, torch.full_like(dist, math.inf)).cpu().numpy()


def ours_name(targets: int, explore: int, steps: int, finalists: int = FINALISTS, float32: bool = False) -> str:
    return (f"unconstrained_attack (targets {targets}, explore {explore}, steps {steps}, finalists {finalists}"
            f"{', float32 search' if float32 else ''})")


def curve_of(x: Tensor, args: argparse.Namespace) -> list[tuple[int, int, int, int, bool]]:
    """The budgets run on ``x``: the float32 search only on a float64 batch (elsewhere it is the plain one)."""
    curve = CURVE if not args.no_curve else CURVE[:1]
    if x.dtype == torch.float64:
        return curve
    return list(dict.fromkeys((t, e, s, f, False) for t, e, s, f, _ in curve))


def bench_runc(model: nn.Module, x: Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """Every attack on the batch ``x``; rows with the per-sample ratios to the best-of."""
    dev = x.device
    methods: dict[str, Callable[[], Tensor]] = {
        "deepfool": lambda: deepfool(model, x, **ATTACK).x_adv,
        "deepfool + refine": lambda: deepfool(model, x, **ATTACK, refine=True).x_adv,
    }
    curve = curve_of(x, args)
    for targets, explore, steps, finalists, f32 in curve:
        methods[ours_name(targets, explore, steps, finalists, f32)] = (
            lambda t=targets, e=explore, s=steps, f=finalists, w=torch.float32 if f32 else None: unconstrained_attack(
                model, x, candidates=ATTACK["candidates"], targets=t, explore=e, steps=s, finalists=f,
                working_dtype=w).x_adv)
    methods[f"DDN, {args.ddn_steps} steps (foolbox)"] = lambda: foolbox_attack("ddn", args.ddn_steps)(model, x)
    ddn32 = f"DDN, {args.ddn_steps} steps (foolbox), float32 copy"
    if x.dtype == torch.float64:
        model32 = copy.deepcopy(model).float()
        methods[ddn32] = lambda: foolbox_attack("ddn", args.ddn_steps)(model32, x.float()).to(x.dtype)
    methods[f"FMN-L2, {args.fmn_steps} steps (foolbox)"] = lambda: foolbox_attack("fmn", args.fmn_steps)(model, x)
    deepfool(model, x[:2], **ATTACK, refine=True)       # warm-up (first calls carry one-off costs)
    norms: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, fn in methods.items():
        x_adv, sec = timed(fn, dev)
        norms[name], seconds[name] = norms_of(model, x, x_adv), sec
        print(f"  {name:56} {sec:8.1f} s  median L2 {quantile(norms[name], 0.5):.4f}", flush=True)
    best = np.min(list(norms.values()), axis=0)
    ddn = seconds[f"DDN, {args.ddn_steps} steps (foolbox)"]
    rows = []
    for name, d in norms.items():
        ratio = d / best
        rows.append({"method": name, "seconds": seconds[name], "time_vs_ddn": seconds[name] / ddn,
                     **({"time_vs_ddn_float32": seconds[name] / seconds[ddn32]} if ddn32 in seconds else {}),
                     "success_rate": float(np.isfinite(d).mean()), "median_ratio": quantile(ratio, 0.5),
                     "p90_ratio": quantile(ratio, 0.9), "max_ratio": float(ratio.max()),
                     "share_above_1.05": float((ratio > 1.05).mean()), "median_l2": quantile(d, 0.5),
                     "median_l2_best_of": quantile(best, 0.5)})
    curve = [{"targets": t, "explore": e, "steps": s, "finalists": f, "float32_search": f32,
              "boundary_steps_per_sample": (t + 1) * e + f * max(s - POLISH, 0) + min(POLISH, s),
              **{k: v for k, v in next(r for r in rows if r["method"] == ours_name(t, e, s, f, f32)).items()
                 if k != "method"}}
             for t, e, s, f, f32 in curve]
    return {"n": int(x.shape[0]), "dtype": str(x.dtype).replace("torch.", ""), "rows": rows, "curve": curve,
            "per_sample": {k: v.tolist() for k, v in norms.items()}}


# --------------------------------------------------------------------------------------------------
# r_Z
# --------------------------------------------------------------------------------------------------

def bench_rz(classifier: nn.Module, generator: nn.Module, z: Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """latent_deepfool and latent_boundary_search against the penalty reference in z; seconds per sample."""
    dev = z.device
    latent_deepfool(classifier, generator, z[:2], **ATTACK)       # warm-up
    lat, sec_lat = timed(lambda: latent_deepfool(classifier, generator, z, **ATTACK), dev)
    res, sec_search = timed(lambda: latent_boundary_search(classifier, generator, z, latent=lat,
                                                           candidates=ATTACK["candidates"], steps=args.rz_steps), dev)
    est = {"latent_deepfool": verified_distances(classifier, generator, z, lat.z_adv, "latent"),
           f"latent_boundary_search ({args.rz_steps} steps)": verified_distances(classifier, generator, z, res.z_adv,
                                                                                 "latent")}
    secs = {"latent_deepfool": sec_lat, f"latent_boundary_search ({args.rz_steps} steps)": sec_lat + sec_search}
    refs = penalty_references(classifier, generator, z, "latent", args.ref_dtype, args.restarts, 7, 300,
                              seed=args.seed + 1, second_lr=False)
    best_ref = np.min([d for d, _ in refs.values()], axis=0)
    known = np.min([best_ref, *est.values()], axis=0)
    rows = [{"method": k, "seconds": secs[k], "seconds_per_sample": secs[k] / z.shape[0],
             **summarise(v, best_ref, known)} for k, v in est.items()]
    rows += [{"method": k, "seconds": s, "seconds_per_sample": s / z.shape[0], "reference": True,
              **summarise(d, best_ref, known)} for k, (d, s) in refs.items()]
    for r in rows:
        print(f"  r_Z {r['method']:44} {r['seconds']:8.1f} s  median {r['median_ratio']:.4f} p90 {r['p90_ratio']:.4f}",
              flush=True)
    return {"n": int(z.shape[0]), "rows": rows, "search_seconds_per_sample": sec_search / z.shape[0],
            "per_sample": {**{k: v.tolist() for k, v in est.items()},
                           **{f"reference {k}": d.tolist() for k, (d, _) in refs.items()}}}


def cost_per_sample(classifier: nn.Module, generator: nn.Module, z: Tensor) -> dict[str, float]:
    """Seconds per sample (this dtype and thread count) of unconstrained_attack at g(z), with DeepFool's."""
    with torch.no_grad():
        x = generator(z)
    _, sec_df = timed(lambda: deepfool(classifier, x, **ATTACK), z.device)
    _, sec = timed(lambda: unconstrained_attack(classifier, x, candidates=ATTACK["candidates"]), z.device)
    return {"deepfool": sec_df / z.shape[0], "unconstrained_attack": sec / z.shape[0]}


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

def print_table(model: str, rows: list[dict]) -> None:
    print(f"\n{model}")
    head = (f"{'method':72} {'median ratio':>12} {'p90 ratio':>9} {'success':>7} {'median L2':>9} {'seconds':>8} "
            f"{'/DDN':>6}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['method']:72} {r['median_ratio']:12.4f} {r['p90_ratio']:9.4f} {r['success_rate']:7.3f} "
              f"{r['median_l2']:9.4f} {r['seconds']:8.1f} {r['time_vs_ddn']:6.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50 robust-CNN images, 50 latent samples, LeNet only")
    ap.add_argument("--n", type=int, default=None, help="robust-CNN images (default 200; 50 with --quick)")
    ap.add_argument("--n-standard", type=int, default=None, help="g(z) samples of the standard networks (100; 50)")
    ap.add_argument("--models", default=None,
                    help="comma list of robust-cnn, 2-layer-lenet, resnet-18 (default: all; quick: robust-cnn, "
                         "2-layer-lenet); empty for none")
    ap.add_argument("--artifacts", default=None, help="a committed chapter folder to attack (with --classifier)")
    ap.add_argument("--classifier", default=None, help="the classifier key of --artifacts")
    ap.add_argument("--retrain", action="store_true", help="train the robust CNN again (and overwrite its file)")
    ap.add_argument("--ddn-steps", type=int, default=1000)
    ap.add_argument("--fmn-steps", type=int, default=1000)
    ap.add_argument("--no-curve", action="store_true", help="only the default budget of unconstrained_attack")
    ap.add_argument("--rz", action="store_true", help="also the r_Z search against the penalty reference")
    ap.add_argument("--rz-n", type=int, default=100, help="latent samples of the r_Z comparison")
    ap.add_argument("--rz-steps", type=int, default=30, help="steps of latent_boundary_search")
    ap.add_argument("--rz-classifiers", default="2-layer-lenet,resnet-18")
    ap.add_argument("--restarts", type=int, default=0, help="random starts of the r_Z penalty reference")
    ap.add_argument("--ref-dtype", default="float32", help="dtype of the penalty reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "book" / "results"))
    ap.add_argument("--stem", default=None, help="output file name without suffix (default bench_runc[-quick])")
    args = ap.parse_args(argv)
    args.n = args.n or (50 if args.quick else 200)
    args.n_standard = args.n_standard or (50 if args.quick else 100)
    models = [m for m in (args.models if args.models is not None else
                          ("robust-cnn,2-layer-lenet" if args.quick else "robust-cnn,2-layer-lenet,resnet-18"))
              .split(",") if m]
    args.ref_dtype = getattr(torch, args.ref_dtype)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    info = machine_info(device)
    print("machine:", json.dumps(info), flush=True)
    results: dict[str, Any] = {}
    if "robust-cnn" in models:
        model, robust_info = load_robust_cnn(args.retrain)
        x, data_info = robust_inputs(model, args.n, torch.float32)
        print(f"robust-cnn: {x.shape[0]} images, held-out accuracy {data_info['held_out_accuracy']:.4f}", flush=True)
        results["robust-cnn"] = {**bench_runc(model, x, args), "model": {**robust_info, **data_info}}
    standard = [m for m in models if m != "robust-cnn"]
    if standard or args.rz:
        generator, classifiers = load_networks(ROOT / "book" / "artifacts" / "mnist-ci-seed0", torch.float64)
        z = latent_samples(max(args.n_standard, args.rz_n if args.rz else 0), torch.float64)
        with torch.no_grad():
            x_std = generator(z[:args.n_standard])
        for key in standard:
            print(f"{key} (MNIST ci, at g(z)): {args.n_standard} samples", flush=True)
            results[key] = {**bench_runc(classifiers[key], x_std, args),
                            "model": {"artifacts": "book/artifacts/mnist-ci-seed0", "inputs": "g(z), seed 303"}}
        if args.rz:
            for key in args.rz_classifiers.split(","):
                print(f"r_Z {key}: {args.rz_n} latent samples", flush=True)
                zr = z[:args.rz_n]
                results.setdefault(key, {})["r_Z"] = bench_rz(classifiers[key], generator, zr, args)
                results[key]["cost_per_sample_float64"] = {
                    **cost_per_sample(classifiers[key], generator, zr),
                    "latent_boundary_search": results[key]["r_Z"]["search_seconds_per_sample"]}
                print(f"  seconds per sample: {results[key]['cost_per_sample_float64']}", flush=True)
    if args.artifacts:
        generator, classifiers = artifact_networks(Path(args.artifacts), torch.float64)
        with torch.no_grad():
            x_art = generator(latent_samples(args.n_standard, torch.float64))
        key = f"{Path(args.artifacts).name}/{args.classifier}"
        results[key] = {**bench_runc(classifiers[args.classifier], x_art, args),
                        "model": {"artifacts": args.artifacts, "inputs": "g(z), seed 303"}}
    for key, res in results.items():
        if "rows" in res:
            print_table(f"{key} ({res['n']} samples, {res['dtype']})", res["rows"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or ("bench_runc-quick" if args.quick else "bench_runc")
    settings = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in vars(args).items()
                if k != "out"}
    payload = {"command": " ".join([Path(sys.executable).name, "benchmarks/bench_runc.py"] + sys.argv[1:]),
               "machine": info, "settings": {**settings, "attack": ATTACK, "curve": CURVE}, "models": results}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    keys_csv = ["model", "quantity", "method", "seconds", "time_vs_ddn", "time_vs_ddn_float32",
                "seconds_per_sample", "success_rate", "median_ratio", "p90_ratio", "max_ratio", "share_above_1.05",
                "median_l2", "median_l2_best_of"]
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys_csv, extrasaction="ignore")
        w.writeheader()
        for key, res in results.items():
            w.writerows({"model": key, "quantity": "r_unc", **r} for r in res.get("rows", []))
            w.writerows({"model": key, "quantity": "r_Z", **r} for r in res.get("r_Z", {}).get("rows", []))
    print(f"wrote {out / stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
