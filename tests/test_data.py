"""Datasets (fixed, hashed stratified splits) and batched augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sclzoo.errors import DatasetError, UnknownNameError
from sclzoo.zoo.augment import AugmentConfig, augment_batch
from sclzoo.zoo.data import DATASETS, load_dataset, stratified_split

# Golden value: changing the mnist5k split silently would invalidate every zoo checkpoint and result.
MNIST5K_SPLIT_SHA256 = "904d13d31758fce724223b4c54fb5d8aa6e1355668fa0f7b5a71794651291169"
DIGITS_SPLIT_SHA256 = "abb0e5b8199bd414c0b472c27e4e4247585394796e0558ed305822af4d27c441"


def test_mnist5k_split() -> None:
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.labels.bincount(minlength=10).tolist() == [400] * 10
    assert test.labels.bincount(minlength=10).tolist() == [100] * 10
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert sorted(train.indices.tolist() + test.indices.tolist()) == list(range(5000))
    for ds in (train, test):
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
        assert float(ds.images.max()) == 1.0  # scaled by 255, not left in [0, 255] or standardised
    assert train.split_sha256 == test.split_sha256 == MNIST5K_SPLIT_SHA256
    assert load_dataset("mnist5k", "test").split_sha256 == MNIST5K_SPLIT_SHA256  # stable across calls
    assert train.label_names == tuple(str(i) for i in range(10)) and train.num_classes == 10
    assert train.input_size == (1, 28, 28)
    # mean/std are the train split's, the same for both splits (the model's first layer uses them).
    assert train.mean == test.mean and train.std == test.std
    assert train.mean[0] == pytest.approx(float(train.images.mean()), abs=1e-5)
    assert train.std[0] == pytest.approx(float(train.images.std(unbiased=False)), abs=1e-5)


def test_digits_split() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1497, 300)
    assert train.input_size == (1, 8, 8) and test.images.shape == (300, 1, 8, 8)
    assert test.labels.bincount(minlength=10).tolist() == [30] * 10
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) == 1.0
    assert train.split_sha256 == test.split_sha256 == DIGITS_SPLIT_SHA256
    assert train.split_sha256 != MNIST5K_SPLIT_SHA256


def test_dataset_registry_errors() -> None:
    assert {"mnist5k", "digits"} <= set(DATASETS.names())
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'mnist5K'\. Did you mean 'mnist5k'"):
        load_dataset("mnist5K", "train")
    with pytest.raises(UnknownNameError, match="sclzoo ls datasets"):
        load_dataset("imagenet-xyz", "train")
    with pytest.raises(DatasetError, match=r"unknown split 'validation'.*train, test"):
        load_dataset("digits", "validation")


def test_stratified_split_properties() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, test = stratified_split(labels, 10, seed=3)
    assert len(test) == 10 and len(train) == 90
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, no duplicates
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.union1d(train, test), np.arange(100))
    # The test split is divided evenly between classes, the remainder going to the first classes.
    assert np.bincount(labels[test], minlength=4).tolist() == [3, 3, 2, 2]
    # Seeded: the same seed gives the same split, another seed another one.
    again = stratified_split(labels, 10, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 10, seed=4)[1], test)
    assert stratified_split(labels, 0, seed=0)[1].size == 0


def _images(n: int = 6, c: int = 1, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))


def test_identity_augmentation_returns_input() -> None:
    x = _images()
    cfg = AugmentConfig()
    assert cfg.is_identity
    assert augment_batch(x, cfg, torch.Generator().manual_seed(1)) is x
    # crop_ratio / blur_sigma / jitter strength alone do nothing while their probabilities are 0.
    assert AugmentConfig(crop_ratio=(1.0, 1.0), blur_sigma=(1.0, 1.0), color_jitter=0.9).is_identity


def test_non_trivial_identity_transform_is_exact() -> None:
    # A crop of scale 1 with ratio 1 and no rotation/translation is the identity affine map: grid_sample with
    # align_corners=False then reproduces every pixel.
    x = _images()
    cfg = AugmentConfig(crop_ratio=(1.0, 1.0), rotate_deg=0.0, translate_px=0.0, blur_p=0.0, grayscale_p=0.5)
    assert not cfg.is_identity
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)  # grayscale only touches colour images


def test_unit_crop_scale_and_ratio_disable_the_crop() -> None:
    x = _images()
    # A blur of σ ≈ 0 is the identity; the only other transform is the crop, disabled by scale and ratio (1, 1).
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), blur_p=1.0, blur_sigma=(1e-3, 1e-3))
    assert torch.allclose(augment_batch(x, cfg, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_unit_crop_scale_keeps_the_aspect_jitter() -> None:
    # Documented: with crop_scale (1, 1) the default crop_ratio (3/4, 4/3) still stretches one axis (the bundled
    # probe recipes were trained that way).
    x = _images()
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), blur_p=1.0, blur_sigma=(1e-3, 1e-3))
    assert not torch.allclose(augment_batch(x, cfg, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_augmentation_is_seeded() -> None:
    x = _images(8, 3)
    cfg = AugmentConfig(crop_scale=(0.3, 1.0), rotate_deg=20, translate_px=2, hflip=True, blur_p=0.5,
                        color_jitter_p=0.8, grayscale_p=0.2)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(7))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(7))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.isfinite(a).all()
    assert float(a.min()) >= -1e-6 and float(a.max()) <= 1 + 1e-6
    assert not torch.equal(a, x)
    assert torch.equal(x, _images(8, 3))  # the input is not mutated


def test_each_image_gets_its_own_draw() -> None:
    x = _images(1).expand(8, 1, 16, 16).contiguous()
    out = augment_batch(x, AugmentConfig(rotate_deg=30, translate_px=3), torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_blur_keeps_the_mean() -> None:
    # Smooth content away from the border: a normalised kernel with reflect padding moves mass only locally.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
    blob = torch.exp(-(xx**2 + yy**2) / 0.2)
    x = torch.stack([blob, blob.roll(3, 1), blob.roll(-2, 0)])[:, None]  # (3, 1, 28, 28)
    # crop_ratio (1, 1): with the default ratio range a "disabled" crop still stretches (see the xfail below).
    cfg = AugmentConfig(blur_p=1.0, blur_sigma=(1.0, 2.0), crop_ratio=(1.0, 1.0))
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0.02)
    assert (out.amax(dim=(1, 2, 3)) < x.amax(dim=(1, 2, 3))).all()  # it did blur: the peak drops


def test_augment_config_dict_round_trip() -> None:
    cfg = AugmentConfig(crop_scale=(0.2, 1.0), rotate_deg=20.0, blur_p=0.5)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['rotation'\] in \[augment\]"):
        AugmentConfig.from_dict({"rotation": 10})
