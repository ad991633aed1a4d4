"""single_deletion (docs/protocol.md#single-deletion): analytic values on models that are linear in the cells.

For a linear model f_y(x) = Σ_p w_p x_p, deleting cell j (setting it to b) lowers the logit by
Σ_{p ∈ j} w_p (x_p − b), which is exactly the cell sum of the attribution w ⊙ (x − b): the exact attribution
ranks the cells as the model does (score 1), and a shuffled one does not (score about 0 on average).
"""

from __future__ import annotations

import pytest
import torch
from helpers import conv_net, images, linear_model
from torch import Tensor

from sclzoo.deletion import PatchDeletionConfig, deletion_in_domain
from sclzoo.errors import ConfigError
from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.metrics import MetricContext, compute, metric_defaults, spearman
from sclzoo.zoo.augment import grid_cells


def _ctx(model: torch.nn.Module, x: Tensor, target: Tensor, a: Tensor, **kw) -> MetricContext:
    return MetricContext(model=model, x=x, target=target, attributions=a, **kw)


def _linear(classes: int, side: int, seed: int = 0) -> tuple[torch.nn.Module, Tensor]:
    weight = torch.randn(classes, side * side, generator=torch.Generator().manual_seed(seed))
    return linear_model(weight), weight


@pytest.mark.parametrize(("side", "grid"), [(8, 4), (10, 4), (28, 4), (9, 2), (12, 3)])
def test_exact_attribution_of_a_linear_model_scores_one(side: int, grid: int) -> None:
    """Also on sides g does not divide (10 = 3+3+3+1, 9 = 5+4): the metric's cells are the augmentation's."""
    model, _ = _linear(3, side)
    x = images(5, h=side, seed=2)
    target = torch.tensor([0, 1, 2, 1, 0])
    a = attribute("input_x_gradient", model, x, target)  # w_y ⊙ x: cell sums = drops with b = 0
    scores = compute("single_deletion", _ctx(model, x, target, a), grid=grid)
    assert scores.tolist() == [1.0] * 5


def test_drops_and_cell_sums_by_hand() -> None:
    """Ten cells' worth of a hand check: the score is Spearman(drop, A) over the augmentation's grid cells."""
    side, g = 10, 4
    model, weight = _linear(2, side, seed=1)
    x = images(2, h=side, seed=3)
    target = torch.tensor([1, 0])
    a = torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(9))
    scores = compute("single_deletion", _ctx(model, x, target, a), grid=g, baseline=0.25)
    cells = grid_cells(side, side, g).flatten()
    for i in range(2):
        w = weight[target[i]].double()
        xi = x[i].flatten().double()
        drop = torch.stack([(w * (xi - 0.25) * (cells == j)).sum() for j in range(g * g)])
        cell_sum = torch.stack([(a[i].flatten().double() * (cells == j)).sum() for j in range(g * g)])
        expected = spearman(drop[None], cell_sum[None])[0].item()
        assert scores[i].item() == pytest.approx(expected, abs=1e-9)


def test_baseline_is_the_deletion_value() -> None:
    side, b = 8, 0.4
    model, weight = _linear(2, side, seed=4)
    x = images(4, h=side, seed=5)
    target = torch.tensor([0, 1, 1, 0])
    exact = (weight[target] * (x.flatten(1) - b)).view_as(x)  # w ⊙ (x − b): the cell sums are the drops
    assert compute("single_deletion", _ctx(model, x, target, exact), baseline=b).tolist() == [1.0] * 4
    # With the wrong deletion value the same map no longer ranks the cells as the model does.
    assert compute("single_deletion", _ctx(model, x, target, exact), baseline=0.0).min().item() < 1.0


def test_shuffled_attribution_scores_about_zero() -> None:
    """Cell sums shuffled across cells: Spearman over 16 cells has sd 1/√15 ≈ 0.26 under independence, so the
    mean over 300 samples lies within ±0.06 (4 standard errors) of 0; the exact map scores 1 on every one."""
    side, n = 8, 300
    model, weight = _linear(1, side, seed=6)
    x = images(n, h=side, seed=7)
    target = torch.zeros(n, dtype=torch.long)
    exact = (weight[0] * x.flatten(1)).view_as(x)
    cells = grid_cells(side, side, 4).flatten()
    gen = torch.Generator().manual_seed(8)
    # Move each cell's pixels to another cell: a per-sample permutation of the 16 cells (2 x 2 pixels each).
    shuffled = torch.empty_like(exact)
    for i in range(n):
        perm = torch.randperm(16, generator=gen)
        src = exact[i, 0].flatten()
        out = torch.empty_like(src)
        for j in range(16):
            out[cells == j] = src[cells == perm[j]]
        shuffled[i, 0] = out.view(side, side)
    ctx = _ctx(model, x, target, shuffled, batch_size=256)
    rho = compute("single_deletion", ctx)
    assert torch.isfinite(rho).all()
    assert abs(rho.mean().item()) < 4 / (15**0.5 * n**0.5)
    assert rho.abs().mean().item() < 0.35  # E|ρ| ≈ 0.21 under independence; the exact map gives 1
    assert compute("single_deletion", _ctx(model, x, target, exact, batch_size=256)).tolist() == [1.0] * n


def test_constant_map_or_constant_model_is_nan() -> None:
    x = images(3, h=8)
    target = torch.tensor([0, 1, 2])
    model = conv_net()
    zero = compute("single_deletion", _ctx(model, x, target, torch.zeros_like(x)))
    assert torch.isnan(zero).all()  # all cell sums equal: counted as NaN, never 0
    flat = linear_model(torch.zeros(3, 64))
    assert torch.isnan(compute("single_deletion", _ctx(flat, x, target, x))).all()  # no drop at all


def test_scores_are_per_sample() -> None:
    model = conv_net()
    x = images(6, h=12, seed=11)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    a = attribute("saliency", model, x, target)
    full = compute("single_deletion", _ctx(model, x, target, a, batch_size=64))
    one_by_one = torch.cat([compute("single_deletion", _ctx(model, x[i : i + 1], target[i : i + 1], a[i : i + 1],
                                                             batch_size=5)) for i in range(6)])
    torch.testing.assert_close(one_by_one, full, rtol=0, atol=1e-5, equal_nan=True)
    assert torch.isfinite(full).all()


def test_bad_parameters_are_refused() -> None:
    x = images(1, h=8)
    ctx = _ctx(conv_net(), x, torch.tensor([0]), x)
    with pytest.raises(ConfigError, match="grid must be at least 2"):
        compute("single_deletion", ctx, grid=1)
    with pytest.raises(ConfigError, match="grid must be a positive int"):
        compute("single_deletion", ctx, grid=2.5)
    with pytest.raises(ConfigError, match="does not fit a 8 x 8 image"):
        compute("single_deletion", ctx, grid=9)
    with pytest.raises(ConfigError, match=r"baseline must be a finite number.*nan"):
        compute("single_deletion", ctx, baseline=float("nan"))


def test_defaults_are_in_domain_for_the_default_patch_deletion() -> None:
    """The metric's parameters are those sclzoo/deletion.py reads: a model trained with the default patch
    deletion is in domain for the default metric, and out of domain for another grid or deletion value."""
    params = {"version": 1, **metric_defaults("single_deletion")}
    trained = PatchDeletionConfig()
    assert deletion_in_domain("single_deletion", params, trained, (28, 28)) is True
    assert deletion_in_domain("single_deletion", {**params, "grid": 3}, trained, (28, 28)) is False
    assert deletion_in_domain("single_deletion", {**params, "baseline": 0.5}, trained, (28, 28)) is False
    assert deletion_in_domain("single_deletion", params, None, (28, 28)) is False
