"""Objective comparison: paired Wilcoxon tests, Holm correction, direction, NaN handling and the claim check, on
synthetic per-sample scores whose answer is known."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lb_synth import shifted_zoo, write_synthetic

from sclzoo.evaluator.compare import (
    SampleScores,
    compare_folder,
    compare_records,
    format_markdown,
    holm,
    paired_test,
    training_of,
)


def _record(objective: str, scores: dict[tuple[str, str], np.ndarray], *, ids: np.ndarray | None = None,
            indices: str = "i" * 64, higher: dict[str, bool] | None = None) -> SampleScores:
    n = len(next(iter(scores.values())))
    higher = higher or {}
    fam = {"deletion_auc": "faithfulness", "faithfulness_correlation": "faithfulness", "sparseness": "complexity",
           "complexity": "complexity"}
    return SampleScores(model=f"local/{objective}", name=objective, commit_sha=objective[0] * 40,
                        objective=objective, architecture="resnet8_cifar", dataset="mnist5k", indices_sha256=indices,
                        config_hash="c" * 64, sample_ids=np.arange(n) if ids is None else ids, scores=scores,
                        metrics={m: {"family": fam.get(m, "faithfulness"), "version": 1,
                                     "higher_is_better": higher.get(m, m not in ("deletion_auc", "complexity"))}
                                 for _, m in scores})


def _comparison(report: dict, a: str, b: str) -> dict:
    for g in report["groups"]:
        for c in g["comparisons"]:
            if (c["a"]["objective"], c["b"]["objective"]) == (a, b):
                return c
    raise AssertionError(f"no comparison {a} vs {b}")


def test_holm_matches_hand_computed_values() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []


def test_exact_small_sample_p_value_and_holm_over_the_family() -> None:
    # 6 positive differences: exact two-sided p = 2 / 2^6; Holm over two such tests doubles it past α.
    rng = np.random.default_rng(0)
    t = paired_test(np.arange(6.0) + 1, np.zeros(6), True, rng)
    assert t["p_value"] == pytest.approx(0.03125) and t["better"] == "a" and t["n_pairs"] == 6
    a = {("saliency", "faithfulness_correlation"): np.arange(6.0) + 1, ("gradcam", "faithfulness_correlation"):
         np.arange(6.0) + 1}
    b = {k: np.zeros(6) for k in a}
    c = _comparison(compare_records([_record("supcon", a), _record("simclr", b)]), "supcon", "simclr")
    assert all(x["p_holm"] == pytest.approx(0.0625) and not x["significant"] for x in c["tests"])
    assert c["verdicts"][0]["a_wins"] == 0 and "does not hold" in c["verdicts"][0]["text"]


def test_clear_shift_is_significant_and_direction_aware(tmp_path: Path) -> None:
    shifted_zoo(tmp_path, n=30, shift=0.5)
    report = compare_folder(tmp_path)
    c = _comparison(report, "supcon", "simclr")
    assert len(c["tests"]) == 8 and c["n_common_samples"] == 30
    for t in c["tests"]:
        assert t["significant"] and t["winner"] == "supcon" and t["p_holm"] < 1e-6
        # the raw median difference has the sign of the metric's better direction
        assert (t["median_diff"] > 0.4) if t["higher_is_better"] else (t["median_diff"] < -0.4)
        lo, hi = t["median_diff_ci95"]
        assert lo <= t["median_diff"] <= hi
    texts = {v["family"]: v["text"] for v in c["verdicts"]}
    assert texts["faithfulness"].startswith("faithfulness: SupCon beats SimCLR on 4 of 4 (method, metric) pairs at "
                                            "α=0.05 after Holm; SimCLR beats SupCon on 0; 0 not significant")
    assert texts["faithfulness"].endswith("“SCL beats CL” holds for most pairs.")
    ce_supcon = _comparison(report, "ce", "supcon")  # CE is worded first against each contrastive objective
    assert all(t["winner"] == "supcon" for t in ce_supcon["tests"])
    assert all("SupCon is better on most pairs" in v["text"] for v in ce_supcon["verdicts"])
    claims = [(c["a"], c["b"], c["family"], c["holds"]) for c in report["claim_check"]]
    assert claims[:2] == [("SupCon", "SimCLR", "faithfulness", True), ("SupCon", "SimCLR", "complexity", True)]
    assert {(a, b) for a, b, _, _ in claims} == {("SupCon", "SimCLR"), ("CE", "SupCon"), ("CE", "SimCLR")}


def test_identical_scores_are_not_significant(tmp_path: Path) -> None:
    shifted_zoo(tmp_path, n=30)  # CE's scores are a copy of SimCLR's
    c = _comparison(compare_folder(tmp_path), "ce", "simclr")
    for t in c["tests"]:
        assert t["p_value"] == 1.0 and t["n_zero"] == 30 and not t["significant"] and t["winner"] is None
        assert t["median_diff"] == 0.0
    assert all(v["text"].endswith("neither is better on most pairs.") for v in c["verdicts"])


def test_lower_is_better_flips_the_direction() -> None:
    rng = np.random.default_rng(0)
    a = np.linspace(1, 2, 20)
    b = a - 0.5
    assert paired_test(a, b, True, rng)["better"] == "a"
    assert paired_test(a, b, False, rng)["better"] == "b"
    # SupCon scores higher on both metrics: that wins sparseness (↑) and loses complexity (↓).
    sup = _record("supcon", {("saliency", "sparseness"): a, ("saliency", "complexity"): a})
    sim = _record("simclr", {("saliency", "sparseness"): b, ("saliency", "complexity"): b})
    c = _comparison(compare_records([sim, sup]), "supcon", "simclr")
    winners = {t["metric"]: t["winner"] for t in c["tests"]}
    assert winners == {"sparseness": "supcon", "complexity": "simclr"}
    assert c["verdicts"][0]["a_wins"] == 1 and c["verdicts"][0]["b_wins"] == 1


def test_nan_pairs_are_dropped_and_counted() -> None:
    a = np.linspace(1, 2, 20)
    b = a - 0.3
    a[[0, 1, 2]] = np.nan
    b[[2, 3]] = np.nan
    t = paired_test(a, b, True, np.random.default_rng(0))
    assert t["n_pairs"] == 16 and t["n_dropped_nan"] == 4 and t["better"] == "a"
    empty = paired_test(np.full(5, np.nan), np.ones(5), True, np.random.default_rng(0))
    assert empty["p_value"] is None and empty["n_pairs"] == 0 and empty["n_dropped_nan"] == 5
    # an untestable pair is reported but not counted in its family
    sup = _record("supcon", {("saliency", "sparseness"): np.full(5, np.nan), ("gradcam", "sparseness"): np.ones(5)})
    sim = _record("simclr", {("saliency", "sparseness"): np.ones(5), ("gradcam", "sparseness"): np.ones(5)})
    c = _comparison(compare_records([sup, sim]), "supcon", "simclr")
    assert c["verdicts"][0]["n"] == 1 and len(c["tests"]) == 2


def test_only_same_images_and_config_are_compared() -> None:
    s = {("saliency", "sparseness"): np.ones(6)}
    report = compare_records([_record("supcon", s), _record("simclr", s, indices="j" * 64)])
    assert len(report["groups"]) == 2 and not any(g["comparisons"] for g in report["groups"])
    assert all("nothing to compare" in g["note"] for g in report["groups"]) and report["claim_check"] == []


def test_comparison_is_deterministic(tmp_path: Path) -> None:
    shifted_zoo(tmp_path, n=20, shift=0.05)
    rng = np.random.default_rng(3)
    write_synthetic(tmp_path, "ce", {"saliency": {"sparseness": rng.normal(size=20)}}, revision="r9")
    a = json.dumps(compare_folder(tmp_path), sort_keys=True)
    assert a == json.dumps(compare_folder(tmp_path), sort_keys=True)


def test_only_models_trained_the_same_way_are_compared() -> None:
    """An in-domain (patch-deletion) SupCon model is never paired with a standard SimCLR model: the difference would
    be the augmentation's as much as the objective's."""
    rng = np.random.default_rng(0)
    s = {("saliency", "sparseness"): rng.uniform(size=20)}
    pd = "patch deletion g4 v0.0 p0.5"
    recs = [_record("supcon", s), _record("simclr", s), _record("supcon", s), _record("simclr", s)]
    recs[2] = replace(recs[2], model="local/supcon-pd", commit_sha="d" * 40, training=pd)
    recs[3] = replace(recs[3], model="local/simclr-pd", commit_sha="e" * 40, training=pd)
    report = compare_records(recs)
    assert sorted(g["training"] for g in report["groups"]) == [pd, "standard"]
    for g in report["groups"]:
        (c,) = g["comparisons"]
        models = {c["a"]["model"], c["b"]["model"]}
        assert models == ({"local/supcon-pd", "local/simclr-pd"} if g["training"] == pd
                          else {"local/supcon", "local/simclr"})
    assert sorted(c["training"] for c in report["claim_check"]) == [pd, "standard"]
    assert f"trained with {pd}" in format_markdown(report)


def test_training_of_a_result_model_block() -> None:
    assert training_of({"id": "m"}) == "standard"
    assert training_of({"patch_deletion": {"grid": 4, "value": 0.0, "p": 0.5}}) == "patch deletion g4 v0.0 p0.5"
