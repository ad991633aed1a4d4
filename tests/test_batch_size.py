"""`--batch-size auto`: 64 on CPU, sized from measured explanation memory on CUDA; never part of the hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sclzoo.errors import ConfigError
from sclzoo.evaluator.api import evaluate
from sclzoo.evaluator.cli import cli
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.runner import auto_batch_size, choose_batch_size


@pytest.mark.parametrize(("per_image", "free", "cap", "want"), [
    (1e6, 1e9, 1024, 512),        # 0.6 GB / 1 MB = 600 → 512
    (1e6, 1e12, 1024, 1024),      # capped
    (1e9, 1e9, 1024, 1),          # not even one image fits 60 %: still 1
    (0.0, 1e9, 256, 256),         # nothing measured: the cap
    (3e6, 1e9, 1024, 128),        # 200 → 128
])
def test_choose_batch_size_is_the_largest_fitting_power_of_two(per_image: float, free: float, cap: int,
                                                                want: int) -> None:
    assert choose_batch_size(per_image, free, cap) == want


def test_auto_on_cpu_is_64_and_hashes_like_64(bundled: dict[str, Path], tmp_path: Path) -> None:
    kw = {"n_samples": 4, "methods": ["saliency"], "metrics": ["sparseness"], "progress": False, "device": "cpu"}
    auto = evaluate(str(bundled["ce"]), out=tmp_path / "a", batch_size="auto", **kw)
    fixed = evaluate(str(bundled["ce"]), out=tmp_path / "b", batch_size=64, **kw)
    assert auto.data["config"]["batch_size"] == 64 and auto.data["config"]["batch_size_auto"] is True
    assert fixed.data["config"]["batch_size_auto"] is False
    assert auto.data["config_hash"] == fixed.data["config_hash"]


def test_batch_size_option_errors() -> None:
    with pytest.raises(ConfigError, match="positive integer or 'auto'"):
        EvalConfig(batch_size="big")
    res = CliRunner().invoke(cli, ["evaluate", "--model", "x", "--batch-size", "zero"])
    assert res.exit_code == 2 and "--batch-size" in res.output


def test_dry_run_shows_auto(bundled: dict[str, Path]) -> None:
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(bundled["ce"]), "--batch-size", "auto", "--dry-run",
                                   "--methods", "saliency", "--metrics", "sparseness"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["config"]["batch_size"] == "auto"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_measures_memory(bundled: dict[str, Path]) -> None:
    import sclzoo

    model = sclzoo.load_model(str(bundled["ce"])).model
    images = torch.rand(16, 1, 28, 28)
    b = auto_batch_size(model, images, {"integrated_gradients": {"n_steps": 32}}, torch.device("cuda"))
    assert 1 <= b <= 1024 and b & (b - 1) == 0
