"""Registry-driven leaderboard updates (docs/artifacts.md#registry-driven-updates): evaluate only what is new,
then rebuild the leaderboard.

For each model of the registry (``zoo/registry.toml`` by default) the update resolves the model — its bundled
folder when present, else the Hub id at its tracked revision — and predicts the config hash of the evaluation
config (``--preset standard`` by default) without loading any weights. An entry is evaluated only when its
``(commit sha, config hash)`` has no result yet in the results folder; the leaderboard is then rebuilt from the
whole folder. ``make leaderboard`` and the CI leaderboard job run it; so does ``python -m sclzoo.evaluator.update``.

With ``meta=True`` (``--meta``; ``make leaderboard`` passes it) each resolved entry is also meta-evaluated
(:func:`sclzoo.evaluator.meta.meta_evaluate`, default meta config) unless its meta result for this config exists
(its name is predicted from the config hash, nothing loaded); the leaderboard then shows how far each metric can be
trusted on the zoo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sclzoo.errors import HubError, ModelLoadError, ModelNotFoundError, ResultError, SclzooError
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.results import read_result, result_path
from sclzoo.zoo.catalog import RegistryEntry, load_registry

__all__ = ["RegistryEntry", "Planned", "UpdateReport", "load_registry", "predict_config_hash", "plan_update",
           "run_update"]


def predict_config_hash(cfg: EvalConfig, model_dir: Path) -> str:
    """The config hash ``evaluate`` will compute for a model folder: the same plan
    (:func:`sclzoo.evaluator.api.plan`: model, data, preprocessing, images, canonical config), nothing computed.
    """
    return entry_plan(cfg, model_dir)[1]


def entry_plan(cfg: EvalConfig, model_dir: Path) -> tuple[EvalConfig, str, dict[str, Any]]:
    """The config one registry model is evaluated with, and its hash (nothing computed).

    On a dataset with ground-truth masks (``mnist5k-clutter``) a config that selects no localisation metric gets
    the whole localisation family added, scored against the dataset's default mask: a model of the ground-truth zoo
    is always checked against where its evidence really is (docs/protocol.md#localisation). Other datasets keep
    ``cfg`` as it is. Returns the config, its hash and its canonical form.
    """
    from sclzoo.evaluator.api import plan
    from sclzoo.evaluator.metrics import METRICS
    from sclzoo.zoo.data import MASKED_DATASETS

    p = plan(f"local-dir:{model_dir}", cfg)
    if (p.data.dataset_id in MASKED_DATASETS and cfg.mask is None
            and not any(METRICS.get(m).needs_mask for m in cfg.metrics)):
        extra = tuple(n for n, s in METRICS.items() if s.needs_mask and n not in cfg.metrics)
        cfg = replace(cfg, metrics=(*cfg.metrics, *extra))
        p = plan(f"local-dir:{model_dir}", cfg)
    return cfg, p.config_hash, p.canonical


@dataclass(frozen=True)
class Planned:
    """What the update does with one registry entry.

    Attributes:
        entry: The registry entry.
        ref: The reference passed to ``evaluate`` (bundled folder or ``hf-hub:org/name``).
        revision: Revision passed to ``evaluate`` (None for a bundled folder).
        repo_id: Resolved repo id (``local/<folder>`` for a bundled copy).
        commit_sha: Resolved commit (content hash for a bundled copy).
        config_hash: Predicted config hash.
        result: Where its result is (or will be).
        status: ``up-to-date`` (a result exists), ``todo``, ``unavailable`` (cannot be resolved) or ``failed``
            (resolved, but its config could not be read or its evaluation raised).
        reason: Why it is unavailable or failed (one line).
        meta: Where its meta result is (or will be), when meta-evaluations are asked for.
    """

    entry: RegistryEntry
    ref: str = ""
    revision: str | None = None
    repo_id: str = ""
    commit_sha: str = ""
    config_hash: str = ""
    result: Path | None = None
    status: str = "todo"
    reason: str = ""
    meta: Path | None = None
    config: EvalConfig | None = None
    canonical: dict[str, Any] = field(default_factory=dict)
    meta_metrics: tuple[str, ...] = ()
    meta_covered_by: tuple[str, ...] = ()


def plan_update(entries: list[RegistryEntry], results_dir: str | Path, cfg: EvalConfig) -> list[Planned]:
    """Resolves every entry and decides whether it needs an evaluation (no weights loaded, no model run).

    Models that cannot be resolved (no bundled copy, Hub unreachable or repo missing) are ``unavailable``; a
    model whose repo is broken (any other error while resolving it or predicting its config hash) is ``failed``.
    Neither stops the plan: one broken entry never keeps the others from being evaluated.
    """
    from sclzoo.zoo.hub import resolve_model

    out = []
    for e in entries:
        if e.bundled is not None and (e.bundled / "config.json").is_file():
            ref, rev = str(e.bundled), None
        else:
            ref, rev = f"hf-hub:{e.id}", e.revision
        try:
            resolved = resolve_model(ref, rev)
            ecfg, h, canonical = entry_plan(cfg, resolved.path)
        except (ModelNotFoundError, HubError) as err:
            out.append(Planned(e, ref, rev, status="unavailable", reason=_one_line(err)))
            continue
        except Exception as err:  # a broken repo must not stop the update of the others
            out.append(Planned(e, ref, rev, status="failed", reason=_one_line(err)))
            continue
        path = result_path(results_dir, resolved.repo_id, resolved.commit_sha, h)
        out.append(Planned(e, ref, rev, resolved.repo_id, resolved.commit_sha, h, path,
                           "up-to-date" if path.is_file() else "todo", config=ecfg, canonical=canonical))
    return out


def _one_line(e: BaseException) -> str:
    """An error as one line: sclzoo errors by their message, anything else with its type."""
    text = " ".join(str(e).split())
    text = text if isinstance(e, SclzooError) else f"{type(e).__name__}: {text}"
    return text if len(text) <= 300 else text[:300] + "…"


@dataclass
class UpdateReport:
    """What an update did: the plan, the entries evaluated (and those that failed), the leaderboard files written
    and the result files it skipped as invalid."""

    planned: list[Planned]
    evaluated: list[Planned]
    leaderboard: dict[str, Path]
    warnings: list[str]
    failed: list[Planned] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)  # leaderboard.SkippedFile


def _meta_file(p: Planned, results_dir: str | Path) -> Path:
    """Where the default meta-evaluation of a planned entry is written (predicted from its config hash)."""
    from sclzoo.evaluator.meta import MetaConfig, meta_hash
    from sclzoo.evaluator.meta_results import meta_path

    return meta_path(results_dir, p.repo_id, p.commit_sha, meta_hash(p.config_hash, MetaConfig().canonical()))


def _plan_meta(p: Planned, results_dir: str | Path) -> Planned:
    """Which of the entry's metrics still need a meta-evaluation, and where it will be written.

    A metric is covered when a valid meta result of the same weights already scored it under the same images,
    methods and metric parameters (evaluator/reliability.py: a metric's scores do not depend on the other
    metrics), so adding a metric to the preset meta-evaluates that metric alone. The meta file of the remaining
    metrics is predicted from the hash of the entry's config restricted to them (planned again, nothing computed:
    dropping the localisation metrics also drops the mask from the config).
    """
    from sclzoo.evaluator.meta import MetaConfig, meta_hash
    from sclzoo.evaluator.meta_results import meta_path, validate_meta
    from sclzoo.evaluator.reliability import same_images_and_methods, same_metric

    cfg = p.config
    if cfg is None or not p.config_hash:
        return p
    folder = meta_path(results_dir, p.repo_id, p.commit_sha, "0" * 64).parent
    covered: dict[str, str] = {}
    if folder.is_dir():
        for f in sorted(folder.glob("*.meta.json")):
            if validate_meta(f, check_draws=False):
                continue  # an invalid meta result covers nothing (the leaderboard skips it too)
            doc = read_result(f)
            mcfg = doc.get("evaluation", {}).get("config", {})
            if not same_images_and_methods(mcfg, p.canonical):
                continue
            for metric in cfg.metrics:
                if metric not in covered and metric in doc.get("metrics", {}) and same_metric(mcfg, p.canonical,
                                                                                                metric):
                    covered[metric] = f.name
    todo = tuple(m for m in cfg.metrics if m not in covered)
    files = tuple(sorted(set(covered.values())))
    if not todo:
        return replace(p, meta=folder / files[0], meta_metrics=(), meta_covered_by=files)
    if todo == tuple(cfg.metrics):
        return replace(p, meta=_meta_file(p, results_dir), meta_metrics=todo)
    from sclzoo.evaluator.api import plan

    h = plan(p.ref, replace(cfg, metrics=todo), revision=p.revision).config_hash  # e.g. no mask without localisation
    return replace(p, meta=meta_path(results_dir, p.repo_id, p.commit_sha, meta_hash(h, MetaConfig().canonical())),
                   meta_metrics=todo, meta_covered_by=files)


def run_update(
    cfg: EvalConfig,
    *,
    registry: str | Path | None = None,
    results_dir: str | Path = "leaderboard/results",
    out_dir: str | Path = "leaderboard",
    skip_unavailable: bool = False,
    strict: bool = False,
    dry_run: bool = False,
    provenance_source: str = "local",
    progress: bool = False,
    command: str | None = None,
    evaluate_fn: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
    meta: bool = False,
    meta_fn: Callable[..., Any] | None = None,
) -> UpdateReport:
    """Evaluates the registry entries that have no result for ``cfg`` yet, then rebuilds the leaderboard.

    Args:
        cfg: The evaluation config (e.g. ``build_config(preset="standard")``).
        registry: Registry TOML file (default ``zoo/registry.toml``).
        results_dir: Results root; new results are written here.
        out_dir: Leaderboard folder, rebuilt from the whole ``results_dir``.
        skip_unavailable: Go on (exit 0) when a model cannot be resolved or fails; by default that is an error,
            raised after the other models were evaluated and the leaderboard rebuilt.
        strict: Fail, without rebuilding the leaderboard, when a file in ``results_dir`` is not a valid result
            (by default it is skipped and listed).
        dry_run: Print the plan only.
        provenance_source: ``local`` or ``ci``, recorded in new results.
        progress: Progress bars during evaluation.
        command: Command line recorded in new results.
        evaluate_fn: Replaces :func:`sclzoo.evaluator.api.evaluate` (tests).
        log: Where progress lines go.
        meta: Also meta-evaluate every resolved entry that has no meta result for this config yet.
        meta_fn: Replaces :func:`sclzoo.evaluator.meta.meta_evaluate` (tests).

    Raises:
        ModelNotFoundError: some entries are unavailable (and none failed) and ``skip_unavailable`` is False.
        ModelLoadError: some entries failed and ``skip_unavailable`` is False.
        ResultError: ``strict`` and a file in ``results_dir`` is invalid.
    """
    from sclzoo.evaluator.leaderboard import scan_results, write_leaderboard

    if evaluate_fn is None:
        from sclzoo.evaluator.api import evaluate

        evaluate_fn = evaluate
    entries = load_registry(registry)
    planned = plan_update(entries, results_dir, cfg)
    if meta:
        planned = [_plan_meta(p, results_dir) if p.config_hash else p for p in planned]
    for p in planned:
        where = f"{p.repo_id}@{p.commit_sha[:7]} config {p.config_hash[:12]}" if p.config_hash else p.ref
        log(f"{p.status:<11} {p.entry.id}: {where}" + (f" ({p.reason})" if p.reason else ""))
        if p.meta is not None:
            files = ", ".join(n[:12] for n in p.meta_covered_by)
            if p.meta_covered_by and not p.meta_metrics:
                log(f"{'up-to-date':<11} {p.entry.id}: meta-evaluation of every metric in {files}")
            else:
                which = f" of {', '.join(p.meta_metrics)}" if p.meta_covered_by else ""
                covered = f" (the other metrics: {files})" if p.meta_covered_by else ""
                log(f"{'up-to-date' if p.meta.is_file() else 'todo':<11} {p.entry.id}: meta-evaluation{which} "
                    f"{p.meta.name[:12]}{covered}")
    evaluated: list[Planned] = []
    warnings: list[str] = []
    if dry_run:
        return UpdateReport(planned, evaluated, {}, warnings)
    failed = [p for p in planned if p.status == "failed"]
    for p in planned:
        if p.status != "todo":
            continue
        log(f"evaluating {p.entry.id} ({p.ref}) …")
        try:
            res = evaluate_fn(p.ref, revision=p.revision, out=results_dir, config=p.config or cfg, progress=progress,
                              command=command, provenance_source=provenance_source, resume=True)
        except Exception as err:  # one broken model must not stop the others; reported at the end
            failed.append(replace(p, status="failed", reason=_one_line(err)))
            log(f"failed      {p.entry.id}: {failed[-1].reason}")
            continue
        got = res.data["config_hash"]
        if got != p.config_hash or res.data["model"]["commit_sha"] != p.commit_sha:
            warnings.append(f"{p.entry.id}: predicted (commit, config hash) ({p.commit_sha[:7]}, "
                            f"{p.config_hash[:12]}) but evaluate wrote ({res.data['model']['commit_sha'][:7]}, "
                            f"{got[:12]}); the next update will evaluate it again — report this as a bug")
        evaluated.append(p)
    if meta:
        if meta_fn is None:
            from sclzoo.evaluator.meta import meta_evaluate

            meta_fn = meta_evaluate
        broken = {f.entry.id for f in failed}
        for p in planned:
            if p.meta is None or p.meta.is_file() or p.entry.id in broken:
                continue
            log(f"meta-evaluating {p.entry.id} ({p.ref}) …")
            try:
                mcfg = p.config or cfg
                if p.meta_metrics and tuple(p.meta_metrics) != tuple(mcfg.metrics):
                    mcfg = replace(mcfg, metrics=tuple(p.meta_metrics))  # the others are covered already
                res = meta_fn(p.ref, revision=p.revision, out=results_dir, config=mcfg, progress=progress,
                              command=command, provenance_source=provenance_source, resume=True)
            except Exception as err:  # one broken model must not stop the others; reported at the end
                failed.append(replace(p, status="failed", reason=f"meta-evaluation: {_one_line(err)}"))
                log(f"failed      {p.entry.id}: {failed[-1].reason}")
                continue
            if res.path is not None and Path(res.path) != p.meta:
                warnings.append(f"{p.entry.id}: predicted meta result {p.meta.name[:12]} but meta_evaluate wrote "
                                f"{Path(res.path).name[:12]}; the next update will compute it again — report this "
                                "as a bug")
    for w in warnings:
        log(f"warning: {w}")
    scan = scan_results(results_dir)
    if scan.skipped:
        log(f"skipped {len(scan.skipped)} of {scan.n_files} result file(s) under {results_dir} (invalid; "
            "`sclzoo validate FILE` lists every problem):")
        for s in scan.skipped:
            log(f"  {s.file}: {s.reason}")
        if strict:
            raise ResultError(f"{len(scan.skipped)} of {scan.n_files} result file(s) under {str(results_dir)!r} are "
                              "invalid (listed above); the leaderboard was not rebuilt; fix or delete them, or drop "
                              "--strict to rank the others")
    paths = write_leaderboard(scan, out_dir)
    log(f"evaluated {len(evaluated)} of {len(planned)} registry model(s); leaderboard → {Path(out_dir)}")
    missing = [p for p in planned if p.status == "unavailable"]
    if (missing or failed) and not skip_unavailable:
        parts = []
        if missing:
            parts.append(f"{len(missing)} registry model(s) could not be resolved: "
                         f"{', '.join(p.entry.id for p in missing)}")
        if failed:
            parts.append(f"{len(failed)} registry model(s) failed: "
                         + "; ".join(f"{p.entry.id} ({p.reason})" for p in failed))
        fix = ("add their bundled folder, publish them, or pass --skip-unavailable" if not failed else
               "fix them or remove them from the registry, or pass --skip-unavailable")
        error = ModelLoadError if failed else ModelNotFoundError
        raise error(f"{'; '.join(parts)} (the others were evaluated and the leaderboard rebuilt); {fix}")
    return UpdateReport(planned, evaluated, paths, warnings, failed, scan.skipped)


def main(argv: list[str] | None = None) -> None:
    """``python -m sclzoo.evaluator.update [OPTIONS]``: the same as ``sclzoo leaderboard-update``."""
    from sclzoo.evaluator.cli import main as cli_main

    cli_main(["leaderboard-update", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
