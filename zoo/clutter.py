"""``mnist5k-clutter``: MNIST-5k digits on a larger canvas among fragments of other digits, with known evidence.

Every faithfulness metric is a proxy; on this dataset the class evidence is known, so attributions can be checked
against it (the localisation metrics, docs/protocol.md#localisation). Version 1 (:data:`VERSION`), generated
deterministically from MNIST-5k, nothing downloaded (docs/protocol.md#the-ground-truth-dataset):

- a 56 x 56 one-channel canvas of zeros; the sample's own 28 x 28 digit is pasted at a position drawn uniformly
  from the 29 x 29 valid ones;
- clutter: 6 fragments of 9 x 9 pixels, each cut at a uniformly drawn position with ink (at least 10 % of its
  pixels above 0.3) from a uniformly drawn *other* image of the same split, and pasted (per-pixel max) at a
  uniformly drawn position whose 9 x 9 square does not overlap the digit's 28 x 28 box;
- the label is the digit's label; ground truth: ``box`` (the digit's 28 x 28 box) and ``ink`` (the digit's
  pixels above 0.1).

Each sample's draws come from its own generator, seeded by (dataset seed, sample id): a sample's image depends
only on its id, the seed and which images share its split, never on the order samples are stored or generated
in. The generator draws 20 uniforms per sample, in this order: digit row, digit column, then for each fragment
its source image, its cut position and its paste position; each uniform u picks item ⌊u·k⌋ of the k valid
choices in ascending order (images by sample id, positions row-major). Everything after the draws is
vectorised over the split (a few seconds for all 5,000 samples).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["CANVAS", "DRAWS", "FRAGMENT", "INK_THRESHOLD", "MASK_KINDS", "N_FRAGMENTS", "VERSION", "ClutterSplit",
           "FragmentPool", "compose", "content_sha256", "generate_split"]

#: Generator version: bumped whenever a generated pixel, label or mask could change.
VERSION = 1
#: Side of the square canvas.
CANVAS = 56
#: Side of a clutter fragment.
FRAGMENT = 9
#: Fragments per image.
N_FRAGMENTS = 6
#: A fragment needs at least this share of its pixels above :data:`FRAGMENT_INK_LEVEL`.
FRAGMENT_INK_SHARE = 0.10
FRAGMENT_INK_LEVEL = 0.3
#: The ``ink`` mask: digit pixels above this value.
INK_THRESHOLD = 0.1
#: Ground-truth kinds, the default first.
MASK_KINDS = ("box", "ink")
#: Uniforms drawn per sample (digit row and column, then source, cut and paste per fragment).
DRAWS = 2 + 3 * N_FRAGMENTS


@dataclass(frozen=True, eq=False)
class ClutterSplit:
    """One generated split, in the order of the ``ids`` it was asked for.

    Attributes:
        images: (N, 1, 56, 56) float32 in [0, 1].
        masks: ``{"box": (N, 56, 56) bool, "ink": (N, 56, 56) bool}``.
        digit_pos: (N, 2) int64 top-left (row, column) of the digit on the canvas.
        sources: (N, 6) int64 sample ids of the images the fragments were cut from.
        cut_pos: (N, 6, 2) int64 top-left (row, column) of each fragment in its source image.
        paste_pos: (N, 6, 2) int64 top-left (row, column) of each fragment on the canvas.
    """

    images: np.ndarray
    masks: Mapping[str, np.ndarray]
    digit_pos: np.ndarray
    sources: np.ndarray
    cut_pos: np.ndarray
    paste_pos: np.ndarray


def _uniforms(seed: int, ids: np.ndarray) -> np.ndarray:
    """(N, 20) float64 uniforms in [0, 1), row i from the generator seeded by (seed, ids[i])."""
    return np.stack([np.random.default_rng([seed, int(i)]).random(DRAWS) for i in ids]) if len(ids) else \
        np.zeros((0, DRAWS))


def _pick(valid_cumsum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Position of the ⌊u·k⌋-th valid entry (0-based) of row ``rows[q]``, k = the row's number of valid entries.

    Args:
        valid_cumsum: (R, L) running count of valid entries of each row (every row has at least one).
        rows: (Q,) row of each query.
        u: (Q,) uniforms in [0, 1).

    Returns:
        (Q,) int64 positions in [0, L).
    """
    r, length = valid_cumsum.shape
    count = valid_cumsum[rows, -1]
    k = np.minimum((u * count).astype(np.int64), count - 1)  # ⌊u·k⌋ < k; the clip guards float rounding
    # One searchsorted over all rows: offset row j by j·(L + 1) so the concatenated running counts stay sorted.
    offset = np.arange(r, dtype=np.int64) * (length + 1)
    flat = (valid_cumsum.astype(np.int64) + offset[:, None]).ravel()
    return np.searchsorted(flat, k + 1 + offset[rows], side="left") - rows * length


def _inky_windows(digits: np.ndarray) -> np.ndarray:
    """(M, 20·20) bool: whether the 9 x 9 window at each top-left position of each 28 x 28 digit has ink."""
    above = (digits > FRAGMENT_INK_LEVEL).astype(np.int32)
    integral = np.zeros((len(digits), 29, 29), dtype=np.int32)
    integral[:, 1:, 1:] = above.cumsum(1).cumsum(2)
    f = FRAGMENT
    counts = integral[:, f:, f:] - integral[:, :-f, f:] - integral[:, f:, :-f] + integral[:, :-f, :-f]
    need = FRAGMENT_INK_SHARE * f * f
    return (counts >= need).reshape(len(digits), -1)


@dataclass(frozen=True, eq=False)
class FragmentPool:
    """The images clutter fragments are cut from, in ascending sample id, with their inked 9 x 9 windows.

    Attributes:
        ids: (M,) int64 sample ids, ascending.
        digits: (M, 28, 28) float32 digits in id order.
        inky_cumsum: (M, 20·20) running count, along each row, of the 9 x 9 windows (top-left positions,
            row-major) that have ink (what :func:`compose` picks windows with).
        eligible: Positions (in id order) of the images with at least one inked window.
    """

    ids: np.ndarray
    digits: np.ndarray
    inky_cumsum: np.ndarray
    eligible: np.ndarray

    @classmethod
    def build(cls, digits: np.ndarray, ids: np.ndarray) -> FragmentPool:
        """Pool of ``digits`` (N, 28, 28) with distinct sample ``ids`` (N,), given in any order.

        Raises:
            ValueError: bad shapes, repeated ids, or fewer than two images with an inked window.
        """
        n = len(ids)
        if digits.shape != (n, 28, 28) or ids.shape != (n,) or len(np.unique(ids)) != n:
            raise ValueError(f"digits must be (N, 28, 28) with N distinct ids, got {digits.shape} and {ids.shape}")
        order = np.argsort(ids, kind="stable")  # choices among images are made in ascending sample id
        inky = _inky_windows(digits[order])
        eligible = np.flatnonzero(inky.any(1))
        if len(eligible) < 2:
            raise ValueError("fewer than two images of the split have a 9 x 9 window with ink; no clutter possible")
        return cls(ids=ids[order].astype(np.int64), digits=digits[order],
                   inky_cumsum=inky.cumsum(1, dtype=np.int32), eligible=eligible)

    def rank(self, ids: np.ndarray) -> np.ndarray:
        """Position of each sample id in the pool, -1 for ids not in it."""
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1).astype(np.int64)


def generate_split(digits: np.ndarray, ids: np.ndarray, seed: int) -> ClutterSplit:
    """Generates the cluttered images of one split.

    Args:
        digits: (N, 28, 28) float32 MNIST digits in [0, 1] of the split (the fragments' only source).
        ids: (N,) distinct int64 sample ids (positions in MNIST-5k) of the digits.
        seed: The dataset seed.

    Returns:
        The split's images, masks and draws, row i for ``ids[i]``.

    Raises:
        ValueError: digits are not (N, 28, 28), ids not (N,) and distinct, or fewer than two images have a window
            with ink (a fragment needs another image to come from).
    """
    pool = FragmentPool.build(digits, ids)
    return compose(digits, pool.rank(ids), pool, _uniforms(seed, ids))


def compose(digits: np.ndarray, self_rank: np.ndarray, pool: FragmentPool, u: np.ndarray) -> ClutterSplit:
    """Places each digit on a canvas among fragments of the pool's other images, as the 20 uniforms of its row say.

    :func:`generate_split` calls it with each sample's seeded uniforms and the split as the pool; training with
    fresh clutter (docs/training.md#fresh-clutter) calls it with new uniforms for every view.

    Args:
        digits: (N, 28, 28) float32 digits in [0, 1].
        self_rank: (N,) position of each digit in ``pool`` (so it never gives itself a fragment), -1 if absent.
        pool: Where fragments come from.
        u: (N, 20) uniforms in [0, 1), in the order of the module docstring.

    Returns:
        Images, masks and draws, row i for ``digits[i]``.
    """
    n = len(digits)
    side, f, d = CANVAS, FRAGMENT, 28
    eligible = pool.eligible

    # Digit position: uniform over the 29 x 29 top-left positions that keep it on the canvas.
    span = side - d + 1
    digit_pos = np.minimum((u[:, :2] * span).astype(np.int64), span - 1)  # (N, 2)

    frag_u = u[:, 2:].reshape(n, N_FRAGMENTS, 3)  # (source, cut, paste) per fragment
    # Source: uniform over the eligible images other than the sample itself.
    own = np.searchsorted(eligible, self_rank)
    in_pool = (self_rank >= 0) & (own < len(eligible))
    is_eligible = in_pool & (eligible[np.minimum(own, len(eligible) - 1)] == self_rank)
    choices = len(eligible) - is_eligible.astype(np.int64)  # (N,)
    k = np.minimum((frag_u[:, :, 0] * choices[:, None]).astype(np.int64), choices[:, None] - 1)
    k = k + (is_eligible[:, None] & (k >= own[:, None]))  # skip the sample itself
    src_rank = eligible[k]  # (N, 6) positions in id order
    # Cut position: uniform over the source's windows with ink, row-major.
    cut = _pick(pool.inky_cumsum, src_rank.ravel(), frag_u[:, :, 1].ravel())
    cut_pos = np.stack(np.divmod(cut, d - f + 1), axis=-1).reshape(n, N_FRAGMENTS, 2)
    # Paste position: uniform over the top-left positions whose square misses the digit's box (rows or columns
    # disjoint); there are always some, since the box leaves a free band of at least 14 pixels on some side.
    starts = np.arange(side - f + 1)
    row_ok = (starts[None, :] + f <= digit_pos[:, :1]) | (starts[None, :] >= digit_pos[:, :1] + d)
    col_ok = (starts[None, :] + f <= digit_pos[:, 1:]) | (starts[None, :] >= digit_pos[:, 1:] + d)
    free = (row_ok[:, :, None] | col_ok[:, None, :]).reshape(n, -1)
    paste = _pick(free.cumsum(1, dtype=np.int32), np.repeat(np.arange(n), N_FRAGMENTS),
                  frag_u[:, :, 2].ravel())
    paste_pos = np.stack(np.divmod(paste, side - f + 1), axis=-1).reshape(n, N_FRAGMENTS, 2)

    # Paste: the digit, then the fragments by per-pixel max (one vectorised assignment per fragment slot, so
    # no index repeats within an assignment).
    rows_n = np.arange(n)[:, None, None]
    grid_d = np.arange(d)
    canvas = np.zeros((n, side, side), dtype=np.float32)
    dr = digit_pos[:, 0, None, None] + grid_d[None, :, None]
    dc = digit_pos[:, 1, None, None] + grid_d[None, None, :]
    canvas[rows_n, dr, dc] = digits
    box = np.zeros((n, side, side), dtype=bool)
    box[rows_n, dr, dc] = True
    ink = np.zeros((n, side, side), dtype=bool)
    ink[rows_n, dr, dc] = digits > INK_THRESHOLD
    src_digits = pool.digits
    grid_f = np.arange(f)
    for j in range(N_FRAGMENTS):
        sr = cut_pos[:, j, 0, None, None] + grid_f[None, :, None]
        sc = cut_pos[:, j, 1, None, None] + grid_f[None, None, :]
        fragment = src_digits[src_rank[:, j, None, None], sr, sc]  # (N, 9, 9)
        pr = paste_pos[:, j, 0, None, None] + grid_f[None, :, None]
        pc = paste_pos[:, j, 1, None, None] + grid_f[None, None, :]
        canvas[rows_n, pr, pc] = np.maximum(canvas[rows_n, pr, pc], fragment)
    return ClutterSplit(images=canvas[:, None], masks={"box": box, "ink": ink}, digit_pos=digit_pos,
                        sources=pool.ids[src_rank], cut_pos=cut_pos, paste_pos=paste_pos)


def content_sha256(name: str, seed: int, splits: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       Mapping[str, np.ndarray]]]) -> str:
    """sha256 identifying a generated dataset: name, generator version, seed, and per split (in the given order)
    its ids, pixels (float32), labels (int64) and every mask kind (bit-packed).

    Args:
        name: Dataset name.
        seed: Dataset seed.
        splits: ``{split: (ids (N,), images (N, 1, H, W), labels (N,), {kind: (N, H, W) bool})}``.
    """
    h = hashlib.sha256(f"sclzoo generated dataset\0{name}\0v{VERSION}\0seed {seed}\0".encode())
    for split, (ids, images, labels, masks) in splits.items():
        h.update(f"{split}\0".encode())
        h.update(np.asarray(images.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(images, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        for kind in sorted(masks):
            h.update(f"mask {kind}\0".encode())
            h.update(np.packbits(np.ascontiguousarray(masks[kind], dtype=bool)).tobytes())
    return h.hexdigest()
