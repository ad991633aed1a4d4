"""Benchmark: sclzoo's metric suite vs Quantus 0.6.0 vs the model-call floor, on the same model, inputs and maps.

A benchmark, not a test (``make bench``; tests/test_agreement.py checks that the numbers agree). For each model it
times, in one process:

(a) sclzoo: the metrics that have a Quantus equivalent, each through ``compute()`` on one ``MetricContext``, so
    work the registry shares between metrics (clean logits) is shared;
(b) Quantus 0.6.0 on the same metrics with its settings made equal to sclzoo's (same R, K, n, σ, batch size),
    seeded through the global ``np.random`` (it has no seed argument);
(c) the floor: the bare model passes the definitions require, F forwards and E explanations per sample as
    declared by the registry (``metric_cost``), at the fastest forward this machine offers (eager NCHW,
    channels_last or onnxruntime, batch 64/256/1024) and the fastest explanation of the method itself (eager NCHW
    or channels_last, batch 16/64/256); each rate is that of the fastest timed call.

It prints one table per model and writes it, with the settings and the floor measurements, to
``DIR/bench_<model>.json``. First (seconds; ``--skip-cli`` leaves it out, ``--cli-only`` does nothing else) it
times the command line's latency in fresh processes, ``--cli-repeats`` times each: ``sclzoo --help``, ``sclzoo
evaluate --help``, ``sclzoo ls models`` and a second identical ``sclzoo evaluate`` of a tiny config, which returns
the finished result (evaluator/cache.py); that table goes to ``DIR/bench_cli.json``. All timings use ``time.perf_counter`` after one warm-up on two images, with
``torch.set_num_threads(--threads)``. Quantus calls run under a per-metric deadline (``--quantus-timeout``) so the
script cannot hang; the settings keep Quantus' loops bounded (pixel flipping moves D/K pixels per step).

Examples::

    .venv/bin/python bench/bench_metrics.py --out build/bench                  # both models, default sizes
    .venv/bin/python bench/bench_metrics.py --model small --n 4 --floor-batch-sizes 8  # smoke run
    .venv/bin/python bench/bench_metrics.py --cli-only                          # command-line latency only
    .venv/bin/python bench/bench_metrics.py --skip-cli --skip-quantus --metrics max_sensitivity,infidelity --repeats 3
    .venv/bin/python bench/bench_metrics.py --device cuda --batch-size auto --skip-cli   # on a GPU (bench/gpu_check.sh)

On ``--device cuda`` everything runs on the GPU (Quantus gets the same ``device``), every timing waits for the
GPU to finish (``torch.cuda.synchronize``), the floor's forwards are eager and channels_last (onnxruntime only with
onnxruntime-gpu), and ``--batch-size auto`` is sclzoo's own choice for the method and the timed metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from sclzoo.evaluator.runner import OnnxRuntime

REPO = Path(__file__).resolve().parent.parent
SMALL_MODEL_DIR = REPO / "zoo" / "models" / "resnet8_cifar.ce_mnist5k"
DEFAULT_N = {"small": 64, "resnet18": 16}
#: Metrics with a Quantus equivalent, in suite order.
SUITE = (
    "faithfulness_correlation",
    "deletion_auc",
    "sparseness",
    "complexity",
    "effective_complexity",
    "max_sensitivity",
    "infidelity",
    "local_lipschitz_estimate",
)


def _trapezoid_over_k(curve: np.ndarray) -> np.ndarray:
    """Trapezoid area of c_0..c_K on unit steps / K, per row. Quantus' own AUC helper calls np.trapz, removed in
    numpy 2.4, so the bench takes Quantus' curve and integrates it here. (N, K+1) → (N,)."""
    k = curve.shape[1] - 1
    return (curve.sum(axis=1) - 0.5 * (curve[:, 0] + curve[:, -1])) / k


# --------------------------------------------------------------------------------------------------------------
# Settings shared by sclzoo and Quantus
# --------------------------------------------------------------------------------------------------------------


def _steps_dividing(d: int, target: int = 32) -> int:
    """The divisor of D closest to ``target`` (ties: the larger): K with K | D, so Quantus' fixed features_in_step
    = D / K moves exactly sclzoo's ⌊k·D/K⌋ pixels at step k."""
    divisors = [k for k in range(2, d + 1) if d % k == 0]
    return min(divisors, key=lambda k: (abs(k - target), -k))


def suite_params(h: int, w: int) -> dict[str, dict[str, Any]]:
    """sclzoo parameters of each suite metric for H×W images (registry defaults, K made to divide D)."""
    d = h * w
    return {
        "faithfulness_correlation": {"n_draws": 100, "subset_size": max(1, round(d / 16)), "baseline": 0.0},
        "deletion_auc": {"steps": _steps_dividing(d), "baseline": 0.0},
        "sparseness": {},
        "complexity": {},
        "effective_complexity": {"eps": 1e-2},
        "max_sensitivity": {"n_perturbations": 16, "radius": 0.05},
        "infidelity": {"n_perturbations": 16, "sigma": 0.05, "normalize": False},
        "local_lipschitz_estimate": {"n_perturbations": 16, "sigma": 0.025},
    }


def quantus_metric(name: str, p: dict[str, Any], h: int, w: int) -> tuple[Any, dict[str, Any]]:
    """The Quantus 0.6.0 metric equal to sclzoo's ``name`` with parameters ``p``, and its extra call kwargs.

    The Quantus traps handled here (docs/protocol.md#reference-implementations): per-sample
    max-normalisation (``normalise_axes``), a numeric baseline 0 (Quantus' "black" is the sample minimum),
    ``return_aggregate=False`` (per-sample scores), softmax only where sclzoo uses p_y.
    """
    import quantus
    from quantus.functions.perturb_func import batch_gaussian_noise
    from quantus.functions.similarity_func import correlation_pearson

    per_sample: dict[str, Any] = {"normalise_axes": (1, 2, 3)}
    common: dict[str, Any] = {"return_aggregate": False, "disable_warnings": True, "display_progressbar": False}
    if name == "faithfulness_correlation":
        return quantus.FaithfulnessCorrelation(
            nr_runs=p["n_draws"],
            subset_size=p["subset_size"],
            perturb_baseline=p["baseline"],
            similarity_func=correlation_pearson,
            abs=False,
            normalise=False,
            **common,
        ), {"softmax": False}
    if name == "deletion_auc":
        return quantus.PixelFlipping(
            features_in_step=h * w // p["steps"],
            perturb_baseline=p["baseline"],
            abs=False,
            normalise=False,
            return_auc_per_sample=False,  # the curve; its AUC helper needs np.trapz (gone in numpy 2.4)
            **common,
        ), {"softmax": True}
    if name in ("sparseness", "complexity", "effective_complexity"):
        cls = {
            "sparseness": quantus.Sparseness,
            "complexity": quantus.Complexity,
            "effective_complexity": quantus.EffectiveComplexity,
        }[name]
        extra = {"eps": p["eps"]} if name == "effective_complexity" else {}
        return cls(abs=True, normalise=True, normalise_func_kwargs=per_sample, **extra, **common), {}
    if name == "max_sensitivity":
        return quantus.MaxSensitivity(
            nr_samples=p["n_perturbations"],
            lower_bound=p["radius"],  # U(−r, r) element-wise
            abs=False,
            normalise=False,
            return_nan_when_prediction_changes=False,
            **common,
        ), {"explain": True}
    if name == "infidelity":
        if h != w:
            raise SystemExit(f"infidelity: the Quantus equivalent needs square images, got {h}×{w}")
        # One patch covering the image with element-wise Gaussian noise: the captum/sclzoo estimator
        # (docs/protocol.md#infidelity)
        # (mean_j (Iᵀa − Δ_j)² with I ~ N(0, σ²)) instead of Quantus' default patch-wise baseline replacement.
        return quantus.Infidelity(
            n_perturb_samples=p["n_perturbations"],
            perturb_patch_sizes=[h],
            perturb_func=batch_gaussian_noise,
            perturb_func_kwargs={"perturb_mean": 0.0, "perturb_std": p["sigma"]},
            loss_func="mse",
            abs=False,
            normalise=False,
            **common,
        ), {"softmax": False}
    if name == "local_lipschitz_estimate":
        return quantus.LocalLipschitzEstimate(
            nr_samples=p["n_perturbations"],
            perturb_mean=0.0,
            perturb_std=p["sigma"],
            abs=False,
            normalise=True,
            normalise_func_kwargs=per_sample,
            return_nan_when_prediction_changes=False,
            **common,
        ), {"explain": True}
    raise KeyError(name)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raises TimeoutError in the block after ``seconds`` (SIGALRM; main thread on POSIX; no-op otherwise)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise TimeoutError(f"exceeded {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


#: Waits for the device before and after a timed call (``torch.cuda.synchronize`` under ``--device cuda``).
SYNC: list[Callable[[], None]] = [lambda: None]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    SYNC[0]()
    t0 = time.perf_counter()
    out = fn()
    SYNC[0]()
    return time.perf_counter() - t0, out


def best_rate(fn: Callable[[], Any], images: int, min_time: float) -> float:
    """Images per second of ``fn``'s fastest call (one call = ``images`` images): one warm-up, then ≥ 3 calls
    and ≥ min_time. The fastest call, not the mean, so a noisy neighbour makes the floor lower, never higher."""
    fn()
    reps, total, best = 0, 0.0, math.inf
    while reps < 3 or total < min_time:
        dt, _ = timed(fn)
        total += dt
        best = min(best, dt)
        reps += 1
    return images / best


def _mean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


# --------------------------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------------------------


def load_bench_model(which: str, seed: int) -> tuple[nn.Module, str]:
    import timm

    import sclzoo

    if which == "small":
        return sclzoo.load_model(str(SMALL_MODEL_DIR)).model.eval(), SMALL_MODEL_DIR.name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = timm.create_model("resnet18_cifar", in_chans=1, num_classes=10)
    return net.eval(), "resnet18_cifar (seeded random init, 1×28×28)"


# --------------------------------------------------------------------------------------------------------------
# (c) the floor
# --------------------------------------------------------------------------------------------------------------


def measure_floor(
    model: nn.Module,
    x: Tensor,
    method: str,
    batch_sizes: list[int],
    explain_batch_sizes: list[int],
    threads: int,
    min_time: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Fastest forward throughput over runtimes × batch sizes, and the method's fastest explanation rate, on x's
    device (onnxruntime on a GPU only with its CUDA provider)."""
    import onnxruntime as ort

    from sclzoo.evaluator.attributions import attribute

    on_gpu = x.device.type == "cuda"
    ort_gpu = on_gpu and "CUDAExecutionProvider" in ort.get_available_providers()

    def tile(b: int) -> Tensor:
        reps = -(-b // x.shape[0])
        return x.repeat(reps, 1, 1, 1)[:b].contiguous()

    with torch.no_grad():
        target_all = model(tile(max(batch_sizes + explain_batch_sizes))).argmax(dim=1)
    forward: list[dict[str, Any]] = []
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (tile(2),),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        if ort_gpu:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": str(x.device.index or 0)}))
        session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        runtimes = ["eager_nchw", "channels_last"] + (["onnxruntime"] if ort_gpu or not on_gpu else [])
        for b in batch_sizes:
            xb = tile(b)
            xb_cl = xb.contiguous(memory_format=torch.channels_last)
            xb_np = xb.cpu().numpy()

            def eager(xb: Tensor = xb) -> Any:
                with torch.inference_mode():
                    return model(xb)

            def channels_last(xb_cl: Tensor = xb_cl) -> Any:
                with torch.inference_mode():
                    return model_cl(xb_cl)

            def onnx(xb_np: np.ndarray = xb_np) -> Any:
                return session.run(None, {"x": xb_np})

            fns: dict[str, Callable[[], Any]] = {"eager_nchw": eager, "channels_last": channels_last,
                                                 "onnxruntime": onnx}
            for runtime in runtimes:
                fn = fns[runtime]
                rate = best_rate(fn, b, min_time)
                forward.append({"runtime": runtime, "batch_size": b, "images_per_s": rate})
                log(f"  floor forward  {runtime:<14} batch {b:>5}: {rate:10.1f} img/s")
    explain: list[dict[str, Any]] = []
    for b in explain_batch_sizes:
        xb, yb = tile(b), target_all[:b]
        xb_cl = xb.contiguous(memory_format=torch.channels_last)
        for runtime, net, inputs in (("eager_nchw", model, xb), ("channels_last", model_cl, xb_cl)):
            rate = best_rate(functools.partial(attribute, method, net, inputs, yb), b, min_time)
            explain.append({"runtime": runtime, "batch_size": b, "images_per_s": rate})
            log(f"  floor explain  {method:<14} {runtime:<14} batch {b:>5}: {rate:10.1f} img/s")
    best_f = max(forward, key=lambda r: r["images_per_s"])
    best_e = max(explain, key=lambda r: r["images_per_s"])
    return {
        "forward": forward,
        "explain": explain,
        "best_forward": best_f,
        "best_explain": best_e,
        "seconds_per_forward": 1.0 / best_f["images_per_s"],
        "seconds_per_explanation": 1.0 / best_e["images_per_s"],
    }


# --------------------------------------------------------------------------------------------------------------
# (a) sclzoo and (b) Quantus
# --------------------------------------------------------------------------------------------------------------


def run_sclzoo(
    model: nn.Module, x: Tensor, target: Tensor, a: Tensor, method: str, params: dict[str, dict[str, Any]],
    batch_size: int, seed: int, runtime: OnnxRuntime | None = None, metrics: tuple[str, ...] = SUITE,
    repeats: int = 1,
) -> dict[str, tuple[float, np.ndarray]]:
    """Each of ``metrics`` through compute() on one MetricContext (shared cache), timed one by one.

    ``runtime`` is sclzoo's ``--runtime onnx`` set-up (onnxruntime forwards, channels_last explanations on a CPU);
    ``None`` = ``--runtime torch``. With ``repeats`` > 1 the metrics run that many times, each time on a fresh
    context (nothing cached from the previous round), and each metric's time is its fastest round.
    """
    from sclzoo.evaluator.attributions import attribute
    from sclzoo.evaluator.metrics import MetricContext, compute

    if runtime is not None:
        model = runtime.model

    def explain(xs: Tensor, ys: Tensor, ids: Tensor) -> Tensor:
        return attribute(method, model, xs, ys, sample_ids=ids, seed=seed)

    out: dict[str, tuple[float, np.ndarray]] = {}
    for _ in range(max(1, repeats)):
        ctx = MetricContext(
            model=model,
            x=x,
            target=target,
            attributions=a,
            explain=explain,
            sample_ids=torch.arange(x.shape[0], device=x.device),
            seed=seed,
            batch_size=batch_size,
            forward=runtime.forward if runtime else None,
            forward_threads=runtime.forward_threads if runtime else None,
        )
        for name in metrics:
            dt, scores = timed(functools.partial(compute, name, ctx, **params[name]))
            if name not in out or dt < out[name][0]:
                out[name] = (dt, scores.numpy())
    return out


def run_quantus(
    model: nn.Module, x: Tensor, target: Tensor, a: Tensor, method: str, params: dict[str, dict[str, Any]],
    batch_size: int, seed: int, timeout: float | None, log: Callable[[str], None], metrics: tuple[str, ...] = SUITE,
) -> dict[str, tuple[float | None, np.ndarray | None]]:
    """Each of ``metrics`` with Quantus 0.6.0 on the same inputs and maps; None where it failed or timed out."""
    from sclzoo.evaluator.attributions import attribute

    dev = x.device

    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        xs = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(dev)
        ys = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(dev)
        return attribute(method, model, xs, ys, seed=seed).cpu().numpy()

    _, _, h, w = x.shape
    x_np, y_np, a_np = x.cpu().numpy(), target.cpu().numpy(), a.cpu().numpy()
    out: dict[str, tuple[float | None, np.ndarray | None]] = {}
    for name in metrics:
        metric, extra = quantus_metric(name, params[name], h, w)
        kwargs: dict[str, Any] = {"softmax": extra["softmax"]} if "softmax" in extra else {}
        if extra.get("explain"):
            kwargs["explain_func"] = explain_func
        np.random.seed(seed)  # Quantus draws from the global np.random and has no seed argument
        try:
            with deadline(timeout):
                dt, res = timed(
                    functools.partial(
                        metric,
                        model=model,
                        x_batch=x_np,
                        y_batch=y_np,
                        a_batch=a_np,
                        channel_first=True,
                        batch_size=batch_size,
                        device=str(dev),
                        **kwargs,
                    )
                )
        except Exception as exc:  # a reference failing must not stop the benchmark; it is recorded
            log(f"  quantus {name}: {type(exc).__name__}: {exc}")
            out[name] = (None, None)
            continue
        scores = np.asarray(res, dtype=np.float64)
        if name == "deletion_auc":
            # Quantus' (N, K) curve c_1..c_K → sclzoo's trapezoid over c_0..c_K / K; c_0 is computed untimed.
            with torch.no_grad():
                c0 = model(x).double().softmax(dim=1).gather(1, target[:, None])[:, 0].cpu().numpy()
            curve = np.concatenate([c0[:, None], scores], axis=1)
            scores = _trapezoid_over_k(curve)
        out[name] = (dt, scores)
    return out


# --------------------------------------------------------------------------------------------------------------
# Command-line latency
# --------------------------------------------------------------------------------------------------------------

#: A tiny evaluation (two images, one method, one metric) whose second run returns the finished result.
CLI_TINY = ("--n-samples", "2", "--methods", "saliency", "--metrics", "sparseness", "--batch-size", "2",
            "--device", "cpu", "--quiet")


def sclzoo_command() -> list[str]:
    """The ``sclzoo`` script installed beside this interpreter, else ``python -m sclzoo``."""
    script = Path(sys.executable).with_name("sclzoo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sclzoo"]


def time_command(cmd: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``cmd`` (output discarded); a failing command stops the bench."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {res.returncode}): {res.stderr[-2000:]}")
    return times


def bench_cli(repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Wall times of the command line, each command in a fresh process (imports included)."""
    base = sclzoo_command()
    model = SMALL_MODEL_DIR.relative_to(REPO).as_posix()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sclzoo-bench-cli-") as tmp:
        evaluate = [*base, "evaluate", "--model", str(SMALL_MODEL_DIR), *CLI_TINY, "--out", str(Path(tmp) / "r")]
        log("== command line: a tiny evaluation to reuse, then each command in fresh processes")
        (first,) = time_command(evaluate, 1)
        for name, cmd in (("sclzoo --help", [*base, "--help"]),
                          ("sclzoo evaluate --help", [*base, "evaluate", "--help"]),
                          ("sclzoo ls models", [*base, "ls", "models"]),
                          ("sclzoo evaluate (finished result)", evaluate)):
            times = time_command(cmd, repeats)
            rows.append({"command": name, "min_s": min(times), "median_s": statistics.median(times),
                         "max_s": max(times), "repeats": repeats})
    return {"sclzoo": "python -m sclzoo" if base[0] == sys.executable else "sclzoo",
            "tiny_evaluate": f"sclzoo evaluate --model {model} {' '.join(CLI_TINY)} --out DIR",
            "first_evaluate_s": first, "commands": rows}


def format_cli_table(result: dict[str, Any]) -> str:
    head = f"{'command (fresh process)':<36}{'min s':>8}{'median s':>10}{'max s':>8}"
    lines = [f"command line: {result['commands'][0]['repeats']} runs each; the finished result is that of "
             f"`{result['tiny_evaluate']}` (first run {result['first_evaluate_s']:.2f} s)", head, "-" * len(head)]
    for r in result["commands"]:
        lines.append(f"{r['command']:<36}{r['min_s']:>8.3f}{r['median_s']:>10.3f}{r['max_s']:>8.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------------------------


def bench_model(which: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from sclzoo.evaluator.attributions import attribute
    from sclzoo.evaluator.metrics import metric_cost
    from sclzoo.zoo.data import load_dataset

    device = torch.device(args.device)
    model, model_desc = load_bench_model(which, args.seed)
    model = model.to(device)
    n = args.n or DEFAULT_N[which]
    x = load_dataset("mnist5k", "test").images[:n].contiguous()
    if x.shape[0] < n:
        raise SystemExit(f"mnist5k test has only {x.shape[0]} images; lower --n")
    x = x.to(device)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    _, c, h, w = x.shape
    params = suite_params(h, w)
    chosen: tuple[str, ...] = tuple(args.metrics)
    batch_size = bench_batch_size(args.batch_size, model, x, args.method, {m: params[m] for m in chosen}, args.seed)
    log(f"== {which}: {model_desc}, N={n}, method={args.method}, {device_label(device)}, batch {batch_size}"
        f"{' (auto)' if args.batch_size == 'auto' else ''}, {torch.get_num_threads()} threads")

    # One warm-up of each implementation on two images (allocators, lazy imports, oneDNN kernels).
    xw, yw = x[:2], target[:2]
    aw = attribute(args.method, model, xw, yw, seed=args.seed)
    runtime = None
    sclzoo_runtime = args.sclzoo_runtime
    if sclzoo_runtime == "onnx" and device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            log("  onnxruntime has no CUDA provider (pip install 'sclzoo[gpu]'): sclzoo runs --runtime torch")
            sclzoo_runtime = "torch"
    if sclzoo_runtime == "onnx":  # exactly what `sclzoo evaluate --runtime onnx` sets up
        from sclzoo.evaluator.runner import onnx_runtime
        from sclzoo.zoo.onnx_export import export_onnx

        onnx_dir = Path(tempfile.mkdtemp(prefix="sclzoo-bench-"))
        export_onnx(copy.deepcopy(model).cpu(), onnx_dir / "model.onnx", tuple(x.shape[1:]))  # type: ignore[arg-type]
        runtime = onnx_runtime(onnx_dir / "model.onnx", model, device, threads=args.threads, batch_size=batch_size)
    run_sclzoo(model, xw, yw, aw, args.method, params, batch_size, args.seed, runtime, chosen)
    if not args.skip_quantus:
        run_quantus(model, xw, yw, aw, args.method, params, batch_size, args.seed, args.quantus_timeout,
                    log, chosen)

    t_maps, a = timed(lambda: attribute(args.method, model, x, target, sample_ids=torch.arange(n), seed=args.seed))
    log(f"  maps ({args.method}) for {n} images: {t_maps:.3f} s")
    ours = run_sclzoo(model, x, target, a, args.method, params, batch_size, args.seed, runtime, chosen,
                      args.repeats)
    log("  sclzoo: " + ", ".join(f"{k} {v[0]:.2f}s" for k, v in ours.items()))
    ref: dict[str, tuple[float | None, np.ndarray | None]] = {name: (None, None) for name in chosen}
    if not args.skip_quantus:
        ref = run_quantus(model, x, target, a, args.method, params, batch_size, args.seed,
                          args.quantus_timeout, log, chosen)
        log("  quantus: " + ", ".join(f"{k} {v[0]:.2f}s" if v[0] is not None else f"{k} —" for k, v in ref.items()))
    floor = measure_floor(model, x, args.method, args.floor_batch_sizes, args.floor_explain_batch_sizes, args.threads,
                          args.min_time, log)

    rows = []
    for name in chosen:
        f_per, e_per = metric_cost(name, **params[name])
        t_floor = n * (f_per * floor["seconds_per_forward"] + e_per * floor["seconds_per_explanation"])
        t_s, s_scores = ours[name]
        t_q, q_scores = ref[name]
        rows.append({
            "metric": name,
            "params": params[name],
            "forwards_per_sample": f_per,
            "explanations_per_sample": e_per,
            "time_sclzoo_s": t_s,
            "time_quantus_s": t_q,
            "time_floor_s": t_floor,
            "ratio_sclzoo_over_floor": t_s / t_floor if t_floor > 0 else None,
            "ratio_quantus_over_sclzoo": t_q / t_s if t_q is not None and t_s > 0 else None,
            "mean_score_sclzoo": _mean(s_scores),
            "mean_score_quantus": _mean(q_scores) if q_scores is not None else None,
        })
    t_s = sum(r["time_sclzoo_s"] for r in rows)
    t_f = sum(r["time_floor_s"] for r in rows)
    q_times = [r["time_quantus_s"] for r in rows]
    t_q = sum(q_times) if all(t is not None for t in q_times) else None
    suite = {
        "metric": "suite",
        "forwards_per_sample": sum(r["forwards_per_sample"] for r in rows),
        "explanations_per_sample": sum(r["explanations_per_sample"] for r in rows),
        "time_sclzoo_s": t_s,
        "time_quantus_s": t_q,
        "time_floor_s": t_f,
        "ratio_sclzoo_over_floor": t_s / t_f if t_f > 0 else None,
        "ratio_quantus_over_sclzoo": t_q / t_s if t_q is not None else None,
    }
    return {
        "model": which,
        "model_description": model_desc,
        "n_images": n,
        "device": device_label(device),
        "sclzoo_runtime": sclzoo_runtime,
        "image_shape": [c, h, w],
        "method": args.method,
        "seed": args.seed,
        "batch_size": batch_size,
        "batch_size_auto": args.batch_size == "auto",
        "sclzoo_repeats": args.repeats,
        "time_maps_s": t_maps,
        "metrics": rows,
        "suite": suite,
        "floor": floor,
    }


def format_table(result: dict[str, Any]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    head = (f"{'metric':<26}{'F/smp':>6}{'E/smp':>6}{'sclzoo s':>11}{'Quantus s':>11}{'floor s':>10}"
            f"{'sclzoo/floor':>14}{'Quantus/sclzoo':>16}")
    lines = [
        f"{result['model']}: {result['model_description']} — N={result['n_images']}, method={result['method']}, "
        f"{result['device']}, batch {result['batch_size']}{' (auto)' if result['batch_size_auto'] else ''}, "
        f"maps {result['time_maps_s']:.3f} s (not in the suite)",
        head,
        "-" * len(head),
    ]
    for r in [*result["metrics"], result["suite"]]:
        if r["metric"] == "suite":
            lines.append("-" * len(head))
        lines.append(
            f"{r['metric']:<26}{r['forwards_per_sample']:>6}{r['explanations_per_sample']:>6}"
            f"{num(r['time_sclzoo_s'], '.3f'):>11}{num(r['time_quantus_s'], '.3f'):>11}"
            f"{num(r['time_floor_s'], '.3f'):>10}{num(r['ratio_sclzoo_over_floor'], '.2f'):>14}"
            f"{num(r['ratio_quantus_over_sclzoo'], '.1f'):>16}"
        )
    best_f, best_e = result["floor"]["best_forward"], result["floor"]["best_explain"]
    lines.append(
        f"floor: forward {best_f['images_per_s']:.0f} img/s ({best_f['runtime']}, batch {best_f['batch_size']}); "
        f"explanation {best_e['images_per_s']:.0f} img/s ({best_e['runtime']}, batch {best_e['batch_size']})"
    )
    return "\n".join(lines)


def device_label(device: torch.device) -> str:
    """``cpu``, or ``cuda:K (<GPU name>)``."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _batch_size_arg(value: str) -> int | str:
    if value == "auto":
        return value
    b = int(value)
    if b < 1:
        raise argparse.ArgumentTypeError(f"a batch size is a positive int or auto, got {value}")
    return b


def bench_batch_size(requested: int | str, model: nn.Module, x: Tensor, method: str,
                     params: dict[str, dict[str, Any]], seed: int) -> int:
    """``requested``, or for ``auto`` what ``sclzoo evaluate --batch-size auto`` picks on x's device for the method
    and the timed metrics (the CPU default on a CPU)."""
    if requested != "auto":
        return int(requested)
    from sclzoo.evaluator.config import build_config
    from sclzoo.evaluator.runner import auto_batch_size, resolve_specs

    methods, metrics = resolve_specs(build_config(methods=[method], metrics=list(params), metric_params=params))
    return auto_batch_size(model, x, methods, x.device, metrics=metrics, seed=seed)


def _environment(threads: int, device: torch.device) -> dict[str, Any]:
    import onnxruntime

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": threads,
        "device": device_label(device),
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }
    try:
        import quantus

        env["quantus"] = quantus.__version__
    except Exception as exc:  # recorded, the sclzoo and floor columns still make sense
        env["quantus"] = f"unavailable: {exc}"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["small", "resnet18", "all"], default="all")
    parser.add_argument("--n", type=int, default=None, help="images (default 64 for small, 16 for resnet18)")
    parser.add_argument("--method", default="saliency", help="attribution method (default saliency)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench", help="folder for bench_<model>.json")
    parser.add_argument("--batch-size", type=_batch_size_arg, default=64,
                        help="sclzoo and Quantus batch size, or auto (sclzoo's --batch-size auto; default 64)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda[:K]: where the model, the maps, sclzoo, Quantus and the floor run")
    parser.add_argument("--floor-batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[64, 256, 1024], help="floor batch sizes, comma-separated (default 64,256,1024)")
    parser.add_argument("--floor-explain-batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[16, 64, 256],
                        help="floor explanation batch sizes (default 16,64,256; explanation throughput falls with "
                             "larger batches on a CPU: 1,850 → 990 img/s from 64 to 1024 for the small model)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per floor configuration (default 0.5)")
    parser.add_argument("--quantus-timeout", type=float, default=1800.0,
                        help="seconds per Quantus metric before it is recorded as timed out (default 1800)")
    parser.add_argument("--sclzoo-runtime", choices=["onnx", "torch"], default="onnx",
                        help="forward-only runtime of sclzoo's perturbation metrics: onnx (default; `sclzoo "
                             "evaluate --runtime onnx`) or torch (`--runtime torch`)")
    parser.add_argument("--metrics", type=lambda s: [v.strip() for v in s.split(",") if v.strip()],
                        default=list(SUITE), help=f"suite metrics to time, comma-separated (default all: {','.join(SUITE)})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the sclzoo metrics, each on a fresh context; a metric's time is its fastest "
                             "round (default 1; more on a busy machine)")
    parser.add_argument("--skip-quantus", action="store_true", help="time sclzoo and the floor only")
    parser.add_argument("--skip-cli", action="store_true", help="leave out the command-line latency table")
    parser.add_argument("--cli-only", action="store_true", help="time the command line only (seconds)")
    parser.add_argument("--cli-repeats", type=int, default=5, help="runs of each command (default 5)")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be positive, got {args.n}")
    unknown = [m for m in args.metrics if m not in SUITE]
    if unknown or not args.metrics:
        parser.error(f"--metrics {','.join(unknown) or '(none)'}: choose from {','.join(SUITE)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be positive, got {args.repeats}")

    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device here")
        SYNC[0] = torch.cuda.synchronize
    import sclzoo  # noqa: F401  (registers the zoo architectures in timm)
    from sclzoo.evaluator.attributions import METHODS

    METHODS.get(args.method)  # fails early, with the registry's "did you mean", on an unknown method

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    env = _environment(args.threads, torch.device(args.device))
    if not args.skip_cli or args.cli_only:
        cli = {**bench_cli(max(1, args.cli_repeats), log), "environment": env}
        print(format_cli_table(cli), flush=True)
        path = args.out / "bench_cli.json"
        path.write_text(json.dumps(cli, indent=2, allow_nan=False) + "\n")
        print(f"wrote {path}\n", flush=True)
        if args.cli_only:
            return 0
    models = ["small", "resnet18"] if args.model == "all" else [args.model]
    for which in models:
        result = bench_model(which, args, log)
        result["environment"] = env
        print(format_table(result), flush=True)
        path = args.out / f"bench_{which}.json"
        path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {path}\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
