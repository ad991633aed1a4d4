"""Whether a deletion metric is in domain for the evaluated model (sclzoo/deletion.py,
docs/protocol.md#in-domain-deletion): the rule, the model config it reads, what a result records and how results
are checked, and the leaderboard's marks.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from helpers import load_bench
from lb_synth import write_synthetic

from sclzoo.deletion import GRID_DELETION, PIXEL_DELETION, PatchDeletionConfig, deletion_in_domain
from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.evaluator.leaderboard import build_leaderboard, format_markdown, write_leaderboard
from sclzoo.evaluator.metrics import METRICS
from sclzoo.evaluator.results import check_result, load_schema, read_result, validate_result
from sclzoo.zoo.hub import ZOO_DIR, parse_config

TRAINED = PatchDeletionConfig(grid=4, value=0.0, p=0.5)


@pytest.mark.parametrize(("metric", "params", "trained", "hw", "expected"), [
    ("single_deletion", {"grid": 4, "baseline": 0.0}, TRAINED, (28, 28), True),
    ("single_deletion", {"grid": 4, "baseline": 0}, TRAINED, None, True),  # an integer value is the same number
    ("single_deletion", {"grid": 3, "baseline": 0.0}, TRAINED, (28, 28), False),  # another grid
    ("single_deletion", {"grid": 4, "baseline": 0.5}, TRAINED, (28, 28), False),  # another deletion value
    ("single_deletion", {"grid": 4, "baseline": 0.0}, None, (28, 28), False),  # trained without patch deletion
    ("region_perturbation_aopc", {"patch_size": 7, "n_regions": 15, "baseline": 0.0}, TRAINED, (28, 28), True),
    ("region_perturbation_aopc", {"patch_size": 14, "n_regions": 15, "baseline": 0.0}, TRAINED, (56, 56), True),
    ("region_perturbation_aopc", {"patch_size": 7, "n_regions": 16, "baseline": 0.0}, TRAINED, (28, 28), False),
    ("region_perturbation_aopc", {"patch_size": None, "n_regions": 15, "baseline": 0.0}, TRAINED, (28, 28), False),
    ("region_perturbation_aopc", {"patch_size": 7, "n_regions": 15, "baseline": 0.0}, TRAINED, (28, 30), False),
    ("region_perturbation_aopc", {"patch_size": 7, "n_regions": 15, "baseline": 1.0}, TRAINED, (28, 28), False),
    ("region_perturbation_aopc", {"patch_size": 7, "n_regions": 15, "baseline": 0.0}, TRAINED, None, None),
    ("region_perturbation_aopc", {"patch_size": 7, "n_regions": 15, "baseline": 0.0}, None, (28, 28), False),
    ("deletion_auc", {"steps": 32, "baseline": 0.0}, TRAINED, (28, 28), False),  # pixels: never in domain
    ("insertion_auc", {"steps": 32, "baseline": 0.0}, TRAINED, (28, 28), False),
    ("faithfulness_correlation", {"baseline": 0.0}, TRAINED, (28, 28), False),
    ("sparseness", {}, TRAINED, (28, 28), None),  # deletes nothing: the question does not arise
    ("max_sensitivity", {"radius": 0.05}, TRAINED, (28, 28), None),
])
def test_in_domain_rule(metric: str, params: dict[str, Any], trained: PatchDeletionConfig | None,
                        hw: tuple[int, int] | None, expected: bool | None) -> None:
    assert deletion_in_domain(metric, params, trained, hw) is expected


def test_every_deletion_metric_is_registered_or_announced() -> None:
    """The classified names are metric names (single_deletion may not be registered yet in every checkout)."""
    for name in (*GRID_DELETION, *PIXEL_DELETION):
        assert name in METRICS or name == "single_deletion", name


def _config(**sclzoo: Any) -> dict[str, Any]:
    cfg = json.loads((ZOO_DIR / "models" / "resnet8_cifar.ce_mnist5k" / "config.json").read_text())
    cfg["sclzoo"].update(sclzoo)
    return cfg


def test_model_config_patch_deletion_is_checked() -> None:
    assert "patch_deletion" not in parse_config(_config(), "x")["sclzoo"]
    got = parse_config(_config(patch_deletion={"grid": 4, "value": 0, "p": 0.5}), "x")["sclzoo"]["patch_deletion"]
    assert got == {"grid": 4, "value": 0.0, "p": 0.5}
    for bad, message in [({"grid": 1, "value": 0.0, "p": 0.5}, r"sclzoo\.patch_deletion\.grid must be an integer"),
                         ({"grid": 4, "p": 2}, r"sclzoo\.patch_deletion\.p must be a probability"),
                         ({"grid": 4, "size": 3}, r"unknown key\(s\) \['size'\]"),
                         ("yes", r"\[sclzoo\.patch_deletion\] must be a table")]:
        with pytest.raises(ModelLoadError, match=rf"config\.json of 'x'.*{message}.*re-export the repo"):
            parse_config(_config(patch_deletion=bad), "x")


def test_patch_deletion_from_dict_refuses_bad_tables() -> None:
    with pytest.raises(ConfigError, match=r"value must be a finite number"):
        PatchDeletionConfig.from_dict({"value": float("inf")})


@pytest.fixture(scope="module")
def in_domain_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundled CE model, its config.json saying it was trained with patch deletion, evaluated on 4 images."""
    from sclzoo import evaluate

    work = tmp_path_factory.mktemp("indomain")
    repo = work / "repo"
    shutil.copytree(ZOO_DIR / "models" / "resnet8_cifar.ce_mnist5k", repo)
    cfg = json.loads((repo / "config.json").read_text())
    cfg["sclzoo"]["patch_deletion"] = {"grid": 4, "value": 0.0, "p": 0.5}  # config.json is not in files_sha256
    (repo / "config.json").write_text(json.dumps(cfg, indent=2))
    res = evaluate(str(repo), out=work / "results", n_samples=4, methods=["saliency"], progress=False,
                   metrics=["deletion_auc", "region_perturbation_aopc", "sparseness"], device="cpu",
                   metric_params={"deletion_auc": {"steps": 4},
                                  "region_perturbation_aopc": {"patch_size": 7, "n_regions": 15}})
    assert res.path is not None
    return {"path": res.path, "doc": read_result(res.path)}


def test_result_records_the_training_and_each_deletion_verdict(in_domain_result: dict[str, Any]) -> None:
    doc = in_domain_result["doc"]
    assert doc["model"]["patch_deletion"] == {"grid": 4, "value": 0.0, "p": 0.5}
    scores = doc["scores"]["saliency"]
    assert scores["region_perturbation_aopc"]["in_domain"] is True  # 7 x 7 patches = the 4 x 4 training grid
    assert scores["deletion_auc"]["in_domain"] is False  # pixels
    assert "in_domain" not in scores["sparseness"]
    assert validate_result(in_domain_result["path"]) == []


def test_result_check_catches_a_forged_verdict(in_domain_result: dict[str, Any]) -> None:
    doc = copy.deepcopy(in_domain_result["doc"])
    doc["scores"]["saliency"]["deletion_auc"]["in_domain"] = True
    doc["scores"]["saliency"]["sparseness"]["in_domain"] = True
    problems = check_result(doc)
    assert any("scores/saliency/deletion_auc: in_domain True contradicts" in p for p in problems), problems
    assert any("scores/saliency/sparseness: in_domain is recorded, but 'sparseness' feeds" in p for p in problems)
    doc = copy.deepcopy(in_domain_result["doc"])
    del doc["model"]["patch_deletion"]  # the same verdicts for a model trained without patch deletion
    assert any("region_perturbation_aopc: in_domain True contradicts" in p for p in check_result(doc))
    doc["scores"]["saliency"]["region_perturbation_aopc"]["in_domain"] = False
    assert check_result(doc) == []
    doc["model"]["patch_deletion"] = {"grid": 4, "value": 0.0, "p": 1.5}
    assert any(p.startswith("model/patch_deletion/p") for p in check_result(doc))
    doc["model"]["patch_deletion"] = {"grid": 4, "value": 0.0, "p": 0.5, "k": 3}
    assert any(p.startswith("model/patch_deletion") for p in check_result(doc))


def test_results_without_the_fields_stay_valid(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path, "ce", {"saliency": {"deletion_auc": np.linspace(0, 1, 5)}})
    doc = read_result(path)
    assert "patch_deletion" not in doc["model"] and "in_domain" not in doc["scores"]["saliency"]["deletion_auc"]
    assert validate_result(path) == []


def _with_verdicts(path: Path, trained: dict[str, Any] | None, verdicts: dict[str, bool]) -> None:
    """Adds the model's patch deletion and per-metric in_domain to a synthetic result (as evaluate writes them)."""
    doc = json.loads(path.read_text())
    doc["config"]["metrics"]["region_perturbation_aopc"].update(patch_size=7, n_regions=15, baseline=0.0)
    if trained is not None:
        doc["model"]["patch_deletion"] = trained
    for per_metric in doc["scores"].values():
        for metric, v in verdicts.items():
            per_metric[metric]["in_domain"] = v
    path.write_text(json.dumps(doc))


def test_leaderboard_marks_grid_deletion_scores_out_of_domain(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = {"saliency": {"region_perturbation_aopc": rng.normal(size=8), "deletion_auc": rng.uniform(size=8),
                           "sparseness": rng.uniform(size=8)}}
    trained = {"grid": 4, "value": 0.0, "p": 0.5}
    a = write_synthetic(tmp_path / "r", "ce", scores, name="ce_indomain")
    _with_verdicts(a, trained, {"region_perturbation_aopc": True, "deletion_auc": False})
    b = write_synthetic(tmp_path / "r", "supcon", scores)
    _with_verdicts(b, None, {"region_perturbation_aopc": False, "deletion_auc": False})
    board = build_leaderboard(tmp_path / "r")
    jsonschema.validate(board, load_schema("leaderboard"))
    rows = {r["name"]: r for r in board["rows"]}
    assert rows["ce_indomain"]["patch_deletion"] == trained and "patch_deletion" not in rows[
        "resnet8_cifar.supcon_mnist5k"]
    assert rows["ce_indomain"]["metrics"]["region_perturbation_aopc"]["in_domain"] is True
    assert rows["resnet8_cifar.supcon_mnist5k"]["metrics"]["region_perturbation_aopc"]["in_domain"] is False
    assert "in_domain" not in rows["ce_indomain"]["metrics"]["sparseness"]
    md = format_markdown(board)
    line = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    supcon_cells = line["resnet8_cifar.supcon_mnist5k"].split(" | ")
    ce_cells = line["ce_indomain"].split(" | ")
    # Columns: model, objective, commit, acc, deletion_auc, region_perturbation_aopc, sparseness, …
    assert supcon_cells[5].endswith("†") and not ce_cells[5].endswith("†")
    assert not supcon_cells[4].endswith("†") and not supcon_cells[6].endswith("†")  # pixels: a note, no mark
    assert "† not in domain" in md and "deletion_auc deletes pixels, not grid cells" in md
    paths = write_leaderboard(tmp_path / "r", tmp_path / "lb")
    html = paths["html"].read_text()
    assert html.count('data-out-of-domain="region_perturbation_aopc"') == 1
    assert "trained with patch deletion (grid 4, value 0.0, p 0.5)" in html
    assert "not in domain: the model was not trained with this grid deletion" in html


def test_leaderboard_without_verdicts_has_no_marks(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "r", "ce", {"saliency": {"deletion_auc": np.linspace(0, 1, 5)}})
    md = format_markdown(build_leaderboard(tmp_path / "r"))
    assert "†" not in md and "in-domain" not in md



def test_deletion_accuracy_measures_what_the_in_domain_record_promises(tmp_path: Path) -> None:
    """bench/deletion_accuracy.py on the bundled CE pair: the one-cell images are single_deletion's (each cell of
    the 4 x 4 grid set to 0 in turn), and the model trained with patch deletion keeps its accuracy on them far
    better than the one trained without (docs/training.md#patch-deletion has the full-split table)."""
    import torch

    from sclzoo.zoo.augment import grid_cells
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.hub import load_model, resolve_model

    mod = load_bench("deletion_accuracy")
    standard, indomain = (str(ZOO_DIR / "models" / f"resnet8_cifar.ce_mnist5k{s}") for s in ("", "_indomain"))
    out = tmp_path / "acc.json"
    assert mod.main([standard, indomain, "--n", "64", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["trained_with"] for r in rows] == [None, {"grid": 4, "value": 0.0, "p": 0.25}]
    for r in rows:
        assert r["n"] == 64 and len(r["one_cell"]) == 16 and r["dataset"] == "mnist5k"
        assert r["one_cell_worst"] == min(r["one_cell"]) <= r["one_cell_mean"]
    # One cell recomputed by hand: cell 5 (row 1, column 1: pixels 7-13 x 7-13) set to 0.
    loaded = load_model(resolve_model(indomain))
    data = load_dataset("mnist5k", "test", prep=loaded.data_config)
    x, y = data.images[:64], data.labels[:64]
    x5 = x.clone()
    x5[:, :, 7:14, 7:14] = 0.0
    square = torch.zeros(28, 28, dtype=torch.bool)
    square[7:14, 7:14] = True
    assert torch.equal(grid_cells(28, 28, 4) == 5, square)
    with torch.no_grad():
        acc5 = float((loaded.model(x5).argmax(1) == y).float().mean())
    assert rows[1]["one_cell"][5] == pytest.approx(acc5)
    # In domain means the deleted images are handled: the worst cell costs the standard model far more.
    assert rows[1]["one_cell_worst"] > rows[0]["one_cell_worst"] + 0.2
    assert rows[1]["k_cells"] > rows[0]["k_cells"] + 0.15
