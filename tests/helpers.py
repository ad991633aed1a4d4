"""Helpers shared by several test modules: toy networks and images, tiny timm repos and PNG folders, the CLI
called in-process, file-tree hashes, and a stand-in for ``evaluate`` in leaderboard updates.

Fixtures live in ``tests/conftest.py``; this module holds plain functions and constants (``from helpers import …``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------- toy networks
def linear_model(weight: Tensor, bias: Tensor | None = None) -> nn.Module:
    """Logits = weight · flatten(x) + bias, weight (classes, C·H·W), hand-set; bias 0 when not given."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        model[1].weight.copy_(weight)
        model[1].bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)
    return model.eval()


def conv_net(channels: int = 1) -> nn.Module:
    """Tiny seeded CNN, 3 classes: two convs with their own non-inplace ReLUs, global pooling, a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def images(n: int, c: int = 1, h: int = 8, seed: int = 1) -> Tensor:
    """(n, c, h, h) seeded uniform [0, 1) images."""
    return torch.rand(n, c, h, h, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ timm repos, image folders
def timm_repo(folder: Path, arch: str = "test_resnet", *, in_chans: int = 3, num_classes: int = 10,
              size: int = 32, data_config: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """A timm repo as timm writes it (config.json + model.safetensors), random weights."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes, in_chans=in_chans, pretrained=False).eval()
    save_for_hf(model, folder, data_config=data_config or {"input_size": (in_chans, size, size)},
                safe_serialization=True)
    return folder


def png_folder(root: Path, *, classes: tuple[int, ...] = (0, 1, 2), per_class: int = 3, size: int = 20,
               mode: str = "L") -> Path:
    """ROOT/<digit>/<id>.png from scikit-learn's digits (real images), resized to ``size``."""
    from PIL import Image

    from sclzoo.zoo.data import load_dataset

    digits = load_dataset("digits", "train")
    for label in classes:
        d = root / str(label)
        d.mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(digits.labels.numpy() == label)[:per_class]
        for i in idx:
            arr = (digits.images[i, 0].numpy() * 255).astype(np.uint8)
            Image.fromarray(arr).resize((size, size)).convert(mode).save(d / f"{i:04d}.png")
    return root


def sha256_tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative POSIX path) with its sha256."""
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


# ------------------------------------------------------------------------------------------------- command line
def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``sclzoo ARGS`` in this process: (exit code, stdout, stderr)."""
    from sclzoo.evaluator.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


# ------------------------------------------------------------------------------------------ leaderboard updates
#: An evaluation config small enough for a leaderboard update to evaluate two bundled models in seconds.
TINY_EVAL_TOML = ('n_samples = 4\nmethods = ["saliency"]\nmetrics = ["sparseness", "complexity"]\nbatch_size = 4\n'
                  'device = "cpu"\n')


def registry_toml(names: Iterable[str]) -> str:
    """A zoo/registry.toml listing bundled folders ``models/<name>`` as ``sclzoo/<name>`` at revision main."""
    return "".join(f'[[models]]\nid = "sclzoo/{name}"\nrevision = "main"\nbundled = "models/{name}"\n\n'
                   for name in names)


def stub_evaluate(calls: list[str], fail_when: str | None = None) -> Callable[..., Any]:
    """Stands in for ``evaluate``: resolves the model like it and writes a synthetic result at the same path
    (objective ``ce`` for a ``ce_`` folder, else ``supcon``); appends each model folder's name to ``calls``. A
    model whose reference contains ``fail_when`` raises a two-line error instead."""
    from lb_synth import write_synthetic

    from sclzoo.evaluator.update import predict_config_hash
    from sclzoo.zoo.hub import resolve_model

    class _Res:
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data

    def fake(ref: str, *, revision: str | None, out: Path, config: Any, **_: Any) -> Any:
        calls.append(Path(ref).name)
        if fail_when is not None and fail_when in ref:
            raise RuntimeError("weights and architecture disagree\n(second line of a long error)")
        resolved = resolve_model(ref, revision)
        h = predict_config_hash(config, resolved.path)
        rng = np.random.default_rng(len(calls))
        path = write_synthetic(Path(out), "ce" if "ce_" in ref else "supcon",
                               {"saliency": {"sparseness": rng.normal(size=4), "complexity": rng.normal(size=4)}},
                               repo_id=resolved.repo_id, commit_sha=resolved.commit_sha, config_hash=h)
        return _Res(json.loads(path.read_text()))

    return fake


def load_bench(name: str) -> Any:
    """Imports ``bench/<name>.py`` (the bench scripts are not a package) and returns the module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
