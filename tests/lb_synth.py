"""Synthetic result folders for leaderboard and comparison tests: schema-valid results written with the real
``evaluator.results`` helpers, per-sample scores chosen by the test, no model and no evaluation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.metrics import METRICS
from sclzoo.evaluator.results import aggregate, result_path, samples_lines, write_maps, write_result

NAMES = {"ce": "resnet8_cifar.ce_mnist5k", "supcon": "resnet8_cifar.supcon_mnist5k",
         "simclr": "resnet8_cifar.simclr_mnist5k"}


def synthetic_config(methods: list[str], metrics: list[str], n: int, versions: dict[str, int] | None = None,
                     dataset: str = "mnist5k") -> dict[str, Any]:
    """A canonical-shaped config (what ``EvalConfig.canonical`` records)."""
    versions = versions or {}
    return {"dataset": dataset, "split": "test", "n_samples": n, "selection": "first_n", "target": "predicted",
            "seed": 0, "methods": {m: {} for m in methods},
            "metrics": {k: {"version": versions.get(k, METRICS.get(k).version)} for k in metrics},
            "batch_size": 64, "device": "cpu", "runtime": "torch"}


def write_synthetic(root: Path, objective: str, scores: dict[str, dict[str, np.ndarray]], *,
                    name: str | None = None, revision: str = "r1", sample_ids: np.ndarray | None = None,
                    versions: dict[str, int] | None = None, accuracy: float = 0.98, maps: bool = True,
                    samples: bool = True, dataset: str = "mnist5k", repo_id: str | None = None,
                    commit_sha: str | None = None, config_hash: str | None = None) -> Path:
    """Writes one result (+ samples, + maps) whose per-sample scores are ``scores[method][metric]`` (N,).

    ``repo_id``, ``commit_sha`` and ``config_hash`` override the made-up identity (to stand in for a real model).
    """
    name = name or NAMES.get(objective, f"resnet8_cifar.{objective}_mnist5k")
    methods = sorted(scores)
    metrics = sorted(next(iter(scores.values())))
    n = len(next(iter(scores[methods[0]].values())))
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    cfg = synthetic_config(methods, metrics, n, versions, dataset)
    config_hash = config_hash or EvalConfig.hash_of(cfg)
    commit = commit_sha or hashlib.sha1(f"{name}/{revision}".encode()).hexdigest()
    repo_id = repo_id or f"local/{name}"
    agg = {m: {k: {"family": METRICS.get(k).family, "higher_is_better": METRICS.get(k).higher_is_better,
                   "version": cfg["metrics"][k]["version"], **aggregate(np.asarray(v, dtype=np.float64), 0)}
               for k, v in d.items()} for m, d in scores.items()}
    doc = {
        "schema_version": 1,
        "model": {"id": repo_id, "requested_revision": "local", "commit_sha": commit,
                  "files_sha256": {"model.safetensors": hashlib.sha256(commit.encode()).hexdigest()},
                  "architecture": "resnet8_cifar", "objective": objective, "num_parameters": 77754,
                  "source": "local", "name": name},
        "dataset": {"id": dataset, "split": "test", "n_total": 1000, "n_evaluated": n,
                    "indices_sha256": hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest(),
                    "input_range": [0, 1]},
        "config": cfg,
        "config_hash": config_hash,
        "accuracy": {"torch": {"value": accuracy, "n": 1000}, "onnx": None},
        "scores": agg,
        "run": {"sclzoo_version": "0.1.0", "git_revision": "synthetic", "command": "synthetic",
                "started_at": "2025-01-01T00:00:00+00:00", "duration_s": 0.0, "device_name": "cpu",
                "deterministic": True, "world_size": 1, "versions": {"python": "3.11"}},
        "provenance": {"source": "local", "verified": False},
    }
    path = result_path(root, repo_id, commit, config_hash)
    zeros = np.zeros(n, dtype=np.int64)
    lines = samples_lines(ids, zeros, zeros, zeros, {m: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}
                                                     for m, d in scores.items()})
    write_result(path, doc, lines)
    if not samples:
        path.with_name(path.stem + ".samples.jsonl.gz").unlink()
    if maps:
        rng = np.random.default_rng(len(name) + len(revision))
        k = min(4, n)
        yy, xx = np.mgrid[0:12, 0:12]
        blob = np.exp(-((yy - 6.0) ** 2 + (xx - 6.0) ** 2) / 8.0).astype(np.float32)
        write_maps(path, {m: (blob[None] * rng.normal(1, 0.3, (k, 1, 1))).astype(np.float32) for m in methods},
                   ids[:k], rng.uniform(0, 1, (k, 1, 12, 12)).astype(np.float32))
    return path


def shifted_zoo(root: Path, n: int = 30, shift: float = 0.5, seed: int = 0,
                methods: tuple[str, ...] = ("saliency", "gradcam"),
                metrics: tuple[str, ...] = ("faithfulness_correlation", "deletion_auc", "sparseness", "complexity"),
                ) -> dict[str, Path]:
    """Three objectives on the same images: SupCon better than SimCLR by ``shift`` on every metric in the metric's
    better direction, CE identical to SimCLR (so CE vs SimCLR has no difference at all)."""
    rng = np.random.default_rng(seed)
    base = {m: {k: rng.normal(0.5, 0.1, n) for k in metrics} for m in methods}
    better = {m: {k: base[m][k] + (shift if METRICS.get(k).higher_is_better else -shift)
                  + rng.normal(0, 0.01, n) for k in metrics} for m in methods}
    return {"simclr": write_synthetic(root, "simclr", base),
            "ce": write_synthetic(root, "ce", {m: {k: v.copy() for k, v in d.items()} for m, d in base.items()}),
            "supcon": write_synthetic(root, "supcon", better)}


def write_synthetic_meta(result_file: Path, reactivity: dict[str, float], *, iterations: int = 1,
                         perturbations: int = 2, seed: int = 0) -> Path:
    """Writes a meta result (+ draws file) beside a synthetic result, valid down to its recomputed IAC/IEC/MC.

    Minor draws keep every prediction and every score; disruptive draws change every prediction and move each
    metric's scores towards worse by ``reactivity[metric]`` (0: the metric ignores the model, MC exactly 0.5; > 0:
    it reacts, MC near 1).
    """
    import json

    from sclzoo.evaluator.consistency import TESTS, DrawScores, consistency
    from sclzoo.evaluator.meta import MetaConfig, meta_hash
    from sclzoo.evaluator.meta_results import meta_path, write_meta
    from sclzoo.evaluator.results import read_samples

    doc = json.loads(Path(result_file).read_text())
    samples = read_samples(result_file)
    methods = list(doc["scores"])
    metrics = list(next(iter(doc["scores"].values())))
    n = len(samples)
    q0 = {m: {k: np.array([s["scores"][m][k] for s in samples], dtype=np.float64) for k in metrics}
          for m in methods}
    preds0 = np.array([s["prediction"] for s in samples], dtype=np.int64)
    meta = MetaConfig(iterations=iterations, perturbations=perturbations, sigma_minor=0.01, sigma_disruptive=2.0)
    canonical = meta.canonical()
    h = meta_hash(doc["config_hash"], canonical)
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in TESTS}
    summary = {}
    for k in metrics:
        spec = METRICS.get(k)
        worse = -1.0 if spec.higher_is_better else 1.0
        runs: dict[str, list[DrawScores]] = {t: [] for t in TESTS}
        for test in TESTS:
            recs = []
            for _ in range(meta.draws):
                preds = preds0 if test == "minor" else preds0 + 1
                shift = 0.0 if test == "minor" else worse * reactivity.get(k, 0.0)
                sc = {m: q0[m][k] + shift + rng.uniform(0, 1e-3, n) * (shift != 0) * worse for m in methods}
                runs[test].append(DrawScores(preds, sc))
                recs.append({"sigma": 0.01 if test == "minor" else 2.0, "accuracy": None,
                             "predictions": preds.tolist(), "scores": {m: {k: sc[m].tolist()} for m in methods}})
            draws[test][k] = recs
        summary[k] = {"family": spec.family, "higher_is_better": spec.higher_is_better, "version": spec.version,
                      "draw_unit": k, **consistency({m: q0[m][k] for m in methods}, preds0, runs,
                                                     spec.higher_is_better, iterations)}
    blank = {"mean": 0.5, "min": 0.5, "max": 0.5}
    meta_doc = {
        "schema_version": 1, "kind": "meta_evaluation", "model": doc["model"],
        "dataset": {k: doc["dataset"][k] for k in ("id", "split", "n_evaluated", "indices_sha256")},
        "evaluation": {"config": doc["config"], "config_hash": doc["config_hash"]},
        "meta_config": canonical, "meta_hash": h,
        "calibration": {"sigma_minor": 0.01, "sigma_disruptive": 2.0, "minor": "given", "disruptive": "given",
                        "chance_bound": 0.175, "rows": []},
        "unperturbed_accuracy": None,
        "tests": {t: {"sigma": 0.01 if t == "minor" else 2.0, "draws_per_unit": meta.draws,
                      "changed_fraction": blank, "accuracy": blank} for t in TESTS},
        "metrics": summary,
        "run": {"sclzoo_version": "0.1.0", "git_revision": "synthetic", "command": "synthetic",
                "started_at": "2025-01-01T00:00:00+00:00", "duration_s": 0.0, "device_name": "cpu",
                "deterministic": True, "versions": {"python": "3.11"}},
        "provenance": {"source": "local", "verified": False},
    }
    draws_doc = {"format": 1, "meta_hash": h, "sample_ids": [s["sample_id"] for s in samples],
                 "labels": [s["label"] for s in samples], "targets": [s["target"] for s in samples],
                 "methods": methods,
                 "unperturbed": {"predictions": preds0.tolist(),
                                 "scores": {m: {k: q0[m][k].tolist() for k in metrics} for m in methods}},
                 "draws": draws}
    path = meta_path(Path(result_file).parents[2], doc["model"]["id"], doc["model"]["commit_sha"], h)
    return write_meta(path, meta_doc, draws_doc)
