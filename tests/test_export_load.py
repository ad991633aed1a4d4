"""Checkpoint → zoo repo → loaded model: files, hashes, card, ONNX parity, plain-timm loading, clear load errors.

A tiny ``test_resnet_cifar`` is trained for a few steps on ``digits`` (widths (8, 16): see test_train.py for the
torch CPU bug that rules out the default 4-channel stem), exported, and loaded back; the bundled MNIST-5k repos
are loaded and re-scored against their recorded test accuracy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import yaml
from helpers import sha256_tree

from sclzoo.errors import ConfigError, ModelLoadError, ModelNotFoundError
from sclzoo.vocab import OBJECTIVES
from sclzoo.zoo.data import load_dataset
from sclzoo.zoo.export import export_repo
from sclzoo.zoo.hub import ZOO_DIR, LoadedModel, load_model, registry_entries, resolve_model
from sclzoo.zoo.recipe import Recipe
from sclzoo.zoo.train import TrainOutput, save_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path) -> LoadedModel:
    return load_model(resolve_model(str(path)))


class Exported:
    def __init__(self, out: TrainOutput, ckpt: Path, repo: Path) -> None:
        self.out, self.ckpt, self.repo = out, ckpt, repo


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    res = {}
    for obj in ("ce", "supcon"):
        recipe = Recipe.from_dict({
            "name": f"test_resnet_cifar.{obj}_digits", "arch": "test_resnet_cifar", "dataset": "digits",
            "objective": obj, "val_size": 100, "model_args": {"widths": [8, 16]}, "projector_dim": 16,
            "optim": {"epochs": 1, "batch_size": 64, "lr": 0.1},
        })
        work = tmp_path_factory.mktemp(f"export_{obj}")
        out = train(recipe, work / "work", device="cpu", progress=False, max_steps=8)
        ckpt = save_checkpoint(out, work / "ckpt")
        repo = export_repo(ckpt, work / "repo", onnx=True)
        res[obj] = Exported(out, ckpt, repo)
    return res


@pytest.fixture()
def repo_copy(exported: dict[str, Exported], tmp_path: Path) -> Path:
    """A private copy of the CE repo that a test may damage."""
    return Path(shutil.copytree(exported["ce"].repo, tmp_path / "repo"))


@pytest.mark.parametrize("objective", ["ce", "supcon"])
def test_repo_layout_and_config(objective: str, exported: dict[str, Exported]) -> None:
    e = exported[objective]
    repo = e.repo
    files = set(sha256_tree(repo))
    expected = {"config.json", "model.safetensors", "training.json", "README.md", "onnx/model.onnx"}
    if objective == "supcon":
        expected.add("projection_head.safetensors")
    assert files == expected
    cfg = json.loads((repo / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet_cifar"
    assert cfg["num_classes"] == cfg["pretrained_cfg"]["num_classes"] == 10
    assert cfg["num_features"] == 16
    assert cfg["label_names"] == [str(i) for i in range(10)]
    ds = load_dataset("digits", "train")
    assert cfg["model_args"] == {"in_chans": 1, "norm_mean": list(ds.mean), "norm_std": list(ds.std),
                                 "widths": [8, 16]}
    pc = cfg["pretrained_cfg"]
    assert pc["input_size"] == [1, 8, 8]
    assert pc["mean"] == [0.0] and pc["std"] == [1.0]  # the model normalises internally
    assert pc["classifier"] == "fc" and pc["license"] == "apache-2.0"
    assert pc["paper_ids"] == list(OBJECTIVES[objective].paper_ids)
    sz = cfg["sclzoo"]
    assert sz["schema_version"] == 1 and sz["objective"] == objective and sz["input_range"] == [0, 1]
    assert sz["head"] == ("linear_probe" if objective == "supcon" else "ce_head")
    assert sz["train_dataset"] == {"id": "digits", "split_sha256": ds.split_sha256}
    hashed = expected - {"config.json", "README.md"}
    assert set(sz["files_sha256"]) == hashed
    for name, sha in sz["files_sha256"].items():
        assert _sha(repo / name) == sha, name
    # The repo is meant to be shared: readable by everyone.
    assert all(f.stat().st_mode & 0o444 == 0o444 for f in repo.rglob("*") if f.is_file())


@pytest.mark.parametrize("objective", ["ce", "supcon"])
def test_training_json_and_onnx(objective: str, exported: dict[str, Exported]) -> None:
    import onnxruntime as ort

    e = exported[objective]
    rec = json.loads((e.repo / "training.json").read_text())
    assert rec["recipe"] == e.out.recipe.to_dict()
    assert rec["objective"]["name"] == objective
    assert rec["accuracy"] == e.out.record["accuracy"]
    assert rec["num_parameters"] == sum(p.numel() for p in e.out.model.parameters())
    assert {"versions", "git_revision", "hardware", "wall_time_s", "dataset", "stages"} <= set(rec)
    assert rec["versions"]["torch"] == metadata.version("torch")
    check = rec["onnx_check"]
    assert check["passed"] is True and check["argmax_identical"] is True
    assert 0 <= check["max_abs_diff_logits"] <= 1e-4 and check["n_images"] == 300
    # The graph has a dynamic batch, takes pixels in [0, 1] and normalises inside.
    sess = ort.InferenceSession(str(e.repo / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["pixels"] and [o.name for o in sess.get_outputs()] == ["logits"]
    x = e.out.test.images[:5]
    got = sess.run(["logits"], {"pixels": x.numpy()})[0]
    with torch.no_grad():
        want = e.out.model(x).numpy()
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("objective", ["ce", "supcon"])
def test_model_card(objective: str, exported: dict[str, Exported]) -> None:
    e = exported[objective]
    text = (e.repo / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["digits"]
    from sclzoo.model_cards import OBJECTIVE_TAGS, card_problems

    assert {"sclzoo", objective, "image-classification", *OBJECTIVE_TAGS[objective]} <= set(meta["tags"])
    assert ("contrastive-learning" in meta["tags"]) == (objective != "ce")
    assert card_problems(text, objective) == []
    (entry,) = meta["model-index"]
    assert entry["name"] == f"test_resnet_cifar.{objective}_digits"
    metrics = entry["results"][0]["metrics"]
    acc = [m["value"] for m in metrics if m["type"] == "accuracy"]
    assert acc == [pytest.approx(e.out.record["accuracy"]["torch"]["test"], abs=5e-5)]  # card rounds to 4 digits


def test_projector_is_exported_for_contrastive_only(exported: dict[str, Exported]) -> None:
    from safetensors.torch import load_file

    assert not (exported["ce"].repo / "projection_head.safetensors").exists()
    e = exported["supcon"]
    state = load_file(str(e.repo / "projection_head.safetensors"))
    assert e.out.projector is not None
    for k, v in e.out.projector.state_dict().items():
        assert torch.equal(state[k], v)
    # The classifier file holds the encoder and the probe, not the projector.
    assert not any(k.startswith(("fc1", "fc2")) for k in load_file(str(e.repo / "model.safetensors")))


@pytest.mark.parametrize("objective", ["ce", "supcon"])
def test_loaded_model_gives_identical_logits(objective: str, exported: dict[str, Exported]) -> None:
    e = exported[objective]
    x = e.out.test.images[:50]
    with torch.no_grad():
        want = e.out.model(x)
    lm = _load(e.repo)
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    assert lm.objective == objective and lm.name == f"test_resnet_cifar.{objective}_digits"
    assert lm.input_size == (1, 8, 8)
    assert lm.resolved.source == "local" and len(lm.resolved.commit_sha) == 40
    assert lm.files_sha256 == json.loads((e.repo / "config.json").read_text())["sclzoo"]["files_sha256"]
    with torch.no_grad():
        assert torch.equal(lm.model(x), want)
        # After `import sclzoo` plain timm loads the repo too.
        m = timm.create_model("local-dir:" + str(e.repo), pretrained=True).eval()
        assert torch.equal(m(x), want)
    assert torch.equal(_load(e.repo).model(x), want)  # loading twice gives the same model
    assert resolve_model("local-dir:" + str(e.repo)).path == e.repo.resolve()


def test_export_refuses_existing_folder(exported: dict[str, Exported], tmp_path: Path) -> None:
    e = exported["ce"]
    before = sha256_tree(e.repo)
    with pytest.raises(ConfigError, match=r"already exists; pass --overwrite"):
        export_repo(e.ckpt, e.repo, onnx=False)
    assert sha256_tree(e.repo) == before
    target = tmp_path / "again"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export_repo(e.ckpt, target, onnx=False, overwrite=True)
    assert not (target / "stale.txt").exists() and (target / "config.json").is_file()
    assert not (target / "onnx").exists()
    # Only the finished repo is left behind, no temporary folders.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


def test_export_needs_a_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"has no model\.safetensors; pass the folder `sclzoo train --out`"):
        export_repo(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _edit_config(repo: Path, fn: Any) -> None:
    cfg = json.loads((repo / "config.json").read_text())
    fn(cfg)
    (repo / "config.json").write_text(json.dumps(cfg))


def _expect_load_error(repo: Path, match: str) -> None:
    before = sha256_tree(repo)
    with pytest.raises(ModelLoadError, match=match):
        _load(repo)
    assert sha256_tree(repo) == before, "a failed load must not modify the folder"


def test_missing_config(repo_copy: Path) -> None:
    (repo_copy / "config.json").unlink()
    _expect_load_error(repo_copy, r"has no config\.json; export it with `sclzoo export`")


def test_truncated_weights(repo_copy: Path) -> None:
    _edit_config(repo_copy, lambda c: c["sclzoo"].pop("files_sha256"))
    w = repo_copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _expect_load_error(repo_copy, r"model\.safetensors of 'local/repo' is corrupt or truncated")


def test_hash_mismatch(repo_copy: Path) -> None:
    w = repo_copy / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight: still a valid file, only the hash notices
    w.write_bytes(bytes(data))
    _expect_load_error(repo_copy, r"model\.safetensors of 'local/repo' does not match its sha256")


def test_missing_hashed_file(repo_copy: Path) -> None:
    (repo_copy / "onnx" / "model.onnx").unlink()
    _expect_load_error(repo_copy, r"lists onnx/model\.onnx in files_sha256 but the file is missing")


def test_num_classes_mismatch(repo_copy: Path) -> None:
    _edit_config(repo_copy, lambda c: c.update(num_classes=9))
    _expect_load_error(repo_copy, r"num_classes=9 but pretrained_cfg\.num_classes=10")

    def both(c: dict[str, Any]) -> None:
        c["num_classes"] = c["pretrained_cfg"]["num_classes"] = 9

    _edit_config(repo_copy, both)
    _expect_load_error(repo_copy, r"do not fit test_resnet_cifar with num_classes=9")


def test_bad_config(repo_copy: Path) -> None:
    (repo_copy / "config.json").write_text("{not json")
    _expect_load_error(repo_copy, r"config\.json of .* is not valid UTF-8 JSON")
    (repo_copy / "config.json").write_text(json.dumps({"num_classes": 10, "pretrained_cfg": {}}))
    _expect_load_error(repo_copy, r"has no 'architecture'")


def test_pickle_weights_are_refused(tmp_path: Path, repo_copy: Path) -> None:
    # Garbage bytes: were they ever unpickled, the error would be an unpickling error, not ModelLoadError.
    only = tmp_path / "pickle_only"
    only.mkdir()
    (only / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    _expect_load_error(only, r"no config\.json \(it has pickle weights \['pytorch_model\.bin'\], which sclzoo never")
    # A config beside pickle weights is refused too.
    (repo_copy / "model.safetensors").unlink()
    (repo_copy / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    _expect_load_error(repo_copy, r"has only pickle weights \['pytorch_model\.bin'\]: loading pickle can run")


def test_unknown_model_reference(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'nonexistent-model-xyz'.*sclzoo ls models"):
        resolve_model("nonexistent-model-xyz")
    with pytest.raises(ModelNotFoundError, match=r"model folder .*nope' does not exist"):
        resolve_model("local-dir:" + str(tmp_path / "nope"))


def test_registry_lists_the_bundled_models() -> None:
    entries = registry_entries()
    assert {"ce", "supcon", "simclr"} <= {e["objective"] for e in entries}
    for e in entries:
        assert e["bundled"] == f"models/{e['name']}" and e["id"] == f"sclzoo/{e['name']}"


@pytest.mark.parametrize("objective", ["ce", "supcon", "simclr"])
def test_bundled_alias_resolves_to_the_bundled_folder(objective: str, bundled: dict[str, Path]) -> None:
    folder = bundled[objective].resolve()
    (e,) = [e for e in registry_entries() if e["name"] == folder.name]
    assert folder == (ZOO_DIR / "models" / e["name"]).resolve()
    for ref in (e["alias"], e["name"], e["id"]):
        r = resolve_model(ref)
        assert (r.path, r.source, r.repo_id) == (folder, "local", f"local/{e['name']}"), ref
    assert resolve_model(f"{objective}-resnet8-mnist").path == folder


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ce", "supcon", "simclr"])
def test_bundled_model_reproduces_its_test_accuracy(objective: str, bundled: dict[str, Path]) -> None:
    lm = _load(bundled[objective])
    rec = json.loads((bundled[objective] / "training.json").read_text())
    assert lm.objective == objective and lm.input_size == (1, 28, 28)
    test = load_dataset("mnist5k", "test")
    assert lm.config["sclzoo"]["train_dataset"]["split_sha256"] == test.split_sha256
    with torch.no_grad():
        pred = torch.cat([lm.model(test.images[i : i + 250]).argmax(1) for i in range(0, len(test), 250)])
    acc = float((pred == test.labels).double().mean())
    assert len(test) == 1000
    assert acc == pytest.approx(rec["accuracy"]["torch"]["test"], abs=1e-9)
