"""Moduli of continuity of a generator (the paper's Assumption 1, eq. (1)).

A modulus ``omega`` satisfies ``||g(z) - g(z')|| <= omega(||z - z'||_2)`` for all latent pairs.  Theorem 1
uses its generalised inverse

    omega^{-1}(eta) = sup{ t >= 0 : omega(t) <= eta },   and 0 when eta < omega(0),

i.e. the largest latent radius whose image is certified to move by at most ``eta``.  Below ``omega(0)``
nothing is certified, so the inverse is 0 and the bound of eq. (2) is 0 there (the paper allows
``omega(0) > 0``, for generators with disconnected support).

A *probabilistic* modulus (the paper's footnote 11; the supplement's C.2 is not available) holds only with
probability ``1 - delta`` over ``z``; its ``delta`` is carried by the object and must be added to the target
probability when a bound is inverted (see :func:`advbound.bounds.robustness_quantile_bound`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

ArrayLike = float | Sequence[float] | np.ndarray


def _as_nonneg_array(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN; expected values in [0, inf)")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 (a radius); got minimum {arr.min():g}")
    return arr


class Modulus(ABC):
    """A non-decreasing modulus of continuity ``omega: [0, inf) -> [0, inf]`` with its generalised inverse.

    Subclasses implement :meth:`_forward` and :meth:`_inverse` on validated non-negative arrays.
    ``delta`` is the probability with which the modulus may fail (0 for a deterministic modulus).
    """

    delta: float = 0.0

    def __call__(self, t: ArrayLike) -> np.ndarray | float:
        """omega(t), vectorised; ``t`` is a latent radius (>= 0)."""
        arr = _as_nonneg_array(t, "t (latent radius)")
        out = self._forward(arr)
        return float(out) if out.ndim == 0 else out

    def inverse(self, eta: ArrayLike) -> np.ndarray | float:
        """omega^{-1}(eta) = sup{t >= 0 : omega(t) <= eta}; 0 where eta < omega(0) (Assumption 1)."""
        arr = _as_nonneg_array(eta, "eta (image-space radius)")
        out = self._inverse(arr)
        return float(out) if out.ndim == 0 else out

    @property
    def is_concave(self) -> bool:
        """Whether omega is concave on [0, inf) (required by Theorem 4)."""
        return False

    @abstractmethod
    def _forward(self, t: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _inverse(self, eta: np.ndarray) -> np.ndarray: ...


class AffineModulus(Modulus):
    """omega(t) = offset + lipschitz * t (offset >= 0 allowed, as the paper permits omega(0) > 0).

    The inverse is (eta - offset) / lipschitz above ``offset`` and 0 below it.
    """

    def __init__(self, offset: float = 0.0, lipschitz: float = 1.0, delta: float = 0.0) -> None:
        if not (np.isfinite(offset) and offset >= 0):
            raise ValueError(f"offset must be finite and >= 0; got {offset!r}")
        if not (np.isfinite(lipschitz) and lipschitz > 0):
            raise ValueError(f"lipschitz must be finite and > 0; got {lipschitz!r}")
        self.offset = float(offset)
        self.lipschitz = float(lipschitz)
        self.delta = _check_delta(delta)

    def _forward(self, t: np.ndarray) -> np.ndarray:
        return self.offset + self.lipschitz * t

    def _inverse(self, eta: np.ndarray) -> np.ndarray:
        return np.maximum(eta - self.offset, 0.0) / self.lipschitz

    @property
    def is_concave(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(offset={self.offset:g}, lipschitz={self.lipschitz:g}, delta={self.delta:g})"


class LipschitzModulus(AffineModulus):
    """omega(t) = L t: an L-Lipschitz generator (Remark 1); omega^{-1}(eta) = eta / L."""

    def __init__(self, lipschitz: float, delta: float = 0.0) -> None:
        super().__init__(0.0, lipschitz, delta)

    def __repr__(self) -> str:
        return f"LipschitzModulus(lipschitz={self.lipschitz:g}, delta={self.delta:g})"


class IdentityModulus(LipschitzModulus):
    """omega(t) = t: latent-space robustness r_Z (Remark 5) or an isometric generator."""

    def __init__(self) -> None:
        super().__init__(1.0)

    def __repr__(self) -> str:
        return "IdentityModulus()"


class EmpiricalModulus(Modulus):
    """A monotone piecewise-linear modulus through the points ``(radii[k], values[k])``.

    ``radii`` must start at 0 and increase strictly; ``values`` must be non-decreasing (a modulus is
    monotone; use :meth:`from_estimates` to make raw estimates monotone by a running maximum).  Beyond the
    last radius nothing is known, so omega(t) = +inf there and omega^{-1}(eta) = radii[-1] for
    ``eta >= values[-1]``: the bound never certifies radii it did not measure.
    """

    def __init__(self, radii: ArrayLike, values: ArrayLike, delta: float = 0.0) -> None:
        r = np.asarray(radii, dtype=float).ravel()
        v = np.asarray(values, dtype=float).ravel()
        if r.shape != v.shape:
            raise ValueError(f"radii and values must have the same length; got {r.size} and {v.size}")
        if r.size < 2:
            raise ValueError(f"an empirical modulus needs at least 2 points; got {r.size}")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(v))):
            raise ValueError("radii and values must be finite")
        if r[0] != 0.0:
            raise ValueError(f"radii must start at 0; got radii[0]={r[0]:g}")
        if np.any(np.diff(r) <= 0):
            raise ValueError("radii must be strictly increasing")
        if np.any(v < 0):
            raise ValueError(f"values must be >= 0; got minimum {v.min():g}")
        bad = np.flatnonzero(np.diff(v) < 0)
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                "values must be non-decreasing (a modulus of continuity is monotone): "
                f"values[{k + 1}]={v[k + 1]:g} < values[{k}]={v[k]:g}; use EmpiricalModulus.from_estimates "
                "to take the running maximum of raw estimates"
            )
        self.radii = r
        self.values = v
        self.delta = _check_delta(delta)

    @classmethod
    def from_estimates(cls, radii: ArrayLike, estimates: ArrayLike, delta: float = 0.0) -> "EmpiricalModulus":
        """Build a modulus from raw (possibly non-monotone) estimates by a running maximum."""
        return cls(radii, np.maximum.accumulate(np.asarray(estimates, dtype=float).ravel()), delta)

    def _forward(self, t: np.ndarray) -> np.ndarray:
        out = np.interp(t, self.radii, self.values)
        return np.where(t > self.radii[-1], np.inf, out)

    def _inverse(self, eta: np.ndarray) -> np.ndarray:
        # sup{t : omega(t) <= eta}: k is the last grid index with values[k] <= eta; interpolate on the
        # segment after it (a flat segment is jumped over, as the supremum requires).
        e = np.atleast_1d(eta)
        v, r = self.values, self.radii
        k = np.searchsorted(v, e, side="right") - 1
        out = np.where(k >= v.size - 1, r[-1], 0.0)
        inside = (k >= 0) & (k < v.size - 1)
        kk = k[inside]
        out[inside] = r[kk] + (e[inside] - v[kk]) / (v[kk + 1] - v[kk]) * (r[kk + 1] - r[kk])
        return out.reshape(eta.shape)

    @property
    def is_concave(self) -> bool:
        slopes = np.diff(self.values) / np.diff(self.radii)
        return bool(np.all(np.diff(slopes) <= 1e-12 * max(1.0, float(np.abs(slopes).max()))))

    def __repr__(self) -> str:
        return (f"EmpiricalModulus({self.radii.size} points, t_max={self.radii[-1]:g}, "
                f"omega(0)={self.values[0]:g}, omega(t_max)={self.values[-1]:g}, delta={self.delta:g})")


def _check_delta(delta: float) -> float:
    if not (0.0 <= delta < 1.0):
        raise ValueError(f"delta (failure probability of the modulus) must be in [0, 1); got {delta!r}")
    return float(delta)


def as_modulus(modulus: "Modulus | float | None") -> Modulus:
    """Accept ``None`` (identity), a Lipschitz constant, or a :class:`Modulus`."""
    if modulus is None:
        return IdentityModulus()
    if isinstance(modulus, Modulus):
        return modulus
    if isinstance(modulus, (int, float)) and not isinstance(modulus, bool):
        return LipschitzModulus(float(modulus))
    raise TypeError(f"modulus must be None, a Lipschitz constant or a Modulus; got {type(modulus).__name__}")


__all__ = [
    "Modulus",
    "AffineModulus",
    "LipschitzModulus",
    "IdentityModulus",
    "EmpiricalModulus",
    "as_modulus",
]

