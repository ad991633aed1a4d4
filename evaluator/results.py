"""Result files (artifacts.md §3): aggregation, writing, reading and validation.

A result is ``results/<org>__<name>/<commit_sha>/<config_hash>.json`` with the per-sample scores beside it in
``<config_hash>.samples.jsonl.gz``. While a run is in progress its finished batches are checkpointed beside it in
``<config_hash>.partial/`` (``meta.json`` + one ``batch-<start>.json.gz`` per batch), removed once the result is
written. Files are written to a temporary name and renamed, so no reader ever sees half
a result. Numbers are numbers, never strings; NaN never appears in the JSON (per-sample NaNs are ``null`` in the
samples file and counted in ``n_nan``).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sclzoo.errors import ConfigError, ResultError

if TYPE_CHECKING:
    from sclzoo.evaluator.runner import BatchResult

__all__ = ["aggregate", "bootstrap_ci", "result_path", "write_result", "read_result", "read_samples",
           "validate_result", "SCHEMA_VERSION", "load_schema", "maps_path", "write_maps", "read_maps",
           "check_writable", "checkpoint_dir", "write_checkpoint_batch", "read_checkpoint", "remove_checkpoint",
           "write_file"]

SCHEMA_VERSION = 1
N_BOOTSTRAP = 2000


def bootstrap_ci(values: np.ndarray, seed: int, n_resamples: int = N_BOOTSTRAP, level: float = 0.95) -> list[float]:
    """Percentile bootstrap CI of the mean (seeded, so the same values give the same interval)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def aggregate(values: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """mean, median, std, stderr, 95 % bootstrap CI, n and n_nan of per-sample scores (NaNs ignored, counted)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[~np.isnan(v)]
    n = int(len(finite))
    if n == 0:
        return {"mean": None, "median": None, "std": None, "stderr": None, "ci95": [None, None], "n": 0,
                "n_nan": int(len(v))}
    std = float(finite.std(ddof=1)) if n > 1 else 0.0
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "std": std,
        "stderr": std / math.sqrt(n),
        "ci95": bootstrap_ci(finite, seed),
        "n": n,
        "n_nan": int(len(v) - n),
    }


def result_dir(root: str | Path, repo_id: str, commit_sha: str) -> Path:
    return Path(root) / repo_id.replace("/", "__") / commit_sha


def result_path(root: str | Path, repo_id: str, commit_sha: str, config_hash: str) -> Path:
    return result_dir(root, repo_id, commit_sha) / f"{config_hash}.json"


def samples_path(result_file: str | Path) -> Path:
    p = Path(result_file)
    return p.with_name(p.name[: -len(".json")] + ".samples.jsonl.gz")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def samples_lines(sample_ids: np.ndarray, labels: np.ndarray, predictions: np.ndarray, targets: np.ndarray,
                  scores: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """One JSON record per image: ids, label, prediction, target and every (method, metric) score."""
    lines = []
    for i in range(len(sample_ids)):
        lines.append({
            "sample_id": int(sample_ids[i]), "label": int(labels[i]), "prediction": int(predictions[i]),
            "target": int(targets[i]),
            "scores": {m: {k: _num(float(v[i])) for k, v in d.items()} for m, d in scores.items()},
        })
    return lines


def write_result(path: str | Path, result: dict[str, Any], samples: list[dict[str, Any]]) -> Path:
    """Writes the samples file, then the result (atomically, result last so a result always has its samples)."""
    p = Path(path)
    try:
        blob = "".join(json.dumps(s, sort_keys=True, allow_nan=False) + "\n" for s in samples).encode()
        _atomic_write(samples_path(p), gzip.compress(blob, mtime=0))
        _atomic_write(p, (json.dumps(result, indent=2, sort_keys=False, allow_nan=False) + "\n").encode())
    except PermissionError:
        raise ResultError(f"cannot write results under {str(p.parent)!r} (permission denied); pass a writable "
                          "--out folder") from None
    except OSError as e:
        raise ResultError(f"cannot write result {str(p)!r}: {e.strerror or e}; pass another --out folder") from None
    return p


def read_result(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ResultError(f"result file {str(p)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultError(f"result file {str(p)!r} is not valid JSON ({e}); delete it and evaluate again") from None
    if not isinstance(data, dict):
        raise ResultError(f"result file {str(p)!r} does not hold a JSON object")
    return data


def read_samples(result_file: str | Path) -> list[dict[str, Any]]:
    sp = samples_path(result_file)
    try:
        with gzip.open(sp, "rt") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        raise ResultError(f"per-sample file {str(sp)!r} is missing; evaluate again with --force") from None
    except (OSError, EOFError, json.JSONDecodeError) as e:
        raise ResultError(f"per-sample file {str(sp)!r} is corrupt ({e}); evaluate again with --force") from None


def load_schema() -> dict[str, Any]:
    """The JSON Schema of result files, shipped in the package."""
    text = resources.files("sclzoo.evaluator").joinpath("result.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def validate_result(path: str | Path, check_samples: bool = True) -> list[str]:
    """Checks a result file against the schema and for internal consistency.

    Returns:
        Problems found (empty when the file is valid): schema violations, then n / n_nan / mean mismatches
        against the samples file.
    """
    import jsonschema

    data = read_result(path)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in sorted(jsonschema.Draft202012Validator(load_schema()).iter_errors(data), key=str)]
    if problems or not check_samples:
        return problems
    samples = read_samples(path)
    n_eval = data["dataset"]["n_evaluated"]
    if len(samples) != n_eval:
        problems.append(f"samples file has {len(samples)} lines but dataset.n_evaluated = {n_eval}")
    for method, per_metric in data["scores"].items():
        for metric, agg in per_metric.items():
            vals = np.array([np.nan if s["scores"].get(method, {}).get(metric) is None
                             else s["scores"][method][metric] for s in samples], dtype=np.float64)
            n_nan = int(np.isnan(vals).sum())
            n = len(vals) - n_nan
            where = f"scores/{method}/{metric}"
            if agg["n"] != n or agg["n_nan"] != n_nan:
                problems.append(f"{where}: n={agg['n']}, n_nan={agg['n_nan']} but the samples give n={n}, "
                                f"n_nan={n_nan}")
            elif n and abs(float(np.nanmean(vals)) - agg["mean"]) > 1e-9 * max(1.0, abs(agg["mean"])):
                problems.append(f"{where}: mean {agg['mean']} ≠ {float(np.nanmean(vals))} recomputed from samples")
    return problems


def maps_path(result_file: str | Path) -> Path:
    """``<config_hash>.maps.npz`` beside a result: a few example pixel maps, for the leaderboard's gallery."""
    p = Path(result_file)
    return p.with_name(p.name[: -len(".json")] + ".maps.npz")


def write_maps(result_file: str | Path, maps: dict[str, np.ndarray], sample_ids: np.ndarray,
               images: np.ndarray | None = None) -> Path:
    """Writes example attribution maps beside a result, as an ``.npz`` with deterministic bytes.

    Args:
        result_file: The result JSON the maps belong to.
        maps: ``{method: (K, H, W)}`` signed pixel maps of the first K evaluated images.
        sample_ids: (K,) dataset indices of those images.
        images: Optional (K, C, H, W) images in [0, 1], shown beside the maps.

    Returns:
        The path written. Arrays are stored as ``map/<method>``, ``sample_ids`` and ``images``; zip entries carry a
        fixed timestamp so the same maps give the same bytes.
    """
    import io
    import zipfile

    arrays: dict[str, np.ndarray] = {"sample_ids": np.asarray(sample_ids, dtype=np.int64)}
    if images is not None:
        arrays["images"] = np.asarray(images, dtype=np.float32)
    for method, m in maps.items():
        arrays[f"map/{method}"] = np.asarray(m, dtype=np.float32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for key in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, entry.getvalue())
    path = maps_path(result_file)
    try:
        _atomic_write(path, buf.getvalue())
    except OSError as e:
        raise ResultError(f"cannot write example maps {str(path)!r}: {e.strerror or e}; pass another --out "
                          "folder") from None
    return path


def read_maps(result_file: str | Path) -> dict[str, Any] | None:
    """Example maps stored beside a result, or None when the result has none (older results).

    Returns:
        ``{"sample_ids": (K,), "images": (K, C, H, W) or None, "maps": {method: (K, H, W)}}``.
    """
    path = maps_path(result_file)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ResultError(f"example maps {str(path)!r} are corrupt ({e}); delete the file or evaluate again "
                          "with --force") from None
    return {"sample_ids": data.get("sample_ids"), "images": data.get("images"),
            "maps": {k[len("map/"):]: v for k, v in sorted(data.items()) if k.startswith("map/")}}


# --------------------------------------------------------------------------------------------------------------
# Checkpoints of a run in progress
# --------------------------------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 1


def check_writable(result_file: str | Path) -> None:
    """Fails before any computation when the result's folder cannot be created or written.

    Raises:
        ResultError: a path component is a file, or the nearest existing folder is not writable.
    """
    folder = Path(result_file).parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ResultError(f"cannot write results under {str(folder)!r}: {str(probe)!r} is a file, not a folder; "
                          "pass another --out folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ResultError(f"cannot write results under {str(folder)!r} (permission denied on {str(probe)!r}); "
                          "pass a writable --out folder")


def write_file(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (a figure, a report); a failure names the path and the fix."""
    p = Path(path)
    check_writable(p)
    try:
        _atomic_write(p, data)
    except OSError as e:
        raise ResultError(f"cannot write {str(p)!r}: {e.strerror or e}; pass another --out path") from None
    return p


def checkpoint_dir(result_file: str | Path) -> Path:
    """``<config_hash>.partial/`` beside a result: the finished batches of an interrupted run."""
    p = Path(result_file)
    return p.with_name(p.name[: -len(".json")] + ".partial")


def _batch_file(folder: Path, start: int) -> Path:
    return folder / f"batch-{start:08d}.json.gz"


def write_checkpoint_batch(folder: str | Path, meta: dict[str, Any], batch: BatchResult,
                           sample_ids: np.ndarray) -> Path:
    """Saves one finished batch (atomically), creating the checkpoint folder and its ``meta.json`` on first use.

    Args:
        folder: The checkpoint folder (:func:`checkpoint_dir`).
        meta: What the checkpoint belongs to (config hash, model commit, batch size, …); checked on resume.
        batch: The batch's per-sample scores and example maps.
        sample_ids: (B,) dataset indices of the batch's images.

    Scores are stored as JSON numbers (``NaN``/``Infinity`` literals included), which read back bit-identical.
    """
    d = Path(folder)
    doc = {"start": int(batch.start), "sample_ids": [int(i) for i in sample_ids],
           "scores": {m: {k: [float(x) for x in v] for k, v in per.items()} for m, per in batch.scores.items()},
           "maps": {m: np.asarray(v, dtype=np.float32).tolist() for m, v in batch.maps.items()}}
    path = _batch_file(d, batch.start)
    try:
        if not (d / "meta.json").is_file():
            _atomic_write(d / "meta.json", (json.dumps({"format": CHECKPOINT_FORMAT, **meta}, indent=2) + "\n")
                          .encode())
        _atomic_write(path, gzip.compress(json.dumps(doc, allow_nan=True).encode(), mtime=0))
    except OSError as e:
        raise ResultError(f"cannot write checkpoint {str(path)!r}: {e.strerror or e}; pass another --out "
                          "folder") from None
    return path


def _corrupt(file: Path, folder: Path, why: object) -> ResultError:
    return ResultError(f"checkpoint file {str(file)!r} is corrupt ({why}); delete {str(folder)!r} or run with "
                       "--force to start over")


def read_checkpoint(folder: str | Path, meta: dict[str, Any], sample_ids: np.ndarray) -> dict[int, BatchResult]:
    """The finished batches of an interrupted run, checked against the run that resumes them.

    Args:
        folder: The checkpoint folder; a missing folder means nothing is done yet.
        meta: This run's checkpoint metadata (must equal the stored ``meta.json``).
        sample_ids: (N,) dataset indices of all evaluated images (each batch's ids must match its slice).

    Returns:
        ``{start: BatchResult}``.

    Raises:
        ResultError: an unreadable, inconsistent or foreign file (the message names it and the fix).
        ConfigError: the checkpoint was written with another batch size.
    """
    import zlib

    from sclzoo.evaluator.runner import BatchResult

    d = Path(folder)
    if not d.is_dir():
        return {}
    meta_file = d / "meta.json"
    try:
        found = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise _corrupt(meta_file, d, "missing") from None
    except (OSError, ValueError) as e:
        raise _corrupt(meta_file, d, e) from None
    if not isinstance(found, dict):
        raise _corrupt(meta_file, d, "not a JSON object")
    want = {"format": CHECKPOINT_FORMAT, **meta}
    if found.get("batch_size") != want["batch_size"]:
        raise ConfigError(f"checkpoint {str(d)!r} was written with --batch-size {found.get('batch_size')} but this "
                          f"run uses {want['batch_size']}; resume with --batch-size {found.get('batch_size')} or run "
                          "with --force to start over")
    differ = sorted(k for k in want if found.get(k) != want[k])
    if differ:
        raise _corrupt(meta_file, d, f"its {', '.join(differ)} do not match this run")
    bs, n = int(want["batch_size"]), len(sample_ids)
    methods, metrics = list(want["methods"]), list(want["metrics"])
    batches: dict[int, BatchResult] = {}
    for f in sorted(d.glob("batch-*.json.gz")):
        try:
            doc = json.loads(gzip.decompress(f.read_bytes()))
            start = int(doc["start"])
            if f.name != _batch_file(d, start).name or start % bs or not 0 <= start < n:
                raise ValueError(f"start {start} does not fit its name or a batch of {bs}")
            ids = sample_ids[start : start + bs]
            if doc["sample_ids"] != [int(i) for i in ids]:
                raise ValueError("its sample ids are not those of this run")
            if list(doc["scores"]) != methods or any(list(doc["scores"][m]) != metrics for m in methods):
                raise ValueError("its methods or metrics are not those of this run")
            scores = {m: {k: np.asarray(doc["scores"][m][k], dtype=np.float64) for k in metrics} for m in methods}
            if any(v.shape != (len(ids),) for per in scores.values() for v in per.values()):
                raise ValueError(f"its score lists do not have {len(ids)} entries")
            maps = {m: np.asarray(v, dtype=np.float32) for m, v in doc["maps"].items()}
            if any(m not in methods or v.ndim != 3 for m, v in maps.items()):
                raise ValueError("its example maps are malformed")
        except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError) as e:
            raise _corrupt(f, d, str(e) or type(e).__name__) from None
        batches[start] = BatchResult(start, scores, maps)
    return batches


def remove_checkpoint(folder: str | Path) -> None:
    """Deletes a checkpoint folder (after its result is written, or to start over)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
