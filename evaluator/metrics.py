"""Attribution-quality metrics of ``spec/metrics.md`` §3, one registry entry each.

A metric is a pure function ``fn(ctx, **params) -> Tensor[N]`` returning one score per sample. It never mutates
its inputs, and a sample's score depends only on that sample, the model, the explanation function, the global
seed and the parameters: never on its batch neighbours, the batch size or the sharding. That is why every random
draw comes from :func:`sample_generator`, seeded by (seed, metric name, global sample index), and why the draws
are made on the CPU (a CUDA generator gives a different stream for the same seed).

Notation follows the spec: ``m = Σ_c a_c`` is the signed pixel map of an attribution ``a`` (N, C, H, W),
``D_p = H·W``, ``f_y`` the logit of the target class and ``p_y`` its softmax probability. Perturbations act on
pixels (all channels at once), replace them with the baseline value ``b`` (0 = black, pixel space) and are not
clamped to [0, 1].

Model forwards of perturbed images run under ``torch.no_grad()`` in chunks of ``ctx.batch_size`` images that
stack the perturbations of several samples; Python loops run over such chunks (or over samples to seed their
generators), never over single perturbations.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sclzoo.errors import ConfigError
from sclzoo.registry import Registry

__all__ = [
    "FAMILIES",
    "METRICS",
    "MetricContext",
    "MetricSpec",
    "compute",
    "metric_cost",
    "metric_defaults",
    "pearson",
    "per_sample_draws",
    "randomised_copy",
    "pixel_map",
    "sample_generator",
    "spearman",
    "ssim",
    "stable_seed",
]

Family = Literal["faithfulness", "complexity", "continuity", "randomisation"]
#: explain(x (N, C, H, W), target (N,), sample_ids (N,)) -> attributions (N, C, H, W); method and params bound.
ExplainFn = Callable[[Tensor, Tensor, Tensor], Tensor]
#: explain_with(model, x, target, sample_ids) -> attributions; same method and params, any model.
ExplainWithFn = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
#: Cost per sample, in model forwards F or explanations E, as a function of the resolved parameters.
CostFn = Callable[[Mapping[str, Any]], int]
MetricFn = Callable[..., Tensor]

FAMILIES: tuple[str, ...] = ("faithfulness", "complexity", "continuity", "randomisation")


# --------------------------------------------------------------------------------------------------------------
# Per-sample seeding
# --------------------------------------------------------------------------------------------------------------


def stable_seed(seed: int, name: str, sample_id: int) -> int:
    """A 63-bit seed that is a stable function of (seed, name, sample_id).

    Python's ``hash()`` is salted per process, so it would give different draws in every worker; SHA-256 gives
    the same number on every machine, process and Python version.
    """
    digest = hashlib.sha256(f"{int(seed)}\x1f{name}\x1f{int(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_generator(
    seed: int, name: str, sample_id: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The random generator of one sample for one metric or method.

    Args:
        seed: Global seed of the run.
        name: Metric or method name (draws of different metrics are independent).
        sample_id: Global dataset index of the sample.
        device: Device of the generator. sclzoo draws on the CPU and moves the draws, so that scores do not
            depend on the accelerator; pass another device only if that does not matter to you.

    Returns:
        A ``torch.Generator`` seeded with :func:`stable_seed` of the three keys.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(stable_seed(seed, name, sample_id))
    return gen


def per_sample_draws(
    seed: int,
    name: str,
    sample_ids: Tensor,
    draw: Callable[[torch.Generator], tuple[Tensor, ...]],
    device: torch.device | str,
) -> tuple[Tensor, ...]:
    """Draws random tensors sample by sample, each from its own generator, and stacks them.

    Args:
        seed: Global seed.
        name: Metric or method name.
        sample_ids: (N,) global sample indices.
        draw: Maps one sample's CPU generator to a tuple of tensors (always drawn in the same order).
        device: Where the stacked draws go.

    Returns:
        One tensor per element of ``draw``'s tuple, shape (N, *element shape), on ``device``.
    """
    per_sample = [draw(sample_generator(seed, name, i)) for i in sample_ids.tolist()]  # one host transfer
    return tuple(torch.stack(parts).to(device) for parts in zip(*per_sample, strict=True))


# --------------------------------------------------------------------------------------------------------------
# Context and registry
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MetricContext:
    """Everything a metric may use for one batch of samples.

    Attributes:
        model: Classifier in eval mode; ``model(x)`` gives logits (N, classes) from [0, 1] pixels.
        x: (N, C, H, W) images.
        target: (N,) long, the explained class of each sample.
        attributions: (N, C, H, W) explanations of ``x`` for ``target`` (``explain(x, target, sample_ids)``).
        explain: Explanation function with method and parameters bound, for the continuity and random-logit
            metrics; ``None`` if only other metrics are computed.
        sample_ids: (N,) long global dataset indices, used to seed per-sample draws. ``None`` means
            ``arange(N)``, which is only right when ``x`` is the whole dataset.
        seed: Global seed of the run.
        batch_size: Most images per model forward or explanation call; perturbations of several samples are
            stacked and run in chunks of this size.
        cache: Work shared between metrics of this context (clean logits, sensitivity draws, pixel order, the
            randomised model). Build a new context (or clear it) when any other field changes.
        explain_with: Like ``explain`` but for any model, for ``mprt_last``; ``None`` if not needed.
        forward: Forward-only function used for the perturbation metrics' model calls (e.g. an onnxruntime
            session wrapped to take and return tensors); ``None`` = ``model``. It must give the model's logits:
            explanations and randomisation always use ``model``.
        forward_threads: PyTorch's thread count while a forward-only metric runs its model calls through
            ``forward`` (restored afterwards); ``None`` leaves it alone. Use 1 with onnxruntime on the CPU: its
            threads do the heavy work there, and PyTorch's idle OpenMP workers, spinning after every small tensor
            op between calls, otherwise take the same cores (onnxruntime then runs at ~55 % of its speed on 2
            cores).
    """

    model: nn.Module
    x: Tensor
    target: Tensor
    attributions: Tensor
    explain: ExplainFn | None = None
    sample_ids: Tensor | None = None
    seed: int = 0
    batch_size: int = 64
    cache: dict[Any, Any] = field(default_factory=dict)
    explain_with: ExplainWithFn | None = None
    forward: Callable[[Tensor], Tensor] | None = None
    forward_threads: int | None = None

    def logits(self, x: Tensor) -> Tensor:
        """Logits of a batch through the forward-only path (``forward`` when set, else ``model``)."""
        return self.model(x) if self.forward is None else self.forward(x)

    def ids(self) -> Tensor:
        """(N,) long sample ids on the CPU (``arange(N)`` when none were given)."""
        if self.sample_ids is None:
            return torch.arange(self.x.shape[0])
        return self.sample_ids.detach().to("cpu", torch.long)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: Registry name.
        family: "faithfulness", "complexity", "continuity" or "randomisation".
        higher_is_better: Direction of the score.
        version: Bumped whenever the definition or an implementation detail that changes scores changes.
        defaults: Default parameters; ``compute`` accepts no others.
        cost_forward: Model forwards F per sample, from the resolved parameters.
        cost_explain: Explanations E per sample, from the resolved parameters.
        fn: ``fn(ctx, **params) -> Tensor[N]``.
        description: One line for ``sclzoo ls metrics``.
        shares_draws_with: Another metric whose draws and explanations this one reuses from the context cache
            (its cost is then 0 extra when both are computed on one context).
    """

    name: str
    family: Family
    higher_is_better: bool
    version: int
    defaults: dict[str, Any]
    cost_forward: CostFn
    cost_explain: CostFn
    fn: MetricFn
    description: str
    shares_draws_with: str | None = None


METRICS: Registry[MetricSpec] = Registry("metric", "sclzoo ls metrics")


def _metric(
    name: str,
    *,
    family: Family,
    higher_is_better: bool,
    defaults: dict[str, Any],
    description: str,
    cost_forward: CostFn = lambda p: 0,
    cost_explain: CostFn = lambda p: 0,
    version: int = 1,
    shares_draws_with: str | None = None,
) -> Callable[[MetricFn], MetricFn]:
    """Registers the decorated function as metric ``name``."""

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.add(
            name,
            MetricSpec(
                name=name,
                family=family,
                higher_is_better=higher_is_better,
                version=version,
                defaults=dict(defaults),
                cost_forward=cost_forward,
                cost_explain=cost_explain,
                fn=fn,
                description=description,
                shares_draws_with=shares_draws_with,
            ),
        )
        return fn

    return deco


def metric_defaults(name: str) -> dict[str, Any]:
    """A copy of the default parameters of metric ``name`` (raises ``UnknownNameError`` if unknown)."""
    return dict(METRICS.get(name).defaults)


def _resolve(spec: MetricSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise ConfigError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for metric {spec.name!r}; "
            f"its parameters are: {allowed}."
        )
    return {**spec.defaults, **params}


def metric_cost(name: str, **params: Any) -> tuple[int, int]:
    """(model forwards F, explanations E) per sample of metric ``name`` with ``params`` over its defaults."""
    spec = METRICS.get(name)
    resolved = _resolve(spec, params)
    return int(spec.cost_forward(resolved)), int(spec.cost_explain(resolved))


def _check_context(ctx: MetricContext) -> None:
    x = ctx.x
    if x.ndim != 4:
        raise ConfigError(
            f"ctx.x must be (N, C, H, W), got shape {tuple(x.shape)}; add the missing dimensions."
        )
    n = x.shape[0]
    if ctx.target.shape != (n,) or ctx.target.dtype != torch.long:
        raise ConfigError(
            f"ctx.target must be a long tensor of shape ({n},), got {ctx.target.dtype} {tuple(ctx.target.shape)}."
        )
    if ctx.attributions.shape != x.shape:
        raise ConfigError(
            f"ctx.attributions has shape {tuple(ctx.attributions.shape)} but ctx.x has {tuple(x.shape)}; "
            "attributions must have the input's shape."
        )
    if ctx.sample_ids is not None and tuple(ctx.sample_ids.shape) != (n,):
        raise ConfigError(f"ctx.sample_ids must have shape ({n},), got {tuple(ctx.sample_ids.shape)}.")
    if isinstance(ctx.batch_size, bool) or not isinstance(ctx.batch_size, int) or ctx.batch_size < 1:
        raise ConfigError(f"ctx.batch_size must be a positive int, got {ctx.batch_size!r}.")


def compute(name: str, ctx: MetricContext, **params: Any) -> Tensor:
    """Scores of metric ``name`` for every sample of ``ctx``.

    Args:
        name: Registered metric name (``sclzoo ls metrics``).
        ctx: The batch, model and explanation function.
        **params: Overrides of the metric's defaults (see :func:`metric_defaults`).

    Returns:
        (N,) float64 CPU tensor; NaN where the definition is undefined for a sample (kept, never replaced).

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: a parameter is unknown or invalid, or the context lacks what the metric needs.
    """
    spec = METRICS.get(name)
    resolved = _resolve(spec, params)
    _check_context(ctx)
    threads = ctx.forward_threads if ctx.forward is not None and spec.cost_explain(resolved) == 0 else None
    with torch_threads(threads):
        scores = spec.fn(ctx, **resolved)
    return scores.detach().to("cpu", torch.float64)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(n)`` and restores the previous count; ``None`` = no change."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    if n < 1:
        raise ConfigError(f"forward_threads must be a positive int, got {n!r}")
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------


def pixel_map(a: Tensor) -> Tensor:
    """Signed pixel map m = Σ_c a_c. Shapes: (N, C, H, W) → (N, H, W)."""
    return a.sum(dim=1)


def _positive_int(metric: str, param: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{metric}: {param} must be a positive int, got {value!r}.")
    return value


def _positive_float(metric: str, param: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{metric}: {param} must be a positive number, got {value!r}.")
    return float(value)


def _needs(ctx: MetricContext, attr: str, metric: str) -> Any:
    fn = getattr(ctx, attr)
    if fn is None:
        raise ConfigError(
            f"metric {metric!r} recomputes explanations but ctx.{attr} is None; "
            f"build the MetricContext with {attr}=... (the attribution method with its parameters bound)."
        )
    return fn


def _groups(n: int, per_sample: int, batch_size: int) -> Iterator[slice]:
    """Slices of samples whose perturbations (``per_sample`` each) fill about one batch.

    Grouping bounds memory to ~batch_size perturbed images while stacking several samples per forward.
    """
    size = max(1, batch_size // max(1, per_sample))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _target_outputs(
    model: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor, batch_size: int, kind: Literal["logit", "prob"]
) -> Tensor:
    """f_y or p_y of stacked inputs, in chunks. Shapes: (R, C, H, W), (R,) → (R,) float64."""
    outs = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            logits = model(inputs[start : start + batch_size]).double()
            if kind == "prob":
                logits = logits.softmax(dim=1)
            outs.append(logits.gather(1, targets[start : start + batch_size, None])[:, 0])
    return torch.cat(outs)


def _clean_logits(ctx: MetricContext) -> Tensor:
    """Logits of the unperturbed batch (N, classes), float64, computed once per context."""
    if "clean_logits" not in ctx.cache:
        outs = []
        with torch.no_grad():
            for start in range(0, ctx.x.shape[0], ctx.batch_size):
                outs.append(ctx.logits(ctx.x[start : start + ctx.batch_size]).double())
        ctx.cache["clean_logits"] = torch.cat(outs)
    return ctx.cache["clean_logits"]


def _clean_target_logit(ctx: MetricContext) -> Tensor:
    """f_y(x), (N,) float64."""
    return _clean_logits(ctx).gather(1, ctx.target[:, None])[:, 0]


def _explain_rows(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, target: Tensor, ids: Tensor, bs: int
) -> Tensor:
    """Explanations of stacked inputs in chunks of ``bs``. Shapes: (R, C, H, W), (R,), (R,) → (R, C, H, W)."""
    outs = []
    for start in range(0, x.shape[0], bs):
        chunk = x[start : start + bs]
        a = fn(chunk, target[start : start + bs], ids[start : start + bs])
        if a.shape != chunk.shape:
            raise ConfigError(
                f"the explanation function returned shape {tuple(a.shape)} for inputs {tuple(chunk.shape)}; "
                "it must return attributions of the input's shape."
            )
        outs.append(a.detach())
    return torch.cat(outs)


def _repeat(t: Tensor, n: int) -> Tensor:
    """Each row of ``t`` repeated ``n`` times, sample-major. Shapes: (G, ...) → (G·n, ...)."""
    return t.repeat_interleave(n, dim=0)


def _normalise_by_max(a: Tensor) -> Tensor:
    """a / max|a| per sample (all-zero maps stay zero). Shapes: (R, ...) → (R, ...) float64."""
    a = a.double()
    peak = a.flatten(1).abs().amax(dim=1)
    peak = torch.where(peak == 0, torch.ones_like(peak), peak)
    return a / peak.view(-1, *([1] * (a.ndim - 1)))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per row; NaN where either row is constant. Shapes: (N, R), (N, R) → (N,) float64."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    num = (a * b).sum(dim=1)
    return torch.where(
        den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(den, math.nan)
    )


def _average_ranks(v: Tensor) -> Tensor:
    """1-based ranks per row with ties given their average rank (as scipy's rankdata). (N, D) → (N, D) float64."""
    n, d = v.shape
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    new_group = torch.ones_like(sorted_v, dtype=torch.bool)
    new_group[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1  # (N, D) tie-group index of each sorted position
    positions = torch.arange(1, d + 1, dtype=torch.float64, device=v.device).expand(n, d)
    sums = torch.zeros(n, d, dtype=torch.float64, device=v.device).scatter_add_(1, group, positions)
    counts = torch.zeros(n, d, dtype=torch.float64, device=v.device).scatter_add_(
        1, group, torch.ones_like(positions)
    )
    avg = (sums / counts.clamp_min(1)).gather(1, group)
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row (average ranks for ties); NaN where a row is constant.

    Shapes: (N, D), (N, D) → (N,) float64.
    """
    return pearson(_average_ranks(a.double()), _average_ranks(b.double()))


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) of two single-channel maps per sample.

    Gaussian window of ``window`` pixels (σ = ``sigma``), shrunk to the largest odd size that fits small maps;
    valid convolution (no padding); K1 = 0.01, K2 = 0.03; local (co)variances without Bessel correction.
    ``data_range`` L = max(a, b) − min(a, b) over both maps jointly, per sample: the maps have no fixed range.
    Two identical constant maps give L = 0 and an undefined 0/0, returned as NaN.

    Shapes: (N, H, W), (N, H, W) → (N,) float64.
    """
    a = a.double()[:, None]
    b = b.double()[:, None]
    h, w = a.shape[-2:]
    size = min(window, h, w)
    size -= 1 - size % 2  # odd, so the window has a centre
    coords = torch.arange(size, dtype=torch.float64, device=a.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    data_range = torch.maximum(flat_a.amax(1), flat_b.amax(1)) - torch.minimum(flat_a.amin(1), flat_b.amin(1))
    c1 = ((0.01 * data_range) ** 2).view(-1, 1, 1, 1)
    c2 = ((0.03 * data_range) ** 2).view(-1, 1, 1, 1)
    mu_a, mu_b = F.conv2d(a, kernel), F.conv2d(b, kernel)
    var_a = F.conv2d(a * a, kernel) - mu_a**2
    var_b = F.conv2d(b * b, kernel) - mu_b**2
    cov = F.conv2d(a * b, kernel) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1)


# --------------------------------------------------------------------------------------------------------------
# Faithfulness
# --------------------------------------------------------------------------------------------------------------


@_metric(
    "faithfulness_correlation",
    family="faithfulness",
    higher_is_better=True,
    defaults={"n_draws": 100, "subset_size": None, "baseline": 0.0},
    cost_forward=lambda p: 1 + p["n_draws"],
    description="Pearson over random pixel subsets S of Σ_S m and f_y(x) − f_y(x_{S←b}) (Bhatt 2020).",
)
def faithfulness_correlation(
    ctx: MetricContext, n_draws: int, subset_size: int | None, baseline: float
) -> Tensor:
    """Pearson(s, Δ) with s_r = Σ_{S_r} m, Δ_r = f_y(x) − f_y(x_{S_r←b}) over R random subsets of k pixels.

    Args:
        ctx: Batch context.
        n_draws: R, number of random subsets.
        subset_size: k pixels per subset; ``None`` = round(D_p / 16).
        baseline: Replacement value b (pixel units).

    Returns:
        (N,) float64; NaN where s or Δ is constant (e.g. a constant map).
    """
    name = "faithfulness_correlation"
    r = _positive_int(name, "n_draws", n_draws)
    n, _, h, w = ctx.x.shape
    d = h * w
    k = max(1, round(d / 16)) if subset_size is None else _positive_int(name, "subset_size", subset_size)
    if k > d:
        raise ConfigError(f"{name}: subset_size={k} exceeds the {d} pixels of a {h}×{w} image; lower it.")

    # top-k of iid uniforms is a uniformly random k-subset, one vectorised call per sample.
    (subsets,) = per_sample_draws(
        ctx.seed,
        name,
        ctx.ids(),
        lambda g: (torch.rand(r, d, generator=g).topk(k, dim=1).indices,),
        ctx.x.device,
    )  # (N, R, k)
    m = pixel_map(ctx.attributions).reshape(n, d).double()
    s = m.gather(1, subsets.reshape(n, r * k)).reshape(n, r, k).sum(dim=2)  # (N, R)

    deltas = []
    clean = _clean_target_logit(ctx)
    for grp in _groups(n, r, ctx.batch_size):
        g = grp.stop - grp.start
        masks = torch.zeros(g * r, d, dtype=torch.bool, device=ctx.x.device)
        masks.scatter_(1, subsets[grp].reshape(g * r, k), True)
        xs = _repeat(ctx.x[grp], r)
        inputs = torch.where(masks.view(g * r, 1, h, w), torch.full_like(xs, baseline), xs)
        out = _target_outputs(ctx.logits, inputs, _repeat(ctx.target[grp], r), ctx.batch_size, "logit")
        deltas.append(clean[grp, None] - out.view(g, r))
    return pearson(s, torch.cat(deltas))


def _pixel_ranks(ctx: MetricContext) -> Tensor:
    """Rank of each pixel when ordered by m descending (0 = most relevant), shared by deletion and insertion.

    A stable sort breaks ties by pixel index, so the order is a pure function of the map. Shape: (N, D_p).
    """
    if "pixel_ranks" not in ctx.cache:
        n = ctx.x.shape[0]
        m = pixel_map(ctx.attributions).reshape(n, -1)
        order = torch.sort(m, dim=1, descending=True, stable=True).indices
        positions = torch.arange(m.shape[1], device=m.device).expand(n, -1)
        ctx.cache["pixel_ranks"] = torch.empty_like(order).scatter_(1, order, positions)
    return ctx.cache["pixel_ranks"]


def _flip_curve(ctx: MetricContext, steps: int, baseline: float, insert: bool) -> Tensor:
    """p_y after replacing the first n_k = ⌊k·D_p/K⌋ pixels of the order, k = 0..K. Returns (N, K+1) float64.

    Deletion sets those pixels to b in x; insertion copies them from x into the all-b image.
    """
    n, _, h, w = ctx.x.shape
    d = h * w
    ranks = _pixel_ranks(ctx)
    counts = torch.arange(steps + 1, device=ctx.x.device) * d // steps  # (K+1,) pixels moved at step k
    curves = []
    for grp in _groups(n, steps + 1, ctx.batch_size):
        g = grp.stop - grp.start
        moved = ranks[grp][:, None, :] < counts[None, :, None]  # (G, K+1, D)
        moved = moved.reshape(g * (steps + 1), 1, h, w)
        xs = _repeat(ctx.x[grp], steps + 1)
        base = torch.full_like(xs, baseline)
        inputs = torch.where(moved, xs, base) if insert else torch.where(moved, base, xs)
        out = _target_outputs(ctx.logits, inputs, _repeat(ctx.target[grp], steps + 1), ctx.batch_size, "prob")
        curves.append(out.view(g, steps + 1))
    return torch.cat(curves)


def _trapezoid_over_k(curve: Tensor) -> Tensor:
    """Trapezoid area of c_0..c_K on unit steps, divided by K. (N, K+1) → (N,)."""
    k = curve.shape[1] - 1
    return (curve.sum(dim=1) - 0.5 * (curve[:, 0] + curve[:, -1])) / k


@_metric(
    "deletion_auc",
    family="faithfulness",
    higher_is_better=False,
    defaults={"steps": 32, "baseline": 0.0},
    cost_forward=lambda p: p["steps"] + 1,
    description="Area under p_y while deleting pixels by m descending in K steps (MoRF pixel flipping).",
)
def deletion_auc(ctx: MetricContext, steps: int, baseline: float) -> Tensor:
    """Trapezoid area / K of c_k = p_y(x with its n_k most relevant pixels set to b), n_k = ⌊k·D_p/K⌋.

    Args:
        ctx: Batch context.
        steps: K.
        baseline: Replacement value b.

    Returns:
        (N,) float64 in [0, 1]; lower is better.
    """
    k = _positive_int("deletion_auc", "steps", steps)
    return _trapezoid_over_k(_flip_curve(ctx, k, baseline, insert=False))


@_metric(
    "insertion_auc",
    family="faithfulness",
    higher_is_better=True,
    defaults={"steps": 32, "baseline": 0.0},
    cost_forward=lambda p: p["steps"] + 1,
    description="Area under p_y while inserting pixels by m descending into the all-baseline image.",
)
def insertion_auc(ctx: MetricContext, steps: int, baseline: float) -> Tensor:
    """Trapezoid area / K of c_k = p_y(all-b image with the n_k most relevant pixels of x), n_k = ⌊k·D_p/K⌋.

    Args:
        ctx: Batch context.
        steps: K.
        baseline: Value b of the starting image.

    Returns:
        (N,) float64 in [0, 1]; higher is better.
    """
    k = _positive_int("insertion_auc", "steps", steps)
    return _trapezoid_over_k(_flip_curve(ctx, k, baseline, insert=True))


@_metric(
    "infidelity",
    family="faithfulness",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "sigma": 0.05, "normalize": False},
    cost_forward=lambda p: p["n_perturbations"] + 1,
    description="mean_j (I_jᵀa − (f_y(x) − f_y(x − I_j)))², I_j ~ N(0, σ²) per element (Yeh 2019, captum).",
)
def infidelity(ctx: MetricContext, n_perturbations: int, sigma: float, normalize: bool) -> Tensor:
    """Infidelity as captum defines it, with Gaussian element-wise perturbations.

    Args:
        ctx: Batch context.
        n_perturbations: n draws of I.
        sigma: Standard deviation σ of I (pixel units).
        normalize: Scale IᵀA by the least-squares β = E[IᵀA·Δ] / E[(IᵀA)²] first (captum's ``normalize``);
            β = 0 when a is zero, which leaves the score E[Δ²].

    Returns:
        (N,) float64; lower is better.
    """
    name = "infidelity"
    nj = _positive_int(name, "n_perturbations", n_perturbations)
    sd = _positive_float(name, "sigma", sigma)
    n, c, h, w = ctx.x.shape
    clean = _clean_target_logit(ctx)
    scores = []
    for grp in _groups(n, nj, ctx.batch_size):
        g = grp.stop - grp.start
        (noise,) = per_sample_draws(
            ctx.seed,
            name,
            ctx.ids()[grp],
            lambda gen: (torch.randn(nj, c, h, w, generator=gen) * sd,),
            ctx.x.device,
        )  # (G, n, C, H, W)
        inputs = (ctx.x[grp][:, None] - noise).reshape(g * nj, c, h, w)
        out = _target_outputs(ctx.logits, inputs, _repeat(ctx.target[grp], nj), ctx.batch_size, "logit")
        fwd_diff = clean[grp, None] - out.view(g, nj)
        attr_dot = (noise.double() * ctx.attributions[grp][:, None].double()).flatten(2).sum(dim=2)  # (G, n)
        if normalize:
            num = (attr_dot * fwd_diff).mean(dim=1)
            den = (attr_dot * attr_dot).mean(dim=1)
            beta = torch.where(
                den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den)
            )
            attr_dot = beta[:, None] * attr_dot
        scores.append(((attr_dot - fwd_diff) ** 2).mean(dim=1))
    return torch.cat(scores)


@_metric(
    "region_perturbation_aopc",
    family="faithfulness",
    higher_is_better=True,
    defaults={"patch_size": None, "n_regions": 16, "baseline": 0.0},
    cost_forward=lambda p: p["n_regions"] + 1,
    description="AOPC of f_y while setting p×p patches, ordered by Σ|m|, to b cumulatively (Samek 2016).",
)
def region_perturbation_aopc(
    ctx: MetricContext, patch_size: int | None, n_regions: int, baseline: float
) -> Tensor:
    """AOPC = 1/(R+1) Σ_{k=0}^{R} (f_y(x) − f_y(x^(k))), x^(k) = x with its k most relevant patches set to b.

    Patches tile the image on a grid of p×p cells (edge cells are smaller when p does not divide H or W) and are
    ordered by Σ|m| descending, ties by patch index. The k = 0 term is 0 but counts, as in Samek et al.

    Args:
        ctx: Batch context.
        patch_size: p; ``None`` = max(1, H // 8).
        n_regions: R patches removed.
        baseline: Replacement value b.

    Returns:
        (N,) float64; higher is better.
    """
    name = "region_perturbation_aopc"
    n, _, h, w = ctx.x.shape
    p = max(1, h // 8) if patch_size is None else _positive_int(name, "patch_size", patch_size)
    r = _positive_int(name, "n_regions", n_regions)
    grid_w = -(-w // p)
    n_patches = -(-h // p) * grid_w
    if r > n_patches:
        raise ConfigError(
            f"{name}: n_regions={r} exceeds the {n_patches} patches of size {p}; lower n_regions."
        )
    rows = torch.arange(h, device=ctx.x.device) // p
    cols = torch.arange(w, device=ctx.x.device) // p
    patch_of_pixel = (rows[:, None] * grid_w + cols[None, :]).reshape(-1)  # (D,)
    abs_m = pixel_map(ctx.attributions).abs().reshape(n, -1).double()
    patch_scores = torch.zeros(n, n_patches, dtype=torch.float64, device=ctx.x.device)
    patch_scores.scatter_add_(1, patch_of_pixel.expand(n, -1), abs_m)
    order = torch.sort(patch_scores, dim=1, descending=True, stable=True).indices
    patch_rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(n_patches, device=order.device).expand(n, -1)
    )
    pixel_rank = patch_rank.gather(1, patch_of_pixel.expand(n, -1))  # (N, D)
    steps = torch.arange(r + 1, device=ctx.x.device)
    scores = []
    for grp in _groups(n, r + 1, ctx.batch_size):
        g = grp.stop - grp.start
        removed = (pixel_rank[grp][:, None, :] < steps[None, :, None]).reshape(g * (r + 1), 1, h, w)
        xs = _repeat(ctx.x[grp], r + 1)
        inputs = torch.where(removed, torch.full_like(xs, baseline), xs)
        out = _target_outputs(ctx.logits, inputs, _repeat(ctx.target[grp], r + 1), ctx.batch_size, "logit")
        curve = out.view(g, r + 1)
        scores.append((curve[:, :1] - curve).mean(dim=1))  # column 0 is x itself
    return torch.cat(scores)


# --------------------------------------------------------------------------------------------------------------
# Complexity (no model calls; on |m|)
# --------------------------------------------------------------------------------------------------------------


def _abs_map(ctx: MetricContext) -> Tensor:
    """|m| flattened, float64, (N, D_p)."""
    return pixel_map(ctx.attributions).abs().reshape(ctx.x.shape[0], -1).double()


def _nan_where_zero(scores: Tensor, total: Tensor) -> Tensor:
    """All-zero maps have no relative relevance (0/0 in every definition): their score is NaN."""
    return torch.where(total > 0, scores, torch.full_like(scores, math.nan))


@_metric(
    "sparseness",
    family="complexity",
    higher_is_better=True,
    defaults={},
    description="Gini index of |m| / max|m| + 1e-7 (Chalasani 2020).",
)
def sparseness(ctx: MetricContext) -> Tensor:
    """G = Σ_i (2i − d − 1) v_(i) / (d Σ v), v = |m| / max|m| + 1e-7 sorted ascending, i = 1..d, d = D_p.

    Returns:
        (N,) float64 in [0, 1): 0 for a constant map, (d − 1) / (d (1 + d·1e-7)) for a one-hot map; NaN for an
        all-zero map.
    """
    a = _abs_map(ctx)
    peak = a.amax(dim=1, keepdim=True)
    v = torch.sort(a / torch.where(peak > 0, peak, torch.ones_like(peak)) + 1e-7, dim=1).values
    d = v.shape[1]
    i = torch.arange(1, d + 1, dtype=torch.float64, device=v.device)
    gini = ((2 * i - d - 1) * v).sum(dim=1) / (d * v.sum(dim=1))
    return _nan_where_zero(gini, peak[:, 0])


@_metric(
    "complexity",
    family="complexity",
    higher_is_better=False,
    defaults={},
    description="Entropy of the distribution |m| / Σ|m| (Bhatt 2020).",
)
def complexity(ctx: MetricContext) -> Tensor:
    """H = −Σ_i p_i ln(p_i + 1e-12), p = |m| / Σ|m|.

    Returns:
        (N,) float64: ln D_p for a constant map, 0 for a one-hot map; NaN for an all-zero map.
    """
    a = _abs_map(ctx)
    total = a.sum(dim=1, keepdim=True)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    return _nan_where_zero(-(p * torch.log(p + 1e-12)).sum(dim=1), total[:, 0])


@_metric(
    "effective_complexity",
    family="complexity",
    higher_is_better=False,
    defaults={"eps": 1e-2},
    description="Number of pixels with |m| / max|m| > ε (Nguyen 2020).",
)
def effective_complexity(ctx: MetricContext, eps: float) -> Tensor:
    """#{i : |m_i| / max|m| > ε}.

    Args:
        ctx: Batch context.
        eps: Threshold ε on the max-normalised |m|.

    Returns:
        (N,) float64 counts; 1 for a one-hot map; NaN for an all-zero map.
    """
    a = _abs_map(ctx)
    peak = a.amax(dim=1, keepdim=True)
    count = (a / torch.where(peak > 0, peak, torch.ones_like(peak)) > eps).sum(dim=1).double()
    return _nan_where_zero(count, peak[:, 0])


# --------------------------------------------------------------------------------------------------------------
# Continuity (recompute explanations)
# --------------------------------------------------------------------------------------------------------------


def _sensitivities(ctx: MetricContext, n_perturbations: int, radius: float) -> Tensor:
    """S_j = ‖a(x) − a(x + U(−r, r))‖_F / ‖a(x)‖_F for j = 1..n, shared by max_ and avg_sensitivity.

    One set of draws (seeded under the name "max_sensitivity" whichever metric asks first) and one set of
    explanations serve both metrics, so their scores describe the same perturbations. ‖a(x)‖ = 0 divides by 1,
    as captum's ``sensitivity_max``. Perturbed inputs are explained with the sample's own id, so a stochastic
    method reuses its noise and S measures the input perturbation, not the method's randomness.

    Returns:
        (N, n) float64.
    """
    name = "max_sensitivity"
    nj = _positive_int(name, "n_perturbations", n_perturbations)
    rad = _positive_float(name, "radius", radius)
    key = ("sensitivities", nj, rad)
    if key in ctx.cache:
        return ctx.cache[key]
    explain = _needs(ctx, "explain", name)
    n, c, h, w = ctx.x.shape
    ids = ctx.ids()
    ref = ctx.attributions.flatten(1).double()
    ref_norm = ref.norm(dim=1)
    ref_norm = torch.where(ref_norm == 0, torch.ones_like(ref_norm), ref_norm)
    out = []
    for grp in _groups(n, nj, ctx.batch_size):
        g = grp.stop - grp.start
        (noise,) = per_sample_draws(
            ctx.seed,
            name,
            ids[grp],
            lambda gen: ((torch.rand(nj, c, h, w, generator=gen) * 2 - 1) * rad,),
            ctx.x.device,
        )
        inputs = (ctx.x[grp][:, None] + noise).reshape(g * nj, c, h, w)
        expl = _explain_rows(
            explain,
            inputs,
            _repeat(ctx.target[grp], nj),
            _repeat(ids[grp], nj).to(ctx.x.device),
            ctx.batch_size,
        )
        diff = (expl.reshape(g, nj, -1).double() - ref[grp][:, None]).norm(dim=2)
        out.append(diff / ref_norm[grp, None])
    ctx.cache[key] = torch.cat(out)
    return ctx.cache[key]


@_metric(
    "max_sensitivity",
    family="continuity",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "radius": 0.05},
    cost_explain=lambda p: p["n_perturbations"],
    description="max_j ‖a(x) − a(x'_j)‖ / ‖a(x)‖, x'_j = x + U(−r, r) element-wise (Yeh 2019).",
)
def max_sensitivity(ctx: MetricContext, n_perturbations: int, radius: float) -> Tensor:
    """max_j S_j (see :func:`_sensitivities`).

    Args:
        ctx: Batch context with ``explain``.
        n_perturbations: n draws.
        radius: r, half-width of the uniform element-wise noise (pixel units).

    Returns:
        (N,) float64; lower is better; 0 for an explanation that ignores its input.
    """
    return _sensitivities(ctx, n_perturbations, radius).amax(dim=1)


@_metric(
    "avg_sensitivity",
    family="continuity",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "radius": 0.05},
    cost_explain=lambda p: 0,
    shares_draws_with="max_sensitivity",
    description="mean_j of max_sensitivity's S_j over the same draws (0 extra cost when both run).",
)
def avg_sensitivity(ctx: MetricContext, n_perturbations: int, radius: float) -> Tensor:
    """mean_j S_j over the same draws and explanations as ``max_sensitivity`` (computed here if absent).

    Returns:
        (N,) float64; lower is better.
    """
    return _sensitivities(ctx, n_perturbations, radius).mean(dim=1)


@_metric(
    "local_lipschitz_estimate",
    family="continuity",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "sigma": 0.025},
    cost_explain=lambda p: p["n_perturbations"],
    description="max_j ‖â(x) − â(x'_j)‖₂ / ‖x − x'_j‖₂, x'_j = x + N(0, σ²), â max-normalised (Alvarez-Melis 2018).",
)
def local_lipschitz_estimate(ctx: MetricContext, n_perturbations: int, sigma: float) -> Tensor:
    """max_j L_j, L_j = ‖â(x) − â(x'_j)‖₂ / (‖x − x'_j‖₂ + 1e-10), â = a / max|a| per map (zero maps stay 0).

    Args:
        ctx: Batch context with ``explain``.
        n_perturbations: n draws.
        sigma: σ of the element-wise Gaussian noise (pixel units).

    Returns:
        (N,) float64; lower is better.
    """
    name = "local_lipschitz_estimate"
    nj = _positive_int(name, "n_perturbations", n_perturbations)
    sd = _positive_float(name, "sigma", sigma)
    explain = _needs(ctx, "explain", name)
    n, c, h, w = ctx.x.shape
    ids = ctx.ids()
    ref = _normalise_by_max(ctx.attributions).flatten(1)
    out = []
    for grp in _groups(n, nj, ctx.batch_size):
        g = grp.stop - grp.start
        (noise,) = per_sample_draws(
            ctx.seed,
            name,
            ids[grp],
            lambda gen: (torch.randn(nj, c, h, w, generator=gen) * sd,),
            ctx.x.device,
        )
        inputs = (ctx.x[grp][:, None] + noise).reshape(g * nj, c, h, w)
        expl = _explain_rows(
            explain,
            inputs,
            _repeat(ctx.target[grp], nj),
            _repeat(ids[grp], nj).to(ctx.x.device),
            ctx.batch_size,
        )
        num = (_normalise_by_max(expl).reshape(g, nj, -1) - ref[grp][:, None]).norm(dim=2)
        den = noise.double().flatten(2).norm(dim=2) + 1e-10
        out.append((num / den).amax(dim=1))
    return torch.cat(out)


def _shift_horizontal(x: Tensor, t: int, fill: float) -> Tensor:
    """x shifted right by t pixels (left if t < 0), the uncovered columns set to ``fill``. (…, W) → (…, W)."""
    pad = torch.full_like(x[..., : abs(t)], fill)
    return torch.cat([pad, x[..., :-t]], dim=-1) if t > 0 else torch.cat([x[..., -t:], pad], dim=-1)


@_metric(
    "continuity",
    family="continuity",
    higher_is_better=False,
    defaults={"max_shift": 4, "baseline": 0.0},
    cost_explain=lambda p: 2 * p["max_shift"],
    description="max_t ‖â(x) − â(x^(t))‖₁ / ‖x − x^(t)‖₂ over horizontal shifts t = ±1..±T (Montavon 2018).",
)
def continuity(ctx: MetricContext, max_shift: int, baseline: float) -> Tensor:
    """max_t ‖â(x) − â(x^(t))‖₁ / (‖x − x^(t)‖₂ + 1e-9); x^(t) = x shifted by t columns, padded with b.

    The maps are compared pixel for pixel, without shifting them back, as in the definition.

    Args:
        ctx: Batch context with ``explain``.
        max_shift: T; shifts −T..−1 and 1..T.
        baseline: Padding value b.

    Returns:
        (N,) float64; lower is better.
    """
    name = "continuity"
    t_max = _positive_int(name, "max_shift", max_shift)
    n, c, h, w = ctx.x.shape
    if t_max >= w:
        raise ConfigError(f"{name}: max_shift={t_max} must be smaller than the image width {w}.")
    explain = _needs(ctx, "explain", name)
    shifts = [t for t in range(-t_max, t_max + 1) if t != 0]
    ns = len(shifts)
    ids = ctx.ids()
    ref = _normalise_by_max(ctx.attributions).flatten(1)
    out = []
    for grp in _groups(n, ns, ctx.batch_size):
        g = grp.stop - grp.start
        shifted = torch.stack(
            [_shift_horizontal(ctx.x[grp], t, baseline) for t in shifts], dim=1
        )  # (G, 2T, ...)
        expl = _explain_rows(
            explain,
            shifted.reshape(g * ns, c, h, w),
            _repeat(ctx.target[grp], ns),
            _repeat(ids[grp], ns).to(ctx.x.device),
            ctx.batch_size,
        )
        num = (_normalise_by_max(expl).reshape(g, ns, -1) - ref[grp][:, None]).abs().sum(dim=2)
        den = (ctx.x[grp][:, None] - shifted).double().flatten(2).norm(dim=2) + 1e-9
        out.append((num / den).amax(dim=1))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------------------
# Randomisation
# --------------------------------------------------------------------------------------------------------------


def randomised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every layer re-initialised, the same for a given seed on any device.

    Modules with ``reset_parameters()`` use it (their own init scheme and scale). A module that owns parameters
    but has no ``reset_parameters`` (e.g. a bare ``nn.Parameter`` such as a positional embedding) gets each of
    them randomly permuted, which destroys what was learned while keeping the value distribution. The reset
    runs on the CPU inside ``fork_rng``, so the global RNG of the caller is untouched and CPU and GPU runs
    agree; the copy is then moved back to the model's device.

    Args:
        model: The trained model (not modified).
        seed: Global seed of the run.

    Returns:
        The randomised copy, in eval mode, on the model's device.
    """
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    rand = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "mprt_last", -1))
        gen = sample_generator(seed, "mprt_last/permute", -1)
        for module in rand.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    perm = torch.randperm(p.numel(), generator=gen)
                    p.copy_(p.flatten()[perm].view_as(p))
    return rand.to(device).eval()


@_metric(
    "mprt_last",
    family="randomisation",
    higher_is_better=False,
    defaults={},
    cost_explain=lambda p: 1,
    description="Spearman(|m|, |m'|), m' the map of the model with all layers re-initialised (Adebayo 2018).",
)
def mprt_last(ctx: MetricContext) -> Tensor:
    """Spearman rank correlation (average ranks for ties) between |m| and the |m'| of the randomised model.

    The randomised model comes from :func:`randomised_copy` with ``ctx.seed`` and is built once per context.

    Returns:
        (N,) float64 in [−1, 1]; lower is better; NaN where either map is constant.
    """
    explain_with = _needs(ctx, "explain_with", "mprt_last")
    key = ("randomised_model", ctx.seed)
    if key not in ctx.cache:
        ctx.cache[key] = randomised_copy(ctx.model, ctx.seed)
    rand_model = ctx.cache[key]
    n = ctx.x.shape[0]

    def explain_random(x: Tensor, target: Tensor, ids: Tensor) -> Tensor:
        return explain_with(rand_model, x, target, ids)

    rand_attr = _explain_rows(explain_random, ctx.x, ctx.target, ctx.ids().to(ctx.x.device), ctx.batch_size)
    m = pixel_map(ctx.attributions).abs().reshape(n, -1)
    m_rand = pixel_map(rand_attr).abs().reshape(n, -1)
    return spearman(m, m_rand)


@_metric(
    "random_logit",
    family="randomisation",
    higher_is_better=False,
    defaults={"window": 11, "sigma": 1.5},
    cost_forward=lambda p: 1,
    cost_explain=lambda p: 1,
    description="SSIM between |m| for y and |m| for a random other class ŷ ≠ y (Sixt 2020).",
)
def random_logit(ctx: MetricContext, window: int, sigma: float) -> Tensor:
    """SSIM(|m_y|, |m_ŷ|) with ŷ drawn uniformly among the other classes from the sample's generator.

    Args:
        ctx: Batch context with ``explain``; the number of classes is read from the model's logits.
        window: Gaussian SSIM window (shrunk to fit small maps), see :func:`ssim`.
        sigma: σ of the window.

    Returns:
        (N,) float64; lower is better.
    """
    name = "random_logit"
    win = _positive_int(name, "window", window)
    sd = _positive_float(name, "sigma", sigma)
    explain = _needs(ctx, "explain", name)
    n_classes = _clean_logits(ctx).shape[1]
    if n_classes < 2:
        raise ConfigError(f"{name} needs a model with at least 2 classes; this one has {n_classes}.")
    ids = ctx.ids()
    (offset,) = per_sample_draws(
        ctx.seed, name, ids, lambda g: (torch.randint(n_classes - 1, (), generator=g),), ctx.x.device
    )
    other = (ctx.target + 1 + offset) % n_classes  # uniform over the n_classes − 1 classes ≠ y
    other_attr = _explain_rows(explain, ctx.x, other, ids.to(ctx.x.device), ctx.batch_size)
    return ssim(pixel_map(ctx.attributions).abs(), pixel_map(other_attr).abs(), window=win, sigma=sd)
