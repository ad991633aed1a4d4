"""The device path of an evaluation (docs/protocol.md#seeding, README "Speed"): versions that name changed draws in
the config hash, and the parts of GPU work that can be checked on a CPU."""

from __future__ import annotations

import json
from pathlib import Path


from sclzoo.evaluator.attributions import METHODS
from sclzoo.evaluator.config import EvalConfig, build_config
from sclzoo.evaluator.metrics import METRICS
from sclzoo.evaluator.runner import call_params, resolve_specs

REPO = Path(__file__).resolve().parent.parent
DRAWING_METRICS = ("faithfulness_correlation", "infidelity", "max_sensitivity", "avg_sensitivity",
                   "local_lipschitz_estimate", "random_logit")
DRAWING_METHODS = ("smoothgrad", "gradient_shap", "expected_gradients")


# --------------------------------------------------------------------------------------------------------------
# Versions: what draws changed is in the config hash; what did not keeps its hash
# --------------------------------------------------------------------------------------------------------------


def test_the_metrics_and_methods_that_draw_are_at_version_2() -> None:
    for name, spec in METRICS.items():
        assert spec.version == (2 if name in DRAWING_METRICS else 1), name
    for name, mspec in METHODS.items():
        assert mspec.version == (2 if name in DRAWING_METHODS else 1), name


def test_a_method_version_is_recorded_only_above_1() -> None:
    cfg = build_config(methods=["saliency", "smoothgrad", "gradcam"], metrics=["sparseness"])
    methods, _ = resolve_specs(cfg)
    assert "version" not in methods["saliency"] and "version" not in methods["gradcam"]
    assert methods["smoothgrad"] == {"version": 2, "nt_samples": 16, "stdevs": 0.15, "internal_batch_size": None}
    assert call_params(methods["smoothgrad"]) == {"nt_samples": 16, "stdevs": 0.15, "internal_batch_size": None}

    def config_hash(smoothgrad: dict) -> str:
        canonical = cfg.canonical({"dataset": "mnist5k", "methods": {**methods, "smoothgrad": smoothgrad},
                                   "metrics": {}})
        return EvalConfig.hash_of(canonical)

    # the version is part of the hash: results of the earlier smoothgrad draws are not reused
    assert config_hash(methods["smoothgrad"]) != config_hash(call_params(methods["smoothgrad"]))


def test_committed_results_of_unchanged_methods_keep_their_config_hash() -> None:
    """The committed leaderboard's method records are exactly what the standard preset resolves to today."""
    files = sorted((REPO / "leaderboard" / "results").glob("*/*/*.json"))
    assert files
    methods, _ = resolve_specs(build_config(preset="standard"))
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["config"]["methods"] == methods, f
        assert EvalConfig.hash_of(doc["config"]) == doc["config_hash"] == f.stem, f
