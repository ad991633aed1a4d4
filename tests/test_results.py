"""Result files: the fields of docs/artifacts.md#result-schema, schema validation, aggregation, consistency
checks."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sclzoo.errors import ConfigError, ResultError
from sclzoo.evaluator.api import evaluate
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.leaderboard import write_leaderboard
from sclzoo.evaluator.results import aggregate, bootstrap_ci, validate_result


@pytest.fixture(scope="module")
def result_file(tmp_path_factory: pytest.TempPathFactory, bundled: dict[str, Path]) -> Path:
    out = tmp_path_factory.mktemp("results")
    res = evaluate(str(bundled["ce"]), out=out, n_samples=6, methods=["saliency", "integrated_gradients"],
                   metrics=["faithfulness_correlation", "deletion_auc", "sparseness", "complexity",
                            "max_sensitivity"], batch_size=4, progress=False, device="cpu")
    assert res.path is not None
    return res.path


def test_result_has_artifact_fields(result_file: Path) -> None:
    d = json.loads(result_file.read_text())
    assert d["schema_version"] == 1
    assert set(d) >= {"model", "dataset", "config", "config_hash", "accuracy", "scores", "run", "provenance"}
    m = d["model"]
    assert len(m["commit_sha"]) == 40 and m["architecture"] == "resnet8_cifar" and m["num_parameters"] == 77754
    assert set(m["files_sha256"]) >= {"model.safetensors"}
    assert d["dataset"] == {**d["dataset"], "id": "mnist5k", "split": "test", "n_total": 1000, "n_evaluated": 6,
                            "input_range": [0, 1]}
    assert d["config"]["target"] == "predicted" and d["config"]["methods"]["integrated_gradients"]["n_steps"] == 32
    assert d["config"]["metrics"]["faithfulness_correlation"]["version"] == 2
    # The path is results/<org>__<name>/<commit_sha>/<config_hash>.json
    assert result_file.stem == d["config_hash"] and result_file.parent.name == m["commit_sha"]
    assert result_file.parent.parent.name == "local__resnet8_cifar.ce_mnist5k"
    assert 0.97 <= d["accuracy"]["torch"]["value"] <= 1.0 and d["accuracy"]["torch"]["n"] == 1000
    s = d["scores"]["saliency"]["deletion_auc"]
    assert s["family"] == "faithfulness" and s["higher_is_better"] is False and s["n"] + s["n_nan"] == 6
    assert all(isinstance(v, (int, float)) for v in (s["mean"], s["median"], s["std"], s["stderr"]))
    assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert d["run"]["versions"]["torch"] and d["run"]["world_size"] == 1


def test_validate_accepts_then_detects_tampering(result_file: Path, tmp_path: Path) -> None:
    assert validate_result(result_file) == []
    d = json.loads(result_file.read_text())
    bad = tmp_path / result_file.name
    (tmp_path / (result_file.stem + ".samples.jsonl.gz")).write_bytes(
        result_file.with_name(result_file.stem + ".samples.jsonl.gz").read_bytes())
    d["scores"]["saliency"]["sparseness"]["mean"] += 0.1
    bad.write_text(json.dumps(d))
    assert any("mean" in p for p in validate_result(bad))
    d["scores"]["saliency"]["sparseness"]["mean"] = "0.5"  # numbers are never strings
    bad.write_text(json.dumps(d))
    assert any("not of type" in p for p in validate_result(bad))


def test_result_is_deterministic_and_batch_size_free(result_file: Path, bundled: dict[str, Path],
                                                     tmp_path: Path) -> None:
    d = json.loads(result_file.read_text())
    res = evaluate(str(bundled["ce"]), out=tmp_path, n_samples=6, methods=["saliency", "integrated_gradients"],
                   metrics=["faithfulness_correlation", "deletion_auc", "sparseness", "complexity",
                            "max_sensitivity"], batch_size=6, progress=False, device="cpu")
    assert res.data["config_hash"] == d["config_hash"]  # batch size is execution-only
    for method, per in d["scores"].items():
        for metric, agg in per.items():
            assert res.data["scores"][method][metric]["mean"] == pytest.approx(agg["mean"], abs=1e-9)


def test_aggregate_counts_nan_and_never_hides_it() -> None:
    a = aggregate(np.array([1.0, np.nan, 3.0, np.nan]), seed=0)
    assert a["n"] == 2 and a["n_nan"] == 2 and a["mean"] == 2.0 and a["median"] == 2.0
    assert a["std"] == pytest.approx(math.sqrt(2)) and a["stderr"] == pytest.approx(1.0)
    empty = aggregate(np.array([np.nan]), seed=0)
    assert empty["n"] == 0 and empty["n_nan"] == 1 and empty["mean"] is None


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    v = np.random.default_rng(1).normal(size=50)
    assert bootstrap_ci(v, 0) == bootstrap_ci(v, 0)
    lo, hi = bootstrap_ci(v, 0)
    assert lo < v.mean() < hi


def test_samples_file_has_every_score(result_file: Path) -> None:
    with gzip.open(result_file.with_name(result_file.stem + ".samples.jsonl.gz"), "rt") as f:
        lines = [json.loads(x) for x in f]
    d = json.loads(result_file.read_text())
    ids = np.array([x["sample_id"] for x in lines], dtype="<i8")
    assert len(set(ids.tolist())) == len(ids)
    import hashlib

    assert hashlib.sha256(ids.tobytes()).hexdigest() == d["dataset"]["indices_sha256"]
    assert len(lines) == 6 and set(lines[0]["scores"]["saliency"]) == {
        "faithfulness_correlation", "deletion_auc", "sparseness", "complexity", "max_sensitivity"}


def test_leaderboard_is_byte_identical_on_rerun(result_file: Path, tmp_path: Path) -> None:
    root = result_file.parent.parent.parent
    a = write_leaderboard(root, tmp_path / "a")
    b = write_leaderboard(root, tmp_path / "b")
    assert a["json"].read_bytes() == b["json"].read_bytes()
    assert a["markdown"].read_bytes() == b["markdown"].read_bytes()


def test_leaderboard_on_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="does not exist"):
        write_leaderboard(tmp_path / "nope", tmp_path / "out")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target": "logit"}, "target 'logit' is unknown"),
    ({"n_samples": 0}, "n_samples must be a positive integer"),
    ({"methods": ()}, "no attribution method"),
    ({"metrics": ("sparseness", "sparseness")}, "lists a name twice"),
])
def test_eval_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EvalConfig(**kwargs)


def test_eval_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['n_sample'\]"):
        EvalConfig.from_dict({"n_sample": 3})
    assert EvalConfig.from_dict({"preset": "quick"}).n_samples == 32


def test_onnx_runtime_gives_the_torch_scores(result_file: Path, bundled: dict[str, Path], tmp_path: Path) -> None:
    """--runtime onnx runs the perturbation metrics' forwards in onnxruntime: scores equal PyTorch's ≤ 1e-5."""
    d = json.loads(result_file.read_text())
    res = evaluate(str(bundled["ce"]), out=tmp_path, n_samples=6, methods=["saliency", "integrated_gradients"],
                   metrics=["faithfulness_correlation", "deletion_auc", "sparseness", "complexity",
                            "max_sensitivity"], batch_size=4, progress=False, device="cpu", runtime="onnx")
    assert res.data["config_hash"] == d["config_hash"]
    assert res.data["accuracy"]["onnx"]["value"] == pytest.approx(d["accuracy"]["torch"]["value"])
    assert res.output is not None
    for method, per in d["scores"].items():
        for metric, agg in per.items():
            assert res.data["scores"][method][metric]["mean"] == pytest.approx(agg["mean"], abs=1e-5), (method, metric)


def test_channels_last_explanations_match_and_skip_unsafe_models(bundled: dict[str, Path]) -> None:
    """--runtime onnx explains in channels_last on a CPU: same maps up to rounding; models PyTorch 2.14.1 gets
    wrong in that layout (1×1 strided convolutions with < 8 input channels) and conv-free models are left as is."""
    import timm
    import torch

    from sclzoo import load_model
    from sclzoo.evaluator.attributions import attribute
    from sclzoo.evaluator.runner import channels_last_on_cpu
    from sclzoo.zoo.data import load_dataset

    model = load_model(str(bundled["ce"])).model.eval()
    fast = channels_last_on_cpu(model)
    assert fast is not model and next(model.parameters()).is_contiguous()  # the caller's model is untouched
    conv_w = next(p for p in fast.parameters() if p.dim() == 4)
    assert conv_w.is_contiguous(memory_format=torch.channels_last)
    x = load_dataset("mnist5k", "test").images[:8]
    with torch.no_grad():
        t = model(x).argmax(1)
    for method in ("saliency", "gradcam", "guided_backprop"):
        a, b = attribute(method, model, x, t), attribute(method, fast, x, t)
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()), method
    tiny = timm.create_model("test_resnet_cifar", in_chans=1, num_classes=3, widths=(4, 8))  # 4 → 8 shortcut
    assert channels_last_on_cpu(tiny) is tiny
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert channels_last_on_cpu(flat) is flat
