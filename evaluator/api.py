"""``sclzoo.evaluate``: the evaluation job — resolve and load a model, pick images, run, write the result.

This is the one place that joins I/O (Hub, datasets, result files) with the pure runner; the CLI is a thin layer
over it, and Python users call it directly::

    import sclzoo
    result = sclzoo.evaluate(model="supcon-resnet8-mnist", n_samples=32, methods=["saliency"])
    result.scores_frame()  # pandas view of the aggregated scores
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sclzoo.deletion import PatchDeletionConfig, deletion_in_domain
from sclzoo.errors import ConfigError, DatasetError, ModelLoadError, ResultError
from sclzoo.evaluator.config import EvalConfig, build_config
from sclzoo.evaluator.document import (
    AccuracyRecord,
    DatasetRecord,
    ModelRecord,
    PatchDeletionRecord,
    ProvenanceRecord,
    RunRecord,
    build_result,
    score_record,
)
from sclzoo.evaluator.metrics import METRICS
from sclzoo.evaluator.results import (
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
    check_precision,
    merge_batches,
    onnx_runtime,
    resolve_specs,
    run_evaluation,
    select_samples,
)
from sclzoo.evaluator.seeding import deterministic_algorithms
from sclzoo.zoo.distributed import DistInfo, agree_min, barrier, init_distributed, shutdown

__all__ = ["Result", "EvalPlan", "evaluate", "baseline_pool_for", "build_config", "dry_run", "explain", "plan"]


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


def _versions() -> dict[str, str]:
    from sclzoo.zoo.export import package_versions

    return package_versions()


def evaluate(
    model: Any,
    *,
    data: Any = None,
    model_id: str | None = None,
    preprocess: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    class_map: str | Path | dict[str, int] | None = None,
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
        model: Folder, ``local-dir:PATH``, zoo alias, ``hf-hub:org/name``, ``org/name``, ``timm:ARCH`` (with
            ``weights`` and ``num_classes``), or an ``nn.Module`` (with ``model_id``).
        data: A dataset id, ``imagefolder:PATH``, or ``(images, labels[, class_names])`` tensors with images
            (N, C, H, W) in [0, 1] (default: the model's own dataset; same as the ``dataset`` config key).
        model_id: ``org/name`` results are filed under, for an ``nn.Module`` or ``timm:ARCH``.
        preprocess: Overrides of the model's data config: ``input_size``, ``interpolation``, ``crop_pct``,
            ``crop_mode``, ``mean``, ``std`` (for an ``nn.Module``: its input size and normalisation).
        weights: For ``timm:ARCH``: a safetensors weights file.
        num_classes: For ``timm:ARCH``: classes of its classifier.
        in_chans: For ``timm:ARCH``: input channels.
        class_map: Dataset class name → model logit index (a JSON/TOML file or a dict).
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
    from sclzoo.evaluator.cache import finished_result, remember_result, request_key
    from sclzoo.zoo.train import resolve_device

    cfg = build_config(config, preset, config_file, **kwargs)
    request = {"data": data, "preprocess": preprocess, "class_map": class_map, "weights": weights,
               "num_classes": num_classes, "in_chans": in_chans, "model_id": model_id}
    rank0 = os.environ.get("RANK", "0") == "0"
    if out is not None and not force:  # the same request finished before: its result, without planning again
        found = finished_result(model, cfg, out, revision=revision, **request)
        if found is not None:
            return Result(found[0], found[1], reused=True, is_main=rank0)
    methods, metrics = resolve_specs(cfg)  # fail on bad names before any download
    dev = resolve_device(cfg.device)
    check_precision(cfg.precision, dev)  # fp16 on a CPU fails before anything is loaded
    ep = plan(model, cfg, device=dev, revision=revision, **request)
    memo = request_key(ep.resolved, cfg, **request) if out is not None else None
    resolved, loaded, dplan = ep.resolved, ep.loaded, ep.data
    images, labels, ids, indices_sha, canonical = ep.images, ep.labels, ep.ids, ep.indices_sha, ep.canonical
    config_hash = ep.config_hash
    path = result_path(out, resolved.repo_id, resolved.commit_sha, config_hash) if out is not None else None
    if path is not None and path.is_file() and not force:  # under torchrun every process returns here
        found_doc = read_result(path)
        if rank0 and out is not None:
            remember_result(out, memo, resolved.repo_id, resolved.commit_sha, config_hash)
        return Result(found_doc, path, reused=True, is_main=rank0)
    if path is not None:
        check_writable(path)  # fail now, not after hours of compute

    import torch.distributed as dist

    own_group = not dist.is_initialized()
    info = init_distributed(dev)
    try:
        if info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
        if cfg.batch_size == "auto":  # measured now: the process group is up and dev is this process's device
            cfg = cfg.replace(batch_size=_auto_batch_size(ep, cfg, dev, info))
            canonical = {**canonical, "batch_size": cfg.batch_size}  # execution only: the hash is unchanged
        meta = {"config_hash": config_hash, "model_commit": resolved.commit_sha, "n_samples": cfg.n_samples,
                "indices_sha256": indices_sha, "batch_size": cfg.batch_size, "methods": list(methods),
                "metrics": list(metrics)}
        done, on_batch = _checkpointing(path, meta, ids.numpy(), resume=resume, force=force, info=info)
        job = _Job(cfg, loaded, resolved, dplan, images, labels, ids, ep.methods, canonical, config_hash,
                   indices_sha, path, Path(out) if out is not None else None, ep.masks)
        res = _run(job, dev, info, done, on_batch, progress=progress, command=command,
                   provenance_source=provenance_source)
        if res.path is not None and out is not None:  # rank 0 wrote the result
            remember_result(out, memo, resolved.repo_id, resolved.commit_sha, config_hash)
        return res
    finally:
        if own_group:
            shutdown(info)


def _auto_batch_size(ep: EvalPlan, cfg: EvalConfig, dev: torch.device, info: DistInfo) -> int:
    """``--batch-size auto`` measured on this process's device with every selected method (expected_gradients
    with its baseline pool) and metric; under torchrun every process takes the smallest choice of all, so that
    they deal out the same batches."""
    from sclzoo.evaluator.runner import auto_batch_size

    pool = baseline_pool_for(ep.data, ep.loaded, list(ep.methods), cfg.seed)
    chosen = auto_batch_size(ep.loaded.model, ep.images, ep.methods, dev, baseline_pool=pool, metrics=ep.metrics,
                             seed=cfg.seed, masks=ep.masks, precision=cfg.precision)
    return agree_min(chosen, info)


@dataclass(frozen=True)
class DataPlan:
    """The evaluated split, brought to the model's input, and how it is identified in the config.

    Attributes:
        data: The split (images at the model's input size and channels, [0, 1]).
        dataset_id: The id the config (and so the config hash) records: a registered name, or for image folders
            and tensors ``<kind>@sha256:<content hash>`` of the pixels, labels and class names (not a path).
        dataset_ref: What to load it again with (a registered name or ``imagefolder:PATH``); None for tensors.
        split: The split evaluated.
        labels: (N,) labels in the model's logit space, or the dataset's labels when they do not match it.
        labels_match: Whether ``labels`` index the model's logits (accuracy and ``--target label`` need it).
        class_map: Dataset class name → model logit, when one was given or matched by label names.
        preprocess: The canonical preprocessing record, None when images reach the model unchanged.
        record: Extra facts for the result's dataset block (class names, content hash, preprocessing).
    """

    data: Any
    dataset_id: str
    dataset_ref: str | None
    split: str
    labels: torch.Tensor
    labels_match: bool
    class_map: dict[str, int] | None
    preprocess: dict[str, Any] | None
    record: dict[str, Any]


def read_class_map(path: str | Path | dict[str, int]) -> dict[str, int]:
    """Reads a class map (JSON or TOML ``{"folder name": model logit index}``).

    Raises:
        ConfigError: the file is missing, unreadable, or not a table of non-negative integers.
    """
    if isinstance(path, dict):
        raw: Any = path
        where = "class_map"
    else:
        p = Path(path)
        where = f"class map {str(p)!r}"
        if not p.is_file():
            raise ConfigError(f"{where} does not exist; pass a JSON or TOML file mapping folder names to class "
                              "indices, e.g. {\"cat\": 281}")
        if p.suffix.lower() == ".toml":
            from sclzoo.tomlfile import read_toml

            raw = read_toml(p, "class map")
        else:
            try:
                raw = json.loads(p.read_bytes().decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"{where} is not valid JSON ({e}); write {{\"folder name\": index, ...}}") from None
    if not isinstance(raw, dict) or not raw or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in raw.items()):
        raise ConfigError(f"{where} must map class names to non-negative integers, e.g. {{\"cat\": 281}}")
    return dict(raw)


def _tensor_dataset(data: Any, name: str = "tensors") -> Any:
    """(images, labels[, class names]) or a TensorDataset → an in-memory split ``all``.

    Raises:
        ConfigError: not 4-D images in [0, 1] (floats) or 0..255 (uint8), labels not matching.
    """
    from sclzoo.zoo.data import ImageDataset

    if hasattr(data, "tensors"):  # torch.utils.data.TensorDataset
        data = data.tensors
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ConfigError("data must be a dataset id, 'imagefolder:PATH', or (images, labels[, class_names]) "
                          f"tensors, got {type(data).__name__}")
    images, labels = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if images.ndim != 4 or not images.is_floating_point():
        raise ConfigError(f"images must be a float (N, C, H, W) tensor in [0, 1], got {images.dtype} "
                          f"{list(images.shape)}")
    images = images.detach().float().cpu().contiguous()
    if len(images) == 0 or not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ConfigError("images must be finite and in [0, 1] (sclzoo normalises inside the model); divide "
                          "8-bit images by 255")
    if labels.ndim != 1 or len(labels) != len(images) or labels.is_floating_point() or (labels < 0).any():
        raise ConfigError(f"labels must be {len(images)} non-negative integers, got {labels.dtype} "
                          f"{list(labels.shape)}")
    labels = labels.long().cpu()
    k = int(labels.max()) + 1
    names = tuple(str(n) for n in data[2]) if len(data) == 3 else tuple(str(i) for i in range(k))
    if len(names) < k:
        raise ConfigError(f"{len(names)} class names given but the labels go up to {k - 1}")
    return ImageDataset(id=name, split="all", images=images, labels=labels, indices=torch.arange(len(images)),
                        label_names=names, mean=(0.0,), std=(1.0,), split_sha256="")


def _model_and_data(model: Any, revision: str | None, dataset: Any, split: str | None, *,
                    target: str = "predicted", model_id: str | None = None,
                    preprocess: dict[str, Any] | None = None, weights: str | Path | None = None,
                    num_classes: int | None = None, in_chans: int | None = None,
                    class_map: str | Path | dict[str, int] | None = None) -> tuple[Any, Any, DataPlan]:
    """Resolves and loads a model, and the split it is evaluated on, brought to the model's input.

    The dataset defaults to the model's own training dataset. Images are converted to the model's channels and
    resized/cropped as its data config says (:mod:`sclzoo.zoo.preprocess`); labels are mapped to the model's
    logits by ``class_map``, by matching class names with the model's label names, or used as they are when
    the class counts agree.

    Raises:
        ConfigError: no dataset, a class-count mismatch with ``target="label"`` and no class map, a single-class
            dataset, a class map that misses a class or points past the model's logits.
    """
    from torch import nn

    from sclzoo.zoo.data import default_split, load_dataset
    from sclzoo.zoo.hub import from_module, load_model, module_data_config, resolve_model
    from sclzoo.zoo.preprocess import content_sha256

    if isinstance(model, nn.Module):
        if model_id is None:
            raise ConfigError("evaluating an nn.Module needs model_id='org/name' (the id results are filed under)")
        loaded = from_module(model, model_id, preprocess)
        resolved = loaded.resolved
    else:
        if model_id is not None and not str(model).startswith("timm:"):
            raise ConfigError(f"model_id is for nn.Module and timm: models; {model!r} has its own id")
        resolved = resolve_model(model, revision, weights=weights, num_classes=num_classes, in_chans=in_chans,
                                 model_id=model_id)
        loaded = load_model(resolved, preprocess=preprocess)
    tensors = dataset is not None and not isinstance(dataset, str)
    ref = None if tensors else (dataset or loaded.config.get("sclzoo", {}).get("train_dataset", {}).get("id"))
    if not tensors and not ref:
        raise ConfigError(f"model {resolved.repo_id!r} does not name its dataset; pass --dataset (a name from "
                          "`sclzoo ls datasets` or imagefolder:PATH)")
    if tensors:
        raw = _tensor_dataset(dataset)
        split = split or "all"
        if split != "all":
            raise ConfigError(f"tensor data has one split, 'all'; drop split={split!r}")
        loaded = module_data_config(loaded, raw.input_size, preprocess)
        dc = loaded.data_config
        from dataclasses import replace as _replace

        from sclzoo.zoo.preprocess import transform_tensors

        data = _replace(raw, images=transform_tensors(raw.images, dc))
        src_size = raw.input_size
    else:
        split = split or default_split(ref)
        if loaded.data_config is None:  # a Python module without an input size: the dataset's own
            probe = load_dataset(ref, split)
            loaded = module_data_config(loaded, probe.input_size, preprocess)
        dc = loaded.data_config
        data = load_dataset(ref, split, prep=dc)
        src_size = _source_size(str(ref), split, data)
    if dc is None:  # every branch above sets it; a clear error rather than an AttributeError if one did not
        raise ModelLoadError(f"{resolved.repo_id!r} has no input size; pass preprocess={{'input_size': (C, H, W)}}")
    k, names = loaded.num_classes, tuple(data.label_names)
    content = content_sha256(data.images, data.labels, names)
    is_registered = not tensors and not str(ref).startswith("imagefolder:")
    kind = "tensors" if tensors else "imagefolder"
    dataset_id = str(ref) if is_registered else f"{kind}@sha256:{content}"
    cmap: dict[str, int] | None = read_class_map(class_map) if class_map is not None else None
    if cmap is None and loaded.label_names and names != tuple(loaded.label_names[: len(names)]) \
            and set(names) <= set(loaded.label_names):
        cmap = {n: loaded.label_names.index(n) for n in names}  # matched by the model's own label names
    labels, labels_match = data.labels, True
    if cmap is not None:
        missing = [n for n in names if n not in cmap]
        if missing:
            raise ConfigError(f"the class map has no entry for class(es) {missing[:5]} of the dataset; add them "
                              "(folder name → model class index)")
        over = {n: i for n, i in cmap.items() if i >= k}
        if over:
            raise ConfigError(f"the class map points {over} past the model's {k} classes (0..{k - 1}); fix the map")
        cmap = {n: cmap[n] for n in names}
        labels = torch.tensor([cmap[names[int(y)]] for y in data.labels], dtype=torch.long)
    elif len(names) < 2:
        raise ConfigError(f"dataset {ref or 'tensors'!r} has a single class ({names[0]!r}); add the other class "
                          "folders, or pass --class-map FILE to say which model class it is")
    elif len(names) != k:
        if target == "label":
            raise ConfigError(f"the model has {k} classes but the dataset has {len(names)} ({', '.join(names[:5])}"
                              f"{', …' if len(names) > 5 else ''}); pass --class-map FILE (class name → model class "
                              "index) or --target predicted")
        labels_match = False
    c, h, w = src_size
    pre = dc.record(h, w, c)
    canonical_pre = None
    if pre["resized"] or pre["channels_converted"]:
        canonical_pre = {key: pre[key] for key in ("input_size", "interpolation", "crop_pct", "crop_mode",
                                                   "source_size")}
    record = {"class_names": list(names), "content_sha256": content, "preprocess": pre,
              "labels_match_model": labels_match}
    if cmap is not None:
        record["class_map"] = cmap
    if not is_registered and not tensors:
        record["folder"] = Path(str(ref)[len("imagefolder:"):]).name
    return resolved, loaded, DataPlan(data, dataset_id, None if tensors else str(ref), split, labels,
                                      labels_match, cmap, canonical_pre, record)


def _source_size(ref: str, split: str, data: Any) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images before preprocessing (image folders: the first image's)."""
    if not ref.startswith("imagefolder:"):
        from sclzoo.zoo.data import DATASETS

        raw = DATASETS.get(ref)(split, None)
        return raw.input_size
    from PIL import Image

    root = Path(ref[len("imagefolder:"):])
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"):
            with Image.open(f) as im:
                return (1 if im.mode in ("L", "1", "I", "I;16", "F") else 3), im.height, im.width
    return data.input_size


@dataclass(frozen=True)
class EvalPlan:
    """Everything an evaluation resolves before computing: model, images, canonical config, its hash."""

    resolved: Any  # zoo.hub.ResolvedModel
    loaded: Any  # zoo.hub.LoadedModel
    data: DataPlan
    methods: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    images: torch.Tensor  # (N, C, H, W) evaluated images at the model's input
    labels: torch.Tensor  # (N,) in the model's logit space when DataPlan.labels_match
    ids: torch.Tensor  # (N,) sample ids
    indices_sha: str
    canonical: dict[str, Any]
    config_hash: str
    masks: torch.Tensor | None = None  # (N, H, W) bool ground truth of the evaluated images, when a metric uses it


def _mask_kind(cfg: EvalConfig, metrics: Sequence[str], dplan: DataPlan) -> str | None:
    """The ground-truth kind the run uses: ``cfg.mask`` or the dataset's default when a selected metric needs a
    mask (the localisation family), else None.

    Raises:
        ConfigError: a mask is asked for but no selected metric uses one; such a metric is selected but the
            dataset has no masks, or none of the asked kind.
    """
    needing = [m for m in metrics if METRICS.get(m).needs_mask]
    if not needing:
        if cfg.mask is not None:
            users = ", ".join(n for n, s in METRICS.items() if s.needs_mask)
            raise ConfigError(f"--mask {cfg.mask} is given but no selected metric uses a ground-truth mask; drop "
                              f"--mask, or add one of {users} to --metrics")
        return None
    data, shown = dplan.data, dplan.dataset_ref or dplan.dataset_id
    if not data.ground_truth:
        from sclzoo.zoo.data import MASKED_DATASETS

        raise ConfigError(f"metric(s) {', '.join(needing)} compare maps with ground-truth masks, but dataset "
                          f"{shown!r} has none; evaluate them on a dataset with masks (--dataset "
                          f"{' or '.join(MASKED_DATASETS)}) or drop them from --metrics")
    kind = cfg.mask or data.mask_kind
    if kind not in data.ground_truth:
        raise ConfigError(f"dataset {shown!r} has no mask {kind!r}; pass --mask {' or '.join(data.ground_truth)}")
    return str(kind)


def _masks_sha256(masks: torch.Tensor) -> str:
    """sha256 of (N, H, W) bool masks: shape, then the bits row-major."""
    h = hashlib.sha256(np.asarray(list(masks.shape), dtype="<i8").tobytes())
    h.update(np.packbits(masks.numpy().astype(bool)).tobytes())
    return h.hexdigest()


def plan(model: Any, cfg: EvalConfig, *, device: torch.device | None = None, revision: str | None = None,
         data: Any = None, model_id: str | None = None, preprocess: dict[str, Any] | None = None,
         weights: str | Path | None = None, num_classes: int | None = None, in_chans: int | None = None,
         class_map: str | Path | dict[str, int] | None = None) -> EvalPlan:
    """The one evaluation plan, shared by :func:`evaluate` and ``leaderboard-update``: resolves and loads the
    model and its data, picks the images, and builds the canonical config and its hash (computes nothing).

    Raises:
        ConfigError: the dataset is given twice, ``n_samples`` exceeds the split, or a localisation metric has no
            mask (:func:`_mask_kind`); see :func:`_model_and_data`.
    """
    methods, metrics = resolve_specs(cfg)
    if data is not None and cfg.dataset is not None:
        raise ConfigError("pass the dataset once: data= or dataset=, not both")
    resolved, loaded, dplan = _model_and_data(
        model, revision, data if data is not None else cfg.dataset, cfg.split, target=cfg.target,
        model_id=model_id, preprocess=preprocess, weights=weights, num_classes=num_classes, in_chans=in_chans,
        class_map=class_map)
    kind = _mask_kind(cfg, list(metrics), dplan)
    if kind is not None:  # the chosen ground truth goes into the data, the dataset record and the config
        chosen = dplan.data.with_mask(kind)
        dplan = replace(dplan, data=chosen, record={**dplan.record, "mask": kind,
                                                    "masks_sha256": _masks_sha256(chosen.masks)})
    ds, dataset_id = dplan.data, dplan.dataset_id
    if cfg.n_samples > len(ds):
        raise ConfigError(f"--n-samples {cfg.n_samples} is larger than the {dplan.split} split of "
                          f"{dplan.dataset_ref or dataset_id!r} ({len(ds)} images); pass --n-samples {len(ds)} or less")
    positions = select_samples(ds.labels, cfg.n_samples, cfg.selection, cfg.seed)
    images, labels, ids = ds.images[positions], dplan.labels[positions], ds.indices[positions]
    indices_sha = hashlib.sha256(np.asarray(ids.numpy(), dtype="<i8").tobytes()).hexdigest()
    resolved_cfg: dict[str, Any] = {"dataset": dataset_id, "methods": methods, "metrics": metrics,
                                    "split": dplan.split, "indices_sha256": indices_sha,
                                    "preprocess": dplan.preprocess, "class_map": dplan.class_map, "mask": kind}
    if device is not None:
        resolved_cfg["device"] = device.type
    canonical = cfg.canonical(resolved_cfg)
    canonical["batch_size_auto"] = cfg.batch_size == "auto"
    masks = ds.masks[positions] if kind is not None else None
    return EvalPlan(resolved, loaded, dplan, methods, metrics, images, labels, ids, indices_sha, canonical,
                    EvalConfig.hash_of(canonical), masks)


def dry_run(model: Any, cfg: EvalConfig, *, out: str | Path | None = "results", **plan_kwargs: Any
            ) -> dict[str, Any]:
    """What ``evaluate`` would do, without doing it: the resolved model, data, device and config hash, the
    number of forward passes and explanations, and a wall-time estimate from timing a few images here.

    Args:
        model: As for :func:`evaluate`.
        cfg: The evaluation config.
        out: Results root, to say whether a finished result would be reused.
        **plan_kwargs: :func:`plan`'s keyword arguments (revision, data, model_id, preprocess, weights, …).

    Raises:
        The errors of :func:`plan` (unknown model with "did you mean", bad dataset, …).
    """
    from sclzoo.evaluator.attributions import method_passes
    from sclzoo.evaluator.runner import estimate_cost
    from sclzoo.zoo.train import resolve_device

    dev = resolve_device(cfg.device)
    ep = plan(model, cfg, device=dev, **plan_kwargs)
    cost = estimate_cost(cfg)
    net = ep.loaded.model.eval().to(dev)
    x = ep.images[:8].to(dev)
    target = torch.zeros(len(x), dtype=torch.long, device=dev)
    with torch.no_grad():
        net(x)  # warm-up
        t0 = time.perf_counter()
        net(x)
        t_forward = (time.perf_counter() - t0) / len(x)
    xg = x.clone().requires_grad_(True)
    t0 = time.perf_counter()
    net(xg).gather(1, target[:, None]).sum().backward()
    t_gradient = (time.perf_counter() - t0) / len(x)
    per_sample_e = cost["explanations"] // max(1, len(ep.methods) * cfg.n_samples)
    gradients = explain_forwards = 0
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    for method, params in ep.methods.items():  # each explanation costs the method's declared passes
        fwd, grad = method_passes(method, params, shape)
        gradients += per_sample_e * cfg.n_samples * grad
        explain_forwards += per_sample_e * cfg.n_samples * fwd
    estimate = (cost["forwards"] + explain_forwards) * t_forward + gradients * t_gradient
    path = result_path(out, ep.resolved.repo_id, ep.resolved.commit_sha, ep.config_hash) if out else None
    return {
        "model": {"ref": ep.resolved.ref, "id": ep.resolved.repo_id, "source": ep.resolved.source,
                  "commit_sha": ep.resolved.commit_sha, "architecture": ep.loaded.config["architecture"],
                  "input_size": list(ep.loaded.input_size)},
        "dataset": {"id": ep.data.dataset_id, "ref": ep.data.dataset_ref, "split": ep.data.split,
                    "n_total": len(ep.data.data), "labels_match_model": ep.data.labels_match},
        "device": str(dev),
        "config_hash": ep.config_hash,
        "config": ep.canonical,
        "result": {"path": str(path) if path else None,
                   "exists": bool(path and path.is_file()), "reused_unless_force": bool(path and path.is_file())},
        "cost": {**cost, "gradient_passes": gradients, "explanation_forwards": explain_forwards},
        "estimate": {"seconds": round(estimate, 1), "forward_s_per_image": round(t_forward, 6),
                     "gradient_s_per_image": round(t_gradient, 6),
                     "how": f"rough: one forward and one gradient timed on {len(x)} images on {dev}, times the "
                            "counts above (metric and framework overheads come on top)"},
    }


def _checkpointing(path: Path | None, meta: dict[str, Any], ids: np.ndarray, *, resume: bool, force: bool,
                   info: DistInfo) -> tuple[dict[int, BatchResult], Callable[[BatchResult], None] | None]:
    """Finished batches to resume from, and the callback that checkpoints each new batch.

    Rank 0 holds the checkpoint's lock (``<hash>.partial/lock``) from the first checkpointed batch — or from the
    start, when a checkpoint folder exists — until the result is written, so a second live run is told "already
    running (pid N)", not "interrupted", and a run that fails before its first batch leaves no file behind. A
    folder without ``meta.json`` (e.g. left by a full disk) counts as absent; temporary files of a killed run go.
    """
    from sclzoo.evaluator.results import (
        check_resume_force,
        checkpoint_exists,
        clear_checkpoint,
        lock_checkpoint,
        unlock_checkpoint,
    )

    check_resume_force(resume, force)
    if path is None:
        return {}, None
    folder = checkpoint_dir(path)
    if info.is_main and folder.is_dir():
        lock_checkpoint(folder)  # a live run holding it: "already running (pid N)"
    if checkpoint_exists(folder) and not (resume or force):
        if info.is_main:
            unlock_checkpoint(folder)
        raise ResultError(f"an interrupted run of this config left the checkpoint {str(folder)!r}; pass --resume "
                          "(resume=True) to continue it or --force to start over")
    if info.is_main:
        clear_checkpoint(folder, keep=resume)
        if not checkpoint_exists(folder):
            unlock_checkpoint(folder)  # nothing to hold yet: the first batch takes the lock
    barrier(info)  # nobody reads or writes the folder before rank 0 has cleared it
    done = read_checkpoint(folder, meta, ids) if resume else {}

    def on_batch(batch: BatchResult) -> None:
        if info.is_main:
            lock_checkpoint(folder)  # a no-op once held; fails if another run took it meanwhile
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
    plan: DataPlan  # the whole split, at the model's input
    images: torch.Tensor  # (N, C, H, W) evaluated images
    labels: torch.Tensor  # (N,)
    ids: torch.Tensor  # (N,) dataset indices
    methods: dict[str, Any]
    canonical: dict[str, Any]
    config_hash: str
    indices_sha: str
    path: Path | None
    out: Path | None = None  # the results root (its .sclzoo-cache/ holds the split accuracy)
    masks: torch.Tensor | None = None  # (N, H, W) ground truth of the evaluated images, for localisation metrics


def baseline_pool_for(plan: DataPlan, loaded: Any, methods: Sequence[str], seed: int) -> torch.Tensor | None:
    """The baseline images of the methods that need them (``expected_gradients``): 64 training images of the
    dataset drawn with ``seed`` (the evaluated split itself for tensors and image folders without train/), or None
    when no selected method needs a pool."""
    from sclzoo.evaluator.attributions import METHODS
    from sclzoo.zoo.data import load_dataset

    if not any("baseline_pool" in METHODS.get(m).inputs for m in methods):
        return None
    pool_source = plan.data
    if plan.dataset_ref is not None:
        try:
            pool_source = load_dataset(plan.dataset_ref, "train", prep=loaded.data_config)
        except DatasetError:
            pool_source = plan.data
    g = torch.Generator().manual_seed(seed)
    return pool_source.images[torch.randperm(len(pool_source), generator=g)[:64]]  # type: ignore[no-any-return]


def _run(job: _Job, dev: torch.device, info: DistInfo, done: dict[int, BatchResult],
         on_batch: Callable[[BatchResult], None] | None, *, progress: bool, command: str | None,
         provenance_source: str) -> Result:
    """Runs the evaluation (this process's shard), gathers the shards, and writes the result on rank 0."""
    from sclzoo.evaluator.attributions import gradcam_layer_name
    from sclzoo.zoo.train import device_name

    cfg, loaded, resolved, plan = job.cfg, job.loaded, job.resolved, job.plan
    data, dataset_id = plan.data, plan.dataset_id
    images, labels, ids, methods, path = job.images, job.labels, job.ids, job.methods, job.path
    canonical, config_hash, indices_sha = job.canonical, job.config_hash, job.indices_sha
    baseline_pool = baseline_pool_for(plan, loaded, list(methods), cfg.seed)
    runtime = None
    acc_onnx = None
    if cfg.runtime == "onnx":
        onnx_file = resolved.path / "onnx" / "model.onnx"
        if resolved.source == "python" or not onnx_file.is_file():
            raise ModelLoadError(f"{resolved.repo_id!r} has no onnx/model.onnx; re-export it with `sclzoo export` "
                                 "or use --runtime torch")
        listed = loaded.config.get("sclzoo", {}).get("files_sha256", {})
        if "onnx/model.onnx" not in listed:  # load_model verified every listed file; an unlisted one is unknown
            raise ModelLoadError(f"onnx/model.onnx of {resolved.repo_id!r} is not listed in config.json's "
                                 "files_sha256, so it cannot be verified against the weights; re-export the repo "
                                 "with `sclzoo export`, or use --runtime torch")
        if plan.preprocess is not None or loaded.data_config.normalises:
            raise ConfigError("--runtime onnx runs the repo's ONNX file as exported, without sclzoo's "
                              "preprocessing; use --runtime torch for this model and dataset")
        runtime = onnx_runtime(onnx_file, loaded.model, dev)

    started = datetime.now(timezone.utc)
    t0 = time.time()
    deterministic = True
    computed: list[tuple[str, float | None]] = []  # split accuracies to cache once the result is written
    with deterministic_algorithms():
        # The split's accuracy (and its NaN check) once per model, split and runtime; the runner then checks
        # only the evaluated images (evaluator/cache.py).
        split_acc = _split_accuracy(job, dev, runtime, computed)
        output = run_evaluation(runtime.model if runtime else loaded.model, images, labels, ids, cfg, device=dev,
                                baseline_pool=baseline_pool, labels_match=plan.labels_match,
                                forward_logits=runtime.forward if runtime else None,
                                forward_threads=runtime.forward_threads if runtime else None,
                                progress=progress and info.is_main, done_batches=done, on_batch=on_batch,
                                shard=(info.rank, info.world_size), masks=job.masks)
    if info.enabled:
        output = _gather(output, cfg.batch_size, info)
    if output.accuracy["value"] is None:  # the runner's "not applicable" record, for the whole split
        split_record = {**output.accuracy, "n": len(data)}
    else:
        split_record = {"value": split_acc, "n": len(data)}
    if cfg.runtime == "onnx":
        acc_onnx = split_record
        acc_torch = dict(split_record)
        if plan.labels_match:  # the PyTorch model's own figure beside onnxruntime's
            acc_torch["value"] = _split_accuracy(job, dev, None, computed, batch_size=256, deterministic=False,
                                                 check_finite=False)
    else:
        acc_torch = split_record
    z = loaded.config.get("sclzoo", {})
    # Whether each deletion metric's perturbed images are in the model's training domain (sclzoo/deletion.py).
    trained = PatchDeletionConfig.from_dict(z["patch_deletion"]) if "patch_deletion" in z else None
    hw = (int(images.shape[-2]), int(images.shape[-1]))
    scores = {
        m: {k: score_record(METRICS.get(k).family, METRICS.get(k).higher_is_better, METRICS.get(k).version, v,
                            cfg.seed, deletion_in_domain(k, canonical["metrics"][k], trained, hw))
            for k, v in d.items()}
        for m, d in output.scores.items()
    }
    run = RunRecord(
        sclzoo_version=_versions().get("sclzoo", "unknown"),
        git_revision=_git(),
        command=command or " ".join(["sclzoo", *sys.argv[1:]]),
        started_at=started.isoformat(timespec="seconds"),
        duration_s=round(time.time() - t0, 3),
        device_name=device_name(dev),
        deterministic=deterministic,
        world_size=info.world_size,
        versions=_versions(),
        timings_s=output.timings,
        perturbations_clamped=False,
    )
    model_record = ModelRecord(id=resolved.repo_id, requested_revision=resolved.requested_revision,
                               commit_sha=resolved.commit_sha, files_sha256=loaded.files_sha256,
                               architecture=loaded.config["architecture"], objective=z.get("objective", "unknown"),
                               num_parameters=loaded.num_parameters, source=resolved.source, name=loaded.name)
    if trained is not None:
        model_record["patch_deletion"] = PatchDeletionRecord(grid=trained.grid, value=trained.value, p=trained.p)
    if "gradcam" in methods:
        run["gradcam_layer"] = gradcam_layer_name(loaded.model, methods["gradcam"].get("layer"))
    doc = build_result(
        model=model_record,
        dataset=DatasetRecord(id=dataset_id, split=plan.split, n_total=len(data), n_evaluated=cfg.n_samples,
                              indices_sha256=indices_sha, split_sha256=data.split_sha256, input_range=[0, 1],
                              **plan.record),
        config=canonical,
        config_hash=config_hash,
        accuracy=AccuracyRecord(torch=acc_torch, onnx=acc_onnx),
        scores=scores,
        run=run,
        provenance=ProvenanceRecord(source=provenance_source, verified=False),
    )
    if path is not None and info.is_main:
        if output.example_maps:  # a few maps for the leaderboard's gallery; written before the result
            from sclzoo.evaluator.results import write_maps

            k = len(next(iter(output.example_maps.values())))
            write_maps(path, output.example_maps, output.sample_ids[:k], images[:k].numpy())
        write_result(path, doc, samples_lines(output.sample_ids, output.labels, output.predictions,
                                              output.targets, output.scores))
        remove_checkpoint(checkpoint_dir(path))  # the result is complete: its checkpoint has served
        from sclzoo.evaluator.cache import store_accuracy

        for key, value in computed:
            store_accuracy(job.out, key, len(data), value)
    return Result(doc, path if info.is_main else None, output, is_main=info.is_main)


def _split_accuracy(job: _Job, dev: torch.device, runtime: Any, computed: list[tuple[str, float | None]], *,
                    batch_size: int | None = None, deterministic: bool = True, check_finite: bool = True
                    ) -> float | None:
    """Accuracy on the whole split through ``runtime`` (onnxruntime) or, when None, the PyTorch model in batches
    of ``batch_size`` (default max(batch size, 256), as the runner's forward), computed under deterministic
    algorithms or not (recorded in the key); read from the results folder's cache (:mod:`sclzoo.evaluator.cache`)
    when it holds it, else computed and appended to ``computed`` as (key, value) for :func:`_run` to store. None
    when the labels are not the model's classes.
    """
    from sclzoo.evaluator.cache import accuracy_key, split_accuracy
    from sclzoo.zoo.train import device_name

    cfg, plan, loaded = job.cfg, job.plan, job.loaded
    images = plan.data.images
    if runtime is not None:
        backend: dict[str, Any] = {"runtime": "onnx", "batch_size": 256}

        def logits() -> torch.Tensor:
            return runtime.forward(images)
    else:
        b = batch_size or max(int(cfg.batch_size), 256)
        backend = {"runtime": "torch", "batch_size": b, "deterministic": deterministic}

        @torch.no_grad()
        def logits() -> torch.Tensor:  # the runner's forward (runner.run_evaluation)
            net = loaded.model.eval().to(dev)
            out = [net(images[i : i + b].to(dev)).float().cpu() for i in range(0, len(images), b)]
            return torch.cat(out) if out else torch.zeros(0)
    backend.update(device=dev.type, device_name=device_name(dev), threads=torch.get_num_threads())
    key = accuracy_key(resolved=job.resolved, loaded=loaded, plan=plan, backend=backend) if job.out else None
    value, from_cache = split_accuracy(logits, plan.labels, labels_match=plan.labels_match,
                                       check_finite=check_finite, out=job.out, key=key)
    if key is not None and not from_cache:
        computed.append((key, value))
    return value


def explain(
    model: str,
    images: Sequence[int],
    *,
    methods: Sequence[str] = ("saliency", "integrated_gradients", "gradcam"),
    out: str | Path = "maps.png",
    revision: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
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
        split: ``test`` (default), ``train``; for image folders also ``val`` or ``all``.
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
    resolved, loaded, dplan = _model_and_data(model, revision, dataset, split, target=target)
    data, split = dplan.data, dplan.split
    shown = dplan.dataset_ref or dplan.dataset_id
    bad = [i for i in images if not 0 <= i < len(data)]
    if bad:
        raise ConfigError(f"image index {bad[0]} is out of range: the {split} split of {shown!r} has {len(data)} "
                          f"images; pass --images between 0 and {len(data) - 1}")
    pos = torch.as_tensor(list(images), dtype=torch.long)
    x, y, ids = data.images[pos], dplan.labels[pos], data.indices[pos]
    net = loaded.model.eval().to(dev)
    with torch.no_grad():
        logits = net(x.to(dev)).float().cpu()
    if not torch.isfinite(logits).all():
        raise ModelLoadError(f"the model returns NaN/inf logits for images {images}; its weights are broken — "
                             "retrain or re-export it")
    preds = logits.argmax(1)
    tgt = preds if target == "predicted" else y
    with deterministic_algorithms():
        maps = {m: attribute(m, net, x.to(dev), tgt.to(dev), sample_ids=ids, seed=seed, **params.get(m, {}))
                .sum(1).cpu().numpy() for m in methods}
    true_names = data.label_names
    logit_names = loaded.label_names or (true_names if dplan.labels_match and dplan.class_map is None else None)

    def pred_name(k: int) -> str:
        return logit_names[k] if logit_names is not None and k < len(logit_names) else f"class {k}"

    labels = [f"image {int(p)}: label {true_names[int(a)]}, pred {pred_name(int(b))}"
              for p, a, b in zip(pos, data.labels[pos], preds, strict=True)]
    title = f"{resolved.repo_id} · {Path(shown).name if shown.startswith('imagefolder:') else shown} {split} · " \
            f"explaining the {target} class"
    return write_file(out_path, explanation_grid(x.numpy(), maps, labels, title))


def _git() -> str:
    from sclzoo.zoo.export import git_revision

    return git_revision()


