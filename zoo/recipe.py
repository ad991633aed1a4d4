"""Training recipes: one TOML file per zoo entry holds every hyper-parameter.

``sclzoo train --config zoo/recipes/<name>.toml`` reproduces a checkpoint; the parsed recipe is written
verbatim into the repo's ``training.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sclzoo.deletion import PatchDeletionConfig
from sclzoo.errors import ConfigError
from sclzoo.tomlfile import read_toml
from sclzoo.zoo.augment import AugmentConfig

__all__ = ["OptimConfig", "ProbeConfig", "Recipe", "load_recipe"]

SCHEDULES = ("onecycle", "cosine", "step")
BN_STATS = ("train", "clean")


def _check_keys(cls: type, d: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where} must be true or false, got {v!r}")
    return v


def _typed(cls: type, d: dict[str, Any], where: str) -> Any:
    _check_keys(cls, d, where)
    out = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        default = getattr(cls, f.name, None) if not callable(getattr(cls, f.name, None)) else None
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ConfigError(f"{where}.{f.name} must be true/false, got {v!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}.{f.name} must be a number, got {v!r}")
            if isinstance(default, int) and isinstance(v, float) and not v.is_integer():
                raise ConfigError(f"{where}.{f.name} must be an integer, got {v!r}")
            v = type(default)(v)
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        out[f.name] = v
    return cls(**out)


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum and a per-step learning-rate schedule.

    Attributes:
        epochs: Passes over the training images.
        batch_size: Images per step (each gives two views for contrastive pre-training).
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        schedule: ``onecycle`` (linear warm-up to ``lr`` over ``warmup_frac``, cosine down), ``cosine``
            (optional linear warm-up of ``warmup_epochs``) or ``step`` (×``step_gamma`` at ``step_epochs``).
        warmup_epochs: Linear warm-up epochs for ``cosine``.
        warmup_frac: Warm-up share of the steps for ``onecycle``.
        step_epochs: Epochs at which ``step`` multiplies the rate by ``step_gamma``.
        step_gamma: Factor of each step.
    """

    epochs: int = 15
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_epochs: int = 0
    warmup_frac: float = 0.25
    step_epochs: tuple[int, ...] = ()
    step_gamma: float = 0.2

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"epochs, batch_size and lr must be positive, got {self.epochs}, "
                              f"{self.batch_size}, {self.lr}")


@dataclass(frozen=True)
class ProbeConfig:
    """Linear probe on the frozen encoder, one recipe for every contrastive objective."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=20, lr=0.5, weight_decay=0.0,
                                                                   schedule="cosine"))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Train the head on standardised features (each feature's mean and std over the clean training images, frozen
    # encoder), then fold the standardisation into the head's weights: the exported model is still encoder +
    # Linear (docs/training.md#standardised-probe).
    standardize: bool = False


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a zoo checkpoint.

    Attributes:
        name: Zoo name ``<arch>.<objective>_<dataset>``.
        arch: A timm model name (zoo architectures are registered in timm).
        dataset: Registered dataset name.
        objective: Registered objective name.
        seed: Seeds initialisation, shuffling and augmentation.
        val_size: Images held out of the train split (stratified, seeded) to report validation accuracy.
        model_args: Extra keyword arguments of the architecture.
        loss: Objective parameters (τ, τ_b, label smoothing).
        optim: Pre-training (contrastive) or end-to-end (CE) optimisation.
        augment: Augmentation of pre-training / CE training.
        views: Views per image for contrastive pre-training.
        projector_hidden: Hidden width of the projector (0 = the encoder's feature width).
        projector_dim: Output width of the projector.
        projector_bn: A non-affine BatchNorm on the projector's output before the L2 normalisation (stops batch-hard
            triplet training from collapsing all embeddings onto one point; off for SupCon and SimCLR).
        probe: Linear-probe recipe (contrastive objectives only).
        license: License of the trained weights.
        patch_deletion: Patch deletion (``[patch_deletion]``), applied after ``augment`` to every training view:
            CE training, contrastive pre-training and the linear probe alike. ``None`` (no table) = off.
        bn_stats: ``train`` keeps BatchNorm's running averages from training; ``clean`` re-estimates them on the
            clean (unaugmented) training images once the network is trained (CE) or pre-trained (contrastive,
            before the probe), which restores the clean accuracy that patch deletion's mixed batches cost.
        fresh_clutter: For a dataset generated with clutter (``mnist5k-clutter``): every training view places the
            image's clean digit on a new canvas among newly drawn fragments (``zoo/clutter.py``'s generator with
            fresh draws), before ``augment``; two views of one image then share the digit and nothing else
            (docs/training.md#fresh-clutter).
    """

    name: str
    arch: str
    dataset: str
    objective: str
    seed: int = 0
    val_size: int = 400
    model_args: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    views: int = 2
    projector_hidden: int = 0
    projector_dim: int = 128
    projector_bn: bool = False
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    license: str = "apache-2.0"
    patch_deletion: PatchDeletionConfig | None = None
    bn_stats: str = "train"
    fresh_clutter: bool = False

    def __post_init__(self) -> None:
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"bn_stats {self.bn_stats!r} is unknown; use one of {', '.join(BN_STATS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "recipe") -> Recipe:
        d = dict(d)
        _check_keys(cls, d, where)
        for key in ("name", "arch", "dataset", "objective"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ConfigError(f"{where} needs a string {key!r} (got {d.get(key)!r})")
        kw: dict[str, Any] = {k: d[k] for k in ("name", "arch", "dataset", "objective", "license") if k in d}
        for k in ("seed", "val_size", "views", "projector_hidden", "projector_dim"):
            if k in d:
                if isinstance(d[k], bool) or not isinstance(d[k], int):
                    raise ConfigError(f"{where}.{k} must be an integer, got {d[k]!r}")
                kw[k] = d[k]
        for k in ("projector_bn", "fresh_clutter"):
            if k in d:
                kw[k] = _bool(d[k], f"{where}.{k}")
        for k in ("model_args", "loss"):
            if k in d:
                if not isinstance(d[k], dict):
                    raise ConfigError(f"{where}.{k} must be a table, got {d[k]!r}")
                kw[k] = dict(d[k])
        if "optim" in d:
            kw["optim"] = _typed(OptimConfig, d["optim"], f"{where}.optim")
        if "augment" in d:
            kw["augment"] = AugmentConfig.from_dict(d["augment"], f"{where}.augment")
        if "probe" in d:
            p = dict(d["probe"])
            _check_keys(ProbeConfig, p, f"{where}.probe")
            kw["probe"] = ProbeConfig(
                optim=_typed(OptimConfig, p.get("optim", {}), f"{where}.probe.optim")
                if "optim" in p else ProbeConfig().optim,
                augment=AugmentConfig.from_dict(p.get("augment", {}), f"{where}.probe.augment"),
                standardize=_bool(p.get("standardize", False), f"{where}.probe.standardize"),
            )
        if "bn_stats" in d:
            if not isinstance(d["bn_stats"], str):
                raise ConfigError(f"{where}.bn_stats must be one of {', '.join(BN_STATS)}, got {d['bn_stats']!r}")
            kw["bn_stats"] = d["bn_stats"]
        if "patch_deletion" in d:
            kw["patch_deletion"] = PatchDeletionConfig.from_dict(d["patch_deletion"], f"{where}.patch_deletion")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Absent when off, so the training.json of a recipe without them is what it was before these options.
        if self.patch_deletion is None:
            del d["patch_deletion"]
        else:
            d["patch_deletion"] = self.patch_deletion.to_dict()
        if self.bn_stats == "train":
            del d["bn_stats"]
        if not self.fresh_clutter:
            del d["fresh_clutter"]
        d["augment"] = self.augment.to_dict()
        d["probe"] = {"optim": _plain(asdict(self.probe.optim)), "augment": self.probe.augment.to_dict()}
        if self.probe.standardize:  # absent when off, so earlier recipes keep their records
            d["probe"]["standardize"] = True
        d["optim"] = _plain(d["optim"])
        return d

    def replace(self, **changes: Any) -> Recipe:
        from dataclasses import replace

        return replace(self, **changes)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_recipe(path: str | Path) -> Recipe:
    """Reads a recipe TOML file.

    Raises:
        ConfigError: the file is missing, not TOML, or has unknown keys / wrong types (message names them).
    """
    data = read_toml(path, "recipe file", "; pass --config zoo/recipes/<name>.toml")
    return Recipe.from_dict(data, where=Path(path).name)
