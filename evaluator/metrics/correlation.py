"""Per-row correlations and similarity of maps, used by several metrics (pure tensor functions)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["average_ranks", "pearson", "spearman", "ssim"]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per row; NaN where either row is constant. Shapes: (N, R), (N, R) → (N,) float64."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    num = (a * b).sum(dim=1)
    return torch.where(
        den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(den, math.nan)
    )


def average_ranks(v: Tensor) -> Tensor:
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
    return pearson(average_ranks(a.double()), average_ranks(b.double()))


def _valid_filter_matrix(n: int, g: Tensor) -> Tensor:
    """(n − k + 1, n) matrix whose row i holds the 1-d window ``g`` (k taps) at columns i..i+k−1: a valid
    convolution along one axis of length n as a matrix product."""
    k = g.numel()
    rows = n - k + 1
    cols = torch.arange(rows, device=g.device)[:, None] + torch.arange(k, device=g.device)[None, :]
    return torch.zeros(rows, n, dtype=g.dtype, device=g.device).scatter_(1, cols, g.expand(rows, k))


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) of two single-channel maps per sample.

    Gaussian window of ``window`` pixels (σ = ``sigma``), shrunk to the largest odd size that fits small maps;
    valid convolution (no padding); K1 = 0.01, K2 = 0.03; local (co)variances without Bessel correction.
    ``data_range`` L = max(a, b) − min(a, b) over both maps jointly, per sample: the maps have no fixed range.
    Two identical constant maps give L = 0 and an undefined 0/0, returned as NaN.

    The Gaussian window is separable, so the five local means (of a, b, a², b², ab) are two matrix products per
    map, G_h · M · G_wᵀ, with banded matrices G: the same sums as a 2-d convolution up to float64 rounding
    (~1e-16), and 6-17× faster on a CPU, where float64 convolutions have no fast kernel (README.md, "Speed").

    Shapes: (N, H, W), (N, H, W) → (N,) float64.
    """
    a = a.double()
    b = b.double()
    h, w = a.shape[-2:]
    size = min(window, h, w)
    size -= 1 - size % 2  # odd, so the window has a centre
    coords = torch.arange(size, dtype=torch.float64, device=a.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    data_range = torch.maximum(flat_a.amax(1), flat_b.amax(1)) - torch.minimum(flat_a.amin(1), flat_b.amin(1))
    c1 = ((0.01 * data_range) ** 2).view(-1, 1, 1)
    c2 = ((0.03 * data_range) ** 2).view(-1, 1, 1)
    maps = torch.stack([a, b, a * a, b * b, a * b])  # (5, N, H, W)
    local = _valid_filter_matrix(h, g) @ maps @ _valid_filter_matrix(w, g).T
    mu_a, mu_b, mean_aa, mean_bb, mean_ab = local.unbind(0)
    var_a = mean_aa - mu_a**2
    var_b = mean_bb - mu_b**2
    cov = mean_ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1)
