"""Preprocessing that follows the model: timm's data config, applied in [0, 1] pixel space.

sclzoo explains the **[0, 1] image at the model's input size** (docs in README.md, "Evaluate your own model").
So the data config of a model is split in two:

- the *image* part (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode`` and the channel count) turns a
  dataset image into the explained tensor. It is timm's own eval transform (``timm.data.resolve_data_config`` +
  ``timm.data.create_transform``) with mean 0 and std 1, so pixels stay in [0, 1];
- the *normalisation* part (``mean``, ``std``) runs inside the wrapped model (:class:`PixelModel`), so
  attributions, baselines and perturbations are in pixel units for every model.

The result is numerically timm's pipeline: ``model(normalize(t(img))) == PixelModel(model)(t01(img))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sclzoo.errors import ConfigError

__all__ = ["DataConfig", "PixelModel", "to_channels", "INTERPOLATIONS", "CROP_MODES"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")
MAX_SIDE = 4096  # no zoo or timm classifier takes larger inputs; larger values are refused before allocation
# ITU-R 601-2 luma, the weights PIL's convert("L") uses, so tensor and PIL datasets turn grey the same way.
LUMA = (0.299, 0.587, 0.114)


def _floats(value: Any, name: str, where: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ConfigError(f"{where}: {name} must be 1 to 3 finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class DataConfig:
    """How images reach a model (timm's data config).

    Attributes:
        input_size: (C, H, W) of the model's input.
        interpolation: Resize interpolation (one of :data:`INTERPOLATIONS`).
        crop_pct: Centre-crop fraction: images are resized to ``floor(H / crop_pct)`` then cropped to H.
        crop_mode: ``center``, ``squash`` (resize to H×W, no crop) or ``border``.
        mean: Per-channel mean of the normalisation inside the model.
        std: Per-channel std (all > 0).
    """

    input_size: tuple[int, int, int]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        where = "data config"
        size = self.input_size
        if (not isinstance(size, (tuple, list)) or len(size) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
            raise ConfigError(f"{where}: input_size must be three integers (C, H, W), got {size!r}")
        c, h, w = size
        if c not in (1, 3):
            raise ConfigError(f"{where}: input_size {tuple(size)} has {c} channels; sclzoo feeds 1-channel "
                              "(grey) or 3-channel (RGB) images")
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise ConfigError(f"{where}: input_size {tuple(size)} is outside 1..{MAX_SIDE} pixels per side")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"{where}: interpolation {self.interpolation!r} is unknown; use one of "
                              f"{', '.join(INTERPOLATIONS)}")
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"{where}: crop_mode {self.crop_mode!r} is unknown; use one of {', '.join(CROP_MODES)}")
        if (isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, (int, float))
                or not 0.05 <= self.crop_pct <= 2.0):
            raise ConfigError(f"{where}: crop_pct {self.crop_pct!r} must be a number in [0.05, 2]")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, c):
                raise ConfigError(f"{where}: {name} {list(v)} has {len(v)} values for {c} input channels; give "
                                  f"1 or {c}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"{where}: std {list(self.std)} must be > 0")

    @classmethod
    def from_timm(cls, pretrained_cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                  where: str = "pretrained_cfg") -> DataConfig:
        """Resolves timm's data config from a ``pretrained_cfg`` mapping (+ overrides), then validates it.

        Raises:
            ConfigError: a value has the wrong type, length or range (checked before timm sees it).
        """
        from timm.data import resolve_data_config

        over = dict(overrides or {})
        unknown = sorted(set(over) - {"input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std"})
        if unknown:
            raise ConfigError(f"unknown preprocessing key(s) {unknown}; known: input_size, interpolation, crop_pct, "
                              "crop_mode, mean, std")
        cfg: dict[str, Any] = {}
        for key in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std"):
            src, value = (over, over[key]) if key in over else (pretrained_cfg, pretrained_cfg.get(key))
            if value is None:
                continue
            label = f"{where if src is pretrained_cfg else 'preprocessing override'}"
            if key == "input_size":
                if (not isinstance(value, (list, tuple)) or len(value) != 3
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                    raise ConfigError(f"{label}: input_size must be three integers (C, H, W), got {value!r}")
                value = tuple(value)
            elif key in ("mean", "std"):
                value = _floats(value, key, label)
            elif key == "crop_pct":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{label}: crop_pct must be a number, got {value!r}")
            elif not isinstance(value, str):
                raise ConfigError(f"{label}: {key} must be a string, got {value!r}")
            cfg[key] = value
        if "input_size" not in cfg:
            raise ConfigError(f"{where} has no input_size; pass one, e.g. --input-size 3,224,224")
        c = cfg["input_size"][0]
        # resolve_data_config fills what is missing (ImageNet mean/std, crop 0.875, bicubic) as timm would.
        resolved = resolve_data_config(args={}, pretrained_cfg={**cfg})
        mean = tuple(cfg.get("mean", resolved["mean"]))
        std = tuple(cfg.get("std", resolved["std"]))
        if len(mean) != c and "mean" not in cfg:  # timm's ImageNet default on a grey model: one averaged value
            mean = (sum(mean) / len(mean),)
        if len(std) != c and "std" not in cfg:
            std = (sum(std) / len(std),)
        return cls(input_size=tuple(int(v) for v in resolved["input_size"]),  # type: ignore[arg-type]
                   interpolation=str(resolved["interpolation"]), crop_pct=float(resolved["crop_pct"]),
                   crop_mode=str(resolved.get("crop_mode", "center")), mean=mean, std=std)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> DataConfig:
        """A copy with some fields replaced (validated)."""
        if not overrides:
            return self
        return DataConfig.from_timm(self.as_dict(), overrides, where="data config")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"], d["mean"], d["std"] = list(self.input_size), list(self.mean), list(self.std)
        return d

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def normalises(self) -> bool:
        """Whether the normalisation is not the identity (mean 0, std 1)."""
        return any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std)

    def resizes(self, height: int, width: int) -> bool:
        """Whether an image of ``height × width`` is changed by the resize/crop (not at the input size already,
        or a crop_pct other than 1 in centre mode)."""
        _, h, w = self.input_size
        if (height, width) != (h, w):
            return True
        return self.crop_mode != "squash" and self.crop_pct != 1.0

    def image_transform(self) -> Any:
        """timm's eval transform to the model's input size, without normalisation: PIL image → [0, 1] tensor."""
        from timm.data import create_transform

        c = self.channels
        return create_transform(input_size=self.input_size, is_training=False, interpolation=self.interpolation,
                                crop_pct=self.crop_pct, crop_mode=self.crop_mode, mean=(0.0,) * c, std=(1.0,) * c)

    def record(self, height: int, width: int, channels: int) -> dict[str, Any]:
        """What the result records about how images of a dataset reached this model."""
        return {**self.as_dict(), "source_size": [channels, height, width],
                "resized": self.resizes(height, width), "channels_converted": channels != self.channels}

    def replace(self, **changes: Any) -> DataConfig:
        return replace(self, **changes)


def pil_mode(channels: int) -> str:
    return {1: "L", 3: "RGB"}[channels]


def to_channels(x: Tensor, channels: int) -> Tensor:
    """Converts (N, C, H, W) [0, 1] images to ``channels`` (grey ↔ RGB), as PIL's convert does.

    Grey → RGB repeats the channel; RGB → grey takes the ITU-R 601-2 luma of the first three channels.
    """
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.repeat(1, channels, 1, 1)
    rgb = x[:, :3]
    if channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (rgb * w).sum(1, keepdim=True)
    return rgb.contiguous()


def transform_tensors(images: Tensor, dc: DataConfig) -> Tensor:
    """Brings in-memory [0, 1] images (N, C, H, W) to the model's input: channels, then timm's resize/crop.

    The resize goes through PIL on 8-bit images, exactly as for image files (datasets held as tensors come from
    8-bit sources); images already at the input size with crop_pct 1 are only channel-converted (bit-exact).
    """
    x = to_channels(images, dc.channels)
    n, _, h, w = x.shape
    if not dc.resizes(h, w):
        return x
    from PIL import Image

    t = dc.image_transform()
    mode = pil_mode(dc.channels)
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for a in arr:
        img = Image.fromarray(a[..., 0] if dc.channels == 1 else a, mode=mode)
        out.append(t(img))
    return torch.stack(out) if out else torch.zeros(0, *dc.input_size)


class PixelModel(nn.Module):
    """``model((x − mean) / std)``: a classifier that takes [0, 1] pixels (the protocol's input).

    ``gradcam_layer()`` and ``feature_info`` are found through the wrapped model (see
    :func:`sclzoo.evaluator.attributions.gradcam_layer`).

    Shapes: (N, C, H, W) in [0, 1] → logits (N, K).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def content_sha256(images: Tensor, labels: Tensor, class_names: Sequence[str]) -> str:
    """sha256 of evaluated pixels (float32, C order), labels (int64) and class names: a dataset's identity."""
    import hashlib

    h = hashlib.sha256(b"sclzoo-dataset-v1\0")
    h.update(np.asarray(list(images.shape), dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(images.numpy(), dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(labels.numpy(), dtype="<i8").tobytes())
    h.update("\0".join(class_names).encode())
    return h.hexdigest()
