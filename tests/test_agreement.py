"""Agreement of sclzoo's metrics with the reference implementations
(docs/protocol.md#reference-implementations).

References: Quantus 0.6.0 and ``captum.metrics``, called here only, never copied into sclzoo. Everything runs on
real 1-channel 28×28 MNIST digits, so a Quantus "feature" is exactly one of our pixels, and on a tiny seeded
``test_resnet_cifar`` in eval mode, so the module takes a few seconds on a 2-core CPU.

What each test asserts:

- deterministic metrics (sparseness, complexity, effective_complexity, the deletion curve) equal Quantus's to
  ≤ 1e-5 on the same maps;
- infidelity and max_sensitivity equal captum's to ≤ 1e-6 (relative) when captum's ``perturb_func`` returns the
  very draws sclzoo makes (reproduced with the same :mod:`sclzoo.evaluator.seeding` calls and stream names as
  evaluator/metrics/);
- faithfulness_correlation and local_lipschitz_estimate, whose draws Quantus makes from the global
  ``np.random``, agree with Quantus in mean over 16 images within 3 combined standard errors.

Every Quantus/captum setting that differs from the library's default is set on purpose; the comment beside it
says which Quantus trap (docs/protocol.md#reference-implementations) or which convention it handles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import Tensor, nn

from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.metrics import MetricContext, compute, metric_defaults, normal, uniform
from sclzoo.evaluator.metrics.faithfulness import flip_curve, pixel_ranks
from sclzoo.zoo.data import load_dataset

# Importing Quantus 0.6.0 works on numpy 2.4; only its AUC helper (utils.calculate_auc) calls np.trapz, which
# numpy 2.4 removed. The one test that reaches it patches np.trapz for its own duration (see below).
quantus = pytest.importorskip("quantus")
captum_metrics = pytest.importorskip("captum.metrics")
from quantus.functions.similarity_func import correlation_pearson, distance_euclidean  # noqa: E402
from quantus.helpers.utils import calculate_auc  # noqa: E402

if quantus.__version__ != "0.6.0":  # the traps below are those of 0.6.0; another version needs a re-read
    pytest.skip(f"written against Quantus 0.6.0, found {quantus.__version__}", allow_module_level=True)

# Tier (tests/conftest.py): agreement with the reference implementations.
pytestmark = pytest.mark.reference

N_IMAGES = 16
SEED = 3
#: Non-trivial global ids, so a test would notice draws keyed by batch position instead of sample id.
SAMPLE_IDS = torch.arange(100, 100 + N_IMAGES)
#: Per-sample max-normalisation in Quantus. Its default normalise_by_max divides the whole batch by one
#: number (a Quantus trap); sclzoo scales each sample by its own max.
PER_SAMPLE_MAX = {"normalise_axes": (1, 2, 3)}


# --------------------------------------------------------------------------------------------------------------
# Fixtures: one tiny model, 16 real digits, their maps
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """Seeded random ``test_resnet_cifar`` for 1×28×28 inputs, eval mode; the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = timm.create_model("test_resnet_cifar", in_chans=1, num_classes=10)
    return net.eval()


@pytest.fixture(scope="module")
def batch(model: nn.Module) -> tuple[Tensor, Tensor]:
    """(x (16, 1, 28, 28) float32 in [0, 1], predicted target (16,) long)."""
    x = load_dataset("mnist5k", "test").images[:N_IMAGES].clone()
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    return x, target


@pytest.fixture(scope="module")
def maps(model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """Attribution maps (16, 1, 28, 28) of two methods: saliency (≥ 0, many ties) and IG (signed)."""
    x, target = batch
    return {
        name: attribute(name, model, x, target, sample_ids=SAMPLE_IDS, seed=SEED)
        for name in ("saliency", "integrated_gradients")
    }


def _explain_saliency(model: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    def explain(x: Tensor, target: Tensor, ids: Tensor) -> Tensor:
        return attribute("saliency", model, x, target, sample_ids=ids, seed=SEED)

    return explain


def _context(model: nn.Module, batch: tuple[Tensor, Tensor], a: Tensor, batch_size: int = 64) -> MetricContext:
    x, target = batch
    return MetricContext(
        model=model,
        x=x,
        target=target,
        attributions=a,
        explain=_explain_saliency(model),
        sample_ids=SAMPLE_IDS,
        seed=SEED,
        batch_size=batch_size,
    )


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
    """Quantus' ``explain_func`` protocol around sclzoo's saliency (the method of the maps under test)."""
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    y = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    return _np(attribute("saliency", model, x, y))


def _z_combined(ours: np.ndarray, ref: np.ndarray) -> float:
    """|mean difference| in units of the combined standard error of the two means."""
    se = math.sqrt(ours.var(ddof=1) / len(ours) + ref.var(ddof=1) / len(ref))
    return abs(ours.mean() - ref.mean()) / se


def _z_paired(ours: np.ndarray, ref: np.ndarray) -> float:
    """|mean of per-image differences| / its standard error (same images, independent draws)."""
    d = ours - ref
    return abs(d.mean()) / (d.std(ddof=1) / math.sqrt(len(d)))


# --------------------------------------------------------------------------------------------------------------
# Complexity: deterministic, exact agreement with Quantus
# --------------------------------------------------------------------------------------------------------------


def _quantus_complexity(name: str) -> Any:
    # abs=True: sclzoo's complexity metrics act on |m| (Quantus applies abs after normalising, and
    # |a / max|a|| = |a| / max|a|, so the order does not matter).
    # normalise=True with per-sample axes (PER_SAMPLE_MAX): sclzoo scales each map by its own max; Quantus'
    # default scales the batch by the batch max (a Quantus trap). Sparseness and EffectiveComplexity depend on
    # it (the 1e-7 offset and ε act after scaling); Complexity is scale-free, normalised alike for uniformity.
    common = {"abs": True, "normalise": True, "normalise_func_kwargs": PER_SAMPLE_MAX, "disable_warnings": True}
    if name == "sparseness":
        return quantus.Sparseness(**common)  # Gini of |m|/max|m| + 1e-7: the 1e-7 is hard-coded in both
    if name == "complexity":
        return quantus.Complexity(**common)  # entropy with the same ln(p + 1e-12), hard-coded in both
    # Quantus' default ε is 1e-5; sclzoo's is 1e-2 (docs/protocol.md#effective-complexity).
    return quantus.EffectiveComplexity(eps=metric_defaults("effective_complexity")["eps"], **common)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
@pytest.mark.parametrize("name", ["sparseness", "complexity", "effective_complexity"])
def test_complexity_metrics_equal_quantus(
    name: str, method: str, model: nn.Module, batch: tuple[Tensor, Tensor], maps: dict[str, Tensor]
) -> None:
    x, target = batch
    a = maps[method]
    ours = compute(name, _context(model, batch, a)).numpy()
    # float64 maps: Quantus computes in the map's dtype, sclzoo in float64; same values in, same arithmetic.
    ref = np.asarray(
        _quantus_complexity(name)(
            model=model,
            x_batch=_np(x),
            y_batch=_np(target),
            a_batch=_np(a.double()),
            channel_first=True,
        ),
        dtype=np.float64,
    )
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Deletion curve: deterministic for a fixed pixel order, exact agreement with Quantus PixelFlipping
# --------------------------------------------------------------------------------------------------------------


def _tie_free(ctx: MetricContext) -> Tensor:
    """D − rank of each pixel in sclzoo's order, as a (N, 1, H, W) float64 map.

    Quantus orders pixels with ``np.argsort(-a)``, an unstable sort, while sclzoo breaks ties by pixel index;
    saliency maps have many exact ties (on this model about half the pixels share a value with another), so
    the two orders may differ inside a tie. This map induces sclzoo's order and has no ties, so both libraries
    flip the same pixels at every step.
    """
    ranks = pixel_ranks(ctx)
    d = ranks.shape[1]
    return (d - ranks).double().view_as(ctx.x)


@pytest.mark.parametrize("steps", [28, 49])
def test_deletion_curve_equals_quantus_pixel_flipping(
    steps: int,
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    maps: dict[str, Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, target = batch
    d = x.shape[-2] * x.shape[-1]
    assert d % steps == 0  # our step k moves ⌊k·D/K⌋ pixels; with K | D that is k·(D/K), Quantus' step size
    order_map = _tie_free(_context(model, batch, maps["saliency"]))
    ctx = _context(model, batch, order_map.float(), batch_size=N_IMAGES * (steps + 1))  # one forward
    assert torch.equal(pixel_ranks(ctx), d - order_map.flatten(1).long())  # the tie-free map keeps the order
    ours = flip_curve(ctx, steps, 0.0, insert=False).numpy()  # (N, K+1): c_0 = p_y(x), …, c_K

    metric = quantus.PixelFlipping(
        features_in_step=d // steps,
        abs=False,  # order by the signed map, descending, as sclzoo (MoRF)
        normalise=False,  # the order is scale-free; no batch-wide max (a Quantus trap) to worry about
        # A number, not "black": Quantus' "black" is each sample's current minimum, not 0 (a Quantus trap).
        # get_baseline_value fills a float as is.
        perturb_baseline=0.0,
        return_auc_per_sample=False,  # the curve itself, one list of K values per sample
        disable_warnings=True,
    )
    ref = np.asarray(
        metric(
            model=model,
            x_batch=_np(x),
            y_batch=_np(target),
            a_batch=_np(order_map),
            channel_first=True,
            softmax=True,  # PixelFlipping's default: p_y, as sclzoo's deletion curve (not the logit)
            batch_size=64,
        ),
        dtype=np.float64,
    )
    # Quantus' curve starts after the first step (c_1..c_K) and has no c_0.
    assert ref.shape == (N_IMAGES, steps)
    np.testing.assert_allclose(ours[:, 1:], ref, rtol=0, atol=1e-5)
    with torch.no_grad():
        clean = model(x).double().softmax(dim=1).gather(1, target[:, None])[:, 0].numpy()
    np.testing.assert_allclose(ours[:, 0], clean, rtol=0, atol=1e-7)

    # Quantus' AUC per sample is np.trapz over c_1..c_K on unit steps, not divided by K. np.trapz is gone in
    # numpy ≥ 2.4 (a Quantus trap): patch it for this test only.
    # Then K·deletion_auc = AUC_Quantus + (c_0 + c_1)/2.
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    auc_ref = calculate_auc(ref, batched=True)  # what return_auc_per_sample=True returns
    auc_ours = compute("deletion_auc", ctx, steps=steps).numpy()
    np.testing.assert_allclose(auc_ours * steps, auc_ref + 0.5 * (ours[:, 0] + ours[:, 1]), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Infidelity and max-sensitivity: captum fed sclzoo's own draws, exact agreement
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum(
    normalize: bool, model: nn.Module, batch: tuple[Tensor, Tensor], maps: dict[str, Tensor]
) -> None:
    x, target = batch
    a = maps["saliency"]
    n_pert, sigma = metric_defaults("infidelity")["n_perturbations"], metric_defaults("infidelity")["sigma"]
    _, c, h, w = x.shape
    # One model forward over all N·n perturbed rows in both libraries (captum: max_examples_per_batch=None;
    # sclzoo: batch_size = N·n), in the same sample-major order, so even float32 rounding is shared.
    ctx = _context(model, batch, a, batch_size=N_IMAGES * n_pert)
    ours = compute("infidelity", ctx, normalize=normalize)

    # sclzoo's draws, exactly as evaluator/metrics/ makes them: stream "infidelity", keyed by sample id,
    # normal(n, C, H, W) · σ; the perturbed input is x − I.
    noise = normal(SEED, "infidelity", SAMPLE_IDS, (n_pert, c, h, w)) * sigma
    flat_noise = noise.reshape(N_IMAGES * n_pert, c, h, w)

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        # captum expands the batch with repeat_interleave (row i·n + j = sample i, draw j): sclzoo's order.
        # It computes f(x) − f(x_perturbed) and Iᵀa, so the returned perturbation is I and the input x − I.
        assert inputs.shape[0] == flat_noise.shape[0]
        return flat_noise.double(), (inputs.float() - flat_noise).double()

    ref = captum_metrics.infidelity(
        # float64 bookkeeping around the float32 model, as sclzoo (captum would otherwise sum IᵀA in float32)
        lambda inp: model(inp.float()).double(),
        perturb,
        x.double(),
        a.double(),
        target=target,
        n_perturb_samples=n_pert,
        max_examples_per_batch=None,
        normalize=normalize,  # captum's β-normalisation, mirrored by sclzoo's parameter of the same name
    )
    assert ref.dtype == torch.float64 and ref.shape == (N_IMAGES,)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)


def _captum_format(
    inputs: Tensor | tuple[Tensor, ...], explain: Callable[[Tensor], Tensor]
) -> Tensor | tuple[Tensor, ...]:
    """Applies ``explain`` in captum's input format: sensitivity_max passes the clean inputs as a 1-tuple and
    iterates over the result, so a tuple must come back for a tuple (a bare tensor would be iterated by rows)."""
    if isinstance(inputs, tuple):
        return (explain(inputs[0]),)
    return explain(inputs)


def _sensitivity_noise(n_pert: int, radius: float, shape: tuple[int, ...]) -> Tensor:
    """sclzoo's max_sensitivity draws (N, n, C, H, W): stream "max_sensitivity", U(−r, r) as (u·2 − 1)·r."""
    c, h, w = shape
    return (uniform(SEED, "max_sensitivity", SAMPLE_IDS, (n_pert, c, h, w)) * 2 - 1) * radius


@pytest.mark.parametrize("per_call", ["all_draws", "one_draw"])
def test_max_sensitivity_equals_captum(
    per_call: str, model: nn.Module, batch: tuple[Tensor, Tensor], maps: dict[str, Tensor]
) -> None:
    x, target = batch
    a = maps["saliency"]
    n_pert, radius = (metric_defaults("max_sensitivity")[k] for k in ("n_perturbations", "radius"))
    noise = _sensitivity_noise(n_pert, radius, tuple(x.shape[1:]))
    # "all_draws": captum perturbs all N·n rows in one call (max_examples_per_batch=None), sclzoo explains them in
    # one chunk: the same saliency batch, bitwise. "one_draw": captum calls perturb_func n times with N rows each
    # (max_examples_per_batch=N) and gets sclzoo's j-th draw on call j; saliency then runs on other batch
    # compositions, which may move float32 gradients by an ulp (well inside 1e-6 relative).
    one_draw = per_call == "one_draw"
    ctx = _context(model, batch, a, batch_size=N_IMAGES * n_pert)
    ours = compute("max_sensitivity", ctx)
    calls = {"j": 0}

    def perturb(inputs: Tensor) -> Tensor:
        if one_draw:
            j = calls["j"]
            calls["j"] += 1
            return inputs + noise[:, j]
        return inputs + noise.reshape(-1, *inputs.shape[1:])  # repeat_interleave: row i·n + j = x_i + draw j

    def explanation(inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> Tensor | tuple[Tensor, ...]:
        # float64 output: captum takes the norms in the explanation's dtype, sclzoo in float64. captum calls this
        # under torch.no_grad(); captum's Saliency re-enables grad for its own backward.
        return _captum_format(inputs, lambda t: attribute("saliency", model, t, target).double())

    ref = captum_metrics.sensitivity_max(
        explanation,
        x,
        perturb_func=perturb,
        n_perturb_samples=n_pert,
        norm_ord="fro",  # ‖·‖_F over the flattened map, sclzoo's norm (captum's default)
        max_examples_per_batch=N_IMAGES if one_draw else None,
        target=target,
    )
    if one_draw:
        assert calls["j"] == n_pert
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)


def test_max_sensitivity_zero_map_convention_equals_captum(batch: tuple[Tensor, Tensor]) -> None:
    """‖a(x)‖ = 0 divides by 1 in both (captum's convention, also sclzoo's; Quantus would divide by 0).

    The explanation e(x) = x − x_0 (x_0 the first clean image) is exactly zero at sample 0 only.
    """
    x, target = batch
    n_pert, radius = 4, 0.05
    noise = _sensitivity_noise(n_pert, radius, tuple(x.shape[1:]))
    x0 = x[:1].clone()

    def explain(inputs: Tensor, tgt: Tensor, ids: Tensor | None = None) -> Tensor:
        return inputs - x0

    ctx = MetricContext(
        model=nn.Identity(),  # never called: max_sensitivity uses the explanation function only
        x=x,
        target=target,
        attributions=explain(x, target),
        explain=explain,
        sample_ids=SAMPLE_IDS,
        seed=SEED,
        batch_size=N_IMAGES * n_pert,
    )
    ours = compute("max_sensitivity", ctx, n_perturbations=n_pert, radius=radius)
    ref = captum_metrics.sensitivity_max(
        lambda inp, target: _captum_format(inp, lambda t: explain(t, target).double()),
        x,
        perturb_func=lambda inputs: inputs + noise.reshape(-1, *inputs.shape[1:]),
        n_perturb_samples=n_pert,
        target=target,
    )
    assert ctx.attributions[0].abs().sum() == 0
    # Sample 0: ‖x' − x‖_F over ‖0‖ → 1, i.e. the largest noise norm itself.
    expected0 = noise[0].double().flatten(1).norm(dim=1).max()
    torch.testing.assert_close(ours[0], expected0, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Faithfulness correlation and local Lipschitz estimate: Quantus draws from np.random, agreement in mean
# --------------------------------------------------------------------------------------------------------------


def test_faithfulness_correlation_agrees_with_quantus_in_mean(
    model: nn.Module, batch: tuple[Tensor, Tensor], maps: dict[str, Tensor]
) -> None:
    x, target = batch
    a = maps["saliency"]
    defaults = metric_defaults("faithfulness_correlation")
    d = x.shape[-2] * x.shape[-1]
    subset = round(d / 16)  # sclzoo's k = round(D_p / 16) = 49
    ours = compute("faithfulness_correlation", _context(model, batch, a)).numpy()

    metric = quantus.FaithfulnessCorrelation(
        nr_runs=defaults["n_draws"],  # R = 100
        subset_size=subset,  # Quantus' default 224 is meant for 224² images
        similarity_func=correlation_pearson,  # sclzoo's Pearson (Quantus' default)
        abs=False,  # s_r sums the signed map m
        normalise=False,  # Pearson is scale-free, and the default would scale batch-wide (a Quantus trap)
        perturb_baseline=0.0,  # a number: Quantus' "black" is the sample minimum, not 0 (a Quantus trap)
        return_aggregate=False,  # per-sample scores; the default returns the batch mean (a Quantus trap)
        disable_warnings=True,
    )
    np.random.seed(SEED)  # Quantus has no seed argument and draws from the global np.random (a Quantus trap)
    ref = np.asarray(
        metric(
            model=model,
            x_batch=_np(x),
            y_batch=_np(target),
            a_batch=_np(a.double()),
            channel_first=True,
            softmax=False,  # Δ on logits f_y, as sclzoo (Quantus' default here too)
            batch_size=64,
        ),
        dtype=np.float64,
    )
    assert ref.shape == ours.shape == (N_IMAGES,)
    assert np.isfinite(ours).all() and np.isfinite(ref).all()
    z = _z_combined(ours, ref)
    assert z < 3, f"mean {ours.mean():.4f} vs Quantus {ref.mean():.4f}: z = {z:.2f}"
    # Stronger, on the same images: the per-image differences come from the draws alone.
    zp = _z_paired(ours, ref)
    assert zp < 3, f"paired z = {zp:.2f}"


def test_local_lipschitz_estimate_agrees_with_quantus_in_mean(
    model: nn.Module, batch: tuple[Tensor, Tensor], maps: dict[str, Tensor]
) -> None:
    x, target = batch
    a = maps["saliency"]
    defaults = metric_defaults("local_lipschitz_estimate")
    ours = compute("local_lipschitz_estimate", _context(model, batch, a)).numpy()

    metric = quantus.LocalLipschitzEstimate(
        nr_samples=defaults["n_perturbations"],  # n = 16 (Quantus' default 200)
        perturb_mean=0.0,
        perturb_std=defaults["sigma"],  # σ = 0.025 (Quantus' default 0.1)
        # â = a / max|a| per map, for the clean and the perturbed maps; Quantus' default divides by the batch max
        # (a Quantus trap). abs=False: sclzoo compares the signed maps.
        normalise=True,
        normalise_func_kwargs=PER_SAMPLE_MAX,
        abs=False,
        # Both norms ‖·‖₂ (Quantus' defaults: distance_euclidean over the flattened arrays), eps 1e-10 in both.
        norm_numerator=distance_euclidean,
        norm_denominator=distance_euclidean,
        return_nan_when_prediction_changes=False,  # sclzoo keeps every draw
        return_aggregate=False,
        disable_warnings=True,
    )
    np.random.seed(SEED)  # global np.random, no seed argument (a Quantus trap)
    ref = np.asarray(
        metric(
            model=model,
            x_batch=_np(x),
            y_batch=_np(target),
            a_batch=_np(a),
            channel_first=True,
            explain_func=_quantus_explain,  # the same saliency, recomputed on the perturbed inputs
            batch_size=64,
        ),
        dtype=np.float64,
    )
    assert ref.shape == ours.shape == (N_IMAGES,)
    assert np.isfinite(ours).all() and np.isfinite(ref).all()
    z = _z_combined(ours, ref)
    assert z < 3, f"mean {ours.mean():.4f} vs Quantus {ref.mean():.4f}: z = {z:.2f}"
    zp = _z_paired(ours, ref)
    assert zp < 3, f"paired z = {zp:.2f}"
