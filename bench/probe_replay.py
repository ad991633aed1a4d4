"""How much of a contrastive model's accuracy its linear probe leaves on the table.

A contrastive model's classifier is a linear probe trained by SGD on the frozen encoder (docs/training.md,
"Linear probe"). This script takes a trained model and, on its own training split and with its own recipe, asks
what other linear heads on the same frozen features reach on the test split:

- **trained probe**: the model as trained (its test accuracy);
- **replay, raw**: the probe stage run again on the features of ``--draws`` augmented draws of the training views,
  made as the recipe makes them (``[probe.augment]``, fresh clutter, patch deletion), with the recipe's SGD, batch
  size, learning-rate schedule and epochs (epoch e uses draw e mod draws);
- **replay, standardised**: the same on features standardised by the clean training images' mean and std, as
  ``[probe] standardize = true`` does (``zoo/train.py``, ``feature_stats``; docs/training.md#standardised-probe);
- **logistic regression**: scikit-learn's L2-regularised logistic regression (C 1) on standardised features, fitted
  on the clean training images and on the augmented draws.

A replay of the plain probe that lands near the trained probe says the replay is faithful; the gap between the
standardised replay (or the logistic regression) and the trained probe is what the probe's optimisation costs.

Each MODEL is an exported repo folder (``training.json`` + ``model.safetensors``) or a ``sclzoo train --out``
folder (``record.json`` + ``model.safetensors``); the architecture is rebuilt from the recorded recipe.

Examples::

    .venv/bin/python bench/probe_replay.py zoo/models/resnet8_cifar.simclr_mnist5k \\
        zoo/models/resnet8_cifar.simclr_mnist5k_indomain
    .venv/bin/python bench/probe_replay.py zoo/models/resnet8_cifar.triplet_mnist5k-clutter --draws 10 --json out.json
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
    parser.add_argument("models", nargs="+", help="repo folders or `sclzoo train --out` folders of contrastive models")
    parser.add_argument("--draws", type=int, default=10, help="augmented draws of the training views (default 10)")
    parser.add_argument("--epochs", type=int, default=None, help="replay epochs (default: the recipe's probe epochs)")
    parser.add_argument("--batch-size", type=int, default=500, help="images per encoder pass")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def _load(folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, recipe, record) of a trained folder; only JSON and safetensors are read."""
    import timm
    from safetensors.torch import load_file

    import sclzoo  # noqa: F401 - registers the zoo architectures with timm
    from sclzoo.errors import ConfigError
    from sclzoo.zoo.recipe import Recipe

    rec_path = next((folder / n for n in ("training.json", "record.json") if (folder / n).is_file()), None)
    weights = folder / "model.safetensors"
    if rec_path is None or not weights.is_file():
        raise ConfigError(f"{folder} has no training.json/record.json and model.safetensors; pass an exported repo "
                          "folder or a `sclzoo train --out` folder")
    record = json.loads(rec_path.read_text())
    recipe = Recipe.from_dict(record["recipe"], f"{rec_path}'s recipe")
    if record.get("head") != "linear_probe":
        raise ConfigError(f"{folder} is not a contrastive model with a linear probe (head {record.get('head')!r})")
    ds = record["dataset"]
    model = timm.create_model(recipe.arch, in_chans=int(record["input_size"][0]), num_classes=len(record["label_names"]),
                              norm_mean=ds["mean"], norm_std=ds["std"], **recipe.model_args)
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), recipe, record


def measure(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from sclzoo.zoo.augment import augment_batch, delete_patches
    from sclzoo.zoo.data import load_dataset, stratified_split
    from sclzoo.zoo.models import encode
    from sclzoo.zoo.train import _batches, _FreshClutter, _stage_seed, feature_stats, lr_at

    model, recipe, record = _load(folder)
    full, test = load_dataset(recipe.dataset, "train"), load_dataset(recipe.dataset, "test")
    tr_idx, _ = stratified_split(full.labels.numpy(), recipe.val_size, recipe.seed)
    x, y = full.images[tr_idx], full.labels[tr_idx]
    fresh = _FreshClutter(full, tr_idx) if recipe.fresh_clutter else None

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([encode(model, images[i : i + args.batch_size].contiguous())
                              for i in range(0, len(images), args.batch_size)])

    every = torch.arange(len(tr_idx))
    draws = []
    for d in range(args.draws):
        gen = torch.Generator().manual_seed(_stage_seed(recipe.seed, "probe-replay", d))
        v = fresh(every, gen) if fresh is not None else x
        v = augment_batch(v, recipe.probe.augment, gen)
        if recipe.patch_deletion is not None:
            v = delete_patches(v, recipe.patch_deletion, gen)
        draws.append(features(v))
    f_clean, f_test = features(x), features(test.images)
    mean, std, _ = feature_stats(model, x, args.batch_size)

    def test_acc(head: Any, f: torch.Tensor) -> float:
        with torch.no_grad():
            return float((head(f).argmax(1) == test.labels).float().mean())

    cfg = recipe.probe.optim
    epochs = args.epochs or cfg.epochs
    out: dict[str, Any] = {"model": str(folder), "recipe": recipe.name, "seed": recipe.seed, "draws": args.draws,
                           "trained_probe": test_acc(model, test.images)}
    for variant in ("raw", "standardised"):
        torch.manual_seed(recipe.seed)
        head = torch.nn.Linear(f_clean.shape[1], full.num_classes)
        opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        steps_per_epoch = max(1, len(y) // cfg.batch_size)
        total, step = steps_per_epoch * epochs, 0
        for epoch in range(epochs):
            f = draws[epoch % args.draws]
            if variant == "standardised":
                f = (f - mean) / std
            for idx in _batches(len(y), cfg.batch_size, torch.Generator().manual_seed(_stage_seed(recipe.seed,
                                                                                                   "probe", epoch))):
                for g in opt.param_groups:
                    g["lr"] = lr_at(cfg, step, total, steps_per_epoch)
                loss = torch.nn.functional.cross_entropy(head(f[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        out[f"replay_{variant}"] = test_acc(head, f_test if variant == "raw" else (f_test - mean) / std)

    def logistic(f: torch.Tensor, labels: torch.Tensor) -> float:
        mu, sd = f.mean(0), f.std(0).clamp_min(1e-6)
        clf = LogisticRegression(max_iter=3000, C=1.0).fit(((f - mu) / sd).numpy(), labels.numpy())
        return float((clf.predict(((f_test - mu) / sd).numpy()) == test.labels.numpy()).mean())

    out["logistic_clean"] = logistic(f_clean, y)
    out["logistic_views"] = logistic(torch.cat(draws), y.repeat(args.draws))
    out["record_test_accuracy"] = record["accuracy"]["torch"]["test"]
    assert np.isfinite([out[k] for k in ("replay_raw", "replay_standardised")]).all()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from sclzoo.threads import configure

    configure(args.threads)
    rows = [measure(Path(m), args) for m in args.models]
    print(f"test accuracy of linear heads on each model's frozen features ({args.draws} draws of the training views)")
    print(f"{'model':<48} {'trained':>8} {'replay':>8} {'std':>8} {'LR clean':>9} {'LR views':>9}")
    for r in rows:
        print(f"{r['model'][-48:]:<48} {r['trained_probe']:>8.1%} {r['replay_raw']:>8.1%} "
              f"{r['replay_standardised']:>8.1%} {r['logistic_clean']:>9.1%} {r['logistic_views']:>9.1%}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
