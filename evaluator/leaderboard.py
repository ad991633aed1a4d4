"""The leaderboard: a pure function of a folder of result files (docs/artifacts.md#leaderboard).

``build_leaderboard(results_dir)`` reads every result ``*.json`` and groups rows by comparable configuration:
rows are ranked together only when their config hash agrees (the hash covers the dataset, images, target, seed
and every method's and metric's parameters *and version*). Each group says why it is apart from the reference
group (the one with the most models). ``write_leaderboard`` writes into one folder:

- ``leaderboard.json``: groups and rows (one per model commit × method with every metric's mean, CI, n, n_nan and
  rank, plus the mean rank per family);
- ``leaderboard.csv`` (and ``leaderboard.parquet`` when pyarrow is installed): the same, one line per metric;
- ``compare.json``: the objective comparison and claim check (:mod:`sclzoo.evaluator.compare`);
- ``LEADERBOARD.md`` and ``index.html`` (static, no network assets, sortable tables) with the figures in ``img/``:
  per-metric score distributions by objective, a rank heat-map and a gallery of example attribution maps.

Results with a missing per-sample file or no stored maps are still ranked; they are left out of the figures and
the comparison, and the page says so. Running it twice on the same folder gives byte-identical files.

Result files are untrusted input (the CI job rebuilds the board from contributed results): :func:`scan_results`
checks each one (:func:`~sclzoo.evaluator.results.check_result`: schema, NaN literals, aggregates against the
per-sample scores, file name = config hash) and skips what fails, with the reason, instead of raising; every name
written into ``--out`` is built from checked values, and every path is checked to lie inside it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sclzoo.deletion import GRID_DELETION, PIXEL_DELETION
from sclzoo.errors import ResultError
from sclzoo.evaluator.compare import SampleScores, compare_records, from_result, objective_name
from sclzoo.evaluator.config import EXECUTION_KEYS
from sclzoo.evaluator.meta_results import LoadedMeta, is_meta_file, load_meta
from sclzoo.evaluator.results import (
    check_result,
    maps_path,
    read_maps,
    read_result,
    read_samples,
    result_path,
    samples_path,
    weights_id,
)
from sclzoo.vocab import FAMILIES

__all__ = ["LoadedResult", "SkippedFile", "ResultScan", "scan_results", "load_results", "collect_rows",
           "build_leaderboard", "write_leaderboard", "format_markdown", "CSV_COLUMNS"]

GALLERY_SAMPLES = 6
#: Version of leaderboard.json / compare.json (evaluator/leaderboard.schema.json, compare.schema.json).
LEADERBOARD_SCHEMA_VERSION = 1
COMPARE_SCHEMA_VERSION = 1
CSV_COLUMNS = ["config_hash", "dataset", "model", "name", "objective", "architecture", "commit_sha", "weights_id",
               "accuracy", "n_evaluated", "method", "metric", "family", "higher_is_better", "version", "mean", "ci95_low",
               "ci95_high", "n", "n_nan", "rank", "file"]


@dataclass(frozen=True)
class LoadedResult:
    """One result file and what lies beside it.

    Attributes:
        file: Path relative to the results folder.
        doc: The result document.
        samples: Per-sample records, or None when the samples file is missing or corrupt.
        maps: Stored example maps (:func:`~sclzoo.evaluator.results.read_maps`), or None.
        problems: Why samples or maps could not be used.
        also_as: Other model ids under which results of the same weights and config were found (one row).
    """

    file: str
    doc: dict[str, Any]
    samples: list[dict[str, Any]] | None
    maps: dict[str, Any] | None
    problems: tuple[str, ...] = ()
    also_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedFile:
    """A file under the results folder that is not ranked.

    Attributes:
        file: Path relative to the results folder (control characters escaped).
        reason: Why, in one line.
    """

    file: str
    reason: str


@dataclass(frozen=True)
class ResultScan:
    """Every ``*.json`` under a results folder: the valid results, the valid meta results (``*.meta.json``,
    :mod:`sclzoo.evaluator.meta_results`) and the files skipped (with the reason)."""

    results: list[LoadedResult]
    skipped: list[SkippedFile] = field(default_factory=list)
    meta: list[LoadedMeta] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.results) + len(self.skipped) + len(self.meta)


def _printable(s: str) -> str:
    """A name from the results folder, safe to print on one line (control characters escaped)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def _candidates(root: Path) -> list[Path]:
    """Every ``*.json`` entry under ``root`` (symbolic links not followed); hidden entries (temporary files) and
    the ``<config_hash>.partial/`` checkpoints of runs in progress are not results."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.endswith(".json") and not name.startswith("."):
                found.append(Path(folder) / name)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".partial")]
    return sorted(found, key=lambda f: f.relative_to(root).parts)


def _load_one(root: Path, f: Path) -> LoadedResult:
    """One result file, checked; raises ResultError naming the first problem."""
    if f.is_symlink():
        raise ResultError("is a symbolic link; a result must be a plain file")
    if not f.is_file():
        raise ResultError("is a folder, not a result file" if f.is_dir() else "is not a plain file")
    try:
        doc = read_result(f)
    except ResultError as e:  # the skipped list names the file already
        raise ResultError(str(e).replace(f"result file {str(f)!r} ", "")) from None
    problems = check_result(doc)
    if not problems and f.name != f"{doc['config_hash']}.json":
        problems = [f"its name is not its config_hash {doc['config_hash'][:12]}….json (results are named "
                    "<config_hash>.json)"]
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ResultError(problems[0] + more)
    notes = []
    samples = maps = None
    # Messages name files relative to the results folder, so the outputs do not depend on where it lies.
    try:
        if samples_path(f).is_symlink():
            raise ResultError("symbolic link")
        samples = read_samples(f)
    except ResultError:
        state = "corrupt" if samples_path(f).is_file() else "missing"
        notes.append(f"per-sample file {state}: ranked from its aggregates, left out of the distributions "
                     "and the objective comparison (evaluate again with --force)")
    if samples is not None:
        problems = check_result(doc, samples)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise ResultError(f"disagrees with its per-sample file: {problems[0]}{more}")
    try:
        if maps_path(f).is_symlink():
            raise ResultError("symbolic link")
        maps = read_maps(f)
    except ResultError:
        notes.append("example maps file corrupt: left out of the gallery (delete it or evaluate again "
                     "with --force)")
    return LoadedResult(str(f.relative_to(root).as_posix()), doc, samples, maps, tuple(notes))


def _identity(lr: LoadedResult) -> tuple[str, str, str]:
    """What a result is a result of: (weights id, config hash, dataset), however the weights were loaded."""
    return weights_id(lr.doc), lr.doc["config_hash"], lr.doc["dataset"]["id"]


def _preference(lr: LoadedResult) -> tuple[int, int, list[str]]:
    """Which of several results of one computation is kept (smallest first): a Hub-loaded one (its id resolves
    for everyone), then one at the path where `sclzoo evaluate` writes it, then the first in path order."""
    m = lr.doc["model"]
    home = result_path(".", m["id"], m["commit_sha"], lr.doc["config_hash"]).as_posix().removeprefix("./")
    return (0 if m["source"] == "hub" else 1, 0 if lr.file.endswith(home) else 1, lr.file.split("/"))


def _score_conflict(a: dict[str, Any], b: dict[str, Any], rel: float = 1e-9) -> str | None:
    """The first (method, metric) whose aggregate differs between two results of the same computation."""
    sa, sb = a["scores"], b["scores"]
    if set(sa) != set(sb) or any(set(sa[m]) != set(sb[m]) for m in sa):
        return "different (method, metric) pairs"
    for method in sorted(sa):
        for metric in sorted(sa[method]):
            x, y = sa[method][metric], sb[method][metric]
            if (x["n"], x["n_nan"]) != (y["n"], y["n_nan"]):
                return f"{method}/{metric}: n {x['n']} vs {y['n']}, n_nan {x['n_nan']} vs {y['n_nan']}"
            if (x["mean"] is None) != (y["mean"] is None) or (
                    x["mean"] is not None and abs(x["mean"] - y["mean"]) > rel * max(1.0, abs(x["mean"]))):
                return f"{method}/{metric}: mean {x['mean']} vs {y['mean']}"
    return None


def scan_results(results_dir: str | Path | Sequence[str | Path]) -> ResultScan:
    """Reads and checks every result under one or several folders (sorted by path), never raising for a bad file.

    A file is skipped, with its reason, when it is not a plain file, not JSON, fails
    :func:`~sclzoo.evaluator.results.check_result` (schema, NaN literals, registry), disagrees with its per-sample
    file, or is not named ``<config_hash>.json``. Results of the same weights (:func:`weights_id`), config hash and
    dataset are one computation: one is kept (a Hub-loaded one first, then the file where ``sclzoo evaluate`` puts
    it) and the others are listed as duplicates when their scores agree, as conflicts when they do not. A missing or
    unreadable per-sample or maps file is not a reason to skip: the result is ranked from its aggregates and the
    board notes it.

    Args:
        results_dir: A results folder, or several (e.g. CI artefacts of sharded jobs); with several, file names
            are prefixed with the folder as given.

    Raises:
        ResultError: a results folder does not exist.
    """
    roots = [Path(results_dir)] if isinstance(results_dir, (str, Path)) else [Path(r) for r in results_dir]
    if not roots:
        raise ResultError("no results folder given; pass at least one")
    valid: list[LoadedResult] = []
    skipped: list[SkippedFile] = []
    metas: list[LoadedMeta] = []
    for root in roots:
        if not root.is_dir():
            raise ResultError(f"results folder {str(root)!r} does not exist; run `sclzoo evaluate` first")
        prefix = "" if len(roots) == 1 else root.as_posix().rstrip("/") + "/"
        for f in _candidates(root):
            if is_meta_file(f):  # a meta-evaluation (sclzoo meta-evaluate), checked with its draws file
                try:
                    lm = load_meta(root, f)
                    metas.append(replace(lm, file=prefix + lm.file))
                except ResultError as e:
                    reason = " ".join(str(e).split())
                    skipped.append(SkippedFile(_printable(prefix + f.relative_to(root).as_posix()),
                                               reason[:300] + ("…" if len(reason) > 300 else "")))
                continue
            try:
                lr = _load_one(root, f)
                valid.append(replace(lr, file=prefix + lr.file))
            except ResultError as e:
                reason = " ".join(str(e).split())
                skipped.append(SkippedFile(_printable(prefix + f.relative_to(root).as_posix()),
                                           reason[:300] + ("…" if len(reason) > 300 else "")))
    by_key: dict[tuple[str, str, str], list[LoadedResult]] = {}
    for lr in valid:
        by_key.setdefault(_identity(lr), []).append(lr)
    keep: dict[int, LoadedResult] = {}
    for same in by_key.values():
        winner = min(same, key=_preference)
        others = tuple(sorted({lr.doc["model"]["id"] for lr in same} - {winner.doc["model"]["id"]}))
        keep[id(winner)] = replace(winner, also_as=others) if others else winner
        for lr in same:
            if lr is winner:
                continue
            conflict = _score_conflict(winner.doc, lr.doc)
            what = (f"conflicts with {_printable(winner.file)}: same weights and config hash, different scores "
                    f"({conflict}); check how each was computed" if conflict else
                    f"duplicate of {_printable(winner.file)} (same weights and config hash, same scores)")
            skipped.append(SkippedFile(_printable(lr.file), what))
    loaded = [keep[id(lr)] for lr in valid if id(lr) in keep]
    skipped.sort(key=lambda s: s.file.split("/"))
    return ResultScan(loaded, skipped, sorted(metas, key=lambda m: m.file.split("/")))


def load_results(results_dir: str | Path) -> list[LoadedResult]:
    """Every valid result under ``results_dir`` (sorted by path) with its per-sample scores and example maps;
    invalid files are left out (:func:`scan_results` says which and why)."""
    return scan_results(results_dir).results


def _loaded(results: str | Path | list[LoadedResult] | ResultScan) -> list[LoadedResult]:
    if isinstance(results, ResultScan):
        return results.results
    return results if isinstance(results, list) else load_results(results)


def collect_rows(results: str | Path | list[LoadedResult] | ResultScan) -> pd.DataFrame:
    """One row per (result file, method, metric) with the aggregate score and what makes rows comparable."""
    rows = []
    for lr in _loaded(results):
        r = lr.doc
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
                    "file": lr.file,
                    "weights_id": weights_id(r),
                    "also_as": list(lr.also_as),
                    "in_domain": agg.get("in_domain"),
                    "patch_deletion": r["model"].get("patch_deletion"),
                })
    return pd.DataFrame(rows)


def _float_or_none(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _family_key(f: str) -> tuple[int, str]:
    return (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f)


def _scoring_config(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.get("config", {}).items() if k not in EXECUTION_KEYS}


def _show(v: Any) -> str:
    return "absent" if v is _MISSING else json.dumps(v, sort_keys=True, default=str)


_MISSING = object()


def config_differences(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What in ``other``'s scoring config differs from ``reference``'s, one short phrase per difference."""
    out = []
    for key in sorted(set(reference) | set(other)):
        a, b = reference.get(key, _MISSING), other.get(key, _MISSING)
        if key in ("methods", "metrics") and isinstance(a, dict) and isinstance(b, dict):
            here, there = sorted(set(b) - set(a)), sorted(set(a) - set(b))
            if here:
                out.append(f"{key} only here: {', '.join(here)}")
            if there:
                out.append(f"{key} only in the reference group: {', '.join(there)}")
            for name in sorted(set(a) & set(b)):
                pa, pb = a[name], b[name]
                for p in sorted(set(pa) | set(pb)):
                    va, vb = pa.get(p, _MISSING), pb.get(p, _MISSING)
                    if va != vb:
                        label = f"{name} version" if p == "version" else f"{name}.{p}"
                        out.append(f"{label} {_show(vb)} here vs {_show(va)}")
        elif a != b:
            out.append(f"{key} {_show(b)} here vs {_show(a)}")
    return out


def _row_label(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Objective name when it is unique in the group, else the model name (with its commit when the model has
    several commits in the group)."""
    same = {(r["model"], r["commit_sha"]) for r in rows if r["objective"] == row["objective"]}
    if len(same) == 1:
        return objective_name(row["objective"])
    commits = {c for m, c in same if m == row["model"]}
    return f"{row['name']}@{row['commit_sha'][:7]}" if len(commits) > 1 else str(row["name"])


def build_leaderboard(results_dir: str | Path | list[LoadedResult] | ResultScan,
                      meta: Sequence[LoadedMeta] | None = None) -> dict[str, Any]:
    """Ranks models per (config hash, method, metric, version) group.

    Args:
        results_dir: A results folder, its scan, or loaded results.
        meta: Meta results (default: those of the scan, when a scan is given; none otherwise).

    Returns:
        ``{"groups": [...], "rows": [...], "notes": [...]}``: each row is one model commit × method in one
        comparable group with every metric's mean, CI, n, n_nan and rank (1 = best, direction-aware; a missing
        score ranks last), plus the mean rank per family. Each group lists its models, methods, metrics and
        scoring config, and ``why_apart``: how its config differs from the reference group's. The reference group
        (most models, then most rows, then config hash) comes first. When meta results match a group, the board
        also has ``reliability`` (:func:`sclzoo.evaluator.reliability.zoo_reliability`); without any, that key
        is absent.
    """
    if isinstance(results_dir, (str, Path)):
        results_dir = scan_results(results_dir)
    if meta is None:
        meta = results_dir.meta if isinstance(results_dir, ResultScan) else []
    board = _build_board(_loaded(results_dir))
    from sclzoo.evaluator.reliability import zoo_reliability

    rel = zoo_reliability(board, meta) if meta else None
    if rel is not None:
        board["reliability"] = rel
    return board


def _build_board(loaded: list[LoadedResult]) -> dict[str, Any]:
    df = collect_rows(loaded)
    notes = [f"{lr.file}: {p}" for lr in loaded for p in lr.problems]
    if df.empty:
        return {"schema_version": LEADERBOARD_SCHEMA_VERSION, "groups": [], "rows": [], "notes": notes}
    configs = {lr.doc["config_hash"]: _scoring_config(lr.doc) for lr in reversed(loaded)}
    out_rows: list[dict[str, Any]] = []
    groups = []
    for (config_hash, dataset), g in df.groupby(["config_hash", "dataset"], sort=True):
        g = g.copy()
        g["rank"] = 0.0
        for _, sub in g.groupby(["method", "metric", "version"], sort=True):
            asc = not bool(sub["higher_is_better"].iloc[0])
            g.loc[sub.index, "rank"] = sub["mean"].rank(ascending=asc, method="min", na_option="bottom")
        metric_info = {}
        for metric, sub in g.groupby("metric", sort=True):
            first = sub.iloc[0]
            metric_info[metric] = {"family": first["family"], "higher_is_better": bool(first["higher_is_better"]),
                                   "version": int(first["version"])}
        cfg = configs.get(config_hash, {})
        group_rows = []
        for (model, commit, method), sub in g.groupby(["model", "commit_sha", "method"], sort=True):
            first = sub.iloc[0]
            metrics = {}
            for _, r in sub.sort_values("metric").iterrows():
                metrics[r["metric"]] = {
                    "family": r["family"], "higher_is_better": bool(r["higher_is_better"]),
                    "version": int(r["version"]), "mean": _float_or_none(r["mean"]),
                    "ci95": [_float_or_none(r["ci95_low"]), _float_or_none(r["ci95_high"])], "n": int(r["n"]), "n_nan": int(r["n_nan"]),
                    "rank": int(r["rank"]),
                }
                if isinstance(r["in_domain"], (bool, np.bool_)):  # deletion metrics of newer results only
                    metrics[r["metric"]]["in_domain"] = bool(r["in_domain"])
            fam_rank = sub.groupby("family")["rank"].mean()
            group_rows.append({
                "config_hash": config_hash, "dataset": dataset, "model": model, "name": first["name"],
                "objective": first["objective"], "architecture": first["architecture"],
                "commit_sha": commit, "accuracy": _float_or_none(first["accuracy"]),
                "n_evaluated": int(first["n_evaluated"]), "method": method, "metrics": metrics,
                "weights_id": first["weights_id"], "also_as": list(first["also_as"]),
                "mean_rank": {fam: round(float(fam_rank[fam]), 4) for fam in sorted(fam_rank.index, key=_family_key)},
                "file": first["file"],
            })
            if isinstance(first["patch_deletion"], dict):
                group_rows[-1]["patch_deletion"] = dict(first["patch_deletion"])
        for r in group_rows:
            r["label"] = _row_label(r, group_rows)
        groups.append({
            "config_hash": config_hash, "dataset": dataset,
            "models": sorted({f"{r['model']}@{r['commit_sha']}" for r in group_rows}),
            "methods": sorted(g["method"].unique().tolist()),
            "metrics": sorted(metric_info, key=lambda m: (_family_key(metric_info[m]["family"]), m)),
            "metric_info": metric_info,
            "families": sorted({v["family"] for v in metric_info.values()}, key=_family_key),
            "config": cfg,
            "n_rows": len(group_rows),
        })
        out_rows += group_rows
    groups.sort(key=lambda gr: (-len(gr["models"]), -gr["n_rows"], gr["config_hash"], gr["dataset"]))
    ref = groups[0]
    for i, gr in enumerate(groups):
        gr["id"] = f"g{i + 1}"
        if i == 0:
            gr["why_apart"] = []
            continue
        diffs = config_differences(ref["config"], gr["config"])
        if not diffs:
            diffs = [f"config hash {gr['config_hash'][:12]} ≠ {ref['config_hash'][:12]} although the recorded "
                     "scoring configs agree (results written by another sclzoo version)"]
        gr["why_apart"] = diffs
    order = {(gr["config_hash"], gr["dataset"]): i for i, gr in enumerate(groups)}
    out_rows.sort(key=lambda r: (order[(r["config_hash"], r["dataset"])], r["method"], r["objective"], r["model"],
                                 r["commit_sha"]))
    return {"schema_version": LEADERBOARD_SCHEMA_VERSION, "groups": groups, "rows": out_rows, "notes": notes}


def group_rows(board: dict[str, Any], group: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one group, in board order."""
    return [r for r in board["rows"] if r["config_hash"] == group["config_hash"] and r["dataset"] == group["dataset"]]


def _fmt(v: float | None) -> str:
    return "NaN" if v is None else f"{v:.4g}"


#: Marks a grid-deletion score whose perturbed images are not in the model's training domain.
OUT_OF_DOMAIN = " †"


def out_of_domain(metric: str, score: dict[str, Any]) -> bool:
    """A grid-deletion score recorded as not in domain (pixel-deletion metrics are out of domain for every model,
    so marking them would tell rows nothing apart; :func:`domain_legend` says so instead)."""
    return metric in GRID_DELETION and score.get("in_domain") is False


def domain_legend(rows: list[dict[str, Any]]) -> str:
    """The sentence under a table whose rows record in-domain verdicts ("" when none does)."""
    recorded = sorted({m for r in rows for m, s in r["metrics"].items() if "in_domain" in s})
    if not recorded:
        return ""
    out = []
    if any(out_of_domain(m, s) for r in rows for m, s in r["metrics"].items()):
        out.append(f"{OUT_OF_DOMAIN.strip()} not in domain: the model was not trained with patch deletion of this "
                   "metric's grid and deletion value, so its score also measures how it reacts to images unlike "
                   "its training images.")
    pixel = [m for m in recorded if m in PIXEL_DELETION]
    if pixel:
        verb = "deletes" if len(pixel) == 1 else "delete"
        out.append(f"{', '.join(pixel)} {verb} pixels, not grid cells: out of domain for every model.")
    return " ".join([*out, "See docs/protocol.md#in-domain-deletion."]) if out else ""


def _mc_label(rel: dict[str, Any] | None, metric: str) -> str:
    """`` (MC 0.62)`` after a metric's column title when the group has its meta-evaluation, else ""."""
    v = None if rel is None else rel["metrics"].get(metric)
    if v is None:
        return ""
    return " (MC –)" if v["mc"] is None else f" (MC {v['mc']:.2f})"


def why_apart_text(group: dict[str, Any], reference: dict[str, Any]) -> str:
    """One sentence: why a group is ranked apart from the reference group."""
    if not group["why_apart"]:
        return "Reference group (most models)."
    return (f"Ranked apart from group {reference['id']} (config `{reference['config_hash'][:12]}`) because the "
            f"evaluation config differs: {'; '.join(group['why_apart'])}.")


def _config_line(cfg: dict[str, Any]) -> str:
    keys = ("dataset", "split", "n_samples", "selection", "target", "seed")
    return " · ".join(f"{k} {cfg[k]}" for k in keys if k in cfg)


def format_markdown(board: dict[str, Any], comparison: dict[str, Any] | None = None,
                    figures: dict[str, dict[str, str]] | None = None) -> str:
    """The leaderboard as Markdown: per group its config, why it is apart, figures and one table per method,
    then the objective comparison and claim check."""
    from sclzoo.evaluator.compare import format_markdown as compare_markdown

    lines = ["# sclzoo attribution leaderboard", ""]
    if not board["rows"]:
        return "\n".join([*lines, "No results yet: run `sclzoo evaluate`.", ""])
    lines += ["Rows are ranked only against rows with the same config hash (same images, target, seed, metric "
              "versions and parameters). Arrows give the better direction; rank 1 is best; a missing score ranks "
              "last. Cells: mean (#rank, NaN count when any).", ""]
    ref = board["groups"][0]
    for grp in board["groups"]:
        rows = group_rows(board, grp)
        lines += [f"## Group {grp['id']}: {grp['dataset']} · config `{grp['config_hash'][:12]}`", "",
                  why_apart_text(grp, ref), "", f"Config: {_config_line(grp['config'])}.", ""]
        figs = (figures or {}).get(grp["id"], {})
        lines += [f"![{kind}]({figs[kind]})" for kind in ("distributions", "ranks", "gallery") if kind in figs]
        if figs:
            lines.append("")
        metrics = grp["metrics"]
        info = grp["metric_info"]
        fams = grp["families"]
        rel = board.get("reliability", {}).get("groups", {}).get(grp["id"])
        for method in grp["methods"]:
            mrows = [r for r in rows if r["method"] == method]
            if not mrows:
                continue
            lines += [f"### {method}", "",
                      "| model | objective | commit | acc | "
                      + " | ".join(f"{m} {'↑' if info[m]['higher_is_better'] else '↓'}{_mc_label(rel, m)}"
                                   for m in metrics)
                      + " | " + " | ".join(f"mean rank {f}" for f in fams) + " |",
                      "|---|---|---|---|" + "---|" * (len(metrics) + len(fams))]
            for r in mrows:
                cells = []
                for m in metrics:
                    s = r["metrics"].get(m)
                    if s is None:
                        cells.append("–")
                        continue
                    nan = f", {s['n_nan']} NaN" if s["n_nan"] else ""
                    cells.append(f"{_fmt(s['mean'])} (#{s['rank']}{nan}){OUT_OF_DOMAIN if out_of_domain(m, s) else ''}")
                fam_cells = [f"{r['mean_rank'][f]:.2f}" if f in r["mean_rank"] else "–" for f in fams]
                acc = "–" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
                lines.append(f"| {r['name']} | {r['objective']} | `{r['commit_sha'][:7]}` | {acc} | "
                             + " | ".join(cells + fam_cells) + " |")
            lines.append("")
            legend = domain_legend(mrows)
            if legend:
                lines += [legend, ""]
        if rel is not None:
            from sclzoo.evaluator.reliability import format_markdown as reliability_markdown

            lines += reliability_markdown(rel)
            if "reliability" in figs:
                lines += [f"![reliability]({figs['reliability']})", ""]
    if comparison is not None:
        lines += [compare_markdown(comparison).rstrip("\n"), ""]
    if board.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in board["notes"]] + [""]
    return "\n".join(lines)


def csv_rows(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The board flattened to one record per (row, metric), columns :data:`CSV_COLUMNS`."""
    out = []
    for r in board["rows"]:
        for metric, s in r["metrics"].items():
            out.append({"config_hash": r["config_hash"], "dataset": r["dataset"], "model": r["model"],
                        "name": r["name"], "objective": r["objective"], "architecture": r["architecture"],
                        "commit_sha": r["commit_sha"], "weights_id": r["weights_id"], "accuracy": r["accuracy"],
                        "n_evaluated": r["n_evaluated"],
                        "method": r["method"], "metric": metric, "family": s["family"],
                        "higher_is_better": s["higher_is_better"], "version": s["version"], "mean": s["mean"],
                        "ci95_low": s["ci95"][0], "ci95_high": s["ci95"][1], "n": s["n"], "n_nan": s["n_nan"],
                        "rank": s["rank"], "file": r["file"]})
    return out


def format_csv(board: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for rec in csv_rows(board):
        w.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in rec.items()})
    return buf.getvalue()


def _records(loaded: list[LoadedResult]) -> list[SampleScores]:
    return [from_result(lr.doc, lr.samples, lr.file) for lr in loaded if lr.samples is not None]


def _safe(s: str) -> str:
    """A file-name part from a name in a result: [A-Za-z0-9._-] only, never ``.``/``..``, at most 48 characters
    (a longer or changed-to-dots name gets a short hash of the original, so distinct names stay distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", s)
    if len(safe) > 48 or not safe.strip("."):
        safe = f"{safe[:40].strip('.')}-{hashlib.sha256(s.encode()).hexdigest()[:7]}"
    return safe


def _plain(s: Any) -> str:
    """A label from a result, drawn literally by matplotlib (``$`` would start mathtext, which can fail)."""
    return str(s).replace("$", r"\$")


def render_figures(board: dict[str, Any], loaded: list[LoadedResult]) -> dict[str, dict[str, bytes]]:
    """PNG bytes per group: ``{group id: {"distributions" | "ranks" | "gallery": png}}`` (only what has data)."""
    from sclzoo.evaluator import plots

    by_file = {lr.file: lr for lr in loaded}
    out: dict[str, dict[str, bytes]] = {}
    for grp in board["groups"]:
        rows = group_rows(board, grp)
        figs: dict[str, bytes] = {}
        info = grp["metric_info"]
        # One entry per result (model commit) of the group, in row order.
        members: list[tuple[str, dict[str, Any]]] = []
        for r in rows:
            if r["file"] not in [f for f, _ in members]:
                members.append((r["file"], r))
        members.sort(key=lambda fr: (fr[1]["objective"], fr[1]["model"], fr[1]["commit_sha"]))
        series = []
        for f, r in members:
            lr = by_file[f]
            if lr.samples is None:
                continue
            rec = from_result(lr.doc, lr.samples, f)
            series.append({"label": _plain(r["label"]), "objective": r["objective"], "values": rec.scores})
        if series:
            figs["distributions"] = plots.distributions_figure(
                series, [{"name": m, "higher_is_better": info[m]["higher_is_better"]} for m in grp["metrics"]],
                grp["methods"])
        if len(grp["models"]) > 1:  # one model ranks first everywhere: its scores are in the table, no heat-map
            ranks = np.array([[float(r["metrics"][m]["rank"]) if m in r["metrics"] else np.nan
                               for m in grp["metrics"]] for r in rows], dtype=np.float64)
            figs["ranks"] = plots.rank_heatmap(
                [_plain(f"{r['label']} · {r['method']}") for r in rows],
                [f"{m} {'↑' if info[m]['higher_is_better'] else '↓'}" for m in grp["metrics"]], ranks)
        gallery_rows: list[tuple[Any, ...]] = []
        images = sample_ids = labels = None
        for f, r in members:
            maps = by_file[f].maps
            if maps is None:
                continue
            if sample_ids is None:
                sample_ids = [int(i) for i in maps["sample_ids"][:GALLERY_SAMPLES]]
            if images is None and maps.get("images") is not None:
                images = maps["images"][:GALLERY_SAMPLES]
            # labels and predictions come from the per-sample file, when it covers the gallery's images
            by_id = {s.get("sample_id"): s for s in (by_file[f].samples or []) if isinstance(s, dict)}
            preds = None
            if sample_ids and all(i in by_id for i in sample_ids):
                preds = [by_id[i].get("prediction") for i in sample_ids]
                if labels is None:
                    labels = [by_id[i].get("label") for i in sample_ids]
            for method in grp["methods"]:
                if method in maps["maps"]:
                    row_maps = maps["maps"][method][:GALLERY_SAMPLES]
                    title = _plain(f"{r['label']} · {method}")
                    gallery_rows.append((title, row_maps, preds) if preds is not None else (title, row_maps))
        if gallery_rows and sample_ids:
            figs["gallery"] = plots.maps_gallery(images, gallery_rows, sample_ids, labels)
        rel = board.get("reliability", {}).get("groups", {}).get(grp["id"])
        if rel is not None:
            figs["reliability"] = plots.reliability_figure(rel["metrics"], board["reliability"]["threshold"])
        out[grp["id"]] = figs
    return out


def _inside(out: Path, path: Path) -> Path:
    """``path``, after checking that it lies inside ``out`` (defence in depth: names are already sanitised)."""
    base = out.resolve()
    real = path.resolve()
    if real.parent != base and base not in real.parents:
        raise ResultError(f"refusing to write {str(path)!r}: it lies outside the output folder {str(out)!r}")
    return path


def write_leaderboard(results_dir: str | Path | ResultScan, out_dir: str | Path) -> dict[str, Path]:
    """Writes the leaderboard folder (deterministic bytes) from the valid results of a folder or a scan.

    Returns:
        Paths by kind: ``json``, ``markdown``, ``csv``, ``compare``, ``html`` (and ``parquet`` when pyarrow is
        installed); the figures are in ``out_dir/img/`` (stale figures from earlier runs are removed).
    """
    from sclzoo.evaluator.leaderboard_html import format_html

    if isinstance(results_dir, (str, Path)):
        results_dir = scan_results(results_dir)
    loaded = _loaded(results_dir)
    board = build_leaderboard(loaded, results_dir.meta if isinstance(results_dir, ResultScan) else None)
    from sclzoo.evaluator.reliability import mc_by_config

    comparison = compare_records(_records(loaded), reliability=mc_by_config(board.get("reliability")))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img = out / "img"
    figure_paths: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for gid, figs in render_figures(board, loaded).items():
        grp = next(g for g in board["groups"] if g["id"] == gid)
        for kind, png in sorted(figs.items()):
            # config_hash is 64 hex (checked); a crafted hash sharing the first 12 with another group's gets its
            # full length, so no group's figure replaces another's.
            name = f"{grp['config_hash'][:12]}_{_safe(grp['dataset'])}_{kind}.png"
            if name in written:
                name = f"{grp['config_hash']}_{_safe(grp['dataset'])}_{kind}.png"
            img.mkdir(exist_ok=True)
            _inside(out, img / name).write_bytes(png)
            written.add(name)
            figure_paths.setdefault(gid, {})[kind] = f"img/{name}"
    if img.is_dir():
        for stale in img.glob("*.png"):
            if stale.name not in written:
                stale.unlink()
    paths = {"json": out / "leaderboard.json", "markdown": out / "LEADERBOARD.md", "csv": out / "leaderboard.csv",
             "compare": out / "compare.json", "html": out / "index.html"}
    paths["json"].write_text(json.dumps(board, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n")
    paths["compare"].write_text(json.dumps({"schema_version": COMPARE_SCHEMA_VERSION, **comparison}, indent=2, sort_keys=True, allow_nan=False,
                                           ensure_ascii=False) + "\n")
    paths["markdown"].write_text(format_markdown(board, comparison, figure_paths))
    paths["csv"].write_text(format_csv(board))
    paths["html"].write_text(format_html(board, comparison, figure_paths, n_results=len(loaded)))
    if util.find_spec("pyarrow") is not None:
        paths["parquet"] = out / "leaderboard.parquet"
        pd.DataFrame(csv_rows(board), columns=CSV_COLUMNS).to_parquet(paths["parquet"], index=False)
    return paths
