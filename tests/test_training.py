"""Training: seeds, atomic checkpoints, resume equal to an uninterrupted run, clear checkpoint errors, PGD."""

import pytest
import torch

from advbound.data import synthetic_stand_in
from advbound.models import DCGANDiscriminator, DCGANGenerator, LeNet
from advbound.training import (CheckpointError, PGDConfig, augment_batch, error_rate, load_checkpoint, pgd_attack,
                               save_checkpoint, train_classifier, train_gan)

DATA = synthetic_stand_in(96, channels=1, image_size=28, seed=5)


def _lenet(seed=0):
    torch.manual_seed(seed)
    return LeNet(1, image_size=28, width=2, hidden=8)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


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
    assert 0.0 <= error_rate(resumed, DATA) <= 1.0


def _train_one_epoch_of_two(model, ckpt, kw):
    """Run a two-epoch training but stop after the first epoch's checkpoint (simulated interruption)."""
    import advbound.training as tr

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
    adv = pgd_attack(model, x, y, PGDConfig(eps=eps, step_size=eps / 2, steps=3, norm=norm))
    d = (adv - x).flatten(1)
    size = d.abs().max(dim=1).values if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(adv), y)) >= float(loss(model(x), y)) - 1e-6


def test_adversarial_training_runs():
    hist = train_classifier(_lenet(), DATA, epochs=1, batch_size=48, adversarial=PGDConfig(steps=1), progress=False)
    assert len(hist) == 1 and hist[0]["loss"] > 0


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
    assert augment_batch(x, None) is x
    torch.manual_seed(0)
    out = augment_batch(x, "crop", pad=2)
    assert out.shape == x.shape
    # every crop is a shifted window of the zero-padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for k in range(6):
        assert any(torch.equal(out[k], padded[k, :, i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
    torch.manual_seed(1)
    flipped = augment_batch(x, "crop_flip", pad=0)
    assert all(torch.equal(flipped[k], x[k]) or torch.equal(flipped[k], x[k].flip(2)) for k in range(6))
    with pytest.raises(ValueError, match="augment"):
        augment_batch(x, "rotate")
    hist = train_classifier(_lenet(), DATA, epochs=1, batch_size=48, augment="crop", progress=False)
    assert len(hist) == 1
