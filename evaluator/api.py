"""``sclzoo.evaluate``: the evaluation job — resolve and load a model, pick images, run, write the result.

This is the one place that joins I/O (Hub, datasets, result files) with the pure runner; the CLI is a thin layer
over it, and Python users call it directly::

    import sclzoo
    result = sclzoo.evaluate(model="supcon-resnet8-mnist", n_samples=32, methods=["saliency"])
    result.scores_frame()  # pandas view of the aggregated scores
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.metrics import METRICS
from sclzoo.evaluator.results import (
    SCHEMA_VERSION,
    aggregate,
    read_result,
    result_path,
    samples_lines,
    write_result,
)
from sclzoo.evaluator.runner import EvalOutput, resolve_specs, run_evaluation

__all__ = ["Result", "evaluate", "build_config"]


@dataclass
class Result:
    """A finished evaluation: the result document, where it was written, and (when just computed) the raw output."""

    data: dict[str, Any]
    path: Path | None
    output: EvalOutput | None = None
    reused: bool = False

    def scores_frame(self) -> Any:
        """Aggregated scores as a pandas DataFrame, one row per (method, metric)."""
        import pandas as pd

        rows = [{"method": m, "metric": k, **{f: v for f, v in agg.items() if f != "ci95"},
                 "ci95_low": agg["ci95"][0], "ci95_high": agg["ci95"][1]}
                for m, d in self.data["scores"].items() for k, agg in d.items()]
        return pd.DataFrame(rows)


def build_config(config: EvalConfig | None = None, preset: str | None = None, config_file: str | Path | None = None,
                 **kwargs: Any) -> EvalConfig:
    """One frozen config from a preset, a TOML file and keyword overrides (later ones win)."""
    from sclzoo.evaluator.config import load_config_file

    if config is not None:
        return config.replace(**kwargs) if kwargs else config
    d: dict[str, Any] = {}
    if preset is not None:
        d["preset"] = preset
    if config_file is not None:
        file_d = load_config_file(config_file)
        d = {**d, **file_d}
    d.update({k: v for k, v in kwargs.items() if v is not None})
    return EvalConfig.from_dict(d, where=str(config_file) if config_file else "options")


def _versions() -> dict[str, str]:
    from sclzoo.zoo.export import package_versions

    return package_versions()


def evaluate(
    model: str,
    *,
    revision: str | None = None,
    out: str | Path | None = "results",
    config: EvalConfig | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
    provenance_source: str = "local",
    **kwargs: Any,
) -> Result:
    """Evaluates the attribution quality of one model.

    Args:
        model: Folder, ``local-dir:PATH``, zoo alias, ``hf-hub:org/name`` or ``org/name``.
        revision: Hub branch, tag or commit.
        out: Results root (``results/``); None computes without writing.
        config: A ready config (else built from preset / config_file / kwargs).
        preset: ``quick``, ``standard`` or ``paper``.
        config_file: A TOML evaluation config.
        force: Recompute even when a result for the same (model commit, config hash) exists.
        progress: Show progress bars.
        command: The command line recorded in the result.
        provenance_source: ``local`` or ``ci``.
        **kwargs: :class:`EvalConfig` fields (n_samples, methods, metrics, seed, device, …).

    Returns:
        The :class:`Result` (``reused=True`` when an existing result file was returned).
    """
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.hub import load_model, resolve_model
    from sclzoo.zoo.train import device_name, resolve_device

    cfg = build_config(config, preset, config_file, **kwargs)
    methods, metrics = resolve_specs(cfg)  # fail on bad names before any download
    dev = resolve_device(cfg.device)
    resolved = resolve_model(model, revision)
    loaded = load_model(resolved)
    dataset_id = cfg.dataset or loaded.config.get("sclzoo", {}).get("train_dataset", {}).get("id")
    if not dataset_id:
        raise ConfigError(f"model {resolved.repo_id!r} does not name its dataset; pass --dataset")
    data = load_dataset(dataset_id, cfg.split)
    if data.input_size != loaded.input_size:
        raise ConfigError(f"model {resolved.repo_id!r} takes inputs {loaded.input_size} (C, H, W) but dataset "
                          f"{dataset_id!r} has {data.input_size}; pass --dataset with images of the model's size")
    if cfg.n_samples > len(data):
        raise ConfigError(f"--n-samples {cfg.n_samples} is larger than the {cfg.split} split of {dataset_id!r} "
                          f"({len(data)} images); pass --n-samples {len(data)} or less")
    canonical = cfg.canonical({"dataset": dataset_id, "methods": methods, "metrics": metrics, "device": dev.type})
    config_hash = EvalConfig.hash_of(canonical)
    path = result_path(out, resolved.repo_id, resolved.commit_sha, config_hash) if out is not None else None
    if path is not None and path.is_file() and not force:
        return Result(read_result(path), path, reused=True)

    idx = slice(0, cfg.n_samples)
    images, labels, ids = data.images[idx], data.labels[idx], data.indices[idx]
    baseline_pool = None
    if "expected_gradients" in methods:
        train = load_dataset(dataset_id, "train")
        g = torch.Generator().manual_seed(cfg.seed)
        baseline_pool = train.images[torch.randperm(len(train), generator=g)[:64]]
    forward = None
    acc_onnx = None
    if cfg.runtime == "onnx":
        from sclzoo.zoo.onnx_export import onnx_logits, onnx_session

        onnx_file = resolved.path / "onnx" / "model.onnx"
        if not onnx_file.is_file():
            raise ModelLoadError(f"{resolved.repo_id!r} has no onnx/model.onnx; re-export it with `sclzoo export` "
                                 "or use --runtime torch")
        sess = onnx_session(onnx_file, dev.type)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return onnx_logits(sess, x)

    started = datetime.now(timezone.utc)
    t0 = time.time()
    deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    output = run_evaluation(loaded.model, images, labels, ids, cfg, device=dev, split_images=data.images,
                            split_labels=data.labels, baseline_pool=baseline_pool, forward_logits=forward,
                            progress=progress)
    if cfg.runtime == "onnx":
        acc_onnx = output.accuracy
        with torch.no_grad():
            logits = torch.cat([loaded.model.to(dev)(data.images[i : i + 256].to(dev)).cpu()
                                for i in range(0, len(data), 256)])
        acc_torch = {"value": float((logits.argmax(1) == data.labels).float().mean()), "n": len(data)}
    else:
        acc_torch = output.accuracy
    scores = {
        m: {k: {"family": METRICS.get(k).family, "higher_is_better": METRICS.get(k).higher_is_better,
                "version": METRICS.get(k).version, **aggregate(v, cfg.seed)} for k, v in d.items()}
        for m, d in output.scores.items()
    }
    indices_sha = hashlib.sha256(np.asarray(output.sample_ids, dtype="<i8").tobytes()).hexdigest()
    z = loaded.config.get("sclzoo", {})
    doc = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "id": resolved.repo_id, "requested_revision": resolved.requested_revision,
            "commit_sha": resolved.commit_sha, "files_sha256": loaded.files_sha256,
            "architecture": loaded.config["architecture"], "objective": z.get("objective", "unknown"),
            "num_parameters": loaded.num_parameters, "source": resolved.source, "name": loaded.name,
        },
        "dataset": {"id": dataset_id, "split": cfg.split, "n_total": len(data), "n_evaluated": cfg.n_samples,
                    "indices_sha256": indices_sha, "split_sha256": data.split_sha256, "input_range": [0, 1]},
        "config": canonical,
        "config_hash": config_hash,
        "accuracy": {"torch": acc_torch, "onnx": acc_onnx},
        "scores": scores,
        "run": {
            "sclzoo_version": _versions().get("sclzoo", "unknown"),
            "git_revision": _git(),
            "command": command or " ".join(["sclzoo", *sys.argv[1:]]),
            "started_at": started.isoformat(timespec="seconds"),
            "duration_s": round(time.time() - t0, 3),
            "device_name": device_name(dev),
            "deterministic": deterministic,
            "world_size": 1,
            "versions": _versions(),
            "timings_s": output.timings,
            "perturbations_clamped": False,
        },
        "provenance": {"source": provenance_source, "verified": False},
    }
    if path is not None:
        if output.example_maps:  # a few maps for the leaderboard's gallery; written before the result
            from sclzoo.evaluator.results import write_maps

            k = len(next(iter(output.example_maps.values())))
            write_maps(path, output.example_maps, output.sample_ids[:k], images[:k].numpy())
        write_result(path, doc, samples_lines(output.sample_ids, output.labels, output.predictions,
                                              output.targets, output.scores))
    return Result(doc, path, output)


def _git() -> str:
    from sclzoo.zoo.export import git_revision

    return git_revision()


def sclzoo_version() -> str:
    try:
        return metadata.version("sclzoo")
    except metadata.PackageNotFoundError:
        return "unknown"
