"""Attribution methods (docs/protocol.md#attribution-methods): captum adapters behind one registry.

Every method maps ``(model, x, target)`` to a tensor of x's shape (N, C, H, W). Models take [0, 1] pixels and
return logits, are in eval mode and use separate, non-inplace ReLU modules (DeepLift and GuidedBackprop hook
them). Baselines are in pixel units: 0 is black.

The three random methods (gradient_shap, expected_gradients, smoothgrad) compute the same estimators as captum's
``GradientShap`` and ``NoiseTunnel(Saliency)``, but draw each sample's noise, baselines and interpolation
points as a pure function of (seed, stream, global sample id, draw) on the images' device
(:mod:`sclzoo.evaluator.seeding`; docs/protocol.md#seeding): captum draws from the global RNG for the whole batch,
which would make a sample's attribution depend on its batch neighbours. Their ``version`` (2) counts changes to
those draws; the canonical config records a method's version when it is above 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import (
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from sclzoo.errors import ConfigError
from sclzoo.registry import Registry, check_params

from .seeding import normal, randint, uniform

__all__ = ["METHODS", "MethodSpec", "attribute", "gradcam_layer", "gradcam_layer_name", "method_defaults"]

#: fn(model, x, target, *, sample_ids, seed, **params) -> attributions of x's shape.
AttributionFn = Callable[..., Tensor]
#: passes(resolved params, image shape (C, H, W)) -> (forward-only passes, gradient passes) per image.
PassesFn = Callable[[Mapping[str, Any], tuple[int, int, int]], tuple[int, int]]


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes:
        name: Registry name.
        fn: ``fn(model, x, target, *, sample_ids, seed, **params) -> Tensor`` (N, C, H, W).
        defaults: Default parameters; :func:`attribute` accepts no others.
        captum: The captum class the method follows (for the record and ``sclzoo ls methods``).
        description: One line for ``sclzoo ls methods``.
        optional: Parameters (default None) that the canonical config records only when set, so adding one
            leaves the config hashes of earlier results unchanged.
        inputs: Parameters that are data the evaluation supplies rather than settings (e.g. ``baseline_pool``,
            a set of training images): never recorded in the config, passed by the runner when available.
        passes: Model passes per image, ``passes(params, (C, H, W)) -> (forwards, gradients)``: the cost model
            of progress bars and ``--dry-run`` estimates.
        version: Bumped whenever an implementation detail that changes the maps changes (e.g. how the random
            methods draw); recorded in the canonical config when above 1, so earlier config hashes stay put.
    """

    name: str
    fn: AttributionFn
    defaults: dict[str, Any]
    captum: str
    description: str
    optional: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    passes: PassesFn = lambda p, shape: (0, 1)
    version: int = 1


METHODS: Registry[MethodSpec] = Registry("attribution method", "sclzoo ls methods")


def _method(
    name: str, *, captum: str, defaults: dict[str, Any], description: str, optional: tuple[str, ...] = (),
    inputs: tuple[str, ...] = (), passes: PassesFn | None = None, version: int = 1,
) -> Callable[[AttributionFn], AttributionFn]:
    """Registers the decorated function as attribution method ``name``."""

    def deco(fn: AttributionFn) -> AttributionFn:
        METHODS.add(
            name,
            MethodSpec(name=name, fn=fn, defaults={**dict(defaults), **{k: None for k in optional}},
                       captum=captum, description=description, optional=tuple(optional),
                       inputs=tuple(inputs), version=version,
                       **({"passes": passes} if passes is not None else {})),
        )
        return fn

    return deco


def method_passes(name: str, params: Mapping[str, Any], shape: tuple[int, int, int]) -> tuple[int, int]:
    """(forward-only passes, gradient passes) per image of method ``name`` with ``params`` over its defaults."""
    spec = METHODS.get(name)
    f, g = spec.passes({**spec.defaults, **params}, shape)
    return int(f), int(g)


def _occlusion_windows(p: Mapping[str, Any], shape: tuple[int, int, int]) -> tuple[int, int]:
    _, h, w = shape
    win = max(1, round(h / 7)) if p.get("window") is None else int(p["window"])
    step = max(1, win // 2) if p.get("stride") is None else int(p["stride"])
    per_axis = [max(1, -(-(side - win) // step) + 1) for side in (h, w)]
    return per_axis[0] * per_axis[1], 0


def method_defaults(name: str) -> dict[str, Any]:
    """A copy of the default parameters of method ``name`` (raises ``UnknownNameError`` if unknown)."""
    return dict(METHODS.get(name).defaults)


def attribute(
    name: str,
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor | None = None,
    seed: int = 0,
    **params: Any,
) -> Tensor:
    """Explains ``model``'s logit ``target`` at ``x`` with method ``name``.

    Args:
        name: Registered method (``sclzoo ls methods``).
        model: Eval-mode classifier, [0, 1] pixels → logits (N, classes).
        x: (N, C, H, W) images; not modified.
        target: (N,) long class indices.
        sample_ids: (N,) long global dataset indices that key the random methods' draws per sample (moved to x's
            device, where the draws are made); ``None`` means ``arange(N)``, which is only right when ``x`` is the
            whole dataset. Ignored by deterministic methods.
        seed: Global seed of the run (random methods only).
        **params: Overrides of the method's defaults (see :func:`method_defaults`).

    Returns:
        (N, C, H, W) float32 attributions, detached, on x's device.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: unknown or invalid parameter, bad shapes, or a model in training mode.
    """
    spec = METHODS.get(name)
    check_params("attribution method", name, params, spec.defaults)
    if x.ndim != 4:
        raise ConfigError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}; add the missing dimensions.")
    n = x.shape[0]
    if target.shape != (n,) or target.dtype != torch.long:
        raise ConfigError(
            f"target must be a long tensor of shape ({n},), got {target.dtype} {tuple(target.shape)}."
        )
    if sample_ids is None:
        sample_ids = torch.arange(n)
    elif tuple(sample_ids.shape) != (n,):
        raise ConfigError(f"sample_ids must have shape ({n},), got {tuple(sample_ids.shape)}.")
    if model.training:
        # BatchNorm in training mode mixes samples of a batch: attributions would depend on batch neighbours.
        raise ConfigError(
            f"the model is in training mode; call model.eval() before explaining it with {name!r}."
        )
    with warnings.catch_warnings():
        # captum announces, on every call, that it hooks non-linear modules and removes the hooks afterwards.
        warnings.filterwarnings(
            "ignore", message="Setting forward, backward hooks and attributes on non-linear"
        )
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        out = spec.fn(
            model,
            x.detach(),  # captum toggles requires_grad on its input: never on the caller's tensor
            target.to(x.device),
            sample_ids=sample_ids.detach().to(x.device, torch.long),
            seed=int(seed),
            **{**spec.defaults, **params},
        )
    if out.shape != x.shape:
        raise RuntimeError(
            f"attribution method {name!r} returned shape {tuple(out.shape)} for input {tuple(x.shape)}"
        )
    return out.detach().to(device=x.device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _positive_int(method: str, param: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{method}: {param} must be a positive int, got {value!r}.")
    return value


def _optional_chunk(method: str, value: Any) -> int | None:
    return None if value is None else _positive_int(method, "internal_batch_size", value)


def _leaf(x: Tensor) -> Tensor:
    """A fresh leaf that requires grad, for captum (which otherwise warns and flips the flag itself)."""
    return x.detach().requires_grad_(True)


#: Input elements per gradient chunk when a method's ``internal_batch_size`` is None: bounds the activations
#: autograd keeps alive while every row's gradient stays the same. On a CPU 2^16 (83 rows of 1×28×28; one of
#: 3×224×224): a CPU's gradient throughput stops growing at about 64 rows (README.md, "Speed"), and larger chunks
#: only hold more activations (the bundled ResNet-8's demo evaluation peaks at 1.6 GB with 2^19, 0.97 GB with
#: 2^16, same scores bit for bit). On a GPU 2^19 (668 rows of 1×28×28, 3 of 3×224×224), where larger chunks are
#: faster and memory is sized by ``--batch-size auto``.
CHUNK_ELEMENTS = {"cpu": 1 << 16, "cuda": 1 << 19}


def auto_chunk(inputs: Tensor) -> int:
    """Rows per gradient pass for stacked ``inputs`` when the caller set no ``internal_batch_size``."""
    budget = CHUNK_ELEMENTS.get(inputs.device.type, CHUNK_ELEMENTS["cuda"])
    return max(1, budget // max(1, inputs[0].numel()))


def _input_gradients(model: nn.Module, inputs: Tensor, target: Tensor, chunk: int | None) -> Tensor:
    """∂f_y/∂x for stacked inputs, in chunks of ``chunk`` rows (None: :func:`auto_chunk`).
    Shapes: (R, C, H, W), (R,) → (R, C, H, W).

    Summing the selected logits before ``autograd.grad`` gives each row its own gradient because rows do not
    interact in an eval-mode model; only the input's gradient is computed, parameters' ``.grad`` stay untouched.
    The chunk size bounds memory only: a row's gradient does not depend on the other rows of its chunk (beyond the
    float rounding of batch-size dependent kernels).
    """
    size = chunk or auto_chunk(inputs)
    grads = []
    with torch.enable_grad():
        for start in range(0, inputs.shape[0], size):
            xi = inputs[start : start + size].detach().requires_grad_(True)
            selected = model(xi).gather(1, target[start : start + size, None]).sum()
            (g,) = torch.autograd.grad(selected, xi)
            grads.append(g)
    return torch.cat(grads)


def _expected_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    pool: Tensor,
    *,
    name: str,
    n_samples: int,
    stdevs: float,
    sample_ids: Tensor,
    seed: int,
    chunk: int | None,
) -> Tensor:
    """GradientShap's estimator with per-sample draws.

    For j = 1..n: baseline b_j drawn uniformly from ``pool``, α_j ~ U(0, 1), x̃_j = x + N(0, stdevs²);
    a = mean_j ∂f_y/∂x (b_j + α_j (x̃_j − b_j)) · (x̃_j − b_j), as captum's GradientShap
    (NoiseTunnel over InputBaselineXGradient). The three draws come from the streams ``<name>/baseline``,
    ``<name>/alpha`` and ``<name>/noise``, each one call for the whole batch.

    Shapes: x (N, C, H, W), pool (B, C, H, W) → (N, C, H, W).
    """
    n_samples = _positive_int(name, "n_samples", n_samples)
    if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or stdevs < 0:
        raise ConfigError(f"{name}: stdevs must be a number ≥ 0, got {stdevs!r}.")
    n, c, h, w = x.shape
    n_pool = pool.shape[0]

    idx = randint(seed, f"{name}/baseline", sample_ids, (n_samples,), n_pool)
    alpha = uniform(seed, f"{name}/alpha", sample_ids, (n_samples,))
    if stdevs > 0:  # no noise draw when stdevs = 0: the default then needs no (N, n, C, H, W) buffer
        noise = normal(seed, f"{name}/noise", sample_ids, (n_samples, c, h, w)).mul_(stdevs)
        noisy = x[:, None] + noise.to(x.dtype)  # (N, n, C, H, W)
    else:
        noisy = x[:, None]  # (N, 1, C, H, W)
    base = pool.to(device=x.device, dtype=x.dtype)[idx]  # (N, n, C, H, W)
    delta = noisy - base
    scaled = base + alpha.to(x.dtype).view(n, n_samples, 1, 1, 1) * delta
    grads = _input_gradients(
        model, scaled.reshape(n * n_samples, c, h, w), target.repeat_interleave(n_samples), chunk
    ).view(n, n_samples, c, h, w)
    return (grads * delta).mean(dim=1)


# --------------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------------


@_method("saliency", captum="Saliency", defaults={"abs": True}, description="|∂f_y/∂x| (Simonyan 2014).")
def saliency(
    model: nn.Module, x: Tensor, target: Tensor, *, sample_ids: Tensor, seed: int, abs: bool
) -> Tensor:
    """Gradient of the target logit, absolute by default. Shapes: (N, C, H, W) → (N, C, H, W)."""
    return Saliency(model).attribute(_leaf(x), target=target, abs=bool(abs))


@_method("input_x_gradient", captum="InputXGradient", defaults={}, description="x · ∂f_y/∂x.")
def input_x_gradient(model: nn.Module, x: Tensor, target: Tensor, *, sample_ids: Tensor, seed: int) -> Tensor:
    """Input times gradient. Shapes: (N, C, H, W) → (N, C, H, W)."""
    return InputXGradient(model).attribute(_leaf(x), target=target)


@_method(
    "integrated_gradients",
    captum="IntegratedGradients",
    defaults={"n_steps": 32, "baseline": 0.0, "method": "gausslegendre", "internal_batch_size": None},
    description="Path integral of gradients from a constant baseline (Sundararajan 2017).",
    passes=lambda p, shape: (0, int(p["n_steps"])),
)
def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor,
    seed: int,
    n_steps: int,
    baseline: float,
    method: str,
    internal_batch_size: int | None,
) -> Tensor:
    """(x − b) · ∫₀¹ ∂f_y/∂x (b + α(x − b)) dα by ``method`` quadrature. Shapes: (N, C, H, W) → (N, C, H, W).

    With ``internal_batch_size`` None the N·n_steps scaled inputs are summed exactly as captum does for one batch,
    but their gradients are taken in chunks (:func:`auto_chunk`), so memory stays bounded; a row's gradient does
    not depend on its chunk beyond the float rounding of batch-size dependent kernels (bit for bit for the
    bundled ResNet-8s), as with any batch size (docs/protocol.md#per-sample-independence).
    """
    ig = IntegratedGradients(model)
    if internal_batch_size is None:
        whole = ig.gradient_func

        def chunked(forward_fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], target_ind: Any = None,
                    additional_forward_args: Any = None) -> tuple[Tensor, ...]:
            (rows,) = inputs
            size = auto_chunk(rows)
            if rows.shape[0] <= size:
                return whole(forward_fn, inputs, target_ind, additional_forward_args)
            grads = []
            for start in range(0, rows.shape[0], size):
                part = rows[start : start + size].detach().requires_grad_(True)
                tgt = target_ind[start : start + size] if isinstance(target_ind, Tensor) else target_ind
                grads.append(whole(forward_fn, (part,), tgt, additional_forward_args)[0])
            return (torch.cat(grads),)

        ig.gradient_func = chunked
    return ig.attribute(
        _leaf(x),
        baselines=torch.full_like(x, float(baseline)),
        target=target,
        n_steps=_positive_int("integrated_gradients", "n_steps", n_steps),
        method=method,
        internal_batch_size=_optional_chunk("integrated_gradients", internal_batch_size),
    )


@_method(
    "gradient_shap",
    captum="GradientShap",
    version=2,
    defaults={"n_samples": 16, "stdevs": 0.0, "internal_batch_size": None},
    description="Expected gradients against black and white baselines (Lundberg 2017), per-sample draws.",
    passes=lambda p, shape: (0, int(p["n_samples"])),
)
def gradient_shap(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor,
    seed: int,
    n_samples: int,
    stdevs: float,
    internal_batch_size: int | None,
) -> Tensor:
    """GradientShap with baselines {black, white} (see :func:`_expected_gradients`). (N, C, H, W) → same."""
    pool = torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0])])
    return _expected_gradients(
        model,
        x,
        target,
        pool,
        name="gradient_shap",
        n_samples=n_samples,
        stdevs=stdevs,
        sample_ids=sample_ids,
        seed=seed,
        chunk=_optional_chunk("gradient_shap", internal_batch_size),
    )


@_method(
    "expected_gradients",
    captum="GradientShap",
    version=2,
    defaults={"n_samples": 16, "stdevs": 0.0, "baseline_pool": None, "internal_batch_size": None},
    description="GradientShap with baselines drawn from training images (Erion 2021); needs baseline_pool.",
    inputs=("baseline_pool",),
    passes=lambda p, shape: (0, int(p["n_samples"])),
)
def expected_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor,
    seed: int,
    n_samples: int,
    stdevs: float,
    baseline_pool: Tensor | None,
    internal_batch_size: int | None,
) -> Tensor:
    """GradientShap with baselines drawn uniformly from ``baseline_pool`` (B, C, H, W), training images.

    The pool must be the same for every batch (e.g. a seeded subset of the training set) for scores to be
    per-sample deterministic.
    """
    if baseline_pool is None:
        raise ConfigError(
            "expected_gradients needs baseline_pool=<tensor (B, C, H, W) of training images in [0, 1]>; "
            "pass it as a method parameter (the evaluator draws it from the training split)."
        )
    if (
        not isinstance(baseline_pool, Tensor)
        or baseline_pool.ndim != 4
        or baseline_pool.shape[1:] != x.shape[1:]
    ):
        shape = (
            tuple(baseline_pool.shape) if isinstance(baseline_pool, Tensor) else type(baseline_pool).__name__
        )
        raise ConfigError(
            f"expected_gradients: baseline_pool must be a tensor (B, {', '.join(map(str, x.shape[1:]))}) "
            f"matching the images, got {shape}."
        )
    if baseline_pool.shape[0] == 0:
        raise ConfigError("expected_gradients: baseline_pool is empty; pass at least one training image.")
    return _expected_gradients(
        model,
        x,
        target,
        baseline_pool,
        name="expected_gradients",
        n_samples=n_samples,
        stdevs=stdevs,
        sample_ids=sample_ids,
        seed=seed,
        chunk=_optional_chunk("expected_gradients", internal_batch_size),
    )


@_method(
    "deeplift",
    captum="DeepLift",
    defaults={"baseline": 0.0},
    description="DeepLift rescale rule against a constant baseline (Shrikumar 2017).",
    passes=lambda p, shape: (0, 2),  # one backward through the input and the baseline stacked: 2N rows
)
def deeplift(
    model: nn.Module, x: Tensor, target: Tensor, *, sample_ids: Tensor, seed: int, baseline: float
) -> Tensor:
    """DeepLift multipliers times (x − b). Shapes: (N, C, H, W) → (N, C, H, W)."""
    return DeepLift(model).attribute(_leaf(x), baselines=torch.full_like(x, float(baseline)), target=target)


@_method(
    "guided_backprop",
    captum="GuidedBackprop",
    defaults={},
    description="Guided backpropagation (Springenberg 2015).",
)
def guided_backprop(model: nn.Module, x: Tensor, target: Tensor, *, sample_ids: Tensor, seed: int) -> Tensor:
    """Gradient with ReLU backward passes clipped to positive values. Shapes: (N, C, H, W) → (N, C, H, W)."""
    return GuidedBackprop(model).attribute(_leaf(x), target=target)


@_method(
    "smoothgrad",
    captum="NoiseTunnel(Saliency)",
    version=2,
    defaults={"nt_samples": 16, "stdevs": 0.15, "internal_batch_size": None},
    description="Mean |gradient| over Gaussian-noised copies of x (Smilkov 2017), per-sample draws.",
    passes=lambda p, shape: (0, int(p["nt_samples"])),
)
def smoothgrad(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor,
    seed: int,
    nt_samples: int,
    stdevs: float,
    internal_batch_size: int | None,
) -> Tensor:
    """mean_j |∂f_y/∂x (x + ε_j)|, ε_j ~ N(0, stdevs²) element-wise (pixel units), as NoiseTunnel(Saliency).

    Shapes: (N, C, H, W) → (N, C, H, W).
    """
    name = "smoothgrad"
    k = _positive_int(name, "nt_samples", nt_samples)
    if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or stdevs < 0:
        raise ConfigError(f"{name}: stdevs must be a number ≥ 0, got {stdevs!r}.")
    n, c, h, w = x.shape
    noise = normal(seed, name, sample_ids, (k, c, h, w)).mul_(stdevs)  # (N, k, C, H, W), one call
    noisy = (x[:, None] + noise.to(x.dtype)).reshape(n * k, c, h, w)
    grads = _input_gradients(
        model, noisy, target.repeat_interleave(k), _optional_chunk(name, internal_batch_size)
    )
    return grads.abs().view(n, k, c, h, w).mean(dim=1)


def _unwrapped(model: nn.Module) -> list[nn.Module]:
    """The model and the models it wraps (``.model`` of a normalisation or probe wrapper), outermost first."""
    chain = [model]
    while isinstance(getattr(chain[-1], "model", None), nn.Module) and len(chain) < 8:
        chain.append(chain[-1].model)  # type: ignore[arg-type]
    return chain


def gradcam_layer_name(model: nn.Module, layer: str | None = None) -> str:
    """The qualified name (in ``model.named_modules()``) of the layer Grad-CAM explains; see
    :func:`gradcam_layer`."""
    target = gradcam_layer(model, layer)
    for name, module in model.named_modules():
        if module is target:
            return name
    return type(target).__name__


def gradcam_layer(model: nn.Module, layer: str | None = None) -> nn.Module:
    """The layer Grad-CAM explains.

    ``layer`` (a module name, e.g. ``layer4`` or ``stages.2``, looked up on the model and on the networks it
    wraps) overrides the choice. Otherwise, in order: the first module in ``model.modules()`` order (the model,
    then wrapped submodules) that defines ``gradcam_layer()`` (the per-architecture choice, see
    ``zoo/models.py``); else the module of the last feature stage in timm's ``feature_info`` (the output of a
    ResNet's last stage, after the residual sum); else the last ``nn.Conv2d`` in ``model.modules()`` order.

    Raises:
        ConfigError: an unknown ``layer`` name (with close names), or no candidate layer at all.
    """
    if layer is not None:
        if not isinstance(layer, str):
            raise ConfigError(f"gradcam: layer must be a module name string, got {layer!r}")
        for net in _unwrapped(model):
            try:
                return net.get_submodule(layer)
            except AttributeError:
                continue
        import difflib

        names = [n for n, _ in _unwrapped(model)[-1].named_modules() if n]
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"e.g. one of {names[-3:]}"
        raise ConfigError(f"gradcam: the model has no layer {layer!r}; {hint}")
    for module in model.modules():
        getter = getattr(module, "gradcam_layer", None)
        if callable(getter):
            chosen = getter()
            if not isinstance(chosen, nn.Module):
                raise ConfigError(
                    f"{type(module).__name__}.gradcam_layer() returned {type(chosen).__name__}; it must return an nn.Module."
                )
            return chosen
    for net in _unwrapped(model):
        info = getattr(net, "feature_info", None)
        try:
            name = info[-1]["module"] if info else None  # type: ignore[index]
        except (TypeError, KeyError, IndexError):
            name = None
        if isinstance(name, str) and name:
            try:
                return net.get_submodule(name)
            except AttributeError:
                pass
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(
            f"gradcam: {type(model).__name__} has no nn.Conv2d; give it a gradcam_layer() method returning the "
            "layer to explain, or pass the layer parameter."
        )
    return convs[-1]


@_method(
    "gradcam",
    captum="LayerGradCam",
    defaults={"relu_attributions": True, "interpolate_mode": "bilinear"},
    optional=("layer",),
    description="Grad-CAM at the last feature stage, upsampled to H×W and copied to every channel (Selvaraju 2017).",
)
def gradcam(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor,
    seed: int,
    relu_attributions: bool,
    interpolate_mode: str,
    layer: str | None = None,
) -> Tensor:
    """ReLU(Σ_k mean(∂f_y/∂A_k) A_k) at :func:`gradcam_layer` (``layer``: a module name overriding the
    default choice), upsampled and broadcast to C channels.

    Every channel carries the same map, so the pixel map m = Σ_c a_c is C times the upsampled CAM.

    Shapes: (N, C, H, W) → (N, C, H, W).
    """
    n, c, h, w = x.shape
    cam = LayerGradCam(model, gradcam_layer(model, layer)).attribute(
        _leaf(x), target=target, relu_attributions=bool(relu_attributions)
    )
    if cam.ndim != 4:
        raise ConfigError(
            f"gradcam: the chosen layer outputs a {cam.ndim}-d tensor; gradcam_layer() must return a layer with "
            "(N, K, h, w) output."
        )
    up = LayerAttribution.interpolate(cam, (h, w), interpolate_mode=interpolate_mode)  # (N, 1, H, W)
    return up.expand(n, c, h, w).contiguous()


@_method(
    "occlusion",
    captum="Occlusion",
    defaults={"window": None, "stride": None, "baseline": 0.0, "perturbations_per_eval": None},
    description="Drop of f_y when a square window over all channels is set to the baseline (Zeiler 2014).",
    optional=("perturbations_per_eval",),
    passes=_occlusion_windows,
)
def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    sample_ids: Tensor,
    seed: int,
    window: int | None,
    stride: int | None,
    baseline: float,
    perturbations_per_eval: int | None,
) -> Tensor:
    """captum Occlusion with a (C, w, w) window, stride (C, s, s).

    Defaults: w = max(1, round(H / 7)), s = max(1, w // 2). captum places an extra window flush with the far
    edge when the stride does not divide H − w, so every pixel is occluded at least once.
    ``perturbations_per_eval`` only batches window positions (speed; maps agree to float rounding, ~1e-6). None:
    as many as keep one forward within :data:`CHUNK_ELEMENTS` input elements (one window position per forward
    of a 64-image batch of 1×28×28 on a CPU, where 16 positions, 1,024-row forwards, took 2.3× as long).

    Shapes: (N, C, H, W) → (N, C, H, W).
    """
    name = "occlusion"
    _, c, h, w = x.shape
    win = max(1, round(h / 7)) if window is None else _positive_int(name, "window", window)
    if win > min(h, w):
        raise ConfigError(f"{name}: window={win} is larger than the {h}×{w} image; lower it.")
    step = max(1, win // 2) if stride is None else _positive_int(name, "stride", stride)
    return Occlusion(model).attribute(
        x,
        sliding_window_shapes=(c, win, win),
        strides=(c, step, step),
        baselines=float(baseline),
        target=target,
        perturbations_per_eval=(auto_chunk(x) // x.shape[0] or 1) if perturbations_per_eval is None
        else _positive_int(name, "perturbations_per_eval", perturbations_per_eval),
    )
