"""Trained checkpoint → zoo repo (docs/artifacts.md#zoo-repo-layout): config.json, safetensors, training.json,
ONNX, model card.

A zoo repo is what ``sclzoo publish`` uploads and what ``sclzoo evaluate --model`` loads. Files are written into a
temporary folder beside the target and moved into place at the end, so a failed export leaves nothing half-way.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from sclzoo.deletion import PatchDeletionConfig
from sclzoo.errors import ConfigError, ModelLoadError
from sclzoo.vocab import OBJECTIVES
from sclzoo.zoo.hub import sha256_file

__all__ = ["export_repo", "write_repo", "sha256_file", "package_versions", "git_revision", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
HASHED_FILES = ("model.safetensors", "projection_head.safetensors", "onnx/model.onnx", "training.json")
PAPER_IDS = {name: list(o.paper_ids) for name, o in OBJECTIVES.items()}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "timm", "captum", "onnxruntime", "onnx", "huggingface_hub", "safetensors",
                "numpy", "sclzoo"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


# Tracked folders sclzoo itself writes (leaderboard pages and results, exported zoo repos: each identified by its own
# hashes in a result) and Markdown: changes there do not change what the code computes, so they do not make a run
# "-dirty" (otherwise the second model of `make zoo` or `make leaderboard` records the first one's new files).
NOT_SOURCE = (":(exclude)leaderboard", ":(exclude)zoo/models", ":(exclude,glob)**/*.md")


def git_revision(root: str | Path | None = None) -> str:
    """The sclzoo source tree's git commit, with ``-dirty`` when a tracked source file is modified, or ``unknown``.

    Untracked and ignored files never count, nor do the outputs in :data:`NOT_SOURCE`.
    """
    root = Path(__file__).resolve().parent.parent if root is None else Path(root)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_SOURCE],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_config(model: nn.Module, record: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """timm-compatible config.json (``save_config_for_hf`` shape) plus the ``sclzoo`` block."""
    recipe = record["recipe"]
    c, h, w = record["input_size"]
    num_classes = int(model.num_classes)  # type: ignore[arg-type]
    sclzoo: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": recipe["name"],
        "objective": recipe["objective"],
        "head": record["head"],
        "input_range": [0, 1],
        "train_dataset": {"id": record["dataset"]["id"], "split_sha256": record["dataset"]["split_sha256"]},
    }
    if record.get("patch_deletion") is not None:
        # The loader reads config.json, not training.json: results say from this whether a deletion metric is in
        # domain for the model (docs/training.md#patch-deletion). Absent for models trained without it.
        sclzoo["patch_deletion"] = PatchDeletionConfig.from_dict(record["patch_deletion"],
                                                                 "training record's patch_deletion").to_dict()
    sclzoo["files_sha256"] = {}
    model_args = {"in_chans": c, "norm_mean": record["dataset"]["mean"], "norm_std": record["dataset"]["std"],
                  **recipe.get("model_args", {})}
    return {
        "architecture": recipe["arch"],
        "num_classes": num_classes,
        "num_features": int(model.num_features),  # type: ignore[arg-type]
        "label_names": label_names,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [c, h, w],
            # The model normalises internally (pixels in [0, 1]); mean 0 / std 1 keeps timm pipelines from
            # normalising a second time.
            "mean": [0.0] * c,
            "std": [1.0] * c,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "num_classes": num_classes,
            "classifier": "fc",
            "first_conv": None,
            "license": recipe.get("license", "apache-2.0"),
            "paper_ids": PAPER_IDS.get(recipe["objective"], []),
        },
        "sclzoo": sclzoo,
    }


def write_repo(
    model: nn.Module,
    projector: nn.Module | None,
    record: dict[str, Any],
    label_names: list[str],
    out_dir: str | Path,
    *,
    onnx_check: Any = None,
    overwrite: bool = False,
) -> Path:
    """Writes a zoo repo folder atomically.

    Args:
        model: The evaluated classifier (encoder + CE head or linear probe), eval mode, CPU.
        projector: The contrastive projector, or None.
        record: Training record (training.json body); gains provenance fields here.
        label_names: Class names.
        out_dir: Target folder; must not exist unless ``overwrite``.
        onnx_check: Optional callable ``(model, tmp_repo_dir) -> dict`` that writes ``onnx/model.onnx`` and
            returns its parity check (recorded in training.json).
        overwrite: Replace an existing folder.

    Returns:
        The repo folder.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ConfigError(f"output folder {str(out)!r} already exists; pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model = model.eval().cpu()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        if projector is not None:
            save_file({k: v.contiguous() for k, v in projector.state_dict().items()},
                      str(tmp / "projection_head.safetensors"), metadata={"format": "pt"})
        record = dict(record)
        if onnx_check is not None:
            record["onnx_check"] = onnx_check(model, tmp)
        record.setdefault("versions", package_versions())
        record.setdefault("git_revision", git_revision())
        record["num_parameters"] = sum(p.numel() for p in model.parameters())
        (tmp / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        config = build_config(model, record, label_names)
        config["sclzoo"]["files_sha256"] = {
            f: sha256_file(tmp / f) for f in HASHED_FILES if (tmp / f).is_file()
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        from sclzoo.model_cards import leaderboard_rows, render_card

        rows, config_hash = leaderboard_rows(tmp)
        (tmp / "README.md").write_text(render_card(tmp, leaderboard_rows=rows, leaderboard_config=config_hash))
        # mkdtemp and safetensors create owner-only files; a repo is meant to be shared.
        tmp.chmod(0o755)
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_repo(checkpoint_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False,
                onnx: bool = True) -> Path:
    """``sclzoo export``: a trained checkpoint folder (``sclzoo train`` output) → zoo repo.

    Raises:
        ModelLoadError: the checkpoint folder is missing files or does not match its record.
    """
    import timm
    from safetensors.torch import load_file

    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.models import ProjectionHead

    ck = Path(checkpoint_dir)
    for f in ("model.safetensors", "record.json"):
        if not (ck / f).is_file():
            raise ModelLoadError(f"checkpoint folder {str(ck)!r} has no {f}; pass the folder `sclzoo train --out` wrote")
    record = json.loads((ck / "record.json").read_text())
    recipe = record["recipe"]
    ds = record["dataset"]
    test = load_dataset(ds["id"], "test")
    if test.split_sha256 != ds["split_sha256"]:
        raise ModelLoadError(f"dataset {ds['id']!r} split hash differs from the checkpoint's; "
                             "the data on this machine is not the data the model was trained on")
    record["input_size"] = list(test.input_size)
    model = timm.create_model(recipe["arch"], in_chans=test.input_size[0], num_classes=test.num_classes,
                              norm_mean=ds["mean"], norm_std=ds["std"], **recipe.get("model_args", {}))
    model.load_state_dict(load_file(str(ck / "model.safetensors")), strict=True)
    model.eval()
    projector = None
    if (ck / "projection_head.safetensors").is_file():
        proj = record["projector"]
        projector = ProjectionHead(proj["in_dim"], proj["hidden_dim"], proj["out_dim"],
                                   batchnorm=bool(proj.get("batchnorm", False)))
        projector.load_state_dict(load_file(str(ck / "projection_head.safetensors")), strict=True)
    check = None
    if onnx:
        from sclzoo.zoo.onnx_export import export_onnx_checked

        def check(m: nn.Module, repo: Path) -> dict[str, Any]:
            return export_onnx_checked(m, repo / "onnx" / "model.onnx", test.images, test.labels)

    record.setdefault("command", " ".join(["sclzoo", *sys.argv[1:]]) if sys.argv else "")
    return write_repo(model, projector, record, list(test.label_names), out_dir, onnx_check=check,
                      overwrite=overwrite)
