"""Training: the record training.json is built from, bit-exact determinism and resume, recipe validation.

Everything trains ``test_resnet_cifar`` on the 8×8 ``digits`` (1,397 train images after a 100-image validation
split, 21 steps of 64 per epoch), a second or two per run on a CPU.

The recipes widen the network to (8, 16) channels through ``model_args``: with torch 2.14.1 on CPU the weight
gradient of a channels_last 1×1 stride-2 convolution with fewer than 8 input channels (the 4 → 8 shortcut of the
default widths) is wrong on every other call with 2 threads and corrupts the heap with 1 thread.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import load_bench

import sclzoo.zoo.train as train_mod
from sclzoo.errors import ConfigError, DatasetError, UnknownNameError
from sclzoo.zoo.data import load_dataset
from sclzoo.zoo.recipe import Recipe, load_recipe
from sclzoo.zoo.train import CHECKPOINT, TrainOutput, train

RECIPES = Path(__file__).resolve().parent.parent / "zoo" / "recipes"
STEPS_PER_EPOCH = (1497 - 100) // 64  # the last incomplete batch is dropped


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _recipe(objective: str, **over: Any) -> Recipe:
    d: dict[str, Any] = {
        "name": f"test_resnet_cifar.{objective}_digits",
        "arch": "test_resnet_cifar",
        "dataset": "digits",
        "objective": objective,
        "seed": 0,
        "val_size": 100,
        "model_args": {"widths": [8, 16]},
        "optim": {"epochs": 2, "batch_size": 64, "lr": 0.1, "weight_decay": 1e-4},
        "augment": {"translate_px": 1.0, "crop_ratio": [1.0, 1.0]},
        "projector_dim": 16,
        "probe": {"optim": {"epochs": 2, "batch_size": 64, "lr": 0.5, "weight_decay": 0.0, "schedule": "cosine"},
                  "augment": {"translate_px": 1.0, "crop_ratio": [1.0, 1.0]}},
    }
    d.update(over)
    return Recipe.from_dict(d)


def _run(recipe: Recipe, work: Path, **kw: Any) -> TrainOutput:
    return train(recipe, work, device="cpu", progress=False, **kw)


def _assert_same_weights(a: TrainOutput, b: TrainOutput) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"
    assert (a.projector is None) == (b.projector is None)
    if a.projector is not None and b.projector is not None:
        for (k, va), vb in zip(a.projector.state_dict().items(), b.projector.state_dict().values(), strict=True):
            assert torch.equal(va, vb), f"projector {k} differs"


def _losses(out: TrainOutput) -> dict[str, list[float]]:
    return {s: [e["loss"] for e in v["history"]] for s, v in out.record["stages"].items()}


@pytest.mark.parametrize("objective", ["ce", "supcon"])
def test_train_record(objective: str, tmp_path: Path) -> None:
    out = _run(_recipe(objective), tmp_path)
    rec = out.record
    contrastive = objective != "ce"
    assert rec["recipe"] == _recipe(objective).to_dict()
    assert rec["objective"]["name"] == objective and rec["objective"]["variant"]
    assert rec["objective"]["params"] == ({"temperature": 0.1, "base_temperature": 0.07} if contrastive
                                          else {"label_smoothing": 0.0})
    assert rec["head"] == ("linear_probe" if contrastive else "ce_head")
    ds = load_dataset("digits", "train")
    assert rec["dataset"]["id"] == "digits" and rec["dataset"]["split_sha256"] == ds.split_sha256
    assert (rec["dataset"]["n_train"], rec["dataset"]["n_val"], rec["dataset"]["n_test"]) == (1397, 100, 300)
    assert rec["dataset"]["mean"] == list(ds.mean) and rec["dataset"]["std"] == list(ds.std)
    acc = rec["accuracy"]["torch"]
    assert set(acc) == {"train", "val", "test"}
    for v in acc.values():
        assert 0.0 <= v <= 1.0
    assert acc["test"] > 0.2  # 10 classes: clearly above chance after two short epochs
    stages = ["pretrain", "probe"] if contrastive else ["train"]
    assert list(rec["stages"]) == stages
    for s in stages:
        hist = rec["stages"][s]["history"]
        assert [e["epoch"] for e in hist] == [1, 2]
        assert all(set(e) >= {"epoch", "loss", "train_acc", "seconds"} for e in hist)
        assert rec["stages"][s]["steps"] == 2 * STEPS_PER_EPOCH
    assert rec["wall_time_s"] > 0 and rec["hardware"]["device"] == "cpu"
    if contrastive:
        assert rec["projector"] == {"in_dim": 16, "hidden_dim": 16, "out_dim": 16, "batchnorm": False,
                                    "normalised": True}
        assert out.projector is not None
        assert rec["stages"]["pretrain"]["history"][0]["train_acc"] is None  # no labels to score
    else:
        assert rec["projector"] is None and out.projector is None
    # The output is the evaluated classifier: eval mode, CPU, 10 logits, and the record's test accuracy is its.
    assert not out.model.training
    with torch.no_grad():
        pred = out.model(out.test.images).argmax(1)
    assert float((pred == out.test.labels).double().mean()) == pytest.approx(acc["test"], abs=1e-12)
    assert (Path(tmp_path) / CHECKPOINT).is_file()


@pytest.mark.slow
def test_training_is_deterministic(tmp_path: Path) -> None:
    # One epoch of pre-training and one of probing each: the second run repeats every random draw.
    a = _run(_recipe("supcon"), tmp_path / "a", max_steps=STEPS_PER_EPOCH)
    b = _run(_recipe("supcon"), tmp_path / "b", max_steps=STEPS_PER_EPOCH)
    _assert_same_weights(a, b)
    assert _losses(a) == _losses(b)
    c = _run(_recipe("supcon", seed=1), tmp_path / "c", max_steps=2)
    assert not torch.equal(a.model.fc.weight, c.model.fc.weight)


class _Killed(Exception):
    """Stands in for a kill signal arriving right after an epoch checkpoint was written."""


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, stage: str, epoch: int) -> None:
    real = train_mod._save_state

    def save_then_die(path: Path, state: dict[str, Any]) -> None:
        real(path, state)
        if state["stage"] == stage and state["epoch"] == epoch:
            raise _Killed

    monkeypatch.setattr(train_mod, "_save_state", save_then_die)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainOutput]:
    return {obj: _run(_recipe(obj, optim={"epochs": 3, "batch_size": 64, "lr": 0.1}),
                      tmp_path_factory.mktemp(f"full_{obj}")) for obj in ("ce", "simclr")}


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "stage"), [("ce", "train"), ("simclr", "pretrain"), ("simclr", "probe")])
def test_resume_gives_identical_weights(objective: str, stage: str, uninterrupted: dict[str, TrainOutput],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _recipe(objective, optim={"epochs": 3, "batch_size": 64, "lr": 0.1})
    with monkeypatch.context() as m:
        _interrupt_after(m, stage, 1)
        with pytest.raises(_Killed):
            _run(recipe, tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert (state["stage"], state["epoch"]) == (stage, 1)
    resumed = _run(recipe, tmp_path, resume=True)
    full = uninterrupted[objective]
    _assert_same_weights(resumed, full)
    assert _losses(resumed) == _losses(full)
    assert resumed.record["accuracy"] == full.record["accuracy"]


def test_max_steps_stops_every_stage(tmp_path: Path) -> None:
    out = _run(_recipe("supcon"), tmp_path, max_steps=STEPS_PER_EPOCH)
    assert out.record["max_steps"] == STEPS_PER_EPOCH
    for s in ("pretrain", "probe"):
        assert out.record["stages"][s]["steps"] == STEPS_PER_EPOCH
        assert len(out.record["stages"][s]["history"]) == 1


def test_epochs_override_is_recorded(tmp_path: Path) -> None:
    out = _run(_recipe("ce"), tmp_path, epochs=1)
    assert out.record["recipe"]["optim"]["epochs"] == 1
    assert len(out.record["stages"]["train"]["history"]) == 1


def test_resume_without_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--resume found no checkpoint at .*train_state\.pt"):
        _run(_recipe("ce"), tmp_path, resume=True)


def test_resume_from_unreadable_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"unreadable.*delete it and train again without --resume"):
        _run(_recipe("ce"), tmp_path, resume=True)


def test_resume_with_another_recipe_is_a_config_error(tmp_path: Path) -> None:
    _run(_recipe("ce"), tmp_path, max_steps=2)  # leaves an epoch checkpoint that records its recipe
    other = _recipe("ce", optim={"epochs": 2, "batch_size": 64, "lr": 0.2, "weight_decay": 1e-4})
    with pytest.raises(ConfigError, match=r"different recipe \(optim\.lr: 0\.1 in the checkpoint, 0\.2 now\)"):
        _run(other, tmp_path, resume=True)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["recipe"] == _recipe("ce").to_dict()


def test_unknown_objective_is_reported_before_training(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'simclr'"):
        _run(_recipe("simclrr"), tmp_path)
    with pytest.raises(ConfigError, match=r"'ce' has no parameter\(s\) \['temperature'\]"):
        _run(_recipe("ce", loss={"temperature": 0.5}), tmp_path)


def _base() -> dict[str, Any]:
    return {"name": "x", "arch": "test_resnet_cifar", "dataset": "digits", "objective": "ce"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\] in recipe"),
        ({"optim": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in recipe\.optim"),
        ({"probe": {"optim": {"lrate": 1.0}}}, r"unknown key\(s\) \['lrate'\] in recipe\.probe\.optim"),
        ({"probe": {"epochs": 3}}, r"unknown key\(s\) \['epochs'\] in recipe\.probe"),
        ({"augment": {"flip": True}}, r"unknown key\(s\) \['flip'\] in \[recipe\.augment\]"),
        ({"arch": ""}, r"needs a string 'arch'"),
        ({"objective": 3}, r"needs a string 'objective' \(got 3\)"),
        ({"seed": "0"}, r"recipe\.seed must be an integer, got '0'"),
        ({"val_size": True}, r"recipe\.val_size must be an integer"),
        ({"loss": 0.1}, r"recipe\.loss must be a table"),
        ({"optim": {"epochs": "ten"}}, r"recipe\.optim\.epochs must be a number, got 'ten'"),
        ({"optim": {"epochs": 2.5}}, r"recipe\.optim\.epochs must be an integer, got 2\.5"),
        ({"optim": {"lr": True}}, r"recipe\.optim\.lr must be a number"),
        ({"optim": {"schedule": "linear"}}, r"schedule 'linear' is unknown; use one of onecycle, cosine, step"),
        ({"optim": {"epochs": 0}}, r"must be positive"),
        ({"projector_bn": "yes"}, r"recipe\.projector_bn must be true or false, got 'yes'"),
        ({"fresh_clutter": 1}, r"recipe\.fresh_clutter must be true or false, got 1"),
        ({"probe": {"standardize": "yes"}}, r"recipe\.probe\.standardize must be true or false, got 'yes'"),
    ],
)
def test_bad_recipe_is_a_config_error(change: dict[str, Any], message: str) -> None:
    d = _base()
    d.update(copy.deepcopy(change))
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(d)


def test_recipe_round_trip_and_files(tmp_path: Path) -> None:
    r = _recipe("supcon")
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict({**_base(), "optim": {"epochs": 4.0}}).optim.epochs == 4  # TOML may write 4.0
    shipped = sorted(RECIPES.glob("*.toml"))
    assert shipped
    for p in shipped:
        rec = load_recipe(p)
        assert p.stem == rec.name
    with pytest.raises(ConfigError, match=r"does not exist; pass --config"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_recipe(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('name = "x"\narch = "test_resnet_cifar"\ndataset = "digits"\nobjective = "ce"\n'
                    "[optim]\nbatchsize = 64\n")
    with pytest.raises(ConfigError, match=r"\['batchsize'\] in typo\.toml\.optim"):
        load_recipe(typo)


def test_triplet_with_batchnorm_projector_does_not_collapse(tmp_path: Path) -> None:
    """Batch-hard triplet collapses all projections onto one point (loss = margin 0.3, no gradient left) with the
    plain projector; the non-affine BatchNorm before the normalisation keeps them apart. Same data, seed, steps."""
    common = {"optim": {"epochs": 3, "batch_size": 64, "lr": 0.3, "weight_decay": 1e-4}}
    plain = _run(_recipe("triplet", **common), tmp_path / "plain")
    bn = _run(_recipe("triplet", projector_bn=True, **common), tmp_path / "bn")
    assert bn.record["projector"]["batchnorm"] is True
    assert plain.record["projector"]["batchnorm"] is False
    x = load_dataset("digits", "train").images[:256]

    def spread(out: TrainOutput) -> float:
        from sclzoo.zoo.models import encode

        assert out.projector is not None
        with torch.no_grad():
            z = out.projector(encode(out.model, x))
        return float((z - z.mean(0)).norm(dim=1).mean())  # mean distance to the centroid; 0 = collapsed

    last_plain = plain.record["stages"]["pretrain"]["history"][-1]["loss"]
    last_bn = bn.record["stages"]["pretrain"]["history"][-1]["loss"]
    assert abs(last_plain - 0.3) < 0.01  # collapsed: every triplet sits at the margin
    assert last_bn > 0.31  # still learning: hardest negatives inside the margin are being pushed out
    assert spread(bn) > 5 * spread(plain)


def test_fresh_clutter_needs_a_clutter_dataset(tmp_path: Path) -> None:
    r = _recipe("simclr", fresh_clutter=True)
    assert r.to_dict()["fresh_clutter"] is True and "fresh_clutter" not in _recipe("simclr").to_dict()
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(DatasetError, match="fresh clutter needs the dataset 'mnist5k-clutter', got 'digits'"):
        _run(r, tmp_path)


@pytest.mark.integration  # generates mnist5k-clutter and trains on 56 x 56 canvases (~15 s)
def test_fresh_clutter_trains_on_redrawn_canvases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pre-training view and each probe view is a new canvas (zoo/train.py's _FreshClutter), then augmented."""
    seen: list[torch.Tensor] = []
    real = train_mod.augment_batch

    def spy(x: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        seen.append(x.clone())
        return real(x, *a, **kw)

    monkeypatch.setattr(train_mod, "augment_batch", spy)
    r = _recipe("simclr", dataset="mnist5k-clutter", fresh_clutter=True, val_size=400, model_args={"widths": [16, 32]},
                optim={"epochs": 1, "batch_size": 32, "lr": 0.1},
                probe={"optim": {"epochs": 1, "batch_size": 32, "lr": 0.5, "schedule": "cosine"}})
    out = _run(r, tmp_path, max_steps=1)
    assert out.record["recipe"]["fresh_clutter"] is True
    assert len(seen) == 3  # two pre-training views, one probe view
    train_x = load_dataset("mnist5k-clutter", "train").images
    v1, v2 = seen[0], seen[1]
    assert v1.shape == (32, 1, 56, 56) and not torch.equal(v1, v2)
    # Not the stored canvases: none of the views is a stored training image.
    stored = {hash(t.numpy().tobytes()) for t in train_x}
    assert not any(hash(t.numpy().tobytes()) in stored for v in seen for t in v)
    # The same ink in both views (the digit), clutter aside: a view has the digit's 28 x 28 box plus fragments.
    assert torch.all(v1.flatten(1).sum(1) > 0)


def test_fold_standardisation_equals_the_head_on_standardised_features() -> None:
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    trained = copy.deepcopy(lin)
    mean = torch.randn(5, generator=g) * 10
    std = torch.rand(5, generator=g) * 100 + 0.01
    h = torch.randn(64, 5, generator=g) * std + mean
    train_mod.fold_standardisation(lin, mean, std)
    torch.testing.assert_close(lin(h), trained((h - mean) / std), rtol=1e-5, atol=1e-4)


def test_feature_stats_centre_but_do_not_scale_constant_features() -> None:
    class Enc(torch.nn.Module):  # pooled "features": the image's mean and a channel that never fires
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m * 3 + 1, torch.zeros_like(m)], 1)

    x = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    mean, std, n_constant = train_mod.feature_stats(Enc(), x, batch_size=3)
    f = x.mean(dim=(1, 2, 3)).double() * 3 + 1
    torch.testing.assert_close(mean, torch.tensor([f.mean(), 0.0]).float())
    torch.testing.assert_close(std, torch.tensor([f.std(unbiased=False), 1.0]).float())
    assert n_constant == 1


def test_standardised_probe_trains_on_standardised_features_and_exports_one_linear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/training.md#standardised-probe: only the head changes; the head trained is the exported one, folded."""
    seen: dict[str, Any] = {}
    real = train_mod.fold_standardisation

    def spy(linear: torch.nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
        seen.update(before=copy.deepcopy(linear), mean=mean.clone(), std=std.clone())
        real(linear, mean, std)

    monkeypatch.setattr(train_mod, "fold_standardisation", spy)
    probe = {**_recipe("simclr").to_dict()["probe"], "standardize": True}
    out = _run(_recipe("simclr", probe=probe), tmp_path / "std")
    plain = _run(_recipe("simclr"), tmp_path / "plain")
    rec = out.record
    assert rec["recipe"]["probe"]["standardize"] is True and "standardize" not in plain.record["recipe"]["probe"]
    info = rec["stages"]["probe"]["standardize"]
    assert info["images"] == 1397 and info["features"] == out.model.num_features
    # The encoder is the plain run's, bit for bit; the head is not.
    for k, v in plain.model.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(out.model.state_dict()[k], v), k
    assert not torch.allclose(out.model.fc.weight, plain.model.fc.weight)
    # The statistics are those of the clean training images under the final encoder.
    from sclzoo.zoo.data import stratified_split
    from sclzoo.zoo.models import encode
    full = load_dataset("digits", "train")
    tr_idx, _ = stratified_split(full.labels.numpy(), 100, 0)
    with torch.no_grad():
        h = encode(out.model.eval(), full.images[tr_idx]).double()
        torch.testing.assert_close(seen["mean"], h.mean(0).float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(seen["std"], h.std(0, unbiased=False).float(), rtol=1e-4, atol=1e-5)
        test = load_dataset("digits", "test").images
        want = seen["before"]((encode(out.model, test) - seen["mean"]) / seen["std"])
        torch.testing.assert_close(out.model(test), want, rtol=1e-4, atol=1e-4)
    assert isinstance(out.model.fc, torch.nn.Linear)
    assert out.record["accuracy"]["torch"]["test"] > 0.5


def test_standardised_probe_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = {**_recipe("simclr").to_dict()["probe"], "standardize": True}
    recipe = _recipe("simclr", probe=probe)
    full = _run(recipe, tmp_path / "full")
    with monkeypatch.context() as m:
        _interrupt_after(m, "probe", 1)
        with pytest.raises(_Killed):
            _run(recipe, tmp_path / "cut")
    resumed = _run(recipe, tmp_path / "cut", resume=True)
    _assert_same_weights(resumed, full)
    assert resumed.record["stages"]["probe"]["standardize"]["features"] == full.model.num_features



@pytest.mark.integration
def test_probe_replay_rebuilds_the_trained_model_and_replays_its_probe(tmp_path: Path) -> None:
    """bench/probe_replay.py (docs/training.md#standardised-probe) on a `sclzoo train --out` folder."""
    import json

    from sclzoo.zoo.train import save_checkpoint

    mod = load_bench("probe_replay")
    ckpt = save_checkpoint(_run(_recipe("simclr", seed=3), tmp_path / "work"), tmp_path / "simclr")
    out = tmp_path / "replay.json"
    assert mod.main([str(ckpt), "--draws", "2", "--epochs", "3", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    # The rebuilt model is the trained one: its test accuracy is the record's (same 397 digits test images).
    assert row["trained_probe"] == pytest.approx(row["record_test_accuracy"], abs=1 / 397 + 1e-9)
    assert row["seed"] == 3 and row["draws"] == 2
    for k in ("replay_raw", "replay_standardised", "logistic_clean", "logistic_views"):
        assert 0.3 < row[k] <= 1.0, (k, row[k])  # ten classes: chance is 0.1
    ce = save_checkpoint(_run(_recipe("ce"), tmp_path / "work_ce", max_steps=2), tmp_path / "ce")
    with pytest.raises(ConfigError, match="not a contrastive model with a linear probe"):
        mod.main([str(ce)])
    with pytest.raises(ConfigError, match="has no training.json/record.json"):
        mod.main([str(tmp_path)])
