"""Hugging Face transformers image classifiers (optional extra: ``pip install 'sclzoo[transformers]'``).

A transformers repo (``config.json`` with ``model_type`` and ``architectures``, ``model.safetensors``, and
``preprocessor_config.json``) is loaded under the same rules as a timm repo (README.md, "What sclzoo trusts"):

- only built-in model types and ``*ForImageClassification`` heads; a config that names custom code
  (``auto_map``) is refused and ``trust_remote_code`` is never set;
- the model is built on the ``meta`` device first, its size and tensor shapes checked against the weights file,
  then built for real and loaded with ``strict=True``;
- the image processor's settings become a :class:`~sclzoo.zoo.preprocess.DataConfig` (resize, crop,
  mean/std); its normalisation runs inside the wrapped model, like every other model's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.zoo.preprocess import DataConfig

__all__ = ["is_transformers_config", "load_transformers", "TransformersLogits"]

# PIL resample codes as the image processors store them → timm interpolation names
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def is_transformers_config(raw: dict[str, Any]) -> bool:
    """A transformers config names a ``model_type``; a timm/sclzoo config an ``architecture``."""
    return "model_type" in raw and "architecture" not in raw


class TransformersLogits(nn.Module):
    """``model(pixel_values=x).logits``: a transformers classifier as a (N, C, H, W) → (N, K) module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).logits  # type: ignore[no-any-return]


def _size(value: Any, where: str) -> tuple[int, int] | int:
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ModelLoadError(f"{where}: size {value!r} is not {{'height', 'width'}} or {{'shortest_edge'}}")


def data_config(proc: dict[str, Any], channels: int, where: str) -> DataConfig:
    """An image processor's settings as a timm-style data config.

    ``size`` {height, width} → resize to exactly that (``squash``); ``size`` {shortest_edge: s} with a centre
    crop to c → ``crop_pct`` c / s; ``crop_pct`` (ConvNeXt-style) is used as it is.

    Raises:
        ModelLoadError: a size, resample or rescale factor sclzoo cannot reproduce.
    """
    if abs(float(proc.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9 and proc.get("do_rescale", True):
        raise ModelLoadError(f"{where}: rescale_factor {proc['rescale_factor']!r} is not 1/255; sclzoo feeds "
                             "[0, 1] pixels")
    resample = proc.get("resample", 2)
    if resample not in RESAMPLE:
        raise ModelLoadError(f"{where}: resample {resample!r} is not a PIL resample code 0..5")
    size = _size(proc.get("size", 224), where)
    crop_mode, crop_pct = "center", 1.0
    if isinstance(size, tuple):
        h, w = size
        crop_mode = "squash"
    else:
        h = w = size
        if proc.get("crop_pct") is not None:
            crop_pct = float(proc["crop_pct"])
        elif proc.get("do_center_crop") and proc.get("crop_size") is not None:
            crop = _size(proc["crop_size"], where)
            ch, cw = crop if isinstance(crop, tuple) else (crop, crop)
            crop_pct, h, w = ch / size, ch, cw
    normalise = proc.get("do_normalize", True)
    mean = proc.get("image_mean", [0.5] * channels) if normalise else [0.0]
    std = proc.get("image_std", [0.5] * channels) if normalise else [1.0]
    try:
        return DataConfig.from_timm({"input_size": [channels, h, w], "interpolation": RESAMPLE[resample],
                                     "crop_pct": crop_pct, "crop_mode": crop_mode, "mean": mean, "std": std},
                                    where=where)
    except ConfigError as e:
        raise ModelLoadError(str(e)) from None


def load_transformers(path: Path, weights: Path, raw: dict[str, Any], repo: str,
                      shapes: dict[str, tuple[int, ...]], max_parameters: int,
                      preprocess: dict[str, Any] | None) -> tuple[nn.Module, dict[str, Any], DataConfig]:
    """Builds and loads a transformers image classifier; returns (module, config record, data config).

    Raises:
        ModelLoadError: transformers missing, custom code, not an image classifier, a config transformers
            rejects, a model too large, weights that do not fit.
    """
    where = f"config.json of {repo!r}"
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForImageClassification
    except ImportError:
        raise ModelLoadError(f"{repo!r} is a Hugging Face transformers repo; install the extra: pip install "
                             "'sclzoo[transformers]'") from None
    if "auto_map" in raw:
        raise ModelLoadError(f"{where} names custom code (auto_map); sclzoo never runs code from a repo — use a "
                             "built-in model type")
    model_type = raw.get("model_type")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    if not isinstance(model_type, str) or model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES \
            or model_type not in CONFIG_MAPPING_NAMES:
        raise ModelLoadError(f"{where}: model_type {model_type!r} is not a built-in transformers image classifier "
                             f"(transformers {transformers.__version__})")
    archs = raw.get("architectures")
    if not (isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str)
            and archs[0].endswith("ForImageClassification")):
        raise ModelLoadError(f"{where}: architectures {archs!r} is not one *ForImageClassification head")
    channels = raw.get("num_channels", 3)
    if channels not in (1, 3):
        raise ModelLoadError(f"{where}: num_channels {channels!r} must be 1 or 3")
    labels = raw.get("id2label")
    if not isinstance(labels, dict) or not 1 <= len(labels) <= 100_000:
        raise ModelLoadError(f"{where}: id2label must map 1 to 100000 class indices to names")
    try:
        names = [str(labels[str(i)]) for i in range(len(labels))]
    except KeyError:
        raise ModelLoadError(f"{where}: id2label keys must be 0..{len(labels) - 1}") from None
    proc_file = path / "preprocessor_config.json"
    if not proc_file.is_file() and not (preprocess and "input_size" in preprocess):
        raise ModelLoadError(f"{repo!r} has no preprocessor_config.json; add it (image_processor.save_pretrained) "
                             "or pass --input-size C,H,W (and --mean/--std)")
    if proc_file.is_file():
        if proc_file.stat().st_size > 1 << 20:
            raise ModelLoadError(f"preprocessor_config.json of {repo!r} is larger than 1 MB")
        try:
            proc = json.loads(proc_file.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"preprocessor_config.json of {repo!r} is not valid UTF-8 JSON ({e})") from None
        if not isinstance(proc, dict):
            raise ModelLoadError(f"preprocessor_config.json of {repo!r} is not a JSON object")
        dc = data_config(proc, channels, f"preprocessor_config.json of {repo!r}")
    else:
        dc = DataConfig.from_timm({"mean": [0.0], "std": [1.0], "crop_pct": 1.0}, preprocess, where="preprocess")
    if preprocess:
        dc = dc.with_overrides(preprocess)
    try:
        config = AutoConfig.for_model(**{k: v for k, v in raw.items() if k not in ("transformers_version",)})
    except (TypeError, ValueError, KeyError) as e:
        raise ModelLoadError(f"{where} is rejected by transformers ({type(e).__name__}: {e})") from None
    try:
        with torch.device("meta"):
            skeleton = AutoModelForImageClassification.from_config(config)
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError) as e:
        raise ModelLoadError(f"cannot build {archs[0]} of {repo!r} ({type(e).__name__}: {e})") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    n_values = sum(math.prod(s) for s in expected.values())
    del skeleton
    if n_values > max_parameters:
        raise ModelLoadError(f"{archs[0]} of {repo!r} has {n_values:,} parameters and buffers, more than the "
                             f"{max_parameters:,} sclzoo builds; raise SCLZOO_MAX_PARAMETERS")
    if set(shapes) - set(expected) or any(expected.get(k) != v for k, v in shapes.items()):
        bad = sorted(k for k in shapes if expected.get(k) != shapes[k])[:3]
        raise ModelLoadError(f"weights of {repo!r} do not fit {archs[0]} as configured ({bad}); the config and "
                             f"{weights.name} disagree")
    from safetensors.torch import load_file

    net = AutoModelForImageClassification.from_config(config)
    try:
        net.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise ModelLoadError(f"weights of {repo!r} do not fit {archs[0]} ({first}); re-save them with "
                             "save_pretrained") from None
    record = {"architecture": f"transformers:{archs[0]}", "num_classes": len(names), "model_args": {},
              "pretrained_cfg": dc.as_dict(), "label_names": names}
    return TransformersLogits(net.eval()), record, dc
