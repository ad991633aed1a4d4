"""Contrastive losses: analytic values, the SupCon ↔ SimCLR identity, symmetries, the objective registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sclzoo.errors import ConfigError, UnknownNameError
from sclzoo.zoo.losses import OBJECTIVES, contrastive_loss, simclr_loss, supcon_loss


def _unit(n: int, v: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, v, d, generator=g, dtype=torch.float64), dim=-1)


def _reference(feats: list[list[float]], keys: list[int], tau: float, base_tau: float) -> float:
    """L^sup_out (docs/training.md#supcon) term by term over a flat list of anchors (plain python)."""
    m = len(feats)
    total = 0.0
    for i in range(m):
        pos = [p for p in range(m) if p != i and keys[p] == keys[i]]
        if not pos:
            continue  # contributes 0, still counted in the mean below
        denom = sum(math.exp(sum(a * b for a, b in zip(feats[i], feats[a_], strict=True)) / tau)
                    for a_ in range(m) if a_ != i)
        s = 0.0
        for p in pos:
            num = math.exp(sum(a * b for a, b in zip(feats[i], feats[p], strict=True)) / tau)
            s += math.log(num / denom)
        total += -s / len(pos)
    return (tau / base_tau) * total / m


@pytest.mark.parametrize("n", [1, 2, 3, 8, 32])
def test_nt_xent_of_identical_embeddings_is_log_2n_minus_1(n: int) -> None:
    # All similarities equal: each anchor's positive has probability 1 / (2N − 1).
    z = F.normalize(torch.ones(n, 2, 5, dtype=torch.float64), dim=-1)
    for tau in (0.5, 0.1):
        assert simclr_loss(z, temperature=tau).item() == pytest.approx(math.log(2 * n - 1), abs=1e-12)


def test_supcon_with_distinct_labels_equals_simclr() -> None:
    z = _unit(6, 2, 16)
    labels = torch.tensor([5, 3, 0, 1, 9, 7])
    for tau in (0.5, 0.1, 0.07):
        got = supcon_loss(z, labels, temperature=tau, base_temperature=tau)
        assert torch.allclose(got, simclr_loss(z, temperature=tau), atol=1e-12, rtol=0)


def test_supcon_scales_with_tau_over_base_tau() -> None:
    z = _unit(8, 2, 4, seed=1)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 3, 0])
    unscaled = supcon_loss(z, labels, temperature=0.1, base_temperature=0.1)
    scaled = supcon_loss(z, labels, temperature=0.1, base_temperature=0.07)
    assert scaled.item() == pytest.approx((0.1 / 0.07) * unscaled.item(), rel=1e-12)
    # The defaults are SupContrast's τ = 0.1, τ_b = 0.07.
    assert supcon_loss(z, labels).item() == pytest.approx(scaled.item(), rel=1e-12)


def test_matches_reference_two_images_two_views() -> None:
    a, b = 0.3, 2.0
    views = [[(1.0, 0.0), (math.cos(a), math.sin(a))], [(0.0, 1.0), (math.cos(b), math.sin(b))]]
    z = torch.tensor(views, dtype=torch.float64)  # (N=2, V=2, D=2), unit rows
    tau = 0.5
    # Anchors in any order give the same mean; write them image-major.
    flat = [list(v) for img in views for v in img]
    expected = _reference(flat, [0, 0, 1, 1], tau, tau)
    assert simclr_loss(z, temperature=tau).item() == pytest.approx(expected, abs=1e-12)
    # Same labels for both images: every other view is a positive.
    same = _reference(flat, [0, 0, 0, 0], 0.1, 0.07)
    assert supcon_loss(z, torch.tensor([4, 4])).item() == pytest.approx(same, abs=1e-12)


def test_hand_computed_term_by_term() -> None:
    a, b = 0.3, 2.0
    z = torch.tensor([[[1.0, 0.0], [math.cos(a), math.sin(a)]], [[0.0, 1.0], [math.cos(b), math.sin(b)]]],
                     dtype=torch.float64)
    tau = 1.0
    e = math.exp
    c = {  # cosine similarities between the four views 00, 01, 10, 11
        ("00", "01"): math.cos(a), ("00", "10"): 0.0, ("00", "11"): math.cos(b),
        ("01", "10"): math.cos(math.pi / 2 - a), ("01", "11"): math.cos(b - a), ("10", "11"): math.cos(b - math.pi / 2),
    }

    def sim(x: str, y: str) -> float:
        return c[(x, y)] if (x, y) in c else c[(y, x)]

    names = ["00", "01", "10", "11"]
    pos = {"00": "01", "01": "00", "10": "11", "11": "10"}
    terms = []
    for i in names:
        denom = sum(e(sim(i, k) / tau) for k in names if k != i)
        terms.append(-math.log(e(sim(i, pos[i]) / tau) / denom))
    assert simclr_loss(z, temperature=tau).item() == pytest.approx(sum(terms) / 4, abs=1e-12)


def test_anchor_without_positive_contributes_zero_but_counts() -> None:
    z = _unit(3, 1, 4, seed=2)
    labels = torch.tensor([0, 0, 1])
    tau = 0.2
    flat = [z[i, 0].tolist() for i in range(3)]
    # Only anchors 0 and 1 have a positive; the mean still divides by 3.
    two = _reference(flat, [0, 0, 1], tau, tau)
    got = contrastive_loss(z, labels, tau, tau)
    assert got.item() == pytest.approx(two, abs=1e-12)
    sims = z[:, 0] @ z[:, 0].T / tau
    per_anchor = []
    for i in (0, 1):
        j = 1 - i
        per_anchor.append(-(sims[i, j] - torch.logsumexp(sims[i, [k for k in range(3) if k != i]], 0)))
    assert got.item() == pytest.approx(float(sum(per_anchor)) / 3, abs=1e-12)
    # No positives at all: the loss is exactly 0.
    assert contrastive_loss(z, torch.tensor([0, 1, 2]), tau, tau).item() == 0.0


@pytest.mark.parametrize("identical", [False, True])
def test_gradients_are_finite(identical: bool) -> None:
    raw = torch.ones(4, 2, 8) if identical else torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(3))
    raw.requires_grad_(True)
    z = F.normalize(raw, dim=-1)
    loss = supcon_loss(z, torch.tensor([0, 1, 0, 2]), temperature=0.05) + simclr_loss(z, temperature=0.05)
    loss.backward()
    assert torch.isfinite(loss)
    assert raw.grad is not None and torch.isfinite(raw.grad).all()


def test_permuting_samples_with_labels_leaves_loss_unchanged() -> None:
    z = _unit(10, 2, 6, seed=4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 4])
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(supcon_loss(z, labels), supcon_loss(z[perm], labels[perm]), atol=1e-12, rtol=0)
    assert torch.allclose(simclr_loss(z), simclr_loss(z[perm]), atol=1e-12, rtol=0)
    # Swapping the two views of every image changes nothing either.
    assert torch.allclose(supcon_loss(z, labels), supcon_loss(z.flip(1), labels), atol=1e-12, rtol=0)


def test_rejects_non_3d_embeddings() -> None:
    with pytest.raises(ValueError, match=r"\(N, V, D\)"):
        contrastive_loss(torch.zeros(4, 8), torch.arange(4), 0.1, 0.1)


def test_objective_registry() -> None:
    assert {"ce", "supcon", "simclr"} <= set(OBJECTIVES.names())
    ce = OBJECTIVES.get("ce")
    assert not ce.contrastive
    assert OBJECTIVES.get("supcon").contrastive and OBJECTIVES.get("simclr").contrastive
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
                - math.log(1 / (2 + math.e))) / 2
    assert ce.loss(logits, labels, **ce.params({})).item() == pytest.approx(expected, rel=1e-6)
    # Label smoothing is passed through to cross-entropy.
    smooth = ce.loss(logits, labels, **ce.params({"label_smoothing": 0.1}))
    assert smooth.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item())
    assert OBJECTIVES.get("supcon").params({}) == {"temperature": 0.1, "base_temperature": 0.07}
    assert OBJECTIVES.get("simclr").params({"temperature": 0.2}) == {"temperature": 0.2}
    # The registered contrastive losses are the functions above.
    z, y = _unit(4, 2, 3, seed=6), torch.tensor([0, 0, 1, 1])
    assert OBJECTIVES.get("supcon").loss(z, y, temperature=0.3, base_temperature=0.3) == supcon_loss(z, y, 0.3, 0.3)
    assert OBJECTIVES.get("simclr").loss(z, y, temperature=0.3) == simclr_loss(z, 0.3)


def test_unknown_objective_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'simclr' has no parameter.*base_temperature.*known: \['temperature'\]"):
        OBJECTIVES.get("simclr").params({"base_temperature": 0.07})


def test_unknown_objective_name_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown objective 'supconn'\. Did you mean 'supcon'"):
        OBJECTIVES.get("supconn")
    with pytest.raises(KeyError, match="sclzoo ls objectives"):  # also a KeyError, for callers who catch that
        OBJECTIVES.get("nothing-like-it")
