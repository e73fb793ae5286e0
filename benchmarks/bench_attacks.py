"""Benchmark: advbound's batched DeepFool against foolbox 3.3.4, torchattacks 3.5.1 and ART 1.20.x.

One process, one deterministic task (see benchmarks/README.md for the fairness notes):

* a small CNN and a CIFAR-stem ResNet-18 (``advbound.models.resnet18``) for 3x32x32 inputs in [0, 1],
  trained for a few Adam steps on a deterministic synthetic 10-class task (class = a smooth random
  template, plus noise), so that the decision boundaries are non-trivial;
* ``n`` fixed inputs (default 256) drawn from the same task with a fixed seed;
* every attack: L2 DeepFool, overshoot 0.02, 50 steps, inputs and iterates boxed to [0, 1]; candidates all
  10 classes and the top 3 (torchattacks has no candidate option: it always uses all classes);
* success is re-verified for every attack by evaluating the model on the returned points; L2 statistics
  are over all inputs with failures counted as +inf;
* seconds are the median of ``--repeats`` timed runs after one warm-up run on a few inputs; the attacks are
  run round-robin (repeat 1 of every attack, then repeat 2, ...) so that background load hits all alike.

Run ``python benchmarks/bench_attacks.py`` (the full run) or ``--quick`` (a smaller CPU run).  Results go to
``book/results/bench_attacks[-quick].json`` and ``.csv`` with the machine description.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import advbound
from advbound.attacks import deepfool
from advbound.models import resnet18

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 10
OVERSHOOT = 0.02
STEPS = 50


# --------------------------------------------------------------------------------------------------
# Task and models
# --------------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """Two conv layers + two linear layers (about 0.3 M parameters)."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SyntheticTask:
    """Deterministic 10-class images: a smooth random template per class, random contrast, smooth and white noise."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.randn(N_CLASSES, 3, 4, 4, generator=gen)
        self.templates = nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        y = torch.randint(0, N_CLASSES, (n,), generator=gen)
        contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=gen)
        smooth = nn.functional.interpolate(torch.randn(n, 3, 8, 8, generator=gen), size=32, mode="bilinear",
                                           align_corners=False)
        x = 0.5 + 0.15 * (contrast * self.templates[y] + 0.8 * smooth) + 0.03 * torch.randn(n, 3, 32, 32, generator=gen)
        return x.clamp(0, 1), y


def train(model: nn.Module, task: SyntheticTask, steps: int, seed: int, device: torch.device) -> float:
    """A few Adam steps (batch 64); returns the wall time.  Deterministic given the seed (on CPU)."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = task.sample(64, seed=10_000 + step)
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# Attacks under test: each is (model, x, labels, candidates) -> x_adv
# --------------------------------------------------------------------------------------------------

def attack_ours(refine: bool) -> Callable:
    def run(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, candidates: int) -> torch.Tensor:
        res = deepfool(model, x, candidates=None if candidates == N_CLASSES else candidates, overshoot=OVERSHOOT,
                       max_steps=STEPS, refine=refine, box=(0.0, 1.0))
        return res.x_adv
    return run


def attack_foolbox(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, candidates: int) -> torch.Tensor:
    import foolbox as fb
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
    attack = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=candidates, overshoot=OVERSHOOT)
    # epsilons=None: the minimisation attack's raw output, no epsilon projection
    raw, _, _ = attack(fmodel, x, fb.criteria.Misclassification(labels), epsilons=None)
    return raw


def attack_torchattacks(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, candidates: int
                        ) -> torch.Tensor | None:
    if candidates != N_CLASSES:
        return None  # torchattacks.DeepFool has no candidate option
    import torchattacks
    atk = torchattacks.DeepFool(model, steps=STEPS, overshoot=OVERSHOOT)
    return atk(x, labels)


def attack_art(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, candidates: int) -> torch.Tensor:
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=N_CLASSES, clip_values=(0.0, 1.0),
                            device_type="gpu" if x.is_cuda else "cpu")
    # batch_size = the whole set (ART's default of 1 would be a per-sample loop)
    atk = DeepFool(clf, max_iter=STEPS, epsilon=OVERSHOOT, nb_grads=candidates, batch_size=x.shape[0],
                   verbose=False)
    out = atk.generate(x.detach().cpu().numpy())
    return torch.from_numpy(out).to(x.device)


ATTACKS: dict[str, Callable] = {
    "foolbox": attack_foolbox,
    "torchattacks": attack_torchattacks,
    "art": attack_art,
    "advbound": attack_ours(refine=False),
    "advbound+refine": attack_ours(refine=True),
}
PEERS = ("foolbox", "torchattacks", "art")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def evaluate(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor) -> dict:
    with torch.no_grad():
        adv_pred = model(x_adv).argmax(dim=1)
    success = adv_pred != labels
    norms = (x_adv - x).flatten(1).norm(dim=1)
    norms = torch.where(success, norms, torch.full_like(norms, math.inf)).cpu().numpy().astype(float)
    return {"success_rate": float(success.float().mean()),
            "median_l2": float(np.quantile(norms, 0.5, method="lower")),
            "p25_l2": float(np.quantile(norms, 0.25, method="lower")),
            "mean_l2_success": float(norms[np.isfinite(norms)].mean()) if np.isfinite(norms).any() else math.inf}


def bench_block(names: list[str], model: nn.Module, x: torch.Tensor, labels: torch.Tensor, candidates: int,
                repeats: int, warmup_n: int, budget: float) -> list[dict]:
    """Time every attack ``repeats`` times, round-robin (so drifting background load hits all alike).

    An attack whose timed run exceeds ``budget`` seconds is not repeated (its row records how many runs
    were made); this keeps a CPU run within hours when one peer is very slow.
    """
    times: dict[str, list[float]] = {}
    outputs: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:  # warm-up on a few inputs; also tells which attacks support this setting
            if ATTACKS[name](model, x[:warmup_n], labels[:warmup_n], candidates) is not None:
                times[name] = []
        for _ in range(repeats):
            for name in times:
                if times[name] and max(times[name]) > budget:
                    continue
                _sync(x.device)
                t0 = time.perf_counter()
                outputs[name] = ATTACKS[name](model, x, labels, candidates)
                _sync(x.device)
                times[name].append(time.perf_counter() - t0)
    rows = []
    for name in names:
        if name not in times:
            print(f"  {name:16} cand={candidates}: not supported", flush=True)
            continue
        row = {"attack": name, "candidates": candidates, "seconds": statistics.median(times[name]),
               "all_seconds": times[name], "runs": len(times[name])}
        row.update(evaluate(model, x, outputs[name], labels))
        print(f"  {name:16} cand={candidates}: {row['seconds']:.2f}s success {row['success_rate']:.3f} "
              f"median {row['median_l2']:.4f} p25 {row['p25_l2']:.4f}", flush=True)
        rows.append(row)
    return rows


def measure_throughput(model: nn.Module, task: SyntheticTask, batch: int, repeats: int, seed: int,
                       device: torch.device) -> dict:
    """Images per second of our DeepFool (all classes, no refinement) on one batch, median of ``repeats``."""
    x, _ = task.sample(batch, seed=seed + 2)
    x = x.to(device)
    attack_ours(False)(model, x[:8], None, N_CLASSES)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        attack_ours(False)(model, x, None, N_CLASSES)
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"batch": batch, "seconds": sec, "all_seconds": times, "images_per_second": batch / sec}


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "advbound": advbound.__version__,
            "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for mod in ("foolbox", "torchattacks", "art"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as err:  # pragma: no cover - reported, not fatal
            info[mod] = f"unavailable: {err}"
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':9} {'cand':>4} {'attack':16} {'seconds':>9} {'runs':>4} {'ratio':>6} {'success':>8} "
            f"{'median L2':>10} {'p25 L2':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:9} {r['candidates']:>4} {r['attack']:16} {r['seconds']:9.2f} "
                     f"{r['runs']:>4} {r['ratio_to_fastest_peer']:6.2f} {r['success_rate']:8.3f} "
                     f"{r['median_l2']:10.4f} {r['p25_l2']:8.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller CPU run: ResNet-18 at width 16 and fewer training steps")
    ap.add_argument("--n", type=int, default=256, help="number of fixed inputs (default 256)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per attack, median reported (>= 3)")
    ap.add_argument("--models", default="cnn,resnet18", help="comma list from cnn,resnet18")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma list from " + ",".join(ATTACKS))
    ap.add_argument("--resnet-width", type=int, default=None, help="ResNet-18 base width (64 full, 16 quick)")
    ap.add_argument("--budget", type=float, default=math.inf,
                    help="seconds: an attack whose timed run takes longer is not repeated (default: no limit)")
    ap.add_argument("--throughput-batch", type=int, default=None,
                    help="also time our DeepFool (all classes) on ResNet-18 at this batch size and report images "
                         "per second (default: 1024 on CUDA, off on CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "book" / "results"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    width = args.resnet_width or (16 if args.quick else 64)
    train_steps = {"cnn": 150 if args.quick else 300, "resnet18": 40 if args.quick else 300}
    task = SyntheticTask(seed=args.seed)
    x, y_true = task.sample(args.n, seed=args.seed + 1)
    x = x.to(device)
    info = machine_info(device)
    print("machine:", json.dumps(info))
    rows: list[dict] = []
    models_meta = {}
    for model_name in args.models.split(","):
        torch.manual_seed(args.seed)
        model = SmallCNN() if model_name == "cnn" else resnet18(width=width)
        model = model.to(device)
        if model_name == "resnet18":
            resnet_model = model
        secs = train(model, task, train_steps[model_name], args.seed, device)
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            labels = model(x).argmax(dim=1)
        acc = float((labels.cpu() == y_true).float().mean())
        models_meta[model_name] = {"train_steps": train_steps[model_name], "train_seconds": secs,
                                   "accuracy_on_attack_inputs": acc, "trained": True,
                                   "width": width if model_name == "resnet18" else None,
                                   "parameters": sum(p.numel() for p in model.parameters())}
        print(f"{model_name}: trained {train_steps[model_name]} Adam steps in {secs:.1f}s, "
              f"accuracy on the {args.n} attack inputs {acc:.3f}", flush=True)
        for candidates in (N_CLASSES, 3):
            block = bench_block(args.attacks.split(","), model, x, labels, candidates, args.repeats,
                                warmup_n=min(8, args.n), budget=args.budget)
            for row in block:
                row["model"] = model_name
            peer_times = [r["seconds"] for r in block if r["attack"] in PEERS]
            fastest = min(peer_times) if peer_times else math.nan
            for r in block:
                r["ratio_to_fastest_peer"] = r["seconds"] / fastest
            rows.extend(block)
    throughput = None
    tp_batch = args.throughput_batch if args.throughput_batch is not None else (1024 if device.type == "cuda" else 0)
    if tp_batch > 0 and "resnet18" in models_meta:
        throughput = measure_throughput(resnet_model, task, tp_batch, args.repeats, args.seed, device)
        print(f"throughput: DeepFool (all classes, 50 steps, overshoot 0.02) on ResNet-18 at batch {tp_batch}: "
              f"{throughput['images_per_second']:.1f} images/s", flush=True)
    table = format_table(rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_attacks-quick" if args.quick else "bench_attacks"
    payload = {"command": " ".join([Path(sys.executable).name, "benchmarks/bench_attacks.py"] + sys.argv[1:]),
               "machine": info, "settings": {"n": args.n, "repeats": args.repeats, "overshoot": OVERSHOOT,
                                             "steps": STEPS, "bounds": [0.0, 1.0], "seed": args.seed,
                                             "quick": args.quick, "warmup_inputs": min(8, args.n),
                                             "budget_seconds": args.budget, "threads": args.threads},
               "models": models_meta, "rows": rows, "throughput": throughput}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        keys = ["model", "candidates", "attack", "seconds", "runs", "ratio_to_fastest_peer", "success_rate",
                "median_l2", "p25_l2", "mean_l2_success"]
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out / stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
