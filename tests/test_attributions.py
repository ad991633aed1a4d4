"""Attribution methods: shapes on a tiny conv net, analytic values on a linear model, per-sample determinism."""

from __future__ import annotations

import pytest
import torch
from helpers import conv_net, images, linear_model
from torch import Tensor, nn

from sclzoo.errors import ConfigError, UnknownNameError
from sclzoo.evaluator.attributions import METHODS, attribute, gradcam_layer, method_defaults
from sclzoo.evaluator.metrics import sample_generator, stable_seed

RANDOM_METHODS = ("gradient_shap", "smoothgrad", "expected_gradients")


def hand_set_linear() -> tuple[nn.Module, Tensor]:
    """Logits = W·flatten(x) + b on 1×8×8 images with hand-set weights; returns (model, W (3, 64))."""
    weight = torch.linspace(-1.0, 1.0, 3 * 64).reshape(3, 64) * torch.tensor([1.0, -2.0, 0.5])[:, None]
    return linear_model(weight, torch.tensor([0.1, -0.2, 0.3])), weight


def small_params(name: str, pool: Tensor) -> dict:
    """Cheap parameters so the whole file runs in seconds."""
    return {
        "integrated_gradients": {"n_steps": 8},
        "gradient_shap": {"n_samples": 4},
        "expected_gradients": {"n_samples": 4, "baseline_pool": pool},
        "smoothgrad": {"nt_samples": 4},
    }.get(name, {})


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_returns_input_shape_on_conv_net(name: str) -> None:
    model = conv_net(channels=3)
    x = images(2, 3, 12)
    x_before = x.clone()
    out = attribute(name, model, x, torch.tensor([0, 2]), **small_params(name, images(5, 3, 12, seed=9)))
    assert out.shape == x.shape
    assert out.dtype == torch.float32 and not out.requires_grad
    assert torch.isfinite(out).all()
    assert torch.equal(x, x_before) and not x.requires_grad


def test_registry_entries_are_complete() -> None:
    assert len(METHODS.names()) == 10
    for name, spec in METHODS.items():
        assert spec.name == name and spec.captum and spec.description
        assert method_defaults(name) == spec.defaults
        assert method_defaults(name) is not spec.defaults  # a copy: callers cannot edit the registry


def test_linear_model_saliency_input_x_gradient_integrated_gradients() -> None:
    model, weight = hand_set_linear()
    x = images(4, 1, 8)
    target = torch.tensor([0, 1, 2, 1])
    w_y = weight[target].view(4, 1, 8, 8)
    torch.testing.assert_close(attribute("saliency", model, x, target), w_y.abs())
    torch.testing.assert_close(attribute("saliency", model, x, target, abs=False), w_y)
    torch.testing.assert_close(attribute("input_x_gradient", model, x, target), x * w_y)
    # Completeness with baseline 0: IG of a linear model is exactly x·w_y (quadrature weights sum to 1).
    ig = attribute("integrated_gradients", model, x, target)
    torch.testing.assert_close(ig, x * w_y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        ig.flatten(1).sum(1), (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None])[:, 0]
    )
    # DeepLift of a linear model is (x − b)·w_y as well.
    torch.testing.assert_close(attribute("deeplift", model, x, target), x * w_y, rtol=1e-5, atol=1e-6)


def test_linear_model_expected_gradients_with_one_baseline() -> None:
    model, weight = hand_set_linear()
    x = images(3, 1, 8)
    target = torch.tensor([2, 0, 1])
    base = images(1, 1, 8, seed=5)
    out = attribute("expected_gradients", model, x, target, baseline_pool=base)
    torch.testing.assert_close(out, (x - base) * weight[target].view(3, 1, 8, 8), rtol=1e-5, atol=1e-6)


def test_linear_model_gradient_shap_mixes_black_and_white() -> None:
    # Each draw contributes w_y (x − b_j) with b_j black or white: the result is w_y (x − q), q = share of white.
    model, weight = hand_set_linear()
    x = images(3, 1, 8)
    target = torch.tensor([0, 1, 2])
    out = attribute("gradient_shap", model, x, target)
    w_y = weight[target].view(3, 1, 8, 8)
    q = x - out / w_y  # (N, 1, 8, 8), one value per sample
    q_per_sample = q.flatten(1)[:, :1]
    torch.testing.assert_close(q.flatten(1), q_per_sample.expand(-1, 64), rtol=0, atol=1e-4)
    sixteenths = q_per_sample * method_defaults("gradient_shap")["n_samples"]
    torch.testing.assert_close(sixteenths, sixteenths.round(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", RANDOM_METHODS)
def test_random_methods_do_not_depend_on_batch_composition(name: str) -> None:
    model = conv_net(channels=1)
    x = images(6, 1, 8)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    ids = torch.tensor([10, 11, 12, 13, 14, 15])
    params = small_params(name, images(7, 1, 8, seed=3))
    full = attribute(name, model, x, target, sample_ids=ids, seed=7, **params)
    ones = torch.cat(
        [
            attribute(
                name, model, x[i : i + 1], target[i : i + 1], sample_ids=ids[i : i + 1], seed=7, **params
            )
            for i in range(6)
        ]
    )
    fours = torch.cat(
        [
            attribute(name, model, x[:4], target[:4], sample_ids=ids[:4], seed=7, **params),
            attribute(name, model, x[4:], target[4:], sample_ids=ids[4:], seed=7, **params),
        ]
    )
    torch.testing.assert_close(ones, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(fours, full, rtol=0, atol=1e-6)
    # Reordering the batch reorders the attributions and nothing else.
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    shuffled = attribute(name, model, x[perm], target[perm], sample_ids=ids[perm], seed=7, **params)
    torch.testing.assert_close(shuffled, full[perm], rtol=0, atol=1e-6)
    # The seed and the sample id matter.
    other_seed = attribute(name, model, x, target, sample_ids=ids, seed=8, **params)
    assert not torch.allclose(other_seed, full)


def test_smoothgrad_with_zero_noise_is_saliency() -> None:
    model = conv_net(channels=3)
    x = images(2, 3, 10)
    target = torch.tensor([1, 2])
    torch.testing.assert_close(
        attribute("smoothgrad", model, x, target, stdevs=0.0, nt_samples=3),
        attribute("saliency", model, x, target),
    )


def test_sample_generator_is_stable_and_keyed() -> None:
    a = torch.rand(4, generator=sample_generator(3, "smoothgrad", 17))
    b = torch.rand(4, generator=sample_generator(3, "smoothgrad", 17))
    assert torch.equal(a, b)
    assert stable_seed(3, "smoothgrad", 17) != stable_seed(3, "smoothgrad", 18)
    assert stable_seed(3, "smoothgrad", 17) != stable_seed(3, "gradient_shap", 17)
    assert stable_seed(3, "smoothgrad", 17) != stable_seed(4, "smoothgrad", 17)
    assert 0 <= stable_seed(3, "smoothgrad", 17) < 2**63


def test_gradcam_uses_model_gradcam_layer_when_defined() -> None:
    class WithChoice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = conv_net(channels=3)

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

        def gradcam_layer(self) -> nn.Module:
            return self.net[0]

    model = WithChoice().eval()
    assert gradcam_layer(model) is model.net[0]
    wrapped = nn.Sequential(nn.Identity(), model).eval()  # a wrapper still finds the inner choice
    assert gradcam_layer(wrapped) is model.net[0]


def test_gradcam_picks_last_conv_and_broadcasts_channels() -> None:
    model = conv_net(channels=3)
    assert gradcam_layer(model) is model[2]
    out = attribute("gradcam", model, images(2, 3, 12), torch.tensor([0, 1]))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert (out >= 0).all()  # ReLU'd CAM


def test_gradcam_without_conv_is_a_clear_error() -> None:
    model, _ = hand_set_linear()
    with pytest.raises(ConfigError, match="gradcam_layer"):
        attribute("gradcam", model, images(1, 1, 8), torch.tensor([0]))


def test_expected_gradients_requires_baseline_pool() -> None:
    with pytest.raises(ConfigError, match="baseline_pool"):
        attribute("expected_gradients", conv_net(channels=3), images(1, 3, 8), torch.tensor([0]))
    with pytest.raises(ConfigError, match="baseline_pool must be a tensor"):
        attribute(
            "expected_gradients",
            conv_net(channels=3),
            images(1, 3, 8),
            torch.tensor([0]),
            baseline_pool=images(2, 1, 8),
        )


def test_unknown_method_and_parameter() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'saliency'"):
        attribute("salency", conv_net(channels=3), images(1, 3, 8), torch.tensor([0]))
    with pytest.raises(ConfigError, match="'n_step'.*n_steps"):
        attribute("integrated_gradients", conv_net(channels=3), images(1, 3, 8), torch.tensor([0]), n_step=4)


def test_bad_inputs_are_config_errors() -> None:
    model = conv_net(channels=3)
    with pytest.raises(ConfigError, match="long tensor"):
        attribute("saliency", model, images(2, 3, 8), torch.tensor([0.0, 1.0]))
    with pytest.raises(ConfigError, match=r"\(N, C, H, W\)"):
        attribute("saliency", model, torch.rand(3, 8, 8), torch.tensor([0]))
    with pytest.raises(ConfigError, match="model.eval"):
        attribute("saliency", model.train(), images(1, 3, 8), torch.tensor([0]))


@pytest.mark.parametrize("name", ["saliency", "deeplift", "gradcam", "smoothgrad"])
def test_methods_work_inside_no_grad(name: str) -> None:
    # The runner may wrap evaluation in torch.no_grad(); gradient methods must still see gradients.
    model = conv_net(channels=3)
    x = images(2, 3, 10)
    target = torch.tensor([0, 1])
    params = small_params(name, images(2, 3, 10))
    expected = attribute(name, model, x, target, **params)
    with torch.no_grad():
        torch.testing.assert_close(attribute(name, model, x, target, **params), expected)


def test_method_passes_match_the_passes_captum_makes() -> None:
    """The cost model behind progress bars and --dry-run counts what the methods really run."""
    from sclzoo.evaluator.attributions import method_passes

    calls = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(1 * 12 * 12, 3)).eval()
    net.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    x = torch.rand(1, 1, 12, 12)
    target = torch.tensor([1])
    for name, params in (("occlusion", {"perturbations_per_eval": 1}), ("occlusion", {"window": 5, "stride": 3,
                                                                                        "perturbations_per_eval": 1}),
                         ("integrated_gradients", {"n_steps": 7}), ("smoothgrad", {"nt_samples": 5}),
                         ("saliency", {})):
        calls.clear()
        attribute(name, net, x, target, sample_ids=torch.tensor([0]), seed=0, **params)
        fwd, grad = method_passes(name, params, (1, 12, 12))
        images = sum(calls)
        if name == "occlusion":
            assert grad == 0 and images == fwd + 1  # captum also runs the unoccluded image once
        else:
            assert fwd == 0 and images == grad


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "gradient_shap"])
def test_gradient_chunks_bound_memory_without_changing_maps(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With internal_batch_size None, gradients are taken in chunks of CHUNK_ELEMENTS input elements: the maps
    are those of one pass over all scaled inputs, up to the float rounding of batch-size dependent kernels (bit for
    bit for the bundled ResNet-8s)."""
    import sclzoo.evaluator.attributions as attributions

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(6, 1, 8, 8)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    ids = torch.arange(6)
    one_pass = attribute(method, net, x, target, sample_ids=ids, seed=0)
    sizes: list[int] = []
    net.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
    monkeypatch.setitem(attributions.CHUNK_ELEMENTS, "cpu", 5 * 64)  # 5 rows of 1×8×8 per pass
    chunked = attribute(method, net, x, target, sample_ids=ids, seed=0)
    assert max(sizes) == 5 and len(sizes) > 1
    torch.testing.assert_close(chunked, one_pass, rtol=1e-5, atol=1e-8)


def test_gradient_chunks_are_smaller_on_a_cpu_than_on_a_gpu() -> None:
    """A CPU gains nothing from chunks past about 64 rows and only holds more activations; a GPU gets larger ones."""
    from sclzoo.evaluator.attributions import CHUNK_ELEMENTS, auto_chunk

    rows = torch.zeros(4096, 1, 28, 28)
    assert 64 <= auto_chunk(rows) <= 128  # 83 rows of 1×28×28 on a CPU
    assert auto_chunk(torch.zeros(2, 3, 224, 224)) == 1
    assert CHUNK_ELEMENTS["cuda"] > CHUNK_ELEMENTS["cpu"]


def test_occlusion_batches_window_positions_by_input_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """perturbations_per_eval None: as many window positions per forward as keep it within CHUNK_ELEMENTS (one
    for a 64-image batch of 1×28×28 on a CPU); maps equal those of an explicit count up to float rounding."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 3)).eval()
    x, target = torch.rand(64, 1, 28, 28), torch.randint(0, 3, (64,))
    rows: list[int] = []
    net.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    auto = attribute("occlusion", net, x, target)
    assert max(rows) == 64  # one position per forward
    rows.clear()
    explicit = attribute("occlusion", net, x, target, perturbations_per_eval=16)
    assert max(rows) == 64 * 16
    torch.testing.assert_close(auto, explicit, rtol=1e-5, atol=1e-6)
    rows.clear()
    attribute("occlusion", net, x[:8], target[:8])
    assert max(rows) == 8 * (65536 // (8 * 784))  # 10 positions of 8 images
