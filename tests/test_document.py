"""The typed result document (evaluator/document.py) and the JSON Schema (evaluator/result.schema.json) agree."""

from __future__ import annotations

import typing

import pytest

from sclzoo.evaluator import document
from sclzoo.evaluator.results import load_schema

BLOCKS = {"model": document.ModelRecord, "dataset": document.DatasetRecord, "accuracy": document.AccuracyRecord,
          "run": document.RunRecord, "provenance": document.ProvenanceRecord}


def test_top_level_keys_are_the_schemas() -> None:
    schema = load_schema()
    assert set(document.ResultDocument.__required_keys__) == set(schema["required"])
    assert set(typing.get_type_hints(document.ResultDocument)) == set(schema["properties"])


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_block_keys_are_the_schemas(block: str) -> None:
    spec = load_schema()["properties"][block]
    typed = BLOCKS[block]
    assert set(spec["required"]) <= typed.__required_keys__
    assert typed.__required_keys__ <= set(typed.__required_keys__) | set(spec["required"])
    # Every key the schema lists is typed (extra typed keys are the open dataset/run facts the schema allows).
    assert set(spec.get("properties", {})) <= set(typing.get_type_hints(typed))


def test_score_record_is_the_schemas_score() -> None:
    import numpy as np

    score = load_schema()["$defs"]["score"]
    rec = document.score_record("faithfulness", True, 1, np.array([0.1, np.nan, 0.3]), seed=0)
    assert set(score["required"]) <= set(rec) and rec["n"] == 2 and rec["n_nan"] == 1
    assert list(rec)[:3] == ["family", "higher_is_better", "version"]
