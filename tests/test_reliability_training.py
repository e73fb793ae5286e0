"""Reliability of training and checkpoints: bad arguments and bad checkpoint files get a named error before
anything is loaded into the caller's objects, a diverged run never overwrites a good checkpoint, and the
caller's global RNG state is left as it was."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from advbound.data import STAND_IN, ImageData, synthetic_stand_in
from advbound.models import DCGANDiscriminator, DCGANGenerator, LeNet
from advbound.training import (
    CheckpointError,
    PGDConfig,
    TrainingDivergedError,
    augment_batch,
    error_rate,
    load_checkpoint,
    pgd_attack,
    save_checkpoint,
    train_classifier,
    train_gan,
)

DATA = synthetic_stand_in(40, channels=1, image_size=28, n_classes=3, seed=1)
EMPTY = ImageData(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), "empty", STAND_IN)
KW = dict(batch_size=16, lr=1e-2, optimizer="adam", weight_decay=0.0, seed=2, progress=False)


def _lenet(width: int = 2, seed: int = 0) -> LeNet:
    torch.manual_seed(seed)
    return LeNet(1, n_classes=3, image_size=28, width=width, hidden=6)


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.fixture()
def checkpoint(tmp_path):
    """A two-epoch run's checkpoint file (same recipe as KW)."""
    path = tmp_path / "c.pt"
    train_classifier(_lenet(), DATA, epochs=2, checkpoint=path, **KW)
    return path


def _tampered(path, **changes):
    state = load_checkpoint(path)
    for key, value in changes.items():
        if value is KeyError:
            del state[key]
        else:
            state[key] = value
    save_checkpoint(path, state)


# --------------------------------------------------------------------------------------------------
# Global state and modes
# --------------------------------------------------------------------------------------------------

def test_training_leaves_the_global_rng_as_it_was_and_the_models_in_eval_mode():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model = _lenet()
    after_init = torch.get_rng_state()
    train_classifier(model, DATA, epochs=1, **KW)
    assert torch.equal(torch.get_rng_state(), after_init) and not torch.equal(before, after_init)
    assert not any(m.training for m in model.modules())
    gen, disc = DCGANGenerator(4, 1, 28, width=2), DCGANDiscriminator(1, 28, width=2)
    state = torch.get_rng_state()
    train_gan(gen, disc, DATA, epochs=1, batch_size=16, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert not gen.training and not disc.training


def test_training_is_unchanged_by_the_callers_rng_state():
    """The run seeds itself: whatever the caller's RNG state, the same weights come out."""
    runs = []
    for caller_seed in (0, 999):
        model = _lenet()
        torch.manual_seed(caller_seed)
        train_classifier(model, DATA, epochs=1, **KW)
        runs.append(_state(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


# --------------------------------------------------------------------------------------------------
# Checkpoint edge cases (each: a named error, and the caller's model untouched)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, pattern", [
    ({"optimizer": KeyError}, "incomplete: it lacks optimizer"),
    ({"model": KeyError}, "incomplete: it lacks model"),
    ({"history": KeyError}, "incomplete: it lacks history"),
    ({"epoch": -5}, "epoch -5, outside \\[1, 2\\]"),
    ({"epoch": 99}, "epoch 99, outside \\[1, 2\\]"),
    ({"epoch": 0}, "epoch 0, outside"),
    ({"epoch": "1"}, "epoch '1', outside"),
    ({"epoch": 1.0}, "epoch 1.0, outside"),
    ({"history": [{"epoch": 1}]}, "history of 1 entries"),
    ({"history": "none"}, "history of str"),
    ({"config": None}, "different configuration"),
], ids=["no optimizer", "no model", "no history", "epoch -5", "epoch 99", "epoch 0", "epoch str", "epoch float",
        "short history", "history str", "no config"])
def test_a_tampered_checkpoint_is_refused_before_anything_is_loaded(checkpoint, changes, pattern):
    _tampered(checkpoint, **changes)
    model = _lenet(seed=7)
    before = _state(model)
    with pytest.raises(CheckpointError, match=pattern):
        train_classifier(model, DATA, epochs=2, checkpoint=checkpoint, **KW)
    assert _same(model, before)


def test_a_state_that_does_not_fit_is_rolled_back(checkpoint):
    """Configuration intact but a tensor of another shape: nothing stays half-loaded."""
    state = load_checkpoint(checkpoint)
    key = list(state["model"])[-1]
    state["model"][key] = torch.zeros(state["model"][key].numel() + 1)
    save_checkpoint(checkpoint, state)
    model = _lenet(seed=7)
    before = _state(model)
    with pytest.raises(CheckpointError, match="does not fit the current objects"):
        train_classifier(model, DATA, epochs=2, checkpoint=checkpoint, **KW)
    assert _same(model, before)


def test_a_width_mismatch_is_a_checkpoint_error_naming_the_architecture(checkpoint):
    model = _lenet(width=3)
    before = _state(model)
    with pytest.raises(CheckpointError, match=r"different configuration:\n  architecture: .*features.0.weight: "
                                              r"saved \[2, 1, 5, 5\], current \[3, 1, 5, 5\]"):
        train_classifier(model, DATA, epochs=2, checkpoint=checkpoint, **KW)
    assert _same(model, before)
    gan = checkpoint.with_name("gan.pt")
    train_gan(DCGANGenerator(4, 1, 28, width=2), DCGANDiscriminator(1, 28, width=2), DATA, epochs=1, batch_size=16,
              progress=False, checkpoint=gan)
    with pytest.raises(CheckpointError, match=r"architecture: \d+ parameter shape\(s\) differ, e.g. generator\."):
        train_gan(DCGANGenerator(4, 1, 28, width=3), DCGANDiscriminator(1, 28, width=2), DATA, epochs=1,
                  batch_size=16, progress=False, checkpoint=gan)


class _Custom:
    pass


@pytest.mark.parametrize("content", ["garbage", "text", "empty", "truncated", "object", "plain pickle", "list"])
def test_an_unreadable_checkpoint_is_left_alone_and_never_advised_to_be_loaded_unsafely(tmp_path, checkpoint, content):
    path = tmp_path / "bad.pt"
    if content == "garbage":
        path.write_bytes(bytes(range(256)) * 3)
    elif content == "text":
        path.write_text("hello")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:200])
    elif content == "object":
        torch.save({"x": _Custom()}, path)
    elif content == "plain pickle":
        path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    else:
        torch.save([1, 2], path)
    raw = path.read_bytes()
    with pytest.raises(CheckpointError, match=str(path)) as info:
        train_classifier(_lenet(), DATA, epochs=1, checkpoint=path, **KW)
    message = str(info.value)
    assert "weights_only" not in message and "False" not in message and "\n" not in message
    assert info.value.__cause__ is None
    assert path.read_bytes() == raw


@pytest.mark.parametrize("name, pattern", [
    ("", "checkpoint must be a non-empty file path"),
    ("   ", "checkpoint must be a non-empty file path"),
    ("folder", "checkpoint must name a file, not a folder; got 'folder'"),
    ("newdir/", "checkpoint must name a file, not a folder; got 'newdir/'"),
    (123, "checkpoint must be a file path"),
])
def test_checkpoint_argument_must_name_a_file(tmp_path, monkeypatch, name, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=pattern):
        train_classifier(_lenet(), DATA, epochs=1, checkpoint=name, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing created (no file "newdir")


class _DivergesLater(nn.Module):
    """A classifier whose training forward returns NaN logits from its ``after``-th call on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))
        self.calls, self.after = 0, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                return out * float("nan")
        return out


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    model = _DivergesLater(after=4)  # 3 batches per epoch: NaN at the 2nd batch of epoch 2
    with pytest.raises(TrainingDivergedError, match="training loss became nan at epoch 2, batch 2"):
        train_classifier(model, DATA, epochs=3, checkpoint=path, **KW)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())  # the NaN step was not taken


def test_a_diverging_gan_raises(tmp_path):
    gen, disc = DCGANGenerator(4, 1, 28, width=2), DCGANDiscriminator(1, 28, width=2)
    with torch.no_grad():
        next(gen.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 1, batch 1"):
        train_gan(gen, disc, DATA, epochs=1, batch_size=16, progress=False, checkpoint=tmp_path / "g.pt")
    assert not (tmp_path / "g.pt").exists()


# --------------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------------

TRAINING_ERRORS = {
    "empty data": (lambda: train_classifier(_lenet(), EMPTY, epochs=1, progress=False), "data must hold at least one"),
    "empty data (GAN)": (lambda: train_gan(DCGANGenerator(4, 1, 28, width=2), DCGANDiscriminator(1, 28, width=2),
                                           EMPTY, epochs=1, progress=False), "data must hold at least one"),
    "error rate on empty data": (lambda: error_rate(_lenet(), EMPTY), "data must hold at least one"),
    "epochs nan": (lambda: train_classifier(_lenet(), DATA, epochs=float("nan")), "epochs"),
    "epochs 2.5": (lambda: train_classifier(_lenet(), DATA, epochs=2.5), "epochs"),
    "epochs string": (lambda: train_classifier(_lenet(), DATA, epochs="2"), "epochs"),
    "batch_size 0": (lambda: train_classifier(_lenet(), DATA, epochs=1, batch_size=0), "batch_size"),
    "lr string": (lambda: train_classifier(_lenet(), DATA, epochs=1, lr="0.1"), "lr"),
    "lr inf": (lambda: train_classifier(_lenet(), DATA, epochs=1, lr=float("inf")), "lr"),
    "weight_decay negative": (lambda: train_classifier(_lenet(), DATA, epochs=1, weight_decay=-1.0), "weight_decay"),
    "seed 1.5": (lambda: train_classifier(_lenet(), DATA, epochs=1, seed=1.5), "seed"),
    "device banana": (lambda: train_classifier(_lenet(), DATA, epochs=1, device="banana"), "device must be"),
    "adversarial not a PGDConfig": (lambda: train_classifier(_lenet(), DATA, epochs=1, adversarial={"eps": 0.1}),
                                    "adversarial must be None or a PGDConfig"),
    "PGD eps string": (lambda: PGDConfig(eps="0.1"), "eps must be finite and > 0"),
    "PGD random_start string": (lambda: PGDConfig(random_start="no"), "random_start"),
    "PGD on integer images": (lambda: pgd_attack(_lenet(), DATA.images[:2], DATA.labels[:2]), "x must be a floating"),
    "PGD with float labels": (lambda: pgd_attack(_lenet(), DATA.floats()[:2], DATA.labels[:2].float()), "y must be"),
    "augment a 3-D batch": (lambda: augment_batch(DATA.floats()[0], "crop"), "x must be a batch of images"),
    "generator without latent_dim": (lambda: train_gan(nn.Linear(4, 64), DCGANDiscriminator(1, 28, width=2), DATA,
                                                       epochs=1, progress=False), "latent_dim"),
}


@pytest.mark.parametrize("case", list(TRAINING_ERRORS), ids=list(TRAINING_ERRORS))
def test_bad_training_argument_gets_a_named_error(case):
    call, pattern = TRAINING_ERRORS[case]
    with pytest.raises(ValueError, match=pattern):
        call()


def test_numpy_and_float_whole_numbers_are_accepted_and_train_alike(tmp_path):
    """numpy scalars and whole floats work like Python ints, also inside a resumable checkpoint (which holds
    plain data only: a numpy integer saved in its configuration would make it unreadable)."""
    import numpy as np

    a, b = _lenet(), _lenet()
    train_classifier(a, DATA, epochs=1, adversarial=PGDConfig(steps=1), **KW)
    kw = dict(KW, batch_size=np.int64(16), seed=np.int32(2))
    path = tmp_path / "c.pt"
    train_classifier(b, DATA, epochs=1.0, adversarial=PGDConfig(steps=np.int64(1)),
                     checkpoint=path, **kw)
    assert _same(b, _state(a))
    c = _lenet(seed=5)
    hist = train_classifier(c, DATA, epochs=np.int64(1), adversarial=PGDConfig(steps=np.int64(1)),
                            checkpoint=path, **kw)
    assert len(hist) == 1 and _same(c, _state(a))  # resumed from the finished checkpoint: nothing to train
