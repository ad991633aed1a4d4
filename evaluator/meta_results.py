"""Meta-evaluation result files (docs/artifacts.md#meta-evaluation-files): naming, writing, reading, checkpoints and
validation. Torch-free, so ``sclzoo validate`` and the leaderboard read them without loading a model.

A meta result is ``<results>/<org>__<name>/<commit_sha>/<meta_hash>.meta.json`` (schema:
evaluator/meta.schema.json) beside the model's evaluation results, with every draw's per-sample scores in
``<meta_hash>.meta.draws.json.gz``. ``meta_hash`` is the sha256 of the evaluation's config hash and the canonical
meta config (:func:`sclzoo.evaluator.meta.meta_hash`), so a meta result is reused exactly when the model commit,
the evaluation config and the meta-evaluation settings match. A run in progress keeps its finished pieces (the
unperturbed evaluation, the calibration, each (test, unit, draw)) in ``<meta_hash>.meta.partial/``, each file
carrying a sha256 digest of its content, under the same lock as an evaluation's checkpoint.

Meta results are untrusted input like every result: :func:`check_meta` checks one against the schema, for
NaN/Infinity literals, its hash against its recorded config, its metrics against the registry and, with its draws
file, every IAC, IEC and MC value against a recomputation from the stored scores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sclzoo.errors import ResultError
from sclzoo.evaluator.consistency import PARTS, TESTS, DrawScores, consistency
from sclzoo.evaluator.results import (
    _atomic_write,
    _nonfinite,
    checkpoint_dir,
    checkpoint_exists,
    clear_checkpoint,
    load_schema,
    lock_checkpoint,
    read_result,
    result_dir,
    unlock_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from sclzoo.evaluator.meta import MetaOutput, MetaPlan

__all__ = ["META_SCHEMA_VERSION", "META_SUFFIX", "LoadedMeta", "meta_path", "draws_path", "is_meta_file",
           "build_meta_document", "write_meta", "read_meta", "read_draws", "check_meta", "validate_meta",
           "load_meta", "meta_checkpointing"]

META_SCHEMA_VERSION = 1
META_KIND = "meta_evaluation"
META_SUFFIX = ".meta.json"
DRAWS_SUFFIX = ".meta.draws.json.gz"
DRAWS_FORMAT = 1
CHECKPOINT_FORMAT = 1
MAX_DRAWS_BYTES = 512 * 2**20
#: Agreement asked of a recomputed IAC, IEC or MC value (they are recomputed from the same float64 scores).
RECOMPUTE_TOLERANCE = 1e-9


def meta_path(root: str | Path, repo_id: str, commit_sha: str, meta_hash: str) -> Path:
    """Where the meta result of a model commit and meta config lives."""
    return result_dir(root, repo_id, commit_sha) / f"{meta_hash}{META_SUFFIX}"


def draws_path(meta_file: str | Path) -> Path:
    """``<meta_hash>.meta.draws.json.gz`` beside a meta result."""
    p = Path(meta_file)
    return p.with_name(p.name[: -len(META_SUFFIX)] + DRAWS_SUFFIX)


def is_meta_file(path: str | Path) -> bool:
    """Whether a file name is a meta result's (``*.meta.json``)."""
    return Path(path).name.endswith(META_SUFFIX)


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _floats(a: np.ndarray) -> list[float | None]:
    return [_num(v) for v in np.asarray(a, dtype=np.float64).tolist()]


def _summary(values: list[float]) -> dict[str, float | None]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def build_meta_document(*, plan: MetaPlan, output: MetaOutput, summary: dict[str, dict[str, Any]],
                        started: datetime, duration_s: float, device: torch.device, command: str,
                        provenance_source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The meta result document and its draws file, from a finished :class:`~sclzoo.evaluator.meta.MetaOutput`."""
    from sclzoo.evaluator.api import _git, _versions
    from sclzoo.zoo.train import device_name

    ep = plan.eval_plan
    loaded, resolved = ep.loaded, ep.resolved
    z = loaded.config.get("sclzoo", {})
    model = {"id": resolved.repo_id, "requested_revision": resolved.requested_revision,
             "commit_sha": resolved.commit_sha, "files_sha256": loaded.files_sha256,
             "architecture": loaded.config["architecture"], "objective": z.get("objective", "unknown"),
             "num_parameters": loaded.num_parameters, "source": resolved.source, "name": loaded.name}
    unperturbed = output.unperturbed
    tests: dict[str, Any] = {}
    for test in TESTS:
        runs = [r for unit_runs in output.draws[test].values() for r in unit_runs]
        changed = [float(np.mean(r.predictions != unperturbed.predictions)) for r in runs]
        accs = [r.accuracy for r in runs if r.accuracy is not None]
        tests[test] = {"sigma": output.calibration.sigma_minor if test == "minor" else
                       output.calibration.sigma_disruptive,
                       "draws_per_unit": plan.meta.draws, "changed_fraction": _summary(changed),
                       "accuracy": _summary(accs)}
    timings = dict(output.seconds)
    doc = {
        "schema_version": META_SCHEMA_VERSION,
        "kind": META_KIND,
        "model": model,
        "dataset": {"id": ep.data.dataset_id, "split": ep.data.split, "n_evaluated": int(len(ep.ids)),
                    "indices_sha256": ep.indices_sha},
        "evaluation": {"config": ep.canonical, "config_hash": ep.config_hash},
        "meta_config": plan.meta_canonical,
        "meta_hash": plan.meta_hash,
        "calibration": output.calibration.record(),
        "unperturbed_accuracy": unperturbed.accuracy,
        "tests": tests,
        "metrics": summary,
        "run": {"sclzoo_version": _versions().get("sclzoo", "unknown"), "git_revision": _git(), "command": command,
                "started_at": started.isoformat(timespec="seconds"), "duration_s": round(duration_s, 3),
                "device_name": device_name(device), "deterministic": True, "versions": _versions(),
                "timings_s": timings},
        "provenance": {"source": provenance_source, "verified": False},
    }
    draws = {
        "format": DRAWS_FORMAT,
        "meta_hash": plan.meta_hash,
        "sample_ids": [int(i) for i in ep.ids.tolist()],
        "labels": [int(i) for i in ep.labels.tolist()],
        "targets": [int(i) for i in output.targets.tolist()],
        "methods": list(unperturbed.scores),
        "unperturbed": {"predictions": [int(i) for i in unperturbed.predictions.tolist()],
                        "scores": {m: {k: _floats(v) for k, v in per.items()}
                                   for m, per in unperturbed.scores.items()}},
        "draws": {test: {unit: [{"sigma": r.sigma, "accuracy": r.accuracy,
                                 "predictions": [int(i) for i in r.predictions.tolist()],
                                 "scores": {m: {k: _floats(v) for k, v in per.items()} for m, per in r.scores.items()}}
                                for r in runs]
                         for unit, runs in output.draws[test].items()}
                  for test in TESTS},
    }
    return doc, draws


def write_meta(path: str | Path, doc: dict[str, Any], draws: dict[str, Any]) -> Path:
    """Writes the draws file, then the meta result (atomically; the result last, so it always has its draws)."""
    p = Path(path)
    try:
        blob = json.dumps(draws, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        _atomic_write(draws_path(p), gzip.compress(blob, mtime=0))
        _atomic_write(p, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
    except PermissionError:
        raise ResultError(f"cannot write results under {str(p.parent)!r} (permission denied); pass a writable "
                          "--out folder") from None
    except OSError as e:
        raise ResultError(f"cannot write meta result {str(p)!r}: {e.strerror or e}; pass another --out folder") \
            from None
    return p


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON object of a meta result file (size-limited like a result file).

    Raises:
        ResultError: missing, unreadable, too large, not JSON or not an object.
    """
    return read_result(path)


def read_draws(meta_file: str | Path) -> dict[str, Any]:
    """The draws file beside a meta result.

    Raises:
        ResultError: missing, corrupt, larger than :data:`MAX_DRAWS_BYTES` once decompressed, or not an object.
    """
    dp = draws_path(meta_file)
    try:
        with gzip.open(dp, "rb") as f:
            blob = f.read(MAX_DRAWS_BYTES + 1)
        if len(blob) > MAX_DRAWS_BYTES:
            raise ResultError(f"draws file {str(dp)!r} decompresses to more than {MAX_DRAWS_BYTES >> 20} MiB; "
                              "delete it")
        data = json.loads(blob)
    except FileNotFoundError:
        raise ResultError(f"draws file {str(dp)!r} is missing; meta-evaluate again with --force") from None
    except (OSError, EOFError, zlib.error, ValueError, RecursionError) as e:
        raise ResultError(f"draws file {str(dp)!r} is corrupt ({' '.join(str(e).split())[:200]}); meta-evaluate "
                          "again with --force") from None
    if not isinstance(data, dict):
        raise ResultError(f"draws file {str(dp)!r} does not hold a JSON object")
    return data


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= RECOMPUTE_TOLERANCE * max(1.0, abs(a), abs(b))


def _registry_problems(doc: dict[str, Any]) -> list[str]:
    from sclzoo.evaluator.metrics import METRICS

    out = []
    cfg_metrics = doc["evaluation"]["config"].get("metrics", {})
    for metric, m in doc["metrics"].items():
        where = f"metrics/{metric}"
        if metric not in cfg_metrics or cfg_metrics[metric].get("version") != m["version"]:
            out.append(f"{where}: version {m['version']} is not the one evaluation.config.metrics records")
        if metric not in METRICS:
            continue
        spec = METRICS.get(metric)
        if spec.version == m["version"] and (spec.family != m["family"]
                                             or spec.higher_is_better != m["higher_is_better"]):
            out.append(f"{where}: family {m['family']!r} / higher_is_better {m['higher_is_better']} contradict "
                       f"metric {metric!r} version {spec.version} ({spec.family}, higher_is_better "
                       f"{spec.higher_is_better})")
        unit = spec.shares_draws_with or metric
        if spec.version == m["version"] and m["draw_unit"] != unit:
            out.append(f"{where}: draw_unit {m['draw_unit']!r} is not {unit!r}")
    return out


def _array(values: Any, n: int, where: str, integer: bool = False) -> np.ndarray:
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"{where} is not a list of {n} values")
    if integer:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{where} holds a value that is not an integer")
        return np.asarray(values, dtype=np.int64)
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
               for v in values):
        raise ValueError(f"{where} holds a value that is not a finite number or null")
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _scores(block: Any, methods: list[str], metrics: list[str], n: int, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(block, dict) or sorted(block) != sorted(methods):
        raise ValueError(f"{where}: its methods are not {sorted(methods)}")
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        if not isinstance(block[m], dict) or sorted(block[m]) != sorted(metrics):
            raise ValueError(f"{where}/{m}: its metrics are not {sorted(metrics)}")
        out[m] = {k: _array(block[m][k], n, f"{where}/{m}/{k}") for k in metrics}
    return out


def recompute(doc: dict[str, Any], draws: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every metric's consistency recomputed from a draws file (raises ValueError when it is malformed)."""
    n = int(doc["dataset"]["n_evaluated"])
    methods = draws.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise ValueError("methods is not a list of names")
    iterations = int(doc["meta_config"]["iterations"])
    per_test = iterations * int(doc["meta_config"]["perturbations"])
    unperturbed = draws.get("unperturbed")
    if not isinstance(unperturbed, dict):
        raise ValueError("unperturbed is not an object")
    metrics = list(doc["metrics"])
    preds0 = _array(unperturbed.get("predictions"), n, "unperturbed/predictions", integer=True)
    q0 = _scores(unperturbed.get("scores"), methods, metrics, n, "unperturbed/scores")
    units: dict[str, list[str]] = {}
    for metric, m in doc["metrics"].items():
        units.setdefault(m["draw_unit"], []).append(metric)
    runs: dict[str, dict[str, list[DrawScores]]] = {}
    tests = draws.get("draws")
    if not isinstance(tests, dict) or sorted(tests) != sorted(TESTS):
        raise ValueError(f"draws does not hold exactly the tests {list(TESTS)}")
    for test in TESTS:
        if not isinstance(tests[test], dict) or sorted(tests[test]) != sorted(units):
            raise ValueError(f"draws/{test}: its units are not {sorted(units)}")
        sigma = doc["tests"][test]["sigma"]
        for unit, members in units.items():
            seq = tests[test][unit]
            if not isinstance(seq, list) or len(seq) != per_test:
                raise ValueError(f"draws/{test}/{unit} does not hold {per_test} draws")
            for d, rec in enumerate(seq):
                where = f"draws/{test}/{unit}/{d}"
                if not isinstance(rec, dict) or rec.get("sigma") != sigma:
                    raise ValueError(f"{where}: its sigma is not the {test} test's {sigma}")
                preds = _array(rec.get("predictions"), n, f"{where}/predictions", integer=True)
                sc = _scores(rec.get("scores"), methods, members, n, f"{where}/scores")
                for metric in members:
                    runs.setdefault(metric, {t: [] for t in TESTS})[test].append(
                        DrawScores(preds, {m: sc[m][metric] for m in methods}))
    out = {}
    for metric, m in doc["metrics"].items():
        out[metric] = consistency({k: q0[k][metric] for k in methods}, preds0, runs[metric], m["higher_is_better"],
                                  iterations)
    return out


def _recompute_problems(doc: dict[str, Any], draws: dict[str, Any]) -> list[str]:
    problems = []
    if draws.get("meta_hash") != doc["meta_hash"]:
        problems.append("the draws file belongs to another meta result (its meta_hash differs)")
        return problems
    ids = draws.get("sample_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**63
                                            for i in ids):
        return ["draws file: sample_ids is not a list of non-negative integers"]
    if hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest() != doc["dataset"]["indices_sha256"]:
        problems.append("the draws file's sample ids do not hash to dataset.indices_sha256 (other images)")
    try:
        with np.errstate(all="ignore"):
            again = recompute(doc, draws)
    except (ValueError, TypeError, KeyError) as e:
        return problems + [f"draws file: {' '.join(str(e).split())[:200]}"]
    for metric, m in doc["metrics"].items():
        r = again[metric]
        for key in ("mc", "mc_std", *PARTS):
            if not _close(m[key], r[key]):
                problems.append(f"metrics/{metric}/{key}: {m[key]} ≠ {r[key]} recomputed from the draws file")
                break
        else:
            if m["undefined"] != r["undefined"]:
                problems.append(f"metrics/{metric}/undefined: {m['undefined']} ≠ {r['undefined']} recomputed")
    return problems


def check_meta(doc: dict[str, Any], draws: dict[str, Any] | None = None) -> list[str]:
    """Checks a meta result document (untrusted input) and, when given, its draws file.

    Returns:
        Problems, one line each (empty when valid): schema violations and NaN/Infinity literals; a ``meta_hash``
        that is not the hash of the recorded evaluation config hash and meta config; metrics whose family,
        direction, version or draw unit contradict the registry or the recorded config; MC not the mean of its
        four parts; then, against the draws: sample ids vs ``indices_sha256`` and every IAC, IEC and MC value
        recomputed from the stored scores.
    """
    import jsonschema

    from sclzoo.evaluator.meta import meta_hash

    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {' '.join(e.message.split())[:200]}"
                for e in sorted(jsonschema.Draft202012Validator(load_schema("meta")).iter_errors(doc), key=str)]
    problems += _nonfinite(doc)
    if problems:
        return problems
    want = meta_hash(doc["evaluation"]["config_hash"], doc["meta_config"])
    if doc["meta_hash"] != want:
        problems.append(f"meta_hash {doc['meta_hash'][:12]}… is not the hash of the recorded evaluation config hash "
                        f"and meta config ({want[:12]}…)")
    problems += _registry_problems(doc)
    for metric, m in doc["metrics"].items():
        parts = [m[p] for p in PARTS]
        mean = None if any(v is None for v in parts) else float(np.mean(parts))
        if not _close(m["mc"], mean):
            problems.append(f"metrics/{metric}/mc: {m['mc']} is not the mean of its four parts ({mean})")
    if problems or draws is None:
        return problems
    return _recompute_problems(doc, draws)


def validate_meta(path: str | Path, check_draws: bool = True) -> list[str]:
    """Checks a meta result file (:func:`check_meta`), its name (``<meta_hash>.meta.json``) and its draws file.

    Raises:
        ResultError: the file (or, with ``check_draws``, its draws file) cannot be read.
    """
    p = Path(path)
    doc = read_meta(p)
    problems = check_meta(doc)
    if problems:
        return problems
    if p.name != f"{doc['meta_hash']}{META_SUFFIX}":
        problems.append(f"file name {p.name!r} is not its meta_hash + {META_SUFFIX}; meta results are named "
                        f"<meta_hash>{META_SUFFIX}")
    if not check_draws:
        return problems
    return problems + check_meta(doc, read_draws(p))


@dataclass(frozen=True)
class LoadedMeta:
    """One valid meta result under a results folder.

    Attributes:
        file: Path relative to the results folder.
        doc: The meta result document.
    """

    file: str
    doc: dict[str, Any]


def load_meta(root: Path, f: Path) -> LoadedMeta:
    """A meta result file under ``root``, checked with its draws file; raises ResultError naming the first problem
    (the leaderboard skips such a file and lists it)."""
    if f.is_symlink() or draws_path(f).is_symlink():
        raise ResultError("is a symbolic link; a meta result and its draws file must be plain files")
    if not f.is_file():
        raise ResultError("is a folder, not a meta result file" if f.is_dir() else "is not a plain file")
    try:
        problems = validate_meta(f)
    except ResultError as e:
        raise ResultError(" ".join(str(e).replace(str(f), f.name).replace(str(draws_path(f)), draws_path(f).name)
                                   .split())) from None
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ResultError(problems[0] + more)
    return LoadedMeta(f.relative_to(root).as_posix(), read_meta(f))


# --------------------------------------------------------------------------------------------------------------
# Checkpoints of a run in progress
# --------------------------------------------------------------------------------------------------------------


def _piece_file(folder: Path, key: str) -> Path:
    return folder / (key.replace("/", "-") + ".json.gz")


def _digest(body: dict[str, Any], meta_hash: str) -> str:
    blob = json.dumps({"meta_hash": meta_hash, "piece": body}, sort_keys=True, separators=(",", ":"),
                      allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _encode(key: str, piece: Any) -> dict[str, Any]:
    from sclzoo.evaluator.meta import Calibration, UnitRun

    if isinstance(piece, Calibration):
        return {"key": key, "calibration": {**piece.record(), "minor_given": piece.minor_given,
                                            "disruptive_given": piece.disruptive_given}}
    run, targets = piece if isinstance(piece, tuple) else (piece, None)
    if not isinstance(run, UnitRun):
        raise TypeError(f"checkpoint piece {key!r} is a {type(piece).__name__}, not a UnitRun")
    body: dict[str, Any] = {"key": key, "predictions": [int(i) for i in run.predictions.tolist()],
                            "scores": {m: {k: [float(x) for x in v] for k, v in per.items()}
                                       for m, per in run.scores.items()},
                            "accuracy": run.accuracy, "sigma": run.sigma, "seconds": run.seconds}
    if targets is not None:
        body["targets"] = [int(i) for i in np.asarray(targets).tolist()]
    return body


def _decode(body: dict[str, Any], n: int, methods: list[str]) -> tuple[str, Any]:
    from sclzoo.evaluator.meta import Calibration, UnitRun

    key = body["key"]
    if key == "calibration":
        c = body["calibration"]
        return key, Calibration(float(c["sigma_minor"]), float(c["sigma_disruptive"]), bool(c["minor_given"]),
                                bool(c["disruptive_given"]), float(c["chance_bound"]), list(c["rows"]))
    preds = np.asarray(body["predictions"], dtype=np.int64)
    if preds.shape != (n,) or list(body["scores"]) != methods:
        raise ValueError("its predictions or methods are not those of this run")
    scores = {m: {k: np.asarray(v, dtype=np.float64) for k, v in per.items()} for m, per in body["scores"].items()}
    if any(v.shape != (n,) for per in scores.values() for v in per.values()):
        raise ValueError(f"its score lists do not have {n} entries")
    acc = body["accuracy"]
    run = UnitRun(preds, scores, None if acc is None else float(acc), float(body["sigma"]), float(body["seconds"]))
    if key == "unperturbed" and np.asarray(body["targets"], dtype=np.int64).shape != (n,):
        raise ValueError("its targets are not those of this run")
    return key, run


def meta_checkpointing(path: Path | None, meta: dict[str, Any], ids: np.ndarray, *, resume: bool, force: bool
                       ) -> tuple[dict[str, Any], Callable[[str, Any], None] | None]:
    """Finished pieces to resume from, and the callback that checkpoints each new piece.

    The checkpoint folder ``<meta_hash>.meta.partial/`` is locked like an evaluation's (a second live run is told
    "already running (pid N)"); it is removed once the meta result is written.

    Raises:
        ResultError: a checkpoint exists but neither ``resume`` nor ``force`` is given, or a file in it is corrupt.
    """
    if path is None:
        return {}, None
    folder = checkpoint_dir(path)
    if folder.is_dir():
        lock_checkpoint(folder)
    if checkpoint_exists(folder) and not (resume or force):
        unlock_checkpoint(folder)
        raise ResultError(f"an interrupted meta-evaluation of this config left the checkpoint {str(folder)!r}; pass "
                          "--resume (resume=True) to continue it or --force to start over")
    clear_checkpoint(folder, keep=resume)
    if not checkpoint_exists(folder):
        unlock_checkpoint(folder)
    done = read_meta_checkpoint(folder, meta, ids) if resume else {}
    meta_hash = str(meta["meta_hash"])

    def on_unit(key: str, piece: Any) -> None:
        lock_checkpoint(folder)
        body = _encode(key, piece)
        body["sha256"] = _digest(body, meta_hash)
        try:
            if not (folder / "meta.json").is_file():
                _atomic_write(folder / "meta.json",
                              (json.dumps({"format": CHECKPOINT_FORMAT, **meta}, indent=2) + "\n").encode())
            _atomic_write(_piece_file(folder, key), gzip.compress(json.dumps(body, allow_nan=True).encode(),
                                                                  mtime=0))
        except OSError as e:
            raise ResultError(f"cannot write the checkpoint {str(folder)!r}: {e.strerror or e}; pass another --out "
                              "folder") from None

    return done, on_unit


def read_meta_checkpoint(folder: Path, meta: Mapping[str, Any], ids: np.ndarray) -> dict[str, Any]:
    """The finished pieces of an interrupted meta-evaluation, checked against the run that resumes them.

    Returns:
        ``{"unperturbed": UnitRun, "targets": (N,), "calibration": Calibration, "<test>/<unit>/<draw>": UnitRun}``.

    Raises:
        ResultError: an unreadable, foreign or edited file (the message names it and the fix).
    """
    if not checkpoint_exists(folder):
        return {}

    def corrupt(f: Path, why: object) -> ResultError:
        return ResultError(f"checkpoint file {str(f)!r} is corrupt ({why}); delete {str(folder)!r} or run with "
                           "--force to start over")

    meta_file = folder / "meta.json"
    try:
        found = json.loads(meta_file.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise corrupt(meta_file, e) from None
    want = {"format": CHECKPOINT_FORMAT, **meta}
    if not isinstance(found, dict) or any(found.get(k) != want[k] for k in want):
        raise corrupt(meta_file, "its config does not match this run")
    n = len(ids)
    methods = list(meta["methods"])
    done: dict[str, Any] = {}
    for f in sorted(folder.glob("*.json.gz")):
        try:
            body = json.loads(gzip.decompress(f.read_bytes()))
            if body.get("sha256") != _digest({k: v for k, v in body.items() if k != "sha256"},
                                             str(meta["meta_hash"])):
                raise ValueError("its content does not match its sha256 digest: it was edited after this run wrote "
                                 "it")
            if f.name != _piece_file(folder, body["key"]).name:
                raise ValueError(f"its key {body['key']!r} does not fit its name")
            key, piece = _decode(body, n, methods)
            if key == "unperturbed":
                done["targets"] = np.asarray(body["targets"], dtype=np.int64)
            done[key] = piece
        except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, AttributeError,
                RecursionError) as e:
            raise corrupt(f, str(e) or type(e).__name__) from None
    return done
