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
    # the as-run floor: measured in a child whose OpenMP workers sleep, as sclzoo evaluate's do, in its layout
    run_floor = out["as_run_floor"]
    assert run_floor["openmp"] == "OMP_WAIT_POLICY=PASSIVE" and run_floor["layouts"] == ["eager_nchw"]
    assert {r["layout"] for r in run_floor["rows"]} == {"eager_nchw"}
    r_fwd, r_grad = run_floor["seconds_per_forward"], run_floor["seconds_per_gradient"]
    sal = rows["saliency"]
    assert sal["as_run_floor_s"] == pytest.approx(4 * r_grad)
    assert sal["as_run_ratio"] == pytest.approx(sal["sclzoo_s"]["median"] / sal["as_run_floor_s"])
    assert cells["max_sensitivity"]["as_run_floor_s"] == pytest.approx(4 * 16 * r_grad)
    assert cells["deletion_auc"]["as_run_floor_s"] == pytest.approx(4 * 33 * r_fwd)
    assert "as-run floor" in res.stdout
    cold = run_floor["first_gradient_passes"]  # the child's first backward, before its warm floor loops
    assert cold["batch_size"] == 4 and cold["first_s"] > 0 and cold["second_s"] > 0
    assert cold["extra_s"] == pytest.approx(cold["first_s"] - cold["second_s"])
    assert "first gradient pass (batch 4)" in res.stdout
    assert cells["sparseness"]["ratio"] is None  # no model pass, no floor
    assert cells["max_sensitivity"]["ratio"] > 0
    assert out["suites"]["saliency"]["ratio"] > 0 and out["repeats"] == 2
    assert "pointing_game" in out["not_timed"] and "insertion_auc" in out["not_timed"]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy, variable", [("passive", "OMP_WAIT_POLICY"), ("spin", "GOMP_SPINCOUNT")])
def test_profile_cell_reports_the_cell_under_its_policy(tmp_path: Path, policy: str, variable: str) -> None:
    script = REPO_ROOT / "bench" / "profile_cell.py"
    cmd = [sys.executable, str(script), "--model", "small", "--n", "4", "--method", "saliency", "--metric",
           "deletion_auc", "--policy", policy, "--repeats", "1", "--rounds", "1", "--min-time", "0.05", "--json",
           str(tmp_path / "p.json")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "p.json").read_text())
    assert out["policy"] == policy and variable in out["environment"]
    f, e = metric_cost("deletion_auc")
    t_fwd = 1 / out["floor"]["best"]["forward"]["images_per_s"]
    t_grad = 1 / out["floor"]["best"]["gradient"]["images_per_s"]
    assert out["metric_floor_s"]["best"] == pytest.approx(4 * (f * t_fwd + e * t_grad))
    assert out["method_floor_s"]["best"] == pytest.approx(4 * t_grad)
    for timing in (out["method_timing"], out["metric_timing"]):
        assert timing["first"]["wall_s"] > 0 and timing["warm_median"]["cpu_s"] >= 0
    ops = {t["op"] for t in out["profile"]["top"]}
    assert any("convolution" in op for op in ops)  # the model's passes show up in the profile
    assert "profile of one warm metric call" in res.stdout
    for which in ("method", "metric"):  # the same passes back to back, in rounds interleaved with the calls
        rounds = out["back_to_back"][which]
        assert len(rounds["seconds"]["bare loop"]) == len(rounds["seconds"][which]) == 1
        ratio = rounds["seconds"][which][0] / rounds["seconds"]["bare loop"][0]
        assert rounds["ratio_to_loop"][which]["median"] == pytest.approx(ratio)
    assert "the same passes back to back (nchw explanations" in res.stdout


def _profile_cell() -> ModuleType:
    spec = importlib.util.spec_from_file_location("profile_cell", REPO_ROOT / "bench" / "profile_cell.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_back_to_back_loop_makes_the_counted_passes_in_batches_on_fresh_inputs() -> None:
    import torch

    pc = _profile_cell()
    x, target = torch.arange(5.0).view(5, 1, 1, 1), torch.arange(5)
    seen: list[tuple[str, list[float], list[int] | None]] = []
    loop = pc.back_to_back(lambda xb: seen.append(("f", xb.flatten().tolist(), None)),
                           lambda xb, yb: seen.append(("g", xb.flatten().tolist(), yb.tolist())),
                           x, target, forwards=7, gradients=3, batch_size=4)
    loop()
    assert [(k, len(v)) for k, v, _ in seen] == [("f", 4), ("f", 3), ("g", 3)]  # 7 forward rows, 3 gradient rows
    assert seen[1][1] == [4.0, 0.0, 1.0]  # the images tiled in order
    assert seen[2][1] == [0.0, 1.0, 2.0] and seen[2][2] == [0, 1, 2]  # each row with its own target
    seen.clear()
    loop()
    assert len(seen) == 3  # the same loop again


def test_interleaved_rounds_ratio_is_taken_round_by_round(monkeypatch: pytest.MonkeyPatch) -> None:
    pc = _profile_cell()
    ticks = iter([0.0, 1.0, 1.0, 3.0, 3.0, 5.0, 5.0, 6.0])  # loop 1 s, call 2 s; then loop 2 s, call 1 s
    monkeypatch.setattr(pc.time, "perf_counter", lambda: next(ticks))
    out = pc.interleaved_rounds({"bare loop": lambda: None, "metric": lambda: None}, 2)
    assert out["seconds"] == {"bare loop": [1.0, 2.0], "metric": [2.0, 1.0]}
    assert out["ratio_to_loop"]["metric"] == {"median": 1.25, "min": 0.5, "max": 2.0}
