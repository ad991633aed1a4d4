"""Trains one zoo checkpoint from a recipe: CE end to end, or contrastive pre-training + linear probe.

The data flow is recipe → (this module) trained encoder/head/projector → :mod:`sclzoo.zoo.export` zoo repo.
Every random draw (init, shuffling, augmentation) is a function of the recipe seed and the epoch, so a run
resumed from an epoch checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sclzoo.errors import ConfigError
from sclzoo.zoo import clutter
from sclzoo.zoo.augment import AugmentConfig, augment_batch, delete_patches
from sclzoo.zoo.data import ImageDataset, clutter_digits, load_dataset, stratified_split
from sclzoo.zoo.distributed import DistInfo, barrier, init_distributed
from sclzoo.zoo.losses import OBJECTIVES
from sclzoo.zoo.models import ProjectionHead, encode
from sclzoo.zoo.recipe import OptimConfig, Recipe

__all__ = ["train", "TrainOutput", "resolve_device", "accuracy", "recalibrate_batchnorm", "feature_stats",
           "fold_standardisation"]

CHECKPOINT = "train_state.pt"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU. Raises ConfigError for an unusable choice."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r} asked for CUDA but no GPU is visible; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r} is unknown; use auto, cpu or cuda[:N]")
    return torch.device(device)


def _stage_seed(seed: int, stage: str, epoch: int) -> int:
    digest = hashlib.sha256(f"{seed}/{stage}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def lr_at(cfg: OptimConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based) of ``total``."""
    if cfg.schedule == "onecycle":
        warm = max(1, int(cfg.warmup_frac * total))
        if step < warm:
            return cfg.lr * (0.04 + 0.96 * step / warm)
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "cosine":
        warm = cfg.warmup_epochs * steps_per_epoch
        if step < warm:
            return cfg.lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    epoch = step // steps_per_epoch
    return cfg.lr * cfg.step_gamma ** sum(epoch >= e for e in cfg.step_epochs)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on (N, C, H, W) pixels."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(labels), batch_size):
        xb = images[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        correct += int((model(xb).argmax(1).cpu() == labels[i : i + batch_size]).sum())
    return correct / max(1, len(labels))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Tensor, batch_size: int = 500) -> int:
    """Re-estimates every BatchNorm's running mean and variance on ``images``, weights untouched.

    The statistics become the average over equal-sized batches (the last one may be smaller) of the batch
    statistics, as ``momentum=None`` computes them, instead of the exponential average of the training batches.
    Used with ``bn_stats = "clean"`` (docs/training.md#batchnorm-statistics).

    Args:
        model: The network; left in eval mode with each BatchNorm's momentum restored.
        images: (N, C, H, W) images on the model's device, in a fixed order.
        batch_size: Images per forward pass.

    Returns:
        The number of forward passes.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = 0
    for i in range(0, len(images), batch_size):
        model(images[i : i + batch_size].contiguous(memory_format=torch.channels_last))
        n += 1
    for m, mom in zip(norms, momenta, strict=True):
        m.momentum = mom
    model.eval()
    return n


@torch.no_grad()
def feature_stats(model: nn.Module, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor, int]:
    """Per-feature mean and standard deviation of the frozen encoder's pooled features over ``images``.

    Computed in eval mode, in float64 over the whole set (population std). A feature that is constant on these
    images (e.g. a channel that no image switches on) gets std 1, so it is only centred: dividing by ~0 would turn
    a test image's small activation of it into a huge input to the head. Used by the standardised linear probe
    (``[probe] standardize = true``, docs/training.md#standardised-probe).

    Returns:
        mean (D,), std (D,) as float32 on the model's device, and how many features were constant.
    """
    model.eval()
    total: Tensor | None = None
    sq: Tensor | None = None
    for i in range(0, len(images), batch_size):
        h = encode(model, images[i : i + batch_size].contiguous(memory_format=torch.channels_last)).double()
        total = h.sum(0) if total is None else total + h.sum(0)
        sq = (h * h).sum(0) if sq is None else sq + (h * h).sum(0)
    if total is None or sq is None:
        raise ConfigError("the standardised probe needs at least one training image")
    n = len(images)
    mean = total / n
    var = (sq / n - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    constant = std <= 1e-6 * max(float(std.max()), 1e-12)
    std = torch.where(constant, torch.ones_like(std), std)
    return mean.float(), std.float(), int(constant.sum())


@torch.no_grad()
def fold_standardisation(linear: nn.Linear, mean: Tensor, std: Tensor) -> None:
    """Rewrites ``linear`` in place so that ``linear(h)`` equals its former ``linear((h - mean) / std)``.

    W' = W / std (per input column), b' = b - W' mean; computed in float64.
    """
    w = linear.weight.double() / std.double()[None, :]
    b = (linear.bias.double() if linear.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                           device=w.device)) - w @ mean.double()
    linear.weight.copy_(w.to(linear.weight.dtype))
    if linear.bias is not None:
        linear.bias.copy_(b.to(linear.bias.dtype))
    else:
        linear.bias = nn.Parameter(b.to(linear.weight.dtype))


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    perm = torch.randperm(n, generator=gen)
    # Drop the last incomplete batch: BatchNorm and contrastive losses want full batches.
    for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
        yield perm[i : i + batch_size]


@dataclass
class TrainOutput:
    """What training produced, handed to the exporter."""

    model: nn.Module
    projector: nn.Module | None
    recipe: Recipe
    record: dict[str, Any]
    test: ImageDataset
    dist: DistInfo = field(default_factory=DistInfo)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    # Our own local checkpoint (never downloaded), written atomically so a kill never leaves half a file.
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _run_stage(
    stage: str,
    params: list[nn.Parameter],
    step_fn: Any,
    cfg: OptimConfig,
    n_train: int,
    seed: int,
    state_path: Path,
    modules: dict[str, nn.Module],
    max_steps: int | None,
    progress: bool,
    resume_state: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
    dist_info: DistInfo | None = None,
) -> dict[str, Any]:
    """Runs one optimisation stage; checkpoints after every epoch. Returns per-epoch logs.

    With several processes every rank draws the same permutation and takes its share of each global batch;
    DDP averages the gradients, and rank 0 writes the checkpoint.
    """
    di = dist_info or DistInfo()
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    start_epoch, history = 0, []
    if resume_state is not None and resume_state["stage"] == stage:
        opt.load_state_dict(resume_state["optimizer"])
        start_epoch = resume_state["epoch"]
        history = resume_state["history"]
    step = start_epoch * steps_per_epoch
    bar = tqdm(total=total, initial=step, desc=stage, unit="step", disable=not progress or not di.is_main,
               dynamic_ncols=True)
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(_stage_seed(seed, stage, epoch))
        # One process: the shuffling generator also draws the augmentations (so results match earlier runs);
        # several: each rank draws its own augmentations for its share of the batch.
        aug_gen = gen if not di.enabled else torch.Generator().manual_seed(
            _stage_seed(seed, f"{stage}/rank{di.rank}", epoch))
        t0, losses, correct, seen = time.time(), [], 0, 0
        for idx in _batches(n_train, cfg.batch_size, gen):
            if di.enabled:
                idx = idx[di.rank :: di.world_size]
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, total, steps_per_epoch)
            loss, n_correct = step_fn(idx, aug_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            correct += n_correct
            seen += len(idx)
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}",
                            acc=f"{correct / seen:.3f}" if n_correct >= 0 else "-")
            if max_steps is not None and step >= max_steps:
                break
        history.append({"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)),
                        "train_acc": correct / seen if correct >= 0 and seen else None,
                        "seconds": round(time.time() - t0, 3)})
        if di.is_main:
            _save_state(state_path, {**(extra or {}), "stage": stage, "epoch": epoch + 1, "history": history,
                                     "optimizer": opt.state_dict(),
                                     "modules": {k: _unwrap(m).state_dict() for k, m in modules.items()}})
        barrier(di)
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    return {"history": history, "steps": step}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _check_resumed_recipe(state: dict[str, Any], recipe: Recipe, state_path: Path) -> None:
    """Refuses to resume a checkpoint that a different recipe wrote (checkpoints record their recipe).

    Raises:
        ConfigError: naming the keys that differ; a checkpoint without a recorded recipe is accepted.
    """
    saved = state.get("recipe")
    if not isinstance(saved, dict):
        return
    before, now = _flat(saved), _flat(recipe.to_dict())
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: {before.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in differ[:5])
        more = f" (and {len(differ) - 5} more)" if len(differ) > 5 else ""
        raise ConfigError(f"checkpoint {state_path} was written by a different recipe ({shown}{more}); resume with "
                          "the recipe it was trained with, or train again without --resume")


class _FreshClutter:
    """Redraws the canvas of training images of a clutter dataset: same digit, new place, new fragments.

    Fragments come from the training images only (held-out validation images give none), never from the image
    itself; the 20 uniforms per image are drawn from the stage's generator, so a resumed run repeats them.
    """

    def __init__(self, train_full: ImageDataset, tr_idx: np.ndarray) -> None:
        digits = clutter_digits(train_full)[tr_idx]
        ids = train_full.indices.numpy()[tr_idx]
        self.pool = clutter.FragmentPool.build(digits, ids)
        self.digits = digits
        self.rank = self.pool.rank(ids)

    def __call__(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        rows = idx.cpu().numpy()
        u = torch.rand(len(rows), clutter.DRAWS, generator=gen, dtype=torch.float64).numpy()
        out = clutter.compose(self.digits[rows], self.rank[rows], self.pool, u)
        return torch.from_numpy(out.images)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


class _Contrastive(nn.Module):
    """Encoder + projector as one module, so DDP synchronises both. (N, C, H, W) → (N, D) normalised."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(encode(self.encoder, x))


def _ddp(m: nn.Module, di: DistInfo, dev: torch.device) -> nn.Module:
    if not di.enabled:
        return m
    return nn.parallel.DistributedDataParallel(m, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def train(
    recipe: Recipe,
    work_dir: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    epochs: int | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool = True,
) -> TrainOutput:
    """Trains the checkpoint ``recipe`` describes.

    Args:
        recipe: The recipe.
        work_dir: Folder for the epoch checkpoint (``train_state.pt``), so an interrupted run can resume.
        resume: Continue from ``work_dir``'s checkpoint instead of starting over.
        max_steps: Stop each stage after this many optimisation steps (quick runs, tests).
        epochs: Override the recipe's pre-training epochs (quick runs); recorded in the record.
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir: Where torchvision datasets live.
        progress: Show progress bars.

    Returns:
        The trained classifier (eval mode, CPU), the projector (contrastive only), and the training record.
    """
    objective = OBJECTIVES.get(recipe.objective)
    loss_params = objective.params(recipe.loss)
    if epochs is not None:
        recipe = recipe.replace(optim=OptimConfig(**{**recipe.optim.__dict__, "epochs": epochs}))
    dev = resolve_device(device)
    di = init_distributed(dev)
    if di.enabled and dev.type == "cuda":
        dev = torch.device("cuda", di.local_rank)
    t_start = time.time()
    train_full = load_dataset(recipe.dataset, "train", data_dir)
    test = load_dataset(recipe.dataset, "test", data_dir)
    if recipe.val_size > 0:
        tr_idx, val_idx = stratified_split(train_full.labels.numpy(), recipe.val_size, recipe.seed)
    else:
        tr_idx, val_idx = torch.arange(len(train_full)).numpy(), torch.arange(0).numpy()
    x_train = train_full.images[tr_idx].to(dev)
    y_train = train_full.labels[tr_idx].to(dev)
    c = train_full.input_size[0]
    num_classes = train_full.num_classes

    torch.manual_seed(recipe.seed)
    model: Any = timm.create_model(
        recipe.arch,
        in_chans=c,
        num_classes=0 if objective.contrastive else num_classes,
        norm_mean=train_full.mean,
        norm_std=train_full.std,
        **recipe.model_args,
    )
    if objective.contrastive and recipe.probe.standardize:
        # Checked before any training: the standardisation is folded into a Linear head's weights.
        probe_net = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):  # the new head's initial draws must not shift the run's
            probe_net.reset_classifier(num_classes)
        if not isinstance(probe_net.get_classifier(), nn.Linear):
            raise ConfigError(f"probe.standardize needs a Linear probe head (its weights take the standardisation); "
                              f"{recipe.arch}'s classifier is {type(probe_net.get_classifier()).__name__}: set "
                              "standardize = false")
        del probe_net
    projector = None
    if objective.contrastive:
        d = int(model.num_features)
        projector = ProjectionHead(d, recipe.projector_hidden or d, recipe.projector_dim, batchnorm=recipe.projector_bn)
    model.to(dev)
    if not di.enabled:  # DDP buckets on CPU (gloo) crashed with channels_last parameters
        model.to(memory_format=torch.channels_last)
    if projector is not None:
        projector.to(dev)

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / CHECKPOINT
    resume_state = None
    if resume:
        if not state_path.is_file():
            raise ConfigError(f"--resume found no checkpoint at {state_path}; run without --resume to start")
        try:
            # weights_only=True: even our own checkpoint is loaded without unpickling arbitrary objects.
            resume_state = torch.load(state_path, map_location=dev, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
            raise ConfigError(f"checkpoint {state_path} is unreadable ({type(e).__name__}); delete it and "
                              "train again without --resume") from None
        _check_resumed_recipe(resume_state, recipe, state_path)
        for k, m in {"model": model, "projector": projector}.items():
            # A probe checkpoint's model has the probe head: it is loaded after reset_classifier below.
            if k == "model" and resume_state["stage"] == "probe":
                continue
            if m is not None and k in resume_state["modules"]:
                m.load_state_dict(resume_state["modules"][k])

    deletion = recipe.patch_deletion
    recomposer = _FreshClutter(train_full, tr_idx) if recipe.fresh_clutter else None

    def view(idx: Tensor, gen: torch.Generator, aug: AugmentConfig, delete: bool) -> Tensor:
        # Fresh clutter first (a new canvas per view: docs/training.md#fresh-clutter), then the augmentation.
        xb = x_train[idx.to(dev)] if recomposer is None else recomposer(idx, gen).to(dev)
        v = augment_batch(xb, aug, gen)
        # Patch deletion in every stage (CE, pre-training, probe): docs/training.md#patch-deletion.
        return v if deletion is None or not delete else delete_patches(v, deletion, gen)

    def views(idx: Tensor, gen: torch.Generator, aug: AugmentConfig, n_views: int) -> Tensor:
        # views = "first": only the first view of a multi-view batch may lose cells (sclzoo/deletion.py).
        first_only = deletion is not None and deletion.views == "first"
        vs = [view(idx, gen, aug, delete=not first_only or i == 0) for i in range(n_views)]
        return torch.cat(vs).contiguous(memory_format=torch.channels_last)

    stages: dict[str, Any] = {}
    pre_stage = "pretrain" if objective.contrastive else "train"
    done_pre = resume_state is not None and resume_state["stage"] == "probe"
    if not done_pre:
        modules: dict[str, nn.Module] = {"model": model}
        params = list(model.parameters())
        if projector is not None:
            modules["projector"] = projector
            params += list(projector.parameters())

        net = _ddp(_Contrastive(model, projector) if projector is not None else model, di, dev)

        def pre_step(idx: Tensor, gen: torch.Generator) -> tuple[Tensor, int]:
            net.train()
            yb = y_train[idx.to(dev)]
            if objective.contrastive:
                xv = views(idx, gen, recipe.augment, recipe.views)
                z = net(xv)  # (V*N, D), view-major
                z = z.view(recipe.views, len(idx), -1).transpose(0, 1)  # (N, V, D)
                return objective.loss(z, yb, **loss_params), -1
            logits = net(views(idx, gen, recipe.augment, 1))
            return objective.loss(logits, yb, **loss_params), int((logits.argmax(1) == yb).sum())

        t0 = time.time()
        stages[pre_stage] = _run_stage(pre_stage, params, pre_step, recipe.optim, len(tr_idx), recipe.seed,
                                       state_path, modules, max_steps, progress, resume_state,
                                       extra={"recipe": recipe.to_dict()}, dist_info=di)
        stages[pre_stage]["seconds"] = round(time.time() - t0, 2)
        if recipe.bn_stats == "clean":
            t0 = time.time()
            n_batches = recalibrate_batchnorm(model, x_train)
            stages[pre_stage]["bn_recalibration"] = {"images": len(tr_idx), "batches": n_batches,
                                                     "seconds": round(time.time() - t0, 2)}
    else:
        assert resume_state is not None
        stages[pre_stage] = {"history": resume_state["pre_history"], "resumed": True}

    if objective.contrastive:
        # Linear probe: frozen encoder (eval mode, so BatchNorm statistics stay fixed), new Linear head.
        model.reset_classifier(num_classes)
        model.to(dev)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
        if resume_state is not None and resume_state["stage"] == "probe":
            model.load_state_dict(resume_state["modules"]["model"])
        pre_history = stages[pre_stage]["history"]

        head = _ddp(model.get_classifier(), di, dev)
        standardised: tuple[Tensor, Tensor] | None = None
        standardize_info: dict[str, Any] | None = None
        if recipe.probe.standardize:
            # Statistics of the clean training images under the final encoder (after any BatchNorm
            # re-estimation); a resumed probe recomputes the same ones (docs/training.md#standardised-probe).
            t0 = time.time()
            f_mean, f_std, n_constant = feature_stats(model, x_train)
            standardised = (f_mean, f_std)
            standardize_info = {"images": len(tr_idx), "features": len(f_mean), "constant_features": n_constant,
                                "seconds": round(time.time() - t0, 2)}

        def probe_step(idx: Tensor, gen: torch.Generator) -> tuple[Tensor, int]:
            model.eval()
            yb = y_train[idx.to(dev)]
            with torch.no_grad():
                h = encode(model, views(idx, gen, recipe.probe.augment, 1))
                if standardised is not None:
                    h = (h - standardised[0]) / standardised[1]
            logits = head(h)
            return nn.functional.cross_entropy(logits, yb), int((logits.argmax(1) == yb).sum())

        t0 = time.time()
        probe_modules: dict[str, nn.Module] = {"model": model}
        if projector is not None:  # not trained by the probe; saved so a resumed run still exports it
            probe_modules["projector"] = projector
        probe_resume = resume_state if resume_state is not None and resume_state["stage"] == "probe" else None
        # The pre-training log rides along in the probe checkpoints so a resumed probe still reports it.
        stages["probe"] = _run_stage("probe", list(model.get_classifier().parameters()), probe_step,
                                     recipe.probe.optim, len(tr_idx), recipe.seed, state_path, probe_modules,
                                     max_steps, progress, probe_resume, extra={"pre_history": pre_history, "recipe": recipe.to_dict()},
                                     dist_info=di)
        stages["probe"]["seconds"] = round(time.time() - t0, 2)
        if standardised is not None:
            # The exported classifier is encoder + one Linear: the standardisation goes into its weights.
            classifier = model.get_classifier()
            assert isinstance(classifier, nn.Linear)  # checked before the probe
            fold_standardisation(classifier, *standardised)
            stages["probe"]["standardize"] = standardize_info
        for p in model.parameters():
            p.requires_grad_(True)

    model.eval()
    x_val, y_val = train_full.images[val_idx], train_full.labels[val_idx]
    acc = {
        "train": accuracy(model, train_full.images[tr_idx], train_full.labels[tr_idx]),
        "val": accuracy(model, x_val, y_val) if len(val_idx) else None,
        "test": accuracy(model, test.images, test.labels),
    }
    model = model.cpu().to(memory_format=torch.contiguous_format)
    if projector is not None:
        projector = projector.cpu().eval()
    record = {
        "recipe": recipe.to_dict(),
        "objective": {"name": objective.name, "variant": objective.variant, "params": loss_params},
        "projector": ({"in_dim": int(model.num_features), "hidden_dim": recipe.projector_hidden
                       or int(model.num_features), "out_dim": recipe.projector_dim, "batchnorm": recipe.projector_bn,
                       "normalised": True}
                      if objective.contrastive else None),
        "head": "linear_probe" if objective.contrastive else "ce_head",
        "dataset": {"id": recipe.dataset, "split_sha256": train_full.split_sha256,
                    "n_train": len(tr_idx), "n_val": len(val_idx), "n_test": len(test),
                    "mean": list(train_full.mean), "std": list(train_full.std)},
        "stages": stages,
        "max_steps": max_steps,
        "accuracy": {"torch": acc},
        "wall_time_s": round(time.time() - t_start, 2),
        # Sum of epoch times over all stages, including epochs run before an interruption (--resume).
        "epoch_seconds_total": round(sum(h["seconds"] for st in stages.values() for h in st["history"]), 2),
        "hardware": {"device": str(dev), "device_name": device_name(dev), "torch_threads": torch.get_num_threads(),
                     "platform": platform.platform(), "world_size": di.world_size},
        "input_size": list(train_full.input_size),
        "label_names": list(train_full.label_names),
    }
    if deletion is not None:
        record["patch_deletion"] = deletion.to_dict()
    barrier(di)
    return TrainOutput(model=model, projector=projector, recipe=recipe, record=record, test=test, dist=di)


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def save_checkpoint(out: TrainOutput, ckpt_dir: str | Path) -> Path:
    """Writes a trained checkpoint folder (the input of ``sclzoo export``).

    Layout: ``model.safetensors`` (classifier), ``projection_head.safetensors`` (contrastive only),
    ``record.json`` (training record + what is needed to rebuild the model).
    """
    import json

    from safetensors.torch import save_file

    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.model.state_dict().items()}, str(d / "model.safetensors"))
    if out.projector is not None:
        save_file({k: v.contiguous() for k, v in out.projector.state_dict().items()},
                  str(d / "projection_head.safetensors"))
    (d / "record.json").write_text(json.dumps(out.record, indent=2, sort_keys=True) + "\n")
    return d
