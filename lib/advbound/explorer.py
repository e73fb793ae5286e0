"""An interactive figure of Theorem 1 for readers who do not run code: the bound as a function of the quantile.

For ``K`` equiprobable classes, latent dimension ``d`` and a generator with Lipschitz constant ``L``
(``omega(t) = L t``), eq. (2) guarantees ``P(r_in <= eta) >= q`` at ``eta = L t*(q, K)``, where ``t*`` is the
smallest latent radius at which eq. (2) reaches ``q``
(:func:`advbound.bounds.robustness_quantile_bound`).  Normalised as in the paper's tables (Remark 1's convention
that the data are scaled so that ``E||g(z)|| = E||z||_2``), the bound is ``L t*(q, K) / E||z||_2``; with
``L = 1`` it is the Z-space column of Tables 1-2 (0.0158 at ``q = 0.25``, ``K = 10``, ``d = 100``).

:func:`explorer_spec` precomputes ``t*(q, K)`` on a grid of quantiles and class counts, and ``E||z||_2`` for a
list of dimensions, and returns a Vega-Lite specification (Satyanarayan et al., "Vega-Lite: A Grammar of
Interactive Graphics", IEEE TVCG 2017) whose controls choose ``K``, ``d``, ``L`` and the highlighted quantile;
the page computes ``L t / E||z||`` from the embedded grid, so the figure works on the static site without a
kernel.  Vega-Lite was chosen over Plotly because its parameters bind controls to expressions over the data:
four independent controls need one small grid, where Plotly's sliders switch between precomputed traces (one
per combination of ``K``, ``d`` and ``L``).  :func:`explorer_html` embeds it with the Vega builds vendored in
``vendor/vega`` (offline, copied to ``_static/vega`` by the book's build).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .bounds import expected_latent_norm, latent_radius_quantile

#: the grid of the figure: quantiles (steps of 0.01), class counts, dimensions, Lipschitz constants (slider range)
QUANTILES = tuple(round(0.01 * k, 2) for k in range(1, 100))
CLASSES = (2, 3, 5, 10, 20, 50, 100, 1000)
DIMS = (2, 10, 50, 100, 200, 500, 784, 1000, 3072, 10000)
LIPSCHITZ = (0.1, 10.0, 0.1)          # min, max, step of the slider
DEFAULTS = {"K": 10, "d": 100, "L": 1.0, "q": 0.25}   # the paper's Table 1 Z-space setting


def bound_grid(quantiles: Sequence[float] = QUANTILES, classes: Sequence[int] = CLASSES,
               dims: Sequence[int] = DIMS) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """The figure's data: rows ``{q, K, t}`` with ``t = t*(q, K)`` the latent radius of eq. (2) for ``K``
    equiprobable classes, and rows ``{d, Ez}`` with ``Ez = E||z||_2`` in dimension ``d``."""
    curve = [{"q": float(q), "K": int(k), "t": float(latent_radius_quantile(float(q), n_classes=int(k)))}
             for k in classes for q in quantiles]
    norms = [{"d": int(d), "Ez": float(expected_latent_norm(int(d)))} for d in dims]
    bad = [row for row in curve if not np.isfinite(row["t"])]
    if bad:
        raise ValueError(f"eq. (2) does not reach q on the grid at {bad[:3]}")
    return curve, norms


def explorer_spec(quantiles: Sequence[float] = QUANTILES, classes: Sequence[int] = CLASSES,
                  dims: Sequence[int] = DIMS) -> dict[str, Any]:
    """The Vega-Lite specification of the interactive figure (see the module docstring)."""
    curve, norms = bound_grid(quantiles, classes, dims)
    lo, hi, step = LIPSCHITZ
    bound = "Lp * datum.t / datum.Ez"
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {"text": "Theorem 1: upper bound on the q-quantile of the normalised robustness",
                  "subtitle": "K equiprobable classes, latent dimension d, a generator with Lipschitz constant L "
                              "(L = 1: the Z-space bound)"},
        "width": 520, "height": 300,
        "params": [
            {"name": "Kp", "value": DEFAULTS["K"], "bind": {"input": "select", "options": list(classes),
                                                            "name": "classes K "}},
            {"name": "dp", "value": DEFAULTS["d"], "bind": {"input": "select", "options": list(dims),
                                                            "name": "latent dimension d "}},
            {"name": "Lp", "value": DEFAULTS["L"], "bind": {"input": "range", "min": lo, "max": hi, "step": step,
                                                            "name": "Lipschitz constant L "}},
            {"name": "qp", "value": DEFAULTS["q"], "bind": {"input": "range", "min": quantiles[0],
                                                            "max": quantiles[-1], "step": 0.01,
                                                            "name": "quantile q "}},
        ],
        "data": {"values": curve, "name": "curve"},
        "transform": [
            {"filter": "datum.K == Kp"},
            {"calculate": "dp", "as": "d"},
            {"lookup": "d", "from": {"data": {"values": norms}, "key": "d", "fields": ["Ez"]}},
            {"calculate": bound, "as": "bound"},
        ],
        "layer": [
            {"mark": {"type": "line", "color": "#1f77b4"},
             "encoding": {"x": {"field": "q", "type": "quantitative", "title": "quantile q"},
                          "y": {"field": "bound", "type": "quantitative", "scale": {"type": "log"},
                                "title": "bound on the q-quantile of r / E||z||"}}},
            {"transform": [{"filter": "abs(datum.q - qp) < 0.005"}],
             "mark": {"type": "point", "filled": True, "size": 70, "color": "#d62728"},
             "encoding": {"x": {"field": "q", "type": "quantitative"},
                          "y": {"field": "bound", "type": "quantitative"},
                          "tooltip": [{"field": "q", "format": ".2f"}, {"field": "bound", "format": ".4g"}]}},
            {"transform": [{"filter": "abs(datum.q - qp) < 0.005"},
                           {"calculate": "'q = ' + format(datum.q, '.2f') + ': bound = ' + format(datum.bound, '.3g')",
                            "as": "label"}],
             "mark": {"type": "text", "align": "left", "dx": 8, "dy": -8, "fontSize": 13},
             "encoding": {"x": {"field": "q", "type": "quantitative"},
                          "y": {"field": "bound", "type": "quantitative"}, "text": {"field": "label"}}},
        ],
    }


def explorer_html(spec: dict[str, Any] | None = None, static: str = "../_static/vega",
                  element: str = "advbound-bound-explorer") -> str:
    """HTML that renders :func:`explorer_spec` with the vendored Vega builds under ``static`` (the path from a
    chapter's page to ``_static/vega`` on the built site)."""
    spec = explorer_spec() if spec is None else spec
    scripts = "".join(f'<script src="{static}/{name}.min.js"></script>' for name in ("vega", "vega-lite", "vega-embed"))
    return (f'<div id="{element}"></div>{scripts}'
            f'<script>vegaEmbed("#{element}", {json.dumps(spec)}, {{"actions": false}});</script>')


def explorer_value(spec: dict[str, Any], K: int, d: int, L: float, q: float) -> float:
    """The bound the figure shows for ``K``, ``d``, ``L`` and ``q``, computed from the spec's embedded data as
    its transforms do (``L t / Ez``); the tests compare it with :func:`advbound.bounds.robustness_quantile_bound`
    and with Vega's own evaluation of the spec."""
    (row,) = [r for r in spec["data"]["values"] if r["K"] == K and abs(r["q"] - q) < 0.005]
    (norm,) = [r for r in spec["transform"][2]["from"]["data"]["values"] if r["d"] == d]
    return L * row["t"] / norm["Ez"]


__all__ = ["CLASSES", "DEFAULTS", "DIMS", "QUANTILES", "bound_grid", "explorer_html", "explorer_spec",
           "explorer_value"]
