"""Architectures of the zoo, registered in timm's model registry.

After ``import sclzoo`` (which imports this module once timm is imported: sclzoo/__init__.py)
``timm.create_model("resnet8_cifar", in_chans=1, num_classes=10)`` builds a zoo network, and
``timm.create_model("hf-hub:org/name", pretrained=True)`` loads a published zoo repo.

Every network takes images in **[0, 1] pixel space**; the dataset's mean/std normalisation is the first layer
(:class:`Normalize`), so attribution baselines and perturbations are in pixel units for every model. For the same
reason the timm ``pretrained_cfg`` carries mean 0 / std 1: a timm data pipeline must not normalise twice.

ReLUs are separate, non-inplace modules: captum's DeepLift and GuidedBackprop hook each ReLU module once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

__all__ = ["CifarResNet", "Normalize", "ProjectionHead", "ARCHITECTURES", "MODEL_ARGS", "encode"]


class Normalize(nn.Module):
    """(x − mean) / std per channel, so the model's input stays in [0, 1] pixels.

    Args:
        mean: One value per input channel (or one value broadcast to all).
        std: Same length as ``mean``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs) with its own ReLU modules (no reuse, no inplace)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stride-1 stem, no max-pool, basic blocks (SupContrast's CIFAR ResNet).

    Args:
        layers: Blocks per stage.
        widths: Channels per stage; stage i > 0 halves the resolution.
        in_chans: Input channels (1 for MNIST, 3 for CIFAR).
        num_classes: Classes of the linear head; 0 gives an encoder with no head.
        norm_mean: Per-channel normalisation mean applied inside the model (pixel inputs in [0, 1]).
        norm_std: Per-channel normalisation std.
        drop_rate: Dropout before the head.

    Shapes:
        forward: (N, in_chans, H, W) in [0, 1] → logits (N, num_classes).
        forward_features: → feature map (N, num_features, H', W').
    """

    def __init__(
        self,
        layers: Sequence[int] = (1, 1, 1),
        widths: Sequence[int] = (16, 32, 64),
        in_chans: int = 3,
        num_classes: int = 10,
        norm_mean: Sequence[float] | None = None,
        norm_std: Sequence[float] | None = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length")
        if global_pool != "avg":
            raise ValueError(f"global_pool={global_pool!r} is not supported; use 'avg'")
        mean = list(norm_mean) if norm_mean is not None else [0.0] * in_chans
        std = list(norm_std) if norm_std is not None else [1.0] * in_chans
        if len(mean) == 1 and in_chans > 1:
            mean, std = mean * in_chans, std * in_chans
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = [BasicBlock(prev if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.num_features = prev
        self.head_hidden_size = prev
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        x = self.act1(self.bn1(self.conv1(x)))
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def gradcam_layer(self) -> nn.Module:
        """The layer Grad-CAM explains: this architecture's last stage (docs/protocol.md#grad-cam)."""
        return self.stages[-1]


class ProjectionHead(nn.Module):
    """Contrastive projector Linear(d, d) → ReLU → Linear(d, out) [→ BatchNorm1d(out, affine=False)]; output
    L2-normalised.

    The optional non-affine BatchNorm before the normalisation (``batchnorm=True``) centres and whitens each
    output dimension over the batch, so the projections cannot all collapse onto one point. Batch-hard triplet
    training needs it: without it, the hardest-positive/hardest-negative gradients drive every embedding to the
    same unit vector, where the loss sits at the margin with no gradient left.

    Shapes: (N, d) → (N, out_dim), unit norm rows. Never used for logits or explanations.
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128,
                 batchnorm: bool = False) -> None:
        super().__init__()
        hidden = hidden_dim or in_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_dim)
        self.bn = nn.BatchNorm1d(out_dim, affine=False) if batchnorm else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(self.bn(self.fc2(self.act(self.fc1(h)))), dim=1)


def encode(model: nn.Module, x: Tensor) -> Tensor:
    """Pooled pre-logit features of a timm-style model. Shapes: (N, C, H, W) → (N, num_features)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # first_conv is None on purpose: timm would otherwise "adapt" 1-channel weights as if they were RGB.
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "first_conv": None,
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


def _create(variant: str, pretrained: bool, defaults: dict[str, Any], **kwargs: Any) -> CifarResNet:
    args = {**defaults, **kwargs}
    return build_model_with_cfg(CifarResNet, variant, pretrained, **args)  # type: ignore[no-any-return]


ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet18_cifar": {"layers": (2, 2, 2, 2), "widths": (64, 128, 256, 512)},
    "resnet20_cifar": {"layers": (3, 3, 3), "widths": (16, 32, 64)},
    "resnet8_cifar": {"layers": (1, 1, 1), "widths": (16, 32, 64)},
    # Widths ≥ 8: PyTorch 2.14.1 computes wrong weight gradients on CPU for channels_last 1×1 stride-2 convs with
    # fewer than 8 input channels (seen with 3–6), so the tiny test net stays above that.
    "test_resnet_cifar": {"layers": (1, 1), "widths": (8, 16)},
}
"""Zoo architectures: name → CifarResNet arguments. Each is also a timm model entrypoint."""



def _norm_values(positive: bool) -> Any:
    def check(v: Any) -> bool:
        return (isinstance(v, list) and 1 <= len(v) <= 3
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e3
                        and (x > 0 if positive else True) for x in v))
    check.__doc__ = f"a list of 1 to 3 {'positive ' if positive else ''}numbers"
    return check


def _int_list(hi: int) -> Any:
    def check(v: Any) -> bool:
        return (isinstance(v, list) and 1 <= len(v) <= 6
                and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= hi for x in v))
    check.__doc__ = f"a list of 1 to 6 integers in [1, {hi}]"
    return check


MODEL_ARGS: dict[str, dict[str, Any]] = {
    name: {"norm_mean": _norm_values(False), "norm_std": _norm_values(True), "widths": _int_list(2048),
           "layers": _int_list(16)} for name in ARCHITECTURES
}
"""config.json ``model_args`` keys a zoo architecture accepts beyond timm's generic ones (name → check, with
bounds); the loader (zoo/hub.py) refuses every other key and checks the built size before allocating."""

# timm's @register_model reads this module-level table to attach each entrypoint's default pretrained cfg.
default_cfgs = generate_default_cfgs({name: _cfg() for name in ARCHITECTURES})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with a 3×3 stride-1 stem and no max-pool (~11.2 M parameters)."""
    return _create("resnet18_cifar", pretrained, ARCHITECTURES["resnet18_cifar"], **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks × 3 stages, widths 16/32/64, ~0.27 M parameters)."""
    return _create("resnet20_cifar", pretrained, ARCHITECTURES["resnet20_cifar"], **kwargs)


@register_model
def resnet8_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-8 (1 block × 3 stages, widths 16/32/64, ~78 K parameters): the CPU zoo."""
    return _create("resnet8_cifar", pretrained, ARCHITECTURES["resnet8_cifar"], **kwargs)


@register_model
def test_resnet_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """A tiny 2-stage network (~5 K parameters) for tests."""
    return _create("test_resnet_cifar", pretrained, ARCHITECTURES["test_resnet_cifar"], **kwargs)

