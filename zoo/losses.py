"""Training objectives: cross-entropy, SupCon and SimCLR (one contrastive loss serves both).

The contrastive loss is SupContrast's L^sup_out (Khosla et al. 2020):

    L = (τ/τ_b) · (1/2N) Σ_i −(1/|P(i)|) Σ_{p∈P(i)} log[ exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ]

over all V·N views as anchors, P(i) = the other views sharing anchor i's key. SupCon keys views by label,
SimCLR (NT-Xent) by image index, so SimCLR is SupCon with all-distinct labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sclzoo.errors import ConfigError
from sclzoo.registry import Registry

__all__ = ["contrastive_loss", "supcon_loss", "simclr_loss", "batch_hard_triplet_loss", "Objective", "OBJECTIVES"]


def contrastive_loss(z: Tensor, keys: Tensor, temperature: float, base_temperature: float) -> Tensor:
    """SupContrast's L^sup_out (positives outside the log), averaged over all anchors.

    Args:
        z: (N, V, D) L2-normalised embeddings, V views of each of N images.
        keys: (N,) integer keys; views whose keys are equal are positives of each other.
        temperature: τ.
        base_temperature: τ_b; the loss is scaled by τ/τ_b as in SupContrast.

    Returns:
        Scalar loss. An anchor with no positive (|P(i)| = 0) contributes 0 but still counts in the mean.
    """
    if z.dim() != 3:
        raise ValueError(f"z must be (N, V, D), got shape {tuple(z.shape)}")
    n, v, _ = z.shape
    feats = z.transpose(0, 1).reshape(v * n, -1)  # view-major, like torch.cat(torch.unbind(z, 1))
    k = keys.repeat(v)
    sim = feats @ feats.T / temperature
    self_mask = torch.eye(v * n, dtype=torch.bool, device=z.device)
    # Subtracting the row max changes nothing mathematically and keeps exp() finite for small τ.
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (k[:, None] == k[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    # masked_fill instead of multiplication: log_prob is -inf on the diagonal and 0·inf is NaN.
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp(min=1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.1, base_temperature: float = 0.07) -> Tensor:
    """Supervised contrastive loss. Shapes: z (N, V, D) normalised, labels (N,)."""
    return contrastive_loss(z, labels, temperature, base_temperature)


def simclr_loss(z: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent: the contrastive loss keyed by image index, with τ_b = τ (no rescaling). z: (N, V, D)."""
    return contrastive_loss(z, torch.arange(z.shape[0], device=z.device), temperature, temperature)


@dataclass(frozen=True)
class Objective:
    """A training objective.

    Attributes:
        name: Registry name (``ce``, ``supcon``, ``simclr``).
        contrastive: Trains encoder + projector on two views, then a linear probe; else trains end to end.
        loss: ``loss(outputs, labels, **params) -> scalar``; outputs are logits (N, K) for CE and normalised
            projections (N, V, D) for contrastive objectives.
        defaults: Default loss parameters (recorded in training.json).
        variant: Human-readable name of the exact loss variant.
    """

    name: str
    contrastive: bool
    loss: Callable[..., Tensor]
    defaults: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    description: str = ""

    def params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"objective {self.name!r} has no parameter(s) {unknown}; known: {sorted(self.defaults)}"
            )
        return {**self.defaults, **overrides}


def batch_hard_triplet_loss(z: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on L2-normalised embeddings.

    For every view as anchor: the farthest view with the same label (hardest positive) and the closest view with
    another label (hardest negative); loss = mean over anchors of max(0, d(a, p) − d(a, n) + margin), with
    Euclidean distances between unit vectors. Anchors with no positive or no negative contribute 0.

    Args:
        z: (N, V, D) normalised embeddings.
        labels: (N,) labels.
        margin: Triplet margin.
    """
    n, v, _ = z.shape
    feats = z.transpose(0, 1).reshape(v * n, -1)
    k = labels.repeat(v)
    # sqrt(2 - 2cos) for unit vectors; the clamp keeps the gradient of sqrt finite at distance 0.
    dist = (2 - 2 * feats @ feats.T).clamp(min=1e-12).sqrt()
    same = k[:, None] == k[None, :]
    self_mask = torch.eye(v * n, dtype=torch.bool, device=z.device)
    pos = same & ~self_mask
    hardest_pos = dist.masked_fill(~pos, float("-inf")).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    valid = pos.any(1) & (~same).any(1)
    per_anchor = torch.relu(hardest_pos - hardest_neg + margin)
    return torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).mean()


def _ce(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def _supcon(z: Tensor, labels: Tensor, temperature: float = 0.1, base_temperature: float = 0.07) -> Tensor:
    return supcon_loss(z, labels, temperature, base_temperature)


def _simclr(z: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    return simclr_loss(z, temperature)  # labels are deliberately unused: self-supervised


OBJECTIVES: Registry[Objective] = Registry("objective", "sclzoo ls objectives")
OBJECTIVES.add("ce", Objective("ce", False, _ce, {"label_smoothing": 0.0}, "cross-entropy",
                               "cross-entropy on a linear head, trained end to end"))
OBJECTIVES.add("supcon", Objective("supcon", True, _supcon, {"temperature": 0.1, "base_temperature": 0.07},
                                   "SupCon L^sup_out (Khosla 2020), loss scaled by tau/base_tau",
                                   "supervised contrastive, positives = same label"))
OBJECTIVES.add("triplet", Objective("triplet", True, lambda z, y, margin=0.3: batch_hard_triplet_loss(z, y, margin),
                                    {"margin": 0.3}, "batch-hard triplet (Hermans 2017), normalised embeddings",
                                    "supervised metric learning, hardest positive vs hardest negative"))
OBJECTIVES.add("simclr", Objective("simclr", True, _simclr, {"temperature": 0.5},
                                   "SimCLR NT-Xent (Chen 2020)", "self-supervised contrastive, positives = other view"))
