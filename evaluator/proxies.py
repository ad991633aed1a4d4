"""Are the proxies right? Two checks the claim check rests on (docs/protocol.md#claim-check-v2).

1. **Ground truth vs faithfulness proxies.** On a dataset with ground-truth masks (``mnist5k-clutter``) the
   localisation metrics say where the evidence really is. Across the (model, method) cells of one config, the
   Spearman rank correlation between the mean ``relevance_mass_accuracy`` and the mean of each faithfulness metric
   says whether the proxy ranks explanations the way the ground truth does. Scores are signed so that a positive
   correlation means agreement (a lower-is-better metric such as ``deletion_auc`` is negated). Two percentile
   bootstrap 95 % CIs: over images (the same resampled images for every cell, since they are paired; the cell
   means and the correlation recomputed per resample), which says how much the figure owes to the 64 images, and
   over cells (the (model, method) cells resampled with replacement), which says how much it owes to which models
   and methods happen to be in the zoo; with 12 cells the second is the wider and the one to quote.
2. **Out-of-domain deletion vs in-domain single deletion.** For every pair of objectives compared on the same
   images (:mod:`sclzoo.evaluator.compare`), per method: which model ``deletion_auc`` (images with deleted pixels,
   out of the training domain unless the model was trained with patch deletion) finds more faithful, and which
   ``single_deletion`` (one patch at a time, in-domain for a patch-deletion model) does; where they disagree the
   "faithfulness" verdict is as much about robustness to deleted pixels as about the explanations.

Both are computed from the per-sample scores of the results (``SampleScores``); nothing is re-evaluated.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from sclzoo.evaluator.compare import SampleScores, objective_name

__all__ = ["REFERENCE", "N_BOOTSTRAP", "ground_truth_agreement", "deletion_vs_single_deletion", "format_markdown",
           "format_rho"]

REFERENCE = "relevance_mass_accuracy"
N_BOOTSTRAP = 1000
MIN_POINTS = 4  # a rank correlation of fewer cells says nothing


def _signed(r: SampleScores, metric: str, method: str) -> np.ndarray:
    x = r.scores[(method, metric)]
    return x if r.metrics[metric]["higher_is_better"] else -x


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_POINTS or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def _cell_means(cells: Sequence[tuple[SampleScores, str]], metric: str, rows: np.ndarray | None) -> np.ndarray:
    out = []
    for r, method in cells:
        x = _signed(r, metric, method)
        x = x if rows is None else x[rows]
        out.append(np.nanmean(x) if np.isfinite(x).any() else np.nan)
    return np.asarray(out, dtype=np.float64)


def ground_truth_agreement(records: Sequence[SampleScores], reference: str = REFERENCE,
                           n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> list[dict[str, Any]]:
    """Per config that scores ``reference``: Spearman across (model, method) cells between it and each
    faithfulness metric, with a bootstrap 95 % CI over images.

    Returns:
        One entry per config: ``{"config_hash", "dataset", "architecture", "reference", "n_cells", "n_images",
        "cells": [{"model", "commit_sha", "objective", "method"}], "correlations": {metric: {"rho", "ci95",
        "ci95_cells", "higher_is_better"}}}``; ``rho`` is None when fewer than 4 cells have finite means or one side
        is constant (then both CIs are ``[None, None]``).
    """
    by_config: dict[tuple[str, str, str, str], list[SampleScores]] = {}
    for r in records:
        if reference in r.metrics:
            by_config.setdefault((r.architecture, r.dataset, r.indices_sha256, r.config_hash), []).append(r)
    out = []
    for (arch, dataset, _, config_hash), members in sorted(by_config.items()):
        members = sorted(members, key=lambda r: (r.objective, r.key))
        ids = members[0].sample_ids
        if any(not np.array_equal(m.sample_ids, ids) for m in members):
            continue  # same config hash, same indices: the files list the same images in the same order
        faith = sorted({k for m in members for k, v in m.metrics.items() if v["family"] == "faithfulness"})
        cells = [(m, method) for m in members for method in sorted({meth for meth, _ in m.scores})
                 if (method, reference) in m.scores]
        rng = np.random.default_rng([seed, zlib.crc32(config_hash.encode())])
        boots = [rng.integers(0, len(ids), len(ids)) for _ in range(n_bootstrap)]
        ref_full = _cell_means(cells, reference, None)
        ref_boot = [_cell_means(cells, reference, b) for b in boots]
        cell_boots = [rng.integers(0, len(cells), len(cells)) for _ in range(n_bootstrap)]
        corr = {}
        for metric in faith:
            if not all((method, metric) in m.scores for m, method in cells):
                continue
            proxy_full = _cell_means(cells, metric, None)
            rho = _spearman(ref_full, proxy_full)
            ci: list[float | None] = [None, None]
            ci_cells: list[float | None] = [None, None]
            if rho is not None:
                by_cell = [_spearman(ref_full[c], proxy_full[c]) for c in cell_boots]
                kept = np.array([v for v in by_cell if v is not None], dtype=np.float64)
                if len(kept):
                    ci_cells = [float(np.percentile(kept, 2.5)), float(np.percentile(kept, 97.5))]
                boot = [_spearman(rb, _cell_means(cells, metric, b)) for rb, b in zip(ref_boot, boots, strict=True)]
                vals = np.array([v for v in boot if v is not None], dtype=np.float64)
                if len(vals):
                    ci = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]
            corr[metric] = {"rho": rho, "ci95": ci, "ci95_cells": ci_cells,
                            "higher_is_better": bool(members[0].metrics[metric]["higher_is_better"])}
        out.append({"config_hash": config_hash, "dataset": dataset, "architecture": arch, "reference": reference,
                    "n_cells": len(cells), "n_images": int(len(ids)), "n_bootstrap": n_bootstrap,
                    "cells": [{"model": m.model, "commit_sha": m.commit_sha, "objective": m.objective,
                               "method": method} for m, method in cells],
                    "correlations": corr})
    return out


def deletion_vs_single_deletion(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Per compared pair and method: the winner under ``deletion_auc`` and under ``single_deletion`` (``None``:
    not significant after Holm) and whether they agree. Reads :func:`sclzoo.evaluator.compare.compare_records`
    output; pairs that lack either metric are left out."""
    out = []
    for g in comparison["groups"]:
        for c in g["comparisons"]:
            by = {(t["method"], t["metric"]): t for t in c["tests"]}
            for method in sorted({t["method"] for t in c["tests"]}):
                d, s = by.get((method, "deletion_auc")), by.get((method, "single_deletion"))
                if d is None or s is None:
                    continue
                out.append({"config_hash": g["config_hash"], "dataset": g["dataset"],
                            "training": g.get("training", "standard"), "a": c["a"]["label"], "b": c["b"]["label"],
                            "method": method, "deletion_auc": d["winner"], "single_deletion": s["winner"],
                            "agree": d["winner"] == s["winner"]})
    return out


def format_rho(v: float | None) -> str:
    """A correlation for tables (signed, 2 decimals; a dash when undefined); the HTML page uses it too."""
    return "–" if v is None else f"{v:+.2f}"


def format_markdown(agreement: list[dict[str, Any]], deletion: list[dict[str, Any]]) -> str:
    """Both checks as Markdown (empty when neither has anything to show)."""
    lines: list[str] = []
    if deletion:
        n_agree = sum(d["agree"] for d in deletion)
        lines += ["### Out-of-domain deletion vs in-domain single deletion", "",
                  f"Per compared pair and method, the more faithful model by `deletion_auc` (pixels deleted: out of "
                  f"the training domain unless the model was trained with patch deletion) and by `single_deletion` "
                  f"(one patch at a time); n.s. = not significant after Holm. They agree on {n_agree} of "
                  f"{len(deletion)}.", "",
                  "| dataset | training | pair | method | deletion_auc | single_deletion | agree |",
                  "|---|---|---|---|---|---|---|"]
        for d in deletion:
            lines.append(f"| {d['dataset']} | {d['training']} | {d['a']} vs {d['b']} | {d['method']} | "
                         f"{objective_name(d['deletion_auc']) if d['deletion_auc'] else 'n.s.'} | "
                         f"{objective_name(d['single_deletion']) if d['single_deletion'] else 'n.s.'} | "
                         f"{'yes' if d['agree'] else '**no**'} |")
        lines.append("")
    for a in agreement:
        lines += [f"### Ground truth vs faithfulness proxies · {a['dataset']} · config `{a['config_hash'][:12]}`", "",
                  f"Spearman rank correlation across {a['n_cells']} (model, method) cells between the mean "
                  f"`{a['reference']}` (how much attribution falls inside the ground-truth mask) and the mean of each "
                  f"faithfulness metric, signed so that positive = the proxy ranks explanations as the ground truth "
                  f"does. 95 % CIs by percentile bootstrap ({a['n_bootstrap']} resamples) over the cells (which "
                  f"models and methods) and over the {a['n_images']} images.", "",
                  "| faithfulness metric | ρ with ground truth | 95 % CI, cells | 95 % CI, images |", "|---|---|---|---|"]
        for metric, v in a["correlations"].items():
            arrow = "↑" if v["higher_is_better"] else "↓ (negated)"
            cc = v.get("ci95_cells", [None, None])
            lines.append(f"| {metric} {arrow} | {format_rho(v['rho'])} | [{format_rho(cc[0])}, {format_rho(cc[1])}] | "
                         f"[{format_rho(v['ci95'][0])}, {format_rho(v['ci95'][1])}] |")
        lines.append("")
    return "\n".join(lines)
