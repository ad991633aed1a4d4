"""Complexity: how concentrated is the map? No model calls; every metric reads |m| (docs/protocol.md#complexity)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import MetricContext, pixel_map, register_metric

__all__ = ["complexity", "effective_complexity", "sparseness"]


def _abs_map(ctx: MetricContext) -> Tensor:
    """|m| flattened, float64, (N, D_p)."""
    return pixel_map(ctx.attributions).abs().reshape(ctx.x.shape[0], -1).double()


def _nan_where_zero(scores: Tensor, total: Tensor) -> Tensor:
    """All-zero maps have no relative relevance (0/0 in every definition): their score is NaN."""
    return torch.where(total > 0, scores, torch.full_like(scores, math.nan))


@register_metric(
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


@register_metric(
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


@register_metric(
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
