"""Attribution-quality metrics, one registry entry each (docs/protocol.md#metrics).

The package is laid out so that a new metric is one function in one file:

- :mod:`.base`: :class:`MetricContext`, :class:`MetricSpec`, the :data:`METRICS` registry and its decorator
  :func:`register_metric`, :func:`compute`, and the two loops every perturbation metric uses
  (:func:`forward_perturbed`, :func:`explain_perturbed`);
- one module per family: :mod:`.faithfulness`, :mod:`.complexity`, :mod:`.continuity`, :mod:`.randomisation`,
  :mod:`.localisation` (ground-truth masks, ``ctx.mask``);
- :mod:`.correlation`: Pearson, Spearman and SSIM per row;
- per-sample seeding lives in :mod:`sclzoo.evaluator.seeding`, shared with the attribution methods.

Importing the package registers every metric.
"""

from __future__ import annotations

from sclzoo.evaluator.seeding import normal, randint, random_subsets, sample_generator, stable_seed, uniform
from sclzoo.threads import torch_threads
from sclzoo.vocab import FAMILIES

# isort: off
# Registration order is the order of `sclzoo ls metrics` and of result files: families as in sclzoo.vocab.
from . import faithfulness, complexity, continuity, randomisation, localisation  # noqa: F401
# isort: on
from .base import (
    METRICS,
    MetricContext,
    MetricSpec,
    compute,
    compute_on_device,
    explain_perturbed,
    forward_perturbed,
    metric_cost,
    metric_defaults,
    pixel_map,
    register_metric,
)
from .correlation import pearson, spearman, ssim
from .randomisation import randomised_copy

__all__ = [
    "FAMILIES",
    "METRICS",
    "MetricContext",
    "MetricSpec",
    "compute",
    "compute_on_device",
    "explain_perturbed",
    "forward_perturbed",
    "metric_cost",
    "metric_defaults",
    "normal",
    "pearson",
    "pixel_map",
    "randint",
    "random_subsets",
    "randomised_copy",
    "register_metric",
    "sample_generator",
    "spearman",
    "ssim",
    "stable_seed",
    "torch_threads",
    "uniform",
]
