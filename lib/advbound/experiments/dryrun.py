"""A dry run of a profile at its real sizes: what training the DCGAN and every classifier of a table costs.

For each network a profile trains (:func:`advbound.experiments.experiment_config`), :func:`dry_run` builds it
at the configured size and runs the pipeline's own training code (:func:`advbound.training.train_gan`,
:func:`advbound.training.train_classifier`, with the profile's optimiser, augmentation and PGD adversarial
training) for single steps on a synthetic batch of ``probe_batch`` images.  It measures

* the parameter count;
* the FLOPs of one training step, counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matrix
  products and convolutions, forward and backward, PGD steps included; elementwise operations and batch
  norm are not counted).  The count is proportional to the batch size, so the probe batch's count is scaled
  to the configured batch;
* the training memory: weights, gradients and optimiser state (one buffer per weight for SGD with momentum,
  two for Adam), plus the peak of the activations that autograd keeps for the backward pass, tracked with
  :func:`torch.autograd.graph.saved_tensors_hooks` and scaled to the configured batch.  Workspace and
  allocator overhead are not included;
* the wall-clock time of a step on the device it runs on (on a CPU: at the probe batch).

The number of steps is ``epochs * ceil(N_train / batch)`` with ``N_train`` the official training-set size
(:data:`advbound.data.TRAIN_SIZES`).  The projected time on a GPU is the total FLOPs divided by the GPU's
peak rate times a stated utilisation (:class:`GPUSpec`).  It covers training only: modulus estimation and
the attacks, a small part of the ``full`` profile's time, are not projected.

Command line: ``python -m advbound experiment --dataset cifar10 --profile full --dry-run``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..book import result_files
from ..checkpoints import atomic_write
from ..data import MNIST_CI_TRAIN, TRAIN_SIZES, synthetic_stand_in
from ..models import LATENT_DIM, DCGANDiscriminator, DCGANGenerator, build_classifier
from ..modulus import check_seed
from ..training import resolve_device, train_classifier, train_gan
from .profiles import ClassifierSpec, ExperimentConfig, experiment_config

#: optimiser state kept per weight (SGD with momentum: the momentum buffer; Adam: two moment estimates)
OPTIMIZER_BUFFERS = {"sgd": 1, "adam": 2}


@dataclass(frozen=True)
class GPUSpec:
    """The GPU a projection assumes: its name, its peak rate in TFLOP/s and the fraction of it achieved."""

    name: str
    peak_tflops: float
    utilisation: float

    def __post_init__(self) -> None:
        if not (self.peak_tflops > 0 and math.isfinite(self.peak_tflops)):
            raise ValueError(f"peak_tflops must be finite and > 0; got {self.peak_tflops!r}")
        if not (0 < self.utilisation <= 1):
            raise ValueError(f"utilisation must be in (0, 1]; got {self.utilisation!r}")

    def seconds(self, flops: float) -> float:
        """Time for ``flops`` floating-point operations at ``utilisation`` of the peak rate."""
        return flops / (self.peak_tflops * 1e12 * self.utilisation)

    def describe(self) -> str:
        return f"{self.name} at {self.peak_tflops:g} TFLOP/s peak and {100 * self.utilisation:g}% utilisation"


#: One modern GPU: the H100 SXM's FP32 rate without tensor cores (67 TFLOP/s, NVIDIA's datasheet).  PyTorch
#: runs convolutions in TF32 on tensor cores by default there, so this is a conservative rate.
H100_FP32 = GPUSpec("NVIDIA H100 SXM, FP32", 67.0, 0.4)


@dataclass
class StepMeasurement:
    """One training step measured at ``batch`` images: FLOPs, peak saved activations, seconds per step."""

    batch: int
    flops: int
    saved_bytes: int
    seconds: list[float] = field(default_factory=list)


class _SavedTracker:
    """Live bytes of the tensors autograd saves for backward (each storage counted once), and their peak."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def pack(self, tensor: torch.Tensor) -> Any:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self.exclude:  # weights are counted separately
            return tensor
        entry = self.live.setdefault(key, [0, storage.nbytes()])
        if entry[0] == 0:
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        return _Saved(self, key, tensor)

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[key]


class _Saved:
    """A saved tensor; the tracker's count drops when autograd frees it."""

    __slots__ = ("tracker", "key", "tensor")

    def __init__(self, tracker: _SavedTracker, key: int, tensor: torch.Tensor) -> None:
        self.tracker, self.key, self.tensor = tracker, key, tensor

    def __del__(self) -> None:
        self.tracker.release(self.key)


def measure_step(step: Callable[[], None], modules: list[nn.Module], batch: int, *, repeats: int = 2,
                 device: torch.device | str = "cpu") -> StepMeasurement:
    """Run ``step`` (one training step of ``modules`` on ``batch`` images) once under the FLOP counter and
    the saved-tensor tracker, then ``repeats`` more times timed.  Parameters of ``modules`` are not counted
    as saved activations."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 0:
        raise ValueError(f"repeats must be an integer >= 0; got {repeats!r}")
    weights = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    tracker = _SavedTracker(weights)
    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack):
        step()
    dev = torch.device(device)
    seconds = []
    for _ in range(int(repeats)):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds.append(time.perf_counter() - t)
    return StepMeasurement(int(batch), int(counter.get_total_flops()), int(tracker.peak), seconds)


@dataclass
class NetworkCost:
    """One row of the dry run: a network (or the DCGAN pair) trained by a profile."""

    label: str
    architecture: str
    params: int
    batch_size: int
    steps: int
    optimizer: str
    measured: StepMeasurement
    notes: str = ""

    @property
    def scale(self) -> float:
        return self.batch_size / self.measured.batch

    @property
    def flops_per_step(self) -> float:
        return self.measured.flops * self.scale

    @property
    def total_flops(self) -> float:
        return self.flops_per_step * self.steps

    @property
    def memory_bytes(self) -> float:
        """Weights, gradients, optimiser state (fp32) and the peak saved activations at ``batch_size``."""
        per_weight = 4 * (2 + OPTIMIZER_BUFFERS[self.optimizer])
        return self.params * per_weight + self.measured.saved_bytes * self.scale

    @property
    def seconds_per_step(self) -> float | None:
        """Median measured seconds per step at the probe batch (``None`` when not timed)."""
        return statistics.median(self.measured.seconds) if self.measured.seconds else None


@dataclass
class DryRun:
    """The dry run of one (data set, profile): a row per network, the GPU assumed, where it was measured."""

    dataset: str
    profile: str
    rows: list[NetworkCost]
    gpu: GPUSpec
    device: str
    threads: int
    torch_version: str
    train_size: int

    @property
    def total_flops(self) -> float:
        return sum(r.total_flops for r in self.rows)

    def projected_hours(self) -> float:
        return self.gpu.seconds(self.total_flops) / 3600

    def table(self) -> pd.DataFrame:
        """The dry run as a table, one row per network and a total (FLOPs are counted, memory estimated,
        times measured on :attr:`device`, GPU hours projected)."""
        probe = {r.measured.batch for r in self.rows}
        time_col = f"{self.device.split(' ')[0]} s/step (batch {'/'.join(map(str, sorted(probe)))})"
        records: list[dict[str, Any]] = []
        for r in self.rows:
            records.append({
                "network": r.label, "architecture": r.architecture, "training": r.notes,
                "params (M)": r.params / 1e6, "batch": r.batch_size, "GFLOP/step": r.flops_per_step / 1e9,
                "memory (GiB)": r.memory_bytes / 2**30, time_col: r.seconds_per_step, "steps": r.steps,
                "PFLOP": r.total_flops / 1e15, "GPU hours (projected)": self.gpu.seconds(r.total_flops) / 3600,
            })
        records.append({"network": "total", "architecture": "", "training": "",
                        "params (M)": sum(r.params for r in self.rows) / 1e6,
                        "batch": None, "GFLOP/step": None,
                        "memory (GiB)": max(r.memory_bytes for r in self.rows) / 2**30,
                        time_col: None, "steps": sum(r.steps for r in self.rows), "PFLOP": self.total_flops / 1e15,
                        "GPU hours (projected)": self.projected_hours()})
        table = pd.DataFrame.from_records(records).set_index("network")
        return table if self.timed else table.drop(columns=time_col)

    @property
    def timed(self) -> bool:
        """Whether steps were timed (``repeats > 0``)."""
        return any(r.measured.seconds for r in self.rows)

    def summary(self) -> str:
        """The table with a header and footer stating what was measured, counted and projected."""
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            body = self.table().to_string(na_rep="", float_format=_number)
        timed_on_gpu = self.device.startswith("cuda")
        lines = [
            f"Dry run of the {self.dataset} {self.profile} profile at its configured sizes "
            f"({self.train_size} training images, synthetic batches)",
            body,
            "Memory: the largest network's training memory (weights, gradients, optimiser state, activations "
            "saved for backward); total row: the largest, not the sum.",
            (f"Steps timed on {self.device} ({self.threads} threads, torch {self.torch_version}); " if self.timed
             else f"Steps run on {self.device}, not timed; ")
            + "FLOPs counted with torch.utils.flop_counter (matrix products and convolutions).",
            f"Projection: {self.total_flops / 1e15:.3g} PFLOP on one {self.gpu.describe()}: "
            f"{self.projected_hours():.3g} hours of training; modulus estimation and attacks not included.",
        ]
        if not timed_on_gpu:
            lines.append("No GPU was used in this run: no step or epoch was timed on a GPU, and the GPU hours "
                         "are a projection from the counted FLOPs.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_flops"] = self.total_flops
        out["projected_hours"] = self.projected_hours()
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dry run as JSON and its table as CSV, each atomically, to the two files that ``path``
        names (:func:`advbound.book.result_files`, the rule of every ``--out``: ``run`` or ``run.json`` writes
        ``run.json`` and ``run.csv``, ``model.v1`` writes ``model.v1.json``).  Returns the JSON path."""
        json_path, csv_path = result_files(path)
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(json_path, lambda fh: fh.write(text.encode()))
        table = self.table().to_csv()
        atomic_write(csv_path, lambda fh: fh.write(table.encode()))
        return json_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DryRun:
        """Read a dry run written by :meth:`save`."""
        raw = json.loads(Path(path).read_text())
        rows = [NetworkCost(**{**r, "measured": StepMeasurement(**r["measured"])}) for r in raw["rows"]]
        return cls(raw["dataset"], raw["profile"], rows, GPUSpec(**raw["gpu"]), raw["device"], raw["threads"],
                   raw["torch_version"], raw["train_size"])


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _architecture(spec: ClassifierSpec) -> str:
    kw = spec.kwargs
    if spec.arch == "wide_resnet":
        return f"WRN-{kw.get('depth', 28)}-{kw.get('widen', 10)}"
    if spec.arch == "vgg":
        name = str(kw.get("layout", "vgg16")).upper()
        return name if kw.get("width_scale", 1) == 1 else f"{name} x{kw['width_scale']:g}"
    base = {"resnet18": "ResNet-18", "resnet101": "ResNet-101", "lenet": "LeNet"}[spec.arch]
    width = {k: v for k, v in kw.items() if k in ("width", "hidden")}
    return base + (f" {width}" if width else "")


def _classifier_row(spec: ClassifierSpec, cfg: ExperimentConfig, train_size: int, probe: int, repeats: int,
                    dev: torch.device, seed: int) -> NetworkCost:
    torch.manual_seed(seed)
    model = build_classifier(spec.arch, channels=cfg.channels, n_classes=10, **spec.kwargs).to(dev)
    batch = synthetic_stand_in(probe, name=cfg.dataset, channels=cfg.channels, image_size=cfg.image_size, seed=seed)

    def step() -> None:
        train_classifier(model, batch, epochs=1, batch_size=probe, lr=spec.lr, optimizer=spec.optimizer,
                         weight_decay=spec.weight_decay, seed=seed, adversarial=spec.adversarial,
                         augment=spec.augment, device=dev, progress=False)

    measured = measure_step(step, [model], probe, repeats=repeats, device=dev)
    notes = [f"{spec.optimizer}, {spec.epochs} epochs"]
    if spec.augment:
        notes.append(spec.augment)
    if spec.adversarial is not None:
        notes.append(f"PGD {spec.adversarial.steps} steps")
    return NetworkCost(spec.label, _architecture(spec), sum(p.numel() for p in model.parameters()),
                       spec.batch_size, spec.epochs * math.ceil(train_size / spec.batch_size), spec.optimizer,
                       measured, ", ".join(notes))


def _gan_row(cfg: ExperimentConfig, train_size: int, probe: int, repeats: int, dev: torch.device,
             seed: int) -> NetworkCost:
    torch.manual_seed(seed)
    gen = DCGANGenerator(LATENT_DIM, cfg.channels, cfg.image_size, cfg.gan_width).to(dev)
    disc = DCGANDiscriminator(cfg.channels, cfg.image_size, cfg.disc_width or cfg.gan_width).to(dev)
    batch = synthetic_stand_in(probe, name=cfg.dataset, channels=cfg.channels, image_size=cfg.image_size, seed=seed)

    def step() -> None:
        train_gan(gen, disc, batch, epochs=1, batch_size=probe, seed=seed, device=dev, progress=False)

    measured = measure_step(step, [gen, disc], probe, repeats=repeats, device=dev)
    params = sum(p.numel() for m in (gen, disc) for p in m.parameters())
    return NetworkCost("DCGAN (g and discriminator)", f"DCGAN width {cfg.gan_width}", params, cfg.gan_batch_size,
                       cfg.gan_epochs * math.ceil(train_size / cfg.gan_batch_size), "adam", measured,
                       f"adam, {cfg.gan_epochs} epochs")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dry_run(dataset: str, profile: str = "full", *, config: ExperimentConfig | None = None,
            probe_batch: int | None = None, repeats: int = 2, gpu: GPUSpec = H100_FP32,
            device: str | torch.device | None = "cpu", seed: int = 0,
            log: Callable[[str], Any] | None = None) -> DryRun:
    """Measure one training step of every network of ``dataset`` at ``profile`` (see the module docstring).

    ``probe_batch`` images per measured step (default: 8 on a CPU, the configured batch on a GPU);
    ``repeats`` timed steps after the measured one (0: FLOPs and memory only, no timing).  ``config``
    overrides :func:`experiment_config`.  ``log`` receives a line per network as it is measured.
    """
    cfg = config or experiment_config(dataset, profile)
    if cfg.dataset != dataset or cfg.profile != profile:
        raise ValueError(f"config is for ({cfg.dataset}, {cfg.profile}), not ({dataset}, {profile})")
    dev = resolve_device(device)
    seed = check_seed(seed)
    if probe_batch is not None and (isinstance(probe_batch, bool) or int(probe_batch) != probe_batch
                                    or probe_batch < 1):
        raise ValueError(f"probe_batch must be an integer >= 1; got {probe_batch!r}")
    if profile == "ci":  # the ci profile's training sets (see advbound.data.load_dataset)
        train_size = {"mnist": MNIST_CI_TRAIN, "fashion_mnist": TRAIN_SIZES["fashion_mnist"]}.get(dataset,
                                                                                                 cfg.n_train or 2000)
    else:
        train_size = min(TRAIN_SIZES[dataset], cfg.n_train or TRAIN_SIZES[dataset])

    def probe(batch_size: int) -> int:
        if probe_batch is not None:
            return int(probe_batch)
        return batch_size if dev.type == "cuda" else min(8, batch_size)

    rows = [_gan_row(cfg, train_size, probe(cfg.gan_batch_size), repeats, dev, seed)]
    if log:
        log(f"measured {rows[-1].label}")
    for spec in cfg.classifiers:
        rows.append(_classifier_row(spec, cfg, train_size, probe(spec.batch_size), repeats, dev, seed))
        if log:
            log(f"measured {rows[-1].label}")
    where = f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f"cpu ({_cpu_name()})"
    return DryRun(dataset, profile, rows, gpu, where, torch.get_num_threads(), torch.__version__, train_size)


__all__ = ["GPUSpec", "H100_FP32", "StepMeasurement", "NetworkCost", "DryRun", "measure_step", "dry_run"]
