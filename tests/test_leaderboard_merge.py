"""One row per set of weights: results merged from several folders, duplicates found, conflicts reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_main
from lb_synth import write_synthetic

from sclzoo.evaluator.leaderboard import build_leaderboard, scan_results
from sclzoo.evaluator.results import weights_id

N = 8


def scores(seed: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {"saliency": {"sparseness": rng.normal(0.5, 0.1, N), "complexity": rng.normal(3.0, 0.1, N)}}


def as_hub(path: Path, repo_id: str) -> None:
    """The same result as if the weights had been loaded from the Hub repo ``repo_id``."""
    doc = json.loads(path.read_text())
    doc["model"].update(id=repo_id, source="hub", requested_revision="main")
    path.write_text(json.dumps(doc))


def test_same_weights_from_two_folders_and_two_sources_are_one_row(tmp_path: Path) -> None:
    a, b = tmp_path / "ci-shard-a", tmp_path / "ci-shard-b"
    local = write_synthetic(a, "ce", scores(1))
    hub = write_synthetic(b, "ce", scores(1), repo_id="sclzoo/resnet8_cifar.ce_mnist5k")
    as_hub(hub, "sclzoo/resnet8_cifar.ce_mnist5k")
    write_synthetic(b, "supcon", scores(2))
    assert weights_id(json.loads(local.read_text())) == weights_id(json.loads(hub.read_text()))

    scan = scan_results([a, b])
    kept = {lr.doc["model"]["id"]: lr for lr in scan.results}
    assert set(kept) == {"sclzoo/resnet8_cifar.ce_mnist5k", "local/resnet8_cifar.supcon_mnist5k"}  # the Hub id wins
    assert kept["sclzoo/resnet8_cifar.ce_mnist5k"].also_as == ("local/resnet8_cifar.ce_mnist5k",)
    assert kept["sclzoo/resnet8_cifar.ce_mnist5k"].file.startswith(b.as_posix() + "/")
    (dup,) = scan.skipped
    assert dup.file.startswith(a.as_posix() + "/") and dup.reason.startswith("duplicate of ")

    board = build_leaderboard(scan)
    assert board["schema_version"] == 1
    assert len(board["rows"]) == 2 and len({r["weights_id"] for r in board["rows"]}) == 2
    ce = next(r for r in board["rows"] if r["objective"] == "ce")
    assert ce["also_as"] == ["local/resnet8_cifar.ce_mnist5k"]


def test_same_weights_and_config_with_other_scores_is_a_conflict(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_synthetic(a, "ce", scores(1))
    write_synthetic(b, "ce", scores(3))  # same name and revision: the same weights id, other scores
    scan = scan_results([a, b])
    assert len(scan.results) == 1
    (conflict,) = scan.skipped
    assert "conflicts with" in conflict.reason and "saliency/complexity: mean" in conflict.reason


def test_cli_merges_folders_and_lists_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_synthetic(a, "ce", scores(1))
    write_synthetic(b, "ce", scores(1))
    write_synthetic(b, "supcon", scores(2))
    code, out, err = run_main(["leaderboard", str(a), str(b), "--out", str(tmp_path / "lb"), "--quiet"], capsys)
    assert code == 0, err
    assert "duplicate of" in err
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert sorted(r["objective"] for r in board["rows"]) == ["ce", "supcon"]


def test_one_folder_keeps_its_relative_file_names(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path, "ce", scores(1))
    (lr,) = scan_results(tmp_path).results
    assert lr.file == path.relative_to(tmp_path).as_posix() and lr.also_as == ()


def test_leaderboard_files_validate_against_their_schemas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    from sclzoo.evaluator.leaderboard import CSV_COLUMNS, write_leaderboard
    from sclzoo.evaluator.results import check_published, validate_file

    write_synthetic(tmp_path / "r", "ce", scores(1))
    write_synthetic(tmp_path / "r", "supcon", scores(2))
    paths = write_leaderboard(tmp_path / "r", tmp_path / "lb")
    assert validate_file(paths["json"]) == ("leaderboard", [])
    assert validate_file(paths["compare"]) == ("compare", [])
    flat = pd.read_csv(paths["csv"])  # one call, one record per (row, metric)
    assert list(flat.columns) == CSV_COLUMNS and len(flat) == 4
    board = json.loads(paths["json"].read_text())
    board["rows"][0]["weights_id"] = "../../etc"
    assert any("weights_id" in p for p in check_published(board, "leaderboard"))
    board["schema_version"] = 2
    assert any("schema_version" in p for p in check_published(board, "leaderboard"))
    code, out, _ = run_main(["validate", str(paths["json"]), str(paths["compare"])], capsys)
    assert code == 0 and out.count("ok ") == 2


def test_committed_leaderboard_files_validate() -> None:
    from sclzoo.evaluator.results import validate_file

    root = Path(__file__).resolve().parent.parent / "leaderboard"
    assert validate_file(root / "leaderboard.json") == ("leaderboard", [])
    assert validate_file(root / "compare.json") == ("compare", [])


def test_a_single_model_group_has_no_rank_heatmap(tmp_path: Path) -> None:
    from sclzoo.evaluator.leaderboard import write_leaderboard

    write_synthetic(tmp_path / "r", "ce", scores(1))
    write_leaderboard(tmp_path / "r", tmp_path / "lb")
    assert not list((tmp_path / "lb" / "img").glob("*_ranks.png"))
    assert "![ranks]" not in (tmp_path / "lb" / "LEADERBOARD.md").read_text()
