"""bench/bench_matrix.py: the method × metric benchmark reads the registries and times `sclzoo evaluate` itself.

The figures are the benchmark's business (``make bench``); these tests check what it selects, that a small run
writes complete tables, and that its floors follow the registries' pass counts.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import REPO_ROOT

from sclzoo.errors import UnknownNameError
from sclzoo.evaluator.attributions import METHODS
from sclzoo.evaluator.metrics import METRICS, metric_cost

BENCH = REPO_ROOT / "bench" / "bench_matrix.py"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_matrix", BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH.parent))


def test_default_selection_is_every_registered_method_and_every_maskless_metric() -> None:
    methods, maps, metrics, untimed = _bench().selection(None, ["saliency", "integrated_gradients", "gradcam"], None)
    assert methods == METHODS.names()
    assert maps == ["saliency", "integrated_gradients", "gradcam"]
    assert metrics == [k for k in METRICS.names() if not METRICS.get(k).needs_mask]
    assert set(untimed) == {k for k in METRICS.names() if METRICS.get(k).needs_mask} and untimed
    # a chosen subset keeps the maps methods among the methods
    methods, _, metrics, untimed = _bench().selection(["occlusion"], ["saliency"], ["sparseness"])
    assert methods == ["occlusion", "saliency"] and metrics == ["sparseness"] and "deletion_auc" in untimed


def test_unknown_names_fail_before_any_work() -> None:
    with pytest.raises(UnknownNameError, match="saliancy"):
        _bench().selection(["saliancy"], [], None)
    with pytest.raises(UnknownNameError, match="sparsenes"):
        _bench().selection(None, ["saliency"], ["sparsenes"])


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_small_run_writes_every_cell_with_its_floor_and_spread(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH), "--model", "small", "--n", "4", "--repeats", "2", "--methods",
           "saliency,occlusion", "--maps", "saliency", "--metrics", "deletion_auc,sparseness,max_sensitivity",
           "--skip-quantus", "--min-time", "0.05", "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "metric × maps" in res.stdout and "peak RSS" in res.stdout
    out = json.loads((tmp_path / "bench_matrix_small.json").read_text())
    t_fwd, t_grad = out["floor"]["seconds_per_forward"], out["floor"]["seconds_per_gradient"]
    assert 0 < t_fwd < t_grad  # a gradient pass costs more than a forward
    rows = {r["method"]: r for r in out["methods"]}
    assert set(rows) == {"saliency", "occlusion"}
    for name, row in rows.items():
        f, g = METHODS.get(name).passes(METHODS.get(name).defaults, (1, 28, 28))
        assert (row["forwards_per_image"], row["gradients_per_image"]) == (f, g)
        assert row["floor_s"] == pytest.approx(4 * (f * t_fwd + g * t_grad))
        assert row["ratio"] == pytest.approx(row["sclzoo_s"]["median"] / row["floor_s"])
        assert row["sclzoo_s"]["min"] <= row["sclzoo_s"]["median"] <= row["sclzoo_s"]["max"]
        assert row["peak_rss_bytes"] > 100 * 2**20
    assert rows["occlusion"]["forwards_per_image"] == 169  # 13 × 13 windows of 4 px, stride 2, on 28 × 28
    cells = {c["metric"]: c for c in out["cells"]}
    assert set(cells) == {"deletion_auc", "sparseness", "max_sensitivity"}
    for name, cell in cells.items():
        f, e = metric_cost(name)
        assert (cell["forwards_per_image"], cell["explanations_per_image"]) == (f, e)
        assert cell["floor_s"] == pytest.approx(4 * (f * t_fwd + e * rows["saliency"]["floor_s"] / 4))
    assert cells["sparseness"]["ratio"] is None  # no model pass, no floor
    assert cells["max_sensitivity"]["ratio"] > 0
    assert out["suites"]["saliency"]["ratio"] > 0 and out["repeats"] == 2
    assert "pointing_game" in out["not_timed"] and "insertion_auc" in out["not_timed"]
