"""Training: seeds, atomic checkpoints, resume equal to an uninterrupted run, clear checkpoint errors, PGD,
augmentation, and what adversarial training buys (exact robust accuracy of a linear model)."""

import pytest
import torch

from advbound import training as tr
from advbound.data import STAND_IN, ImageData, synthetic_stand_in
from advbound.models import DCGANDiscriminator, DCGANGenerator, LeNet
from advbound.training import (
    CheckpointError,
    PGDConfig,
    error_rate,
    load_checkpoint,
    save_checkpoint,
    train_classifier,
    train_gan,
)

DATA = synthetic_stand_in(96, channels=1, image_size=28, seed=5)


def _lenet(seed=0):
    torch.manual_seed(seed)
    return LeNet(1, image_size=28, width=2, hidden=8)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_checkpoint_atomic_roundtrip_and_errors(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    save_checkpoint(path, {"config": {"a": 1}, "w": torch.ones(3)})
    assert not path.with_name("c.pt.tmp").exists()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_classifier_resume_equals_uninterrupted(tmp_path):
    kw = dict(batch_size=32, lr=1e-2, optimizer="adam", weight_decay=0.0, seed=1, progress=False)
    straight = _lenet()
    h_straight = train_classifier(straight, DATA, epochs=2, **kw)
    # an interrupted run: stopped right after the first epoch's checkpoint, then resumed
    ck_half = tmp_path / "half.pt"
    m = _lenet()
    _train_one_epoch_of_two(m, ck_half, kw)
    resumed = _lenet(seed=123)  # different init: everything must come from the checkpoint
    hist = train_classifier(resumed, DATA, epochs=2, checkpoint=ck_half, **kw)
    assert _same(straight, resumed)
    assert [h["loss"] for h in hist] == pytest.approx([h["loss"] for h in h_straight])
    with torch.no_grad():  # the error rate by hand, all images in one batch; error_rate batches them
        wrong = int((resumed.eval()(DATA.floats()).argmax(1) != DATA.labels).sum())
    assert error_rate(resumed, DATA) == error_rate(resumed, DATA, batch_size=7) == wrong / len(DATA)


def _train_one_epoch_of_two(model, ckpt, kw):
    """Run a two-epoch training but stop after the first epoch's checkpoint (simulated interruption)."""
    original = tr.save_checkpoint

    class Stop(Exception):
        pass

    def save_then_stop(path, state):
        original(path, state)
        raise Stop

    tr.save_checkpoint = save_then_stop
    try:
        with pytest.raises(Stop):
            train_classifier(model, DATA, epochs=2, checkpoint=ckpt, **kw)
    finally:
        tr.save_checkpoint = original
    assert load_checkpoint(ckpt)["epoch"] == 1


def test_config_mismatch_is_refused(tmp_path):
    ckpt = tmp_path / "c.pt"
    train_classifier(_lenet(), DATA, epochs=1, batch_size=48, checkpoint=ckpt, progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train_classifier(_lenet(), DATA, epochs=1, batch_size=48, lr=0.5, checkpoint=ckpt, progress=False)


def test_invalid_training_arguments():
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(_lenet(), DATA, epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        train_classifier(_lenet(), DATA, epochs=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="norm"):
        PGDConfig(norm="l1")


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_pgd_stays_in_ball_and_box(norm, eps):
    model = _lenet().eval()
    x, y = DATA.floats()[:8], DATA.labels[:8]
    torch.manual_seed(0)
    adv = tr.pgd_attack(model, x, y, PGDConfig(eps=eps, step_size=eps / 2, steps=3, norm=norm))
    d = (adv - x).flatten(1)
    size = d.abs().max(dim=1).values if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(adv), y)) >= float(loss(model(x), y)) - 1e-6


def _weak_and_strong_features(n: int, seed: int) -> ImageData:
    """Two classes, s = +-1, 5x5 images: pixel 0 is a strong but noisy feature (0.5 + 0.3 s, sign right in 75% of
    the samples); the 24 others are weak ones (0.5 + 0.05 s + N(0, 0.05^2)), together highly predictive.  An
    L_inf perturbation of 0.1 reverses every weak feature but not the strong one (Tsipras et al., ICLR 2019)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    s = (2 * y - 1).float()
    x = 0.5 + 0.05 * s[:, None] + 0.05 * torch.randn(n, 25, generator=g)
    x[:, 0] = 0.5 + 0.3 * s * torch.where(torch.rand(n, generator=g) < 0.75, 1.0, -1.0)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).view(n, 1, 5, 5)
    return ImageData(images, y, "weak-and-strong features", STAND_IN, n_classes=2)


def _exact_robust_accuracy(model: torch.nn.Sequential, data: ImageData, eps: float) -> float:
    """For a linear two-class model the worst L_inf perturbation lowers the margin s (w . x + c) by exactly
    eps ||w||_1 (w, c the differences of the two rows), so the robust accuracy has a closed form."""
    lin = model[1]
    w, c = lin.weight[1] - lin.weight[0], lin.bias[1] - lin.bias[0]
    s = (2 * data.labels - 1).float()
    margin = s * (data.floats().flatten(1) @ w + c)
    return float((margin - eps * w.abs().sum() > 0).float().mean())


def test_adversarial_training_buys_robustness_that_standard_training_lacks():
    """Same data, initialisation and seed; PGD training (eps = 0.1) learns to ignore the weak features, so its
    exact robust accuracy on fresh samples is near the strong feature's 75%, standard training's far below."""
    train, test = _weak_and_strong_features(512, seed=0), _weak_and_strong_features(512, seed=1)
    robust = {}
    for name, adversarial in (("standard", None), ("pgd", PGDConfig(eps=0.1, step_size=0.025, steps=7))):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 2))
        train_classifier(model, train, epochs=10, batch_size=64, lr=0.05, optimizer="adam", weight_decay=0.0,
                         adversarial=adversarial, progress=False)
        with torch.no_grad():
            robust[name] = _exact_robust_accuracy(model, test, 0.1)
            assert error_rate(model, test) < 0.3
    assert robust["pgd"] > 0.65 and robust["pgd"] - robust["standard"] > 0.2, robust


def test_gan_resume_equals_uninterrupted(tmp_path):
    def fresh():
        torch.manual_seed(0)
        return DCGANGenerator(100, 1, 28, width=2), DCGANDiscriminator(1, 28, width=2)

    g1, d1 = fresh()
    train_gan(g1, d1, DATA, epochs=2, batch_size=32, seed=3, progress=False)
    g2, d2 = fresh()
    ckpt = tmp_path / "gan.pt"
    train_gan(g2, d2, DATA, epochs=1, batch_size=32, seed=3, progress=False, checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    state["config"]["epochs"] = 2  # the same run, continued to two epochs
    save_checkpoint(ckpt, state)
    g3, d3 = fresh()
    hist = train_gan(g3, d3, DATA, epochs=2, batch_size=32, seed=3, progress=False, checkpoint=ckpt)
    assert len(hist) == 2 and _same(g1, g3) and _same(d1, d3)


def test_augment_batch_crops_and_flips():
    x = torch.rand(6, 3, 8, 8)
    assert tr.augment_batch(x, None) is x
    torch.manual_seed(0)
    out = tr.augment_batch(x, "crop", pad=2)
    assert out.shape == x.shape
    # every crop is a shifted window of the zero-padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for k in range(6):
        assert any(torch.equal(out[k], padded[k, :, i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
    torch.manual_seed(1)
    flipped = tr.augment_batch(x, "crop_flip", pad=0)
    assert all(torch.equal(flipped[k], x[k]) or torch.equal(flipped[k], x[k].flip(2)) for k in range(6))
    with pytest.raises(ValueError, match="augment"):
        tr.augment_batch(x, "rotate")


def test_training_sees_the_augmented_images():
    """With augment="crop" every training batch the model sees is made of shifted windows of the zero-padded
    images, and not all of them are the unshifted ones; evaluation sees the images as they are."""
    data = synthetic_stand_in(12, channels=1, image_size=28, seed=2)
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _lenet()

        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return self.net(x)

    train_classifier(Recorder(), data, epochs=1, batch_size=5, augment="crop", progress=False)
    batch = torch.cat(seen)
    assert batch.shape == (12, 1, 28, 28)
    padded = torch.nn.functional.pad(data.floats(), (4, 4, 4, 4))
    windows = torch.stack([padded[:, :, i:i + 28, j:j + 28] for i in range(9) for j in range(9)], dim=1)
    match = (windows[None] == batch[:, None, None]).flatten(3).all(dim=3)  # (seen, image, offset)
    assert bool(match.any(dim=2).any(dim=1).all())            # each seen image is a crop of some image
    assert not bool(match[:, :, 4 * 9 + 4].any(dim=1).all())  # and not every one is the unshifted crop


def test_gan_weight_average_is_returned_checkpointed_and_resumed(tmp_path):
    def fresh():
        torch.manual_seed(0)
        return DCGANGenerator(100, 1, 28, width=2), DCGANDiscriminator(1, 28, width=2)

    g1, d1 = fresh()
    ckpt = tmp_path / "ema.pt"
    train_gan(g1, d1, DATA, epochs=2, batch_size=32, seed=3, ema=0.9, progress=False, checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    # the returned generator is the average, not the last iterate; both are in the checkpoint
    assert all(torch.equal(v, state["ema_generator"][k]) for k, v in g1.state_dict().items())
    assert not all(torch.equal(v, state["generator"][k]) for k, v in g1.state_dict().items() if v.is_floating_point())
    assert state["config"]["ema"] == 0.9
    # interrupted after one epoch and resumed: the same average as without interruption
    g2, d2 = fresh()
    ckpt2 = tmp_path / "ema2.pt"
    train_gan(g2, d2, DATA, epochs=1, batch_size=32, seed=3, ema=0.9, progress=False, checkpoint=ckpt2)
    part = load_checkpoint(ckpt2)
    part["config"]["epochs"] = 2
    save_checkpoint(ckpt2, part)
    g3, d3 = fresh()
    train_gan(g3, d3, DATA, epochs=2, batch_size=32, seed=3, ema=0.9, progress=False, checkpoint=ckpt2)
    assert _same(g1, g3)
    for bad in (0.0, 1.0, True, "0.9"):
        with pytest.raises(ValueError, match="ema must be None or a decay in"):
            train_gan(*fresh(), DATA, epochs=1, ema=bad, progress=False)


def test_ema_update_is_the_warmed_up_moving_average():
    avg, live = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        avg.weight.fill_(1.0)
        live.weight.fill_(3.0)
    tr._ema_update(avg, live, decay=0.999, step=0)   # warm-up: decay (1 + 0) / (10 + 0) = 0.1
    assert torch.allclose(avg.weight, torch.full_like(avg.weight, 0.1 * 1.0 + 0.9 * 3.0))
    tr._ema_update(avg, live, decay=0.5, step=1000)  # past the warm-up: the decay itself
    assert torch.allclose(avg.weight, torch.full_like(avg.weight, 0.5 * 2.8 + 0.5 * 3.0))


def test_diff_augment_translates_and_cuts_out_differentiably():
    torch.manual_seed(0)
    dot = torch.zeros(64, 1, 28, 28)
    dot[:, 0, 14, 14] = 1.0
    moved = tr.diff_augment(dot, ("translation",))
    where = [torch.nonzero(m[0]) for m in moved]
    assert all(w.shape == (1, 2) for w in where)                       # the pixel is moved, not lost or copied
    shifts = torch.cat(where) - 14
    assert int(shifts.abs().max()) == 28 // 8 and len({tuple(s.tolist()) for s in shifts}) > 10
    ones = torch.ones(32, 1, 28, 28, requires_grad=True)
    cut = tr.diff_augment(ones, ("cutout",))
    assert torch.equal((cut == 0).flatten(1).sum(1), torch.full((32,), 14 * 14))  # one 14 x 14 square each
    cut.sum().backward()
    assert torch.equal(ones.grad, (cut != 0).float())                 # gradients flow where pixels survive
    torch.manual_seed(1)
    a = tr.diff_augment(dot)
    torch.manual_seed(1)
    assert torch.equal(a, tr.diff_augment(dot))                       # the global RNG decides, reproducibly
    with pytest.raises(ValueError, match="policy must be made of"):
        tr.diff_augment(dot, ("color",))
