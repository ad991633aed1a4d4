"""Checks of the proxies (evaluator/proxies.py): ground truth vs faithfulness metrics, deletion vs single deletion."""

from __future__ import annotations

import numpy as np
import pytest

from sclzoo.evaluator.compare import SampleScores, compare_records
from sclzoo.evaluator.proxies import deletion_vs_single_deletion, format_markdown, ground_truth_agreement

FAMILY = {"relevance_mass_accuracy": ("localisation", True), "faithfulness_correlation": ("faithfulness", True),
          "deletion_auc": ("faithfulness", False), "single_deletion": ("faithfulness", True)}


def _record(objective: str, scores: dict[tuple[str, str], np.ndarray], config: str = "c") -> SampleScores:
    n = len(next(iter(scores.values())))
    return SampleScores(model=f"local/{objective}", name=objective, commit_sha=objective[0] * 40,
                        objective=objective, architecture="resnet8_cifar", dataset="mnist5k-clutter",
                        indices_sha256="i" * 64, config_hash=config * 64, sample_ids=np.arange(n), scores=scores,
                        metrics={m: {"family": FAMILY[m][0], "higher_is_better": FAMILY[m][1], "version": 1}
                                 for _, m in scores})


def _zoo(n: int = 40, seed: int = 0) -> list[SampleScores]:
    """4 models x 2 methods; per cell the ground truth has mean level = cell index. faithfulness_correlation follows
    it, deletion_auc (lower is better) rises with it (so it disagrees once signed), single_deletion is noise."""
    rng = np.random.default_rng(seed)
    out, level = [], 0
    for obj in ("ce", "supcon", "simclr", "triplet"):
        scores = {}
        for method in ("saliency", "gradcam"):
            gt = level + rng.normal(0, 0.1, n)
            scores[(method, "relevance_mass_accuracy")] = gt
            scores[(method, "faithfulness_correlation")] = 2 * gt + rng.normal(0, 0.1, n)
            scores[(method, "deletion_auc")] = gt + rng.normal(0, 0.1, n)
            scores[(method, "single_deletion")] = rng.normal(0, 1, n)
            level += 1
        out.append(_record(obj, scores))
    return out


def test_a_proxy_that_follows_the_ground_truth_correlates_and_one_that_inverts_it_anticorrelates() -> None:
    (a,) = ground_truth_agreement(_zoo(), n_bootstrap=200)
    assert a["n_cells"] == 8 and a["n_images"] == 40 and a["reference"] == "relevance_mass_accuracy"
    fc, da, sd = (a["correlations"][m] for m in ("faithfulness_correlation", "deletion_auc", "single_deletion"))
    assert fc["rho"] == pytest.approx(1.0) and fc["ci95"][0] > 0.9 and fc["ci95_cells"][0] > 0.9
    assert da["rho"] == pytest.approx(-1.0) and da["ci95"][1] < -0.9  # lower-is-better metric, negated
    assert abs(sd["rho"]) < 0.9 and sd["ci95"][0] < sd["rho"] < sd["ci95"][1]
    assert ground_truth_agreement(_zoo(), n_bootstrap=200) == ground_truth_agreement(_zoo(), n_bootstrap=200)


def test_no_ground_truth_metric_means_no_agreement_entry() -> None:
    zoo = [_record(r.objective, {k: v for k, v in r.scores.items() if k[1] != "relevance_mass_accuracy"})
           for r in _zoo()]
    assert ground_truth_agreement(zoo) == []


def test_too_few_cells_give_no_correlation() -> None:
    (a,) = ground_truth_agreement(_zoo()[:1], n_bootstrap=50)  # 2 cells
    assert all(v["rho"] is None and v["ci95"] == v["ci95_cells"] == [None, None] for v in a["correlations"].values())


def test_deletion_check_lists_where_the_two_deletions_disagree() -> None:
    rng = np.random.default_rng(1)
    n = 40
    base = rng.normal(0, 1, n)
    sup = {("saliency", "deletion_auc"): base, ("saliency", "single_deletion"): base + 1.0}
    sim = {("saliency", "deletion_auc"): base - 1.0, ("saliency", "single_deletion"): base}
    report = compare_records([_record("supcon", sup), _record("simclr", sim)], n_bootstrap=50)
    (d,) = deletion_vs_single_deletion(report)
    # deletion_auc (lower is better) prefers SimCLR, single_deletion (higher is better) SupCon
    assert (d["deletion_auc"], d["single_deletion"], d["agree"]) == ("simclr", "supcon", False)
    assert report["deletion_check"] == [d]
    md = format_markdown([], [d])
    assert "They agree on 0 of 1" in md and "**no**" in md
