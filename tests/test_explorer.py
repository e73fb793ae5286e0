"""The interactive figure of Theorem 1 (advbound.explorer): its embedded grid gives the library's bound, and the
page's own engine (the vendored Vega builds, run in Node.js) computes the same numbers from it."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from advbound import LipschitzModulus, expected_latent_norm, robustness_quantile_bound
from advbound import explorer as xp

ROOT = Path(__file__).resolve().parents[1]
VEGA = ROOT / "vendor" / "vega"


@pytest.fixture(scope="module")
def spec():
    return xp.explorer_spec()


def test_the_grid_gives_the_library_bound_everywhere(spec):
    for k in xp.CLASSES:
        for d in xp.DIMS:
            for lip in (0.1, 1.0, 3.7, 10.0):
                for q in xp.QUANTILES[::7]:
                    expected = (robustness_quantile_bound(q, n_classes=k, modulus=LipschitzModulus(lip))
                                / expected_latent_norm(d))
                    assert xp.explorer_value(spec, k, d, lip, q) == pytest.approx(expected, rel=1e-9), (k, d, lip, q)
    # the paper's Z-space column, Table 1: 16 x 10^-3 at q = 0.25, K = 10, d = 100
    assert round(xp.explorer_value(spec, 10, 100, 1.0, 0.25), 4) == 0.0158


def test_the_controls_cover_the_grid_and_start_at_the_papers_setting(spec):
    params = {p["name"]: p for p in spec["params"]}
    assert params["Kp"]["bind"]["options"] == list(xp.CLASSES) and params["Kp"]["value"] == 10
    assert params["dp"]["bind"]["options"] == list(xp.DIMS) and params["dp"]["value"] == 100
    assert params["qp"]["value"] == 0.25 and params["Lp"]["value"] == 1.0
    html = xp.explorer_html(spec)
    for name in ("vega", "vega-lite", "vega-embed"):
        assert f'src="../_static/vega/{name}.min.js"' in html and (VEGA / f"{name}.min.js").is_file()
    assert json.dumps(spec) in html


NODE_SCRIPT = r"""
const path = process.argv[2];
const Module = require("module");
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  return request === "vega" ? path + "/vega.min.js" : resolve.call(this, request, ...rest);
};
const vega = require(path + "/vega.min.js");
const vl = require(path + "/vega-lite.min.js");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
(async () => {
  const compiled = vl.compile(input.spec).spec;
  const view = new vega.View(vega.parse(compiled), {renderer: "none"});
  const out = [];
  for (const s of input.settings) {
    view.signal("Kp", s.K).signal("dp", s.d).signal("Lp", s.L).signal("qp", s.q);
    await view.runAsync();
    const rows = compiled.data.map(d => view.data(d.name)).flat()
      .filter(r => r && r.bound !== undefined && Math.abs(r.q - s.q) < 0.005);
    out.push(rows.length ? rows[0].bound : null);
  }
  console.log(JSON.stringify(out));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_page_computes_the_same_numbers(spec, tmp_path):
    """Vega-Lite compiled and run headless by the vendored builds: what the reader's browser computes."""
    settings = [{"K": 10, "d": 100, "L": 1.0, "q": 0.25}, {"K": 2, "d": 3072, "L": 3.7, "q": 0.5},
                {"K": 1000, "d": 10, "L": 0.1, "q": 0.99}, {"K": 5, "d": 784, "L": 10.0, "q": 0.01}]
    script = tmp_path / "run.js"
    script.write_text(NODE_SCRIPT)
    proc = subprocess.run(["node", str(script), str(VEGA)], input=json.dumps({"spec": spec, "settings": settings}),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout.strip().splitlines()[-1])
    for s, value in zip(settings, shown, strict=True):
        expected = (robustness_quantile_bound(s["q"], n_classes=s["K"], modulus=LipschitzModulus(s["L"]))
                    / expected_latent_norm(s["d"]))
        assert value == pytest.approx(expected, rel=1e-12), s
