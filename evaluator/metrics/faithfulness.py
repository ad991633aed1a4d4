"""Faithfulness: does removing what the map calls relevant change the model's output accordingly?

Every metric here runs on :func:`~sclzoo.evaluator.metrics.base.forward_perturbed`
(docs/protocol.md#faithfulness).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sclzoo.errors import ConfigError
from sclzoo.evaluator.seeding import normal, random_subsets
from sclzoo.zoo.augment import grid_cells

from .base import (
    MetricContext,
    clean_target_logit,
    forward_perturbed,
    pixel_map,
    positive_float,
    positive_int,
    register_metric,
    repeat_rows,
)
from .correlation import pearson, spearman

__all__ = ["deletion_auc", "faithfulness_correlation", "flip_curve", "infidelity", "insertion_auc",
           "pixel_ranks", "region_perturbation_aopc", "single_deletion"]


@register_metric(
    "faithfulness_correlation",
    family="faithfulness",
    higher_is_better=True,
    defaults={"n_draws": 100, "subset_size": None, "baseline": 0.0},
    cost_forward=lambda p: 1 + p["n_draws"],
    version=2,
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
    r = positive_int(name, "n_draws", n_draws)
    n, _, h, w = ctx.x.shape
    d = h * w
    k = max(1, round(d / 16)) if subset_size is None else positive_int(name, "subset_size", subset_size)
    if k > d:
        raise ConfigError(f"{name}: subset_size={k} exceeds the {d} pixels of a {h}×{w} image; lower it.")

    ids = ctx.device_ids()
    m = pixel_map(ctx.attributions).reshape(n, d).double()
    clean = clean_target_logit(ctx)

    def perturb(grp: slice) -> tuple[Tensor, Tensor]:
        g = grp.stop - grp.start
        subsets = random_subsets(ctx.seed, name, ids[grp], r, k, d)  # (G, R, k), one call per group
        masks = torch.zeros(g * r, d, dtype=torch.bool, device=ctx.x.device)
        masks.scatter_(1, subsets.reshape(g * r, k), True)
        xs = repeat_rows(ctx.x[grp], r)
        return torch.where(masks.view(g * r, 1, h, w), torch.full_like(xs, baseline), xs), subsets

    def correlation(grp: slice, out: Tensor, subsets: Tensor) -> Tensor:
        g = grp.stop - grp.start
        s = m[grp].gather(1, subsets.reshape(g, r * k)).reshape(g, r, k).sum(dim=2)  # (G, R)
        return pearson(s, clean[grp, None] - out)

    return forward_perturbed(ctx, r, perturb, correlation, "logit")


def pixel_ranks(ctx: MetricContext) -> Tensor:
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


def flip_curve(ctx: MetricContext, steps: int, baseline: float, insert: bool) -> Tensor:
    """p_y after replacing the first n_k = ⌊k·D_p/K⌋ pixels of the order, k = 0..K. Returns (N, K+1) float64.

    Deletion sets those pixels to b in x; insertion copies them from x into the all-b image.
    """
    _, _, h, w = ctx.x.shape
    d = h * w
    ranks = pixel_ranks(ctx)
    counts = torch.arange(steps + 1, device=ctx.x.device) * d // steps  # (K+1,) pixels moved at step k

    def perturb(grp: slice) -> tuple[Tensor, None]:
        g = grp.stop - grp.start
        moved = ranks[grp][:, None, :] < counts[None, :, None]  # (G, K+1, D)
        moved = moved.reshape(g * (steps + 1), 1, h, w)
        xs = repeat_rows(ctx.x[grp], steps + 1)
        base = torch.full_like(xs, baseline)
        return (torch.where(moved, xs, base) if insert else torch.where(moved, base, xs)), None

    return forward_perturbed(ctx, steps + 1, perturb, lambda grp, out, _: out, "prob")


def _trapezoid_over_k(curve: Tensor) -> Tensor:
    """Trapezoid area of c_0..c_K on unit steps, divided by K. (N, K+1) → (N,)."""
    k = curve.shape[1] - 1
    return (curve.sum(dim=1) - 0.5 * (curve[:, 0] + curve[:, -1])) / k


@register_metric(
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
    k = positive_int("deletion_auc", "steps", steps)
    return _trapezoid_over_k(flip_curve(ctx, k, baseline, insert=False))


@register_metric(
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
    k = positive_int("insertion_auc", "steps", steps)
    return _trapezoid_over_k(flip_curve(ctx, k, baseline, insert=True))


@register_metric(
    "infidelity",
    family="faithfulness",
    higher_is_better=False,
    defaults={"n_perturbations": 16, "sigma": 0.05, "normalize": False},
    cost_forward=lambda p: p["n_perturbations"] + 1,
    version=2,
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
    nj = positive_int(name, "n_perturbations", n_perturbations)
    sd = positive_float(name, "sigma", sigma)
    _, c, h, w = ctx.x.shape
    clean = clean_target_logit(ctx)
    ids = ctx.device_ids()

    def perturb(grp: slice) -> tuple[Tensor, Tensor]:
        noise = normal(ctx.seed, name, ids[grp], (nj, c, h, w)).mul_(sd)  # (G, n, C, H, W)
        return (ctx.x[grp][:, None] - noise).reshape(-1, c, h, w), noise

    def squared_error(grp: slice, out: Tensor, noise: Tensor) -> Tensor:
        fwd_diff = clean[grp, None] - out
        attr_dot = (noise.double() * ctx.attributions[grp][:, None].double()).flatten(2).sum(dim=2)  # (G, n)
        if normalize:
            num = (attr_dot * fwd_diff).mean(dim=1)
            den = (attr_dot * attr_dot).mean(dim=1)
            beta = torch.where(
                den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den)
            )
            attr_dot = beta[:, None] * attr_dot
        return ((attr_dot - fwd_diff) ** 2).mean(dim=1)

    return forward_perturbed(ctx, nj, perturb, squared_error, "logit")


@register_metric(
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
    p = max(1, h // 8) if patch_size is None else positive_int(name, "patch_size", patch_size)
    r = positive_int(name, "n_regions", n_regions)
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

    def perturb(grp: slice) -> tuple[Tensor, None]:
        g = grp.stop - grp.start
        removed = (pixel_rank[grp][:, None, :] < steps[None, :, None]).reshape(g * (r + 1), 1, h, w)
        xs = repeat_rows(ctx.x[grp], r + 1)
        return torch.where(removed, torch.full_like(xs, baseline), xs), None

    def aopc(grp: slice, curve: Tensor, _: None) -> Tensor:
        return (curve[:, :1] - curve).mean(dim=1)  # column 0 is x itself

    return forward_perturbed(ctx, r + 1, perturb, aopc, "logit")


def _deletion_grid(params: Mapping[str, Any]) -> int:
    """The validated ``grid`` g of single_deletion (an int >= 2: one cell has no ranking)."""
    g = positive_int("single_deletion", "grid", params["grid"])
    if g < 2:
        raise ConfigError(f"single_deletion: grid must be at least 2 (a g x g grid of cells to rank), got {g}.")
    return g


@register_metric(
    "single_deletion",
    family="faithfulness",
    higher_is_better=True,
    defaults={"grid": 4, "baseline": 0.0},
    cost_forward=lambda p: _deletion_grid(p) ** 2 + 1,
    description="Spearman over g×g grid cells j of f_y(x) − f_y(x with cell j set to b) and Σ_j m (Hesse 2024).",
)
def single_deletion(ctx: MetricContext, grid: int, baseline: float) -> Tensor:
    """Spearman(drop, A) over the g² cells of a g x g grid, drop_j = f_y(x) − f_y(x_{cell j←b}), A_j = Σ_{cell j} m.

    The grid is the patch-deletion augmentation's (:func:`sclzoo.zoo.augment.grid_cells`: cells of
    ⌈H/g⌉ x ⌈W/g⌉ pixels, the last row/column smaller), so a model trained with patch deletion of the same grid
    and value has seen these inputs (in domain, docs/protocol.md#single-deletion). Ranks of ties are averaged.

    Args:
        ctx: Batch context.
        grid: g, cells per side.
        baseline: Deletion value b (pixel units).

    Returns:
        (N,) float64 in [−1, 1]; NaN where the drops or the cell sums are all equal (e.g. a zero map).

    Raises:
        ConfigError: g < 2, a baseline that is not a finite number, or a grid that leaves empty cells.
    """
    name = "single_deletion"
    g = _deletion_grid({"grid": grid})
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not math.isfinite(baseline):
        raise ConfigError(f"{name}: baseline must be a finite number (pixel units, 0 = black), got {baseline!r}.")
    n, _, h, w = ctx.x.shape
    cells = grid_cells(h, w, g).to(ctx.x.device).reshape(-1)  # (D,) cell of each pixel
    g2 = g * g
    m = pixel_map(ctx.attributions).reshape(n, -1).double()
    cell_sums = torch.zeros(n, g2, dtype=torch.float64, device=m.device).scatter_add_(1, cells.expand(n, -1), m)
    in_cell = (cells[None, :] == torch.arange(g2, device=cells.device)[:, None]).view(g2, 1, h, w)
    clean = clean_target_logit(ctx)

    def perturb(grp: slice) -> tuple[Tensor, None]:
        size = grp.stop - grp.start
        xs = repeat_rows(ctx.x[grp], g2)  # sample-major: sample i's cells are rows i·g² … i·g² + g² − 1
        deleted = in_cell.repeat(size, 1, 1, 1)
        return torch.where(deleted, torch.full_like(xs, baseline), xs), None

    def drop(grp: slice, out: Tensor, _: None) -> Tensor:
        return clean[grp, None] - out

    return spearman(forward_perturbed(ctx, g2, perturb, drop, "logit"), cell_sums)
