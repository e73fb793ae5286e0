"""The dry run (advbound.experiments.dryrun): FLOP and memory accounting against closed forms, a tiny
configuration end to end, the command line, and the paper's network sizes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from advbound import cli
from advbound.experiments import dryrun
from advbound.models import DCGANDiscriminator, DCGANGenerator, build_classifier
from tinyconfig import tiny


def test_linear_layer_flops_and_saved_bytes_match_closed_forms():
    """y = x W^T summed: forward 2 B n m FLOPs, backward to W another 2 B n m (x needs no gradient); autograd
    keeps x (B n float32 values) for that backward, and W itself is a weight, not an activation."""
    n, m = 5, 3
    layer = nn.Linear(n, m, bias=False)
    for batch in (4, 8):
        x = torch.randn(batch, n)

        def step(x=x):
            layer(x).sum().backward()

        got = dryrun.measure_step(step, [layer], batch, repeats=1)
        assert got.flops == 4 * batch * n * m
        assert got.saved_bytes == 4 * batch * n
        assert len(got.seconds) == 1 and got.seconds[0] > 0


def test_convolution_flops_match_closed_form():
    """A 3x3 convolution, stride 1, padding 1: 2 B C_out H W C_in 9 FLOPs forward; the backward to the weight
    and to the input (which requires a gradient here) cost as much again each."""
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    x = torch.randn(3, 2, 6, 6, requires_grad=True)
    got = dryrun.measure_step(lambda: conv(x).sum().backward(), [conv], 3, repeats=0)
    assert got.flops == 3 * (2 * 3 * 4 * 6 * 6 * 2 * 9)
    assert got.seconds == []


def test_measure_step_rejects_bad_repeats():
    with pytest.raises(ValueError, match="repeats must be an integer >= 0"):
        dryrun.measure_step(lambda: None, [], 1, repeats=-1)


def test_gpu_spec_projection_and_validation():
    gpu = dryrun.GPUSpec("test", 10.0, 0.5)
    assert gpu.seconds(5e12) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="utilisation must be in"):
        dryrun.GPUSpec("x", 10.0, 1.5)
    with pytest.raises(ValueError, match="peak_tflops must be"):
        dryrun.GPUSpec("x", 0.0, 0.5)


def test_dry_run_rows_scale_to_the_configured_sizes(tiny_dry_run):
    run, cfg = tiny_dry_run, tiny("cifar10", "full")
    assert [r.label for r in run.rows] == ["DCGAN (g and discriminator)"] + [s.label for s in cfg.classifiers]
    gan = run.rows[0]
    ref = (DCGANGenerator(100, 3, 32, cfg.gan_width), DCGANDiscriminator(3, 32, cfg.disc_width))
    assert gan.params == sum(p.numel() for m in ref for p in m.parameters())
    assert gan.steps == cfg.gan_epochs * math.ceil(50_000 / cfg.gan_batch_size)  # CIFAR-10: 50,000 images
    for row, spec in zip(run.rows[1:], cfg.classifiers, strict=True):
        model = build_classifier(spec.arch, channels=3, n_classes=10, **spec.kwargs)
        assert row.params == sum(p.numel() for p in model.parameters())
        assert row.steps == spec.epochs * math.ceil(50_000 / spec.batch_size)
        assert row.flops_per_step == row.measured.flops * spec.batch_size / 2
        weights = 4 * row.params * (2 + dryrun.OPTIMIZER_BUFFERS[spec.optimizer])
        assert row.memory_bytes == weights + row.measured.saved_bytes * spec.batch_size / 2
    total = sum(r.flops_per_step * r.steps for r in run.rows)
    assert run.total_flops == pytest.approx(total)
    assert run.projected_hours() == pytest.approx(total / (67e12 * 0.4) / 3600)


def test_pgd_steps_add_forward_and_input_backward_passes(tiny_dry_run):
    """With s PGD steps a training step adds s forward passes and s backward passes to the input (no weight
    gradients): between 1 + s/2 and 1 + s times the plain step's FLOPs (forward ~ 1/3 of a plain step)."""
    plain, adv = tiny_dry_run.rows[2], tiny_dry_run.rows[3]
    assert plain.architecture == adv.architecture and "PGD 1 steps" in adv.notes
    ratio = adv.measured.flops / plain.measured.flops
    assert 1.5 <= ratio <= 2.0, ratio


def test_dry_run_table_summary_and_json_roundtrip(tiny_dry_run, tmp_path):
    table = tiny_dry_run.table()
    assert list(table.index)[-1] == "total"
    assert table.loc["total", "PFLOP"] == pytest.approx(tiny_dry_run.total_flops / 1e15)
    text = tiny_dry_run.summary()
    assert "No GPU was used in this run" in text and "modulus estimation and attacks not included" in text
    path = tiny_dry_run.save(tmp_path / "dry")
    assert path.suffix == ".json" and path.with_suffix(".csv").is_file()
    again = dryrun.DryRun.load(path)
    assert again.table().equals(table) and again.summary() == text


def test_cli_dry_run_needs_no_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVBOUND_DATA", str(tmp_path / "no-data-here"))
    threads = torch.get_num_threads()
    try:
        assert cli.main(["experiment", "--dataset", "mnist", "--profile", "ci", "--dry-run", "--quiet",
                         "--out", "dry"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "Dry run of the mnist ci profile" in out and "ResNet-18" in out
    saved = json.loads((tmp_path / "dry.json").read_text())
    assert saved["dataset"] == "mnist" and saved["train_size"] == 8000
    assert not (tmp_path / "no-data-here").exists()


def test_full_profiles_configure_the_papers_networks():
    """The networks the dry run measures are those the tables name, at their published sizes where the
    literature gives one (WRN-28-10: 36.5M parameters, Zagoruyko and Komodakis 2016)."""
    cifar = {s.label: s for s in dryrun.experiment_config("cifar10", "full").classifiers}
    assert cifar["VGG"].kwargs["layout"] == "vgg16"
    wrn = cifar["Wide ResNet"]
    assert (wrn.kwargs["depth"], wrn.kwargs["widen"]) == (28, 10) and cifar["Wide ResNet + Adv. training"].adversarial
    params = sum(p.numel() for p in build_classifier(wrn.arch, **wrn.kwargs).parameters())
    assert round(params / 1e6, 1) == 36.5
    svhn = dryrun.experiment_config("svhn", "full").classifiers
    assert [s.arch for s in svhn] == ["lenet", "resnet18", "resnet101"]
    assert not any("width" in s.kwargs for s in svhn)  # the standard widths, not the ci profile's
