"""Metrics: analytic values, per-sample determinism, purity, registry contract."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from helpers import conv_net, images, linear_model
from torch import Tensor, nn

from sclzoo.errors import ConfigError, UnknownNameError
from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.metrics import (
    FAMILIES,
    METRICS,
    MetricContext,
    compute,
    metric_cost,
    metric_defaults,
    randomised_copy,
    spearman,
    ssim,
)

#: Cheap parameters for every metric, so the determinism tests run in seconds.
SMALL = {
    "faithfulness_correlation": {"n_draws": 8},
    "deletion_auc": {"steps": 4},
    "insertion_auc": {"steps": 4},
    "infidelity": {"n_perturbations": 4},
    "region_perturbation_aopc": {"patch_size": 2, "n_regions": 4},
    "max_sensitivity": {"n_perturbations": 3},
    "avg_sensitivity": {"n_perturbations": 3},
    "local_lipschitz_estimate": {"n_perturbations": 3},
    "continuity": {"max_shift": 2},
}


def context(model: nn.Module, x: Tensor, target: Tensor, attributions: Tensor, **kw) -> MetricContext:
    return MetricContext(model=model, x=x, target=target, attributions=attributions, **kw)


def box_masks(x: Tensor) -> Tensor:
    """(N, H, W) ground-truth masks for the localisation metrics: a box that moves with the sample's index."""
    n, _, h, w = x.shape
    mask = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        r, c = i % (h // 2), (2 * i) % (w // 2)
        mask[i, r : r + h // 2, c : c + w // 2] = True
    return mask


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


def test_every_metric_declares_family_direction_version_cost() -> None:
    assert len(METRICS.names()) == 19
    for name, spec in METRICS.items():
        assert spec.name == name and spec.description
        assert spec.family in FAMILIES
        assert isinstance(spec.higher_is_better, bool)
        assert isinstance(spec.version, int) and spec.version >= 1
        forwards, explanations = metric_cost(name)
        assert isinstance(forwards, int) and forwards >= 0
        assert isinstance(explanations, int) and explanations >= 0
        assert metric_defaults(name) == spec.defaults and metric_defaults(name) is not spec.defaults
        assert spec.needs_mask == (spec.family == "localisation")  # ground truth is what localisation needs


def test_costs_follow_the_protocol() -> None:
    assert metric_cost("faithfulness_correlation") == (101, 0)
    assert metric_cost("deletion_auc") == (33, 0)
    assert metric_cost("insertion_auc", steps=8) == (9, 0)
    assert metric_cost("infidelity") == (17, 0)
    assert metric_cost("region_perturbation_aopc") == (17, 0)
    assert metric_cost("single_deletion") == (17, 0)  # g² deletions and the clean forward, as the others count
    assert metric_cost("single_deletion", grid=3) == (10, 0)
    assert metric_cost("sparseness") == (0, 0)
    assert metric_cost("max_sensitivity") == (0, 16)
    assert metric_cost("avg_sensitivity") == (0, 0)
    assert METRICS.get("avg_sensitivity").shares_draws_with == "max_sensitivity"
    assert metric_cost("local_lipschitz_estimate") == (0, 16)
    assert metric_cost("continuity") == (0, 8)
    for name in ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "localisation_auc"):
        assert metric_cost(name) == (0, 0)


def test_unknown_metric_and_parameter() -> None:
    x = images(1)
    ctx = context(linear_model(torch.ones(2, 64)), x, torch.tensor([0]), x)
    with pytest.raises(UnknownNameError, match="Did you mean 'sparseness'"):
        compute("sparsenes", ctx)
    with pytest.raises(UnknownNameError, match="sclzoo ls metrics"):
        metric_defaults("nope")
    with pytest.raises(ConfigError, match="'step'.*deletion_auc.*steps"):
        compute("deletion_auc", ctx, step=4)
    with pytest.raises(ConfigError, match="positive int"):
        compute("deletion_auc", ctx, steps=0)


def test_context_is_validated_and_explain_is_required() -> None:
    x = images(2)
    model = linear_model(torch.ones(2, 64))
    with pytest.raises(ConfigError, match="attributions must have the input's shape"):
        compute("sparseness", context(model, x, torch.tensor([0, 1]), x[:, :, :4]))
    with pytest.raises(ConfigError, match="long tensor"):
        compute("sparseness", context(model, x, torch.tensor([0.0, 1.0]), x))
    with pytest.raises(ConfigError, match="explain=..."):
        compute("max_sensitivity", context(model, x, torch.tensor([0, 1]), x))
    with pytest.raises(ConfigError, match="explain_with=..."):
        compute("mprt_last", context(model, x, torch.tensor([0, 1]), x))


# --------------------------------------------------------------------------------------------------------------
# Complexity: analytic values
# --------------------------------------------------------------------------------------------------------------


def maps_ctx(maps: Tensor) -> MetricContext:
    """Context around hand-made attribution maps (N, 1, H, W); the model is never called."""
    n = maps.shape[0]
    return context(
        linear_model(torch.ones(2, maps[0].numel())),
        torch.zeros_like(maps),
        torch.zeros(n, dtype=torch.long),
        maps,
    )


def one_hot_and_constant(h: int = 8) -> Tensor:
    one_hot = torch.zeros(1, 1, h, h)
    one_hot[0, 0, 3, 5] = -2.5  # sign and scale must not matter
    return torch.cat([one_hot, torch.full((1, 1, h, h), 0.7)])


def test_sparseness_of_one_hot_and_constant_maps() -> None:
    d, eps = 64, 1e-7
    scores = compute("sparseness", maps_ctx(one_hot_and_constant()))
    # Σ_i (2i − d − 1)·ε = 0 over all i, so the numerator is (d − 1)(1 + ε) − (d − 1)ε = d − 1.
    assert scores[0].item() == pytest.approx((d - 1) / (d * (1 + d * eps)), rel=1e-12)
    assert scores[1].item() == pytest.approx(0.0, abs=1e-12)


def test_complexity_and_effective_complexity() -> None:
    ctx = maps_ctx(one_hot_and_constant())
    complexity = compute("complexity", ctx)
    assert complexity[0].item() == pytest.approx(0.0, abs=1e-9)
    assert complexity[1].item() == pytest.approx(math.log(64), rel=1e-9)
    effective = compute("effective_complexity", ctx)
    assert effective.tolist() == [1.0, 64.0]
    assert compute("effective_complexity", ctx, eps=1.0).tolist() == [0.0, 0.0]  # strict >


def test_all_zero_map_is_nan_not_zero() -> None:
    ctx = maps_ctx(torch.zeros(2, 1, 8, 8))
    for name in ("sparseness", "complexity", "effective_complexity"):
        assert torch.isnan(compute(name, ctx)).all(), name


# --------------------------------------------------------------------------------------------------------------
# Faithfulness: analytic values
# --------------------------------------------------------------------------------------------------------------


def sum_model(side: int = 4) -> nn.Module:
    """Class 0 logit = 0.25·Σx − 1, class 1 logit = 0: p_0 = σ(0.25·Σx − 1) is known for any deletion."""
    weight = torch.stack([torch.full((side * side,), 0.25), torch.zeros(side * side)])
    return linear_model(weight, torch.tensor([-1.0, 0.0]))


@pytest.mark.parametrize("steps", [4, 3])
def test_deletion_and_insertion_auc_by_hand(steps: int) -> None:
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    ctx = context(sum_model(), x, torch.tensor([0, 0]), x.clone())  # m = x: most relevant = brightest
    deletion = compute("deletion_auc", ctx, steps=steps)
    insertion = compute("insertion_auc", ctx, steps=steps)
    assert "pixel_ranks" in ctx.cache  # one ordering, shared
    for i in range(2):
        values = sorted(x[i].flatten().tolist(), reverse=True)
        counts = [k * 16 // steps for k in range(steps + 1)]
        del_curve = [torch.sigmoid(torch.tensor(0.25 * sum(values[n:]) - 1)).item() for n in counts]
        ins_curve = [torch.sigmoid(torch.tensor(0.25 * sum(values[:n]) - 1)).item() for n in counts]

        def area(c: list[float]) -> float:
            return (sum(c) - 0.5 * (c[0] + c[-1])) / steps

        assert deletion[i].item() == pytest.approx(area(del_curve), abs=1e-6)
        assert insertion[i].item() == pytest.approx(area(ins_curve), abs=1e-6)


def test_region_perturbation_aopc_by_hand() -> None:
    x = images(2, h=8, seed=4)
    model = linear_model(torch.stack([torch.ones(64), torch.zeros(64)]))  # f_0 = Σx
    scores = compute(
        "region_perturbation_aopc", context(model, x, torch.tensor([0, 0]), x), patch_size=2, n_regions=4
    )
    for i in range(2):
        patch_sums = sorted(x[i, 0].reshape(4, 2, 4, 2).sum(dim=(1, 3)).flatten().tolist(), reverse=True)
        drops = [sum(patch_sums[:k]) for k in range(5)]  # f(x) − f(x^(k)) = mass removed
        assert scores[i].item() == pytest.approx(sum(drops) / 5, rel=1e-5)


def test_faithfulness_correlation_is_one_for_input_x_gradient_of_linear_model() -> None:
    weight = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    model = linear_model(weight)
    x = images(3)
    target = torch.tensor([0, 1, 2])
    attributions = attribute("input_x_gradient", model, x, target)  # Δ_r = Σ_{S_r} x·w_y = s_r exactly
    scores = compute("faithfulness_correlation", context(model, x, target, attributions), n_draws=20)
    torch.testing.assert_close(scores, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)


def test_faithfulness_correlation_of_constant_map_is_nan() -> None:
    model = conv_net()
    x = images(4)
    scores = compute(
        "faithfulness_correlation", context(model, x, torch.tensor([0, 1, 2, 0]), torch.ones_like(x))
    )
    assert torch.isnan(scores).sum().item() == 4  # kept and countable, never silently 0


def test_infidelity_is_zero_for_gradient_of_linear_model() -> None:
    weight = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    model = linear_model(weight)
    x = images(3)
    target = torch.tensor([2, 0, 1])
    gradient = attribute("saliency", model, x, target, abs=False)  # Iᵀw_y = f(x) − f(x − I) for every I
    for normalize in (False, True):
        scores = compute("infidelity", context(model, x, target, gradient), normalize=normalize)
        assert scores.abs().max().item() < 1e-9
    doubled = compute("infidelity", context(model, x, target, 2 * gradient), normalize=True)
    assert doubled.abs().max().item() < 1e-9  # β removes the scale
    assert compute("infidelity", context(model, x, target, 2 * gradient)).min().item() > 1e-6


# --------------------------------------------------------------------------------------------------------------
# Continuity and randomisation
# --------------------------------------------------------------------------------------------------------------


def constant_explain(x: Tensor, target: Tensor, ids: Tensor) -> Tensor:
    return torch.ones_like(x)


def test_constant_explanation_is_perfectly_continuous() -> None:
    x = images(3)
    ctx = context(conv_net(), x, torch.tensor([0, 1, 2]), torch.ones_like(x), explain=constant_explain)
    for name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "continuity"):
        assert torch.equal(compute(name, ctx, **SMALL[name]), torch.zeros(3, dtype=torch.float64)), name


def test_max_and_avg_sensitivity_share_one_set_of_explanations() -> None:
    calls: list[int] = []
    model = conv_net()

    def explain(x: Tensor, target: Tensor, ids: Tensor) -> Tensor:
        calls.append(x.shape[0])
        return attribute("saliency", model, x, target)

    x = images(2)
    target = torch.tensor([1, 2])
    ctx = context(model, x, target, attribute("saliency", model, x, target), explain=explain)
    avg = compute("avg_sensitivity", ctx, n_perturbations=5)
    mx = compute("max_sensitivity", ctx, n_perturbations=5)
    assert sum(calls) == 2 * 5  # the second metric reused the first one's explanations
    assert (mx >= avg).all() and (avg > 0).all()
    fresh = context(model, x, target, ctx.attributions, explain=explain)
    assert torch.equal(compute("max_sensitivity", fresh, n_perturbations=5), mx)  # same draws either order


def test_random_logit_draws_another_class_and_ssim_of_equal_maps_is_one() -> None:
    seen: list[Tensor] = []

    def explain(x: Tensor, target: Tensor, ids: Tensor) -> Tensor:
        seen.append(target)
        return x * 3.0  # ignores the target: both maps are equal

    x = images(5)
    target = torch.tensor([0, 1, 2, 0, 1])
    scores = compute("random_logit", context(conv_net(), x, target, x * 3.0, explain=explain))
    torch.testing.assert_close(scores, torch.ones(5, dtype=torch.float64))
    other = torch.cat(seen)
    assert ((other != target) & (other >= 0) & (other < 3)).all()


def test_ssim_properties() -> None:
    a = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert (ssim(a, a.flip(-1)) < 0.9).all()
    assert torch.isnan(ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))).all()  # 0/0: undefined


@pytest.mark.parametrize("shape", [(5, 28, 28), (3, 7, 9), (2, 4, 30), (2, 1, 5), (2, 40, 33)])
def test_ssim_equals_the_two_dimensional_gaussian_window_by_definition(shape: tuple[int, int, int]) -> None:
    """ssim filters with two banded matrix products; the definition is one 2-d convolution with the outer product
    of the 1-d Gaussian window (shrunk to the largest odd size that fits), computed here pixel by pixel."""
    gen = torch.Generator().manual_seed(sum(shape))
    a, b = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen) ** 3
    n, h, w = shape
    size = min(11, h, w)
    size -= 1 - size % 2
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g1 = torch.exp(-(c**2) / (2 * 1.5**2))
    win = torch.outer(g1, g1) / g1.sum() ** 2
    expected = []
    for i in range(n):
        ai, bi = a[i].double(), b[i].double()
        rng = max(ai.max(), bi.max()) - min(ai.min(), bi.min())
        c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
        vals = []
        for r in range(h - size + 1):
            for q in range(w - size + 1):
                pa, pb = ai[r:r + size, q:q + size], bi[r:r + size, q:q + size]
                ma, mb = (win * pa).sum(), (win * pb).sum()
                va, vb = (win * pa * pa).sum() - ma**2, (win * pb * pb).sum() - mb**2
                cov = (win * pa * pb).sum() - ma * mb
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
        expected.append(torch.stack(vals).mean())
    torch.testing.assert_close(ssim(a, b), torch.stack(expected), rtol=0, atol=1e-12)


def test_spearman_uses_average_ranks_for_ties() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # ranks of a: 1, 2.5, 2.5, 4 → Pearson with 1, 2, 3, 4
    expected = 4.5 / math.sqrt(4.5 * 5.0)
    assert spearman(a, b).item() == pytest.approx(expected)
    assert torch.isnan(spearman(torch.ones(1, 4), b)).all()


def test_mprt_last_is_deterministic_and_leaves_model_and_rng_alone() -> None:
    model = conv_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(3)
    target = torch.tensor([0, 1, 2])

    def explain_with(m: nn.Module, x: Tensor, t: Tensor, ids: Tensor) -> Tensor:
        return attribute("saliency", m, x, t)

    attributions = attribute("saliency", model, x, target)
    rng = torch.get_rng_state()
    first = compute("mprt_last", context(model, x, target, attributions, explain_with=explain_with, seed=3))
    second = compute("mprt_last", context(model, x, target, attributions, explain_with=explain_with, seed=3))
    assert torch.equal(first, second)
    assert ((first >= -1) & (first <= 1)).all()
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    rand = randomised_copy(model, seed=3)
    assert not torch.equal(rand[0].weight, model[0].weight)
    assert torch.equal(rand[0].weight, randomised_copy(model, seed=3)[0].weight)
    assert not torch.equal(rand[0].weight, randomised_copy(model, seed=4)[0].weight)


# --------------------------------------------------------------------------------------------------------------
# Per-sample determinism and purity
# --------------------------------------------------------------------------------------------------------------


SEED = 11
N = 6


def smoothgrad_fns(model: nn.Module) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """A stochastic method bound to the seed, as the runner binds it."""

    def explain_with(m: nn.Module, x: Tensor, t: Tensor, ids: Tensor) -> Tensor:
        return attribute("smoothgrad", m, x, t, sample_ids=ids, seed=SEED, nt_samples=2)

    def explain(x: Tensor, t: Tensor, ids: Tensor) -> Tensor:
        return explain_with(model, x, t, ids)

    return explain, explain_with


def scores_in_batches(name: str, splits: list[int], batch_size: int) -> Tensor:
    model = conv_net()
    x = images(N, seed=8)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    ids = torch.arange(100, 100 + N)
    explain, explain_with = smoothgrad_fns(model)
    out, start = [], 0
    for size in splits:
        sl = slice(start, start + size)
        start += size
        ctx = context(
            model,
            x[sl],
            target[sl],
            explain(x[sl], target[sl], ids[sl]),
            explain=explain,
            explain_with=explain_with,
            sample_ids=ids[sl],
            seed=SEED,
            batch_size=batch_size,
            mask=box_masks(x)[sl],
        )
        out.append(compute(name, ctx, **SMALL.get(name, {})))
    return torch.cat(out)


@pytest.mark.parametrize("name", METRICS.names())
def test_scores_do_not_depend_on_batch_composition_or_size(name: str) -> None:
    full = scores_in_batches(name, [6], batch_size=64)
    assert full.shape == (N,) and full.dtype == torch.float64
    # Other batch compositions give the model forwards of other sizes, for which oneDNN may pick other conv
    # kernels: their float32 rounding moves a correlation by up to ~1e-5 on some CPUs. The draws themselves are
    # per sample and checked exactly by the seeding tests; a draw that depended on the batch would move scores by
    # far more than this tolerance.
    torch.testing.assert_close(
        scores_in_batches(name, [1] * 6, batch_size=64), full, rtol=0, atol=5e-5, equal_nan=True
    )
    torch.testing.assert_close(
        scores_in_batches(name, [4, 2], batch_size=3), full, rtol=0, atol=5e-5, equal_nan=True
    )
    torch.testing.assert_close(
        scores_in_batches(name, [6], batch_size=1), full, rtol=0, atol=5e-5, equal_nan=True
    )


def test_metrics_never_mutate_their_inputs() -> None:
    model = conv_net()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(3)
    target = torch.tensor([0, 1, 2])
    explain, explain_with = smoothgrad_fns(model)
    attributions = explain(x, target, torch.arange(3))
    mask = box_masks(x)
    x_before, a_before, t_before, mask_before = x.clone(), attributions.clone(), target.clone(), mask.clone()
    ctx = context(model, x, target, attributions, explain=explain, explain_with=explain_with, mask=mask)
    for name in METRICS.names():
        compute(name, ctx, **SMALL.get(name, {}))
    assert torch.equal(ctx.x, x_before) and torch.equal(ctx.attributions, a_before)
    assert torch.equal(ctx.target, t_before) and torch.equal(ctx.mask, mask_before)
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_match_cpu() -> None:
    # Draws are made on each device from integer hashes that are exact everywhere (docs/protocol.md#seeding);
    # only their floats may differ by rounding, so a device change must not change scores beyond float noise.
    x = images(N, seed=8)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    ids = torch.arange(N)

    def run(device: str) -> dict[str, Tensor]:
        m = conv_net().to(device)
        explain, explain_with = smoothgrad_fns(m)
        xd, td = x.to(device), target.to(device)
        ctx = context(
            m,
            xd,
            td,
            explain(xd, td, ids),
            explain=explain,
            explain_with=explain_with,
            sample_ids=ids,
            seed=SEED,
            mask=box_masks(x).to(device),
        )
        return {name: compute(name, ctx, **SMALL.get(name, {})) for name in METRICS.names()}

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions would differ from the CPU by ~1e-3
    try:
        cpu, cuda = run("cpu"), run("cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    for name in METRICS.names():
        torch.testing.assert_close(cuda[name], cpu[name], rtol=1e-4, atol=1e-4, equal_nan=True, msg=name)


# --------------------------------------------------------------------------------------------------------------
# forward_threads: PyTorch steps aside while a forward-only runtime (onnxruntime on the CPU) does the model calls
# --------------------------------------------------------------------------------------------------------------


def test_forward_threads_apply_only_to_forward_only_metrics() -> None:
    model = conv_net()
    x = images(6)
    with torch.no_grad():
        target = model(x).argmax(1)
    a = attribute("saliency", model, x, target)
    seen: list[int] = []

    def forward(xs: Tensor) -> Tensor:  # stands for the onnxruntime path; records PyTorch's thread count
        seen.append(torch.get_num_threads())
        return model(xs)

    def explain(xs: Tensor, ys: Tensor, ids: Tensor) -> Tensor:
        seen.append(-torch.get_num_threads())
        return attribute("saliency", model, xs, ys)

    before = torch.get_num_threads()
    if before < 2:
        torch.set_num_threads(2)
    try:
        ctx = context(model, x, target, a, explain=explain, forward=forward, forward_threads=1)
        ref = context(model, x, target, a, explain=explain)
        for name in ("faithfulness_correlation", "deletion_auc", "infidelity"):
            seen.clear()
            torch.testing.assert_close(compute(name, ctx, **SMALL[name]), compute(name, ref, **SMALL[name]))
            assert seen and set(seen) == {1}, name  # every forward ran with one PyTorch thread …
            assert torch.get_num_threads() == max(2, before)  # … and the count is restored afterwards
        seen.clear()
        compute("max_sensitivity", ctx, **SMALL["max_sensitivity"])  # explanations: PyTorch keeps its threads
        assert seen and set(seen) == {-max(2, before)}
        with pytest.raises(ConfigError, match="forward_threads must be a positive int, got 0"):
            compute("deletion_auc", context(model, x, target, a, forward=forward, forward_threads=0))
    finally:
        torch.set_num_threads(before)
