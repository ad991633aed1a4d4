"""mnist5k-clutter, the ground-truth dataset (zoo/clutter.py; docs/protocol.md#the-ground-truth-dataset).

The generator is vectorised; these tests rebuild samples with plain loops from its recorded draws, and check
every stated invariant on all 5,000 images: the digit and its masks, fragments with ink from other images of
the same split, pasted outside the digit's box by per-pixel max.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sclzoo.errors import DatasetError
from sclzoo.zoo import clutter
from sclzoo.zoo.data import _mnist5k_arrays, load_dataset, stratified_split
from sclzoo.zoo.preprocess import DataConfig

# Golden value: a change of any generated pixel, label or mask must come with a new generator VERSION.
CLUTTER_SHA256 = "23571dae5954c824c576662679250692a243580c2cab933bb3e1d65574370a78"


@pytest.fixture(scope="module")
def splits() -> dict[str, object]:
    return {s: load_dataset("mnist5k-clutter", s) for s in ("train", "test")}


@pytest.fixture(scope="module")
def generated() -> dict[str, tuple[np.ndarray, clutter.ClutterSplit]]:
    """Both splits generated directly (ids in mnist5k's stored order) with their recorded draws."""
    x, y = _mnist5k_arrays()
    train, test = stratified_split(y, 1000, 0)
    test = test[np.random.default_rng(1).permutation(len(test))]
    return {s: (idx, clutter.generate_split(x[idx, 0], idx.astype(np.int64), 0))
            for s, idx in (("train", train), ("test", test))}


def test_splits_follow_mnist5k(splits: dict) -> None:
    for s in ("train", "test"):
        ds, plain = splits[s], load_dataset("mnist5k", s)
        assert ds.images.shape == (len(plain), 1, 56, 56) and ds.images.dtype == torch.float32
        assert torch.equal(ds.indices, plain.indices) and torch.equal(ds.labels, plain.labels)
        assert ds.masks is not None and ds.masks.shape == (len(plain), 56, 56) and ds.masks.dtype == torch.bool
        assert ds.mask_kind == "box" and list(ds.ground_truth) == ["box", "ink"]
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    assert splits["train"].split_sha256 == splits["test"].split_sha256 == CLUTTER_SHA256
    assert splits["train"].mean == splits["test"].mean
    assert splits["train"].mean[0] == pytest.approx(float(splits["train"].images.mean()), abs=1e-5)


def test_generation_is_deterministic_and_order_free(generated: dict) -> None:
    x, y = _mnist5k_arrays()
    idx, first = generated["test"]
    again = clutter.generate_split(x[idx, 0], idx.astype(np.int64), 0)
    assert np.array_equal(again.images, first.images)
    assert all(np.array_equal(again.masks[k], first.masks[k]) for k in clutter.MASK_KINDS)
    # A sample's image depends on its id and its split's members, not on the order they are given in.
    perm = np.random.default_rng(5).permutation(len(idx))
    shuffled = clutter.generate_split(x[idx[perm], 0], idx[perm].astype(np.int64), 0)
    assert np.array_equal(shuffled.images, first.images[perm])
    assert np.array_equal(shuffled.sources, first.sources[perm])
    # Another seed, other images.
    other = clutter.generate_split(x[idx, 0], idx.astype(np.int64), 1)
    assert not np.array_equal(other.images, first.images)
    digest = clutter.content_sha256("mnist5k-clutter", 0, {s: (i, g.images, y[i], g.masks)
                                                           for s, (i, g) in generated.items()})
    assert digest == CLUTTER_SHA256  # the same content as load_dataset's, and as last time


def test_digit_box_and_ink_masks(generated: dict) -> None:
    x, _ = _mnist5k_arrays()
    for idx, g in generated.values():
        n = len(idx)
        r, c = g.digit_pos[:, 0], g.digit_pos[:, 1]
        assert r.min() >= 0 and c.min() >= 0 and r.max() <= 28 and c.max() <= 28
        assert r.min() == 0 and r.max() == 28  # every position is reachable (5,000 draws over 29 values)
        box, ink = g.masks["box"], g.masks["ink"]
        assert (box.sum((1, 2)) == 28 * 28).all()
        assert not (ink & ~box).any()
        for i in range(n):
            window = (slice(r[i], r[i] + 28), slice(c[i], c[i] + 28))
            assert box[i][window].all()
            digit = x[idx[i], 0]
            # Nothing is pasted over the digit: the canvas inside the box is the digit, bit for bit.
            assert np.array_equal(g.images[i, 0][window], digit)
            assert np.array_equal(ink[i][window], digit > clutter.INK_THRESHOLD)


def test_fragments_come_from_other_images_of_the_split_and_miss_the_box(generated: dict) -> None:
    x, _ = _mnist5k_arrays()
    f = clutter.FRAGMENT
    for idx, g in generated.values():
        members = set(idx.tolist())
        assert g.sources.shape == (len(idx), clutter.N_FRAGMENTS)
        assert (g.sources != idx[:, None]).all()  # never the sample's own digit
        assert set(g.sources.ravel().tolist()) <= members  # train from train, test from test
        assert len(set(g.sources.ravel().tolist())) > 0.8 * len(members)  # spread over the split
        for i in range(len(idx)):
            r, c = g.digit_pos[i]
            for j in range(clutter.N_FRAGMENTS):
                sr, sc = g.cut_pos[i, j]
                pr, pc = g.paste_pos[i, j]
                assert 0 <= sr <= 28 - f and 0 <= sc <= 28 - f and 0 <= pr <= 56 - f and 0 <= pc <= 56 - f
                fragment = x[g.sources[i, j], 0, sr : sr + f, sc : sc + f]
                assert (fragment > clutter.FRAGMENT_INK_LEVEL).sum() >= 0.1 * f * f  # ink: >= 9 of 81 pixels
                rows_apart = pr + f <= r or pr >= r + 28
                cols_apart = pc + f <= c or pc >= c + 28
                assert rows_apart or cols_apart  # no overlap with the digit's box


def test_canvas_rebuilt_with_loops(generated: dict) -> None:
    """The vectorised paste equals a plain loop: zeros, the digit, then each fragment by per-pixel max."""
    x, _ = _mnist5k_arrays()
    f = clutter.FRAGMENT
    for idx, g in generated.values():
        for i in range(0, len(idx), 37):
            canvas = np.zeros((56, 56), dtype=np.float32)
            r, c = g.digit_pos[i]
            canvas[r : r + 28, c : c + 28] = x[idx[i], 0]
            for j in range(clutter.N_FRAGMENTS):
                sr, sc = g.cut_pos[i, j]
                pr, pc = g.paste_pos[i, j]
                frag = x[g.sources[i, j], 0, sr : sr + f, sc : sc + f]
                canvas[pr : pr + f, pc : pc + f] = np.maximum(canvas[pr : pr + f, pc : pc + f], frag)
            assert np.array_equal(canvas, g.images[i, 0]), i


def test_pick_is_the_kth_valid_entry() -> None:
    rng = np.random.default_rng(0)
    valid = rng.random((7, 30)) < 0.3
    valid[:, 5] = True  # every row has a valid entry
    rows = rng.integers(0, 7, 200)
    u = rng.random(200)
    u[:3] = [0.0, 0.999999999, np.nextafter(1.0, 0.0)]
    got = clutter._pick(valid.cumsum(1, dtype=np.int32), rows, u)
    for q in range(200):
        positions = np.flatnonzero(valid[rows[q]])
        assert got[q] == positions[int(u[q] * len(positions))]


def test_mask_choice_and_errors() -> None:
    ink = load_dataset("mnist5k-clutter", "test", mask="ink")
    assert ink.mask_kind == "ink" and torch.equal(ink.masks, ink.ground_truth["ink"])
    assert ink.with_mask("box").mask_kind == "box"
    with pytest.raises(DatasetError, match=r"no mask 'edges'; use one of box, ink"):
        load_dataset("mnist5k-clutter", "test", mask="edges")
    with pytest.raises(DatasetError, match=r"'mnist5k' has no ground-truth masks.*mnist5k-clutter"):
        load_dataset("mnist5k", "test", mask="box")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_dataset("mnist5k-clutter", "val")
    assert load_dataset("mnist5k", "test").masks is None


def test_cached_split_cannot_be_altered_by_callers() -> None:
    a = load_dataset("mnist5k-clutter", "test")
    a.images.zero_()
    a.masks.zero_()
    b = load_dataset("mnist5k-clutter", "test")
    assert float(b.images.max()) == 1.0 and bool(b.masks.any())


def test_masks_follow_the_images_through_preprocessing() -> None:
    plain = load_dataset("mnist5k-clutter", "test")
    same = load_dataset("mnist5k-clutter", "test", prep=DataConfig(input_size=(1, 56, 56)))
    assert torch.equal(same.masks, plain.masks) and torch.equal(same.images, plain.images)
    half = load_dataset("mnist5k-clutter", "test", prep=DataConfig(input_size=(3, 28, 28)), mask="ink")
    assert half.images.shape == (1000, 3, 28, 28) and half.masks.shape == (1000, 28, 28)
    assert half.mask_kind == "ink" and torch.equal(half.masks, half.ground_truth["ink"])
    box = half.ground_truth["box"]
    # A 28 x 28 box on 56 x 56 is about a 14 x 14 box at half size.
    assert ((box.sum((1, 2)) - 196).abs() <= 2 * 14 + 1).all()


def test_fresh_clutter_keeps_the_digit_and_redraws_everything_else() -> None:
    """Training with fresh clutter (zoo/train.py's _FreshClutter): every call puts each training digit on a new
    canvas, among fragments of other training images only; draws come from the generator passed in."""
    from sclzoo.zoo.train import _FreshClutter

    x, _ = _mnist5k_arrays()
    train = load_dataset("mnist5k-clutter", "train")
    tr_idx = np.arange(0, len(train), 2)  # the held-out half must give no fragment
    fresh = _FreshClutter(train, tr_idx)
    ids = train.indices.numpy()[tr_idx]
    assert np.array_equal(fresh.pool.ids, np.sort(ids))
    rows = torch.arange(0, 40)
    a = fresh(rows, torch.Generator().manual_seed(0))
    b = fresh(rows, torch.Generator().manual_seed(1))
    assert a.shape == (40, 1, 56, 56) and a.dtype == torch.float32
    assert torch.equal(a, fresh(rows, torch.Generator().manual_seed(0)))  # seeded
    assert not torch.equal(a, b)
    # The draws behind one call, rebuilt with compose: the digit whole in its box, fragments from the pool only.
    u = torch.rand(40, clutter.DRAWS, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    g = clutter.compose(fresh.digits[:40], fresh.rank[:40], fresh.pool, u)
    assert np.array_equal(g.images, a.numpy())
    for i in range(40):
        r, c = g.digit_pos[i]
        assert np.array_equal(g.images[i, 0, r : r + 28, c : c + 28], x[ids[i], 0])
    assert set(g.sources.ravel().tolist()) <= set(ids.tolist())
    assert (g.sources != ids[:40, None]).all()
    # Two views share the digit and (almost surely) nothing else: different places and fragments.
    u2 = torch.rand(40, clutter.DRAWS, generator=torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
    g2 = clutter.compose(fresh.digits[:40], fresh.rank[:40], fresh.pool, u2)
    assert (g.digit_pos != g2.digit_pos).any(1).mean() > 0.9
    assert (g.sources != g2.sources).all(1).mean() > 0.9


def test_compose_with_a_digit_outside_the_pool() -> None:
    x, _ = _mnist5k_arrays()
    pool = clutter.FragmentPool.build(x[:50, 0], np.arange(50, dtype=np.int64))
    assert pool.rank(np.array([3, 49, 50, 1000])).tolist() == [3, 49, -1, -1]
    u = np.random.default_rng(0).random((5, 20))
    g = clutter.compose(x[100:105, 0], np.full(5, -1), pool, u)
    assert set(g.sources.ravel().tolist()) <= set(range(50))
    with pytest.raises(ValueError, match="distinct ids"):
        clutter.FragmentPool.build(x[:3, 0], np.array([1, 1, 2]))
