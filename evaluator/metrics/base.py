"""The metric context, spec and registry, ``compute``, and the two loops every perturbation metric shares.

A metric is a pure function ``fn(ctx, **params) -> Tensor[N]`` returning one score per sample. It never mutates
its inputs, and a sample's score depends only on that sample, the model, the explanation function, the global
seed and the parameters: never on its batch neighbours, the batch size or the sharding. That is why every random
draw comes from :mod:`sclzoo.evaluator.seeding`, keyed by the sample's global id and made on the batch's device
(docs/protocol.md#seeding).

Notation (docs/protocol.md#notation): ``m = Σ_c a_c`` is the signed pixel map of an attribution ``a``
(N, C, H, W), ``D_p = H·W``, ``f_y`` the logit of the target class and ``p_y`` its softmax probability.
Perturbations act on pixels (all channels at once), replace them with the baseline value ``b`` (0 = black,
pixel space) and are not clamped to [0, 1].

Model forwards of perturbed images run under ``torch.no_grad()`` in chunks of ``ctx.batch_size`` images that
stack the perturbations of several samples (:func:`forward_perturbed`); re-explanations of perturbed inputs run
the same way (:func:`explain_perturbed`). Python loops run over such chunks, never over single perturbations.

Adding a metric is one function in the module of its family, decorated with :func:`register_metric`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from sclzoo.errors import ConfigError
from sclzoo.registry import Registry, check_params
from sclzoo.threads import torch_threads
from sclzoo.vocab import Family

__all__ = [
    "METRICS",
    "MetricContext",
    "MetricSpec",
    "clean_logits",
    "clean_target_logit",
    "compute",
    "compute_on_device",
    "explain_perturbed",
    "explain_rows",
    "forward_perturbed",
    "metric_cost",
    "metric_defaults",
    "needs",
    "needs_mask",
    "normalise_by_max",
    "pixel_map",
    "positive_float",
    "positive_int",
    "register_metric",
    "repeat_rows",
]

#: explain(x (N, C, H, W), target (N,), sample_ids (N,)) -> attributions (N, C, H, W); method and params bound.
ExplainFn = Callable[[Tensor, Tensor, Tensor], Tensor]
#: explain_with(model, x, target, sample_ids) -> attributions; same method and params, any model.
ExplainWithFn = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
#: Cost per sample, in model forwards F or explanations E, as a function of the resolved parameters.
CostFn = Callable[[Mapping[str, Any]], int]
MetricFn = Callable[..., Tensor]


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
        sample_ids: (N,) long global dataset indices, used to key per-sample draws (on any device; keep them on
            ``x``'s device to spare a copy per call). ``None`` means ``arange(N)``, which is only right when ``x``
            is the whole dataset.
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
            threads do the heavy work there, and PyTorch's idle OpenMP workers would otherwise compete with them
            for the same cores.
        progress: Called by the shared loops after each group with the (model forwards, explanations) just
            done, for progress bars; ``None`` = not reported.
        mask: (N, H, W) bool ground truth of where each sample's class evidence is (a dataset's ``box`` or
            ``ink`` mask), for the localisation metrics; ``None`` when the dataset has none.
        shared: Work shared by every context of one run, whatever the batch or method (the randomised model of
            ``mprt_last``, built once per model, device and seed): the runner hands the same dict to all its
            contexts. ``None`` keeps such work in ``cache`` (once per context).
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
    progress: Callable[[int, int], None] | None = None
    mask: Tensor | None = None
    shared: dict[Any, Any] | None = None

    def logits(self, x: Tensor) -> Tensor:
        """Logits of a batch through the forward-only path (``forward`` when set, else ``model``)."""
        return self.model(x) if self.forward is None else self.forward(x)

    def ids(self) -> Tensor:
        """(N,) long sample ids on the CPU (``arange(N)`` when none were given)."""
        if self.sample_ids is None:
            return torch.arange(self.x.shape[0])
        return self.sample_ids.detach().to("cpu", torch.long)

    def device_ids(self) -> Tensor:
        """(N,) long sample ids on ``x``'s device, where the draws are made (``arange(N)`` when none were given)."""
        if self.sample_ids is None:
            return torch.arange(self.x.shape[0], device=self.x.device)
        return self.sample_ids.detach().to(self.x.device, torch.long)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: Registry name.
        family: One of :data:`sclzoo.vocab.FAMILIES`.
        higher_is_better: Direction of the score.
        version: Bumped whenever the definition or an implementation detail that changes scores changes.
        defaults: Default parameters; ``compute`` accepts no others.
        cost_forward: Model forwards F per sample, from the resolved parameters.
        cost_explain: Explanations E per sample, from the resolved parameters.
        fn: ``fn(ctx, **params) -> Tensor[N]``.
        description: One line for ``sclzoo ls metrics``.
        shares_draws_with: Another metric whose draws and explanations this one reuses from the context cache
            (its cost is then 0 extra when both are computed on one context).
        needs_mask: The metric reads the ground-truth mask ``ctx.mask`` (so it runs only on datasets with masks).
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
    needs_mask: bool = False


METRICS: Registry[MetricSpec] = Registry("metric", "sclzoo ls metrics")


def _no_cost(params: Mapping[str, Any]) -> int:
    return 0


def register_metric(
    name: str,
    *,
    family: Family,
    higher_is_better: bool,
    defaults: dict[str, Any],
    description: str,
    cost_forward: CostFn = _no_cost,
    cost_explain: CostFn = _no_cost,
    version: int = 1,
    shares_draws_with: str | None = None,
    needs_mask: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Registers the decorated function as metric ``name`` (see the module docstring)."""

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
                needs_mask=needs_mask,
            ),
        )
        return fn

    return deco


def metric_defaults(name: str) -> dict[str, Any]:
    """A copy of the default parameters of metric ``name`` (raises ``UnknownNameError`` if unknown)."""
    return dict(METRICS.get(name).defaults)


def _resolve(spec: MetricSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    check_params("metric", spec.name, params, spec.defaults)
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
    if ctx.mask is not None and (tuple(ctx.mask.shape) != (n, *x.shape[2:]) or ctx.mask.dtype != torch.bool):
        raise ConfigError(
            f"ctx.mask must be a bool tensor of shape {(n, *x.shape[2:])} (N, H, W), got {ctx.mask.dtype} "
            f"{tuple(ctx.mask.shape)}."
        )


def compute(name: str, ctx: MetricContext, **params: Any) -> Tensor:
    """Scores of metric ``name`` for every sample of ``ctx``, on the CPU (:func:`compute_on_device` keeps them
    where they were computed).

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
    return compute_on_device(name, ctx, **params).to("cpu")


def compute_on_device(name: str, ctx: MetricContext, **params: Any) -> Tensor:
    """:func:`compute`'s scores as an (N,) float64 tensor on ``ctx.x``'s device, with no copy to the host: a runner
    copies a whole batch's scores at once."""
    spec = METRICS.get(name)
    resolved = _resolve(spec, params)
    _check_context(ctx)
    threads = ctx.forward_threads if ctx.forward is not None and spec.cost_explain(resolved) == 0 else None
    with torch_threads(threads):
        scores = spec.fn(ctx, **resolved)
    return scores.detach().to(ctx.x.device, torch.float64)


# --------------------------------------------------------------------------------------------------------------
# Helpers for metric definitions
# --------------------------------------------------------------------------------------------------------------


def pixel_map(a: Tensor) -> Tensor:
    """Signed pixel map m = Σ_c a_c. Shapes: (N, C, H, W) → (N, H, W)."""
    return a.sum(dim=1)


def positive_int(metric: str, param: str, value: Any) -> int:
    """``value`` if it is an int >= 1, else a ConfigError naming the metric and parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{metric}: {param} must be a positive int, got {value!r}.")
    return value


def positive_float(metric: str, param: str, value: Any) -> float:
    """``value`` as a float if it is a number > 0, else a ConfigError naming the metric and parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{metric}: {param} must be a positive number, got {value!r}.")
    return float(value)


def needs(ctx: MetricContext, attr: str, metric: str) -> Any:
    """``ctx.<attr>`` (``explain`` or ``explain_with``), or a ConfigError saying how to provide it."""
    fn = getattr(ctx, attr)
    if fn is None:
        raise ConfigError(
            f"metric {metric!r} recomputes explanations but ctx.{attr} is None; "
            f"build the MetricContext with {attr}=... (the attribution method with its parameters bound)."
        )
    return fn


def needs_mask(ctx: MetricContext, metric: str) -> Tensor:
    """``ctx.mask`` (N, H, W) bool, or a ConfigError saying where masks come from."""
    if ctx.mask is None:
        raise ConfigError(
            f"metric {metric!r} compares maps with ground-truth masks but ctx.mask is None; evaluate on a dataset "
            "with masks (--dataset mnist5k-clutter, --mask box or ink) or build the MetricContext with mask=..."
        )
    return ctx.mask


def sample_groups(n: int, per_sample: int, batch_size: int) -> Iterator[slice]:
    """Slices of samples whose perturbations (``per_sample`` each) fill about one batch.

    Grouping bounds memory to ~batch_size perturbed images while stacking several samples per forward.
    """
    size = max(1, batch_size // max(1, per_sample))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def repeat_rows(t: Tensor, n: int) -> Tensor:
    """Each row of ``t`` repeated ``n`` times, sample-major. Shapes: (G, ...) → (G·n, ...)."""
    return t.repeat_interleave(n, dim=0)


def normalise_by_max(a: Tensor) -> Tensor:
    """a / max|a| per sample (all-zero maps stay zero). Shapes: (R, ...) → (R, ...) float64."""
    a = a.double()
    peak = a.flatten(1).abs().amax(dim=1)
    peak = torch.where(peak == 0, torch.ones_like(peak), peak)
    return a / peak.view(-1, *([1] * (a.ndim - 1)))


def target_outputs(
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


def clean_logits(ctx: MetricContext) -> Tensor:
    """Logits of the unperturbed batch (N, classes), float64, computed once per context."""
    if "clean_logits" not in ctx.cache:
        outs = []
        with torch.no_grad():
            for start in range(0, ctx.x.shape[0], ctx.batch_size):
                outs.append(ctx.logits(ctx.x[start : start + ctx.batch_size]).double())
        ctx.cache["clean_logits"] = torch.cat(outs)
    return ctx.cache["clean_logits"]


def clean_target_logit(ctx: MetricContext) -> Tensor:
    """f_y(x), (N,) float64."""
    return clean_logits(ctx).gather(1, ctx.target[:, None])[:, 0]


def explain_rows(
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


# --------------------------------------------------------------------------------------------------------------
# The two shared loops
# --------------------------------------------------------------------------------------------------------------

#: perturb(group) -> (inputs (G·P, C, H, W) sample-major, state handed to ``score``).
PerturbFn = Callable[[slice], tuple[Tensor, Any]]
#: score(group, outputs, state) -> the group's rows of the result (G, ...).
ScoreFn = Callable[[slice, Tensor, Any], Tensor]


def forward_perturbed(
    ctx: MetricContext,
    per_sample: int,
    perturb: PerturbFn,
    score: ScoreFn,
    kind: Literal["logit", "prob"] = "logit",
) -> Tensor:
    """Perturb, stack, forward: the loop of every forward-only faithfulness metric.

    Samples are taken in groups whose ``per_sample`` perturbations fill about one batch; ``perturb`` builds a
    group's perturbed inputs, their target-class outputs (f_y or p_y, float64, through ``ctx.logits``) are
    computed in chunks of ``ctx.batch_size`` under ``no_grad`` and handed to ``score`` as (G, per_sample).

    Returns:
        The groups' scores concatenated along the sample dimension: (N, ...).
    """
    rows = []
    for grp in sample_groups(ctx.x.shape[0], per_sample, ctx.batch_size):
        g = grp.stop - grp.start
        inputs, state = perturb(grp)
        out = target_outputs(ctx.logits, inputs, repeat_rows(ctx.target[grp], per_sample), ctx.batch_size, kind)
        rows.append(score(grp, out.view(g, per_sample), state))
        if ctx.progress is not None:
            ctx.progress(g * per_sample, 0)
    return torch.cat(rows)


def explain_perturbed(
    ctx: MetricContext,
    metric: str,
    per_sample: int,
    perturb: PerturbFn,
    score: ScoreFn,
) -> Tensor:
    """Perturb, re-explain, compare: the loop of every continuity metric.

    Like :func:`forward_perturbed`, but each group's perturbed inputs are explained again (``ctx.explain``, in
    chunks of ``ctx.batch_size``) for the sample's own target, with the sample's own id: a stochastic method
    reuses its noise, so the score measures the input perturbation, not the method's randomness. ``score``
    receives the explanations as (G, per_sample, C, H, W).

    Returns:
        The groups' scores concatenated along the sample dimension: (N, ...).
    """
    explain = needs(ctx, "explain", metric)
    ids = ctx.device_ids()
    rows = []
    for grp in sample_groups(ctx.x.shape[0], per_sample, ctx.batch_size):
        g = grp.stop - grp.start
        inputs, state = perturb(grp)
        expl = explain_rows(
            explain,
            inputs,
            repeat_rows(ctx.target[grp], per_sample),
            repeat_rows(ids[grp], per_sample),
            ctx.batch_size,
        )
        rows.append(score(grp, expl.view(g, per_sample, *expl.shape[1:]), state))
        if ctx.progress is not None:
            ctx.progress(0, g * per_sample)
    return torch.cat(rows)
