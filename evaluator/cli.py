"""The ``sclzoo`` command line. Thin: it parses options, calls the library, prints, and maps errors to one line.

Exit codes: 0 ok, 1 error (one line on stderr naming the bad value and the fix), 2 usage error.
Set ``SCLZOO_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from sclzoo.errors import (
    ConfigError,
    DatasetError,
    HubError,
    ModelLoadError,
    ModelNotFoundError,
    ResultError,
    SclzooError,
    UnknownNameError,
)

# One table maps error types to the label the user sees; messages themselves say what to do next.
ERROR_LABELS: list[tuple[type[BaseException], str]] = [
    (UnknownNameError, "unknown name"),
    (ModelNotFoundError, "model not found"),
    (ModelLoadError, "cannot load model"),
    (HubError, "hub unreachable"),
    (DatasetError, "dataset error"),
    (ResultError, "result error"),
    (ConfigError, "invalid configuration"),
    (SclzooError, "error"),
]

EPILOG_MAIN = """\b
Examples:
  sclzoo ls models                         # the zoo: aliases, objectives, accuracy
  sclzoo evaluate --model supcon-resnet8-mnist --n-samples 64
  sclzoo evaluate --model org/name --revision v1 --preset standard
  sclzoo leaderboard results/ --out leaderboard/
  sclzoo leaderboard-update --dry-run          # registry models without a result
  sclzoo meta-evaluate --model ce-resnet8-mnist   # how far each metric can be trusted on a model
  sclzoo train --config zoo/recipes/resnet8_cifar.ce_mnist5k.toml --export out/ce

Set SCLZOO_DEBUG=1 to see tracebacks.
"""


def _batch_size(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r} is not a positive integer or 'auto'", param_hint="--batch-size")
    return n


def _numbers(value: str, option: str, kind: type, count: int | None = None) -> list[Any]:
    try:
        out = [kind(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or (count is not None and len(out) != count):
        want = f"{count} comma-separated numbers" if count else "comma-separated numbers"
        raise click.BadParameter(f"{value!r} is not {want}", param_hint=option)
    return out


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group(epilog=EPILOG_MAIN, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="sclzoo")
def cli() -> None:
    """sclzoo: does the way a classifier is trained change how good its explanations are?

    Train matched CE / SupCon / SimCLR checkpoints, package them as Hub repos, and score their feature
    attributions (captum) with faithfulness, complexity and continuity metrics.
    """


# ----------------------------------------------------------------------------------------------------------- ls
@cli.command("ls", epilog="""\b
Examples:
  sclzoo ls models
  sclzoo ls metrics
  sclzoo ls methods --json
""")
@click.argument("what", type=click.Choice(["models", "objectives", "methods", "metrics", "datasets",
                                           "architectures"]), default="models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls_cmd(what: str, as_json: bool) -> None:
    """List a registry: models, objectives, methods, metrics, datasets or architectures."""
    rows = _registry_rows(what)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(rows)


def _registry_rows(what: str) -> list[dict[str, Any]]:
    from sclzoo.evaluator.listing import rows  # stored rows: no torch import (evaluator/listing.py)

    return rows(what)


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    click.echo("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols).rstrip())


# -------------------------------------------------------------------------------------------------------- train
@cli.command("train", epilog="""\b
Examples:
  sclzoo train --config zoo/recipes/resnet8_cifar.supcon_mnist5k.toml --export zoo/models/resnet8_cifar.supcon_mnist5k
  sclzoo train --config zoo/recipes/resnet8_cifar.ce_mnist5k.toml --epochs 1 --out /tmp/ck   # quick run
  sclzoo train --config RECIPE --out /tmp/ck --resume                                        # continue
""")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Recipe TOML file (zoo/recipes/*.toml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint folder (epoch checkpoints for --resume, then the trained weights).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Also export the zoo repo (config, safetensors, ONNX, card) into this folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from --out's last epoch checkpoint.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the recipe's epochs.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop each stage after N steps.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--data-dir", default=None, help="Where torchvision datasets live.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --export folder.")
def train_cmd(config_path: str, out_dir: str | None, export_dir: str | None, resume: bool, epochs: int | None,
              max_steps: int | None, device: str, data_dir: str | None, overwrite: bool) -> None:
    """Train one zoo checkpoint from a recipe file."""
    from sclzoo.zoo.recipe import load_recipe
    from sclzoo.zoo.train import save_checkpoint, train

    recipe = load_recipe(config_path)
    ck = Path(out_dir) if out_dir else Path("checkpoints") / recipe.name
    if export_dir and Path(export_dir).exists() and not overwrite:
        raise ConfigError(f"export folder {export_dir!r} already exists; pass --overwrite or another --export")
    from sclzoo.zoo.distributed import shutdown

    out = train(recipe, ck, resume=resume, max_steps=max_steps, epochs=epochs, device=device, data_dir=data_dir)
    try:
        if not out.dist.is_main:  # torchrun: rank 0 writes and reports
            return
        save_checkpoint(out, ck)
        acc = out.record["accuracy"]["torch"]
        click.echo(f"trained {recipe.name}: test accuracy {acc['test']:.4f} (train {acc['train']:.4f}) in "
                   f"{out.record['wall_time_s']:.0f} s on {out.dist.world_size} process(es) → {ck}")
        if export_dir:
            from sclzoo.zoo.export import export_repo

            repo = export_repo(ck, export_dir, overwrite=overwrite)
            click.echo(f"exported zoo repo → {repo}")
    finally:
        shutdown(out.dist)


# ------------------------------------------------------------------------------------------------------- export
@cli.command("export", epilog="""\b
Examples:
  sclzoo export checkpoints/resnet8_cifar.ce_mnist5k --out zoo/models/resnet8_cifar.ce_mnist5k --overwrite
""")
@click.argument("checkpoint", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Zoo repo folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@click.option("--no-onnx", is_flag=True, help="Skip the ONNX export and its parity check.")
def export_cmd(checkpoint: str, out_dir: str, overwrite: bool, no_onnx: bool) -> None:
    """Package a trained checkpoint as a zoo repo (config.json, safetensors, ONNX, training.json, card)."""
    from sclzoo.zoo.export import export_repo

    repo = export_repo(checkpoint, out_dir, overwrite=overwrite, onnx=not no_onnx)
    click.echo(f"exported zoo repo → {repo}")


# ----------------------------------------------------------------------------------------------------- evaluate
@cli.command("evaluate", epilog="""\b
Examples:
  sclzoo evaluate --model supcon-resnet8-mnist --n-samples 64
  sclzoo evaluate --model zoo/models/resnet8_cifar.ce_mnist5k --methods saliency,gradcam --metrics sparseness
  sclzoo evaluate --model org/name --revision v1 --preset quick --device cuda
  sclzoo evaluate --model simclr-resnet8-mnist --dry-run        # print config and cost, run nothing
  sclzoo evaluate --model supcon-resnet8-mnist --resume         # continue an interrupted run
  sclzoo evaluate --model ce-resnet8-mnist --selection stratified --n-samples 100
  sclzoo evaluate --model MODEL --dataset mnist5k-clutter --mask ink --metrics pointing_game,localisation_auc
  sclzoo evaluate --model user/supcon-resnet18 --dataset imagefolder:my_images/     # a timm repo, your images
  sclzoo evaluate --model timm:resnet18 --weights w.safetensors --num-classes 10 --dataset imagefolder:imgs/
  sclzoo evaluate --model my_repo/ --dataset imagefolder:imagenet_subset/ --class-map subset.json --target label
  torchrun --nproc_per_node=2 -m sclzoo evaluate --model supcon-resnet8-mnist   # shard over 2 processes
""")
@click.option("--model", "model_ref", required=True,
              help="Zoo alias, model folder (zoo or timm repo), local-dir:PATH, hf-hub:org/name, org/name, or "
                   "timm:ARCH with --weights and --num-classes.")
@click.option("--revision", default=None, help="Hub branch, tag or commit (default main).")
@click.option("--weights", default=None, type=click.Path(dir_okay=False),
              help="For --model timm:ARCH: the safetensors weights file.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="For --model timm:ARCH: classes of the weights' classifier.")
@click.option("--in-chans", type=click.Choice(["1", "3"]), default=None,
              help="For --model timm:ARCH: input channels (default: the architecture's).")
@click.option("--model-id", default=None, help="For --model timm:ARCH: the org/name results are filed under.")
@click.option("--class-map", type=click.Path(dir_okay=False), default=None,
              help="JSON/TOML file mapping dataset class (folder) names to the model's class indices, e.g. for an "
                   "ImageNet subset.")
@click.option("--input-size", default=None, metavar="C,H,W",
              help="Override the model's input size (default: its pretrained_cfg).")
@click.option("--interpolation", default=None, help="Override the resize interpolation (bilinear, bicubic, ...).")
@click.option("--crop-pct", type=float, default=None, help="Override the centre-crop fraction.")
@click.option("--crop-mode", type=click.Choice(["center", "squash", "border"]), default=None,
              help="Override the crop mode.")
@click.option("--mean", "norm_mean", default=None, metavar="M[,M,M]", help="Override the normalisation mean.")
@click.option("--std", "norm_std", default=None, metavar="S[,S,S]", help="Override the normalisation std.")
@click.option("--preset", type=click.Choice(["quick", "standard", "paper"]), default=None,
              help="Number of images, methods and metrics (default: standard).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Evaluation config TOML (keys of EvalConfig).")
@click.option("--n-samples", type=click.IntRange(min=1), default=None, help="Number of images to explain.")
@click.option("--selection", type=click.Choice(["first", "stratified"]), default=None,
              help="Which images: the first N of the split (default) or a seeded class-stratified subset.")
@click.option("--methods", default=None, help="Comma-separated attribution methods (sclzoo ls methods).")
@click.option("--metrics", default=None, help="Comma-separated metrics (sclzoo ls metrics).")
@click.option("--dataset", default=None,
              help="Dataset id (sclzoo ls datasets) or imagefolder:PATH (your own images); default: the model's "
                   "own.")
@click.option("--split", default=None,
              help="Split to explain: test (default), train; for image folders val, or all (the whole folder, "
                   "the default for a folder without train/val/test).")
@click.option("--target", type=click.Choice(["predicted", "label"]), default=None,
              help="Explain the predicted class (default) or the true label.")
@click.option("--mask", default=None, metavar="KIND",
              help="Ground-truth mask the localisation metrics use: box (default) or ink for mnist5k-clutter.")
@click.option("--seed", type=int, default=None, help="Seed of all random draws (default 0).")
@click.option("--batch-size", default=None, metavar="N|auto",
              help="Images per batch (default 64); auto: 64 on CPU, sized from free GPU memory on CUDA.")
@click.option("--device", default=None, help="auto (default), cpu or cuda.")
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default=None,
              help="torch (default): everything in PyTorch, as loaded. onnx: the accuracy and the perturbation "
                   "metrics' forwards run the repo's onnx/model.onnx in onnxruntime, and on a CPU explanations use "
                   "PyTorch's channels_last layout (about 1.5x faster on a CPU; scores equal torch's to 1e-5).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="fp32 (default), or bf16/fp16: model forwards and explanations under autocast, attributions "
                   "and scores accumulated in fp32 (fp16 on CUDA only; part of the config hash when not fp32).")
@click.option("--out", "out_dir", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results root folder.")
@click.option("--force", is_flag=True,
              help="Recompute even if this (model commit, config) has a result; discard a checkpoint.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint (<hash>.partial/).")
@click.option("--dry-run", is_flag=True,
              help="Resolve the model, data and device; print the config, its hash, the forward/explanation counts "
                   "and an estimated wall time (from timing a few images); run nothing else.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: the cores available to this process; SCLZOO_THREADS, OMP_NUM_THREADS).")
def evaluate_cmd(model_ref: str, revision: str | None, weights: str | None, num_classes: int | None,
                 in_chans: str | None, model_id: str | None, class_map: str | None, input_size: str | None,
                 interpolation: str | None, crop_pct: float | None, crop_mode: str | None, norm_mean: str | None,
                 norm_std: str | None, preset: str | None, config_file: str | None,
                 n_samples: int | None, selection: str | None, methods: str | None, metrics: str | None,
                 dataset: str | None, split: str | None, target: str | None, mask: str | None, seed: int | None,
                 batch_size: str | None, device: str | None, runtime: str | None, precision: str | None,
                 out_dir: str, force: bool, resume: bool, dry_run: bool, quiet: bool, threads: int | None) -> None:
    """Explain a model's predictions and score the explanations; write a result JSON.

    The model may be a bundled zoo model, a zoo or timm repo (folder or Hub), or a timm architecture with a
    safetensors file; images are converted and resized to the model's input as its data config says.
    """
    from sclzoo.evaluator.config import build_config
    from sclzoo.evaluator.results import check_resume_force

    if threads is not None:
        from sclzoo.threads import configure as configure_threads

        configure_threads(threads)

    check_resume_force(resume, force)
    cfg = build_config(None, preset if preset or config_file else "standard", config_file, n_samples=n_samples,
                       selection=selection, methods=_split(methods), metrics=_split(metrics), dataset=dataset,
                       split=split, target=target, mask=mask, seed=seed, batch_size=_batch_size(batch_size),
                       device=device, runtime=runtime, precision=precision)
    preprocess: dict[str, Any] = {}
    if input_size is not None:
        preprocess["input_size"] = _numbers(input_size, "--input-size", int, 3)
    if interpolation is not None:
        preprocess["interpolation"] = interpolation
    if crop_pct is not None:
        preprocess["crop_pct"] = crop_pct
    if crop_mode is not None:
        preprocess["crop_mode"] = crop_mode
    if norm_mean is not None:
        preprocess["mean"] = _numbers(norm_mean, "--mean", float)
    if norm_std is not None:
        preprocess["std"] = _numbers(norm_std, "--std", float)
    if dry_run:  # resolves the model, data and device, times a few images; computes nothing else
        from sclzoo.evaluator.api import dry_run as plan_only

        click.echo(json.dumps(plan_only(model_ref, cfg, out=out_dir, revision=revision, weights=weights,
                                        num_classes=num_classes, in_chans=int(in_chans) if in_chans else None,
                                        model_id=model_id, class_map=class_map, preprocess=preprocess or None),
                              indent=2, default=str))
        return
    if not force:  # a finished result of the same request: found without torch (evaluator/cache.py)
        from sclzoo.evaluator.cache import finished_result

        found = finished_result(model_ref, cfg, out_dir, revision=revision, weights=weights,
                                num_classes=num_classes, in_chans=int(in_chans) if in_chans else None,
                                model_id=model_id, class_map=class_map, preprocess=preprocess or None)
        if found is not None:
            if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports
                _print_result(found[0], found[1], reused=True)
            return
    from sclzoo.evaluator.api import evaluate

    try:
        res = evaluate(model_ref, revision=revision, out=out_dir, config=cfg, force=force, resume=resume,
                       progress=not quiet, command=" ".join(["sclzoo", *sys.argv[1:]]), weights=weights,
                       num_classes=num_classes, in_chans=int(in_chans) if in_chans else None, model_id=model_id,
                       class_map=class_map, preprocess=preprocess or None)
    except KeyboardInterrupt:
        click.echo("interrupted: finished batches are checkpointed; run the same command with --resume to "
                   "continue", err=True)
        sys.exit(130)
    if res.is_main:  # torchrun: rank 0 reports
        _print_result(res.data, res.path, reused=res.reused)


def _print_result(d: dict[str, Any], path: Path | None, *, reused: bool) -> None:
    """The summary line, the scores table and the result's path."""
    if reused:
        click.echo(f"result exists for this model commit and config (use --force to recompute): {path}")
    acc = d["accuracy"]["torch"]
    acc_text = "accuracy n/a (the dataset's classes are not the model's; pass --class-map)" \
        if acc["value"] is None else f"accuracy {acc['value']:.4f}"
    shown = d["dataset"].get("folder") or d["dataset"]["id"]
    click.echo(f"{d['model']['id']} ({d['model']['objective']}) · {acc_text} on {acc['n']} "
               f"{shown} {d['dataset']['split']} images · {d['dataset']['n_evaluated']} explained")
    rows = []
    for method, per in d["scores"].items():
        for metric, a in per.items():
            ci = a["ci95"]
            rows.append({"method": method, "metric": metric, "family": a["family"],
                         "better": "↑" if a["higher_is_better"] else "↓",
                         "mean": "NaN" if a["mean"] is None else f"{a['mean']:.4f}",
                         "95% CI": "–" if ci[0] is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]",
                         "n": a["n"], "n_nan": a["n_nan"]})
    _print_table(rows)
    if any(r["n_nan"] for r in rows):
        click.echo("note: NaN scores (undefined for a sample, e.g. a constant map in a correlation) are counted in "
                   "n_nan and left out of the aggregates.")
    if path:
        click.echo(f"result → {path}")


# ----------------------------------------------------------------------------------------------- meta-evaluate
@cli.command("meta-evaluate", epilog="""\b
Examples:
  sclzoo meta-evaluate --model ce-resnet8-mnist                      # every standard metric, calibrated noise
  sclzoo meta-evaluate --model supcon-resnet8-mnist --metrics sparseness,deletion_auc --dry-run
  sclzoo meta-evaluate --model zoo/models/resnet8_cifar.ce_mnist5k --iterations 1 --perturbations 3 --n-samples 32
  sclzoo meta-evaluate --model simclr-resnet8-mnist --sigma-minor 0.01 --sigma-disruptive 2
  sclzoo meta-evaluate --model ce-resnet8-mnist --out leaderboard/results --resume   # continue an interrupted run
""")
@click.option("--model", "model_ref", required=True,
              help="Zoo alias, model folder, local-dir:PATH, hf-hub:org/name or org/name.")
@click.option("--revision", default=None, help="Hub branch, tag or commit (default main).")
@click.option("--preset", type=click.Choice(["quick", "standard", "paper"]), default=None,
              help="The evaluation whose metrics are meta-evaluated (default: standard).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Evaluation config TOML (keys of EvalConfig).")
@click.option("--n-samples", type=click.IntRange(min=1), default=None, help="Number of images to explain.")
@click.option("--selection", type=click.Choice(["first", "stratified"]), default=None,
              help="Which images: the first N of the split (default) or a seeded class-stratified subset.")
@click.option("--methods", default=None, help="Comma-separated attribution methods, at least two (IEC ranks them).")
@click.option("--metrics", default=None, help="Comma-separated metrics to meta-evaluate (sclzoo ls metrics).")
@click.option("--dataset", default=None, help="Dataset id (sclzoo ls datasets); default: the model's own.")
@click.option("--split", default=None, help="Split to explain: test (default), train.")
@click.option("--target", type=click.Choice(["predicted", "label"]), default=None,
              help="Explain the predicted class (default) or the true label.")
@click.option("--seed", type=int, default=None, help="Seed of all random draws, weight noise included (default 0).")
@click.option("--batch-size", default=None, metavar="N|auto", help="Images per batch (default 64).")
@click.option("--device", default=None, help="auto (default), cpu or cuda; perturbed models are made there.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Iterations per test (default 3, as MetaQuantus's benchmarks).")
@click.option("--perturbations", type=click.IntRange(min=1), default=None,
              help="Weight-noise draws per iteration (default 2; MetaQuantus's benchmarks use 5).")
@click.option("--sigma-minor", type=float, default=None,
              help="σ of the minor (resilience) test's N(1, σ²) weight noise (default: calibrated so that at most "
                   "5 %% of the predictions change).")
@click.option("--sigma-disruptive", type=float, default=None,
              help="σ of the disruptive (reactivity) test (default: calibrated so that predictions agree with the "
                   "unperturbed ones no more than chance).")
@click.option("--out", "out_dir", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results root folder (the meta result goes beside the model's results).")
@click.option("--force", is_flag=True, help="Recompute even if this (model commit, meta config) has a result.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint.")
@click.option("--dry-run", is_flag=True,
              help="Resolve the model and data, print the meta config, its hash and the cost beside the plain "
                   "evaluation's (and the ratio); run nothing else.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: the cores available to this process).")
def meta_evaluate_cmd(model_ref: str, revision: str | None, preset: str | None, config_file: str | None,
                      n_samples: int | None, selection: str | None, methods: str | None, metrics: str | None,
                      dataset: str | None, split: str | None, target: str | None, seed: int | None,
                      batch_size: str | None, device: str | None, iterations: int | None, perturbations: int | None,
                      sigma_minor: float | None, sigma_disruptive: float | None, out_dir: str, force: bool,
                      resume: bool, dry_run: bool, quiet: bool, threads: int | None) -> None:
    """How far each metric can be trusted on a model: MetaQuantus's minor and disruptive weight-noise tests.

    For every metric: intra-consistency (IAC: does each sample's score stay under minor noise and move under
    disruptive noise), inter-consistency (IEC: is the ranking of the methods kept, and do scores get worse) and
    their mean, the MC score in [0, 1] (higher = more reliable). docs/protocol.md#meta-evaluation has the
    definitions and constants.
    """
    from sclzoo.evaluator.config import build_config
    from sclzoo.evaluator.results import check_resume_force

    if threads is not None:
        from sclzoo.threads import configure as configure_threads

        configure_threads(threads)
    check_resume_force(resume, force)
    cfg = build_config(None, preset if preset or config_file else "standard", config_file, n_samples=n_samples,
                       selection=selection, methods=_split(methods), metrics=_split(metrics), dataset=dataset,
                       split=split, target=target, seed=seed, batch_size=_batch_size(batch_size), device=device)
    from sclzoo.evaluator.meta import MetaConfig, meta_dry_run, meta_evaluate

    if dry_run:
        meta = MetaConfig(**{k: v for k, v in (("iterations", iterations), ("perturbations", perturbations))
                             if v is not None}, sigma_minor=sigma_minor, sigma_disruptive=sigma_disruptive)
        click.echo(json.dumps(meta_dry_run(model_ref, cfg, meta, out=out_dir, revision=revision), indent=2,
                              default=str))
        return
    try:
        res = meta_evaluate(model_ref, out=out_dir, config=cfg, iterations=iterations, perturbations=perturbations,
                            sigma_minor=sigma_minor, sigma_disruptive=sigma_disruptive, revision=revision,
                            force=force, resume=resume, progress=not quiet,
                            command=" ".join(["sclzoo", *sys.argv[1:]]))
    except KeyboardInterrupt:
        click.echo("interrupted: finished draws are checkpointed; run the same command with --resume to continue",
                   err=True)
        sys.exit(130)
    _print_meta(res.data, res.path, reused=res.reused)


def _print_meta(d: dict[str, Any], path: Path | None, *, reused: bool) -> None:
    """The noise levels, one row per metric (MC and its four parts) and the meta result's path."""
    if reused:
        click.echo(f"meta result exists for this model commit and meta config (use --force to recompute): {path}")
    t, cal = d["tests"], d["calibration"]
    click.echo(f"{d['model']['id']} ({d['model']['objective']}) · {d['dataset']['n_evaluated']} images · "
               f"minor σ = {t['minor']['sigma']:g} ({cal['minor']}; changed {t['minor']['changed_fraction']['mean']:.1%} "
               f"of the predictions) · disruptive σ = {t['disruptive']['sigma']:g} ({cal['disruptive']}; changed "
               f"{t['disruptive']['changed_fraction']['mean']:.1%}) · {t['minor']['draws_per_unit']} draws per test")

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    _print_table([{"metric": k, "family": m["family"], "better": "↑" if m["higher_is_better"] else "↓",
                   "MC": f(m["mc"]), "IAC_NR": f(m["iac_nr"]), "IAC_AR": f(m["iac_ar"]), "IEC_NR": f(m["iec_nr"]),
                   "IEC_AR": f(m["iec_ar"])} for k, m in d["metrics"].items()])
    if path:
        click.echo(f"meta result → {path}")


# ------------------------------------------------------------------------------------------------------ explain
@cli.command("explain", epilog="""\b
Examples:
  sclzoo explain --model zoo/models/resnet8_cifar.ce_mnist5k --images 0,5,9 --out maps.png
  sclzoo explain --model supcon-resnet8-mnist --images 3 --methods saliency,gradcam --target label --out m.png
""")
@click.option("--model", "model_ref", required=True,
              help="Zoo alias, model folder, local-dir:PATH, hf-hub:org/name or org/name.")
@click.option("--images", required=True, help="Comma-separated positions of images in the split, e.g. 0,5,9.")
@click.option("--methods", default="saliency,integrated_gradients,gradcam", show_default=True,
              help="Comma-separated attribution methods (sclzoo ls methods).")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--revision", default=None, help="Hub branch, tag or commit (default main).")
@click.option("--dataset", default=None, help="Dataset id (default: the model's own).")
@click.option("--split", default=None, help="test (default), train; image folders: val or all.")
@click.option("--target", type=click.Choice(["predicted", "label"]), default="predicted", show_default=True,
              help="Explain the predicted class or the true label.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random methods.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def explain_cmd(model_ref: str, images: str, methods: str, out_file: str, revision: str | None,
                dataset: str | None, split: str, target: str, seed: int, device: str) -> None:
    """Draw attribution maps of a few images as a labelled grid (image, signed map and |map| overlay)."""
    from sclzoo.evaluator.api import explain

    try:
        positions = [int(v) for v in _split(images) or []]
    except ValueError:
        raise ConfigError(f"--images must be comma-separated integers like 0,5,9, got {images!r}") from None
    path = explain(model_ref, positions, methods=_split(methods) or [], out=out_file, revision=revision,
                   dataset=dataset, split=split, target=target, seed=seed, device=device)
    click.echo(f"attribution maps of {len(positions)} image(s) → {path}")


# ---------------------------------------------------------------------------------------------------- show-data
@cli.command("show-data", epilog="""\b
Examples:
  sclzoo show-data mnist5k-clutter --n 16 --out docs/img/mnist5k-clutter.png
  sclzoo show-data mnist5k --split train --n 8 --out digits.png
""")
@click.argument("dataset")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--split", default=None, help="test (default), train; image folders: val or all.")
@click.option("--n", "n_images", type=click.IntRange(min=1, max=256), default=16, show_default=True,
              help="How many images: the first N of the split.")
@click.option("--data-dir", default=None, help="Where torchvision datasets live.")
def show_data_cmd(dataset: str, out_file: str, split: str | None, n_images: int, data_dir: str | None) -> None:
    """Draw the first images of a dataset with their labels and ground-truth masks (when it has masks)."""
    from sclzoo.evaluator.plots import ground_truth_grid
    from sclzoo.evaluator.results import write_file
    from sclzoo.zoo.data import default_split, load_dataset

    if not out_file.lower().endswith(".png"):
        raise ConfigError(f"--out {out_file!r} is not a .png file name; end it with .png")
    split = split or default_split(dataset)
    data = load_dataset(dataset, split, data_dir)
    k = min(n_images, len(data))
    captions = [f"#{int(i)}: {data.label_names[int(y)]}" for i, y in zip(data.indices[:k], data.labels[:k],
                                                                        strict=True)]
    masks = {kind: m[:k].numpy() for kind, m in data.ground_truth.items()}
    kinds = f"; masks {', '.join(masks)}" if masks else ""
    png = ground_truth_grid(data.images[:k].numpy(), masks, captions,
                            title=f"{data.id} {split}: the first {k} images (sample id: label){kinds}")
    path = write_file(Path(out_file), png)
    click.echo(f"{k} image(s) of {data.id} {split} → {path}")


# -------------------------------------------------------------------------------------------------- leaderboard
@cli.command("leaderboard", epilog="""\b
Examples:
  sclzoo leaderboard results/ --out leaderboard/
  sclzoo leaderboard contributed/ --out /tmp/lb --strict   # any invalid result file is an error (CI)
  sclzoo leaderboard shard-a/ shard-b/ shard-c/ --out lb/  # merge CI artefacts; duplicates are one row
""")
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--quiet", is_flag=True, help="Do not print the Markdown table.")
@click.option("--strict", is_flag=True,
              help="Fail (exit 1, nothing written) when a result file is invalid or two results of the same "
                   "weights and config disagree, instead of skipping them.")
def leaderboard_cmd(results_dirs: tuple[str, ...], out_dir: str, quiet: bool, strict: bool) -> None:
    """Rank every result in RESULTS_DIRS (one folder or several) and compare objectives.

    Writes leaderboard.json, leaderboard.csv (+ .parquet with pyarrow), compare.json, LEADERBOARD.md and a static
    index.html with figures in img/. Result files are checked first (schema, NaN, aggregates against the
    per-sample scores); invalid ones are skipped and listed at the end, one line each. Results of the same weights
    and config hash (however the model was loaded, in whichever folder) are one row: copies with equal scores are
    listed as duplicates, copies with other scores as conflicts.
    """
    from sclzoo.evaluator.leaderboard import scan_results, write_leaderboard

    results_dir = results_dirs[0] if len(results_dirs) == 1 else ", ".join(results_dirs)
    scan = scan_results(list(results_dirs))
    if strict:
        _fail_on_skipped(scan, results_dir)
    paths = write_leaderboard(scan, out_dir)
    if not quiet:
        click.echo(paths["markdown"].read_text())
    click.echo("leaderboard → " + ", ".join(str(p) for p in paths.values()))
    _report_skipped(scan, results_dir)


def _report_skipped(scan: Any, results_dir: str) -> None:
    """The summary of skipped result files (stderr): one header line, then one line per file."""
    if scan.skipped:
        click.echo(f"skipped {len(scan.skipped)} of {scan.n_files} result file(s) under {results_dir} (invalid, "
                   "duplicate or conflicting; `sclzoo validate FILE` lists every problem, --strict makes invalid "
                   "and conflicting files an error):", err=True)
        for s in scan.skipped:
            click.echo(f"  {s.file}: {s.reason}", err=True)


def _fail_on_skipped(scan: Any, results_dir: str) -> None:
    bad = [s for s in scan.skipped if not s.reason.startswith("duplicate of ")]
    if bad:
        for s in bad:
            click.echo(f"invalid {s.file}: {s.reason}", err=True)
        raise ResultError(f"{len(bad)} of {scan.n_files} result file(s) under {results_dir!r} are invalid or "
                          "conflicting (listed above); fix or delete them, or drop --strict to rank the others")


# ------------------------------------------------------------------------------------------- leaderboard-update
@cli.command("leaderboard-update", epilog="""\b
Examples:
  sclzoo leaderboard-update                                   # registry → leaderboard/results → leaderboard/
  sclzoo leaderboard-update --dry-run                         # what would be evaluated
  sclzoo leaderboard-update --meta                            # and meta-evaluate the metrics on each model
  sclzoo leaderboard-update --registry my.toml --config tiny.toml --results /tmp/r --out /tmp/lb
  python -m sclzoo.evaluator.update --skip-unavailable        # the same command
""")
@click.option("--registry", "registry", type=click.Path(dir_okay=False), default=None,
              help="Registry TOML of tracked models (default: zoo/registry.toml).")
@click.option("--results", "results_dir", default="leaderboard/results", show_default=True,
              type=click.Path(file_okay=False), help="Results root; new results are written here.")
@click.option("--out", "out_dir", default="leaderboard", show_default=True, type=click.Path(file_okay=False),
              help="Leaderboard folder, rebuilt from every result in --results.")
@click.option("--preset", type=click.Choice(["quick", "standard", "paper"]), default=None,
              help="Evaluation preset (default: standard, unless --config is given).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Evaluation config TOML (keys of EvalConfig).")
@click.option("--device", default=None, help="auto (default), cpu or cuda (execution only: not in the hash).")
@click.option("--provenance", type=click.Choice(["local", "ci"]), default="local", show_default=True,
              help="Provenance recorded in new results.")
@click.option("--skip-unavailable", is_flag=True,
              help="Exit 0 when a registry model cannot be resolved (no bundled copy, not on the Hub) or fails to "
                   "evaluate; it is reported and the others are done either way.")
@click.option("--strict", is_flag=True,
              help="Fail (exit 1, leaderboard not rebuilt) when a file in --results is not a valid result.")
@click.option("--dry-run", is_flag=True, help="Print what would be evaluated; evaluate and write nothing.")
@click.option("--progress", is_flag=True, help="Show progress bars while evaluating.")
@click.option("--meta", is_flag=True,
              help="Also meta-evaluate every registry model without a meta result for this config (sclzoo "
                   "meta-evaluate, default settings; 10-18x the evaluation's compute), so the leaderboard shows "
                   "how far each metric can be trusted.")
def leaderboard_update_cmd(registry: str | None, results_dir: str, out_dir: str, preset: str | None,
                           config_file: str | None, device: str | None, provenance: str, skip_unavailable: bool,
                           strict: bool, dry_run: bool, progress: bool, meta: bool) -> None:
    """Evaluate registry models that have no result for this config yet, then rebuild the leaderboard."""
    from sclzoo.evaluator.api import build_config
    from sclzoo.evaluator.update import run_update

    cfg = build_config(None, preset if preset or config_file else "standard", config_file, device=device)
    run_update(cfg, registry=registry, results_dir=results_dir, out_dir=out_dir, skip_unavailable=skip_unavailable,
               strict=strict, dry_run=dry_run, provenance_source=provenance, progress=progress,
               command=" ".join(["sclzoo", *sys.argv[1:]]), log=click.echo, meta=meta)


# ----------------------------------------------------------------------------------------------------- validate
@cli.command("validate", epilog="""\b
Examples:
  sclzoo validate results/local__resnet8_cifar.ce_mnist5k/*/*.json
  sclzoo validate leaderboard/results/*/*/*.meta.json         # meta-evaluations, recomputed from their draws
  sclzoo validate leaderboard/leaderboard.json leaderboard/compare.json
""")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate_cmd(files: tuple[str, ...]) -> None:
    """Check result files, meta results, leaderboard.json or compare.json against the shipped JSON Schemas.

    Result files are also checked against their per-sample files: NaN/Infinity literals, aggregates (n, n_nan,
    mean, median, std, stderr) that disagree with the per-sample scores, sample ids that are not the recorded
    ones, and a file name that is not its config hash are rejected. Meta results (*.meta.json) are checked against
    their draws file: every IAC, IEC and MC value is recomputed from the stored scores.
    """
    from sclzoo.evaluator.results import validate_file

    bad = 0
    for f in files:
        try:
            _, problems = validate_file(f)
        except ResultError as e:
            problems = [str(e)]
        if problems:
            bad += 1
            click.echo(f"INVALID {f}")
            for p in problems:
                click.echo(f"  - {p}")
        else:
            click.echo(f"ok      {f}")
    if bad:
        raise ResultError(f"{bad} of {len(files)} file(s) are invalid (see above)")


# ------------------------------------------------------------------------------------------------------ publish
@cli.command("publish", epilog="""\b
Examples:
  sclzoo publish zoo/models/resnet8_cifar.ce_mnist5k --repo my-org/resnet8_cifar.ce_mnist5k --tag v1
  HF_TOKEN=hf_... sclzoo publish out/ce --repo my-org/ce-mnist --private --message "retrained, seed 1"
  HF_ENDPOINT=http://127.0.0.1:8090 sclzoo publish out/ce --repo test-org/ce-mnist   # a mirror or test Hub
""")
@click.argument("repo_dir", type=click.Path(file_okay=False))
@click.option("--repo", "repo_id", required=True, help="Hub repo id org/name (created if missing).")
@click.option("--tag", default=None, help="Tag the new commit (e.g. v1); must not exist yet.")
@click.option("--private", is_flag=True, help="Create the repo private (ignored if it exists).")
@click.option("--message", default=None, help="Commit message (default: Publish <name> with sclzoo).")
def publish_cmd(repo_dir: str, repo_id: str, tag: str | None, private: bool, message: str | None) -> None:
    """Verify a zoo repo folder and upload it to the Hub as one commit (HF_TOKEN, HF_ENDPOINT)."""
    from sclzoo.zoo.publish import publish

    res = publish(repo_dir, repo_id, tag=tag, private=private, message=message)
    click.echo(f"published {res.repo_id} commit {res.commit_sha}" + (f" (tag {res.tag})" if res.tag else ""))
    click.echo(res.url)


@cli.command("publish-results", epilog="""\b
Examples:
  sclzoo publish-results --repo my-org/resnet8_cifar.ce_mnist5k --results results/
  sclzoo publish-results --repo my-org/ce-mnist --results shard-a/ --results shard-b/ --revision main
  HF_ENDPOINT=http://127.0.0.1:8090 sclzoo publish-results --repo test-org/ce-mnist --results out/
""")
@click.option("--repo", "repo_id", required=True, help="Hub repo id org/name whose card gets the scores.")
@click.option("--results", "results_dirs", required=True, multiple=True, type=click.Path(file_okay=False),
              help="Results folder (repeatable): the evaluations of this repo's weights.")
@click.option("--revision", default="main", show_default=True, help="Branch whose card is updated.")
@click.option("--message", default=None, help="Commit message.")
def publish_results_cmd(repo_id: str, results_dirs: tuple[str, ...], revision: str, message: str | None) -> None:
    """Write a model's attribution scores into its Hub card's model-index and commit it (HF_TOKEN, HF_ENDPOINT).

    Every (config, method, metric) scored for the repo's weights becomes one model-index entry with the config
    hash, n, NaN count, 95 % CI, metric and sclzoo versions; entries sclzoo wrote before are replaced, the rest of
    the card is kept.
    """
    from sclzoo.zoo.publish import publish_results

    res = publish_results(repo_id, list(results_dirs), revision=revision, message=message)
    click.echo(f"published results to {res.repo_id} commit {res.commit_sha}")
    click.echo(res.url)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns sclzoo errors into one line and exit code 1."""
    debug = os.environ.get("SCLZOO_DEBUG", "") not in ("", "0")
    try:
        from sclzoo.threads import configure as configure_threads

        configure_threads()  # threads = cores available (SCLZOO_THREADS, OMP_NUM_THREADS, affinity, cgroup quota)
        cli.main(args=argv, prog_name="sclzoo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SclzooError as e:
        if debug:
            raise
        label = next(lbl for typ, lbl in ERROR_LABELS if isinstance(e, typ))
        click.echo(f"sclzoo: {label}: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
