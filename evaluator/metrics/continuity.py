"""Continuity: does the map stay put when the input barely moves? Every metric re-explains perturbed inputs
through :func:`~sclzoo.evaluator.metrics.base.explain_perturbed` (docs/protocol.md#continuity).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sclzoo.errors import ConfigError
from sclzoo.evaluator.seeding import normal, uniform

from .base import (
    MetricContext,
    PerturbFn,
    explain_perturbed,
    normalise_by_max,
    positive_float,
    positive_int,
    register_metric,
)

__all__ = ["avg_sensitivity", "continuity", "local_lipschitz_estimate", "max_sensitivity", "sensitivities"]


#: draw(sample ids (G,), shape of one sample's draws) -> the group's noise (G, *shape), on the ids' device.
NoiseFn = Callable[[Tensor, tuple[int, ...]], Tensor]


def _noise_perturb(ctx: MetricContext, n_draws: int, draw: NoiseFn) -> PerturbFn:
    """perturb(group) for :func:`explain_perturbed`: x + noise, the group's noise drawn in one call."""
    _, c, h, w = ctx.x.shape
    ids = ctx.device_ids()

    def perturb(grp: slice) -> tuple[Tensor, Tensor]:
        noise = draw(ids[grp], (n_draws, c, h, w))  # (G, n, C, H, W)
        return (ctx.x[grp][:, None] + noise).reshape(-1, c, h, w), noise

    return perturb


def sensitivities(ctx: MetricContext, n_perturbations: int, radius: float) -> Tensor:
    """S_j = ‖a(x) − a(x + U(−r, r))‖_F / ‖a(x)‖_F for j = 1..n, shared by max_ and avg_sensitivity.

    One set of draws (seeded under the name "max_sensitivity" whichever metric asks first) and one set of
    explanations serve both metrics, so their scores describe the same perturbations. ‖a(x)‖ = 0 divides by 1,
    as captum's ``sensitivity_max``.

    Returns:
        (N, n) float64.
    """
    name = "max_sensitivity"
    nj = positive_int(name, "n_perturbations", n_perturbations)
    rad = positive_float(name, "radius", radius)
    key = ("sensitivities", nj, rad)
    if key in ctx.cache:
        return ctx.cache[key]
    ref = ctx.attributions.flatten(1).double()
    ref_norm = ref.norm(dim=1)
    ref_norm = torch.where(ref_norm == 0, torch.ones_like(ref_norm), ref_norm)

    def noise(ids: Tensor, shape: tuple[int, ...]) -> Tensor:
        return uniform(ctx.seed, name, ids, shape).mul_(2).sub_(1).mul_(rad)

    def relative_change(grp: slice, expl: Tensor, _: Tensor) -> Tensor:
        diff = (expl.flatten(2).double() - ref[grp][:, None]).norm(dim=2)
        return diff / ref_norm[grp, None]

    ctx.cache[key] = explain_perturbed(ctx, name, nj, _noise_perturb(ctx, nj, noise), relative_change)
    return ctx.cache[key]


@register_metric(
    "max_sensitivity",
    family="continuity",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "radius": 0.05},
    cost_explain=lambda p: p["n_perturbations"],
    version=2,
    description="max_j ‖a(x) − a(x'_j)‖ / ‖a(x)‖, x'_j = x + U(−r, r) element-wise (Yeh 2019).",
)
def max_sensitivity(ctx: MetricContext, n_perturbations: int, radius: float) -> Tensor:
    """max_j S_j (see :func:`sensitivities`).

    Args:
        ctx: Batch context with ``explain``.
        n_perturbations: n draws.
        radius: r, half-width of the uniform element-wise noise (pixel units).

    Returns:
        (N,) float64; lower is better; 0 for an explanation that ignores its input.
    """
    return sensitivities(ctx, n_perturbations, radius).amax(dim=1)


@register_metric(
    "avg_sensitivity",
    family="continuity",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "radius": 0.05},
    cost_explain=lambda p: 0,
    version=2,
    shares_draws_with="max_sensitivity",
    description="mean_j of max_sensitivity's S_j over the same draws (0 extra cost when both run).",
)
def avg_sensitivity(ctx: MetricContext, n_perturbations: int, radius: float) -> Tensor:
    """mean_j S_j over the same draws and explanations as ``max_sensitivity`` (computed here if absent).

    Returns:
        (N,) float64; lower is better.
    """
    return sensitivities(ctx, n_perturbations, radius).mean(dim=1)


@register_metric(
    "local_lipschitz_estimate",
    family="continuity",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "sigma": 0.025},
    cost_explain=lambda p: p["n_perturbations"],
    version=2,
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
    nj = positive_int(name, "n_perturbations", n_perturbations)
    sd = positive_float(name, "sigma", sigma)
    ref = normalise_by_max(ctx.attributions).flatten(1)

    def gaussian(ids: Tensor, shape: tuple[int, ...]) -> Tensor:
        return normal(ctx.seed, name, ids, shape).mul_(sd)

    def lipschitz(grp: slice, expl: Tensor, noise: Tensor) -> Tensor:
        g = grp.stop - grp.start
        num = (normalise_by_max(expl.flatten(0, 1)).reshape(g, nj, -1) - ref[grp][:, None]).norm(dim=2)
        den = noise.double().flatten(2).norm(dim=2) + 1e-10
        return (num / den).amax(dim=1)

    return explain_perturbed(ctx, name, nj, _noise_perturb(ctx, nj, gaussian), lipschitz)


def _shift_horizontal(x: Tensor, t: int, fill: float) -> Tensor:
    """x shifted right by t pixels (left if t < 0), the uncovered columns set to ``fill``. (…, W) → (…, W)."""
    pad = torch.full_like(x[..., : abs(t)], fill)
    return torch.cat([pad, x[..., :-t]], dim=-1) if t > 0 else torch.cat([x[..., -t:], pad], dim=-1)


@register_metric(
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
    t_max = positive_int(name, "max_shift", max_shift)
    _, c, h, w = ctx.x.shape
    if t_max >= w:
        raise ConfigError(f"{name}: max_shift={t_max} must be smaller than the image width {w}.")
    shifts = [t for t in range(-t_max, t_max + 1) if t != 0]
    ns = len(shifts)
    ref = normalise_by_max(ctx.attributions).flatten(1)

    def perturb(grp: slice) -> tuple[Tensor, Tensor]:
        shifted = torch.stack([_shift_horizontal(ctx.x[grp], t, baseline) for t in shifts], dim=1)  # (G, 2T, ...)
        return shifted.reshape(-1, c, h, w), shifted

    def ratio(grp: slice, expl: Tensor, shifted: Tensor) -> Tensor:
        g = grp.stop - grp.start
        num = (normalise_by_max(expl.flatten(0, 1)).reshape(g, ns, -1) - ref[grp][:, None]).abs().sum(dim=2)
        den = (ctx.x[grp][:, None] - shifted).double().flatten(2).norm(dim=2) + 1e-9
        return (num / den).amax(dim=1)

    return explain_perturbed(ctx, name, ns, perturb, ratio)
