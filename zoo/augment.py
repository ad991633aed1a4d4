"""Batched, seeded data augmentation on tensors.

Per-sample torchvision transforms cost most of a CPU epoch; here one random affine matrix per image (random
resized crop ∘ rotation ∘ translation ∘ flip) goes through a single ``grid_sample`` call, and Gaussian blur is one
grouped convolution with a per-image kernel. Every draw comes from the generator passed in, so an epoch's
augmentations are a function of (seed, epoch) and a resumed run repeats them exactly.

Patch deletion (:func:`delete_patches`, configured by :class:`sclzoo.deletion.PatchDeletionConfig`) sets random
cells of a g x g grid to a deletion value: trained with it, a model has seen the inputs the ``single_deletion``
metric feeds it, so its score is in domain (docs/training.md#patch-deletion).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sclzoo.deletion import PatchDeletionConfig
from sclzoo.errors import ConfigError

__all__ = ["AugmentConfig", "augment_batch", "delete_patches", "grid_cells"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation recipe; every field is recorded in training.json.

    Attributes:
        crop_scale: Random resized crop area fraction range.
        crop_ratio: Aspect ratio range of the crop (log-uniform). Even with ``crop_scale`` (1, 1) a ratio ≠ 1
            stretches one axis by up to ~15 %; the crop is off only when both are (1, 1).
        rotate_deg: Rotation drawn uniformly in ±rotate_deg.
        translate_px: Translation drawn uniformly in ±translate_px pixels (both axes).
        hflip: Flip horizontally with p = 0.5 (not for digits).
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Blur σ range in pixels.
        color_jitter_p: Probability of brightness/contrast jitter (colour data).
        color_jitter: Strength of brightness and contrast jitter.
        grayscale_p: Probability of converting a colour image to grey.
    """

    crop_scale: tuple[float, float] = (1.0, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    rotate_deg: float = 0.0
    translate_px: float = 0.0
    hflip: bool = False
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    color_jitter_p: float = 0.0
    color_jitter: float = 0.4
    grayscale_p: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "augment") -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in [{where}]; known keys: {sorted(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def is_identity(self) -> bool:
        return self == AugmentConfig(crop_ratio=self.crop_ratio, blur_sigma=self.blur_sigma,
                                     color_jitter=self.color_jitter)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment_batch(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Applies one random augmentation per image.

    Args:
        x: (N, C, H, W) images in [0, 1] (CPU or GPU).
        cfg: The recipe.
        gen: CPU generator; all random numbers are drawn from it, on the CPU, in a fixed order.

    Returns:
        (N, C, H, W) augmented images, same device and dtype.
    """
    if cfg.is_identity:
        return x
    n, c, h, w = x.shape
    # Random resized crop: the crop's width/height as fractions of the image, its centre inside the image.
    area = _uniform(gen, n, *cfg.crop_scale)
    log_r = _uniform(gen, n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = torch.exp(log_r)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - sw) * (2 * torch.rand(n, generator=gen) - 1)
    cy = (1 - sh) * (2 * torch.rand(n, generator=gen) - 1)
    ang = torch.deg2rad(_uniform(gen, n, -cfg.rotate_deg, cfg.rotate_deg))
    tx = _uniform(gen, n, -cfg.translate_px, cfg.translate_px) * 2 / w
    ty = _uniform(gen, n, -cfg.translate_px, cfg.translate_px) * 2 / h
    flip = (torch.rand(n, generator=gen) < 0.5) if cfg.hflip else torch.zeros(n, dtype=torch.bool)
    fx = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # theta maps output coordinates to input coordinates (normalised [-1, 1]).
    theta = torch.stack(
        [
            torch.stack([sw * cos * fx, -sh * sin, cx + tx], 1),
            torch.stack([sw * sin * fx, sh * cos, cy + ty], 1),
        ],
        1,
    ).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    if cfg.color_jitter_p > 0 and c > 1:
        apply = (torch.rand(n, generator=gen) < cfg.color_jitter_p).to(x.device)
        b = _uniform(gen, n, 1 - cfg.color_jitter, 1 + cfg.color_jitter).to(x.device).view(n, 1, 1, 1)
        k = _uniform(gen, n, 1 - cfg.color_jitter, 1 + cfg.color_jitter).to(x.device).view(n, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((out * b - mean) * k + mean).clamp(0, 1)
        out = torch.where(apply.view(n, 1, 1, 1), jittered, out)
    if cfg.grayscale_p > 0 and c > 1:
        apply = (torch.rand(n, generator=gen) < cfg.grayscale_p).to(x.device)
        grey = out.mean(dim=1, keepdim=True).expand_as(out)
        out = torch.where(apply.view(n, 1, 1, 1), grey, out)
    if cfg.blur_p > 0:
        apply = torch.rand(n, generator=gen) < cfg.blur_p
        sigma = _uniform(gen, n, *cfg.blur_sigma)
        radius = max(1, math.ceil(2 * cfg.blur_sigma[1]))
        radius = min(radius, (min(h, w) - 1) // 2)
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k1 = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
        k1 = k1 / k1.sum(1, keepdim=True)
        k1 = torch.where(apply[:, None], k1, (t == 0).float()[None, :])  # identity kernel when not applied
        k1 = k1.to(device=x.device, dtype=x.dtype).repeat_interleave(c, 0)  # (N*C, K)
        flat = out.reshape(1, n * c, h, w)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), k1.view(n * c, 1, 1, -1), groups=n * c)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), k1.view(n * c, 1, -1, 1), groups=n * c)
        out = flat.view(n, c, h, w)
    return out


def grid_cells(h: int, w: int, g: int) -> Tensor:
    """The cell index of every pixel of a g x g grid over an (h, w) image.

    Cells are ``ceil(h / g)`` x ``ceil(w / g)`` pixels, numbered row-major; the last row/column of cells is smaller
    when g does not divide the side.

    Returns:
        (h, w) long tensor with values in [0, g²).

    Raises:
        ConfigError: the grid would leave a row or column of empty cells (a side shorter than g, or e.g. h = 9
            with g = 4: cells of 3 rows fill the image after 3 rows of cells).
    """
    ch, cw = -(-h // g), -(-w // g)
    if h < g or w < g or (g - 1) * ch >= h or (g - 1) * cw >= w:
        raise ConfigError(f"a {g} x {g} grid does not fit a {h} x {w} image without empty cells; "
                          f"use a grid g with (g - 1) * ceil(side / g) < side for both sides")
    rows = torch.arange(h) // ch
    cols = torch.arange(w) // cw
    return rows[:, None] * g + cols[None, :]


def delete_patches(x: Tensor, cfg: PatchDeletionConfig, gen: torch.Generator) -> Tensor:
    """Sets k random grid cells of some images to ``cfg.value`` (one draw per image, no loop over pixels).

    Each image is chosen with probability ``cfg.p``; a chosen image gets k ~ U{1, …, g² − 1} cells, drawn
    uniformly without replacement (the k smallest of g² uniform scores), set to the value in every channel.

    Args:
        x: (N, C, H, W) images.
        cfg: The recipe.
        gen: CPU generator; draws, in this order, N uniforms (apply), N integers (k), N·g² uniforms (cells).
            Nothing is drawn when ``cfg.p`` is 0.

    Returns:
        (N, C, H, W), same device and dtype; ``x`` itself when ``cfg.p`` is 0.
    """
    if cfg.p == 0.0:
        return x
    n, _, h, w = x.shape
    g2 = cfg.grid * cfg.grid
    cell = grid_cells(h, w, cfg.grid)
    apply = torch.rand(n, generator=gen) < cfg.p
    k = torch.randint(1, g2, (n,), generator=gen)
    scores = torch.rand(n, g2, generator=gen)
    rank = scores.argsort(1).argsort(1)  # rank of each cell's score within its image
    deleted = (rank < k[:, None]) & apply[:, None]  # (N, g²)
    mask = deleted[:, cell].to(x.device)  # (N, H, W)
    return torch.where(mask[:, None], torch.as_tensor(cfg.value, dtype=x.dtype, device=x.device), x)
