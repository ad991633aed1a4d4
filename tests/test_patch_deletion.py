"""Patch deletion, the in-domain augmentation for grid-deletion metrics (docs/training.md#patch-deletion).

The sampler's distribution (k uniform in [1, g² − 1], cells uniform, p the share of images touched), seeding,
p = 0, the grid's edge cells, the recipe table and what training and export record. The in-domain recipes are
their originals plus the table, and the originals' records are what the bundled repos hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import sclzoo.zoo.train as train_mod
from sclzoo.deletion import PatchDeletionConfig
from sclzoo.errors import ConfigError
from sclzoo.zoo.augment import delete_patches, grid_cells
from sclzoo.zoo.export import build_config
from sclzoo.zoo.recipe import Recipe, load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "zoo" / "recipes"
MODELS = ROOT / "zoo" / "models"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _deleted_cells(x: torch.Tensor, out: torch.Tensor, g: int) -> torch.Tensor:
    """(N, g²) bool: which cells ``delete_patches`` set (x has no pixel equal to the value)."""
    changed = (out != x).any(1)  # (N, H, W)
    cell = grid_cells(x.shape[2], x.shape[3], g).reshape(-1)
    per_cell = torch.zeros(x.shape[0], g * g).index_add_(1, cell, changed.reshape(x.shape[0], -1).float())
    sizes = torch.bincount(cell, minlength=g * g).float()
    # A cell is deleted whole or not at all.
    assert torch.all((per_cell == 0) | (per_cell == sizes)), "a cell was partly deleted"
    return per_cell > 0


def test_patch_count_and_cell_distribution() -> None:
    g, n = 4, 30000
    x = torch.rand(n, 2, 8, 8) + 1.0  # no pixel equals the deletion value 0
    cfg = PatchDeletionConfig(grid=g, value=0.0, p=1.0)
    out = delete_patches(x, cfg, torch.Generator().manual_seed(0))
    cells = _deleted_cells(x, out, g)
    k = cells.sum(1)
    assert int(k.min()) == 1 and int(k.max()) == g * g - 1  # never none, never all
    counts = torch.bincount(k, minlength=g * g)[1:].double()
    expected = n / (g * g - 1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40.0, counts  # 14 degrees of freedom: P(chi² > 40) < 1e-3
    # Given k, cells are uniform: every cell is deleted with probability E[k] / g² = 1/2.
    share = cells.double().mean(0)
    assert torch.all((share - 0.5).abs() < 4 * math.sqrt(0.25 / n)), share
    # Deleted pixels hold the value in every channel; the others are untouched.
    changed = (out != x).any(1, keepdim=True).expand_as(x)
    assert torch.all(out[changed] == 0.0) and torch.equal(out[~changed], x[~changed])
    assert torch.equal((out != x).all(1), (out != x).any(1))


def test_share_of_images_touched_is_p() -> None:
    n = 20000
    x = torch.rand(n, 1, 4, 4) + 1.0
    out = delete_patches(x, PatchDeletionConfig(grid=4, value=-0.5, p=0.3), torch.Generator().manual_seed(1))
    touched = (out != x).flatten(1).any(1).double().mean()
    assert abs(float(touched) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert set(out[out != x].unique().tolist()) == {-0.5}


def test_same_seed_same_deletions_other_seed_other() -> None:
    x = torch.rand(64, 3, 28, 28) + 1.0
    cfg = PatchDeletionConfig()
    a = delete_patches(x, cfg, torch.Generator().manual_seed(7))
    b = delete_patches(x, cfg, torch.Generator().manual_seed(7))
    c = delete_patches(x, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The input is not modified.
    assert bool((x >= 1.0).all())


def test_p_zero_is_the_identity_and_draws_nothing() -> None:
    x = torch.rand(16, 1, 28, 28)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    assert delete_patches(x, PatchDeletionConfig(p=0.0), gen) is x
    assert torch.equal(gen.get_state(), state)  # the augmentations drawn after it are unchanged


@pytest.mark.parametrize(("h", "w", "g", "rows", "cols"), [
    (28, 28, 4, [7, 7, 7, 7], [7, 7, 7, 7]),
    (30, 30, 4, [8, 8, 8, 6], [8, 8, 8, 6]),  # not divisible: the last row/column of cells is smaller
    (10, 7, 3, [4, 4, 2], [3, 3, 1]),
    (56, 56, 4, [14, 14, 14, 14], [14, 14, 14, 14]),
])
def test_grid_cells_edges(h: int, w: int, g: int, rows: list[int], cols: list[int]) -> None:
    cell = grid_cells(h, w, g)
    assert cell.shape == (h, w)
    assert torch.bincount(cell[:, 0] // g, minlength=g).tolist() == rows
    assert torch.bincount(cell[0] % g, minlength=g).tolist() == cols
    assert torch.equal(torch.bincount(cell.reshape(-1), minlength=g * g),
                       torch.tensor([r * c for r in rows for c in cols]))
    # Non-overlapping rectangles in row-major order.
    assert cell[0, 0] == 0 and cell[-1, -1] == g * g - 1
    assert bool((cell.diff(dim=0) >= 0).all()) and bool((cell.diff(dim=1) >= 0).all())


def test_edge_cells_are_deleted_whole() -> None:
    x = torch.rand(4000, 1, 10, 7) + 1.0
    cells = _deleted_cells(x, delete_patches(x, PatchDeletionConfig(grid=3, p=1.0),
                                             torch.Generator().manual_seed(0)), 3)
    assert bool(cells[:, 8].any()) and bool(cells[:, 2].any())  # the smaller corner and edge cells are used


@pytest.mark.parametrize(("h", "w", "g"), [(3, 8, 4), (9, 9, 4), (8, 5, 4)])
def test_grid_with_empty_cells_is_refused(h: int, w: int, g: int) -> None:
    with pytest.raises(ConfigError, match=rf"a {g} x {g} grid does not fit a {h} x {w} image"):
        grid_cells(h, w, g)


@pytest.mark.parametrize(("table", "message"), [
    ({"grid": 1}, r"recipe\.patch_deletion\.grid must be an integer >= 2.*got 1"),
    ({"grid": 4.0}, r"grid must be an integer"),
    ({"grid": True}, r"grid must be an integer"),
    ({"p": 1.5}, r"recipe\.patch_deletion\.p must be a probability in \[0, 1\], got 1\.5"),
    ({"p": "half"}, r"p must be a probability"),
    ({"value": float("nan")}, r"value must be a finite number"),
    ({"size": 4}, r"unknown key\(s\) \['size'\] in \[recipe\.patch_deletion\]"),
    ({"views": "second"}, r"recipe\.patch_deletion\.views must be one of all, first, got 'second'"),
    (0.5, r"\[recipe\.patch_deletion\] must be a table"),
])
def test_bad_patch_deletion_table(table: Any, message: str) -> None:
    d = {"name": "x", "arch": "test_resnet_cifar", "dataset": "digits", "objective": "ce", "patch_deletion": table}
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(d)


def test_recipe_table_defaults_and_round_trip() -> None:
    base = {"name": "x", "arch": "test_resnet_cifar", "dataset": "digits", "objective": "ce"}
    assert Recipe.from_dict(base).patch_deletion is None
    assert "patch_deletion" not in Recipe.from_dict(base).to_dict()  # off: the record is what it was before
    r = Recipe.from_dict({**base, "patch_deletion": {}})
    assert r.patch_deletion == PatchDeletionConfig(grid=4, value=0.0, p=0.5)
    assert r.to_dict()["patch_deletion"] == {"grid": 4, "value": 0.0, "p": 0.5}
    assert Recipe.from_dict(r.to_dict()) == r
    first = Recipe.from_dict({**base, "patch_deletion": {"p": 0.25, "views": "first"}})
    assert first.to_dict()["patch_deletion"] == {"grid": 4, "value": 0.0, "p": 0.25, "views": "first"}
    assert Recipe.from_dict(first.to_dict()) == first


@pytest.mark.parametrize("objective", ["ce", "supcon", "simclr", "triplet"])
def test_in_domain_recipe_is_its_original_plus_patch_deletion(objective: str) -> None:
    """Same budget and training as the original; only patch deletion and (CE, SupCon, SimCLR) the clean BatchNorm
    statistics added (README "The bundled zoo" has the accuracies with and without them)."""
    orig = load_recipe(RECIPES / f"resnet8_cifar.{objective}_mnist5k.toml")
    twin = load_recipe(RECIPES / f"resnet8_cifar.{objective}_mnist5k_indomain.toml")
    assert twin.name == f"{orig.name}_indomain"
    # one p for all four (the leaderboard compares only models trained the same way); 0.25 keeps accuracy close
    assert twin.patch_deletion == PatchDeletionConfig(grid=4, value=0.0, p=0.25)
    assert twin.bn_stats == ("train" if objective == "triplet" else "clean")
    assert twin.replace(name=orig.name, patch_deletion=None, bn_stats=orig.bn_stats) == orig
    # the bundled in-domain model was trained from this recipe
    record = json.loads((MODELS / twin.name / "training.json").read_text())
    assert record["patch_deletion"] == {"grid": 4, "value": 0.0, "p": 0.25}
    assert record["recipe"]["patch_deletion"] == twin.to_dict()["patch_deletion"]


@pytest.mark.parametrize("objective", ["ce", "supcon", "simclr", "triplet"])
def test_bundled_records_are_unchanged_by_the_option(objective: str) -> None:
    """The original recipes still give the recipe block their bundled training.json holds (keys added to recipes
    after those models were trained aside, with their defaults), and the sclzoo block of their config.json is
    rebuilt identically: no patch_deletion key in either."""
    repo = MODELS / f"resnet8_cifar.{objective}_mnist5k"
    record = json.loads((repo / "training.json").read_text())
    now = load_recipe(RECIPES / f"{repo.name}.toml").to_dict()
    assert "patch_deletion" not in now and "patch_deletion" not in record
    added = set(now) - set(record["recipe"])
    assert added <= {"projector_bn"} and not any(now[k] for k in added)
    assert {k: v for k, v in now.items() if k in record["recipe"]} == record["recipe"]
    config = json.loads((repo / "config.json").read_text())

    class Stub:
        num_classes, num_features = config["num_classes"], config["num_features"]

    rebuilt = build_config(Stub(), record, config["label_names"])  # type: ignore[arg-type]
    rebuilt["sclzoo"]["files_sha256"] = config["sclzoo"]["files_sha256"]
    assert json.dumps(rebuilt["sclzoo"], indent=2) == json.dumps(config["sclzoo"], indent=2)


def _recipe(objective: str, patch_deletion: dict[str, Any] | None) -> Recipe:
    d: dict[str, Any] = {
        "name": f"test_resnet_cifar.{objective}_digits", "arch": "test_resnet_cifar", "dataset": "digits",
        "objective": objective, "val_size": 100, "model_args": {"widths": [8, 16]}, "projector_dim": 16,
        "optim": {"epochs": 1, "batch_size": 64, "lr": 0.1},
        "augment": {"translate_px": 1.0, "crop_ratio": [1.0, 1.0]},
        "probe": {"optim": {"epochs": 1, "batch_size": 64, "lr": 0.5, "schedule": "cosine"}},
    }
    if patch_deletion is not None:
        d["patch_deletion"] = patch_deletion
    return Recipe.from_dict(d)


@pytest.mark.parametrize(("objective", "views", "calls"), [
    ("ce", "all", {"train": 1}), ("supcon", "all", {"pretrain": 2, "probe": 1}),
    ("ce", "first", {"train": 1}), ("simclr", "first", {"pretrain": 1, "probe": 1}),
])
def test_training_deletes_patches_in_every_stage_and_records_it(
    objective: str, views: str, calls: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int] = {}
    stage = {"now": ""}
    real, real_run_stage = train_mod.delete_patches, train_mod._run_stage

    def spy(x: torch.Tensor, cfg: PatchDeletionConfig, gen: torch.Generator) -> torch.Tensor:
        seen[stage["now"]] = seen.get(stage["now"], 0) + 1
        return real(x, cfg, gen)

    def run_stage(name: str, *a: Any, **kw: Any) -> dict[str, Any]:
        stage["now"] = name
        return real_run_stage(name, *a, **kw)

    monkeypatch.setattr(train_mod, "delete_patches", spy)
    monkeypatch.setattr(train_mod, "_run_stage", run_stage)
    out = train_mod.train(_recipe(objective, {"grid": 4, "p": 1.0, "views": views}), tmp_path, device="cpu",
                          progress=False, max_steps=1)
    # Every view of every stage (CE, pre-training, probe); with views = "first" one view per pre-training pair.
    assert seen == calls
    recorded = {"grid": 4, "value": 0.0, "p": 1.0, **({"views": "first"} if views == "first" else {})}
    assert out.record["patch_deletion"] == recorded
    assert out.record["recipe"]["patch_deletion"] == recorded
    cfg = build_config(out.model, {**out.record, "input_size": [1, 8, 8]}, [str(i) for i in range(10)])
    assert cfg["sclzoo"]["patch_deletion"] == recorded
    assert list(cfg["sclzoo"])[-1] == "files_sha256"

    seen.clear()
    plain = train_mod.train(_recipe(objective, None), tmp_path / "plain", device="cpu", progress=False, max_steps=1)
    assert seen == {} and "patch_deletion" not in plain.record
    assert "patch_deletion" not in build_config(plain.model, {**plain.record, "input_size": [1, 8, 8]},
                                                [str(i) for i in range(10)])["sclzoo"]


def test_export_refuses_a_bad_recorded_patch_deletion() -> None:
    record = json.loads((MODELS / "resnet8_cifar.ce_mnist5k" / "training.json").read_text())
    record["patch_deletion"] = {"grid": 0, "value": 0.0, "p": 0.5}

    class Stub:
        num_classes, num_features = 10, 64

    with pytest.raises(ConfigError, match=r"training record's patch_deletion\.grid must be an integer >= 2"):
        build_config(Stub(), record, [str(i) for i in range(10)])  # type: ignore[arg-type]


def test_clean_batchnorm_statistics_change_only_the_running_statistics(tmp_path: Path) -> None:
    """bn_stats = "clean": the same weights as without it, BatchNorm statistics re-estimated on the clean training
    images (re-estimating them again changes nothing), recorded; the probe of a contrastive model sees them."""
    from sclzoo.zoo.train import recalibrate_batchnorm

    base = _recipe("ce", {"grid": 4, "p": 1.0})
    plain = train_mod.train(base, tmp_path / "a", device="cpu", progress=False, max_steps=3)
    clean = train_mod.train(base.replace(bn_stats="clean"), tmp_path / "b", device="cpu", progress=False,
                            max_steps=3)
    sa, sb = plain.model.state_dict(), clean.model.state_dict()
    stats = [k for k in sa if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(sa[k], sb[k]) for k in sa if k not in stats and "num_batches" not in k)
    assert all(not torch.equal(sa[k], sb[k]) for k in stats)
    assert clean.record["recipe"]["bn_stats"] == "clean" and "bn_stats" not in plain.record["recipe"]
    info = clean.record["stages"]["train"]["bn_recalibration"]
    assert info["images"] == 1397 and info["batches"] == 3
    from sclzoo.zoo.data import load_dataset, stratified_split

    ds = load_dataset("digits", "train")
    tr_idx, _ = stratified_split(ds.labels.numpy(), 100, 0)
    before = {k: v.clone() for k, v in clean.model.state_dict().items()}
    recalibrate_batchnorm(clean.model, ds.images[tr_idx])
    after = clean.model.state_dict()
    # Equal up to float rounding (training ran channels_last, the returned model is contiguous).
    assert all(torch.allclose(before[k], after[k], rtol=1e-5, atol=1e-5) for k in stats)
    assert not clean.model.training
    probe = train_mod.train(_recipe("supcon", None).replace(bn_stats="clean"), tmp_path / "c", device="cpu",
                            progress=False, max_steps=2)
    assert "bn_recalibration" in probe.record["stages"]["pretrain"]


def test_bad_bn_stats_is_a_config_error() -> None:
    base = {"name": "x", "arch": "test_resnet_cifar", "dataset": "digits", "objective": "ce"}
    with pytest.raises(ConfigError, match=r"bn_stats 'precise' is unknown; use one of train, clean"):
        Recipe.from_dict({**base, "bn_stats": "precise"})
    with pytest.raises(ConfigError, match=r"recipe\.bn_stats must be one of train, clean, got True"):
        Recipe.from_dict({**base, "bn_stats": True})
    assert Recipe.from_dict({**base, "bn_stats": "clean"}).to_dict()["bn_stats"] == "clean"
