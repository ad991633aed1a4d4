"""The leaderboard folder on synthetic results: rows, ranks, groups that are never ranked together (and say why),
CSV, comparison, HTML without network assets, figures, and byte-identical reruns of every file."""

from __future__ import annotations

import csv
import json
import re
from importlib import util
from pathlib import Path

import numpy as np
import pytest
from lb_synth import shifted_zoo, write_synthetic

from sclzoo.evaluator.leaderboard import CSV_COLUMNS, build_leaderboard, write_leaderboard
from sclzoo.evaluator.results import maps_path, read_maps, write_maps


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Group 1: CE, SupCon, SimCLR on the same 30 images (SupCon shifted better); group 2: one model under a config
    with 10 images and sparseness version 2; plus a result whose samples file is gone."""
    root = tmp_path_factory.mktemp("lb") / "results"
    shifted_zoo(root, n=30, shift=0.5)
    rng = np.random.default_rng(5)
    write_synthetic(root, "supcon", {"saliency": {"sparseness": rng.normal(0.5, 0.1, 10),
                                                  "complexity": rng.normal(3, 0.1, 10)}},
                    revision="r2", versions={"sparseness": 2})
    write_synthetic(root, "ce", {"saliency": {"sparseness": rng.normal(0.5, 0.1, 10),
                                              "complexity": rng.normal(3, 0.1, 10)}},
                    revision="r3", versions={"sparseness": 2}, samples=False, maps=False)
    return root


@pytest.fixture(scope="module")
def built(results: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("out")
    (base / "a" / "img").mkdir(parents=True)
    (base / "a" / "img" / "old_group_ranks.png").write_bytes(b"stale")  # from an earlier run: must go
    write_leaderboard(results, base / "a")
    write_leaderboard(results, base / "b")
    return base / "a", base / "b"


def _files(d: Path) -> dict[str, bytes]:
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


def test_every_output_is_byte_identical_on_rerun(built: tuple[Path, Path]) -> None:
    a, b = _files(built[0]), _files(built[1])
    assert set(a) >= {"leaderboard.json", "LEADERBOARD.md", "leaderboard.csv", "compare.json", "index.html"}
    assert sum(name.startswith("img/") and name.endswith(".png") for name in a) == 6  # 3 figures per group
    assert set(a) == set(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs"
    png = a[next(n for n in a if n.endswith(".png"))]
    assert b"Software" not in png and b"tEXt" not in png  # no metadata chunks


def test_rows_ranks_and_family_mean_ranks(results: Path) -> None:
    board = build_leaderboard(results)
    g1 = board["groups"][0]
    rows = [r for r in board["rows"] if r["config_hash"] == g1["config_hash"]]
    assert len(rows) == 6 and len(board["rows"]) == 8  # 3 models × 2 methods, then 2 models × 1 method
    for r in rows:
        assert set(r["metrics"]) == {"faithfulness_correlation", "deletion_auc", "sparseness", "complexity"}
        for s in r["metrics"].values():
            assert s["n"] == 30 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        best = r["objective"] == "supcon"
        assert r["metrics"]["deletion_auc"]["rank"] == (1 if best else 2)  # lower is better
        assert r["metrics"]["faithfulness_correlation"]["rank"] == (1 if best else 2)
        assert r["mean_rank"] == {"faithfulness": 1.0 if best else 2.0, "complexity": 1.0 if best else 2.0}


def test_groups_are_never_ranked_together_and_say_why(results: Path) -> None:
    board = build_leaderboard(results)
    g1, g2 = board["groups"]
    assert g1["why_apart"] == [] and len(g1["models"]) == 3
    assert "sparseness version 2 here vs 1" in g2["why_apart"] and "n_samples 10 here vs 30" in g2["why_apart"]
    assert "metrics only in the reference group: deletion_auc, faithfulness_correlation" in g2["why_apart"]
    g2_rows = [r for r in board["rows"] if r["config_hash"] == g2["config_hash"]]
    assert sorted(r["metrics"]["sparseness"]["rank"] for r in g2_rows) == [1, 2]  # ranked among themselves only
    assert any("per-sample file" in n and "missing" in n for n in board["notes"])


def test_csv_matches_the_json(built: tuple[Path, Path]) -> None:
    out = built[0]
    board = json.loads((out / "leaderboard.json").read_text())
    with open(out / "leaderboard.csv", newline="") as f:
        recs = list(csv.DictReader(f))
    assert list(recs[0]) == CSV_COLUMNS
    assert len(recs) == sum(len(r["metrics"]) for r in board["rows"])
    first = board["rows"][0]
    m = sorted(first["metrics"])[0]
    rec = next(x for x in recs if x["model"] == first["model"] and x["method"] == first["method"] and x["metric"] == m
               and x["config_hash"] == first["config_hash"])
    assert float(rec["mean"]) == first["metrics"][m]["mean"] and int(rec["rank"]) == first["metrics"][m]["rank"]
    assert ("parquet" in {p.suffix[1:] for p in out.iterdir()}) == (util.find_spec("pyarrow") is not None)


def test_markdown_and_compare_json_carry_the_claim_check(built: tuple[Path, Path]) -> None:
    out = built[0]
    md = (out / "LEADERBOARD.md").read_text()
    cmp = json.loads((out / "compare.json").read_text())
    holds = [c for c in cmp["claim_check"] if c["a"] == "SupCon" and c["b"] == "SimCLR"]
    assert [c["holds"] for c in holds] == [True, True]
    assert "## Objective comparison" in md and "### Claim check" in md
    assert "SupCon beats SimCLR on 4 of 4 (method, metric) pairs at α=0.05 after Holm" in md
    assert "Ranked apart from group g1" in md and "![ranks](img/" in md


def test_html_is_static_and_complete(built: tuple[Path, Path]) -> None:
    out = built[0]
    html = (out / "index.html").read_text()
    board = json.loads((out / "leaderboard.json").read_text())
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "network asset in index.html"
    assert "@import" not in html and "<link" not in html
    assert html.count('<tr class="lb-row"') == len(board["rows"])
    assert html.count('class="lb sortable"') == len(board["groups"]) and 'class="cmp sortable"' in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 6 and all((out / s).is_file() for s in srcs)
    assert "Ranked apart from group g1" in html and "sparseness version 2 here vs 1" in html
    assert "SCL beats CL" in html


def test_html_leads_with_the_claim_check(built: tuple[Path, Path]) -> None:
    html = (built[0] / "index.html").read_text()
    assert html.index('id="claim-check"') < html.index('<section class="group"') < html.index('id="compare"')
    assert html.count('<tr class="claim-row"') == 3  # SupCon vs SimCLR, CE vs SupCon, CE vs SimCLR
    assert "“SCL beats CL” holds in faithfulness, complexity" in html
    assert html.count('<div class="scroll" role="region" tabindex="0"') == html.count("<table ")  # all framed


def test_summary_prints_the_claim_check_in_a_dozen_lines(built: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sclzoo.evaluator.compare import PAIR_ORDER
    from sclzoo.evaluator.summary import CLAIM_PAIRS, main, summary_lines

    assert CLAIM_PAIRS == PAIR_ORDER
    lines = summary_lines(built[0])
    assert len(lines) <= 12
    assert lines[0].startswith("Claim check: paired Wilcoxon tests, Holm per metric family, α = 0.05")
    assert "  SupCon vs SimCLR  faithfulness 4/0/0  complexity 4/0/0" in lines
    assert any("“SCL beats CL” holds in faithfulness, complexity" in line for line in lines)
    assert lines[-1] == f"Page: {built[0] / 'index.html'} · tables: {built[0] / 'LEADERBOARD.md'}"
    assert main([str(built[0])]) == 0 and capsys.readouterr().out.splitlines() == lines
    assert main([str(built[0] / "img")]) == 1 and "no compare.json" in capsys.readouterr().err


def test_gallery_shows_labels_predictions_and_a_colour_bar() -> None:
    from sclzoo.evaluator.plots import maps_gallery

    rng = np.random.default_rng(0)
    images, maps = rng.random((3, 1, 8, 8)), rng.normal(size=(3, 8, 8))
    with_preds = maps_gallery(images, [("CE · saliency", maps, [1, 2, 0])], [5, 6, 7], labels=[1, 2, 3])
    assert with_preds == maps_gallery(images, [("CE · saliency", maps, [1, 2, 0])], [5, 6, 7], labels=[1, 2, 3])
    plain = maps_gallery(images, [("CE · saliency", maps)], [5, 6, 7])  # what results without labels give
    assert plain != with_preds and plain.startswith(b"\x89PNG")


def test_stale_figures_are_removed(built: tuple[Path, Path]) -> None:
    assert not (built[0] / "img" / "old_group_ranks.png").exists()


def test_maps_round_trip_with_deterministic_bytes(tmp_path: Path) -> None:
    res = tmp_path / ("a" * 64 + ".json")
    maps = {"saliency": np.random.default_rng(0).normal(size=(3, 5, 5)).astype(np.float32)}
    write_maps(res, maps, np.array([4, 7, 9]), np.zeros((3, 1, 5, 5), np.float32))
    first = maps_path(res).read_bytes()
    write_maps(res, maps, np.array([4, 7, 9]), np.zeros((3, 1, 5, 5), np.float32))
    assert maps_path(res).read_bytes() == first
    back = read_maps(res)
    assert back is not None and back["sample_ids"].tolist() == [4, 7, 9] and back["images"].shape == (3, 1, 5, 5)
    np.testing.assert_array_equal(back["maps"]["saliency"], maps["saliency"])
    assert read_maps(tmp_path / ("b" * 64 + ".json")) is None


def test_empty_results_folder(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    paths = write_leaderboard(tmp_path / "results", tmp_path / "out")
    assert "No results yet" in paths["markdown"].read_text() and "No results yet" in paths["html"].read_text()
