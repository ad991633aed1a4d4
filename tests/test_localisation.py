"""Localisation metrics (docs/protocol.md#localisation): analytic values on hand-made maps and masks, ties, NaN
conventions, and the mask contract of the metric context. Agreement with Quantus is in tests/test_agreement.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import linear_model
from torch import Tensor

from sclzoo.errors import ConfigError
from sclzoo.evaluator.metrics import METRICS, MetricContext, compute

LOCALISATION = ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "localisation_auc")


def ctx_of(maps: Tensor, mask: Tensor | None) -> MetricContext:
    """Context around maps (N, H, W) and masks (N, H, W); the model is never called."""
    n, h, w = maps.shape
    return MetricContext(model=linear_model(torch.ones(2, h * w)), x=torch.zeros(n, 1, h, w),
                         target=torch.zeros(n, dtype=torch.long), attributions=maps[:, None], mask=mask)


def scores(name: str, maps: Tensor, mask: Tensor) -> list[float]:
    return compute(name, ctx_of(maps, mask)).tolist()


def left_half(n: int = 1, side: int = 4) -> Tensor:
    mask = torch.zeros(n, side, side, dtype=torch.bool)
    mask[:, :, : side // 2] = True
    return mask


def test_the_family_and_its_registry_entries() -> None:
    for name in LOCALISATION:
        spec = METRICS.get(name)
        assert spec.family == "localisation" and spec.higher_is_better and spec.needs_mask
        assert spec.defaults == {} and spec.version == 1


def test_pointing_game() -> None:
    mask = left_half(3)
    maps = torch.zeros(3, 4, 4)
    maps[0, 2, 1] = 5.0  # max inside
    maps[1, 2, 3] = 5.0  # max outside
    maps[2] = -1.0  # a negative map: the max is still the pointed pixel
    maps[2, 0, 3] = -0.5
    assert scores("pointing_game", maps, mask) == [1.0, 0.0, 0.0]
    # Tied maxima: the first in row-major order decides. Row 0 is (in, in, out, out).
    tie = torch.zeros(2, 4, 4)
    tie[0, 0, 1] = tie[0, 0, 2] = 3.0  # first max at (0, 1): inside
    tie[1, 0, 2] = tie[1, 1, 0] = 3.0  # first max at (0, 2): outside, though (1, 0) is inside
    assert scores("pointing_game", tie, left_half(2)) == [1.0, 0.0]


def test_relevance_mass_accuracy_uses_the_positive_part() -> None:
    maps = torch.zeros(3, 4, 4)
    maps[0, :, 0] = 1.0  # 4 inside
    maps[0, :, 3] = 3.0  # 12 outside
    maps[0, 0, 1] = -100.0  # negative relevance counts for nothing
    maps[1] = -1.0  # no positive relevance: undefined
    maps[2, 1, 1] = 2.0
    got = scores("relevance_mass_accuracy", maps, left_half(3))
    assert got[0] == pytest.approx(4 / 16, abs=1e-15) and math.isnan(got[1]) and got[2] == 1.0


def test_relevance_rank_accuracy_with_ties_by_pixel_index() -> None:
    mask = left_half(2)  # K = 8
    maps = torch.zeros(2, 4, 4)
    maps[0, :, 3] = 4.0  # the 4 largest are outside
    maps[0, :, 0] = 3.0  # then 4 inside
    assert scores("relevance_rank_accuracy", maps, mask)[0] == 4 / 8
    # A constant map: every pixel ties, the first K in pixel order are taken: rows 0 and 1, half of them inside.
    maps[1] = 1.0
    assert scores("relevance_rank_accuracy", maps, mask)[1] == 4 / 8
    assert scores("relevance_rank_accuracy", maps[:1] * 0 + torch.where(mask[:1], 1.0, 0.0), mask[:1]) == [1.0]


def test_localisation_auc_counts_ties_half() -> None:
    mask = left_half(4)
    perfect = torch.where(mask[0], 1.0, 0.0)
    maps = torch.stack([perfect, -perfect, torch.ones(4, 4), torch.zeros(4, 4)])
    maps[3, 0, 0] = 1.0  # one inside pixel above the other 15 (tied at 0)
    got = scores("localisation_auc", maps, mask)
    # 4: of the 8 x 8 (inside, outside) pairs, 8 are won by (0, 0), the other 7·8 tie: (8 + 56/2) / 64.
    assert got == [1.0, 0.0, 0.5, (8 + 56 / 2) / 64]


def test_localisation_auc_equals_the_pairwise_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(-3, 4, (5, 6, 6), generator=gen).float()  # many ties
    mask = torch.rand(5, 6, 6, generator=gen) < 0.4
    got = scores("localisation_auc", maps, mask)
    for i in range(5):
        pos, neg = maps[i][mask[i]], maps[i][~mask[i]]
        wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
        assert got[i] == pytest.approx((wins / (len(pos) * len(neg))).item(), abs=1e-12)


@pytest.mark.parametrize("name", LOCALISATION)
def test_empty_mask_is_nan_and_a_full_mask_only_undefines_auc(name: str) -> None:
    maps = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[1] = True
    got = scores(name, maps, mask)
    assert math.isnan(got[0])  # no ground truth: undefined, counted as NaN
    assert math.isnan(got[1]) if name == "localisation_auc" else got[1] == 1.0


@pytest.mark.parametrize("name", LOCALISATION)
def test_without_a_mask_the_error_says_where_masks_come_from(name: str) -> None:
    with pytest.raises(ConfigError, match=r"ctx.mask is None; evaluate on a dataset with masks \(--dataset "
                                          r"mnist5k-clutter, --mask box or ink\)"):
        compute(name, ctx_of(torch.ones(1, 4, 4), None))


def test_mask_shape_and_dtype_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"ctx.mask must be a bool tensor of shape \(1, 4, 4\)"):
        compute("pointing_game", ctx_of(torch.ones(1, 4, 4), torch.ones(1, 4, 4)))
    with pytest.raises(ConfigError, match=r"ctx.mask must be a bool tensor of shape \(1, 4, 4\)"):
        compute("pointing_game", ctx_of(torch.ones(1, 4, 4), torch.ones(1, 3, 4, dtype=torch.bool)))


def test_multichannel_maps_are_summed_over_channels() -> None:
    a = torch.zeros(1, 3, 4, 4)
    a[0, 0, 0, 3] = 2.0  # outside, but the channels cancel …
    a[0, 1, 0, 3] = -2.0
    a[0, 2, 1, 0] = 1.0  # … so the signed pixel map peaks inside
    ctx = MetricContext(model=linear_model(torch.ones(2, 48)), x=torch.zeros(1, 3, 4, 4),
                        target=torch.zeros(1, dtype=torch.long), attributions=a, mask=left_half())
    assert compute("pointing_game", ctx).tolist() == [1.0]
    assert compute("relevance_mass_accuracy", ctx).tolist() == [1.0]
