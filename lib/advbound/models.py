"""Networks of the paper's Section 5: a DCGAN generator g (latent dimension d = 100) and the classifiers f
of Tables 1-2.

The paper's supplement C.1 (exact architectures) is not available; the architectures below are the
standard ones its text names, with their usual CIFAR-style adaptations, written for this project:

* :class:`DCGANGenerator` / :class:`DCGANDiscriminator` -- Radford et al. [30]; 32x32 (SVHN, CIFAR-10, or
  MNIST padded to 32) or 28x28 (MNIST) outputs.  The generator returns images in ``[0, 1]`` so that
  every distance in the book (``r_in``, ``r_unc``, ``||g(z)||``) is measured in pixel units of ``[0, 1]``.
* :class:`LeNet` -- the "2-layer LeNet" of Table 1 (two convolutional layers, two dense layers).
* :func:`resnet18`, :func:`resnet101` -- He et al. ResNets with a CIFAR stem (3x3 conv, no max-pool).
* :func:`vgg` -- VGG [40] with batch normalisation (VGG-11/13/16/19 layouts, or a custom one).
* :class:`WideResNet` -- Zagoruyko and Komodakis [41], WRN-depth-width (WRN-28-10 by default).

Every classifier takes images in ``[0, 1]`` of shape ``(N, C, H, W)`` and returns logits ``(N, K)``.
Widths are parameters so that the ``ci`` profile can use tiny versions of the same architectures.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LATENT_DIM = 100  # d in the paper's Section 5


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _check_image_size(image_size: int) -> int:
    if image_size not in (28, 32):
        raise ValueError(f"image_size must be 28 or 32; got {image_size!r}")
    return image_size


# --------------------------------------------------------------------------------------------------
# DCGAN
# --------------------------------------------------------------------------------------------------

class DCGANGenerator(nn.Module):
    """DCGAN generator g: R^d -> [0, 1]^{C x S x S}, z ~ N(0, I_d) (the paper's Section 3 model).

    Transposed convolutions double the resolution from 4x4 (S = 32) or 7x7 (S = 28); batch norm and ReLU
    between them; the last layer is ``(tanh + 1) / 2`` so outputs lie in ``[0, 1]``.
    ``width`` is the channel count of the last hidden layer (DCGAN's ``ngf``, 64 in [30]).
    """

    def __init__(self, latent_dim: int = LATENT_DIM, channels: int = 3, image_size: int = 32,
                 width: int = 64) -> None:
        super().__init__()
        self.latent_dim = _check_positive_int(latent_dim, "latent_dim")
        self.channels = _check_positive_int(channels, "channels")
        self.image_size = _check_image_size(image_size)
        w = _check_positive_int(width, "width")
        mults: tuple[int, ...]
        if image_size == 32:  # 4 -> 8 -> 16 -> 32
            mults, start = (4, 2, 1), 4
        else:  # 7 -> 14 -> 28
            mults, start = (2, 1), 7
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, w * mults[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(w * mults[0]), nn.ReLU(True),
        ]
        for m_in, m_out in itertools.pairwise(mults):
            layers += [nn.ConvTranspose2d(w * m_in, w * m_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(w * m_out), nn.ReLU(True)]
        layers.append(nn.ConvTranspose2d(w * mults[-1], channels, 4, 2, 1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}); got {tuple(z.shape)}")
        return 0.5 * (torch.tanh(self.net(z[:, :, None, None])) + 1.0)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: strided convolutions with LeakyReLU(0.2), batch norm after the first layer;
    returns one logit per image (real vs generated).  Takes images in ``[0, 1]``."""

    def __init__(self, channels: int = 3, image_size: int = 32, width: int = 64) -> None:
        super().__init__()
        _check_positive_int(channels, "channels")
        _check_image_size(image_size)
        w = _check_positive_int(width, "width")
        mults = (1, 2, 4) if image_size == 32 else (1, 2)
        layers: list[nn.Module] = [nn.Conv2d(channels, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for m_in, m_out in itertools.pairwise(mults):
            layers += [nn.Conv2d(w * m_in, w * m_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(w * m_out), nn.LeakyReLU(0.2, True)]
        final = 4 if image_size == 32 else 7
        layers.append(nn.Conv2d(w * mults[-1], 1, final, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2.0 * x - 1.0).flatten()


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation [30]: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------------

class LeNet(nn.Module):
    """The "2-layer LeNet" of Table 1: two 5x5 conv + max-pool layers, then two dense layers."""

    def __init__(self, channels: int = 3, n_classes: int = 10, image_size: int = 32,
                 width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        _check_positive_int(channels, "channels")
        _check_positive_int(n_classes, "n_classes")
        _check_image_size(image_size)
        w = _check_positive_int(width, "width")
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * side * side, _check_positive_int(hidden, "hidden")),
            nn.ReLU(True), nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(c_in, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(True),
            nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """ResNet with a CIFAR stem (3x3 conv, stride 1, no max-pool), four stages of widths
    ``width * (1, 2, 4, 8)`` (``width = 64`` is the standard network), global average pooling."""

    def __init__(self, block: type[_BasicBlock] | type[_Bottleneck], blocks: Sequence[int],
                 channels: int = 3, n_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be 4 positive block counts; got {list(blocks)!r}")
        w = _check_positive_int(width, "width")
        _check_positive_int(n_classes, "n_classes")
        self.stem = nn.Sequential(nn.Conv2d(_check_positive_int(channels, "channels"), w, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU(True))
        layers: list[nn.Module] = []
        c_in = w
        for stage, n_blocks in enumerate(blocks):
            planes = w * 2 ** stage
            for k in range(int(n_blocks)):
                layers.append(block(c_in, planes, 2 if (k == 0 and stage > 0) else 1))
                c_in = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18(channels: int = 3, n_classes: int = 10, width: int = 64) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2), CIFAR stem; Table 1."""
    return ResNet(_BasicBlock, (2, 2, 2, 2), channels, n_classes, width)


def resnet101(channels: int = 3, n_classes: int = 10, width: int = 64) -> ResNet:
    """ResNet-101 (bottleneck blocks 3-4-23-3), CIFAR stem; Table 1."""
    return ResNet(_Bottleneck, (3, 4, 23, 3), channels, n_classes, width)


VGG_LAYOUTS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG [40] with batch norm for 32x32 (or 28x28) inputs; ``layout`` lists conv widths and "M" for
    2x2 max-pool; ``width_scale`` divides every width (so a ci run can use a tiny VGG of the same shape)."""

    def __init__(self, layout: str | Sequence[int | str] = "vgg16", channels: int = 3, n_classes: int = 10,
                 width_scale: float = 1.0) -> None:
        super().__init__()
        if isinstance(layout, str):
            if layout not in VGG_LAYOUTS:
                raise ValueError(f"layout must be one of {sorted(VGG_LAYOUTS)} or a list; got {layout!r}")
            layout = VGG_LAYOUTS[layout]
        if not (width_scale > 0):
            raise ValueError(f"width_scale must be > 0; got {width_scale!r}")
        layers: list[nn.Module] = []
        c_in = _check_positive_int(channels, "channels")
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                c_out = max(1, int(round(int(item) * width_scale)))
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, _check_positive_int(n_classes, "n_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def vgg(layout: str | Sequence[int | str] = "vgg16", channels: int = 3, n_classes: int = 10,
        width_scale: float = 1.0) -> VGG:
    """VGG classifier of Table 2 (VGG-16 with batch norm by default)."""
    return VGG(layout, channels, n_classes, width_scale)


class _WideBlock(nn.Module):
    """Pre-activation wide basic block (BN-ReLU-conv twice)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else nn.Conv2d(c_in, c_out, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(act)
        out = self.conv1(act)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """Wide ResNet WRN-``depth``-``widen`` [41] (Table 2): three stages of ``(depth - 4) / 6`` blocks with
    widths ``16 * widen * (1, 2, 4)``.  WRN-28-10 is the default; e.g. WRN-10-1 is a tiny ci variant."""

    def __init__(self, depth: int = 28, widen: int = 10, channels: int = 3, n_classes: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(depth, bool) or int(depth) != depth or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be an integer >= 10 with (depth - 4) divisible by 6; got {depth!r}")
        k = _check_positive_int(widen, "widen")
        if not (0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        n = (depth - 4) // 6
        widths = (16, 16 * k, 32 * k, 64 * k)
        self.stem = nn.Conv2d(_check_positive_int(channels, "channels"), widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage in range(3):
            for b in range(n):
                blocks.append(_WideBlock(c_in, widths[stage + 1], 2 if (b == 0 and stage > 0) else 1, dropout))
                c_in = widths[stage + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, _check_positive_int(n_classes, "n_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


#: Builders by name, used by the experiment profiles: ``build_classifier("resnet18", channels=3, width=8)``.
CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "lenet": LeNet,
    "resnet18": resnet18,
    "resnet101": resnet101,
    "vgg": vgg,
    "wide_resnet": WideResNet,
}


def build_classifier(name: str, **kwargs) -> nn.Module:
    """Instantiate a classifier of :data:`CLASSIFIERS` by name with keyword arguments."""
    if name not in CLASSIFIERS:
        raise ValueError(f"classifier name must be one of {sorted(CLASSIFIERS)}; got {name!r}")
    return CLASSIFIERS[name](**kwargs)


__all__ = [
    "LATENT_DIM",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "init_dcgan_weights",
    "LeNet",
    "ResNet",
    "resnet18",
    "resnet101",
    "VGG",
    "VGG_LAYOUTS",
    "vgg",
    "WideResNet",
    "CLASSIFIERS",
    "build_classifier",
]
