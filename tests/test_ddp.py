"""Scale-out: `torchrun --nproc_per_node=2 -m sclzoo train` trains with DDP on CPU (gloo) and exports a valid repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sclzoo.zoo.hub import load_model, resolve_model

RECIPE = """
name = "test_resnet_cifar.supcon_digits"
arch = "test_resnet_cifar"
dataset = "digits"
objective = "supcon"
val_size = 100
[optim]
epochs = 2
batch_size = 64
lr = 0.1
[probe.optim]
epochs = 2
batch_size = 64
lr = 0.1
"""


@pytest.mark.slow
def test_torchrun_two_processes_trains_and_exports(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None, "torchrun is installed with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29533", "-m", "sclzoo", "train",
                        "--config", str(recipe), "--out", str(tmp_path / "ck"), "--export", str(tmp_path / "repo")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "on 2 process(es)" in p.stdout
    record = json.loads((tmp_path / "repo" / "training.json").read_text())
    assert record["hardware"]["world_size"] == 2
    loaded = load_model(resolve_model(str(tmp_path / "repo")))
    assert loaded.objective == "supcon" and record["accuracy"]["torch"]["test"] > 0.2
