"""The result document, typed: one ``TypedDict`` per block of ``evaluator/result.schema.json``.

:func:`build_result` assembles a document from its blocks; ``tests/test_document.py`` checks that the blocks'
keys are exactly the schema's (required keys required, no key the schema does not know), so the code that writes
results and the schema that validates them cannot drift apart. The format is described in
docs/artifacts.md#result-files.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from sclzoo.evaluator.results import SCHEMA_VERSION, aggregate

__all__ = ["AccuracyRecord", "DatasetRecord", "ModelRecord", "PatchDeletionRecord", "ProvenanceRecord",
           "ResultDocument", "RunRecord", "ScoreRecord", "build_result", "score_record"]


class _ModelRequired(TypedDict):
    id: str
    requested_revision: str | None
    commit_sha: str
    files_sha256: dict[str, str]
    architecture: str
    objective: str
    num_parameters: int
    source: str


class PatchDeletionRecord(TypedDict):
    """The patch deletion a model was trained with (config.json's ``sclzoo.patch_deletion``; sclzoo/deletion.py)."""

    grid: int
    value: float
    p: float


class ModelRecord(_ModelRequired, total=False):
    """Which weights were evaluated (``patch_deletion`` only for a model trained with it)."""

    name: str
    patch_deletion: PatchDeletionRecord


class _DatasetRequired(TypedDict):
    id: str
    split: str
    n_total: int
    n_evaluated: int
    indices_sha256: str
    input_range: list[int]


class DatasetRecord(_DatasetRequired, total=False):
    """Which images were explained (``id`` is what the config hash records); ``mask`` (the ground-truth kind) and
    ``masks_sha256`` (of the split's masks of that kind) only when a localisation metric used them."""

    split_sha256: str
    class_names: list[str]
    content_sha256: str
    preprocess: dict[str, Any] | None
    class_map: dict[str, Any]
    folder: str
    mask: str
    masks_sha256: str


class Accuracy(TypedDict, total=False):
    value: float | None
    n: int
    note: str


class _AccuracyRequired(TypedDict):
    torch: Accuracy


class AccuracyRecord(_AccuracyRequired, total=False):
    """Top-1 accuracy on the whole split, per runtime (``onnx`` only with ``--runtime onnx``)."""

    onnx: Accuracy | None


class _ScoreRequired(TypedDict):

    family: str
    higher_is_better: bool
    version: int
    mean: float | None
    median: float | None
    std: float | None
    stderr: float | None
    ci95: list[float | None]
    n: int
    n_nan: int


class ScoreRecord(_ScoreRequired, total=False):
    """One (method, metric) aggregate: the metric's identity, then :func:`sclzoo.evaluator.results.aggregate`;
    ``in_domain`` only for a deletion metric (:func:`sclzoo.deletion.deletion_in_domain`)."""

    in_domain: bool


class _RunRequired(TypedDict):
    sclzoo_version: str
    git_revision: str
    command: str
    started_at: str
    duration_s: float
    device_name: str
    deterministic: bool
    world_size: int
    versions: dict[str, str]


class RunRecord(_RunRequired, total=False):
    """How the run went: execution facts, never part of the config hash."""

    timings_s: dict[str, float]
    perturbations_clamped: bool
    gradcam_layer: str


class ProvenanceRecord(TypedDict):
    """Where the file comes from: ``verified`` only when sclzoo recomputed it."""

    source: str
    verified: bool


class ResultDocument(TypedDict):
    """A whole result file (``<config_hash>.json``)."""

    schema_version: int
    model: ModelRecord
    dataset: DatasetRecord
    config: dict[str, Any]
    config_hash: str
    accuracy: AccuracyRecord
    scores: dict[str, dict[str, ScoreRecord]]
    run: RunRecord
    provenance: ProvenanceRecord


def score_record(family: str, higher_is_better: bool, version: int, values: np.ndarray, seed: int,
                 in_domain: bool | None = None) -> ScoreRecord:
    """The aggregate of one (method, metric)'s per-sample scores, NaNs counted (never hidden); ``in_domain`` is
    recorded when it is not None."""
    agg = aggregate(values, seed)
    rec = ScoreRecord(family=family, higher_is_better=higher_is_better, version=version, mean=agg["mean"],
                      median=agg["median"], std=agg["std"], stderr=agg["stderr"], ci95=agg["ci95"], n=agg["n"],
                      n_nan=agg["n_nan"])
    if in_domain is not None:
        rec["in_domain"] = in_domain
    return rec


def build_result(*, model: ModelRecord, dataset: DatasetRecord, config: dict[str, Any], config_hash: str,
                 accuracy: AccuracyRecord, scores: dict[str, dict[str, ScoreRecord]], run: RunRecord,
                 provenance: ProvenanceRecord) -> ResultDocument:
    """A result document of the current schema version from its blocks (key order as written to disk)."""
    return ResultDocument(schema_version=SCHEMA_VERSION, model=model, dataset=dataset, config=config,
                          config_hash=config_hash, accuracy=accuracy, scores=scores, run=run, provenance=provenance)
