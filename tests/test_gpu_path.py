"""The device path of an evaluation (docs/protocol.md#seeding, README "Speed"): versions that name changed draws in
the config hash, and the parts of GPU work that can be checked on a CPU."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import conv_net, images
from torch import nn

from sclzoo.errors import ConfigError
from sclzoo.evaluator.api import evaluate
from sclzoo.evaluator.attributions import METHODS, attribute
from sclzoo.evaluator.config import EvalConfig, build_config
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute, compute_on_device, randomisation
from sclzoo.evaluator.runner import (
    auto_batch_size,
    call_params,
    check_precision,
    resolve_specs,
    run_evaluation,
)
from sclzoo.zoo.onnx_export import onnx_logits, onnx_providers, onnx_session

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
    files = sorted(f for f in (REPO / "leaderboard" / "results").glob("*/*/*.json")
                   if not f.name.endswith(".meta.json"))  # meta-evaluation records carry their own config
    assert files
    methods, _ = resolve_specs(build_config(preset="standard"))
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["config"]["methods"] == methods, f
        assert EvalConfig.hash_of(doc["config"]) == doc["config_hash"] == f.stem, f


# --------------------------------------------------------------------------------------------------------------
# No repeated model work, no host round trips inside a batch
# --------------------------------------------------------------------------------------------------------------


def _run(model: nn.Module, batch_size: int, precision: str = "fp32", **kw: object) -> object:
    x = images(6, seed=4)
    cfg = EvalConfig(n_samples=6, methods=("saliency", "gradcam"), metrics=("mprt_last", "sparseness", "random_logit"),
                     batch_size=batch_size, seed=5, precision=precision)
    return run_evaluation(model, x, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(30, 36), cfg,
                          device=torch.device("cpu"), progress=False, **kw)


def test_the_randomised_model_is_made_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = randomisation.randomised_copy

    def counted(model: nn.Module, seed: int) -> nn.Module:
        calls.append(seed)
        return real(model, seed)

    monkeypatch.setattr(randomisation, "randomised_copy", counted)
    model = conv_net()
    three_batches = _run(model, batch_size=2)  # 3 batches x 2 methods: one copy, not six
    assert calls == [5]
    one_batch = _run(model, batch_size=6)
    assert calls == [5, 5]  # a new run makes its own
    for method in ("saliency", "gradcam"):
        for metric in ("mprt_last", "sparseness", "random_logit"):
            np.testing.assert_allclose(three_batches.scores[method][metric],  # type: ignore[attr-defined]
                                       one_batch.scores[method][metric], rtol=1e-6, atol=1e-9)


def test_a_context_without_a_shared_store_keeps_the_copy_for_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = randomisation.randomised_copy
    monkeypatch.setattr(randomisation, "randomised_copy", lambda m, s: calls.append(s) or real(m, s))
    model, x, t = conv_net(), images(3), torch.tensor([0, 1, 2])

    def explain_with(m: nn.Module, xx: torch.Tensor, tt: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return attribute("saliency", m, xx, tt)

    a = attribute("saliency", model, x, t)
    shared: dict = {}
    for _ in range(2):  # two batches sharing a store: one copy
        compute("mprt_last", MetricContext(model=model, x=x, target=t, attributions=a, explain_with=explain_with,
                                           shared=shared))
    assert len(calls) == 1
    other = conv_net()  # another model in the same store gets its own copy
    compute("mprt_last", MetricContext(model=other, x=x, target=t, attributions=a, explain_with=explain_with,
                                       shared=shared))
    assert len(calls) == 2
    for _ in range(2):  # no store: one copy per context, as before
        compute("mprt_last", MetricContext(model=model, x=x, target=t, attributions=a, explain_with=explain_with))
    assert len(calls) == 4


def test_compute_on_device_is_compute_without_the_copy() -> None:
    model, x, t = conv_net(), images(4), torch.tensor([0, 1, 2, 0])
    a = attribute("saliency", model, x, t)
    ctx = MetricContext(model=model, x=x, target=t, attributions=a, sample_ids=torch.arange(4))
    on_device = compute_on_device("faithfulness_correlation", ctx, n_draws=8)
    assert on_device.dtype == torch.float64 and on_device.device == x.device
    assert torch.equal(on_device, compute("faithfulness_correlation", ctx, n_draws=8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_do_not_wait_for_the_gpu() -> None:
    """CUDA's sync debug mode warns on every host synchronisation (.item(), .cpu(), nonzero, a pageable copy):
    the drawing and forward-only metrics make none while they compute a batch."""
    model = conv_net().cuda()
    x, t = images(8, seed=2).cuda(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]).cuda()
    a = attribute("saliency", model, x, t)
    ids = torch.arange(8).cuda()

    def explain(xx: torch.Tensor, tt: torch.Tensor, ii: torch.Tensor) -> torch.Tensor:
        return attribute("saliency", model, xx, tt, sample_ids=ii)

    ctx = MetricContext(model=model, x=x, target=t, attributions=a, explain=explain, sample_ids=ids, batch_size=32)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for name in ("faithfulness_correlation", "infidelity", "deletion_auc", "max_sensitivity",
                         "local_lipschitz_estimate"):
                compute_on_device(name, ctx, **({"n_draws": 16} if name == "faithfulness_correlation" else {}))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in seen if "synchroniz" in str(w.message).lower()]
    assert not syncs, syncs[:3]


# --------------------------------------------------------------------------------------------------------------
# Many processes: --batch-size auto is measured after the process group is up, on the process's own device
# --------------------------------------------------------------------------------------------------------------

TORCHRUN_SCRIPT = """
import json, os, sys
import torch.distributed as dist
import sclzoo
from sclzoo.evaluator import runner

model, out, log = sys.argv[1:4]
measure = runner.auto_batch_size

def probe(model, images, methods, device, **kw):
    rank = int(os.environ["RANK"])
    record = {"initialized": dist.is_initialized(), "world": dist.get_world_size(), "device": str(device),
              "methods": sorted(methods), "metrics": sorted(kw["metrics"]), "pool": kw["baseline_pool"] is not None,
              "measured": measure(model, images, methods, device, **kw)}
    with open(os.path.join(log, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    return 4 if rank == 0 else 2  # the processes measure different sizes: all must take the smallest

runner.auto_batch_size = probe
sclzoo.evaluate(model, n_samples=8, methods=["saliency", "expected_gradients"],
                method_params={"expected_gradients": {"n_samples": 2}},
                metrics=["sparseness", "max_sensitivity"], metric_params={"max_sensitivity": {"n_perturbations": 2}},
                batch_size="auto", device="cpu", out=out, progress=False)
"""


@pytest.mark.slow
def test_auto_batch_size_is_measured_after_the_process_group_is_up(tmp_path: Path, bundled: dict[str, Path]) -> None:
    script, out, log = tmp_path / "run.py", tmp_path / "results", tmp_path / "log"
    script.write_text(TORCHRUN_SCRIPT)
    log.mkdir()
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None, "torchrun is installed with torch"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={port}", str(script), str(bundled["ce"]),
                        str(out), str(log)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    for rank in (0, 1):
        record = json.loads((log / f"rank{rank}.json").read_text())
        assert record == {"initialized": True, "world": 2, "device": "cpu",
                          "methods": ["expected_gradients", "saliency"], "metrics": ["max_sensitivity", "sparseness"],
                          "pool": True, "measured": 64}, rank  # on a CPU auto stays the CPU default
    (result,) = out.glob("*/*/*.json")
    doc = json.loads(result.read_text())
    assert doc["config"]["batch_size"] == 2 and doc["config"]["batch_size_auto"] is True
    assert doc["run"]["world_size"] == 2
    alone = evaluate(str(bundled["ce"]), n_samples=8, methods=["saliency", "expected_gradients"],
                     method_params={"expected_gradients": {"n_samples": 2}}, metrics=["sparseness", "max_sensitivity"],
                     metric_params={"max_sensitivity": {"n_perturbations": 2}}, batch_size=2, device="cpu",
                     out=None, progress=False)
    assert alone.data["config_hash"] == doc["config_hash"]
    for method, scores in alone.data["scores"].items():
        for metric, agg in scores.items():
            assert doc["scores"][method][metric]["mean"] == agg["mean"], (method, metric)


# --------------------------------------------------------------------------------------------------------------
# onnxruntime on the process's own GPU
# --------------------------------------------------------------------------------------------------------------


def test_onnx_providers_name_the_processs_gpu() -> None:
    cuda_and_cpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cpu", cuda_and_cpu) == ["CPUExecutionProvider"]
    assert onnx_providers(torch.device("cuda", 3), cuda_and_cpu) == [
        ("CUDAExecutionProvider", {"device_id": "3"}), "CPUExecutionProvider"]
    assert onnx_providers("cuda:1", cuda_and_cpu, stream=1234) == [
        ("CUDAExecutionProvider", {"device_id": "1", "has_user_compute_stream": "1", "user_compute_stream": "1234"}),
        "CPUExecutionProvider"]
    with pytest.warns(UserWarning, match="no CUDA provider"):
        assert onnx_providers("cuda:1", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_onnx_runs_on_the_given_gpu_with_tensors_in_its_memory(bundled: dict[str, Path]) -> None:
    import onnxruntime as ort

    from sclzoo.zoo.hub import load_model, resolve_model

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (pip install 'sclzoo[gpu]')")
    gpu = torch.device("cuda", torch.cuda.device_count() - 1)  # the last GPU: not the default one when there are two
    session = onnx_session(bundled["ce"] / "onnx" / "model.onnx", gpu)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == str(gpu.index)
    model = load_model(resolve_model(str(bundled["ce"]))).model.eval().to(gpu)
    x = images(40, h=28, seed=3).to(gpu)
    with torch.no_grad():
        expected = model(x)
    got = onnx_logits(session, x, batch_size=16)  # three chunks, each bound in the GPU's memory
    assert got.device == gpu
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    on_host = onnx_logits(session, x.cpu(), batch_size=16)
    assert on_host.device.type == "cpu"
    torch.testing.assert_close(on_host, expected.cpu(), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_batch_size_counts_the_metrics_buffers(bundled: dict[str, Path]) -> None:
    from sclzoo.zoo.hub import load_model, resolve_model

    model = load_model(resolve_model(str(bundled["ce"]))).model
    x = images(8, h=28, seed=3)
    methods = {"integrated_gradients": {"n_steps": 32, "baseline": 0.0, "method": "gausslegendre",
                                        "internal_batch_size": None}}
    metrics = resolve_specs(build_config(methods=["integrated_gradients"], metrics=[
        "faithfulness_correlation", "max_sensitivity", "infidelity"]))[1]
    gpu = torch.device("cuda", torch.cuda.current_device())
    alone = auto_batch_size(model, x, methods, gpu)
    with_metrics = auto_batch_size(model, x, methods, gpu, metrics=metrics)
    assert 1 <= with_metrics <= alone <= 1024


# --------------------------------------------------------------------------------------------------------------
# --precision
# --------------------------------------------------------------------------------------------------------------

#: bf16 moves no (method, metric) mean on the bundled ResNet-8 by more than this fraction of the metric's fp32
#: per-sample standard deviation (docs/protocol.md#precision; 0.13 measured at most over 16 images, 4 methods,
#: 10 metrics).
BF16_TOLERANCE_SD = 0.2


def test_precision_is_in_the_config_hash_only_when_not_fp32() -> None:
    resolved = {"dataset": "mnist5k", "methods": {"saliency": {"abs": True}}, "metrics": {}}
    fp32 = build_config(methods=["saliency"], metrics=["sparseness"])
    assert "precision" not in fp32.canonical(resolved)  # existing results keep their hash
    assert build_config(methods=["saliency"], metrics=["sparseness"], precision="fp32") == fp32
    hashes = {EvalConfig.hash_of(fp32.replace(precision=p).canonical(resolved)) for p in ("fp32", "bf16", "fp16")}
    assert len(hashes) == 3
    assert fp32.replace(precision="bf16").canonical(resolved)["precision"] == "bf16"


def test_bad_precisions_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="precision 'fp8' is unknown"):
        build_config(precision="fp8")
    with pytest.raises(ConfigError, match="--runtime torch"):
        build_config(precision="bf16", runtime="onnx")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device.*--precision bf16"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        _run(conv_net(), batch_size=2, precision="fp16")


def test_bf16_scores_stay_within_the_stated_tolerance_of_fp32(bundled: dict[str, Path]) -> None:
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.hub import load_model, resolve_model

    model = load_model(resolve_model(str(bundled["ce"]))).model
    data = load_dataset("mnist5k", "test")
    x, y, ids = data.images[:12], data.labels[:12], data.indices[:12]
    cfg = build_config(n_samples=12, methods=["saliency", "gradcam"], batch_size=12,
                       metrics=["faithfulness_correlation", "deletion_auc", "sparseness", "max_sensitivity",
                                "infidelity"],
                       metric_params={"faithfulness_correlation": {"n_draws": 20}, "deletion_auc": {"steps": 8},
                                      "max_sensitivity": {"n_perturbations": 4}, "infidelity": {"n_perturbations": 4}})
    out = {p: run_evaluation(model, x, y, ids, cfg.replace(precision=p), device=torch.device("cpu"), progress=False)
           for p in ("fp32", "bf16")}
    moved = 0.0
    for method, scores in out["fp32"].scores.items():
        for metric, ref in scores.items():
            low = out["bf16"].scores[method][metric]
            assert np.isfinite(low).all(), (method, metric)
            gap = abs(low.mean() - ref.mean())
            assert gap <= BF16_TOLERANCE_SD * ref.std() + 1e-6, (method, metric, gap, ref.std())
            moved = max(moved, float(np.abs(low - ref).max()))
    assert moved > 0  # the bf16 run did compute in bf16
