"""How far each metric can be trusted on the zoo it ranks: the leaderboard's view of meta results
(docs/protocol.md#meta-evaluation, docs/artifacts.md#leaderboard-files).

A meta result (:mod:`sclzoo.evaluator.meta_results`) belongs to the leaderboard group whose config hash its
evaluation records, for the row of the same weights. A metric's **MC on the zoo** is the mean of its MC over the
group's models that have a meta result (each part, resilience and reactivity likewise); when one model has several
meta results for the group's config, the one with the most noise draws is used (then the smallest meta hash), so
the choice never depends on file order.

A metric is **reliable on the zoo** when its MC on the zoo is above :data:`MC_THRESHOLD` = 0.65. Why: a metric
blind to the model cannot do better than 0.625. Its scores move the same way under minor and disruptive noise, so
its two IAC parts add up to 1 on average (p and 1 − p of the same distribution) and IEC_AR, the chance that a score
gets worse, is 0 for a deterministic metric (MC 0.5: IAC_NR = IEC_NR = 1, IAC_AR = IEC_AR = 0) and 1/2 under
symmetric evaluation noise; with IEC_NR at most 1 that gives at most (1 + 1 + 0.5) / 4 = 0.625. The 0.025 above it
is a margin for an MC estimated from a few draws. The claim check (:mod:`sclzoo.evaluator.compare`) gives each
family's verdict on its reliable metrics alone beside the verdict on all of them.

Pure functions of the documents: torch-free, deterministic, and absent from every output when there is no meta
result, so a leaderboard without meta results is byte-identical to one built before they existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sclzoo.evaluator.config import EXECUTION_KEYS
from sclzoo.evaluator.consistency import PARTS
from sclzoo.evaluator.results import weights_id

__all__ = ["MC_THRESHOLD", "VALUES", "zoo_reliability", "mc_by_config", "is_reliable", "format_markdown",
           "fmt"]

#: MC above which a metric counts as reliable on a zoo (module docstring).
MC_THRESHOLD = 0.65
#: What is averaged over a zoo's models, per metric.
VALUES = ("mc", *PARTS, "resilience", "reactivity")


def is_reliable(mc: float | None, threshold: float = MC_THRESHOLD) -> bool:
    """Whether an MC score counts as reliable (a missing MC never does)."""
    return mc is not None and mc > threshold


def _draws(doc: dict[str, Any]) -> int:
    mc = doc["meta_config"]
    return int(mc["iterations"]) * int(mc["perturbations"])


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _without(cfg: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in keys and k not in EXECUTION_KEYS}


def same_images_and_methods(meta_cfg: dict[str, Any], group_cfg: dict[str, Any]) -> bool:
    """Whether a meta result's evaluation config and a leaderboard group's scoring config agree on everything but
    the list of metrics (dataset, images, target, seed, methods, preprocessing). The ground-truth mask only matters
    to the metrics that read it (:func:`same_metric`)."""
    return bool(meta_cfg) and _without(meta_cfg, "metrics", "mask") == _without(group_cfg, "metrics", "mask")


def same_metric(meta_cfg: dict[str, Any], group_cfg: dict[str, Any], metric: str) -> bool:
    """Whether ``metric`` has the same parameters (and version) in both configs.

    A metric's scores depend only on its own parameters, the images, the methods and the seed: every random draw
    is keyed by (seed, metric name, sample id) (evaluator/seeding.py), never by which other metrics run. So a meta
    result of a config with fewer (or other) metrics still tells how far this metric can be trusted here.
    """
    from sclzoo.evaluator.metrics import METRICS

    mine = meta_cfg.get("metrics", {}).get(metric)
    if mine is None or mine != group_cfg.get("metrics", {}).get(metric):
        return False
    return metric not in METRICS or not METRICS.get(metric).needs_mask or meta_cfg.get("mask") == group_cfg.get("mask")


def _preference(doc: dict[str, Any], grp: dict[str, Any]) -> tuple[int, int, str]:
    """Sort key among one model's matching meta results: the group's exact config first, then more draws."""
    return (doc["evaluation"]["config_hash"] != grp["config_hash"], -_draws(doc), doc["meta_hash"])


def zoo_reliability(board: dict[str, Any], metas: Sequence[Any]) -> dict[str, Any] | None:
    """Per leaderboard group, each metric's MC (and parts) on the zoo from the meta results that match it.

    Args:
        board: :func:`~sclzoo.evaluator.leaderboard.build_leaderboard` output.
        metas: :class:`~sclzoo.evaluator.meta_results.LoadedMeta` of a results folder (already validated).

    Returns:
        None when no meta result matches any group; else ``{"threshold", "groups": {group id: {"metrics":
        {metric: {"family", "higher_is_better", "mc", "iac_nr", …, "n_models", "reliable", "models": [...]}},
        "files": [...]}}}``.
    """
    out: dict[str, Any] = {}
    for grp in board["groups"]:
        rows = [r for r in board["rows"]
                if r["config_hash"] == grp["config_hash"] and r["dataset"] == grp["dataset"]]
        by_weights: dict[str, dict[str, Any]] = {}
        for r in rows:
            by_weights.setdefault(r["weights_id"], r)
        candidates: dict[str, list[Any]] = {}
        for lm in metas:
            doc = lm.doc
            w = weights_id(doc)
            if doc["dataset"]["id"] != grp["dataset"] or w not in by_weights or not same_images_and_methods(
                    doc["evaluation"].get("config", {}), grp.get("config", {})):
                continue
            candidates.setdefault(w, []).append(lm)
        if not candidates:
            continue
        order = sorted(candidates, key=lambda w: (by_weights[w]["objective"], by_weights[w]["model"],
                                                  by_weights[w]["commit_sha"]))
        metrics: dict[str, Any] = {}
        used: set[str] = set()
        for metric in grp["metrics"]:
            per_model = []
            for w in order:
                # per metric, the preferred meta result of this model that scored it with the group's parameters
                covering = [lm for lm in candidates[w] if metric in lm.doc["metrics"]
                            and same_metric(lm.doc["evaluation"].get("config", {}), grp.get("config", {}), metric)]
                if not covering:
                    continue
                lm = min(covering, key=lambda x: _preference(x.doc, grp))
                m = lm.doc["metrics"][metric]
                used.add(lm.file)
                r = by_weights[w]
                per_model.append({"model": r["model"], "commit_sha": r["commit_sha"], "label": r["label"],
                                  "objective": r["objective"], "file": lm.file,
                                  "sigma_minor": lm.doc["tests"]["minor"]["sigma"],
                                  "sigma_disruptive": lm.doc["tests"]["disruptive"]["sigma"],
                                  **{k: m[k] for k in VALUES}})
            if not per_model:
                continue
            info = grp["metric_info"][metric]
            entry = {"family": info["family"], "higher_is_better": info["higher_is_better"],
                     **{k: _mean([p[k] for p in per_model]) for k in VALUES},
                     "n_models": len(per_model), "models": per_model}
            entry["reliable"] = is_reliable(entry["mc"])
            metrics[metric] = entry
        if metrics:
            out[grp["id"]] = {"config_hash": grp["config_hash"], "dataset": grp["dataset"], "metrics": metrics,
                              "files": sorted(used)}
    if not out:
        return None
    return {"threshold": MC_THRESHOLD, "groups": out}


def mc_by_config(rel: dict[str, Any] | None) -> dict[str, dict[str, float | None]] | None:
    """``{config_hash: {metric: MC on the zoo}}`` for the claim check (None when there is no meta result)."""
    if rel is None:
        return None
    out: dict[str, dict[str, float | None]] = {}
    for g in rel["groups"].values():
        out.setdefault(g["config_hash"], {}).update({m: v["mc"] for m, v in g["metrics"].items()})
    return out


def fmt(v: float | None, digits: int = 2) -> str:
    """A consistency value for tables (a dash when undefined)."""
    return "–" if v is None else f"{v:.{digits}f}"


def format_markdown(group: dict[str, Any], threshold: float = MC_THRESHOLD) -> list[str]:
    """A group's reliability table as Markdown lines: per metric its MC on the zoo and the four parts."""
    lines = ["### How far each metric can be trusted here (meta-evaluation)", "",
             f"MetaQuantus's model-perturbation tests (docs/protocol.md#meta-evaluation), mean over the "
             f"{max(g['n_models'] for g in group['metrics'].values())} model(s) with a meta result. MC = mean of "
             f"IAC_NR, IAC_AR, IEC_NR, IEC_AR in [0, 1]; reliable = MC > {threshold:g}. Resilience = mean of the NR "
             "parts (scores stay under minor weight noise), reactivity = mean of the AR parts (they move under "
             "disruptive noise).", "",
             "| metric | family | MC | IAC_NR | IAC_AR | IEC_NR | IEC_AR | resilience | reactivity | models | reliable |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for metric, v in group["metrics"].items():
        arrow = "↑" if v["higher_is_better"] else "↓"
        lines.append(f"| {metric} {arrow} | {v['family']} | {fmt(v['mc'])} | {fmt(v['iac_nr'])} | "
                     f"{fmt(v['iac_ar'])} | {fmt(v['iec_nr'])} | {fmt(v['iec_ar'])} | {fmt(v['resilience'])} | "
                     f"{fmt(v['reactivity'])} | {v['n_models']} | {'yes' if v['reliable'] else 'no'} |")
    lines.append("")
    return lines
