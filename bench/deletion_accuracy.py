"""How far a model is *in domain* for grid deletion: its accuracy on the images ``single_deletion`` feeds it.

``single_deletion`` (docs/protocol.md, "In-domain deletion") sets one cell of a g x g grid to a value at a time and
reads the logit drops; the drops measure the attribution only if the model still works on such images. A result
records ``in_domain`` from the model's training record (trained with patch deletion of that grid and value); this
script measures what that record promises, for any model sclzoo can load, on its dataset's test split:

- **clean**: accuracy on the unmodified images;
- **one cell**: accuracy with one cell deleted, for every cell in turn (the images ``single_deletion`` feeds):
  the mean over cells and the worst cell;
- **k cells**: accuracy with k ~ U{1, ..., g² − 1} uniformly chosen cells deleted in every image (the deletion
  training draws, ``zoo/augment.py`` ``delete_patches`` with p = 1; seeded, so repeatable).

Examples::

    .venv/bin/python bench/deletion_accuracy.py zoo/models/resnet8_cifar.ce_mnist5k \\
        zoo/models/resnet8_cifar.ce_mnist5k_indomain
    .venv/bin/python bench/deletion_accuracy.py zoo/models/resnet8_cifar.ce_mnist5k-clutter --grid 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Examples:\n" + __doc__.split("Examples::")[1])
    parser.add_argument("models", nargs="+", help="model references (a repo folder, a Hub id, as for evaluate)")
    parser.add_argument("--dataset", default=None, help="dataset id (default: each model's own)")
    parser.add_argument("--grid", type=int, default=4, help="g of the g x g grid (default 4, single_deletion's)")
    parser.add_argument("--value", type=float, default=0.0, help="deletion value in pixel space (default 0)")
    parser.add_argument("--n", type=int, default=None, help="first N test images (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-cell draws (default 0)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def measure(ref: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from sclzoo.deletion import PatchDeletionConfig
    from sclzoo.errors import ConfigError
    from sclzoo.zoo.augment import delete_patches, grid_cells
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.hub import load_model, resolve_model

    loaded = load_model(resolve_model(ref))
    model = loaded.model.eval()
    own = loaded.config.get("sclzoo", {}).get("train_dataset", {}).get("id")
    name = args.dataset or own
    if not name:
        raise ConfigError(f"{ref!r} names no training dataset in its config (sclzoo.train_dataset); pass --dataset")
    data = load_dataset(str(name), "test", prep=loaded.data_config)
    x, y = data.images, data.labels
    if args.n is not None:
        x, y = x[: args.n], y[: args.n]
    _, _, h, w = x.shape
    cell = grid_cells(h, w, args.grid)
    value = torch.tensor(args.value, dtype=x.dtype)

    def accuracy(images: torch.Tensor) -> float:
        with torch.no_grad():
            pred = torch.cat([model(images[i : i + args.batch_size]).argmax(1)
                              for i in range(0, len(images), args.batch_size)])
        return float((pred == y).float().mean())

    per_cell = [accuracy(torch.where((cell == c)[None, None], value, x)) for c in range(args.grid ** 2)]
    gen = torch.Generator().manual_seed(args.seed)
    k_cells = delete_patches(x, PatchDeletionConfig(grid=args.grid, value=args.value, p=1.0), gen)
    record = loaded.config.get("sclzoo", {}).get("patch_deletion")
    return {"model": ref, "dataset": str(name), "n": len(y), "grid": args.grid, "value": args.value,
            "trained_with": record, "clean": accuracy(x), "one_cell_mean": sum(per_cell) / len(per_cell),
            "one_cell_worst": min(per_cell), "one_cell": per_cell, "k_cells": accuracy(k_cells)}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from sclzoo.threads import configure

    configure(args.threads)
    rows = [measure(ref, args) for ref in args.models]
    print(f"accuracy on the test split with cells of a {args.grid} x {args.grid} grid set to {args.value:g}")
    print(f"{'model':<52} {'trained with':<16} {'clean':>7} {'1 cell':>7} {'worst':>7} {'k cells':>8}")
    for r in rows:
        pd = r["trained_with"]
        trained = f"p {pd['p']:g}, g {pd['grid']}" if isinstance(pd, dict) else "no deletion"
        print(f"{r['model'][-52:]:<52} {trained:<16} {r['clean']:>7.1%} {r['one_cell_mean']:>7.1%} "
              f"{r['one_cell_worst']:>7.1%} {r['k_cells']:>8.1%}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
