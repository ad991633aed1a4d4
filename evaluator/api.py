"""``sclzoo.evaluate``: the evaluation job — resolve and load a model, pick images, run, write the result.

This is the one place that joins I/O (Hub, datasets, result files) with the pure runner; the CLI is a thin layer
over it, and Python users call it directly::

    import sclzoo
    result = sclzoo.evaluate(model="supcon-resnet8-mnist", n_samples=32, methods=["saliency"])
    result.scores_frame()  # pandas view of the aggregated scores
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sclzoo.errors import ConfigError, ModelLoadError, ResultError
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.metrics import METRICS
from sclzoo.evaluator.results import (
    SCHEMA_VERSION,
    aggregate,
    check_writable,
    checkpoint_dir,
    read_checkpoint,
    read_result,
    remove_checkpoint,
    result_path,
    samples_lines,
    write_checkpoint_batch,
    write_file,
    write_result,
)
from sclzoo.evaluator.runner import (
    BatchResult,
    EvalOutput,
    merge_batches,
    onnx_runtime,
    resolve_specs,
    run_evaluation,
    select_samples,
)
from sclzoo.zoo.distributed import DistInfo, barrier, init_distributed, shutdown

__all__ = ["Result", "evaluate", "build_config", "explain"]


@dataclass
class Result:
    """A finished evaluation: the result document, where it was written, and (when just computed) the raw output."""

    data: dict[str, Any]
    path: Path | None
    output: EvalOutput | None = None
    reused: bool = False
    is_main: bool = True  # False on the other processes of a torchrun job (only rank 0 writes and reports)

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
    resume: bool = False,
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
        force: Recompute even when a result for the same (model commit, config hash) exists; discards the
            checkpoint of an interrupted run.
        resume: Continue an interrupted run from its checkpoint ``<config_hash>.partial/`` (finished batches are
            not computed again; the result is identical to an uninterrupted run's).
        progress: Show progress bars.
        command: The command line recorded in the result.
        provenance_source: ``local`` or ``ci``.
        **kwargs: :class:`EvalConfig` fields (n_samples, methods, metrics, seed, device, …).

    Returns:
        The :class:`Result` (``reused=True`` when an existing result file was returned).

    Under ``torchrun --nproc_per_node=N`` each process scores every N-th batch of images; the per-sample scores
    are gathered on every process and rank 0 writes the result (``run.world_size`` = N).

    Raises:
        ResultError: a checkpoint exists but neither ``resume`` nor ``force`` is given, a checkpoint is corrupt,
            or the results folder cannot be written.
    """
    from sclzoo.zoo.train import resolve_device

    cfg = build_config(config, preset, config_file, **kwargs)
    methods, metrics = resolve_specs(cfg)  # fail on bad names before any download
    dev = resolve_device(cfg.device)
    resolved, loaded, dataset_id, data = _model_and_data(model, revision, cfg.dataset, cfg.split)
    if cfg.n_samples > len(data):
        raise ConfigError(f"--n-samples {cfg.n_samples} is larger than the {cfg.split} split of {dataset_id!r} "
                          f"({len(data)} images); pass --n-samples {len(data)} or less")
    positions = select_samples(data.labels, cfg.n_samples, cfg.selection, cfg.seed)
    images, labels, ids = data.images[positions], data.labels[positions], data.indices[positions]
    indices_sha = hashlib.sha256(np.asarray(ids.numpy(), dtype="<i8").tobytes()).hexdigest()
    batch_auto = cfg.batch_size == "auto"
    if batch_auto:
        from sclzoo.evaluator.runner import auto_batch_size

        cfg = cfg.replace(batch_size=auto_batch_size(loaded.model, images, methods, dev))
    canonical = cfg.canonical({"dataset": dataset_id, "methods": methods, "metrics": metrics, "device": dev.type,
                               "indices_sha256": indices_sha})
    canonical["batch_size_auto"] = batch_auto
    config_hash = EvalConfig.hash_of(canonical)
    path = result_path(out, resolved.repo_id, resolved.commit_sha, config_hash) if out is not None else None
    if path is not None and path.is_file() and not force:  # under torchrun every process returns here
        return Result(read_result(path), path, reused=True, is_main=os.environ.get("RANK", "0") == "0")
    if path is not None:
        check_writable(path)  # fail now, not after hours of compute

    import torch.distributed as dist

    own_group = not dist.is_initialized()
    info = init_distributed(dev)
    try:
        if info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
        meta = {"config_hash": config_hash, "model_commit": resolved.commit_sha, "n_samples": cfg.n_samples,
                "indices_sha256": indices_sha, "batch_size": cfg.batch_size, "methods": list(methods),
                "metrics": list(metrics)}
        done, on_batch = _checkpointing(path, meta, ids.numpy(), resume=resume, force=force, info=info)
        job = _Job(cfg, loaded, resolved, data, dataset_id, images, labels, ids, methods, canonical, config_hash,
                   indices_sha, path)
        return _run(job, dev, info, done, on_batch, progress=progress, command=command,
                    provenance_source=provenance_source)
    finally:
        if own_group:
            shutdown(info)


def _model_and_data(model: str, revision: str | None, dataset: str | None, split: str) -> tuple[Any, Any, str, Any]:
    """Resolves and loads a model and the split it is evaluated on (default: its training dataset's).

    Raises:
        ConfigError: the model names no dataset, or the dataset's images do not have the model's input size.
    """
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.hub import load_model, resolve_model

    resolved = resolve_model(model, revision)
    loaded = load_model(resolved)
    dataset_id = dataset or loaded.config.get("sclzoo", {}).get("train_dataset", {}).get("id")
    if not dataset_id:
        raise ConfigError(f"model {resolved.repo_id!r} does not name its dataset; pass --dataset")
    data = load_dataset(dataset_id, split)
    if data.input_size != loaded.input_size:
        own = loaded.config.get("sclzoo", {}).get("train_dataset", {}).get("id")
        fix = f"drop --dataset to use its own {own!r}" if own and own != dataset_id else "pass --dataset"
        raise ConfigError(f"model {resolved.repo_id!r} takes inputs {loaded.input_size} (C, H, W) but dataset "
                          f"{dataset_id!r} has {data.input_size}; {fix}, or another dataset with images of the "
                          "model's size")
    return resolved, loaded, dataset_id, data


def _checkpointing(path: Path | None, meta: dict[str, Any], ids: np.ndarray, *, resume: bool, force: bool,
                   info: DistInfo) -> tuple[dict[int, BatchResult], Callable[[BatchResult], None] | None]:
    """Finished batches to resume from, and the callback that checkpoints each new batch."""
    if path is None:
        return {}, None
    folder = checkpoint_dir(path)
    if folder.exists() and not (resume or force):
        raise ResultError(f"an interrupted run of this config left the checkpoint {str(folder)!r}; pass --resume "
                          "(resume=True) to continue it or --force to start over")
    if force and info.is_main:
        remove_checkpoint(folder)
    barrier(info)  # nobody reads or writes the folder before rank 0 has cleared it
    done = read_checkpoint(folder, meta, ids) if resume and not force else {}

    def on_batch(batch: BatchResult) -> None:
        write_checkpoint_batch(folder, meta, batch, ids[batch.start : batch.start + batch.size])

    return done, on_batch


def _gather(output: EvalOutput, batch_size: int, info: DistInfo) -> EvalOutput:
    """Every process's batches, merged (on every process); timings are summed over processes."""
    import torch.distributed as dist

    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, (output.batches, output.timings))
    batches: dict[int, BatchResult] = {}
    timings: dict[str, float] = {}
    for part_batches, part_timings in parts:
        batches.update(part_batches)
        for k, v in part_timings.items():
            timings[k] = round(timings.get(k, 0.0) + v, 4)
    merged = merge_batches(output, batches, batch_size)
    if merged.missing:
        raise RuntimeError(f"batches {list(merged.missing)} were scored by no process")
    return replace(merged, timings=timings)


@dataclass(frozen=True)
class _Job:
    """What :func:`evaluate` resolved before computing: model, images, and the config that names the result."""

    cfg: EvalConfig
    loaded: Any  # zoo.hub.LoadedModel
    resolved: Any  # zoo.hub.ResolvedModel
    data: Any  # zoo.data.ImageDataset (the whole split)
    dataset_id: str
    images: torch.Tensor  # (N, C, H, W) evaluated images
    labels: torch.Tensor  # (N,)
    ids: torch.Tensor  # (N,) dataset indices
    methods: dict[str, Any]
    canonical: dict[str, Any]
    config_hash: str
    indices_sha: str
    path: Path | None


def _run(job: _Job, dev: torch.device, info: DistInfo, done: dict[int, BatchResult],
         on_batch: Callable[[BatchResult], None] | None, *, progress: bool, command: str | None,
         provenance_source: str) -> Result:
    """Runs the evaluation (this process's shard), gathers the shards, and writes the result on rank 0."""
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.train import device_name

    cfg, loaded, resolved, data, dataset_id = job.cfg, job.loaded, job.resolved, job.data, job.dataset_id
    images, labels, ids, methods, path = job.images, job.labels, job.ids, job.methods, job.path
    canonical, config_hash, indices_sha = job.canonical, job.config_hash, job.indices_sha
    baseline_pool = None
    if "expected_gradients" in methods:
        train = load_dataset(dataset_id, "train")
        g = torch.Generator().manual_seed(cfg.seed)
        baseline_pool = train.images[torch.randperm(len(train), generator=g)[:64]]
    runtime = None
    acc_onnx = None
    if cfg.runtime == "onnx":
        onnx_file = resolved.path / "onnx" / "model.onnx"
        if not onnx_file.is_file():
            raise ModelLoadError(f"{resolved.repo_id!r} has no onnx/model.onnx; re-export it with `sclzoo export` "
                                 "or use --runtime torch")
        runtime = onnx_runtime(onnx_file, loaded.model, dev)

    started = datetime.now(timezone.utc)
    t0 = time.time()
    deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    output = run_evaluation(runtime.model if runtime else loaded.model, images, labels, ids, cfg, device=dev,
                            split_images=data.images, split_labels=data.labels, baseline_pool=baseline_pool,
                            forward_logits=runtime.forward if runtime else None,
                            forward_threads=runtime.forward_threads if runtime else None,
                            progress=progress and info.is_main, done_batches=done, on_batch=on_batch,
                            shard=(info.rank, info.world_size))
    if info.enabled:
        output = _gather(output, cfg.batch_size, info)
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
            "world_size": info.world_size,
            "versions": _versions(),
            "timings_s": output.timings,
            "perturbations_clamped": False,
        },
        "provenance": {"source": provenance_source, "verified": False},
    }
    if path is not None and info.is_main:
        if output.example_maps:  # a few maps for the leaderboard's gallery; written before the result
            from sclzoo.evaluator.results import write_maps

            k = len(next(iter(output.example_maps.values())))
            write_maps(path, output.example_maps, output.sample_ids[:k], images[:k].numpy())
        write_result(path, doc, samples_lines(output.sample_ids, output.labels, output.predictions,
                                              output.targets, output.scores))
        remove_checkpoint(checkpoint_dir(path))  # the result is complete: its checkpoint has served
    return Result(doc, path if info.is_main else None, output, is_main=info.is_main)


def explain(
    model: str,
    images: Sequence[int],
    *,
    methods: Sequence[str] = ("saliency", "integrated_gradients", "gradcam"),
    out: str | Path = "maps.png",
    revision: str | None = None,
    dataset: str | None = None,
    split: str = "test",
    target: str = "predicted",
    seed: int = 0,
    device: str = "auto",
    method_params: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Draws the attribution maps of a few images as a labelled grid (``sclzoo explain``).

    Args:
        model: Folder, zoo alias, ``hf-hub:org/name`` or ``org/name``.
        images: Positions of the images in the split (0-based).
        methods: Attribution methods, one pair of columns each (signed map, |map| over the image).
        out: PNG file to write (atomically).
        revision: Hub branch, tag or commit.
        dataset: Dataset id (default: the model's own).
        split: ``test`` or ``train``.
        target: ``predicted`` or ``label``: the class whose logit is explained.
        seed: Seed of random methods (per-sample draws, as in ``evaluate``).
        device: ``auto``, ``cpu`` or ``cuda``.
        method_params: Per-method parameter overrides.

    Returns:
        The path written.

    Raises:
        ConfigError: an image index out of range, an unknown target, an ``out`` that is not a ``.png``.
        UnknownNameError: an unknown method (with "did you mean").
    """
    from sclzoo.evaluator.attributions import METHODS, attribute
    from sclzoo.evaluator.plots import explanation_grid
    from sclzoo.zoo.train import resolve_device

    out_path = Path(out)
    if out_path.suffix.lower() != ".png":
        raise ConfigError(f"--out {str(out_path)!r} is not a .png file name; end it with .png")
    if target not in ("predicted", "label"):
        raise ConfigError(f"target {target!r} is unknown; use predicted or label")
    if not images:
        raise ConfigError("no image selected; pass --images, e.g. 0,5,9")
    methods = list(methods)
    if not methods:
        raise ConfigError("no attribution method selected; pass --methods (see `sclzoo ls methods`)")
    params = dict(method_params or {})
    for m in [*methods, *params]:
        METHODS.get(m)  # unknown names fail here, with "did you mean"
    dev = resolve_device(device)
    resolved, loaded, dataset_id, data = _model_and_data(model, revision, dataset, split)
    bad = [i for i in images if not 0 <= i < len(data)]
    if bad:
        raise ConfigError(f"image index {bad[0]} is out of range: the {split} split of {dataset_id!r} has {len(data)} "
                          f"images; pass --images between 0 and {len(data) - 1}")
    pos = torch.as_tensor(list(images), dtype=torch.long)
    x, y, ids = data.images[pos], data.labels[pos], data.indices[pos]
    net = loaded.model.eval().to(dev)
    with torch.no_grad():
        logits = net(x.to(dev)).float().cpu()
    if not torch.isfinite(logits).all():
        raise ModelLoadError(f"the model returns NaN/inf logits for images {images}; its weights are broken — "
                             "retrain or re-export it")
    preds = logits.argmax(1)
    tgt = preds if target == "predicted" else y
    torch.use_deterministic_algorithms(True, warn_only=True)
    maps = {m: attribute(m, net, x.to(dev), tgt.to(dev), sample_ids=ids, seed=seed, **params.get(m, {}))
            .sum(1).cpu().numpy() for m in methods}
    names = data.label_names
    labels = [f"#{int(i)}: label {names[int(a)]}, pred {names[int(b)]}" for i, a, b in zip(ids, y, preds, strict=True)]
    title = f"{resolved.repo_id} · {dataset_id} {split} · explaining the {target} class"
    return write_file(out_path, explanation_grid(x.numpy(), maps, labels, title))


def _git() -> str:
    from sclzoo.zoo.export import git_revision

    return git_revision()


def sclzoo_version() -> str:
    try:
        return metadata.version("sclzoo")
    except metadata.PackageNotFoundError:
        return "unknown"
