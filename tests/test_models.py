"""Shapes, ranges and argument checks of the Section 5 networks (tiny widths)."""

import pytest
import torch

from advbound.models import (
    CLASSIFIERS,
    VGG,
    DCGANDiscriminator,
    DCGANGenerator,
    LeNet,
    WideResNet,
    build_classifier,
    init_dcgan_weights,
    resnet18,
    resnet101,
)


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 28), (1, 32)])
def test_dcgan_shapes_and_range(channels, size):
    torch.manual_seed(0)
    g = DCGANGenerator(100, channels, size, width=4)
    d = DCGANDiscriminator(channels, size, width=4)
    init_dcgan_weights(g)
    with torch.no_grad():
        x = g(torch.randn(5, 100))
    assert x.shape == (5, channels, size, size) == (5, *g.output_shape)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert d(x).shape == (5,)


def test_generator_rejects_wrong_latent_shape():
    with pytest.raises(ValueError, match="z must have shape"):
        DCGANGenerator(width=4)(torch.randn(2, 7))


@pytest.mark.parametrize("name,kwargs", [
    ("lenet", {"width": 2, "hidden": 8}),
    ("resnet18", {"width": 2}),
    ("resnet101", {"width": 1}),
    ("vgg", {"layout": "vgg11", "width_scale": 1 / 32}),
    ("wide_resnet", {"depth": 10, "widen": 1}),
])
@pytest.mark.parametrize("channels,size", [(3, 32), (1, 28)])
def test_classifiers_give_logits(name, kwargs, channels, size):
    if name == "lenet":
        kwargs = {**kwargs, "image_size": size}
    model = build_classifier(name, channels=channels, n_classes=10, **kwargs).eval()
    assert model(torch.rand(3, channels, size, size)).shape == (3, 10)


def test_standard_sizes():
    # the paper-scale networks have the usual parameter counts (CIFAR stems)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 11.0e6 < count(resnet18()) < 11.4e6
    assert 42.0e6 < count(resnet101()) < 43.0e6
    assert 36.0e6 < count(WideResNet(28, 10)) < 37.0e6


@pytest.mark.parametrize("factory,kwargs,match", [
    (DCGANGenerator, {"image_size": 64}, "image_size"),
    (DCGANGenerator, {"width": 0}, "width"),
    (LeNet, {"n_classes": 0}, "n_classes"),
    (WideResNet, {"depth": 12}, "depth"),
    (VGG, {"layout": "vgg99"}, "layout"),
    (VGG, {"width_scale": 0}, "width_scale"),
])
def test_invalid_arguments(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_build_classifier_unknown():
    with pytest.raises(ValueError, match="classifier name must be one of"):
        build_classifier("alexnet")
    assert set(CLASSIFIERS) == {"lenet", "resnet18", "resnet101", "vgg", "wide_resnet"}
