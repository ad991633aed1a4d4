"""The leaderboard: a pure function of a folder of result files.

``build_leaderboard(results_dir)`` reads every ``*.json`` result (never the samples files' absence: a result with
no samples is reported), groups rows by comparable configuration (metric, version and config hash must agree to be
ranked together) and ranks models per metric. ``write_leaderboard`` writes ``leaderboard.json`` and
``LEADERBOARD.md``; running it twice on the same folder gives byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from sclzoo.errors import ResultError
from sclzoo.evaluator.results import read_result

__all__ = ["collect_rows", "build_leaderboard", "write_leaderboard", "format_markdown"]


def collect_rows(results_dir: str | Path) -> pd.DataFrame:
    """One row per (result file, method, metric) with the aggregate score and what makes rows comparable."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultError(f"results folder {str(root)!r} does not exist; run `sclzoo evaluate` first")
    rows = []
    for f in sorted(root.rglob("*.json")):
        if f.name.startswith("."):
            continue
        r = read_result(f)
        if r.get("schema_version") != 1 or "scores" not in r:
            continue
        for method, per_metric in r["scores"].items():
            for metric, agg in per_metric.items():
                rows.append({
                    "model": r["model"]["id"],
                    "name": r["model"].get("name", r["model"]["id"]),
                    "objective": r["model"]["objective"],
                    "architecture": r["model"]["architecture"],
                    "commit_sha": r["model"]["commit_sha"],
                    "dataset": r["dataset"]["id"],
                    "n_evaluated": r["dataset"]["n_evaluated"],
                    "config_hash": r["config_hash"],
                    "accuracy": r["accuracy"]["torch"]["value"],
                    "method": method,
                    "metric": metric,
                    "family": agg["family"],
                    "higher_is_better": agg["higher_is_better"],
                    "version": agg["version"],
                    "mean": agg["mean"],
                    "ci95_low": agg["ci95"][0],
                    "ci95_high": agg["ci95"][1],
                    "stderr": agg["stderr"],
                    "n": agg["n"],
                    "n_nan": agg["n_nan"],
                    "file": str(f.relative_to(root)),
                })
    return pd.DataFrame(rows)


def build_leaderboard(results_dir: str | Path) -> dict[str, Any]:
    """Ranks models per (config hash, method, metric, version) group.

    Returns:
        ``{"groups": [...], "rows": [...]}``: each row is one model × method in one comparable group with every
        metric's mean, CI, n, n_nan and rank, plus the mean rank per family.
    """
    df = collect_rows(results_dir)
    if df.empty:
        return {"groups": [], "rows": []}
    out_rows: list[dict[str, Any]] = []
    groups = []
    for (config_hash, dataset), g in df.groupby(["config_hash", "dataset"], sort=True):
        g = g.copy()
        # Rank within (method, metric, version): 1 = best, direction-aware; NaN means lose.
        g["rank"] = 0.0
        for _, sub in g.groupby(["method", "metric", "version"], sort=True):
            asc = not bool(sub["higher_is_better"].iloc[0])
            g.loc[sub.index, "rank"] = sub["mean"].rank(ascending=asc, method="min", na_option="bottom")
        groups.append({"config_hash": config_hash, "dataset": dataset,
                       "models": sorted(g["model"].unique().tolist()),
                       "methods": sorted(g["method"].unique().tolist()),
                       "metrics": sorted(g["metric"].unique().tolist())})
        for (model, method), sub in g.groupby(["model", "method"], sort=True):
            first = sub.iloc[0]
            metrics = {}
            for _, r in sub.sort_values("metric").iterrows():
                metrics[r["metric"]] = {
                    "family": r["family"], "higher_is_better": bool(r["higher_is_better"]),
                    "version": int(r["version"]), "mean": _f(r["mean"]),
                    "ci95": [_f(r["ci95_low"]), _f(r["ci95_high"])], "n": int(r["n"]), "n_nan": int(r["n_nan"]),
                    "rank": int(r["rank"]),
                }
            fam_rank = sub.groupby("family")["rank"].mean().sort_index()
            out_rows.append({
                "config_hash": config_hash, "dataset": dataset, "model": model, "name": first["name"],
                "objective": first["objective"], "architecture": first["architecture"],
                "commit_sha": first["commit_sha"], "accuracy": _f(first["accuracy"]),
                "n_evaluated": int(first["n_evaluated"]), "method": method, "metrics": metrics,
                "mean_rank": {fam: round(float(v), 4) for fam, v in fam_rank.items()},
            })
    return {"groups": groups, "rows": out_rows}


def _f(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _fmt(v: float | None) -> str:
    return "NaN" if v is None else f"{v:.4g}"


def format_markdown(board: dict[str, Any]) -> str:
    """The leaderboard as Markdown tables, one per comparable group and method."""
    lines = ["# sclzoo attribution leaderboard", ""]
    if not board["rows"]:
        return "\n".join([*lines, "No results yet: run `sclzoo evaluate`.", ""])
    for grp in board["groups"]:
        rows = [r for r in board["rows"] if r["config_hash"] == grp["config_hash"] and r["dataset"] == grp["dataset"]]
        lines += [f"## {grp['dataset']} · config `{grp['config_hash'][:12]}`", "",
                  "Rows are ranked only against rows with the same config hash and metric version. "
                  "Arrows give the better direction; rank 1 is best.", ""]
        metrics = grp["metrics"]
        for method in grp["methods"]:
            mrows = sorted((r for r in rows if r["method"] == method), key=lambda r: (r["objective"], r["model"]))
            if not mrows:
                continue
            arrows = {m: ("↑" if mrows[0]["metrics"].get(m, {}).get("higher_is_better", True) else "↓")
                      for m in metrics}
            lines += [f"### {method}", "",
                      "| model | objective | acc | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
                      "|---|---|---|" + "---|" * len(metrics)]
            for r in mrows:
                cells = []
                for m in metrics:
                    s = r["metrics"].get(m)
                    if s is None:
                        cells.append("–")
                        continue
                    nan = f", {s['n_nan']} NaN" if s["n_nan"] else ""
                    cells.append(f"{_fmt(s['mean'])} (#{s['rank']}{nan})")
                lines.append(f"| {r['name']} | {r['objective']} | {r['accuracy']:.3f} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def write_leaderboard(results_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Writes ``leaderboard.json`` and ``LEADERBOARD.md`` (deterministic bytes) into ``out_dir``."""
    board = build_leaderboard(results_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "leaderboard.json", "markdown": out / "LEADERBOARD.md"}
    paths["json"].write_text(json.dumps(board, indent=2, sort_keys=True, allow_nan=False) + "\n")
    paths["markdown"].write_text(format_markdown(board))
    return paths
