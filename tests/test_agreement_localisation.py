"""Agreement of the localisation metrics with Quantus 0.6.0 (docs/protocol.md#localisation).

Runs on 16 real mnist5k-clutter test images (1 channel, 56×56, so a Quantus "feature" is one of our pixels) with
both of their ground-truth masks, on a tiny seeded ``test_resnet_cifar``, for a tie-rich map (saliency) and a
signed one (integrated gradients). Quantus is called here only, never copied into sclzoo.

Settings made equal: ``normalise=False`` (the scores are scale-free except through ties, and Quantus' default
``normalise_by_max`` divides the whole batch by one number, a Quantus trap) and ``abs=False`` (sclzoo acts on the
signed map m). What each test asserts, per sample, to 1e-6:

- ``localisation_auc`` equals Quantus' ``AUC`` on every sample: scikit-learn's ROC curve joins tied scores into
  one threshold, so ties count half there too;
- ``relevance_mass_accuracy`` of m equals Quantus' ``RelevanceMassAccuracy`` of m⁺ = max(m, 0): sclzoo counts
  positive relevance only, Quantus sums the signed map, so a negative map outside the mask would push Quantus'
  ratio above 1;
- ``pointing_game`` and ``relevance_rank_accuracy`` depend only on the order of the pixels. Quantus breaks ties
  its own way (the pointing game counts a hit when *any* tied maximum lies in the mask; the rank accuracy sorts
  with ``np.argsort``, which is not stable), sclzoo by pixel index. They agree on every sample where the ties do
  not matter, and on all samples when Quantus gets a tie-free map that induces sclzoo's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import Tensor, nn

from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.metrics import MetricContext, compute
from sclzoo.zoo.data import load_dataset

quantus = pytest.importorskip("quantus")

if quantus.__version__ != "0.6.0":  # the traps below are those of 0.6.0; another version needs a re-read
    pytest.skip(f"written against Quantus 0.6.0, found {quantus.__version__}", allow_module_level=True)

# Tier (tests/conftest.py): agreement with the reference implementations.
pytestmark = pytest.mark.reference

N_IMAGES = 16
SEED = 3
SAMPLE_IDS = torch.arange(200, 200 + N_IMAGES)
# Quantus settings made equal to sclzoo's (module docstring); warnings off (they restate the settings).
EQUAL = {"abs": False, "normalise": False, "disable_warnings": True, "return_aggregate": False}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """Seeded random ``test_resnet_cifar`` for 1-channel inputs (global pooling: any size), eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = timm.create_model("test_resnet_cifar", in_chans=1, num_classes=10)
    return net.eval()


@pytest.fixture(scope="module")
def clutter(model: nn.Module) -> dict[str, Any]:
    """16 cluttered images, their predicted classes, both masks and two methods' maps (N, 1, 56, 56)."""
    data = load_dataset("mnist5k-clutter", "test")
    x = data.images[:N_IMAGES].clone()
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    maps = {m: attribute(m, model, x, target, sample_ids=SAMPLE_IDS, seed=SEED)
            for m in ("saliency", "integrated_gradients")}
    masks = {k: v[:N_IMAGES].clone() for k, v in data.ground_truth.items()}
    return {"x": x, "target": target, "maps": maps, "masks": masks}


def _ours(name: str, model: nn.Module, c: dict[str, Any], a: Tensor, mask: Tensor) -> np.ndarray:
    ctx = MetricContext(model=model, x=c["x"], target=c["target"], attributions=a, sample_ids=SAMPLE_IDS,
                        seed=SEED, mask=mask)
    return compute(name, ctx).numpy()


def _quantus(metric: Any, model: nn.Module, c: dict[str, Any], a: Tensor, mask: Tensor) -> np.ndarray:
    return np.asarray(
        metric(
            model=model,
            x_batch=c["x"].numpy(),
            y_batch=c["target"].numpy(),
            a_batch=a.double().numpy(),  # float64: the same values sclzoo sums in float64
            s_batch=mask[:, None].numpy().astype(np.float32),  # (N, 1, H, W), as Quantus asserts
            channel_first=True,
            batch_size=64,
        ),
        dtype=np.float64,
    )


def _order_map(a: Tensor) -> Tensor:
    """D − (rank of each pixel in sclzoo's order: m descending, ties by ascending pixel index), as (N, 1, H, W).

    It has no ties and induces sclzoo's order, so an order-only metric sees the same top pixels in both libraries.
    """
    m = a.sum(dim=1).flatten(1).double()
    order = torch.sort(m, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(m.shape[1]).expand_as(order))
    return (m.shape[1] - ranks).double().view(a.shape[0], 1, *a.shape[2:])


METHODS = ("saliency", "integrated_gradients")
MASKS = ("box", "ink")


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("method", METHODS)
def test_localisation_auc_equals_quantus_auc(method: str, kind: str, model: nn.Module,
                                             clutter: dict[str, Any]) -> None:
    a, mask = clutter["maps"][method], clutter["masks"][kind]
    ours = _ours("localisation_auc", model, clutter, a, mask)
    ref = _quantus(quantus.AUC(**EQUAL), model, clutter, a, mask)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("method", METHODS)
def test_relevance_mass_accuracy_equals_quantus_on_the_positive_part(method: str, kind: str, model: nn.Module,
                                                                     clutter: dict[str, Any]) -> None:
    a, mask = clutter["maps"][method], clutter["masks"][kind]
    ours = _ours("relevance_mass_accuracy", model, clutter, a, mask)
    ref = _quantus(quantus.RelevanceMassAccuracy(**EQUAL), model, clutter, a.clamp_min(0), mask)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("method", METHODS)
def test_pointing_game_equals_quantus_ties_aside(method: str, kind: str, model: nn.Module,
                                                 clutter: dict[str, Any]) -> None:
    a, mask = clutter["maps"][method], clutter["masks"][kind]
    ours = _ours("pointing_game", model, clutter, a, mask)
    metric = quantus.PointingGame(weighted=False, **EQUAL)
    m = a.sum(dim=1).flatten(1)
    unique_max = (m == m.amax(dim=1, keepdim=True)).sum(dim=1).numpy() == 1
    ref = _quantus(metric, model, clutter, a, mask)
    np.testing.assert_allclose(ours[unique_max], ref[unique_max], rtol=0, atol=1e-6)
    # On the order map every sample is tie-free, and the first maximum in sclzoo's order is the pointed pixel.
    ref_all = _quantus(metric, model, clutter, _order_map(a), mask)
    np.testing.assert_allclose(ours, ref_all, rtol=0, atol=1e-6)
    assert set(np.unique(ours)) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("method", METHODS)
def test_relevance_rank_accuracy_equals_quantus_ties_aside(method: str, kind: str, model: nn.Module,
                                                           clutter: dict[str, Any]) -> None:
    a, mask = clutter["maps"][method], clutter["masks"][kind]
    ours = _ours("relevance_rank_accuracy", model, clutter, a, mask)
    metric = quantus.RelevanceRankAccuracy(**EQUAL)
    # Ties matter only when they straddle the cut after the K-th pixel (K = the mask's size).
    m = a.sum(dim=1).flatten(1)
    desc = torch.sort(m, dim=1, descending=True).values
    k = mask.flatten(1).sum(dim=1)
    clean_cut = (desc.gather(1, (k - 1)[:, None]) != desc.gather(1, k[:, None]))[:, 0].numpy()
    ref = _quantus(metric, model, clutter, a, mask)
    np.testing.assert_allclose(ours[clean_cut], ref[clean_cut], rtol=0, atol=1e-6)
    ref_all = _quantus(metric, model, clutter, _order_map(a), mask)
    np.testing.assert_allclose(ours, ref_all, rtol=0, atol=1e-6)
    assert np.isfinite(ours).all() and ((ours >= 0) & (ours <= 1)).all()
