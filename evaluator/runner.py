"""The evaluation runner: model + images + config → per-sample scores. It computes and does no I/O.

For each batch of images the runner explains the target logit once per method, then hands the same
attributions to every metric through one :class:`~sclzoo.evaluator.metrics.MetricContext` per (method, batch), so
work shared between metrics (clean logits, sensitivity draws, pixel orderings) is done once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.evaluator.attributions import METHODS, attribute
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute, metric_cost

__all__ = ["EvalOutput", "resolve_specs", "run_evaluation", "estimate_cost"]


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
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]
    accuracy: dict[str, Any]
    example_maps: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def resolve_specs(cfg: EvalConfig) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Full parameters of every selected method and metric (defaults + overrides), validated.

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
        unknown = sorted(set(over) - set(spec.defaults))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} for method {m!r}; its parameters are "
                              f"{sorted(spec.defaults)}")
        methods[m] = {k: v for k, v in {**spec.defaults, **over}.items() if k != "baseline_pool"}
    metrics: dict[str, dict[str, Any]] = {}
    for name in cfg.metrics:
        spec_m = METRICS.get(name)
        over = cfg.metric_params.get(name, {})
        metric_cost(name, **over)  # validates parameter names
        metrics[name] = {"version": spec_m.version, **spec_m.defaults, **over}
    return methods, metrics


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


def _explainer(method: str, params: dict[str, Any], seed: int, extra: dict[str, Any]) -> Callable[..., Tensor]:
    def explain_with(model: nn.Module, x: Tensor, target: Tensor, sample_ids: Tensor) -> Tensor:
        return attribute(method, model, x, target, sample_ids=sample_ids, seed=seed, **params, **extra)

    return explain_with


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
    forward_logits: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    n_example_maps: int = 8,
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
        forward_logits: Optional faster forward-only path (e.g. onnxruntime) for the accuracy figure.
        progress: Show a progress bar.
        n_example_maps: Pixel maps of the first images kept for plots.

    Raises:
        ModelLoadError: the model returns NaN/inf logits.
    """
    methods, metrics = resolve_specs(cfg)
    model = model.eval().to(device)
    n = images.shape[0]
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
    accuracy = {"value": float((split_logits.argmax(1) == split_labels).float().mean()), "n": len(split_labels)}
    logits = _logits(model, images, cfg.batch_size, device)
    preds = logits.argmax(1)
    targets = preds if cfg.target == "predicted" else labels.clone()

    costs = {name: metric_cost(name, **{k: v for k, v in p.items() if k != "version"})
             for name, p in metrics.items()}
    unit = {name: 1 + f + e for name, (f, e) in costs.items()}
    total = len(methods) * n * (1 + sum(unit.values()))
    bar = tqdm(total=total, desc="evaluate", unit="work", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}")
    scores: dict[str, dict[str, list[Tensor]]] = {m: {k: [] for k in metrics} for m in methods}
    example_maps: dict[str, list[Tensor]] = {m: [] for m in methods}
    timings: dict[str, float] = {}
    extra_pool = {"baseline_pool": baseline_pool.to(device)} if baseline_pool is not None else {}
    for method, params in methods.items():
        extra = extra_pool if method == "expected_gradients" else {}
        explain_with = _explainer(method, params, cfg.seed, extra)
        for start in range(0, n, cfg.batch_size):
            sl = slice(start, min(n, start + cfg.batch_size))
            xb = images[sl].to(device)
            tb, ids = targets[sl].to(device), sample_ids[sl]
            bar.set_postfix_str(f"{method} · attributions")
            t0 = time.perf_counter()
            a = explain_with(model, xb, tb, ids)
            timings[method] = timings.get(method, 0.0) + time.perf_counter() - t0
            bar.update(sl.stop - sl.start)
            if start < n_example_maps:
                example_maps[method].append(a[: n_example_maps - start].sum(1).float().cpu())

            def explain(x: Tensor, t: Tensor, s: Tensor, _m: nn.Module = model) -> Tensor:
                return explain_with(_m, x, t, s)

            ctx = MetricContext(model=model, x=xb, target=tb, attributions=a, explain=explain, sample_ids=ids,
                                seed=cfg.seed, batch_size=cfg.batch_size, explain_with=explain_with)
            for name, p in metrics.items():
                bar.set_postfix_str(f"{method} · {name}")
                t0 = time.perf_counter()
                s = compute(name, ctx, **{k: v for k, v in p.items() if k != "version"})
                key = f"{method}/{name}"
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
                scores[method][name].append(s)
                bar.update((sl.stop - sl.start) * unit[name])
    bar.close()
    return EvalOutput(
        sample_ids=sample_ids.numpy().astype(np.int64),
        labels=labels.numpy().astype(np.int64),
        predictions=preds.numpy().astype(np.int64),
        targets=targets.cpu().numpy().astype(np.int64),
        scores={m: {k: torch.cat(v).numpy().astype(np.float64) for k, v in d.items()} for m, d in scores.items()},
        accuracy=accuracy,
        example_maps={m: torch.cat(v).numpy() for m, v in example_maps.items() if v},
        timings={k: round(v, 4) for k, v in timings.items()},
    )
