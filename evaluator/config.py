"""The one frozen configuration of an evaluation run, and its canonical hash.

Built from CLI options, a TOML config file (``--config eval.toml``), a preset, or Python kwargs; written verbatim
into every result. The hash of its scoring-relevant part names the result file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sclzoo.errors import ConfigError
from sclzoo.tomlfile import read_toml
from sclzoo.vocab import SELECTIONS  # how images are picked -> the name the canonical config records

__all__ = ["EvalConfig", "PRESETS", "build_config", "load_config_file"]

TARGETS = ("predicted", "label")
RUNTIMES = ("torch", "onnx")
#: Arithmetic of model forwards and explanations (docs/protocol.md#precision); fp32 is the default.
PRECISIONS = ("fp32", "bf16", "fp16")
# Execution-only settings: they change speed, never scores (per-sample seeding makes scores independent of
# batching and device placement), so they are recorded but left out of the hash.
EXECUTION_KEYS = ("batch_size", "batch_size_auto", "device", "runtime")
MAX_SEED = 2**63 - 1  # seeds are non-negative 64-bit integers (numpy and torch generators)

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "n_samples": 32,
        "methods": ("saliency", "integrated_gradients", "gradcam"),
        "metrics": (
            "faithfulness_correlation",
            "deletion_auc",
            "sparseness",
            "complexity",
            "max_sensitivity",
        ),
    },
    "standard": {
        "n_samples": 64,
        "methods": ("saliency", "integrated_gradients", "gradcam"),
        "metrics": (
            "faithfulness_correlation",
            "deletion_auc",
            "insertion_auc",
            "single_deletion",
            "sparseness",
            "complexity",
            "effective_complexity",
            "max_sensitivity",
            "avg_sensitivity",
        ),
    },
    "paper": {
        "n_samples": 256,
        "methods": (
            "saliency",
            "input_x_gradient",
            "integrated_gradients",
            "gradient_shap",
            "deeplift",
            "guided_backprop",
            "smoothgrad",
            "gradcam",
            "occlusion",
        ),
        "metrics": (
            "faithfulness_correlation",
            "deletion_auc",
            "insertion_auc",
            "infidelity",
            "sparseness",
            "complexity",
            "effective_complexity",
            "max_sensitivity",
            "avg_sensitivity",
            "local_lipschitz_estimate",
        ),
    },
}


@dataclass(frozen=True)
class EvalConfig:
    """Everything that defines an evaluation.

    Attributes:
        dataset: Dataset id; None = the model's own training dataset (from its config).
        split: Dataset split whose images are explained; None = ``test``, or the whole folder (``all``) for an
            image folder without train/val/test sub-folders.
        n_samples: Number of images.
        selection: ``first`` (the first N images of the split) or ``stratified`` (a seeded subset with the same
            number of images per class).
        methods: Attribution method names.
        metrics: Metric names.
        method_params: Per-method parameter overrides ``{method: {param: value}}``.
        metric_params: Per-metric parameter overrides.
        target: ``predicted`` (explain the predicted class) or ``label`` (the true class).
        seed: Global seed of every random draw (per-sample generators derive from it).
        batch_size: Images per attribution batch, or ``auto`` (64 on CPU; on CUDA the largest power of two whose
            measured explanation memory fits 60 % of the free GPU memory, at most 1024). Execution only.
        device: ``auto``, ``cpu`` or ``cuda`` (execution only).
        runtime: ``torch``, or ``onnx``: forward-only work in onnxruntime and, on a CPU, explanations in the
            channels_last layout (execution only; scores equal ``torch``'s to 1e-5).
        mask: The ground-truth mask kind the localisation metrics compare maps with (``box`` or ``ink`` for
            ``mnist5k-clutter``); None = the dataset's default. Only for a run that selects such a metric, and
            only then recorded in the canonical config (so configs without one keep their hash).
        precision: ``fp32``, or ``bf16``/``fp16``: model forwards and explanations under ``torch.autocast`` of that
            type, attributions and scores still accumulated in fp32 (fp16 on CUDA only). It changes scores, so it
            is part of the config hash, recorded only when it is not fp32 (so fp32 configs keep their hash).
    """

    dataset: str | None = None
    split: str | None = None
    n_samples: int = 64
    selection: str = "first"
    methods: tuple[str, ...] = PRESETS["standard"]["methods"]
    metrics: tuple[str, ...] = PRESETS["standard"]["metrics"]
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: str = "predicted"
    seed: int = 0
    batch_size: int | str = 64
    device: str = "auto"
    runtime: str = "torch"
    mask: str | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"target {self.target!r} is unknown; use one of {', '.join(TARGETS)}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection {self.selection!r} is unknown; use one of {', '.join(SELECTIONS)}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r} is unknown; use one of {', '.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if self.precision != "fp32" and self.runtime == "onnx":
            raise ConfigError(f"--precision {self.precision} runs the PyTorch model under autocast, but --runtime "
                              "onnx runs the exported fp32 graph; use --runtime torch with it (or --precision fp32)")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise ConfigError(f"n_samples must be a positive integer, got {self.n_samples!r}")
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                          or self.batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if self.mask is not None and (not isinstance(self.mask, str) or not self.mask):
            raise ConfigError(f"mask must be the name of a ground-truth mask kind (box, ink), got {self.mask!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:  # numpy's and torch's generators take no negative seed
            raise ConfigError(f"seed {self.seed} is out of range; pass --seed 0 or another integer from 0 to "
                              f"{MAX_SEED} (2**63 - 1)")
        if not self.methods:
            raise ConfigError("no attribution method selected; pass --methods (see `sclzoo ls methods`)")
        if not self.metrics:
            raise ConfigError("no metric selected; pass --metrics (see `sclzoo ls metrics`)")
        for name in ("methods", "metrics"):
            v = getattr(self, name)
            if isinstance(v, str) or not all(isinstance(s, str) for s in v):
                raise ConfigError(f"{name} must be a list of names, got {v!r}")
            if len(set(v)) != len(v):
                raise ConfigError(f"{name} lists a name twice: {list(v)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> EvalConfig:
        """Builds a config from a mapping (config file or kwargs), rejecting unknown keys and wrong types."""
        d = dict(d)
        preset = d.pop("preset", None)
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"preset {preset!r} is unknown in {where}; use one of {', '.join(PRESETS)}")
            base = dict(PRESETS[preset])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in {where}; known keys: {sorted(known | {'preset'})}"
            )
        base.update(d)
        for k in ("methods", "metrics"):
            if k in base:
                v = base[k]
                if isinstance(v, str):
                    v = [s.strip() for s in v.split(",") if s.strip()]
                if not isinstance(v, (list, tuple)):
                    raise ConfigError(f"{where}: {k} must be a list of names, got {v!r}")
                base[k] = tuple(v)
        for k in ("method_params", "metric_params"):
            if k in base and (
                not isinstance(base[k], dict) or not all(isinstance(v, dict) for v in base[k].values())
            ):
                raise ConfigError(f"{where}: {k} must be a table of tables {{name: {{param: value}}}}")
        for k, typ in (
            ("dataset", (str, type(None))),
            ("split", (str, type(None))),
            ("selection", str),
            ("target", str),
            ("device", str),
            ("runtime", str),
            ("mask", (str, type(None))),
            ("precision", str),
        ):
            if k in base and not isinstance(base[k], typ):
                raise ConfigError(f"{where}: {k} must be a string, got {base[k]!r}")
        try:
            return cls(**base)
        except ConfigError as e:
            if where in ("config", "options"):
                raise
            raise ConfigError(f"{where}: {e}") from None

    def replace(self, **changes: Any) -> EvalConfig:
        return replace(self, **changes)

    def canonical(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """The config as recorded in a result: methods/metrics with their full resolved parameters.

        Args:
            resolved: ``{"dataset": id, "methods": {name: params}, "metrics": {name: {"version": v, **params}}}``,
                optionally ``"split"`` (the split evaluated), ``"indices_sha256"`` (hash of the evaluated sample ids,
                so the config hash pins the images), ``"device"``, ``"preprocess"`` (how images were brought to
                the model's input, when that is not the identity), ``"class_map"`` (dataset class → model
                logit) and ``"mask"`` (the ground-truth kind, when a selected metric uses one).
        """
        canonical = {
            "dataset": resolved["dataset"],
            "split": resolved.get("split", self.split or "test"),
            "n_samples": self.n_samples,
            "selection": SELECTIONS[self.selection],
            "target": self.target,
            "seed": self.seed,
            "methods": resolved["methods"],
            "metrics": resolved["metrics"],
            "batch_size": self.batch_size,
            "device": resolved.get("device", self.device),
            "runtime": self.runtime,
        }
        for key in ("indices_sha256", "preprocess", "class_map", "mask"):
            if resolved.get(key) is not None:
                canonical[key] = resolved[key]
        if self.precision != "fp32":  # fp32 configs keep the hash they had before precision existed
            canonical["precision"] = self.precision
        return canonical

    @staticmethod
    def hash_of(canonical: dict[str, Any]) -> str:
        """sha256 of the canonical JSON of the scoring-relevant part of a canonical config."""
        scoring = {k: v for k, v in canonical.items() if k not in EXECUTION_KEYS}
        blob = json.dumps(scoring, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads an evaluation config TOML file into a mapping (validated by :meth:`EvalConfig.from_dict`)."""
    return read_toml(path, "config file")


def build_config(config: EvalConfig | None = None, preset: str | None = None, config_file: str | Path | None = None,
                 **kwargs: Any) -> EvalConfig:
    """One frozen config from a preset, a TOML file and keyword overrides (later ones win)."""
    if config is not None:
        return config.replace(**kwargs) if kwargs else config
    d: dict[str, Any] = {}
    if preset is not None:
        d["preset"] = preset
    if config_file is not None:
        file_d = load_config_file(config_file)
        d = {**d, **file_d}
    d.update({k: v for k, v in kwargs.items() if v is not None})
    return EvalConfig.from_dict(d, where=str(config_file) if config_file else "options")
