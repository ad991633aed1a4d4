"""In-domain deletion: the patch-deletion record a model is trained with, and which metrics it makes in domain.

Deletion metrics feed the model images with parts set to a baseline. Such images lie outside the training
distribution unless the model was trained with the same kind of deletion, and models trained differently react
to them differently, whatever their explanations. A model trained with patch deletion
(:class:`PatchDeletionConfig`; ``zoo/augment.py`` applies it) has seen images with random cells of a g x g grid
set to a value; a grid-deletion metric is in domain for it when it deletes cells of the same grid with the same
value (docs/protocol.md#in-domain-deletion). This module imports nothing heavy: the model loader, results and the
leaderboard use it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from sclzoo.errors import ConfigError

__all__ = ["DELETION_VIEWS", "GRID_DELETION", "PIXEL_DELETION", "PatchDeletionConfig", "deletion_in_domain", "is_deletion_metric"]

#: Metrics that set whole cells of a grid to a baseline: in domain for a model trained with patch deletion of the
#: same grid and value.
GRID_DELETION: tuple[str, ...] = ("single_deletion", "region_perturbation_aopc")
#: Metrics that set pixels (subsets, pixel orders) to a baseline, or insert pixels into an all-baseline image: out
#: of domain for every model, whatever it was trained with.
PIXEL_DELETION: tuple[str, ...] = ("faithfulness_correlation", "deletion_auc", "insertion_auc")


#: Values of :attr:`PatchDeletionConfig.views`.
DELETION_VIEWS = ("all", "first")


@dataclass(frozen=True)
class PatchDeletionConfig:
    """Patch deletion, the in-domain augmentation for grid-deletion metrics (a recipe's ``[patch_deletion]``).

    Attributes:
        grid: g: the image is cut into a g x g grid of non-overlapping cells of ceil(H / g) x ceil(W / g) pixels,
            the last row/column smaller when g does not divide the side.
        value: Deletion value in pixel space ([0, 1] pixels; 0 = black), as the metrics' baseline.
        p: Probability that a view gets cells deleted; it then gets k ~ U{1, …, g² − 1} cells, chosen uniformly
            without replacement.
        views: Which views of contrastive pre-training may get cells deleted: ``all`` (each independently) or
            ``first`` (the first view of each image; the other views stay whole, so every positive pair keeps one
            whole image). Single-view stages (CE training, the linear probe) are unaffected.
    """

    grid: int = 4
    value: float = 0.0
    p: float = 0.5
    views: str = "all"

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2:
            raise ConfigError(f"patch_deletion.grid must be an integer >= 2 (a g x g grid), got {self.grid!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ConfigError(f"patch_deletion.value must be a finite number (pixel space, 0 = black), "
                              f"got {self.value!r}")
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"patch_deletion.p must be a probability in [0, 1], got {self.p!r}")
        if self.views not in DELETION_VIEWS:
            raise ConfigError(f"patch_deletion.views must be one of {', '.join(DELETION_VIEWS)}, got {self.views!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "p", float(self.p))

    @classmethod
    def from_dict(cls, d: Any, where: str = "patch_deletion") -> PatchDeletionConfig:
        """Reads ``{grid, value, p, views}`` (missing keys take the defaults).

        Raises:
            ConfigError: not a table, an unknown key or a bad value (the message names ``where`` and the key).
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"[{where}] must be a table with keys grid, value, p, views; got {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in [{where}]; known keys: {sorted(known)}")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(str(e).replace("patch_deletion.", f"{where}.", 1)) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.views == "all":  # absent by default, so records written before the option read the same
            del d["views"]
        return d


def _cells(side: int, g: int) -> int:
    return -(-side // g)


def is_deletion_metric(metric: str) -> bool:
    """Whether ``metric`` feeds the model images with parts set to a baseline (and so has an in-domain verdict)."""
    return metric in GRID_DELETION or metric in PIXEL_DELETION


def deletion_in_domain(metric: str, params: Mapping[str, Any], trained: PatchDeletionConfig | None,
                       input_hw: tuple[int, int] | None) -> bool | None:
    """Whether a deletion metric's perturbed images are in the model's training domain.

    - ``single_deletion``: in domain when the model was trained with patch deletion of the metric's ``grid`` and
      deletion value (its ``baseline``).
    - ``region_perturbation_aopc``: in domain when its p x p patches are the training grid's cells
      (p = ceil(H / g) = ceil(W / g)), its ``baseline`` is the training value and it deletes at most g² − 1 cells
      (``n_regions``).
    - pixel deletion (:data:`PIXEL_DELETION`): never.

    Args:
        metric: Metric name.
        params: The metric's parameters as recorded in the result's config (defaults filled in).
        trained: The model's patch deletion (from config.json), or None when it was trained without it.
        input_hw: (H, W) of the evaluated images; None when unknown (checking a result file, which does not
            record it).

    Returns:
        True or False for a deletion metric; None for a metric that deletes nothing (the notion does not apply),
        and for ``region_perturbation_aopc`` when ``input_hw`` is None and the size-free conditions hold.
    """
    if metric in PIXEL_DELETION:
        return False
    if metric not in GRID_DELETION:
        return None
    if trained is None:
        return False
    g = trained.grid
    if metric == "single_deletion":
        return _same_number(params.get("grid"), g) and _same_number(params.get("baseline"), trained.value)
    regions = params.get("n_regions")
    if not (isinstance(regions, int) and regions <= g * g - 1 and _same_number(params.get("baseline"), trained.value)):
        return False
    if input_hw is None:
        return None
    h, w = input_hw
    patch = params.get("patch_size")
    p = max(1, h // 8) if patch is None else patch  # the metric's default (docs/protocol.md#region-perturbation-aopc)
    return _same_number(p, _cells(h, g)) and _same_number(p, _cells(w, g))


def _same_number(a: Any, b: float) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and float(a) == float(b)
