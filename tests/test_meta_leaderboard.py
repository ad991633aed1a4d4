"""Meta results on the leaderboard (evaluator/reliability.py): each metric's MC on the zoo in its column title and a
table of its four parts, the resilience-vs-reactivity figure, the claim check on reliable metrics beside the one on
all, and nothing of it when there is no meta result (the board is then byte-identical). Synthetic results and meta
results (tests/lb_synth.py) with known reactivity; one real update with ``--meta`` at the end (integration tier).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT as REPO
from helpers import registry_toml, sha256_tree, stub_evaluate
from lb_synth import shifted_zoo, write_synthetic_meta

from sclzoo.errors import ResultError
from sclzoo.evaluator.leaderboard import build_leaderboard, scan_results, write_leaderboard
from sclzoo.evaluator.reliability import MC_THRESHOLD
from sclzoo.evaluator.results import check_published

#: Reactivity of each metric's synthetic disruptive draws: faithfulness and complexity each get one reliable metric.
REACTIVE = {"faithfulness_correlation": 1.0, "deletion_auc": 0.0, "sparseness": 1.0, "complexity": 0.0}


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "results"
    files = shifted_zoo(root, n=60)  # > 50 images: scipy's signed-rank test of tied differences stays fast
    return {"root": root, "files": files, "tmp": tmp_path}


def _with_meta(zoo: dict[str, Any]) -> list[Path]:
    return [write_synthetic_meta(f, REACTIVE, seed=i) for i, f in enumerate(zoo["files"].values())]


def test_without_meta_results_nothing_changes(zoo: dict[str, Any]) -> None:
    before = write_leaderboard(zoo["root"], zoo["tmp"] / "a")
    assert "reliability" not in json.loads(before["json"].read_text())
    assert "meta-g1" not in before["html"].read_text() and "MC " not in before["markdown"].read_text()
    metas = _with_meta(zoo)
    write_leaderboard(zoo["root"], zoo["tmp"] / "b")
    assert sha256_tree(zoo["tmp"] / "a") != sha256_tree(zoo["tmp"] / "b")
    for m in metas:
        m.unlink()
        m.with_name(m.name.replace(".meta.json", ".meta.draws.json.gz")).unlink()
    write_leaderboard(zoo["root"], zoo["tmp"] / "c")
    assert sha256_tree(zoo["tmp"] / "a") == sha256_tree(zoo["tmp"] / "c")


def test_mc_on_the_zoo_in_columns_table_figure_and_claim_check(zoo: dict[str, Any]) -> None:
    _with_meta(zoo)
    scan = scan_results(zoo["root"])
    assert len(scan.meta) == 3 and not scan.skipped and scan.n_files == 6
    paths = write_leaderboard(scan, zoo["tmp"] / "lb")
    board = json.loads(paths["json"].read_text())
    rel = board["reliability"]["groups"]["g1"]["metrics"]
    assert board["reliability"]["threshold"] == MC_THRESHOLD
    assert {m: v["reliable"] for m, v in rel.items()} == {m: r > 0 for m, r in REACTIVE.items()}
    assert all(v["n_models"] == 3 and len(v["models"]) == 3 for v in rel.values())
    assert rel["deletion_auc"]["mc"] == pytest.approx(0.5, abs=0.02)  # a model-blind metric scores 0.5
    assert rel["sparseness"]["iec_ar"] == 1.0 and rel["sparseness"]["mc"] > 0.9
    assert check_published(board, "leaderboard") == []
    md = paths["markdown"].read_text()
    assert f"sparseness ↑ (MC {rel['sparseness']['mc']:.2f})" in md
    assert "How far each metric can be trusted here" in md and "![reliability](img/" in md
    html = paths["html"].read_text()
    assert 'id="meta-g1"' in html and 'id="claim-reliable"' in html and "reliability of group g1" in html
    assert (zoo["tmp"] / "lb" / "img").glob("*_reliability.png")
    compare = json.loads(paths["compare"].read_text())
    assert check_published(compare, "compare") == []
    check = {(c["a"], c["family"]): c for c in compare["claim_check"]}
    faith = check[("SupCon", "faithfulness")]
    assert faith["reliable"]["metrics"] == ["faithfulness_correlation"]
    assert faith["holds"] and faith["reliable"]["holds"]  # SupCon is better on every metric in the synthetic zoo
    assert "faithfulness (reliable: faithfulness_correlation): SupCon beats SimCLR on 2 of 2" in \
        faith["reliable"]["text"]
    assert "on reliable metrics alone" in md


def test_a_family_without_a_reliable_metric_says_so(zoo: dict[str, Any]) -> None:
    for i, f in enumerate(zoo["files"].values()):
        write_synthetic_meta(f, {**REACTIVE, "sparseness": 0.0}, seed=i)
    compare = json.loads(write_leaderboard(zoo["root"], zoo["tmp"] / "lb")["compare"].read_text())
    cx = next(c for c in compare["claim_check"] if c["family"] == "complexity" and c["a"] == "SupCon")
    assert cx["reliable"]["metrics"] == [] and not cx["reliable"]["holds"]
    assert "no metric of this family is reliable on this zoo" in cx["reliable"]["text"]


def test_a_tampered_meta_result_is_skipped_not_used(zoo: dict[str, Any]) -> None:
    metas = _with_meta(zoo)
    doc = json.loads(metas[0].read_text())
    doc["metrics"]["deletion_auc"].update(iac_ar=1.0, iec_ar=1.0)
    doc["metrics"]["deletion_auc"]["mc"] = (doc["metrics"]["deletion_auc"]["iac_nr"] + 2.0
                                            + doc["metrics"]["deletion_auc"]["iec_nr"]) / 4
    metas[0].write_text(json.dumps(doc))
    scan = scan_results(zoo["root"])
    assert len(scan.meta) == 2 and len(scan.skipped) == 1
    assert "recomputed from the draws file" in scan.skipped[0].reason
    board = build_leaderboard(scan)
    assert board["reliability"]["groups"]["g1"]["metrics"]["deletion_auc"]["n_models"] == 2


@pytest.mark.integration
def test_update_meta_evaluates_what_is_missing_then_nothing(tmp_path: Path, bundled: dict[str, Path]) -> None:
    """A real update with --meta on the bundled CE model (4 images, two cheap methods and metrics): the meta result
    lands where the planner predicted, the board shows it, and a second update computes nothing."""
    from sclzoo.evaluator.api import build_config
    from sclzoo.evaluator.update import run_update

    models = tmp_path / "zoo" / "models"
    shutil.copytree(bundled["ce"], models / bundled["ce"].name)
    reg = tmp_path / "zoo" / "registry.toml"
    reg.write_text(registry_toml([bundled["ce"].name]))
    cfg = build_config(None, None, n_samples=4, methods=["saliency", "input_x_gradient"],
                       metrics=["sparseness", "complexity"], batch_size=4, device="cpu")
    lines: list[str] = []
    kw: dict[str, Any] = {"registry": reg, "results_dir": tmp_path / "results", "out_dir": tmp_path / "lb",
                          "log": lines.append, "meta": True}
    report = run_update(cfg, **kw)
    assert report.warnings == [] and not report.failed
    (planned,) = report.planned
    assert planned.meta is not None and planned.meta.is_file()
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert set(board["reliability"]["groups"]["g1"]["metrics"]) == {"sparseness", "complexity"}
    calls: list[str] = []
    lines.clear()
    run_update(cfg, evaluate_fn=stub_evaluate(calls), meta_fn=lambda *a, **k: calls.append("meta"), **kw)
    assert calls == [] and any("up-to-date" in s and "meta-evaluation of every metric" in s for s in lines)

    # a metric joins the config: it alone is meta-evaluated, the board takes each metric's MC from its own file
    more = cfg.replace(metrics=("sparseness", "complexity", "effective_complexity"))
    lines.clear()
    report = run_update(more, **kw)
    (planned,) = report.planned
    assert planned.meta_metrics == ("effective_complexity",) and planned.meta_covered_by
    assert planned.meta is not None and planned.meta.is_file() and report.warnings == []
    assert any("meta-evaluation of effective_complexity" in s for s in lines)
    new_meta = json.loads(planned.meta.read_text())
    assert set(new_meta["metrics"]) == {"effective_complexity"}
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    rel = board["reliability"]["groups"]["g1"]["metrics"]
    assert set(rel) == {"sparseness", "complexity", "effective_complexity"}
    assert rel["effective_complexity"]["models"][0]["file"].endswith(planned.meta.name)
    assert rel["sparseness"]["models"][0]["file"].endswith(planned.meta_covered_by[0])


@pytest.mark.integration
def test_update_reports_a_failing_meta_evaluation_after_the_rest(tmp_path: Path, bundled: dict[str, Path]) -> None:
    from sclzoo.errors import ModelLoadError
    from sclzoo.evaluator.api import build_config
    from sclzoo.evaluator.update import run_update

    models = tmp_path / "zoo" / "models"
    for k in ("ce", "supcon"):
        shutil.copytree(bundled[k], models / bundled[k].name)
    reg = tmp_path / "zoo" / "registry.toml"
    reg.write_text(registry_toml(bundled[k].name for k in ("ce", "supcon")))
    cfg = build_config(None, None, n_samples=4, methods=["saliency", "input_x_gradient"], metrics=["sparseness"])
    calls: list[str] = []

    def meta_fn(ref: str, **_: Any) -> Any:
        calls.append(Path(ref).name)
        raise ResultError("disk full")

    with pytest.raises(ModelLoadError, match="meta-evaluation: disk full"):
        run_update(cfg, registry=reg, results_dir=tmp_path / "results", out_dir=tmp_path / "lb",
                   evaluate_fn=stub_evaluate([]), meta_fn=meta_fn, log=lambda s: None, meta=True)
    assert calls == [bundled["ce"].name, bundled["supcon"].name]  # the second is tried after the first failed
    assert (tmp_path / "lb" / "leaderboard.json").is_file()


def test_a_meta_result_counts_per_metric_when_only_the_metric_list_differs() -> None:
    """A meta result of a config with fewer metrics still covers each metric it scored with the same parameters
    (evaluator/reliability.py: draws are keyed by metric name, never by the other metrics)."""
    from sclzoo.evaluator.reliability import same_images_and_methods, same_metric

    meta_cfg = {"dataset": "mnist5k", "seed": 0, "batch_size": 64, "device": "cpu",
                "methods": {"saliency": {"abs": True}},
                "metrics": {"sparseness": {"version": 1}, "max_sensitivity": {"version": 2, "radius": 0.05}}}
    group_cfg = {"dataset": "mnist5k", "seed": 0, "methods": {"saliency": {"abs": True}},
                 "metrics": {**meta_cfg["metrics"], "single_deletion": {"version": 1, "grid": 4}}}
    assert same_images_and_methods(meta_cfg, group_cfg)  # execution keys (batch_size, device) do not count
    assert same_metric(meta_cfg, group_cfg, "sparseness") and same_metric(meta_cfg, group_cfg, "max_sensitivity")
    assert not same_metric(meta_cfg, group_cfg, "single_deletion")  # never meta-evaluated
    other = {**group_cfg, "metrics": {**group_cfg["metrics"], "max_sensitivity": {"version": 2, "radius": 0.1}}}
    assert not same_metric(meta_cfg, other, "max_sensitivity")  # other parameters: other scores
    assert not same_images_and_methods(meta_cfg, {**group_cfg, "seed": 1})
    assert not same_images_and_methods(meta_cfg, {**group_cfg, "methods": {"saliency": {"abs": False}}})
    assert not same_images_and_methods({}, group_cfg)


def test_the_committed_leaderboard_takes_each_metric_s_mc_from_the_meta_result_that_scored_it() -> None:
    """The committed MNIST-5k group's 8 original metrics come from meta results made before single_deletion joined
    the standard preset, single_deletion's from a meta result of it alone: neither under the group's config hash."""
    board = json.loads((REPO / "leaderboard" / "leaderboard.json").read_text())
    groups = {g["id"]: g for g in board["groups"]}
    rel = board["reliability"]["groups"]
    mnist = [gid for gid in rel if groups[gid]["dataset"] == "mnist5k"]
    assert mnist
    for gid in mnist:
        metrics = rel[gid]["metrics"]
        assert set(groups[gid]["metrics"]) == set(metrics)  # every metric of the claim check has an MC
        for metric, v in metrics.items():
            assert v["n_models"] == 4
            for m in v["models"]:
                meta = json.loads((REPO / "leaderboard" / "results" / m["file"]).read_text())
                assert meta["evaluation"]["config_hash"] != groups[gid]["config_hash"]
                assert set(meta["metrics"]) == ({"single_deletion"} if metric == "single_deletion"
                                                else set(metrics) - {"single_deletion"})
