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

import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

ArrayLike = float | Sequence[float] | np.ndarray


class ModulusNotConcaveError(ValueError):
    """A result that needs a concave modulus on all of [0, inf) (Theorem 4, by Jensen's inequality) was given
    one that is not concave, or not finite beyond a measured range."""


def real_scalar(value: object, name: str) -> float:
    """``value`` as a Python float: any real number, numpy scalars and 0-d arrays included.

    Raises ``TypeError`` naming ``name`` for anything else (a string, a bool, an array of several values).
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        shape = f" of shape {np.shape(value)}" if isinstance(value, np.ndarray) else ""
        raise TypeError(f"{name} must be a single real number; got {type(value).__name__}{shape}: {value!r}")
    return float(value)


def integer_at_least(value: object, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum``: Python and numpy integers, and integral floats such as 10.0.

    Raises ``ValueError`` naming ``name`` for anything else (bools, 2.5, strings, too small).
    """
    if isinstance(value, (bool, np.bool_)):
        ok = False
    elif isinstance(value, numbers.Integral):
        ok = True
    else:
        ok = isinstance(value, numbers.Real) and float(value).is_integer()  # False for nan and inf
    if not ok or int(value) < minimum:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)  # type: ignore[call-overload]


def as_array(value: object, name: str) -> np.ndarray:
    """``value`` as a numpy array of real numbers, keeping its dtype (a torch tensor is detached and copied to
    the CPU, also when it requires grad).

    Raises ``TypeError`` naming ``name`` for ``None``, text, objects, complex numbers and ragged sequences
    (rows of different lengths)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    what = f"{type(value).__name__}: {value!r}"[:120]
    if value is None:
        raise TypeError(f"{name} must be a number or an array of numbers; got None")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):  # ragged nesting (numpy >= 1.24 refuses it)
        raise TypeError(f"{name} must be a number or a rectangular array of numbers (rows of equal length); "
                        f"got {what}") from None
    if arr.dtype.kind not in "biuf":  # text is refused even when it parses as a number
        raise TypeError(f"{name} must be a number or an array of real numbers; got {what} (dtype {arr.dtype})")
    return arr


def check_seed(seed: object, name: str = "seed") -> int:
    """A random seed as a Python int: an integer >= 0 (Python or numpy; an integral float such as 3.0 too).

    A non-integral number (0.9 is never truncated to seed 0), a bool, a string or a negative number raises
    ``ValueError`` naming ``name``.  Every function of the package that takes a seed checks it here."""
    return integer_at_least(seed, name, 0)


def _as_nonneg_array(x: ArrayLike, name: str) -> np.ndarray:
    arr = as_array(x, name)
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must be a number or an array of numbers; got booleans {x!r}")
    arr = arr.astype(float)
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
        """Whether omega is concave wherever it is finite (Theorem 4 also needs :attr:`is_finite`)."""
        return False

    @property
    def is_finite(self) -> bool:
        """Whether omega(t) < inf for every t >= 0."""
        return True

    @abstractmethod
    def _forward(self, t: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _inverse(self, eta: np.ndarray) -> np.ndarray: ...


class AffineModulus(Modulus):
    """omega(t) = offset + lipschitz * t (offset >= 0 allowed, as the paper permits omega(0) > 0).

    The inverse is (eta - offset) / lipschitz above ``offset`` and 0 below it.
    """

    def __init__(self, offset: float = 0.0, lipschitz: float = 1.0, delta: float = 0.0) -> None:
        offset, lipschitz = real_scalar(offset, "offset"), real_scalar(lipschitz, "lipschitz")
        if not (np.isfinite(offset) and offset >= 0):
            raise ValueError(f"offset must be finite and >= 0; got {offset!r}")
        if not (np.isfinite(lipschitz) and lipschitz > 0):
            raise ValueError(f"lipschitz must be finite and > 0; got {lipschitz!r}")
        self.offset = offset
        self.lipschitz = lipschitz
        self.delta = check_delta(delta)

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
    last radius omega(t) = ``ceiling``.  By default the ceiling is +inf: nothing is known there, and
    omega^{-1}(eta) = radii[-1] for ``values[-1] <= eta``, so the bound never certifies radii it did not
    measure.  A finite ceiling is an upper bound on every distance ``||g(z) - g(z')||`` (the diameter of
    the generator's range, e.g. ``2 sqrt(n)`` for images in [-1, 1]^n); then omega^{-1}(eta) = inf from
    ``eta >= ceiling`` on.
    """

    def __init__(self, radii: ArrayLike, values: ArrayLike, delta: float = 0.0, ceiling: float = np.inf) -> None:
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
        ceiling = real_scalar(ceiling, "ceiling")
        if not ceiling >= v[-1]:
            raise ValueError(f"ceiling (omega beyond the last radius) must be >= values[-1]={v[-1]:g}; got {ceiling!r}")
        self.radii = r
        self.values = v
        self.delta = check_delta(delta)
        self.ceiling = ceiling

    @classmethod
    def from_estimates(cls, radii: ArrayLike, estimates: ArrayLike, delta: float = 0.0,
                       ceiling: float = np.inf) -> EmpiricalModulus:
        """Build a modulus from raw (possibly non-monotone) estimates by a running maximum."""
        return cls(radii, np.maximum.accumulate(np.asarray(estimates, dtype=float).ravel()), delta, ceiling)

    def _forward(self, t: np.ndarray) -> np.ndarray:
        out = np.interp(t, self.radii, self.values)
        return np.where(t > self.radii[-1], self.ceiling, out)

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
        out = np.where(e >= self.ceiling, np.inf, out)
        return out.reshape(eta.shape)

    @property
    def is_concave(self) -> bool:
        """Concave on [0, radii[-1]] and, with a finite ceiling, on [0, inf): then the ceiling must
        continue the curve (``ceiling == values[-1]``), as :meth:`concave_majorant` makes it."""
        slopes = np.diff(self.values) / np.diff(self.radii)
        scale = max(1.0, float(np.abs(slopes).max()))
        concave = bool(np.all(np.diff(slopes) <= 1e-12 * scale))
        if np.isfinite(self.ceiling):
            concave = concave and self.ceiling <= self.values[-1] * (1 + 1e-12)
        return concave

    @property
    def is_finite(self) -> bool:
        return bool(np.isfinite(self.ceiling))

    def concave_majorant(self, diameter: float | None = None) -> EmpiricalModulus:
        """The least concave majorant: the upper concave hull of the points (including (0, omega(0))),
        evaluated on the same radii.  It is again a valid modulus (larger than this one) and concave, as
        Theorem 4 requires.

        ``diameter`` (default: this modulus's ceiling) is an upper bound on every distance between two
        generated points.  With it, the majorant is taken of the modulus extended by ``diameter`` beyond the
        last radius: the last point is raised to ``diameter`` (a concave function is continuous, so it cannot
        jump up there), and the result is finite on [0, inf), constant beyond its last radius.  Without it
        (infinite ceiling) the majorant is concave on the measured range only, and Theorem 4 refuses it.
        """
        ceiling = self.ceiling if diameter is None else real_scalar(diameter, "diameter")
        if not ceiling >= self.values[-1]:
            raise ValueError(f"diameter must be >= the largest value {self.values[-1]:g}; got {diameter!r}")
        values = self.values.copy()
        if np.isfinite(ceiling):
            values[-1] = ceiling
        hull = upper_concave_hull(self.radii, values)
        return EmpiricalModulus(self.radii, np.interp(self.radii, self.radii[hull], values[hull]), self.delta,
                                values[-1] if np.isfinite(ceiling) else np.inf)

    def __repr__(self) -> str:
        return (f"EmpiricalModulus({self.radii.size} points, t_max={self.radii[-1]:g}, "
                f"omega(0)={self.values[0]:g}, omega(t_max)={self.values[-1]:g}, delta={self.delta:g}, "
                f"ceiling={self.ceiling:g})")


def upper_concave_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the vertices of the upper concave hull of the points (x_k, y_k), x strictly increasing
    (Andrew's monotone chain); the first and last points are always vertices."""
    hull: list[int] = []
    for k in range(len(x)):
        # drop the last vertex while it lies on or under the chord from the one before it to point k
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            if (y[j] - y[i]) * (x[k] - x[i]) <= (y[k] - y[i]) * (x[j] - x[i]):
                hull.pop()
            else:
                break
        hull.append(k)
    return np.asarray(hull)


class RescaledModulus(Modulus):
    """omega(t) = base(scale * t): the modulus of ``g_u o T`` when ``T`` is ``scale``-Lipschitz and ``g_u``
    has modulus ``base`` (e.g. the Gaussian-to-cube map of :mod:`advbound.uniform_prior`).

    omega^{-1}(eta) = base^{-1}(eta) / scale; concavity, finiteness and ``delta`` are those of ``base``.
    """

    def __init__(self, base: Modulus, scale: float) -> None:
        if not isinstance(base, Modulus):
            raise TypeError(f"base must be a Modulus; got {type(base).__name__}")
        scale = real_scalar(scale, "scale")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0; got {scale!r}")
        self.base = base
        self.scale = scale
        self.delta = base.delta

    def _forward(self, t: np.ndarray) -> np.ndarray:
        return np.asarray(self.base(self.scale * t), dtype=float)

    def _inverse(self, eta: np.ndarray) -> np.ndarray:
        return np.asarray(self.base.inverse(eta), dtype=float) / self.scale

    @property
    def is_concave(self) -> bool:
        return self.base.is_concave

    @property
    def is_finite(self) -> bool:
        return self.base.is_finite

    def __repr__(self) -> str:
        return f"RescaledModulus({self.base!r}, scale={self.scale:g})"


def check_delta(delta: object) -> float:
    """A failure probability of a modulus: a real number in [0, 1)."""
    delta = real_scalar(delta, "delta (failure probability of the modulus)")
    if not (0.0 <= delta < 1.0):
        raise ValueError(f"delta (failure probability of the modulus) must be in [0, 1); got {delta!r}")
    return delta


def as_modulus(modulus: Modulus | float | None) -> Modulus:
    """Accept ``None`` (identity), a Lipschitz constant (any real number > 0, numpy scalars included), or a
    :class:`Modulus`."""
    if modulus is None:
        return IdentityModulus()
    if isinstance(modulus, Modulus):
        return modulus
    try:
        lipschitz = real_scalar(modulus, "modulus")
    except TypeError:
        raise TypeError("modulus must be None, a Lipschitz constant (a real number > 0) or a Modulus; "
                        f"got {type(modulus).__name__}: {modulus!r}") from None
    return LipschitzModulus(lipschitz)


__all__ = [
    "Modulus",
    "ModulusNotConcaveError",
    "AffineModulus",
    "LipschitzModulus",
    "IdentityModulus",
    "EmpiricalModulus",
    "RescaledModulus",
    "as_modulus",
    "real_scalar",
    "integer_at_least",
    "as_array",
    "check_seed",
    "check_delta",
    "upper_concave_hull",
]
