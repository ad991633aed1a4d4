"""The evaluation runner: model + images + config → per-sample scores. It computes and does no I/O.

For each batch of images the runner explains the target logit once per method, then hands the same
attributions to every metric through one :class:`~sclzoo.evaluator.metrics.MetricContext` per (method, batch), so
work shared between metrics (clean logits, sensitivity draws, pixel orderings) is done once, and work shared by the
whole run (the randomised model of ``mprt_last``) once per run. A batch's scores stay on the device until the
batch is done and then come to the host in one copy; nothing inside a batch waits for the device.

A batch is also the unit of checkpointing and of scale-out: the caller gets every finished batch through
``on_batch`` (to save it), can hand finished batches back through ``done_batches`` (to resume), and can ask for one
shard of the batches (one process of ``torchrun``). Batches always hold the same images (positions
``[k·B, (k+1)·B)``) whatever the shard, so a resumed or sharded run computes every score bit for bit as an
uninterrupted single-process run does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.evaluator.attributions import METHODS, attribute, method_passes
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute_on_device, metric_cost
from sclzoo.evaluator.seeding import stable_seed
from sclzoo.registry import check_params
from sclzoo.vocab import SELECTIONS

#: Cost of one gradient pass (forward + backward) in forward passes, for progress and time estimates.
GRADIENT_COST = 3

__all__ = ["Autocast", "check_precision", "with_precision", "auto_batch_size", "choose_batch_size", "BatchResult", "EvalOutput", "resolve_specs", "call_params", "run_evaluation", "estimate_cost", "batch_starts",
           "shard_batches", "merge_batches", "select_samples", "SELECTIONS"]



@dataclass
class BatchResult:
    """What one batch of images scored: the unit the runner checkpoints and shards.

    Attributes:
        start: Position of the batch's first image among the evaluated images (a multiple of the batch size).
        scores: ``{method: {metric: float64 array (B,)}}`` with NaN kept.
        maps: ``{method: float32 array (K, H, W)}`` pixel maps of the batch's images that are among the first
            ``n_example_maps`` evaluated images (absent when there are none).
    """

    start: int
    scores: dict[str, dict[str, np.ndarray]]
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(next(iter(next(iter(self.scores.values())).values())))


@dataclass
class EvalOutput:
    """What an evaluation computed.

    Attributes:
        sample_ids: (N,) dataset indices of the evaluated images.
        labels: (N,) true labels.
        predictions: (N,) predicted classes.
        targets: (N,) explained classes.
        scores: ``{method: {metric: float64 array (N,)}}`` with NaN kept.
        accuracy: Accuracy of the model on the whole split (``value``, ``n``).
        example_maps: ``{method: (K, H, W) float32}`` pixel maps of the first K images (for plots).
        timings: Seconds per method (attribution) and per (method, metric).
        batches: Every batch known to this process (computed here or handed in as done), by start position.
        missing: Start positions of batches not scored here (other shards of a sharded run); their rows of
            ``scores`` are NaN until :func:`merge_batches` adds them. Empty for a complete output.
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]
    accuracy: dict[str, Any]
    example_maps: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    batches: dict[int, BatchResult] = field(default_factory=dict)
    missing: tuple[int, ...] = ()


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Start positions of the batches of ``n`` images: 0, B, 2B, …"""
    return list(range(0, n, batch_size))


def shard_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The batches process ``rank`` of ``world_size`` computes: every ``world_size``-th, from ``rank``.

    Whole batches (not single images) are dealt out, so each batch holds the same images as in a
    single-process run and its scores are bit-identical (a sample's score is independent of its batch in value,
    but not always in the last bits of float arithmetic).
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside world size {world_size}")
    return batch_starts(n, batch_size)[rank::world_size]


def select_samples(labels: Tensor, n: int, selection: str, seed: int) -> Tensor:
    """Positions of the ``n`` evaluated images in a split.

    Args:
        labels: (M,) labels of the split.
        n: How many images.
        selection: ``first`` (positions 0…n−1) or ``stratified`` (a seeded subset with the same number of images
            per class, remainder to the first classes; positions ascending).
        seed: Global seed of the run (the subset is a stable function of it).

    Returns:
        (n,) long positions, ascending.
    """
    if selection == "first":
        return torch.arange(n)
    if selection == "stratified":
        from sclzoo.zoo.data import stratified_split

        _, chosen = stratified_split(labels.numpy(), n, stable_seed(seed, "selection", 0))
        return torch.from_numpy(chosen).long()
    raise ConfigError(f"selection {selection!r} is unknown; use one of {', '.join(SELECTIONS)}")


def _assemble(n: int, batch_size: int, methods: list[str], metrics: list[str], batches: dict[int, BatchResult],
              n_example_maps: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], tuple[int, ...]]:
    """Per-sample score arrays (NaN rows for missing batches), example maps, and the missing batch starts."""
    scores = {m: {k: np.full(n, np.nan, dtype=np.float64) for k in metrics} for m in methods}
    missing = tuple(s for s in batch_starts(n, batch_size) if s not in batches)
    for start, b in batches.items():
        for m in methods:
            for k in metrics:
                scores[m][k][start : start + b.size] = b.scores[m][k]
    maps: dict[str, np.ndarray] = {}
    map_starts = [s for s in batch_starts(n, batch_size) if s < n_example_maps]
    if map_starts and not any(s in missing for s in map_starts):
        for m in methods:
            parts = [batches[s].maps[m] for s in map_starts if m in batches[s].maps]
            if parts:
                maps[m] = np.concatenate(parts)
    return scores, maps, missing


def merge_batches(output: EvalOutput, batches: dict[int, BatchResult], batch_size: int,
                  n_example_maps: int = 8) -> EvalOutput:
    """``output`` with more batches added (the other shards of a sharded run) and its scores re-assembled."""
    merged = {**output.batches, **batches}
    methods = list(output.scores)
    metrics = list(next(iter(output.scores.values()))) if methods else []
    scores, maps, missing = _assemble(len(output.sample_ids), batch_size, methods, metrics, merged, n_example_maps)
    return replace(output, scores=scores, example_maps=maps, batches=dict(sorted(merged.items())),
                   missing=missing)


def resolve_specs(cfg: EvalConfig) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Full parameters of every selected method and metric (defaults + overrides), validated.

    Metrics carry their ``version``; a method carries its ``version`` only when it is above 1 (so the config hashes
    of methods that never changed stay put). :func:`call_params` drops it before a call.

    Raises:
        UnknownNameError: an unknown method or metric (with "did you mean").
        ConfigError: an override names an unselected method/metric or an unknown parameter.
    """
    for kind, params, selected in (("method", cfg.method_params, cfg.methods),
                                   ("metric", cfg.metric_params, cfg.metrics)):
        stray = sorted(set(params) - set(selected))
        if stray:
            raise ConfigError(f"{kind}_params given for {stray}, which are not among the selected {kind}s "
                              f"{list(selected)}; add them to --{kind}s or drop the parameters")
    methods: dict[str, dict[str, Any]] = {}
    for m in cfg.methods:
        spec = METHODS.get(m)
        over = cfg.method_params.get(m, {})
        check_params("attribution method", m, over, spec.defaults)
        params = {k: v for k, v in {**spec.defaults, **over}.items()
                  if k not in spec.inputs and not (k in spec.optional and v is None)}
        methods[m] = {"version": spec.version, **params} if spec.version > 1 else params
    metrics: dict[str, dict[str, Any]] = {}
    for name in cfg.metrics:
        spec_m = METRICS.get(name)
        over = cfg.metric_params.get(name, {})
        metric_cost(name, **over)  # validates parameter names
        metrics[name] = {"version": spec_m.version, **spec_m.defaults, **over}
    return methods, metrics


def call_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A method's or metric's resolved parameters (:func:`resolve_specs`) without the recorded ``version``: what
    :func:`~sclzoo.evaluator.attributions.attribute` or :func:`~sclzoo.evaluator.metrics.compute` takes."""
    return {k: v for k, v in params.items() if k != "version"}


def estimate_cost(cfg: EvalConfig) -> dict[str, Any]:
    """Forward passes (F) and explanations (E) the run needs, from the metric registry's cost model."""
    _, metrics = resolve_specs(cfg)
    per_sample_f = per_sample_e = 0
    rows = []
    for name, params in metrics.items():
        p = {k: v for k, v in params.items() if k != "version"}
        f, e = metric_cost(name, **p)
        rows.append({"metric": name, "forwards_per_sample": f, "explanations_per_sample": e})
        per_sample_f += f
        per_sample_e += e
    n_methods = len(cfg.methods)
    return {
        "metrics": rows,
        "forwards": per_sample_f * n_methods * cfg.n_samples,
        "explanations": (per_sample_e + 1) * n_methods * cfg.n_samples,
    }


class Autocast(nn.Module):
    """``model`` run under ``torch.autocast(device_type, dtype)``, returning float32 logits: the model that
    ``--precision bf16|fp16`` explains and scores (docs/protocol.md#precision).

    Inputs stay float32, so input gradients (and every sum an attribution method takes over them) are float32;
    the layers themselves compute in ``dtype`` where autocast says so.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, device_type: str) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.device_type = device_type

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x)
        return out.float()


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of ``--precision`` on ``device`` (None for fp32).

    Raises:
        ConfigError: an unknown precision, or fp16 on a device other than CUDA.
    """
    if precision == "fp32":
        return None
    if precision not in _AUTOCAST_DTYPES:
        raise ConfigError(f"precision {precision!r} is unknown; use fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"--precision fp16 needs a CUDA device, but this run is on {device.type}: float16 "
                          "autocast is a GPU feature (slow and partial on a CPU); use --precision bf16 or fp32 "
                          "here, or --device cuda")
    return _AUTOCAST_DTYPES[precision]


def with_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` for ``--precision`` on ``device``: itself for fp32, else :class:`Autocast` (errors as
    :func:`check_precision`)."""
    dtype = check_precision(precision, device)
    return model if dtype is None else Autocast(model, dtype, device.type).eval()


def choose_batch_size(bytes_per_image: float, free_bytes: float, cap: int = 1024, fraction: float = 0.6) -> int:
    """Largest power of two ≤ ``cap`` whose images fit ``fraction`` of ``free_bytes`` at ``bytes_per_image`` each."""
    if bytes_per_image <= 0:
        return cap
    b = max(1, min(cap, int(fraction * free_bytes / bytes_per_image)))
    return 1 << (b.bit_length() - 1)


def _method_inputs(method: str, available: dict[str, Tensor | None], device: torch.device
                   ) -> dict[str, Tensor] | None:
    """The data inputs method ``method`` declares (:attr:`MethodSpec.inputs`), on ``device``; None if one is
    missing (the method then fails with its own message when it runs)."""
    out = {}
    for name in METHODS.get(method).inputs:
        value = available.get(name)
        if value is None:
            return None
        out[name] = value.to(device)
    return out


def auto_batch_size(model: nn.Module, images: Tensor, methods: dict[str, dict[str, Any]], device: torch.device,
                    *, cpu_default: int = 64, cap: int = 1024, baseline_pool: Tensor | None = None,
                    metrics: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                    masks: Tensor | None = None, precision: str = "fp32") -> int:
    """The ``--batch-size auto`` choice for ``device`` (call it on the device the run will use: under torchrun,
    after the process group is up, on the process's own GPU).

    On CPU: ``cpu_default`` (larger batches are no faster on a CPU; measured in README.md, "Speed"). On CUDA:
    explains a probe batch of up to 8 images with every selected method (``expected_gradients`` with
    ``baseline_pool``) and scores it with every selected metric (``metrics``, resolved parameters; their
    perturbation stacks, draws and re-explanations run in chunks of the probe's size, as they run in chunks of the
    batch size in a run), measures the peak memory per image and picks :func:`choose_batch_size` of the free memory.
    The probe runs at the run's ``precision``.
    """
    if device.type != "cuda":
        return cpu_default
    n = min(8, len(images))
    x = images[:n].to(device)
    model = with_precision(model.to(device).eval(), precision, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    mask = masks[:n].to(device) if masks is not None else None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    ids = torch.arange(n, device=device)
    shared: dict[Any, Any] = {}
    for method, params in methods.items():
        extra = _method_inputs(method, {"baseline_pool": baseline_pool}, device)
        if extra is None:  # a needed input is not available here
            continue
        explain_with = _explainer(method, dict(params), seed, extra)
        a = explain_with(model, x, target, ids)

        def explain(xx: Tensor, tt: Tensor, ii: Tensor, _e: Callable[..., Tensor] = explain_with) -> Tensor:
            return _e(model, xx, tt, ii)

        ctx = MetricContext(model=model, x=x, target=target, attributions=a, explain=explain, sample_ids=ids,
                            seed=seed, batch_size=n, explain_with=explain_with, mask=mask, shared=shared)
        for name, p in (metrics or {}).items():
            if METRICS.get(name).needs_mask and mask is None:
                continue
            compute_on_device(name, ctx, **call_params(p))
        del a, ctx
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    shared.clear()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return choose_batch_size(peak / n, float(free), cap)


def channels_last_on_cpu(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in PyTorch's channels_last layout, the fastest measured for explanations on a CPU
    (README.md, "Speed").

    Attributions change only by float rounding: ≤ 1e-6 of the map's peak for saliency, Grad-CAM, guided backprop
    and DeepLift on the zoo models, up to 1e-3 for integrated gradients (its sums over many steps); metric means
    still agree with the NCHW path to 1e-5 (tests/test_results.py). The
    model is returned unchanged when it has no 2-d convolution, or has a 1×1 strided convolution with fewer than
    8 input channels: PyTorch 2.14.1 computes wrong gradients for those in channels_last on the CPU.
    """
    import copy

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    unsafe = any(c.kernel_size == (1, 1) and max(c.stride) > 1 and c.in_channels < 8 for c in convs)
    if not convs or unsafe:
        return model
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


@dataclass(frozen=True)
class OnnxRuntime:
    """What ``--runtime onnx`` changes in an evaluation (the arguments of :func:`run_evaluation` it sets).

    Attributes:
        forward: Logits of a batch from the ONNX graph in onnxruntime (``forward_logits``).
        forward_threads: PyTorch threads during forward-only metrics: 1 on a CPU, ``None`` on CUDA.
        model: The model for explanations: :func:`channels_last_on_cpu` on a CPU, else the model as given.
    """

    forward: Callable[[Tensor], Tensor]
    forward_threads: int | None
    model: nn.Module


def onnx_runtime(onnx_file: str | Path, model: nn.Module, device: torch.device, threads: int | None = None,
                 batch_size: int = 256) -> OnnxRuntime:
    """The ``--runtime onnx`` set-up for ``model`` exported as ``onnx_file``, on ``device``.

    On a CPU onnxruntime's threads own the cores during forward-only metrics, so PyTorch runs those with one
    thread, and explanations use the channels_last layout; on CUDA only the forward changes.
    """
    from sclzoo.zoo.onnx_export import onnx_logits, onnx_session

    session = onnx_session(onnx_file, device, threads=threads)

    def forward(x: Tensor) -> Tensor:
        return onnx_logits(session, x, batch_size=batch_size)

    if device.type == "cpu":
        return OnnxRuntime(forward, 1, channels_last_on_cpu(model))
    return OnnxRuntime(forward, None, model)


def _explainer(method: str, params: dict[str, Any], seed: int, extra: dict[str, Any]) -> Callable[..., Tensor]:
    params = call_params(params)

    def explain_with(model: nn.Module, x: Tensor, target: Tensor, sample_ids: Tensor) -> Tensor:
        return attribute(method, model, x, target, sample_ids=sample_ids, seed=seed, **params, **extra)

    return explain_with


class _Stopwatch:
    """Seconds per key without making the host wait for the device: CUDA events on a GPU, read by :meth:`flush`
    once the batch's copy to the host has synchronised; ``time.perf_counter`` elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = {}
        self._pending: list[tuple[str, Any, Any]] = []

    def start(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, key: str, started: Any) -> None:
        if not self.cuda:
            self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - started
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._pending.append((key, started, end))

    def flush(self) -> None:
        """Adds the recorded CUDA intervals (call after the device caught up, e.g. after a copy to the host)."""
        for key, begin, end in self._pending:
            self.totals[key] = self.totals.get(key, 0.0) + begin.elapsed_time(end) / 1000.0
        self._pending.clear()


@torch.no_grad()
def _logits(model: nn.Module, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def run_evaluation(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    sample_ids: Tensor,
    cfg: EvalConfig,
    *,
    device: torch.device,
    split_images: Tensor | None = None,
    split_labels: Tensor | None = None,
    baseline_pool: Tensor | None = None,
    labels_match: bool = True,
    forward_logits: Callable[[Tensor], Tensor] | None = None,
    forward_threads: int | None = None,
    progress: bool = True,
    n_example_maps: int = 8,
    done_batches: Mapping[int, BatchResult] | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    masks: Tensor | None = None,
    targets: Tensor | None = None,
) -> EvalOutput:
    """Explains and scores ``images`` with every selected method and metric.

    Args:
        model: Eval-mode classifier, [0, 1] pixels → logits.
        images: (N, C, H, W) evaluated images (CPU).
        labels: (N,) true labels.
        sample_ids: (N,) dataset indices (seed the per-sample draws).
        cfg: The evaluation config.
        device: Where the model runs.
        split_images: All images of the split, for the accuracy figure (defaults to ``images``).
        split_labels: Their labels.
        baseline_pool: (M, C, H, W) training images for ``expected_gradients``.
        labels_match: Whether ``labels`` index the model's logits; when not (a dataset with other classes and
            no class map), accuracy is recorded as not applicable (``value`` None), never as 0.
        forward_logits: Optional faster forward-only path (e.g. onnxruntime) for the accuracy figure and the
            perturbation metrics' model calls (explanations always use ``model``).
        forward_threads: PyTorch threads while a forward-only metric runs on ``forward_logits`` (1 for
            onnxruntime on the CPU; see :class:`MetricContext`).
        progress: Show a progress bar.
        n_example_maps: Pixel maps of the first images kept for plots.
        done_batches: Batches finished by an earlier, interrupted run (by start position); they are not computed
            again. Their start positions must be multiples of ``cfg.batch_size``.
        on_batch: Called with each batch as soon as it is scored (the caller checkpoints it).
        shard: ``(rank, world_size)``: compute only this process's batches (:func:`shard_batches`); the output's
            ``missing`` lists the others.
        masks: (N, H, W) bool ground truth of the images (for the localisation metrics, ``MetricContext.mask``);
            None when the dataset has none.
        targets: (N,) explained classes, given instead of ``cfg.target``'s choice (the meta-evaluation explains a
            weight-noise copy of a model for the unperturbed model's targets; evaluator/meta.py).

    Raises:
        ModelLoadError: the model returns NaN/inf logits.
    """
    methods, metrics = resolve_specs(cfg)
    model = with_precision(model.eval().to(device), cfg.precision, device)  # fp16 on a CPU fails here, early
    n = images.shape[0]
    if masks is not None and tuple(masks.shape) != (n, *images.shape[2:]):
        raise ConfigError(f"masks must have shape {(n, *images.shape[2:])} (N, H, W), got {tuple(masks.shape)}")
    split_images = images if split_images is None else split_images
    split_labels = labels if split_labels is None else split_labels
    if forward_logits is not None:
        split_logits = forward_logits(split_images)
    else:
        split_logits = _logits(model, split_images, max(cfg.batch_size, 256), device)
    if not torch.isfinite(split_logits).all():
        bad = int((~torch.isfinite(split_logits)).any(1).sum())
        raise ModelLoadError(f"the model returns NaN/inf logits for {bad} of {len(split_logits)} images; "
                             "its weights are broken — retrain or re-export it")
    accuracy: dict[str, Any] = {"value": float((split_logits.argmax(1) == split_labels).float().mean()),
                                "n": len(split_labels)}
    if not labels_match:
        accuracy = {"value": None, "n": len(split_labels),
                    "note": "not applicable: the dataset's classes are not the model's (pass a class map)"}
    logits = _logits(model, images, cfg.batch_size, device)
    preds = logits.argmax(1)
    if targets is None:
        targets = preds if cfg.target == "predicted" else labels.clone()
    elif tuple(targets.shape) != (n,):
        raise ConfigError(f"targets must have shape ({n},), got {tuple(targets.shape)}")
    else:
        targets = targets.detach().to("cpu", torch.long)

    done = dict(done_batches or {})
    stray = sorted(st for st in done if st % cfg.batch_size or not 0 <= st < n)
    if stray:
        raise ConfigError(f"done batches start at {stray}, which are not batch starts of {n} images in batches "
                          f"of {cfg.batch_size}; resume with the batch size of the interrupted run")
    todo = [st for st in shard_batches(n, cfg.batch_size, *shard) if st not in done]

    # Progress in forward-pass equivalents (a gradient pass counts as GRADIENT_COST forwards), so that the bar
    # moves in proportion to time and its ETA, an average over the whole run, stays put.
    costs = {name: metric_cost(name, **call_params(p)) for name, p in metrics.items()}
    shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    explain_cost = {}
    for method, params in methods.items():
        fwd, grad = method_passes(method, params, shape)
        explain_cost[method] = max(1, fwd + GRADIENT_COST * grad)
    unit = {(m, name): f + e * explain_cost[m] for m in methods for name, (f, e) in costs.items()}
    n_todo = sum(min(n, st + cfg.batch_size) - st for st in todo)
    total = n_todo * (sum(explain_cost.values()) + sum(unit.values()))
    bar = tqdm(total=total, desc="evaluate", unit="pass", unit_scale=True, disable=not progress,
               dynamic_ncols=True, smoothing=0,
               bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}{postfix}]")
    watch = _Stopwatch(device)
    shared: dict[Any, Any] = {}  # the run's shared work (MetricContext.shared)
    available = {"baseline_pool": baseline_pool}
    explainers = {method: _explainer(method, params, cfg.seed, _method_inputs(method, available, device) or {})
                  for method, params in methods.items()}
    batches = dict(done)
    for start in todo:
        sl = slice(start, min(n, start + cfg.batch_size))
        xb = images[sl].to(device)
        tb, ids = targets[sl].to(device), sample_ids[sl].to(device)
        mb = masks[sl].to(device) if masks is not None else None
        on_device: list[tuple[str, str, Tensor]] = []  # (method, metric, scores): copied to the host at the end
        maps_on_device: dict[str, Tensor] = {}
        for method, explain_with in explainers.items():
            bar.set_postfix_str(f"{method} · attributions")
            t0 = watch.start()
            a = explain_with(model, xb, tb, ids)
            watch.stop(method, t0)
            bar.update((sl.stop - sl.start) * explain_cost[method])
            if start < n_example_maps:
                maps_on_device[method] = a[: n_example_maps - start].sum(1).float()

            def explain(x: Tensor, t: Tensor, s: Tensor, _m: nn.Module = model,
                        _e: Callable[..., Tensor] = explain_with) -> Tensor:
                return _e(_m, x, t, s)

            reported = [0]

            def report(forwards: int, explanations: int, _cost: int = explain_cost[method],
                       _reported: list[int] = reported) -> None:
                done_now = forwards + explanations * _cost
                _reported[0] += done_now
                bar.update(done_now)

            ctx = MetricContext(model=model, x=xb, target=tb, attributions=a, explain=explain, sample_ids=ids,
                                seed=cfg.seed, batch_size=cfg.batch_size, explain_with=explain_with,
                                forward=forward_logits, forward_threads=forward_threads, progress=report,
                                mask=mb, shared=shared)
            for name, p in metrics.items():
                bar.set_postfix_str(f"{method} · {name}")
                t0 = watch.start()
                reported[0] = 0
                on_device.append((method, name, compute_on_device(name, ctx, **call_params(p))))
                watch.stop(f"{method}/{name}", t0)
                bar.update(max(0, (sl.stop - sl.start) * unit[(method, name)] - reported[0]))
        host = torch.stack([s for _, _, s in on_device]).cpu().numpy()  # the batch's one copy of its scores
        batch_scores: dict[str, dict[str, np.ndarray]] = {method: {} for method in explainers}
        for (method, name, _), row in zip(on_device, host, strict=True):
            batch_scores[method][name] = row.astype(np.float64)
        batch_maps = {method: m.cpu().numpy() for method, m in maps_on_device.items()}
        watch.flush()
        batches[start] = BatchResult(start, batch_scores, batch_maps)
        if on_batch is not None:
            on_batch(batches[start])
    bar.close()
    scores, maps, missing = _assemble(n, cfg.batch_size, list(methods), list(metrics), batches, n_example_maps)
    return EvalOutput(
        sample_ids=sample_ids.numpy().astype(np.int64),
        labels=labels.numpy().astype(np.int64),
        predictions=preds.numpy().astype(np.int64),
        targets=targets.cpu().numpy().astype(np.int64),
        scores=scores,
        accuracy=accuracy,
        example_maps=maps,
        timings={k: round(v, 4) for k, v in watch.totals.items()},
        batches=dict(sorted(batches.items())),
        missing=missing,
    )
