"""Batched, seeded data augmentation on tensors.

Per-sample torchvision transforms cost most of a CPU epoch; here one random affine matrix per image (random
resized crop ∘ rotation ∘ translation ∘ flip) goes through a single ``grid_sample`` call, and Gaussian blur is one
grouped convolution with a per-image kernel. Every draw comes from the generator passed in, so an epoch's
augmentations are a function of (seed, epoch) and a resumed run repeats them exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sclzoo.errors import ConfigError

__all__ = ["AugmentConfig", "augment_batch"]


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
