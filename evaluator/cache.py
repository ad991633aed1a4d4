"""Two small caches in the results folder, so an evaluation never repeats work a finished one already did.

Both live under ``<results>/.sclzoo-cache/`` (a hidden folder: the leaderboard does not scan it, and .gitignore
keeps it out of the committed leaderboard/results), one small JSON file per key, named ``<key>.cache`` so that
nothing looking for result files (``*.json``) finds it, written atomically with the user's umask like every
result file (:mod:`sclzoo.evaluator.results`). Keys are sha256 digests of everything that could change the
cached value, including the sclzoo source code (:func:`code_fingerprint`) and the versions of the packages
involved, so an edit or an upgrade simply misses. Cache files are untrusted input: a file that
is too large, not JSON, of the wrong shape or out of range is ignored (and rewritten by the next computation).

- ``accuracy/<key>.cache``: a model's accuracy on a whole split (:func:`split_accuracy`), which every evaluation
  records and which costs a forward pass over the split (1,000 images for the zoo; twice with
  ``--runtime onnx``). The key holds the model's content (commit, file hashes, config), its preprocessing, the
  split's content hash, the labels in the model's logit space (after a class map), and how the logits are
  computed (runtime, device, batch size, threads).
- ``plans/<key>.cache``: which result an evaluation request planned (:func:`finished_result`). Planning needs
  torch, the model and the dataset (seconds); the memo lets ``sclzoo evaluate`` return a finished result after
  hashing the model folder, without importing torch. It is used only for local models (folders and bundled
  aliases) and registered datasets, and the result it points to must exist, be named by its config hash, and
  record this model commit and the requested settings; anything else plans as before.

This module imports neither torch nor the model code until a computation needs them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import fields
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sclzoo.evaluator.config import EXECUTION_KEYS, EvalConfig
from sclzoo.vocab import SELECTIONS

if TYPE_CHECKING:
    import torch

    from sclzoo.zoo.hub import ResolvedModel

__all__ = ["CACHE_DIR", "code_fingerprint", "package_versions", "accuracy_key", "split_accuracy", "store_accuracy",
           "request_key", "finished_result", "remember_result"]

CACHE_DIR = ".sclzoo-cache"
FORMAT = 1
MAX_CACHE_BYTES = 64 << 10  # a cache file holds a few numbers and hashes; anything larger is not one of ours
#: Packages whose version can change a plan (data loading, preprocessing, model configs) or the logits.
PACKAGES = ("torch", "torchvision", "timm", "numpy", "onnxruntime", "mlxtend", "scikit-learn", "pillow",
            "transformers", "safetensors")
#: Environment variables that change what a plan reads (zoo/data.py, zoo/hub.py).
ENV_VARS = ("SCLZOO_DATA_DIR", "SCLZOO_MAX_PARAMETERS")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ------------------------------------------------------------------------------------------------ key material
@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the names and bytes of every sclzoo source file (the packages sclzoo, .evaluator, .zoo)."""
    import sclzoo
    import sclzoo.evaluator
    import sclzoo.zoo

    h = hashlib.sha256()
    for pkg in (sclzoo, sclzoo.evaluator, sclzoo.zoo):
        root = Path(pkg.__file__ or "").parent
        for f in sorted(root.rglob("*.py")):
            h.update(f"{pkg.__name__}/{f.relative_to(root).as_posix()}\0".encode())
            try:
                h.update(hashlib.sha256(f.read_bytes()).digest())
            except OSError:
                h.update(b"unreadable")
    return h.hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> tuple[tuple[str, str | None], ...]:
    """(package, version or None when not installed) for :data:`PACKAGES`."""
    out: list[tuple[str, str | None]] = []
    for name in PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def _digest(material: Mapping[str, Any]) -> str:
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _base_material(kind: str) -> dict[str, Any]:
    return {"kind": kind, "format": FORMAT, "code": code_fingerprint(), "versions": dict(package_versions()),
            "env": {v: os.environ.get(v) for v in ENV_VARS}}


# ---------------------------------------------------------------------------------------------- file handling
def _file(out: str | Path, kind: str, key: str) -> Path:
    return Path(out) / CACHE_DIR / kind / f"{key}.cache"


def _read(path: Path) -> dict[str, Any] | None:
    """A cache file's JSON object, or None for anything else: missing, a link, not a regular file (a FIFO is
    never waited on), larger than :data:`MAX_CACHE_BYTES`, unreadable, not JSON, not an object of this format."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(MAX_CACHE_BYTES + 1)
        doc = json.loads(data) if len(data) <= MAX_CACHE_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Writes a cache file atomically (results.py's writer: the user's umask); a cache that cannot be written
    (read-only results, full disk) is skipped, never an error."""
    from sclzoo.evaluator.results import _atomic_write

    try:
        _atomic_write(path, (json.dumps({"format": FORMAT, **doc}, sort_keys=True, allow_nan=False) + "\n").encode())
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------------------------- split accuracy
def accuracy_key(*, resolved: Any, loaded: Any, plan: Any, backend: Mapping[str, Any]) -> str | None:
    """The cache key of a model's accuracy on a split; None when it cannot be cached (a Python module, whose
    code sclzoo cannot hash, or a split without a content hash).

    Args:
        resolved: The model's ``ResolvedModel``.
        loaded: Its ``LoadedModel`` (verified file hashes, config, data config).
        plan: The evaluation's ``DataPlan`` (the split at the model's input, its labels in logit space).
        backend: How the logits are computed (runtime, device, batch size, threads, …).
    """
    import numpy as np

    content = plan.record.get("content_sha256")
    if resolved.source == "python" or not isinstance(content, str):
        return None
    dc = loaded.data_config
    labels = np.ascontiguousarray(plan.labels.numpy().astype("<i8"))
    try:
        return _digest({
            **_base_material("split-accuracy"),
            "model": {"id": resolved.repo_id, "commit_sha": resolved.commit_sha, "source": resolved.source,
                      "files_sha256": loaded.files_sha256, "config": loaded.config},
            "data_config": dc.as_dict() if dc is not None else None,
            "data": {"id": plan.dataset_id, "split": plan.split, "content_sha256": content, "n": len(plan.data),
                     "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
                     "labels_match": plan.labels_match},
            "backend": dict(backend),
        })
    except (TypeError, ValueError):  # a config that is not plain data (NaN, …): computed, not cached
        return None


def _cached_accuracy(doc: dict[str, Any] | None, n: int, labels_match: bool) -> tuple[bool, float | None]:
    """(found, value) from an accuracy cache file, checked: a fraction k/n of n images, or None when the labels
    are not the model's classes."""
    if doc is None or doc.get("n") != n or "value" not in doc:
        return False, None
    v = doc["value"]
    if not labels_match:
        return v is None, None
    if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
        return False, None
    if abs(v * n - round(v * n)) > 1e-3:  # not k correct out of n
        return False, None
    return True, v


def split_accuracy(logits_fn: Callable[[], torch.Tensor], labels: torch.Tensor, *, labels_match: bool,
                   check_finite: bool, out: str | Path | None, key: str | None) -> tuple[float | None, bool]:
    """Accuracy of ``logits_fn()`` (the split's (N, K) logits) against ``labels``, read from the cache when a file
    for ``key`` under ``out`` holds it. Returns ``(accuracy, from_cache)``; the accuracy is None when the labels
    are not the model's classes. A computed value is stored by :func:`store_accuracy`, once the evaluation's
    result is written (an interrupted run leaves nothing behind but its checkpoint).

    Args:
        logits_fn: Computes the split's logits (called only on a cache miss).
        labels: (N,) labels in the model's logit space.
        labels_match: Whether ``labels`` index the model's logits (else there is no accuracy, only the check).
        check_finite: Fail on NaN/inf logits (as :func:`sclzoo.evaluator.runner.run_evaluation` does).
        out: Results root (no cache when None).
        key: From :func:`accuracy_key` (no cache when None).

    Raises:
        ModelLoadError: ``check_finite`` and the model returns NaN/inf logits.
    """
    import torch

    from sclzoo.errors import ModelLoadError

    n = int(labels.shape[0])
    if out is not None and key is not None:
        found, value = _cached_accuracy(_read(_file(out, "accuracy", key)), n, labels_match)
        if found:
            return value, True
    logits = logits_fn()
    if check_finite and not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise ModelLoadError(f"the model returns NaN/inf logits for {bad} of {len(logits)} images; "
                             "its weights are broken — retrain or re-export it")
    return (float((logits.argmax(1) == labels).float().mean()) if labels_match else None), False


def store_accuracy(out: str | Path | None, key: str | None, n: int, value: float | None) -> None:
    """Stores a split accuracy :func:`split_accuracy` computed (nothing when ``out`` or ``key`` is None)."""
    if out is not None and key is not None:
        _write(_file(out, "accuracy", key), {"n": n, "value": value})


# ------------------------------------------------------------------------------------------------- plan memo
def _hashed_class_map(class_map: Any) -> Any:
    """What a class map argument contributes to a request key: a dict as itself, a file by its bytes."""
    if class_map is None or isinstance(class_map, dict):
        return class_map
    p = Path(class_map)
    try:
        if not p.is_file() or p.stat().st_size > MAX_CACHE_BYTES * 256:
            return ValueError
        return {"suffix": p.suffix.lower(), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    except OSError:
        return ValueError


def request_key(resolved: ResolvedModel, cfg: EvalConfig, *, data: Any = None,
                preprocess: Mapping[str, Any] | None = None, class_map: Any = None, **other: Any) -> str | None:
    """The memo key of an evaluation request, or None when the request is not one the memo serves.

    Served: a local model (folder, ``local-dir:`` or a bundled alias: its content commit is cheap to compute),
    a registered dataset (or the model's own), and no timm/Python-module options. The key holds everything
    :func:`sclzoo.evaluator.api.plan` reads besides those: the scoring part of the config, the preprocessing
    overrides, the class map's content, the sclzoo code and the package versions.
    """
    if resolved.source != "local" or any(v is not None for v in other.values()):
        return None
    if data is not None and (not isinstance(data, str) or cfg.dataset is not None):
        return None
    dataset = data if data is not None else cfg.dataset
    if dataset is not None and (dataset.startswith("imagefolder:") or not dataset):
        return None  # an image folder's content is hashed while planning, not here
    cmap = _hashed_class_map(class_map)
    if cmap is ValueError:
        return None
    scoring = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in EXECUTION_KEYS}
    scoring["dataset"] = dataset
    try:
        return _digest({**_base_material("plan"),
                        "model": {"id": resolved.repo_id, "commit_sha": resolved.commit_sha,
                                  "source": resolved.source, "revision": resolved.requested_revision},
                        "config": scoring, "preprocess": dict(preprocess) if preprocess else None,
                        "class_map": cmap})
    except (TypeError, ValueError):  # something that is not plain data: let the planner judge it
        return None


def remember_result(out: str | Path, key: str | None, repo_id: str, commit_sha: str, config_hash: str) -> None:
    """Records that the request ``key`` planned the result ``(repo_id, commit_sha, config_hash)``."""
    if key is not None:
        _write(_file(out, "plans", key), {"repo_id": repo_id, "commit_sha": commit_sha, "config_hash": config_hash})


def _matches_request(doc: dict[str, Any], cfg: EvalConfig, repo_id: str, commit: str, config_hash: str) -> bool:
    """Whether a result document is the one the memo promises: its name, model, and the settings asked for."""
    try:
        model, config = doc["model"], doc["config"]
        if doc["config_hash"] != config_hash or EvalConfig.hash_of(config) != config_hash:
            return False
        if model["id"] != repo_id or model["commit_sha"] != commit:
            return False
        same = (config["n_samples"] == cfg.n_samples and config["seed"] == cfg.seed
                and config["target"] == cfg.target and config["selection"] == SELECTIONS[cfg.selection]
                and list(config["methods"]) == list(cfg.methods) and list(config["metrics"]) == list(cfg.metrics))
        if cfg.split is not None and config["split"] != cfg.split:
            return False
        if cfg.dataset is not None and config["dataset"] != cfg.dataset:
            return False
        if cfg.mask is not None and config.get("mask") != cfg.mask:
            return False
        for kind, overrides in (("methods", cfg.method_params), ("metrics", cfg.metric_params)):
            for name, params in overrides.items():
                if any(config[kind][name].get(k) != v for k, v in params.items()):
                    return False
        return bool(same)
    except (KeyError, TypeError, AttributeError, ValueError):
        return False


def finished_result(model: Any, cfg: EvalConfig, out: str | Path | None, *, revision: str | None = None,
                    **plan_kwargs: Any) -> tuple[dict[str, Any], Path] | None:
    """The finished result an earlier identical request planned, as ``(document, path)``, or None (plan as
    usual). Reads the model folder's files to hash them, and the result; imports no torch.

    Args:
        model: The ``--model`` reference (anything but a local reference returns None).
        cfg: The evaluation config.
        out: Results root.
        revision: ``--revision``.
        **plan_kwargs: The other arguments of :func:`sclzoo.evaluator.api.plan` (data, preprocess, class_map,
            weights, num_classes, in_chans, model_id).
    """
    from sclzoo.errors import SclzooError
    from sclzoo.evaluator.results import ResultError, read_result, result_path, samples_path
    from sclzoo.zoo.hub import resolve_local

    if out is None or not isinstance(model, str) or not (Path(out) / CACHE_DIR / "plans").is_dir():
        return None  # nothing was remembered here: no need to hash the model
    try:
        resolved = resolve_local(model, revision)
    except (SclzooError, OSError, ValueError):  # ModelNotFoundError, ConfigError, …: the planner reports them
        return None
    key = request_key(resolved, cfg, **plan_kwargs) if resolved is not None else None
    if resolved is None or key is None:
        return None
    memo = _read(_file(out, "plans", key))
    if memo is None:
        return None
    repo_id, commit, config_hash = memo.get("repo_id"), memo.get("commit_sha"), memo.get("config_hash")
    if repo_id != resolved.repo_id or commit != resolved.commit_sha or not isinstance(config_hash, str) \
            or not _HEX64.match(config_hash) or not isinstance(commit, str) or not _HEX40.match(commit):
        return None
    path = result_path(out, repo_id, commit, config_hash)
    if not path.is_file() or not samples_path(path).is_file():
        return None
    try:
        doc = read_result(path)
    except ResultError:
        return None  # the planner reaches the same file and reports it
    return (doc, path) if _matches_request(doc, cfg, repo_id, commit, config_hash) else None
