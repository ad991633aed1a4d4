"""`imagefolder:<path>` datasets from real PNG files, and clear errors for absent torchvision datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sclzoo.errors import DatasetError
from sclzoo.zoo.data import load_dataset
from sclzoo.zoo.recipe import Recipe
from sclzoo.zoo.train import train


def _write_pngs(root: Path, per_class: int = 6, size: int = 12) -> None:
    digits = load_dataset("digits", "train")
    for label in (0, 1, 2):
        d = root / f"class_{label}"
        d.mkdir(parents=True)
        idx = np.flatnonzero(digits.labels.numpy() == label)[:per_class]
        for i in idx:
            arr = (digits.images[i, 0].numpy() * 255).astype(np.uint8)
            Image.fromarray(arr).resize((size, size)).convert("RGB").save(d / f"{i}.png")


def test_flat_folder_is_split_and_read_as_rgb(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "flat")
    tr = load_dataset(f"imagefolder:{tmp_path / 'flat'}", "train")
    te = load_dataset(f"imagefolder:{tmp_path / 'flat'}", "test")
    assert tr.images.shape[1:] == (3, 12, 12) and len(tr) + len(te) == 18
    assert te.label_names == ("class_0", "class_1", "class_2") and set(te.labels.tolist()) == {0, 1, 2}
    assert 0.0 <= float(tr.images.min()) and float(tr.images.max()) <= 1.0
    assert tr.split_sha256 == te.split_sha256
    assert not set(tr.indices.tolist()) & set(te.indices.tolist())


def test_train_test_layout_and_a_training_step(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "tt" / "train")
    _write_pngs(tmp_path / "tt" / "test", per_class=2)
    name = f"imagefolder:{tmp_path / 'tt'}"
    assert len(load_dataset(name, "test")) == 6
    recipe = Recipe.from_dict({"name": "t", "arch": "test_resnet_cifar", "dataset": name, "objective": "ce",
                               "val_size": 0, "optim": {"epochs": 1, "batch_size": 6}})
    out = train(recipe, tmp_path / "work", max_steps=1, progress=False)
    assert out.record["dataset"]["n_train"] == 18 and 0.0 <= out.record["accuracy"]["torch"]["test"] <= 1.0


def test_bad_folders_name_the_file(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "mixed")
    Image.new("RGB", (20, 20)).save(tmp_path / "mixed" / "class_0" / "zz_big.png")
    with pytest.raises(DatasetError, match=r"zz_big\.png.*resize"):
        load_dataset(f"imagefolder:{tmp_path / 'mixed'}", "train")
    _write_pngs(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "class_1" / "zz_bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"zz_bad\.png"):
        load_dataset(f"imagefolder:{tmp_path / 'corrupt'}", "train")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", "train")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_absent_torchvision_dataset_names_data_dir(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCLZOO_DOWNLOAD", raising=False)
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset(name, "train", str(tmp_path))
