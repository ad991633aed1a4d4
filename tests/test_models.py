"""Zoo architectures: timm registration, sizes, attribution-friendly ReLUs, in-model normalisation."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from sclzoo.zoo.models import ARCHITECTURES, CifarResNet, Normalize, ProjectionHead, encode

SMALL = ["resnet20_cifar", "resnet8_cifar", "test_resnet_cifar"]


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_architectures_are_registered_in_timm() -> None:
    assert set(ARCHITECTURES) <= set(timm.list_models("*_cifar"))
    assert set(ARCHITECTURES) == {"resnet18_cifar", "resnet20_cifar", "resnet8_cifar", "test_resnet_cifar"}


@pytest.mark.parametrize("arch", SMALL)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_builds_and_runs(arch: str, in_chans: int) -> None:
    torch.manual_seed(0)
    m = timm.create_model(arch, in_chans=in_chans, num_classes=7).eval()
    assert isinstance(m, CifarResNet)
    assert m.conv1.in_channels == in_chans
    x = torch.rand(2, in_chans, 16, 16)
    with torch.no_grad():
        assert m(x).shape == (2, 7)
        assert encode(m, x).shape == (2, m.num_features)
        # The stem keeps the resolution (3×3 stride 1, no max-pool); each later stage halves it.
        n_stages = len(ARCHITECTURES[arch]["layers"])
        assert m.forward_features(x).shape[-1] == 16 // 2 ** (n_stages - 1)
    # timm must not normalise a second time: the model's pretrained_cfg is identity mean/std.
    assert tuple(m.pretrained_cfg["mean"]) == (0.0, 0.0, 0.0) and tuple(m.pretrained_cfg["std"]) == (1.0, 1.0, 1.0)
    assert m.pretrained_cfg["first_conv"] is None


def test_encoder_without_head_and_reset_classifier() -> None:
    m = timm.create_model("test_resnet_cifar", in_chans=1, num_classes=0).eval()
    x = torch.rand(3, 1, 8, 8)  # digits-sized input
    with torch.no_grad():
        assert m(x).shape == (3, 16)
        m.reset_classifier(10)
        assert m(x).shape == (3, 10)
    assert m.get_classifier() is m.fc and m.num_classes == 10


def test_parameter_counts() -> None:
    assert _n_params(timm.create_model("resnet8_cifar", in_chans=1, num_classes=10)) == 77_754
    assert _n_params(timm.create_model("resnet20_cifar", in_chans=1, num_classes=10)) < 500_000
    assert _n_params(timm.create_model("test_resnet_cifar", in_chans=1, num_classes=10)) < 6_000
    n18 = _n_params(timm.create_model("resnet18_cifar", in_chans=3, num_classes=10))
    assert 11_000_000 <= n18 <= 11_300_000
    m18 = timm.create_model("resnet18_cifar", in_chans=1, num_classes=10)
    assert m18.conv1.in_channels == 1 and m18.conv1.stride == (1, 1) and m18.num_features == 512


@pytest.mark.parametrize("arch", SMALL)
def test_relus_are_not_inplace_and_each_runs_once(arch: str) -> None:
    m = timm.create_model(arch, in_chans=1, num_classes=10).eval()
    relus = [mod for mod in m.modules() if isinstance(mod, nn.ReLU)]
    assert relus and not any(r.inplace for r in relus)
    # No ReLU instance is registered under two names (modules() would hide the duplicate).
    named = [mod for _, mod in m.named_modules(remove_duplicate=False) if isinstance(mod, nn.ReLU)]
    assert len(named) == len(relus)
    calls: dict[int, int] = {id(r): 0 for r in relus}

    def hook(mod: nn.Module, inp: object, out: object) -> None:
        calls[id(mod)] += 1

    handles = [r.register_forward_hook(hook) for r in relus]
    with torch.no_grad():
        m(torch.rand(2, 1, 16, 16))
    for h in handles:
        h.remove()
    assert set(calls.values()) == {1}, "every ReLU module must be called exactly once per forward"
    ph = ProjectionHead(8)
    assert not any(isinstance(mod, nn.ReLU) and mod.inplace for mod in ph.modules())


def test_normalize_is_the_first_op() -> None:
    torch.manual_seed(0)
    a = timm.create_model("test_resnet_cifar", in_chans=1, num_classes=10, norm_mean=[0.5], norm_std=[0.25]).eval()
    b = timm.create_model("test_resnet_cifar", in_chans=1, num_classes=10).eval()
    weights = {k: v for k, v in a.state_dict().items() if not k.startswith("normalize.")}
    missing, unexpected = b.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["normalize.mean", "normalize.std"] and not unexpected
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b((x - 0.5) / 0.25), rtol=1e-5, atol=1e-5)
    # The normalisation buffers travel with the weights (state_dict), so a loaded model needs no data stats.
    torch.testing.assert_close(a.state_dict()["normalize.std"], torch.tensor([0.25]).view(1, 1, 1, 1))
    # And it runs before any other module.
    order: list[nn.Module] = []
    handles = [mod.register_forward_pre_hook(lambda mod, inp: order.append(mod))
               for mod in a.modules() if not list(mod.children())]
    with torch.no_grad():
        a(x)
    for h in handles:
        h.remove()
    assert isinstance(order[0], Normalize)


def test_normalize_broadcasts_one_value_to_all_channels() -> None:
    m = timm.create_model("test_resnet_cifar", in_chans=3, num_classes=10, norm_mean=[0.5], norm_std=[0.25])
    assert m.normalize.mean.flatten().tolist() == [0.5] * 3
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.equal(Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(x), torch.ones(1, 3, 2, 2))


def test_gradcam_layer_is_the_last_stage() -> None:
    m = timm.create_model("resnet8_cifar", in_chans=1, num_classes=10).eval()
    layer = m.gradcam_layer()
    assert layer is m.stages[-1]
    seen: list[torch.Tensor] = []
    h = layer.register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        m(torch.rand(2, 1, 28, 28))
    h.remove()
    assert seen[0].shape == (2, 64, 7, 7)


def test_projection_head_output_is_unit_norm() -> None:
    torch.manual_seed(0)
    ph = ProjectionHead(16, out_dim=32)
    assert ph.fc1.out_features == 16  # hidden width defaults to the input width
    z = ph(torch.randn(5, 16) * 10)
    assert z.shape == (5, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    assert ProjectionHead(8, 4)(torch.randn(2, 8)).shape == (2, 128)


def test_projection_head_batchnorm_centres_each_output_dimension() -> None:
    torch.manual_seed(0)
    ph = ProjectionHead(16, out_dim=8, batchnorm=True).train()
    pre: list[torch.Tensor] = []
    ph.bn.register_forward_hook(lambda m, i, o: pre.append(o.detach()))
    z = ph(torch.randn(64, 16) + 5.0)  # inputs far from the origin: without the BatchNorm all rows point alike
    torch.testing.assert_close(z.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(pre[0].mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in ph.bn.parameters())  # affine=False: nothing to learn
    assert {"bn.running_mean", "bn.running_var"} <= set(ph.state_dict())
    assert isinstance(ProjectionHead(16).bn, torch.nn.Identity)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        CifarResNet(layers=(1, 1), widths=(4,))
    with pytest.raises(ValueError, match="global_pool='max' is not supported"):
        CifarResNet(global_pool="max")
