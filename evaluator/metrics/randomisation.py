"""Randomisation: does the map change when what the model learned, or the explained class, is randomised?
(docs/protocol.md#randomisation)
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from sclzoo.errors import ConfigError
from sclzoo.evaluator.seeding import randint, sample_generator, stable_seed

from .base import (
    MetricContext,
    clean_logits,
    explain_rows,
    needs,
    pixel_map,
    positive_float,
    positive_int,
    register_metric,
)
from .correlation import spearman, ssim

__all__ = ["mprt_last", "random_logit", "randomised_copy"]


def randomised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every layer re-initialised, the same for a given seed on any device.

    Modules with ``reset_parameters()`` use it (their own init scheme and scale). A module that owns parameters
    but has no ``reset_parameters`` (e.g. a bare ``nn.Parameter`` such as a positional embedding) gets each of
    them randomly permuted, which destroys what was learned while keeping the value distribution. The reset
    runs on the CPU inside ``fork_rng``, so the global RNG of the caller is untouched and CPU and GPU runs
    agree; the copy is then moved back to the model's device.

    Args:
        model: The trained model (not modified).
        seed: Global seed of the run.

    Returns:
        The randomised copy, in eval mode, on the model's device.
    """
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    rand = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "mprt_last", -1))
        gen = sample_generator(seed, "mprt_last/permute", -1)
        for module in rand.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    perm = torch.randperm(p.numel(), generator=gen)
                    p.copy_(p.flatten()[perm].view_as(p))
    return rand.to(device).eval()


@register_metric(
    "mprt_last",
    family="randomisation",
    higher_is_better=False,
    defaults={},
    cost_explain=lambda p: 1,
    description="Spearman(|m|, |m'|), m' the map of the model with all layers re-initialised (Adebayo 2018).",
)
def mprt_last(ctx: MetricContext) -> Tensor:
    """Spearman rank correlation (average ranks for ties) between |m| and the |m'| of the randomised model.

    The randomised model comes from :func:`randomised_copy` with ``ctx.seed``; it is built once per model, device
    and seed in ``ctx.shared`` (once per run under the runner), else once per context.

    Returns:
        (N,) float64 in [−1, 1]; lower is better; NaN where either map is constant.
    """
    explain_with = needs(ctx, "explain_with", "mprt_last")
    store = ctx.cache if ctx.shared is None else ctx.shared
    device = next((p.device for p in ctx.model.parameters()), torch.device("cpu"))
    key = ("randomised_model", id(ctx.model), str(device), ctx.seed)
    held = store.get(key)
    if held is None or held[0] is not ctx.model:  # the model object itself is kept, so an id is never reused
        held = store[key] = (ctx.model, randomised_copy(ctx.model, ctx.seed))
    rand_model = held[1]
    n = ctx.x.shape[0]

    def explain_random(x: Tensor, target: Tensor, ids: Tensor) -> Tensor:
        return explain_with(rand_model, x, target, ids)

    rand_attr = explain_rows(explain_random, ctx.x, ctx.target, ctx.device_ids(), ctx.batch_size)
    m = pixel_map(ctx.attributions).abs().reshape(n, -1)
    m_rand = pixel_map(rand_attr).abs().reshape(n, -1)
    return spearman(m, m_rand)


@register_metric(
    "random_logit",
    family="randomisation",
    higher_is_better=False,
    defaults={"window": 11, "sigma": 1.5},
    cost_forward=lambda p: 1,
    cost_explain=lambda p: 1,
    version=2,
    description="SSIM between |m| for y and |m| for a random other class ŷ ≠ y (Sixt 2020).",
)
def random_logit(ctx: MetricContext, window: int, sigma: float) -> Tensor:
    """SSIM(|m_y|, |m_ŷ|) with ŷ drawn uniformly among the other classes, one draw per sample.

    Args:
        ctx: Batch context with ``explain``; the number of classes is read from the model's logits.
        window: Gaussian SSIM window (shrunk to fit small maps), see :func:`ssim`.
        sigma: σ of the window.

    Returns:
        (N,) float64; lower is better.
    """
    name = "random_logit"
    win = positive_int(name, "window", window)
    sd = positive_float(name, "sigma", sigma)
    explain = needs(ctx, "explain", name)
    n_classes = clean_logits(ctx).shape[1]
    if n_classes < 2:
        raise ConfigError(f"{name} needs a model with at least 2 classes; this one has {n_classes}.")
    ids = ctx.device_ids()
    offset = randint(ctx.seed, name, ids, (), n_classes - 1)  # (N,)
    other = (ctx.target + 1 + offset) % n_classes  # uniform over the n_classes − 1 classes ≠ y
    other_attr = explain_rows(explain, ctx.x, other, ids, ctx.batch_size)
    return ssim(pixel_map(ctx.attributions).abs(), pixel_map(other_attr).abs(), window=win, sigma=sd)
