"""Tests of Theorem 2's projection classifier, eq. (5), with generators and projections written here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advbound.generators import IsometricLinearGenerator
from advbound.projection import ProjectionClassifier

DT = torch.float64


class Circle(nn.Module):
    """The paper's Figure 1 generator g(z) = (cos 2 pi z, sin 2 pi z); exact projection by angle."""

    latent_dim = 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = 2 * math.pi * z[:, 0]
        return torch.stack([t.cos(), t.sin()], dim=1)

    @staticmethod
    def angle_projection(x: torch.Tensor) -> torch.Tensor:
        return (torch.atan2(x[:, 1], x[:, 0]) / (2 * math.pi))[:, None]


class Isometric(nn.Module):
    def __init__(self, d: int, m: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(m, d, dtype=DT, generator=torch.Generator().manual_seed(0)))
        self.register_buffer("a", q)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


def sector_classifier(x: torch.Tensor) -> torch.Tensor:
    """Three classes by angle sector; logits = cos of the angle to each sector centre (radius-free)."""
    ang = torch.atan2(x[:, 1], x[:, 0])
    centres = torch.tensor([0.0, 2.1, -2.1], dtype=x.dtype)
    return torch.cos(ang[:, None] - centres[None, :])


def test_exact_projection_agrees_with_f_on_the_circle_and_projects_off_it() -> None:
    g = Circle()
    proj = ProjectionClassifier(sector_classifier, g, 1, exact_projection=Circle.angle_projection)
    z = torch.rand(200, 1, dtype=DT, generator=torch.Generator().manual_seed(1)) - 0.5
    x = g(z)
    assert torch.equal(proj(x).argmax(1), sector_classifier(x).argmax(1))
    zs, res = proj.project(x)
    assert float(res.max()) < 1e-12
    # off the range: f~(x) = f(g(z*)) with z* the nearest point of the circle, whatever the radius
    scaled = x * torch.linspace(0.2, 3.0, 200, dtype=DT)[:, None]
    assert torch.equal(proj(scaled).argmax(1), sector_classifier(x).argmax(1))
    _, res = proj.project(scaled)
    torch.testing.assert_close(res, (scaled.norm(dim=1) - 1).abs())


def test_gradient_inversion_on_the_circle_with_restarts() -> None:
    g = Circle()
    proj = ProjectionClassifier(sector_classifier, g, 1, restarts=3, steps=300, lr=0.02)
    z = torch.rand(64, 1, dtype=DT, generator=torch.Generator().manual_seed(2)) - 0.5
    x = g(z)
    zs, res = proj.project(x)
    assert float(res.max()) < 1e-3
    # the latent solution is defined modulo 1 on the circle
    diff = (zs - z + 0.5) % 1.0 - 0.5
    assert float(diff.abs().max()) < 1e-3
    assert torch.equal(proj(x).argmax(1), sector_classifier(x).argmax(1))


def test_gradient_inversion_on_isometric_linear_generator() -> None:
    d, m = 4, 12
    g = Isometric(d, m)
    torch.manual_seed(3)
    f = nn.Linear(m, 5).to(DT)
    proj = ProjectionClassifier(f, g, d, restarts=2, steps=400, lr=0.05)
    z = torch.randn(32, d, dtype=DT, generator=torch.Generator().manual_seed(3))
    x = g(z)
    zs, res = proj.project(x)
    torch.testing.assert_close(zs, z, atol=1e-4, rtol=0)
    assert torch.equal(proj(x).argmax(1), f(x).argmax(1).detach())
    # off the range the projection is A^T x, the orthogonal projection
    off = x + 0.3 * torch.randn(32, m, dtype=DT, generator=torch.Generator().manual_seed(4))
    zs, res = proj.project(off)
    torch.testing.assert_close(zs, off @ g.a, atol=1e-4, rtol=0)
    torch.testing.assert_close(res, (off - (off @ g.a) @ g.a.T).norm(dim=1), atol=1e-6, rtol=0)


def test_keeps_best_restart() -> None:
    """With a single restart from z = 0 a double-well generator is trapped; more restarts escape."""

    class DoubleWell(nn.Module):
        # g(z) = z^2 - 1 in R^1: x = 0.5 has preimages +-sqrt(1.5); start 0 is a stationary point
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z ** 2 - 1

    g = DoubleWell()
    x = torch.full((8, 1), 0.5, dtype=DT)
    one = ProjectionClassifier(lambda t: torch.cat([t, -t], 1), g, 1, restarts=1, steps=200, lr=0.05)
    many = ProjectionClassifier(lambda t: torch.cat([t, -t], 1), g, 1, restarts=4, steps=200, lr=0.05)
    _, res_one = one.project(x)
    _, res_many = many.project(x)
    assert float(res_one.min()) > 1.0        # stuck at z = 0, g(0) = -1
    assert float(res_many.max()) < 1e-3


def test_bad_arguments() -> None:
    g = Circle()
    for kwargs, name in [({"restarts": 0}, "restarts"), ({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"),
                         ({"exact_projection": 3}, "exact_projection")]:
        with pytest.raises(ValueError, match=name):
            ProjectionClassifier(sector_classifier, g, 1, **kwargs)
    with pytest.raises(ValueError, match="latent_dim"):
        ProjectionClassifier(sector_classifier, g, 0)
    bad = ProjectionClassifier(sector_classifier, g, 1, exact_projection=lambda x: x)
    with pytest.raises(ValueError, match="exact_projection"):
        bad.project(torch.zeros(3, 2, dtype=DT))


def test_bank_start_is_the_nearest_generated_image() -> None:
    """With a bank of latent codes, each sample's inversion also starts from the code whose image is nearest;
    a bank that holds the true code makes the inversion exact (the best iterate is kept), and the start does
    not depend on the batch (the projection of one sample alone is the same)."""
    g = IsometricLinearGenerator(3, 6, seed=2, offset=True)
    z = torch.randn(5, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    bank = torch.cat([torch.randn(40, 3, dtype=DT, generator=torch.Generator().manual_seed(2)), z])
    proj = ProjectionClassifier(lambda x: x[:, :2], g, 3, restarts=0, steps=1, lr=1e-9, bank=bank)
    zs, res = proj.project(g(z))
    torch.testing.assert_close(zs, z, atol=1e-12, rtol=0)
    assert float(res.max()) < 1e-12
    alone, _ = proj.project(g(z[2:3]))
    torch.testing.assert_close(alone[0], zs[2], atol=0, rtol=0)
    with pytest.raises(ValueError, match="restarts"):
        ProjectionClassifier(lambda x: x, g, 3, restarts=0)
    with pytest.raises(ValueError, match="bank"):
        ProjectionClassifier(lambda x: x, g, 3, bank=torch.zeros(4, 2, dtype=DT))
