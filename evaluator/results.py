"""Result files (docs/artifacts.md#result-files): aggregation, writing, reading and validation.

A result is ``results/<org>__<name>/<commit_sha>/<config_hash>.json`` with the per-sample scores beside it in
``<config_hash>.samples.jsonl.gz``. While a run is in progress its finished batches are checkpointed beside it in
``<config_hash>.partial/`` (``meta.json`` + one ``batch-<start>.json.gz`` per batch, each carrying a sha256 digest
of its content, and the ``lock`` a live run holds), removed once the result is written. Files are written to a
temporary name and renamed (with the user's umask), so no reader ever sees half a result. Numbers are numbers,
never strings; NaN never appears in the JSON (per-sample NaNs are ``null`` in the samples file and counted in
``n_nan``).

Result files are untrusted input (the leaderboard is rebuilt from contributed results): :func:`check_result`
checks one against the schema, for NaN/Infinity literals and against the per-sample scores it summarises.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import socket
import tempfile
import zlib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sclzoo.deletion import PatchDeletionConfig, deletion_in_domain, is_deletion_metric
from sclzoo.errors import ConfigError, ResultError

try:  # POSIX: a checkpoint's lock is an flock, which the kernel releases when its holder dies
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from sclzoo.evaluator.runner import BatchResult

__all__ = ["aggregate", "bootstrap_ci", "weights_id", "result_path", "write_result", "read_result", "read_samples",
           "validate_result", "check_result", "SCHEMA_VERSION", "load_schema", "maps_path", "write_maps",
           "read_maps", "check_writable", "checkpoint_dir", "write_checkpoint_batch", "read_checkpoint",
           "remove_checkpoint", "write_file", "lock_checkpoint", "unlock_checkpoint", "checkpoint_exists",
           "clear_checkpoint", "check_resume_force"]

SCHEMA_VERSION = 1
N_BOOTSTRAP = 2000
# Size limits on files read back (results are untrusted input): far above any real file, far below a memory bomb.
MAX_RESULT_BYTES = 16 * 2**20
MAX_SAMPLES_BYTES = 256 * 2**20
MAX_MAPS_BYTES = 256 * 2**20
MAX_MAP_SIDE = 2048


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


def _umask() -> int:
    """The process umask (read from /proc on Linux, so no other thread ever sees a changed umask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates the file 0600; the renamed file gets the mode any other new file would (0644 usually).
        os.fchmod(fd, 0o666 & ~_umask())
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


def _why(e: BaseException) -> str:
    """A one-line reason from an exception (OS errors by their strerror)."""
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
    return " ".join(text.split())[:200]


def read_result(path: str | Path) -> dict[str, Any]:
    """The JSON object of a result file.

    Raises:
        ResultError: the file is missing, not a plain file, larger than :data:`MAX_RESULT_BYTES`, not JSON, or
            not a JSON object.
    """
    p = Path(path)
    try:
        if p.stat().st_size > MAX_RESULT_BYTES:
            raise ResultError(f"result file {str(p)!r} is larger than {MAX_RESULT_BYTES >> 20} MiB, far larger "
                              "than any result; delete it")
        data = json.loads(p.read_bytes())
    except FileNotFoundError:
        raise ResultError(f"result file {str(p)!r} does not exist") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, huge integers, deep nesting
        raise ResultError(f"result file {str(p)!r} is not valid JSON ({_why(e)}); delete it and evaluate "
                          "again") from None
    except OSError as e:
        raise ResultError(f"cannot read result file {str(p)!r} ({_why(e)}); it must be a readable file") from None
    if not isinstance(data, dict):
        raise ResultError(f"result file {str(p)!r} does not hold a JSON object")
    return data


def read_samples(result_file: str | Path) -> list[dict[str, Any]]:
    """The per-sample records beside a result (one JSON object per line).

    Raises:
        ResultError: the file is missing, unreadable, larger than :data:`MAX_SAMPLES_BYTES` once decompressed,
            or a line is not JSON.
    """
    sp = samples_path(result_file)
    try:
        with gzip.open(sp, "rb") as f:
            blob = f.read(MAX_SAMPLES_BYTES + 1)
        if len(blob) > MAX_SAMPLES_BYTES:
            raise ResultError(f"per-sample file {str(sp)!r} decompresses to more than {MAX_SAMPLES_BYTES >> 20} "
                              "MiB, far more than any result; delete it")
        return [json.loads(line) for line in blob.decode().splitlines() if line.strip()]
    except FileNotFoundError:
        raise ResultError(f"per-sample file {str(sp)!r} is missing; evaluate again with --force") from None
    except (OSError, EOFError, zlib.error, ValueError, RecursionError) as e:
        raise ResultError(f"per-sample file {str(sp)!r} is corrupt ({_why(e)}); evaluate again with "
                          "--force") from None


def weights_id(doc: dict[str, Any]) -> str:
    """The identity of the evaluated weights, whichever way they were loaded (folder, Hub, alias, timm ref).

    ``sha256:<hex>`` of ``model.safetensors`` as recorded in the result's ``model.files_sha256``; for a Python
    module (no weight file) its recorded commit, the hash of its state dict, as ``state:<hex>``. Two results with
    the same weights id and config hash describe the same computation (docs/artifacts.md#leaderboard-files).
    """
    sha = doc["model"].get("files_sha256", {}).get("model.safetensors")
    return f"sha256:{sha}" if isinstance(sha, str) else f"state:{doc['model']['commit_sha']}"


def load_schema(name: str = "result") -> dict[str, Any]:
    """A JSON Schema shipped in the package: ``result`` (result files), ``leaderboard`` (leaderboard.json) or
    ``compare`` (compare.json)."""
    text = resources.files("sclzoo.evaluator").joinpath(f"{name}.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def _nonfinite(doc: Any) -> list[str]:
    """Where a parsed JSON document holds NaN or ±Infinity (JSON has no such numbers; Python's parser accepts the
    literals). Iterative, so a deeply nested document cannot exhaust the stack."""
    out: list[str] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"{where or '<root>'}: {v} is not a JSON number (NaN/Infinity literal); a result stores a "
                       "missing score as null and counts it in n_nan")
        elif isinstance(v, dict):
            stack += [(f"{where}/{k}" if where else str(k), x) for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(f"{where}/{i}" if where else str(i), x) for i, x in enumerate(v)]
    return sorted(out)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _registry_problems(data: dict[str, Any]) -> list[str]:
    """Scores whose recorded family or direction contradicts the metric registry (same metric, same version), and
    scored methods / metrics (or versions) that the recorded config does not list."""
    from sclzoo.evaluator.metrics import METRICS

    out = []
    cfg_methods, cfg_metrics = data["config"]["methods"], data["config"]["metrics"]
    for method, per_metric in data["scores"].items():
        if method not in cfg_methods:
            out.append(f"scores/{method}: method {method!r} is not in config.methods")
        for metric, agg in per_metric.items():
            where = f"scores/{method}/{metric}"
            if metric not in cfg_metrics or cfg_metrics[metric].get("version") != agg["version"]:
                out.append(f"{where}: version {agg['version']} is not the one config.metrics records")
            if metric not in METRICS:
                continue  # a metric this sclzoo does not know (a newer version wrote it): nothing to compare
            spec = METRICS.get(metric)
            if spec.version == agg["version"] and (spec.family != agg["family"]
                                                   or spec.higher_is_better != agg["higher_is_better"]):
                out.append(f"{where}: family {agg['family']!r} / higher_is_better {agg['higher_is_better']} "
                           f"contradict metric {metric!r} version {spec.version} ({spec.family}, "
                           f"higher_is_better {spec.higher_is_better})")
    return out


def _domain_problems(data: dict[str, Any]) -> list[str]:
    """``in_domain`` verdicts that contradict the recorded model and metric parameters (sclzoo/deletion.py), and
    verdicts on metrics that delete nothing. A metric this sclzoo does not know is not judged."""
    from sclzoo.evaluator.metrics import METRICS

    block = data["model"].get("patch_deletion")
    trained = PatchDeletionConfig.from_dict(block) if block is not None else None  # the schema checked its keys
    out = []
    for method, per_metric in data["scores"].items():
        for metric, agg in per_metric.items():
            if "in_domain" not in agg:
                continue
            where = f"scores/{method}/{metric}"
            if is_deletion_metric(metric):
                expected = deletion_in_domain(metric, data["config"]["metrics"].get(metric, {}), trained, None)
                if expected is not None and agg["in_domain"] != expected:
                    out.append(f"{where}: in_domain {agg['in_domain']} contradicts the model's patch_deletion "
                               f"{block} and the metric's parameters (docs/protocol.md#in-domain-deletion)")
            elif metric in METRICS:
                out.append(f"{where}: in_domain is recorded, but {metric!r} feeds the model no deleted images")
    return out


def _sample_values(samples: list[Any]) -> tuple[list[str], np.ndarray | None]:
    """Problems with the shape of per-sample records, and their sample ids (None when malformed)."""
    for i, s in enumerate(samples):
        where = f"samples line {i + 1}"
        if not isinstance(s, dict) or not isinstance(s.get("scores"), dict):
            return [f"{where}: not an object with a `scores` object"], None
        sid = s.get("sample_id")
        if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < 2**63:
            return [f"{where}: sample_id {sid!r} is not a non-negative integer"], None
        for method, per in s["scores"].items():
            if not isinstance(per, dict):
                return [f"{where}: scores/{method} is not an object"], None
            for metric, v in per.items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                      or not math.isfinite(v)):
                    return [f"{where}: scores/{method}/{metric} = {v!r} is not a finite number or null"], None
    return [], np.array([s["sample_id"] for s in samples], dtype="<i8")


def check_result(data: dict[str, Any], samples: list[Any] | None = None) -> list[str]:
    """Checks a result document (untrusted input) against the schema and, when given, its per-sample records.

    Args:
        data: The parsed result JSON.
        samples: Its per-sample records (:func:`read_samples`), or None to check the document alone.

    Returns:
        Problems found, one line each (empty when valid): schema violations and NaN/Infinity literals; scores
        whose family, direction or version contradict the metric registry or the recorded config, or whose
        ``in_domain`` contradicts the model's ``patch_deletion`` and the metric's parameters; then, against
        the samples: their count vs ``n_evaluated``, their ids vs ``indices_sha256``, and each score's n, n_nan,
        mean, median, std and stderr recomputed from them.
    """
    import jsonschema

    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {' '.join(e.message.split())[:200]}"
                for e in sorted(jsonschema.Draft202012Validator(load_schema()).iter_errors(data), key=str)]
    problems += _nonfinite(data)
    if problems:
        return problems
    problems += _registry_problems(data)
    problems += _domain_problems(data)
    for method, per_metric in data["scores"].items():
        for metric, agg in per_metric.items():
            if (agg["n"] > 0) != (agg["mean"] is not None):
                problems.append(f"scores/{method}/{metric}: mean {agg['mean']} with n = {agg['n']} (a mean is null "
                                "exactly when no sample has a score)")
    if problems or samples is None:
        return problems
    shape, ids = _sample_values(samples)
    if ids is None:
        return shape
    n_eval = data["dataset"]["n_evaluated"]
    if len(samples) != n_eval:
        problems.append(f"samples file has {len(samples)} lines but dataset.n_evaluated = {n_eval}")
    if hashlib.sha256(ids.tobytes()).hexdigest() != data["dataset"]["indices_sha256"]:
        problems.append("the samples' sample ids do not hash to dataset.indices_sha256 (other images)")
    with np.errstate(all="ignore"):  # huge forged scores overflow; the comparison below reports them
        problems += _against_samples(data, samples)
    return problems


def _against_samples(data: dict[str, Any], samples: list[dict[str, Any]]) -> list[str]:
    """Each score's n, n_nan, mean, median, std and stderr recomputed from well-formed per-sample records."""
    problems = []
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
                continue
            if n == 0:
                continue
            finite = vals[~np.isnan(vals)]
            std = float(finite.std(ddof=1)) if n > 1 else 0.0
            want = {"mean": float(finite.mean()), "median": float(np.median(finite)), "std": std,
                    "stderr": std / math.sqrt(n)}
            for key, value in want.items():
                if agg[key] is None or not _close(float(agg[key]), value):
                    problems.append(f"{where}: {key} {agg[key]} ≠ {value} recomputed from the samples")
                    break
    return problems


def file_kind(doc: dict[str, Any]) -> str:
    """What a sclzoo JSON document is: ``leaderboard`` (leaderboard.json), ``compare`` (compare.json), ``meta`` (a
    meta-evaluation, evaluator/meta_results.py) or ``result``."""
    if doc.get("kind") == "meta_evaluation":
        return "meta"
    if "rows" in doc and "groups" in doc:
        return "leaderboard"
    if "claim_check" in doc and "groups" in doc:
        return "compare"
    return "result"


def check_published(doc: dict[str, Any], kind: str) -> list[str]:
    """Problems of a leaderboard.json or compare.json document (untrusted input) against its shipped schema,
    NaN/Infinity literals included; empty when valid."""
    import jsonschema

    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {' '.join(e.message.split())[:200]}"
                for e in sorted(jsonschema.Draft202012Validator(load_schema(kind)).iter_errors(doc), key=str)]
    return problems + _nonfinite(doc)


def validate_file(path: str | Path) -> tuple[str, list[str]]:
    """Checks any sclzoo JSON file: a result (:func:`validate_result`), a meta result
    (:func:`sclzoo.evaluator.meta_results.validate_meta`, with its draws file), leaderboard.json or compare.json.

    Returns:
        (kind, problems); problems is empty when the file is valid.

    Raises:
        ResultError: the file cannot be read.
    """
    doc = read_result(path)
    kind = file_kind(doc)
    if kind == "meta":
        from sclzoo.evaluator.meta_results import validate_meta

        return kind, validate_meta(path)
    return kind, (validate_result(path) if kind == "result" else check_published(doc, kind))


def validate_result(path: str | Path, check_samples: bool = True) -> list[str]:
    """Checks a result file against the schema and for internal consistency (:func:`check_result`).

    Returns:
        Problems found (empty when the file is valid), including a file name that is not ``<config_hash>.json``.

    Raises:
        ResultError: the file (or, with ``check_samples``, its per-sample file) cannot be read.
    """
    p = Path(path)
    data = read_result(p)
    problems = check_result(data)
    if problems:
        return problems
    if p.name != f"{data['config_hash']}.json":
        problems.append(f"file name {p.name!r} is not its config_hash + .json; results are named "
                        "<config_hash>.json")
    if not check_samples:
        return problems
    return problems + check_result(data, read_samples(p))


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
    import zipfile

    path = maps_path(result_file)
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as zf:  # refuse a zip bomb before numpy inflates it
            if sum(info.file_size for info in zf.infolist()) > MAX_MAPS_BYTES:
                raise ValueError(f"it inflates to more than {MAX_MAPS_BYTES >> 20} MiB")
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        out = {"sample_ids": data.get("sample_ids"), "images": data.get("images"),
               "maps": {k[len("map/"):]: v for k, v in sorted(data.items()) if k.startswith("map/")}}
        _check_maps(out)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise ResultError(f"example maps {str(path)!r} are corrupt ({_why(e)}); delete the file or evaluate again "
                          "with --force") from None
    return out


def _check_maps(maps: dict[str, Any]) -> None:
    """Raises ValueError unless the maps have the shapes :func:`write_maps` writes (finite, of a sane size)."""
    ids, images = maps["sample_ids"], maps["images"]
    if ids is None or ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) == 0:
        raise ValueError("sample_ids is not a non-empty integer vector")
    k = len(ids)
    arrays = list(maps["maps"].values()) + ([] if images is None else [images])
    if images is not None and (images.ndim != 4 or images.shape[0] != k or images.shape[1] not in (1, 3)):
        raise ValueError(f"images of shape {images.shape} are not (K, 1 or 3, H, W) with K = {k}")
    for m in maps["maps"].values():
        if m.ndim != 3 or m.shape[0] != k:
            raise ValueError(f"a map of shape {m.shape} is not (K, H, W) with K = {k}")
    for a in arrays:
        if a.dtype.kind != "f" or max(a.shape[-2:]) > MAX_MAP_SIDE or min(a.shape[-2:]) < 1:
            raise ValueError(f"an array of dtype {a.dtype} and shape {a.shape} is not a float image of at most "
                             f"{MAX_MAP_SIDE} pixels a side")
        if not np.isfinite(a).all():
            raise ValueError("a map or image holds NaN or infinity")


# --------------------------------------------------------------------------------------------------------------
# Checkpoints of a run in progress
# --------------------------------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 2  # 2: every batch file carries the sha256 digest of its content
LOCK_FILE = "lock"
_HELD: dict[str, int] = {}  # checkpoint folder → open file descriptor of the lock this process holds on it


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


def _batch_digest(doc: dict[str, Any], config_hash: str) -> str:
    """sha256 of a batch's content (bound to its run's config hash): an edited batch no longer matches it."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    blob = json.dumps({"config_hash": config_hash, "batch": body}, sort_keys=True, separators=(",", ":"),
                      allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_resume_force(resume: bool, force: bool) -> None:
    """Raises ConfigError when both are asked: --force would silently discard what --resume means to continue."""
    if resume and force:
        raise ConfigError("--resume and --force contradict each other (--resume continues the checkpoint of an "
                          "interrupted run, --force discards it); pass only one of them")


def checkpoint_exists(folder: str | Path) -> bool:
    """Whether a checkpoint folder holds something to resume: its ``meta.json``. A folder without one (a disk
    that filled up before it was written, or only a lock) is treated as absent."""
    return (Path(folder) / "meta.json").is_file()


def _holder(fd: int) -> str:
    """``pid N`` (``pid N on HOST`` for another host) from a lock file's content."""
    try:
        words = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        words = []
    if not words:
        return "pid unknown"
    host = f" on {words[1]}" if len(words) > 1 and words[1] != socket.gethostname() else ""
    return f"pid {words[0]}{host}"


def lock_checkpoint(folder: str | Path) -> None:
    """Takes this run's lock on a checkpoint folder (creating the folder), for as long as the run lives.

    The lock is an ``flock`` on ``<folder>/lock`` (which records the holder's pid and host): the kernel releases it
    when the holder exits or is killed, so there are no stale locks and a reused pid is never mistaken for a run.
    It is released by :func:`remove_checkpoint` or :func:`unlock_checkpoint`. Taking it again in the process that
    holds it is a no-op.

    Raises:
        ResultError: another live run holds it ("already running (pid N)"), or the folder cannot be written.
    """
    d = Path(folder)
    if fcntl is None:  # pragma: no cover
        return
    key = str(d.absolute())
    lock = d / LOCK_FILE
    held = _HELD.get(key)
    if held is not None:
        if _is_file_of(held, lock):
            return  # ours (an earlier call of this process, or an earlier batch of this run)
        _release(key)
    for _ in range(5):  # the file can be unlinked by its holder between our open and our flock: try again
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ResultError(f"cannot create the checkpoint lock {str(lock)!r} ({_why(e)}); pass a writable "
                              "--out folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            who = _holder(fd)
            os.close(fd)
            raise ResultError(f"another run of this model and config is already running ({who}) and holds "
                              f"{str(d)!r}; wait for it to finish, or stop it and run again with --resume") from None
        if _is_file_of(fd, lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            _HELD[key] = fd
            return
        os.close(fd)
    raise ResultError(f"cannot lock the checkpoint {str(d)!r}: its lock file keeps being replaced; make sure no "
                      "other run of this model and config is going, then try again")


def _is_file_of(fd: int, path: Path) -> bool:
    """Whether an open descriptor is (still) the file at ``path``."""
    try:
        a, b = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _release(key: str) -> None:
    fd = _HELD.pop(key, None)
    if fd is not None:
        try:
            os.close(fd)  # closing the last descriptor releases the flock
        except OSError:
            pass


def _remove(entry: Path) -> None:
    import shutil

    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def clear_checkpoint(folder: str | Path, *, keep: bool) -> None:
    """Removes what an earlier, killed run left that cannot serve this one (called with the folder's lock held,
    or when there is no folder: then no run is writing this result).

    Hidden temporary files (``.<name>.XXXXXXXX``, left when a process is killed between writing and renaming)
    beside the result and in the folder always go; so does the whole checkpoint unless ``keep`` and it has a
    ``meta.json`` (a folder without one is treated as absent). The lock stays.
    """
    d = Path(folder)
    keep = keep and checkpoint_exists(d)
    if d.is_dir():
        for entry in d.iterdir():
            if entry.name != LOCK_FILE and (not keep or entry.name.startswith(".")):
                _remove(entry)
    stem = d.name[: -len(".partial")] if d.name.endswith(".partial") else d.name
    if d.parent.is_dir():
        for entry in d.parent.iterdir():
            if entry.name.startswith(f".{stem}.") and entry.is_file():
                entry.unlink(missing_ok=True)


def unlock_checkpoint(folder: str | Path) -> None:
    """Releases this process's lock on a checkpoint folder; removes the folder when the lock was all it held."""
    d = Path(folder)
    try:
        if d.is_dir() and [e.name for e in d.iterdir()] == [LOCK_FILE]:
            _remove(d)  # while still locked, so no other run takes a lock file about to vanish
    except OSError:
        pass
    _release(str(d.absolute()))


def write_checkpoint_batch(folder: str | Path, meta: dict[str, Any], batch: BatchResult,
                           sample_ids: np.ndarray) -> Path:
    """Saves one finished batch (atomically), creating the checkpoint folder and its ``meta.json`` on first use.

    Args:
        folder: The checkpoint folder (:func:`checkpoint_dir`).
        meta: What the checkpoint belongs to (config hash, model commit, batch size, …); checked on resume.
        batch: The batch's per-sample scores and example maps.
        sample_ids: (B,) dataset indices of the batch's images.

    Scores are stored as JSON numbers (``NaN``/``Infinity`` literals included), which read back bit-identical.
    The file carries the sha256 of its content and ``meta["config_hash"]``, which :func:`read_checkpoint` checks.
    """
    d = Path(folder)
    doc: dict[str, Any] = {
        "start": int(batch.start), "sample_ids": [int(i) for i in sample_ids],
        "scores": {m: {k: [float(x) for x in v] for k, v in per.items()} for m, per in batch.scores.items()},
        "maps": {m: np.asarray(v, dtype=np.float32).tolist() for m, v in batch.maps.items()}}
    doc["sha256"] = _batch_digest(doc, str(meta.get("config_hash", "")))
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
        folder: The checkpoint folder; a missing folder, or one without ``meta.json``, means nothing is done yet.
        meta: This run's checkpoint metadata (must equal the stored ``meta.json``).
        sample_ids: (N,) dataset indices of all evaluated images (each batch's ids must match its slice).

    Returns:
        ``{start: BatchResult}``.

    Raises:
        ResultError: an unreadable, inconsistent, edited (digest mismatch) or foreign file (the message names it
            and the fix).
        ConfigError: the checkpoint was written with another batch size.
    """
    from sclzoo.evaluator.runner import BatchResult

    d = Path(folder)
    if not checkpoint_exists(d):
        return {}
    meta_file = d / "meta.json"
    try:
        found = json.loads(meta_file.read_text())
    except (OSError, ValueError, RecursionError) as e:
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
            if doc.get("sha256") != _batch_digest(doc, str(want["config_hash"])):
                raise ValueError("its content does not match its sha256 digest: it was edited after this run wrote "
                                 "it")
        except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, AttributeError,
                RecursionError) as e:
            raise _corrupt(f, d, str(e) or type(e).__name__) from None
        batches[start] = BatchResult(start, scores, maps)
    return batches


def remove_checkpoint(folder: str | Path) -> None:
    """Deletes a checkpoint folder (after its result is written, or to start over) and releases its lock."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    _release(str(Path(folder).absolute()))
