"""Localisation: does the map put its relevance where the class evidence is known to be?

Only for datasets with ground-truth masks (``mnist5k-clutter``: the digit's ``box`` or its ``ink``); the mask is
``ctx.mask`` (N, H, W) bool. All four metrics act on the signed pixel map m and its positive part
m⁺ = max(m, 0), make no model call, and give NaN for an empty mask (docs/protocol.md#localisation). Orders are
stable: equal values keep ascending pixel index order, as everywhere in sclzoo.

References: the pointing game (Zhang et al. 2018), relevance mass and rank accuracy (Arras, Osman, Samek 2022,
CLEVR-XAI), the ROC AUC of the map as a pixel classifier (Quantus' ``AUC``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import MetricContext, needs_mask, pixel_map, register_metric
from .correlation import average_ranks

__all__ = ["localisation_auc", "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"]


def _flat(ctx: MetricContext, metric: str) -> tuple[Tensor, Tensor, Tensor]:
    """(m (N, D) float64, mask (N, D) bool, mask size K (N,) float64)."""
    mask = needs_mask(ctx, metric).reshape(ctx.x.shape[0], -1).to(ctx.attributions.device)
    m = pixel_map(ctx.attributions).reshape(mask.shape).double()
    return m, mask, mask.sum(dim=1).double()


def _nan_where(cond: Tensor, values: Tensor) -> Tensor:
    return torch.where(cond, torch.full_like(values, math.nan), values)


@register_metric(
    "pointing_game",
    family="localisation",
    higher_is_better=True,
    defaults={},
    needs_mask=True,
    description="1 if the pixel of max m lies in the ground-truth mask, else 0 (Zhang 2018; ties: first pixel).",
)
def pointing_game(ctx: MetricContext) -> Tensor:
    """1 where the pixel of largest m lies inside the mask, else 0; of tied maxima the first in row-major order.

    Returns:
        (N,) float64 in {0, 1}; NaN for an empty mask.
    """
    m, mask, k = _flat(ctx, "pointing_game")
    top = m.argmax(dim=1, keepdim=True)  # the first maximal index (torch.argmax's documented tie rule)
    return _nan_where(k == 0, mask.gather(1, top)[:, 0].double())


@register_metric(
    "relevance_mass_accuracy",
    family="localisation",
    higher_is_better=True,
    defaults={},
    needs_mask=True,
    description="Σ_mask m⁺ / Σ m⁺: the share of positive relevance inside the ground-truth mask (Arras 2022).",
)
def relevance_mass_accuracy(ctx: MetricContext) -> Tensor:
    """Σ over the mask of m⁺ divided by Σ of m⁺.

    Returns:
        (N,) float64 in [0, 1]; NaN where m has no positive value (Σ m⁺ = 0) or the mask is empty.
    """
    m, mask, k = _flat(ctx, "relevance_mass_accuracy")
    pos = m.clamp_min(0.0)
    total = pos.sum(dim=1)
    inside = (pos * mask).sum(dim=1)
    ratio = inside / torch.where(total > 0, total, torch.ones_like(total))
    return _nan_where((total <= 0) | (k == 0), ratio)


@register_metric(
    "relevance_rank_accuracy",
    family="localisation",
    higher_is_better=True,
    defaults={},
    needs_mask=True,
    description="Share of the K pixels of largest m that lie in the mask, K = mask size (Arras 2022).",
)
def relevance_rank_accuracy(ctx: MetricContext) -> Tensor:
    """With K = the mask's size: the fraction of the K pixels of largest m (ties by pixel index) inside the mask.

    Returns:
        (N,) float64 in [0, 1]; NaN for an empty mask.
    """
    m, mask, k = _flat(ctx, "relevance_rank_accuracy")
    order = torch.sort(m, dim=1, descending=True, stable=True).indices
    in_top = torch.arange(m.shape[1], device=m.device)[None, :] < k[:, None]  # first K positions of the order
    hits = (mask.gather(1, order) & in_top).sum(dim=1).double()
    return _nan_where(k == 0, hits / k.clamp_min(1))


@register_metric(
    "localisation_auc",
    family="localisation",
    higher_is_better=True,
    defaults={},
    needs_mask=True,
    description="ROC AUC of m as a score for 'pixel in mask' (ties count half).",
)
def localisation_auc(ctx: MetricContext) -> Tensor:
    """Area under the ROC curve of m as a classifier of mask pixels: the probability that a random pixel inside
    the mask has a larger m than a random pixel outside, ties counting half (Mann-Whitney U / (P·Q), computed
    from average ranks).

    Returns:
        (N,) float64 in [0, 1] (0.5 = chance); NaN when the mask is empty or covers the whole image.
    """
    m, mask, p = _flat(ctx, "localisation_auc")
    q = m.shape[1] - p
    ranks = average_ranks(m)  # 1-based, ascending, ties averaged
    u = (ranks * mask).sum(dim=1) - p * (p + 1) / 2
    auc = u / torch.where((p > 0) & (q > 0), p * q, torch.ones_like(p))
    return _nan_where((p == 0) | (q == 0), auc)
